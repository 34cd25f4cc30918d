"""Held-out quality of ``netinfer.integrate.integrate``: do unseen cells get their type's network?

What is measured
----------------
For each data set, the cells of every cell type are split at random (seeded, stratified by type)
into a *reference* (75%) and a *query* (25%). ``netinfer.pipeline.celltype_networks`` builds the
cell-type networks from the reference into a ``GraphStore``; ``netinfer.integrate.integrate`` then
gives every query cell a graph. The query goes in without any ``obs`` column, so integrate cannot
read its labels; they are kept here for scoring only.

Per data set:

* **kNN accuracy**: on the query, the argmax of ``out.weights`` (the kNN type posterior) against
  the hidden label; beside it ``out.summary["knn_heldout_accuracy"]`` (integrate's own estimate on
  20% of the reference cells held out of the kNN).
* **Graph agreement**: for each query cell, the Jaccard index between the edge set of its
  integrated graph and its *oracle* graph, the consensus network of its TRUE type restricted to
  edges with ``exclusion <= alpha`` (the graph it would get if its label were known; empty where
  the type has no network in the store, e.g. fewer than ``min_cells`` reference cells). Beside it
  the *naive* graph: the network (``exclusion <= alpha``) of the kNN's most probable type (ties:
  the first type in sorted order). Edges are directed (regulator, target) pairs of store
  vocabulary indices. **The Jaccard index of two empty sets is defined as 1.** Reported as the
  mean over query cells, per true type and overall, with the mean edges per cell of the
  integrated, naive and oracle graphs and the fraction of cells whose integrated graph is empty.
* **By kNN confidence**: the same means over cells grouped by their largest posterior weight
  (1 = all k neighbours of one type).
* **Own type network**: per data set, edges per query cell (mean and quartiles), and recall and
  precision of the integrated graphs against each cell's true type's *whole* consensus network
  (every edge, whatever its exclusion), pooled over the cells whose largest weight is >= 0.8 and
  whose type has a non-empty network.

Sanity checks, reported under each data set: the stored ``exclusion`` of every consensus edge
equals the pipeline's in-memory value (alignment of edge attributes in the store), and integrate's
``mean_edges_per_cell`` equals the mean counted here.

Data sets:

* ``pbmc68k``: scanpy's bundled ``pbmc68k_reduced`` counts (``netinfer.datasets.pbmc68k_counts``,
  700 cells x 765 genes), ``bulk_labels`` as types, the bundled human TFs as regulators, the
  README's demo settings (``min_counts=100, min_genes=50, trim=None, resolution=0.5,
  metacells=5``) with ``min_cells=25`` (the README has 30; a quarter of the cells is held out).
* ``sergio-shared-1cl`` / ``sergio-specific-1cl``: ``bench/simulate_celltypes.py``'s 3 SERGIO
  types (600 cells each, QC off), ``resolution=0.1, metacells=10, min_cells=40``: one Leiden
  cluster per type, so each type's network is its single cluster network (the pipeline keeps it
  as the consensus). ``sergio-*-multi``: the same with ``resolution=0.3`` (2-6 clusters per
  type): the consensus comes out empty (the cluster networks are noisy and rarely agree; see
  ``bench/RESULTS.md``), which leaves only the kNN accuracy to report.
* ``synthetic``: ``bench/celltype_scale.py``'s ``synthetic_counts(3, 1500, 600, 40)`` (3 types,
  each its own random network, 2,000-10,000 UMI per cell) with the pipeline defaults except
  ``min_genes=200``: several clusters per type and non-empty consensus networks.

All pipeline runs use ``resamples=20, seed=0`` and ARACNe on ``--threads`` threads; integrate
uses ``k=15, n_pcs=50`` and integrate's own default alpha (options). Each data set's reference
AnnData (all of its cells, also those the pipeline's QC drops) is what integrate's kNN is fitted
on.

Usage::

    python bench/integration_quality.py [--out results.md] [--datasets pbmc68k synthetic ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for _p in (str(ROOT), str(BENCH)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from simulate import f3, markdown_table  # noqa: E402

KEY = "cell_type"
"""obs column of the cell types (every data set is relabelled to it)."""

SERGIO_PIPELINE = dict(
    min_counts=1,
    max_counts=10**9,
    trim=None,
    min_genes=1,
    min_cells=40,
    metacells=10,
    resamples=20,
)
"""``celltype_networks`` options for SERGIO (QC off: cells have a few hundred UMI)."""


@dataclass
class DataSet:
    """Counts with cell types in ``obs[KEY]``, regulators, and the pipeline options to use."""

    name: str
    description: str
    adata: object
    regulators: list[str]
    options: dict


def load_pbmc68k() -> DataSet:
    """scanpy's pbmc68k_reduced counts with ``bulk_labels``, human TFs, the README demo options."""
    from netinfer.datasets import human_tfs, pbmc68k_counts

    adata = pbmc68k_counts()
    adata.obs = pd.DataFrame({KEY: adata.obs["bulk_labels"].astype(str)}, index=adata.obs_names)
    del adata.layers["counts"]
    options = dict(
        min_counts=100,
        min_genes=50,
        trim=None,
        min_cells=25,
        resolution=0.5,
        metacells=5,
        resamples=20,
    )
    return DataSet(
        "pbmc68k", "scanpy pbmc68k_reduced counts, bulk_labels", adata, human_tfs(), options
    )


