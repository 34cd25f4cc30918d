"""Accuracy of ``netinfer.pipeline.celltype_networks`` on SERGIO cell types with a known truth.

What is measured
----------------
Two SERGIO simulations of 3 cell types over one RegNetwork gene set
(``bench/simulate_celltypes.py``; by default the deep-cascade hubs of ``bench/simulate.py``,
15 targets per hub: about 90 genes and 16 regulators):

* **shared network**: every type follows the same network (SERGIO's multi-type mode; master
  regulators' production rates differ per type);
* **type-specific networks**: each type follows the DAG with its own random 40% of edges dropped,
  simulated as a separate one-type SERGIO run; the cells are concatenated.

SERGIO's technical noise (library size about ``exp(6.9)`` ~ 1,000 UMI before dropout, dropout
midpoint at the 65th percentile) turns expression into raw counts, which go into the pipeline
with the true cell types as ``cell_type_key``. Each type's networks are scored against that
type's own truth. Methods, per cell type:

* ``consensus``: the pipeline's consensus network of the type (Leiden clusters within the type,
  ARACNe per cluster, binomial recurrence test with BH FDR);
* ``cluster union``: every edge of any of the type's cluster networks (what the consensus test
  filters), ranked by (clusters containing it, mean MI);
* ``ARACNe pooled``: ``netinfer.aracne.aracne`` on all cells of all types together;
* ``ARACNe per type``: ``aracne`` on the type's cells, without clustering;
* ``|Spearman| pooled`` / ``|Spearman| per type``: every regulator->target pair ranked by
  absolute Spearman correlation, cut at the edge count of the type's consensus (or, where the
  consensus is empty, at that of ``ARACNe per type``; the ``cut`` column says which).

ARACNe runs use the defaults with ``resamples=20``, ``seed=0`` and 2 threads, on
library-size-normalised log1p data (ranks are what matter, so the pipeline's 1e6 scaling gives
the same networks). Spearman is computed on the same data. Cells with fewer than ``min_counts``
UMI (the few that SERGIO's dropout leaves empty) are removed for every method.

Metrics against the truth (``bench/simulate.py``'s rule: directed regulator->target edges; an
edge between two regulators is scored undirected): precision, recall, F1 of each method's edge
set, and AUPR (sklearn's average precision) over all candidate regulator->target pairs. Ranking
for AUPR: consensus edges by (count, MI), every other pair tied at the bottom; ARACNe runs with
``full_output=True``, every pair by (significant, count over resamples, full-data MI);
|Spearman| by |rho|. ``random`` is the AUPR of a random ranking.

Usage::

    python bench/celltype_accuracy.py [--out results.md] [--cells-per-type 600]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for _p in (str(ROOT), str(BENCH)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from aracne_accuracy import _lexi_score, _max_by_key, matrix_scores  # noqa: E402
from simulate import (  # noqa: E402
    SCORING_RULE,
    aupr,
    candidate_keys,
    edge_keys,
    f3,
    markdown_table,
    normalize_log1p,
    precision_recall,
    spearman_abs,
    truth_keys,
)
from simulate_celltypes import SCENARIOS, CellTypeData, sergio_celltypes  # noqa: E402

SCENARIO_NAMES = {"shared": "shared network", "specific": "type-specific networks"}
ARACNE = dict(resamples=20, seed=0, threads=2, progress=False)
"""Options of the baseline ARACNe runs (pooled and per type)."""

PIPELINE = dict(
    min_counts=1,
    max_counts=10**9,
    trim=None,
    min_genes=1,
    resolution=0.25,
    min_cells=40,
    max_cells=500,
    resamples=20,
    fdr=0.05,
    seed=0,
    cluster_cells=40,  # clusters as small as min_cells, as when these results were recorded
    allow_empty=True,  # an empty consensus is a result here, not an error
)
"""Options of ``celltype_networks`` (QC off: SERGIO cells have a few hundred UMI)."""


def ranked_scores(edges: pd.DataFrame, columns: Sequence[str], regulators) -> dict:
    """Score per canonical key: the rank of each row of ``edges`` by ``columns`` (higher wins)."""
    if edges.empty:
        return {}
    order = edges.sort_values(list(columns), ascending=True, kind="mergesort").index
    score = np.empty(len(edges))
    score[edges.index.get_indexer(order)] = np.arange(len(edges), dtype=float)
    return _max_by_key(edges.regulator, edges.target, score, set(regulators))


def cluster_union(networks: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Every edge of any cluster network with its count of clusters and mean MI."""
    if not networks:
        return pd.DataFrame(columns=["regulator", "target", "mi", "count"])
    pooled = pd.concat([n[["regulator", "target", "mi"]] for n in networks])
    return (
        pooled.groupby(["regulator", "target"], sort=True)["mi"]
        .agg(mi="mean", count="size")
        .reset_index()
    )


