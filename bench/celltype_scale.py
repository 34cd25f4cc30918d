"""Wall time and peak memory of ``netinfer.pipeline.celltype_networks`` on a Dask LocalCluster.

What is measured
----------------
One call of ``celltype_networks`` on synthetic raw counts of 10 cell types x 2,000 cells x
2,000 genes with 100 candidate regulators (``--quick``: 2 types x 500 cells x 500 genes, 25
regulators), with the cell types given (``cell_type_key``) and the cluster jobs fanned out to a
``LocalCluster`` of 2 single-threaded worker processes
(``netinfer.distributed.prepare_client(workers=2, threads=1)``).

Data: per cell type, ``bench/simulate.py``'s ``synthetic_grn`` (its own random network, seed =
type number) gives log-scale activities; every regulator's log-mean is shifted by a per-type
N(0, 1) offset (so types differ in regulator levels and, through the network, in their targets),
and counts are Poisson draws from the expression scaled to a per-cell library size drawn
log-uniformly between 2,000 and 10,000 UMI. Gene and regulator names are shared across types.
Counts go in as a SciPy CSR matrix (float32).

Options: the pipeline defaults (``resolution=1.0``, ``max_cells=500``, ``min_cells=50``,
``resamples=20``, ``fdr=0.05``, ``trim=0.9``, ``min_counts=1000``, ``max_counts=100000``)
except ``min_genes=200`` (cells here express about 1,200 of the 2,000 genes, and the default 500
suits whole transcriptomes; it removes the ~1% of cells that one heavy-tailed gene dominates).
``--resamples`` changes the resamples.

Measurements:

* wall time of the call (client start-up, data generation and a JIT warm-up task on each worker
  are excluded and reported apart);
* time split from Dask's task stream: *before jobs* (QC, normalization, Leiden per type: from
  the call until the first cluster job starts), *jobs* (first job start to last job end) and
  *after jobs* (consensus, until the call returns); plus the summed compute seconds of the jobs;
* peak RSS, sampled every 0.1 s in a thread with psutil: the main process (which also hosts the
  scheduler and the nannies), each worker process, and the sum of all of them at one instant;
  ``ru_maxrss`` of the main process as a cross-check;
* clusters found and used, jobs, edges per cluster network and per consensus.

Usage::

    python bench/celltype_scale.py [--quick] [--resamples 20] [--out results.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import scipy.sparse as sp

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for _p in (str(ROOT), str(BENCH)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from simulate import markdown_table, synthetic_grn  # noqa: E402

FULL = dict(types=10, cells=2000, genes=2000, regulators=100)
QUICK = dict(types=2, cells=500, genes=500, regulators=25)
PIPELINE = dict(min_genes=200, resamples=20, seed=0)
"""Options of ``celltype_networks`` that differ from its defaults."""

MB = 1024.0**2


def synthetic_counts(
    types: int, cells: int, genes: int, regulators: int, *, seed: int = 0
) -> tuple[object, list[str]]:
    """Raw counts of several cell types, each from its own random regulatory network.

    Parameters
    ----------
    types, cells, genes, regulators : int
        Cell types, cells per type, genes, candidate regulators.
    seed : int
        Seed of the per-type regulator shifts and of the counts (networks use seed = type).

    Returns
    -------
    adata : AnnData
        CSR float32 counts, ``obs["cell_type"]``.
    regulators : list of str
        Candidate regulator names.
    """
    import anndata as ad

    rng = np.random.default_rng(seed)
    blocks, labels = [], []
    names = regs = None
    for t in range(types):
        X, names, regs, _ = synthetic_grn(genes, cells, regulators, seed=t, cache=False)
        logx = np.log(X)
        logx[:, :regulators] += rng.normal(0.0, 1.0, size=regulators)  # per-type regulator levels
        logx -= logx.max(axis=1, keepdims=True)  # scale-free; avoids overflow
        p = np.exp(logx)
        p /= p.sum(axis=1, keepdims=True)
        lib = np.exp(rng.uniform(np.log(2000), np.log(10000), size=(cells, 1)))
        blocks.append(sp.csr_matrix(rng.poisson(p * lib).astype(np.float32)))
        labels += [f"type{t:02d}"] * cells
        del X, logx, p
    counts = sp.vstack(blocks, format="csr")
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical(labels)}, index=[f"cell{i:06d}" for i in range(len(labels))]
    )
    return ad.AnnData(X=counts, obs=obs, var=pd.DataFrame(index=names)), list(regs)


class PeakSampler:
    """Sample the RSS of this process and of given worker processes in a background thread.

    Parameters
    ----------
    pids : dict
        Name -> pid of the processes to watch besides this one.
    interval : float
        Seconds between samples.
    """

    def __init__(self, pids: dict[str, int], interval: float = 0.1):
        self.procs = {"main": psutil.Process()}
        self.procs.update({name: psutil.Process(pid) for name, pid in pids.items()})
        self.interval = interval
        self.peak = dict.fromkeys(self.procs, 0)
        self.peak_total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        total = 0
        for name, proc in self.procs.items():
            try:
                rss = proc.memory_info().rss
            except psutil.Error:  # a worker restarted or exited
                continue
            total += rss
            self.peak[name] = max(self.peak[name], rss)
        self.peak_total = max(self.peak_total, total)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def _warm_worker() -> float:
    """Compile the ARACNe JIT on a worker (one tiny run); returns its seconds."""
    from netinfer.aracne import aracne

    t0 = time.perf_counter()
    X, g, r, _ = synthetic_grn(60, 40, 6, seed=1, cache=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # 2 resamples: nothing can be consolidated
        aracne(X, g, r, resamples=2, threads=1)
    return time.perf_counter() - t0


def _job_span(stream: list[dict]) -> tuple[float, float, float, int]:
    """First compute start, last compute stop, summed compute seconds, tasks (cluster jobs)."""
    starts, stops, busy, n = [], [], 0.0, 0
    for task in stream:
        if "run_cluster_job" not in str(task.get("key", "")):
            continue
        n += 1
        for ss in task.get("startstops", ()):
            if ss.get("action") == "compute":
                starts.append(ss["start"])
                stops.append(ss["stop"])
                busy += ss["stop"] - ss["start"]
    if not starts:
        return float("nan"), float("nan"), 0.0, 0
    return min(starts), max(stops), busy, n


def run(size: dict, *, workers: int = 2) -> tuple[list[dict], list[dict], dict]:
    """Generate the data, run the pipeline on a LocalCluster and measure it.

    Parameters
    ----------
    size : dict
        ``types``, ``cells``, ``genes``, ``regulators``.
    workers : int
        Dask worker processes (1 thread each).

    Returns
    -------
    main_rows : list of dict
        The headline table (one row).
    type_rows : list of dict
        One row per cell type: cells, clusters, jobs, edges.
    extra : dict
        Set-up times and the raw pipeline report.
    """
    from distributed import get_task_stream

    from netinfer.distributed import prepare_client
    from netinfer.pipeline import celltype_networks

    t0 = time.perf_counter()
    adata, regulators = synthetic_counts(**size)
    gen_s = time.perf_counter() - t0
    totals = np.asarray(adata.X.sum(axis=1)).ravel()
    expressed = np.diff(adata.X.indptr)
    print(
        f"data: {adata.n_obs} cells x {adata.n_vars} genes, UMI median {np.median(totals):.0f} "
        f"({totals.min():.0f}-{totals.max():.0f}), genes expressed per cell "
        f"{expressed.min()}-{expressed.max()}, generated in {gen_s:.1f} s",
        file=sys.stderr,
        flush=True,
    )

    t0 = time.perf_counter()
    client, close = prepare_client(workers=workers, threads=1)
    start_s = time.perf_counter() - t0
    try:
        pids = {f"worker{i}": pid for i, pid in enumerate(client.run(os.getpid).values())}
        t0 = time.perf_counter()
        warm = client.run(_warm_worker)
        warm_s = time.perf_counter() - t0
        import leidenalg  # noqa: F401 - import the clustering stack outside the timed call
        import scanpy  # noqa: F401

        rss0 = psutil.Process().memory_info().rss
        with PeakSampler(pids) as peaks, get_task_stream(client) as ts:
            wall0 = time.time()
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                result = celltype_networks(
                    adata, regulators, cell_type_key="cell_type", client=client, **PIPELINE
                )
            wall = time.perf_counter() - t0
            wall1 = time.time()
        first, last, busy, n_tasks = _job_span(ts.data)
    finally:
        close()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux

    report = result.report
    type_rows, n_clusters, n_small = [], 0, 0
    for cell_type, entry in report["cell_types"].items():
        clusters = entry.get("clusters", {})
        used = [c for c in clusters.values() if "edges" in c]
        n_clusters += len(clusters)
        n_small += len(clusters) - len(used)
        edges = [c["edges"] for c in used]
        type_rows.append(
            {
                "cell type": cell_type,
                "cells": entry["cells"],
                "clusters": len(clusters),
                "jobs": len(used),
                "profiles per job": (
                    f"{min(c['profiles'] for c in used)}-{max(c['profiles'] for c in used)}"
                    if used
                    else "-"
                ),
                "edges per cluster (min-median-max)": (
                    f"{min(edges)}-{int(np.median(edges))}-{max(edges)}" if edges else "-"
                ),
                "consensus edges": entry.get("consensus_edges", 0),
            }
        )
    n_jobs = len(result.clusters)
    worker_peaks = [v for k, v in peaks.peak.items() if k != "main"]
    main_rows = [
        {
            "cells x genes x regs": f"{adata.n_obs}x{adata.n_vars}x{len(regulators)}",
            "types": size["types"],
            "QC kept": report["qc"]["kept"],
            "wall s": f"{wall:.1f}",
            "before jobs s": f"{first - wall0:.1f}",
            "jobs s": f"{last - first:.1f}",
            "after jobs s": f"{wall1 - last:.1f}",
            "job compute s": f"{busy:.1f}",
            "main peak MB": f"{peaks.peak['main'] / MB:.0f}",
            "main ru_maxrss MB": f"{maxrss:.0f}",
            "worker peak MB": ", ".join(f"{v / MB:.0f}" for v in worker_peaks),
            "all procs peak MB": f"{peaks.peak_total / MB:.0f}",
            "clusters": n_clusters,
            "skipped (< min_cells)": n_small,
            "jobs": n_jobs,
            "cluster edges": sum(len(v) for v in result.clusters.values()),
            "consensus edges": sum(len(v) for v in result.networks.values()),
        }
    ]
    extra = dict(
        generate_s=gen_s,
        client_start_s=start_s,
        warm_s=warm_s,
        warm_worker_s=list(warm.values()),
        main_rss_before_mb=rss0 / MB,
        tasks=n_tasks,
        report=report,
    )
    return main_rows, type_rows, extra


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 types x 500 cells x 500 genes")
    ap.add_argument("--resamples", type=int, default=PIPELINE["resamples"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, help="also write the markdown report to this file")
    args = ap.parse_args(argv)
    PIPELINE["resamples"] = args.resamples
    size = QUICK if args.quick else FULL

    main_rows, type_rows, extra = run(size, workers=args.workers)
    opts = ", ".join(f"{k}={v}" for k, v in PIPELINE.items())
    lines = [
        f"## celltype_networks at scale: {size['types']} types x {size['cells']} cells x "
        f"{size['genes']} genes, {size['regulators']} regulators",
        "",
        f"LocalCluster of {args.workers} workers x 1 thread; `celltype_networks(adata, "
        f"regulators, cell_type_key='cell_type', client=client, {opts})`, other options at "
        f"their defaults. Machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 1024**3:.0f} GiB, Python {platform.python_version()}.",
        f"Not in the wall time: data generation {extra['generate_s']:.1f} s, client start "
        f"{extra['client_start_s']:.1f} s, JIT warm-up on the workers {extra['warm_s']:.1f} s, "
        "importing scanpy and leidenalg in the main process. "
        f"Main process RSS before the call: {extra['main_rss_before_mb']:.0f} MB (data, "
        "libraries, scheduler). Time split from Dask's task stream: 'before jobs' = QC, "
        "normalization and Leiden per type; 'after jobs' = consensus (the report itself has "
        "only the total).",
        "",
        markdown_table(main_rows),
        "",
        markdown_table(type_rows),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