def load_sergio(scenario: str, resolution: float) -> DataSet:
    """3 SERGIO cell types (600 simulated cells each); cells left empty by dropout removed."""
    from simulate_celltypes import sergio_celltypes

    data = sergio_celltypes(scenario, 3, cells_per_type=600, seed=0)
    adata = data.to_anndata(KEY)
    adata = adata[np.asarray(adata.X.sum(axis=1)).ravel() > 0].copy()
    tag = "1cl" if resolution <= 0.1 else "multi"
    return DataSet(
        f"sergio-{scenario}-{tag}",
        f"SERGIO 3 types, {scenario} network(s), resolution {resolution}",
        adata,
        list(data.regulators),
        {**SERGIO_PIPELINE, "resolution": resolution},
    )


def load_synthetic() -> DataSet:
    """``celltype_scale.synthetic_counts(3, 1500, 600, 40)`` with the pipeline defaults."""
    from celltype_scale import synthetic_counts

    adata, regulators = synthetic_counts(3, 1500, 600, 40)
    return DataSet(
        "synthetic",
        "celltype_scale.synthetic_counts(3, 1500, 600, 40)",
        adata,
        regulators,
        dict(min_genes=200, resamples=20),
    )


DATASETS: dict[str, Callable[[], DataSet]] = {
    "pbmc68k": load_pbmc68k,
    "sergio-shared-1cl": lambda: load_sergio("shared", 0.1),
    "sergio-specific-1cl": lambda: load_sergio("specific", 0.1),
    "sergio-shared-multi": lambda: load_sergio("shared", 0.3),
    "sergio-specific-multi": lambda: load_sergio("specific", 0.3),
    "synthetic": load_synthetic,
}


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of query cells: ``round(fraction * n)`` random cells of every label."""
    rng = np.random.default_rng(seed)
    query = np.zeros(len(labels), dtype=bool)
    for label in sorted(set(labels)):
        members = np.flatnonzero(labels == label)
        n = int(round(fraction * members.size))
        query[rng.choice(members, size=n, replace=False)] = True
    return query


def edge_codes(rows: np.ndarray, cols: np.ndarray, n_genes: int) -> np.ndarray:
    """Sorted unique int64 codes ``row * n_genes + col`` of directed edges."""
    return np.unique(np.asarray(rows, np.int64) * n_genes + np.asarray(cols, np.int64))


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """|a & b| / |a | b| of two sorted unique code arrays; 1 when both are empty."""
    if a.size == 0 and b.size == 0:
        return 1.0
    inter = np.intersect1d(a, b, assume_unique=True).size
    return inter / (a.size + b.size - inter)


def stored_networks(store, result, alpha: float) -> tuple[dict, dict, list[dict], float]:
    """Per type in the store: codes of its edges with exclusion <= alpha, and a summary row.

    Reads each consensus graph back with ``to_dataframe`` and maps genes with ``gene_index``
    (not the path integrate takes), and compares the stored exclusion of every edge with the
    pipeline's in-memory value.

    Returns
    -------
    networks : dict
        Cell type -> sorted edge codes (exclusion <= alpha).
    full : dict
        Cell type -> sorted edge codes of its whole consensus network.
    rows : list of dict
        Per type: consensus edges, edges kept at alpha, largest exclusion.
    mismatch : float
        Largest |stored - in-memory| exclusion over all edges (inf if edge sets differ).
    """
    n_genes = len(store.genes)
    listing = store.list()
    listing = listing[listing["kind"] == "consensus"]
    networks, full, rows, mismatch = {}, {}, [], 0.0
    for name, cell_type in zip(listing["name"], listing["cell_type"]):
        table = store.get(name).to_dataframe()
        memory = result.networks[cell_type]
        merged = table.merge(
            memory[["regulator", "target", "exclusion"]],
            left_on=["source", "target"],
            right_on=["regulator", "target"],
            how="outer",
            suffixes=("_store", "_memory"),
        )
        if len(merged) != len(table) or len(merged) != len(memory):
            mismatch = float("inf")
        elif len(merged):
            diff = np.abs(merged["exclusion_store"] - merged["exclusion_memory"]).max()
            mismatch = max(mismatch, float(diff))
        full[cell_type] = edge_codes(
            store.gene_index(table["source"]), store.gene_index(table["target"]), n_genes
        )
        kept = table[table["exclusion"] <= alpha]
        networks[cell_type] = edge_codes(
            store.gene_index(kept["source"]), store.gene_index(kept["target"]), n_genes
        )
        rows.append(
            dict(
                cell_type=cell_type,
                edges=len(table),
                kept=len(kept),
                max_exclusion=float(table["exclusion"].max()) if len(table) else float("nan"),
            )
        )
    return networks, full, rows, mismatch


def evaluate(data: DataSet, args) -> dict:
    """Split, build the reference networks, integrate the query, score every query cell."""
    from netinfer.integrate import integrate
    from netinfer.pipeline import celltype_networks
    from netinfer.store import GraphStore

    labels = data.adata.obs[KEY].astype(str).to_numpy()
    is_query = stratified_split(labels, args.query_fraction, args.seed)
    reference = data.adata[~is_query].copy()
    query = data.adata[is_query].copy()
    query.obs = pd.DataFrame(index=query.obs_names)  # labels hidden from integrate
    truth = labels[is_query]

    with tempfile.TemporaryDirectory() as tmp, GraphStore.create(f"{tmp}/graphs.zarr") as store:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # skipped small types / clusters
            result = celltype_networks(
                reference,
                data.regulators,
                store=store,
                cell_type_key=KEY,
                seed=args.seed,
                aracne_options={"threads": args.threads},
                **data.options,
            )
        pipeline_s = time.perf_counter() - t0
        alpha = args.alpha if args.alpha is not None else integrate_default("alpha")
        networks, full, type_rows, mismatch = stored_networks(store, result, alpha)
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            out = integrate(
                query,
                reference,
                store,
                cell_type_key=KEY,
                k=args.k,
                alpha=alpha,
                n_pcs=args.n_pcs,
                name="query",
                seed=args.seed,
            )
        integrate_s = time.perf_counter() - t0
        n_genes = len(store.genes)
        assignment = store.get_assignment("query")

    types = np.asarray(out.types)
    empty = np.empty(0, dtype=np.int64)
    graph_codes = [edge_codes(*assignment.graph(j), n_genes) for j in range(assignment.n_graphs)]
    predicted = types[out.weights.argmax(axis=1)]
    cells = []
    for i, true_type in enumerate(truth):
        integrated = graph_codes[out.graph_index[i]]
        oracle = networks.get(true_type, empty)
        naive = networks.get(predicted[i], empty)
        own = full.get(true_type, empty)
        cells.append(
            dict(
                cell_type=true_type,
                correct=predicted[i] == true_type,
                w_max=float(out.weights[i].max()),
                j_int=jaccard(integrated, oracle),
                j_naive=jaccard(naive, oracle),
                e_int=integrated.size,
                e_naive=naive.size,
                e_oracle=oracle.size,
                empty_int=integrated.size == 0,
                same_int=np.array_equal(integrated, oracle),
                e_own=own.size,
                own_found=np.intersect1d(integrated, own, assume_unique=True).size,
            )
        )
    cells = pd.DataFrame(cells)
    report = result.report["cell_types"]
    return dict(
        data=data,
        reference=reference,
        query=query,
        cells=cells,
        out=out,
        types=type_rows,
        report=result.report,
        clusters={t: len(e.get("clusters", {})) for t, e in report.items()},
        mismatch=mismatch,
        summary_edges_ok=bool(
            np.isclose(out.summary["mean_edges_per_cell"], cells["e_int"].mean())
        ),
        warnings=[str(w.message) for w in caught],
        pipeline_s=pipeline_s,
        integrate_s=integrate_s,
    )


def _means(group: pd.DataFrame) -> dict:
    """Mean scores of a group of query cells, formatted."""
    return {
        "query cells": len(group),
        "kNN acc": f3(group["correct"].mean()),
        "J integrated": f3(group["j_int"].mean()),
        "J naive": f3(group["j_naive"].mean()),
        "edges int": f"{group['e_int'].mean():.1f}",
        "edges naive": f"{group['e_naive'].mean():.1f}",
        "edges oracle": f"{group['e_oracle'].mean():.1f}",
        "empty int": f3(group["empty_int"].mean()),
        "int = oracle": f3(group["same_int"].mean()),
    }


def type_table(res: dict) -> list[dict]:
    """One row per true cell type of the query, then all cells."""
    cells = res["cells"]
    stored = {r["cell_type"]: r for r in res["types"]}
    ref_counts = res["reference"].obs[KEY].astype(str).value_counts()
    rows = []
    for cell_type, group in cells.groupby("cell_type", sort=True):
        s = stored.get(cell_type)
        entry = res["report"]["cell_types"].get(cell_type, {})
        rows.append(
            {
                "cell type": cell_type,
                "ref cells": int(ref_counts.get(cell_type, 0)),
                "clusters used": sum("edges" in c for c in entry.get("clusters", {}).values()),
                "network edges": s["edges"] if s else "none",
                "excl<=a": s["kept"] if s else "-",
                **_means(group),
            }
        )
    rows.append(
        {
            "cell type": "**all**",
            "ref cells": res["reference"].n_obs,
            "clusters used": "",
            "network edges": "",
            "excl<=a": "",
            **_means(cells),
        }
    )
    return rows


def integrate_default(option: str):
    """The default of one of ``integrate``'s options (the bench follows the library's)."""
    import inspect

    from netinfer.integrate import integrate

    return inspect.signature(integrate).parameters[option].default


def own_network_table(results: dict[str, dict]) -> list[dict]:
    """Per data set: edges per query cell, and recall and precision against the cell's own type
    network (its true type's whole consensus network) over cells with largest weight >= 0.8."""
    rows = []
    for name, res in results.items():
        cells = res["cells"]
        q1, median, q3 = np.percentile(cells["e_int"], [25, 50, 75])
        sure = cells[(cells["w_max"] >= 0.8) & (cells["e_own"] > 0)]
        found, own, got = sure["own_found"].sum(), sure["e_own"].sum(), sure["e_int"].sum()
        rows.append(
            {
                "data set": name,
                "query cells": len(cells),
                "edges/cell mean": f"{cells['e_int'].mean():.1f}",
                "edges/cell Q1, median, Q3": f"{q1:.0f}, {median:.0f}, {q3:.0f}",
                "cells w>=0.8 (own net non-empty)": len(sure),
                "own-net edges/cell": f"{sure['e_own'].mean():.1f}" if len(sure) else "-",
                "recall": f3(found / own) if own else "-",
                "precision": f3(found / got) if got else "-",
            }
        )
    return rows


def confidence_table(cells: pd.DataFrame) -> list[dict]:
    """Query cells grouped by their largest kNN weight."""
    bins = [
        ("1 (unanimous)", cells["w_max"] >= 1 - 1e-12),
        ("[0.8, 1)", (cells["w_max"] >= 0.8) & (cells["w_max"] < 1 - 1e-12)),
        ("< 0.8", cells["w_max"] < 0.8),
    ]
    return [{"largest weight": name, **_means(cells[mask])} for name, mask in bins if mask.any()]


def overview_row(res: dict) -> dict:
    """One summary row per data set."""
    cells, out = res["cells"], res["out"]
    with_network = sum(r["edges"] > 0 for r in res["types"])
    heldout = out.summary["knn_heldout_accuracy"]
    return {
        "data set": res["data"].name,
        "ref": res["reference"].n_obs,
        "query": res["query"].n_obs,
        "types (non-empty net)": f"{len(out.types)} ({with_network})",
        "kNN acc query": f3(cells["correct"].mean()),
        "kNN acc held-out ref": f3(
            float("nan") if heldout is None else heldout  # None: too few reference cells
        ),
        "J integrated": f3(cells["j_int"].mean()),
        "J naive": f3(cells["j_naive"].mean()),
        "edges int": f"{cells['e_int'].mean():.1f}",
        "edges naive": f"{cells['e_naive'].mean():.1f}",
        "edges oracle": f"{cells['e_oracle'].mean():.1f}",
        "empty int": f3(cells["empty_int"].mean()),
        "distinct graphs": out.summary["distinct_graphs"],
        "pipeline s": f"{res['pipeline_s']:.1f}",
        "integrate s": f"{res['integrate_s']:.1f}",
    }


def format_report(results: dict[str, dict], args, total_s: float) -> str:
    """Markdown: options, overview, then per data set the per-type and confidence tables."""
    alpha = args.alpha if args.alpha is not None else integrate_default("alpha")
    lines = [
        "## Integration of held-out cells: integrated vs naive vs oracle graphs",
        "",
        f"Each type's cells split {1 - args.query_fraction:.0%} reference / "
        f"{args.query_fraction:.0%} query (stratified, seed {args.seed}); networks from the "
        f"reference with `celltype_networks` (resamples=20, seed={args.seed}, "
        f"threads={args.threads}); query graphs from `integrate(k={args.k}, alpha={alpha}, "
        f"n_pcs={args.n_pcs})` without the query's labels.",
        "",
        "J = Jaccard index of a query cell's edge set against its *oracle* graph (its true type's "
        f"network, edges with exclusion <= {alpha}; empty where the type has no network); "
        "**J of two empty sets is 1**. *integrated*: integrate's graph; *naive*: the network "
        "(exclusion <= alpha) of the kNN's most probable type. 'empty int' is the fraction of "
        "query cells with an empty integrated graph; 'int = oracle' the fraction whose "
        "integrated graph is exactly the oracle. 'kNN acc held-out ref' is integrate's own "
        "`summary['knn_heldout_accuracy']`.",
        "",
        markdown_table([overview_row(r) for r in results.values()]),
        "",
        "Against each query cell's own type network (its true type's whole consensus network, "
        "every edge whatever its exclusion), pooled over the cells whose largest kNN weight is "
        ">= 0.8 and whose type has a non-empty network: recall = found own edges / own edges, "
        "precision = found own edges / integrated edges.",
        "",
        markdown_table(own_network_table(results)),
        "",
    ]
    for name, res in results.items():
        data, qc = res["data"], res["report"]["qc"]
        opts = ", ".join(f"{k}={v}" for k, v in data.options.items())
        excl = [r["max_exclusion"] for r in res["types"] if r["edges"]]
        lines += [
            f"### {name}",
            "",
            f"{data.description}: {data.adata.n_obs} cells x {data.adata.n_vars} genes, "
            f"{res['report']['regulators']} regulators present; reference QC kept {qc['kept']} "
            f"of {qc['input']}. Options: {opts}. Pipeline {res['pipeline_s']:.1f} s, integrate "
            f"{res['integrate_s']:.1f} s; {res['out'].summary['distinct_weights']} distinct kNN "
            f"weight vectors, {res['out'].summary['distinct_graphs']} distinct graphs.",
            "",
            f"Checks: stored vs in-memory exclusion, largest difference {res['mismatch']:.3g}; "
            f"integrate's mean_edges_per_cell "
            f"{'matches' if res['summary_edges_ok'] else 'DIFFERS from'} the count here; "
            "largest exclusion of any network edge "
            + (f"{max(excl):.3g}" if excl else "- (no edges)")
            + ".",
            "",
        ]
        if res["warnings"]:
            lines += [f"integrate warned: {w}" for w in res["warnings"]] + [""]
        lines += [
            markdown_table(type_table(res)),
            "",
            "By the query cell's largest kNN weight:",
            "",
            markdown_table(confidence_table(res["cells"])),
            "",
        ]
    lines.append(f"Total {total_s:.0f} s (SERGIO simulations are cached after the first run).")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="also write the markdown report to this file")
    ap.add_argument("--datasets", nargs="*", choices=list(DATASETS), default=list(DATASETS))
    ap.add_argument("--query-fraction", type=float, default=0.25)
    ap.add_argument("--k", type=int, default=15, help="integrate's kNN neighbours")
    ap.add_argument("--alpha", type=float, help="integrate's alpha (default: integrate's)")
    ap.add_argument("--n-pcs", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2, help="ARACNe threads")
    ap.add_argument("--seed", type=int, default=0, help="split, pipeline and integrate seed")
    args = ap.parse_args(argv)

    from simulate import synthetic_grn

    from netinfer.aracne import aracne

    Xw, gw, rw, _ = synthetic_grn(60, 40, 6, seed=1, cache=False)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # 2 resamples: nothing can be consolidated
        aracne(Xw, gw, rw, resamples=2, threads=args.threads, progress=False)  # compile the JIT
    print(f"warm-up (JIT) {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    t_all = time.perf_counter()
    results = {}
    for name in args.datasets:
        print(f"{name}: loading ...", file=sys.stderr, flush=True)
        data = DATASETS[name]()
        print(f"{name}: networks and integration ...", file=sys.stderr, flush=True)
        results[name] = evaluate(data, args)
    text = format_report(results, args, time.perf_counter() - t_all)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