def run_aracne(X, genes, regulators) -> tuple[set, dict, float]:
    """ARACNe with ``full_output``: predicted keys, scores of every pair, seconds."""
    from netinfer.aracne import aracne

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # constant genes in small subsets
        res = aracne(X, genes, regulators, full_output=True, **ARACNE)
    seconds = time.perf_counter() - t0
    e = res.edges
    pred = edge_keys(e[e["significant"].astype(bool)], regulators)
    scores = _max_by_key(e.regulator, e.target, _lexi_score(e), set(regulators))
    return pred, scores, seconds


def spearman_scores(X, genes, regulators) -> tuple[dict, float]:
    """|Spearman| score of every candidate key, and seconds."""
    t0 = time.perf_counter()
    with np.errstate(invalid="ignore", divide="ignore"):
        s = matrix_scores(spearman_abs(X, genes, regulators), genes, regulators)
    return s, time.perf_counter() - t0


def _row(scenario, cell_type, method, pred, scores, cands, tkeys, seconds, cut="") -> dict:
    """One metrics row (``cut``: how a ranking's edge set was cut)."""
    return dict(
        scenario=scenario,
        cell_type=cell_type,
        method=method,
        seconds=seconds,
        aupr=aupr(scores, cands, tkeys),
        **precision_recall(pred, tkeys),
        cut=cut,
    )


