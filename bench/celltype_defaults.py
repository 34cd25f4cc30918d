"""How the defaults of ``netinfer celltype-networks`` were chosen, and how they do on fresh cases.

Two modes, on SERGIO cell types (``bench/simulate_celltypes.py``) with QC off (SERGIO cases have
about 90 genes and shallow cells, so the paper's QC thresholds would remove every cell):

``choose``
    The data the defaults were chosen on: the ``specific`` and ``shared`` scenarios at seed 0,
    3 types x 1,000 cells over the deep-cascade hubs. Two grids:

    * one ARACNe network on a type's cells subsampled to 50, 100, 300 and 1,000 cells, with 20
      or 100 resamples (the Poisson consolidation with Bonferroni is ARACNe's default) or one
      run on all cells (``resamples=0``, FDR only): how sensitive is a cluster network of that
      size?
    * the whole pipeline with clusters of at least 50, 100, 300 or 1,000 cells
      (``cluster_cells``), 20 or 100 resamples, 500 or 1,000 profiles per cluster
      (``max_cells``), with and without metacells: mean F1 over the types.

``report``
    Fresh cases never used for choosing: other seeds, other hub sets (other networks), 3-5
    types of 300-1,000 cells. Per type, the pipeline with its defaults (QC off) against
    ``netinfer.aracne.aracne`` with its defaults on that type's cells alone (the same
    normalization: 1e6 per cell, log1p); edges, precision, recall, F1 against the type's true
    network, and the time.

Run::

    python bench/celltype_defaults.py choose
    python bench/celltype_defaults.py report
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from simulate import edge_keys, markdown_table, precision_recall, truth_keys  # noqa: E402
from simulate_celltypes import sergio_celltypes  # noqa: E402

QC_OFF = dict(min_counts=0, max_counts=10**12, trim=None, min_genes=0)
CHOICE_CASES = {
    "specific seed 0": dict(scenario="specific", n_types=3, cells_per_type=1000, seed=0),
    "shared seed 0": dict(scenario="shared", n_types=3, cells_per_type=1000, seed=0),
}
FRESH_CASES = {
    "specific seed 11, 4 x 800": dict(scenario="specific", n_types=4, cells_per_type=800, seed=11),
    "specific seed 12, other hubs, 3 x 400": dict(
        scenario="specific",
        n_types=3,
        cells_per_type=400,
        seed=12,
        hubs=("STAT3", "MYC", "TP53", "NFKB1", "CEBPB"),
    ),
    "shared seed 13, other hubs, 5 x 300": dict(
        scenario="shared",
        n_types=5,
        cells_per_type=300,
        seed=13,
        hubs=("SP1", "E2F1", "JUN", "RELA", "HIF1A"),
    ),
}


def score(edges, truth, regulators) -> dict:
    """Edges, precision, recall, F1 of a network against a type's true network."""
    return precision_recall(edge_keys(edges, regulators), truth_keys(truth, regulators))


def aracne_on_cells(data, cell_type: str, n_cells: int | None, **options):
    """ARACNe on (a seeded sample of) one type's cells, normalized as the pipeline does."""
    from netinfer.aracne import aracne
    from netinfer.pipeline import normalize

    idx = np.flatnonzero(data.cell_types == cell_type)
    if n_cells is not None and n_cells < idx.size:
        idx = np.sort(np.random.default_rng(n_cells).choice(idx, size=n_cells, replace=False))
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # constant genes in small samples
        result = aracne(normalize(data.counts[idx]), data.genes, data.regulators, **options)
    return result.edges, time.perf_counter() - started


def pipeline(data, **options):
    """``celltype_networks`` on a simulation with QC off: networks, report, seconds."""
    from netinfer.pipeline import celltype_networks

    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # small networks are reported, not needed
        result = celltype_networks(
            data.to_anndata("cell_type"),
            data.regulators,
            cell_type_key="cell_type",
            allow_empty=True,
            **QC_OFF,
            **options,
        )
    return result, time.perf_counter() - started