def evaluate(scenario: str, data: CellTypeData, metacells: int | None) -> tuple[list, dict]:
    """Run the pipeline and every baseline on one scenario and score them per cell type.

    Parameters
    ----------
    scenario : str
        ``"shared"`` or ``"specific"``.
    data : CellTypeData
        The simulation.
    metacells : int or None
        ``metacells`` option of the pipeline.

    Returns
    -------
    rows : list of dict
        One metrics row per (cell type, method).
    info : dict
        Pipeline report, seconds, and per-type description.
    """
    from netinfer.pipeline import celltype_networks

    # cells that SERGIO's dropout left empty fail any QC; drop them for every method alike
    keep = data.counts.sum(axis=1) >= PIPELINE["min_counts"]
    data = replace(data, counts=data.counts[keep], cell_types=data.cell_types[keep])
    genes, regulators = data.genes, data.regulators
    cands = candidate_keys(genes, regulators)
    adata = data.to_anndata("cell_type")
    t0 = time.perf_counter()
    result = celltype_networks(
        adata, regulators, cell_type_key="cell_type", metacells=metacells, **PIPELINE
    )
    pipeline_s = time.perf_counter() - t0

    X = normalize_log1p(data.counts)
    pooled_pred, pooled_scores, pooled_s = run_aracne(X, genes, regulators)
    sp_pooled, sp_pooled_s = spearman_scores(X, genes, regulators)
    sp_pooled_rank = sorted(sp_pooled, key=sp_pooled.get, reverse=True)

    rows, types = [], {}
    for cell_type, truth in data.truths.items():
        tkeys = truth_keys(truth, regulators)
        types[cell_type] = dict(
            true_edges=len(tkeys), random_aupr=len(tkeys & set(cands)) / len(cands)
        )
        cons = result.networks.get(cell_type)
        if cons is None:
            cons = pd.DataFrame(columns=["regulator", "target", "mi", "count"])
        cons_pred = edge_keys(cons, regulators)
        nets = [v for (t, _), v in result.clusters.items() if t == cell_type]
        union = cluster_union(nets)
        add = dict(scenario=SCENARIO_NAMES[scenario], cell_type=cell_type, cands=cands, tkeys=tkeys)
        rows.append(
            _row(
                method="consensus",
                pred=cons_pred,
                scores=ranked_scores(cons.reset_index(drop=True), ["count", "mi"], regulators),
                seconds=pipeline_s,
                **add,
            )
        )
        rows.append(
            _row(
                method="cluster union",
                pred=edge_keys(union, regulators),
                scores=ranked_scores(union, ["count", "mi"], regulators),
                seconds=float("nan"),
                **add,
            )
        )
        rows.append(
            _row(
                method="ARACNe pooled",
                pred=pooled_pred,
                scores=pooled_scores,
                seconds=pooled_s,
                **add,
            )
        )
        Xt = normalize_log1p(data.counts[data.cell_types == cell_type])
        pred, scores, s = run_aracne(Xt, genes, regulators)
        rows.append(_row(method="ARACNe per type", pred=pred, scores=scores, seconds=s, **add))
        # |Spearman| edge sets: as many edges as the consensus, or (empty consensus) as the
        # per-type ARACNe network
        k, cut = (len(cons_pred), "consensus") if cons_pred else (len(pred), "ARACNe per type")
        cut = f"top {k} ({cut})"
        rows.append(
            _row(
                method="|Spearman| pooled",
                pred=set(sp_pooled_rank[:k]),
                scores=sp_pooled,
                seconds=sp_pooled_s,
                cut=cut,
                **add,
            )
        )
        sp, s = spearman_scores(Xt, genes, regulators)
        ranked = sorted(sp, key=sp.get, reverse=True)
        rows.append(
            _row(
                method="|Spearman| per type",
                pred=set(ranked[:k]),
                scores=sp,
                seconds=s,
                cut=cut,
                **add,
            )
        )
    info = dict(report=result.report, seconds=pipeline_s, types=types, data=data)
    return rows, info


def _fmt(r: dict) -> dict:
    """Format one metrics row for display."""
    return {
        "cell type": r["cell_type"],
        "method": r["method"],
        "edges": r["edges"],
        "TP": r["tp"],
        "P": f3(r["precision"]),
        "R": f3(r["recall"]),
        "F1": f3(r["f1"]),
        "AUPR": f3(r["aupr"]),
        "s": "-" if r["seconds"] != r["seconds"] else f"{r['seconds']:.1f}",
        "cut": r["cut"],
    }


def pipeline_table(report: dict) -> list[dict]:
    """One row per cell type from the pipeline report: cells, clusters, edges."""
    rows = []
    for cell_type, entry in report["cell_types"].items():
        clusters = entry.get("clusters", {})
        used = [c for c in clusters.values() if "edges" in c]
        rows.append(
            {
                "cell type": cell_type,
                "cells": entry["cells"],
                "clusters": len(clusters),
                "used": len(used),
                "cells per cluster": ", ".join(str(c["cells"]) for c in clusters.values()),
                "edges per used cluster": ", ".join(str(c["edges"]) for c in used),
                "consensus edges": entry.get("consensus_edges", 0),
                "note": entry.get("note", entry.get("skipped", "")),
            }
        )
    return rows