def section(out: list[str], title: str, rows: list[dict]) -> None:
    """Add a titled table to ``out``, and show it on stderr as soon as it is done."""
    out += [title, "", markdown_table(rows), ""]
    print("\n".join(out[-4:]), file=sys.stderr, flush=True)


def choose() -> str:
    """The grids on the choice cases, as markdown."""
    out = []
    for case, params in CHOICE_CASES.items():
        data = sergio_celltypes(**params)
        rows = []
        for n_cells in (50, 100, 300, 1000):
            for label, options in (
                ("20 resamples", dict(resamples=20)),
                ("100 resamples", dict(resamples=100)),
                ("one run, FDR only", dict(resamples=0)),
            ):
                scores = [
                    score(aracne_on_cells(data, t, n_cells, **options)[0], truth, data.regulators)
                    for t, truth in data.truths.items()
                ]
                rows.append(
                    {
                        "cells": n_cells,
                        "ARACNe": label,
                        "edges (mean)": float(np.mean([s["edges"] for s in scores])),
                        "precision": float(np.nanmean([s["precision"] for s in scores])),
                        "recall": float(np.mean([s["recall"] for s in scores])),
                        "F1": float(np.mean([s["f1"] for s in scores])),
                    }
                )
        section(out, f"### {case}: one ARACNe network per type, by cells", rows)
        rows = []
        grid = [
            ("previous defaults", dict(cluster_cells=50, resamples=20, max_cells=500)),
            *[
                (f"clusters >= {size}", dict(cluster_cells=size, resamples=100, max_cells=1000))
                for size in (50, 100, 300, 1000)
            ],
            ("clusters >= 1000, 20 resamples", dict(cluster_cells=1000, resamples=20)),
            ("clusters >= 1000, max 500 profiles", dict(cluster_cells=1000, max_cells=500)),
            ("clusters >= 1000, metacells 5", dict(cluster_cells=1000, metacells=5)),
        ]
        for label, options in grid:
            result, seconds = pipeline(data, **{"resamples": 100, "max_cells": 1000, **options})
            scores = [
                score(result.networks.get(t, []), truth, data.regulators)
                for t, truth in data.truths.items()
            ]
            clusters = [len(e["clusters"]) for e in result.report["cell_types"].values()]
            rows.append(
                {
                    "pipeline": label,
                    "clusters per type": "/".join(map(str, clusters)),
                    "edges (mean)": float(np.mean([s["edges"] for s in scores])),
                    "precision": float(np.nanmean([s["precision"] for s in scores])),
                    "recall": float(np.mean([s["recall"] for s in scores])),
                    "F1": float(np.mean([s["f1"] for s in scores])),
                    "s": round(seconds, 1),
                }
            )
        section(out, f"### {case}: the pipeline, mean over types", rows)
    return "\n".join(out)


def report() -> str:
    """Pipeline defaults against ARACNe per type on the fresh cases, as markdown."""
    out = []
    for case, params in FRESH_CASES.items():
        data = sergio_celltypes(**params)
        result, seconds = pipeline(data)
        rows = []
        for cell_type, truth in data.truths.items():
            edges, aracne_s = aracne_on_cells(data, cell_type, None)
            entry = result.report["cell_types"][cell_type]
            for method, network, clusters in (
                ("celltype-networks", result.networks.get(cell_type, []), len(entry["clusters"])),
                ("aracne on the type", edges, ""),
            ):
                s = score(network, truth, data.regulators)
                rows.append(
                    {
                        "type": cell_type,
                        "cells": entry["cells"],
                        "method": method,
                        "clusters": clusters,
                        "edges": s["edges"],
                        "precision": s["precision"],
                        "recall": s["recall"],
                        "F1": s["f1"],
                        "s": round(seconds if clusters != "" else aracne_s, 1),
                    }
                )
        genes = f"{len(data.genes)} genes, {len(data.regulators)} regulators"
        section(out, f"### {case} ({genes})", rows)
        out += [f"celltype-networks: {seconds:.1f} s for all types", ""]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["choose", "report"])
    args = parser.parse_args(argv)
    print(choose() if args.mode == "choose" else report())


if __name__ == "__main__":
    main()