def format_report(results: dict, args) -> str:
    """Markdown: options, then per scenario the pipeline summary, metrics and means."""
    opts = ", ".join(f"{k}={v}" for k, v in PIPELINE.items())
    lines = [
        "## Cell-type networks vs pooled and per-type ARACNe (SERGIO, 3 cell types)",
        "",
        f"Pipeline: `celltype_networks(..., cell_type_key='cell_type', {opts}, "
        f"metacells={args.metacells})`. Baselines: `aracne` defaults with "
        f"resamples={ARACNE['resamples']}, threads={ARACNE['threads']}, on log1p(CP10k).",
        "",
        f"Scoring: {SCORING_RULE} AUPR ranks all candidate regulator->target pairs: consensus "
        "and cluster-union edges by (count, MI), other pairs tied at the bottom; ARACNe by "
        "(significant, count, MI) over every pair (full_output); |Spearman| by |rho|, its edge "
        "set cut at the type's consensus edge count (at the per-type ARACNe edge count where "
        "the consensus is empty). P is '-' for an empty edge set. "
        "'s' of the consensus is the whole pipeline run (all types).",
        "",
    ]
    for scenario, (rows, info) in results.items():
        data = info["data"]
        qc = info["report"]["qc"]
        lines += [
            f"### {SCENARIO_NAMES[scenario]}",
            "",
            f"{len(data.cell_types)} cells ({args.cells_per_type} simulated per type; empty "
            "cells removed), "
            f"{len(data.genes)} genes, {len(data.regulators)} regulators, median "
            f"{np.median(data.counts.sum(axis=1)):.0f} UMI per cell, "
            f"{(data.counts == 0).mean():.0%} zeros; QC kept {qc['kept']} of {qc['input']} "
            f"cells; pipeline {info['seconds']:.1f} s.",
            "",
            markdown_table(pipeline_table(info["report"])),
            "",
        ]
        for cell_type, t in info["types"].items():
            lines.append(
                f"- {cell_type}: {t['true_edges']} true edges (scored), random AUPR "
                f"{t['random_aupr']:.3f}"
            )
        lines += ["", markdown_table([_fmt(r) for r in rows]), ""]
        df = pd.DataFrame(rows)
        mean = df.groupby("method", sort=False)[["edges", "precision", "recall", "f1", "aupr"]]
        mean = mean.mean()
        lines += [
            f"Mean over the {df.cell_type.nunique()} cell types:",
            "",
            markdown_table(
                [
                    {
                        "method": m,
                        "edges": f"{v.edges:.1f}",
                        "P": f3(v.precision),
                        "R": f3(v.recall),
                        "F1": f3(v.f1),
                        "AUPR": f3(v.aupr),
                    }
                    for m, v in mean.iterrows()
                ]
            ),
            "",
        ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="also write the markdown report to this file")
    ap.add_argument("--cells-per-type", type=int, default=600)
    ap.add_argument("--resolution", type=float, default=PIPELINE["resolution"])
    ap.add_argument("--min-cells", type=int, default=PIPELINE["min_cells"])
    ap.add_argument(
        "--resamples",
        type=int,
        default=PIPELINE["resamples"],
        help="ARACNe resamples, pipeline and baselines alike",
    )
    ap.add_argument("--metacells", type=int, default=None, help="pipeline metacells k")
    ap.add_argument("--seed", type=int, default=0, help="simulation seed")
    ap.add_argument("--scenarios", nargs="*", choices=SCENARIOS, default=list(SCENARIOS))
    args = ap.parse_args(argv)
    PIPELINE.update(resolution=args.resolution, min_cells=args.min_cells, resamples=args.resamples)
    ARACNE.update(resamples=args.resamples)

    from simulate import synthetic_grn

    from netinfer.aracne import aracne

    Xw, gw, rw, _ = synthetic_grn(60, 40, 6, seed=1, cache=False)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # 2 resamples: nothing can be consolidated
        aracne(Xw, gw, rw, resamples=2, threads=2, progress=False)  # compile the JIT
    print(f"warm-up (JIT) {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    t_all = time.perf_counter()
    results = {}
    for scenario in args.scenarios:
        print(f"{scenario}: simulating ...", file=sys.stderr, flush=True)
        data = sergio_celltypes(scenario, 3, cells_per_type=args.cells_per_type, seed=args.seed)
        print(f"{scenario}: inferring ...", file=sys.stderr, flush=True)
        results[scenario] = evaluate(scenario, data, args.metacells)
    text = format_report(results, args)
    total = time.perf_counter() - t_all
    text += f"\nTotal {total:.0f} s (SERGIO simulations are cached after the first run).\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
