"""Accuracy of ``netinfer.aracne.aracne`` against networks with a known truth.

What is measured
----------------
Data sets (``bench/simulate.py``): the synthetic network 1000 genes x 300 samples x 100
regulators, the same with half of its responses U-shaped (non-monotone), scanpy's
krumsiek11, SERGIO with 1 and 3 cell types, and a deeper SERGIO cascade (six hubs; longest
path 6 in the simulated DAG, vs 3). On each, these methods run:

* ``netinfer default``: all defaults (adaptive-partitioning MI, ``estimator="apmi"``);
* ``GCMI default``: all defaults with ``estimator="gcmi"`` (Gaussian-copula MI);
* ``APMI single run`` / ``GCMI single run``: each estimator with ``resamples=0`` (one
  network on all samples, no consolidation);
* ``ARACNe-AP-like``: bootstrap resampling, Poisson consolidation, DPI, ARACNe-AP leaf
  rule, p < 1e-8;
* ``ARACNe3-like``: subsampling, binomial consolidation, MaxEnt pruning, ARACNe3 leaf
  rule, FDR 0.05;
* ``no pruning``: defaults with ``pruning="none"``;
* ``|Spearman|``: every regulator->target pair ranked by absolute Spearman correlation,
  cut at the edge count of ``netinfer default``.

All ARACNe runs use ``resamples=20`` (for time), ``seed=0`` and 2 threads; their times
(``s``) include the full-data MI of every pair that ``full_output`` computes.

Metrics against the truth (directed regulator->target edges; an edge between two
regulators is scored undirected: correct if either direction is in the truth, and both
directions count once): precision, recall and F1 of the method's own edge set, and AUPR
(sklearn's average precision) over *all* candidate regulator->target pairs. For AUPR an
ARACNe run must rank every pair: if ``aracne`` accepts ``full_output=True`` its complete
output is used (final edges first, then every pair by (count over resamples, full-data
MI)); otherwise the final edges come first, ordered by (count, MI), and every other pair
follows, ordered by its adaptive-partitioning MI on all samples (computed with
``netinfer.mi.apmi``). ``random`` in the header is the AUPR of a random ranking
(the fraction of candidate pairs that are true).

Usage::

    python bench/aracne_accuracy.py [--out results.md] [--datasets krumsiek SERGIO]
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for _p in (str(ROOT), str(BENCH)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from simulate import (  # noqa: E402
    SCORING_RULE,
    all_datasets,
    aupr,
    candidate_keys,
    edge_key,
    edge_keys,
    f3,
    markdown_table,
    network_stats,
    precision_recall,
    spearman_abs,
    synthetic_grn,
    truth_keys,
)

CONFIGS: dict[str, dict] = {
    "netinfer default": {},
    "GCMI default": dict(estimator="gcmi"),
    "APMI single run": dict(resamples=0),
    "GCMI single run": dict(estimator="gcmi", resamples=0),
    "ARACNe-AP-like": dict(
        resampling="bootstrap",
        consolidation="poisson",
        pruning="dpi",
        leaf_rule="aracne-ap",
        pvalue=1e-8,
    ),
    "ARACNe3-like": dict(
        resampling="subsample",
        consolidation="binomial",
        pruning="maxent",
        leaf_rule="aracne3",
        fdr=0.05,
    ),
    "no pruning": dict(pruning="none"),
}
"""Method name -> keyword arguments of ``aracne`` on top of :data:`COMMON`."""

COMMON = dict(resamples=20, seed=0, threads=2, progress=False)
BASELINE = "|Spearman|"
SIDE_BY_SIDE = {  # estimator -> its method at otherwise equal settings
    "default": ("netinfer default", "GCMI default"),
    "single run": ("APMI single run", "GCMI single run"),
}


def load_impl(spec: str) -> Callable:
    """Import the function to evaluate from ``"module:function"``."""
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name or "aracne")


def _max_by_key(regulators, targets, values, regs: set[str]) -> dict:
    """Score per canonical edge key: the maximum over the pair's directions."""
    out: dict[tuple[str, str], float] = {}
    for r, t, v in zip(regulators, targets, values, strict=True):
        if r == t:
            continue
        k = edge_key(str(r), str(t), regs)
        if v > out.get(k, -np.inf):
            out[k] = float(v)
    return out


def matrix_scores(M: np.ndarray, genes: Sequence[str], regulators: Sequence[str]) -> dict:
    """Scores of every candidate key from a regulators x genes score matrix."""
    rr, gg = np.meshgrid(np.arange(len(regulators)), np.arange(len(genes)), indexing="ij")
    regs = np.asarray(regulators, dtype=object)[rr.ravel()]
    tars = np.asarray(genes, dtype=object)[gg.ravel()]
    return _max_by_key(regs, tars, M.ravel(), set(regulators))


def full_data_mi(X, genes, regulators, leaf_rule: str) -> np.ndarray | None:
    """Adaptive-partitioning MI of every regulator with every gene on all samples.

    Uses ``netinfer.mi.apmi``; returns None if those helpers are unavailable.

    Returns
    -------
    ndarray, shape (n_regulators, n_genes), or None
    """
    try:
        from netinfer.mi import apmi as m
    except ImportError:
        return None
    idx = {g: i for i, g in enumerate(genes)}
    ranks = m.random_tie_ranks(np.asarray(X, dtype=np.float64).T, np.random.default_rng(0))
    codes, depth = m.rank_codes(ranks)
    reg_cols = np.array([idx[r] for r in regulators], dtype=np.int64)
    return m.apmi_regulators(codes, reg_cols, depth, m.min_split_for(leaf_rule))


def aracne_scores(res, genes, regulators, fallback_mi: np.ndarray | None) -> tuple[dict, str]:
    """Rank every candidate pair from an ARACNe result.

    Parameters
    ----------
    res : object
        Result of ``aracne``; ``res.edges`` has ``regulator, target, mi, count``.
    genes, regulators : sequence of str
        Data set genes and candidate regulators.
    fallback_mi : ndarray or None
        Full-data MI (regulators x genes) used to order pairs that are not final edges.

    Returns
    -------
    scores : dict
        Score per canonical key (higher = more confident).
    how : str
        Short description of how the tail was ranked.
    """
    e = res.edges
    top = len(genes) * len(regulators) + 10.0  # final edges rank above any fallback score
    order = e.sort_values(["count", "mi"], ascending=True, kind="mergesort").reset_index(drop=True)
    head = _max_by_key(order.regulator, order.target, top + np.arange(len(order)), set(regulators))
    if fallback_mi is None:
        return head, "other pairs tied at the bottom"
    scores = matrix_scores(fallback_mi, genes, regulators)  # MI in nats, far below `top`
    scores.update(head)
    return scores, "other pairs by full-data MI"


def evaluate_dataset(name: str, build, aracne: Callable, accepts: set[str]) -> tuple[dict, list]:
    """Run every method on one data set and score it.

    Parameters
    ----------
    name : str
        Display name.
    build : callable
        Returns ``(X, genes, regulators, truth)``.
    aracne : callable
        The function under test.
    accepts : set of str
        Keyword arguments ``aracne`` accepts (to detect ``full_output``).

    Returns
    -------
    info : dict
        Data set description.
    rows : list of dict
        One row of metrics per method.
    """
    X, genes, regulators, truth = build()
    tkeys = truth_keys(truth, regulators)
    cands = candidate_keys(genes, regulators)
    info = dict(name=name, samples=X.shape[0], **network_stats(genes, regulators, truth))
    info["random_aupr"] = len(tkeys & set(cands)) / len(cands)

    rows, fallback, default_k = [], {}, 0
    for method, kw in CONFIGS.items():
        kwargs = {**COMMON, **kw}
        full = "full_output" in accepts
        if full:
            kwargs["full_output"] = True
        t0 = time.perf_counter()
        res = aracne(X, genes, regulators, **kwargs)
        seconds = time.perf_counter() - t0
        edges = res.edges
        if full:  # every pair; the final network is the `significant` part
            all_pairs = edges
            edges = all_pairs[all_pairs["significant"].astype(bool)]
            scores = _max_by_key(
                all_pairs.regulator,
                all_pairs.target,
                _lexi_score(all_pairs),
                set(regulators),
            )
            how = "full_output"
        else:
            leaf = kwargs.get("leaf_rule", "aracne-ap")
            if leaf not in fallback:
                fallback[leaf] = full_data_mi(X, genes, regulators, leaf)
            scores, how = aracne_scores(res, genes, regulators, fallback[leaf])
        pred = edge_keys(edges, regulators)
        if method == "netinfer default":
            default_k = len(pred)
        rows.append(
            dict(
                method=method,
                seconds=seconds,
                ranking=how,
                aupr=aupr(scores, cands, tkeys),
                **precision_recall(pred, tkeys),
            )
        )

    t0 = time.perf_counter()
    sp = matrix_scores(spearman_abs(X, genes, regulators), genes, regulators)
    ranked = sorted(sp, key=sp.get, reverse=True)
    pred = set(ranked[:default_k])
    rows.append(
        dict(
            method=BASELINE,
            seconds=time.perf_counter() - t0,
            ranking="|rho|",
            aupr=aupr(sp, cands, tkeys),
            **precision_recall(pred, tkeys),
        )
    )
    return info, rows


def _lexi_score(e: pd.DataFrame) -> np.ndarray:
    """Rank of each row of a ``full_output`` table by (significant, count, mi); higher = better."""
    order = e.sort_values(["significant", "count", "mi"], ascending=True, kind="mergesort").index
    score = np.empty(len(e))
    score[e.index.get_indexer(order)] = np.arange(len(e))
    return score


def format_report(results: Sequence[tuple[dict, list]], impl: str) -> str:
    """Markdown report: one table per data set, then the mean over data sets."""
    lines = [
        f"## ARACNe accuracy: `{impl}`, resamples={COMMON['resamples']}, "
        f"threads={COMMON['threads']}",
        "",
        f"Scoring: {SCORING_RULE} AUPR ranks all candidate regulator->target pairs; for "
        "ARACNe runs the final edges come first, then all pairs by (count over resamples, "
        "full-data MI) ('full_output' in the ranking column) or, without full_output, the "
        f"other pairs by full-data MI. {BASELINE} is cut at the edge count of "
        "'netinfer default'. P is '-' for an empty edge set.",
        "",
    ]
    for info, rows in results:
        lines += [
            f"### {info['name']}",
            "",
            f"{info['samples']} samples, {info['genes']} genes, {info['regulators']} "
            f"regulators, {info['scored_true_edges']} true edges (scored), "
            f"{info['frac_regulated']:.0%} genes regulated, longest path {info['depth']}, "
            f"random AUPR {info['random_aupr']:.3f}",
            "",
            markdown_table([_fmt(r) for r in rows]),
            "",
        ]
    df = pd.DataFrame([r for _, rows in results for r in rows])
    mean = df.groupby("method", sort=False)[["precision", "recall", "f1", "aupr", "seconds"]].mean()
    overall = [
        {
            "method": m,
            "P": f3(v.precision),
            "R": f3(v.recall),
            "F1": f3(v.f1),
            "AUPR": f3(v.aupr),
            "s": f"{v.seconds:.1f}",
        }
        for m, v in mean.iterrows()
    ]
    lines += [
        f"### Overall (mean over {len(results)} data sets; P over those with at least one edge)",
        "",
        markdown_table(overall),
        "",
        "### The estimators side by side (APMI = adaptive partitioning, GCMI = Gaussian copula; "
        "time ratio = APMI s / GCMI s)",
        "",
        markdown_table(estimator_comparison(results)),
        "",
    ]
    return "\n".join(lines)


def estimator_comparison(results: Sequence[tuple[dict, list]]) -> list[dict]:
    """F1, AUPR and time of APMI and GCMI at the same settings, per data set and setting."""
    rows = []
    for info, metrics in results:
        by_method = {r["method"]: r for r in metrics}
        for setting, (apmi, gcmi) in SIDE_BY_SIDE.items():
            if apmi not in by_method or gcmi not in by_method:
                continue
            a, g = by_method[apmi], by_method[gcmi]
            rows.append(
                {
                    "data set": info["name"],
                    "setting": setting,
                    "F1 APMI": f3(a["f1"]),
                    "F1 GCMI": f3(g["f1"]),
                    "AUPR APMI": f3(a["aupr"]),
                    "AUPR GCMI": f3(g["aupr"]),
                    "s APMI": f"{a['seconds']:.2f}",
                    "s GCMI": f"{g['seconds']:.2f}",
                    "time ratio": f"{a['seconds'] / g['seconds']:.1f}x" if g["seconds"] else "n/a",
                }
            )
    return rows


def _fmt(r: dict) -> dict:
    """Format one metrics row for display."""
    return {
        "method": r["method"],
        "edges": r["edges"],
        "TP": r["tp"],
        "P": f3(r["precision"]),
        "R": f3(r["recall"]),
        "F1": f3(r["f1"]),
        "AUPR": f3(r["aupr"]),
        "s": f"{r['seconds']:.1f}",
        "ranking": r["ranking"],
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="also write the markdown report to this file")
    ap.add_argument("--impl", default="netinfer.aracne:aracne", help="module:function to test")
    ap.add_argument("--resamples", type=int, default=COMMON["resamples"])
    ap.add_argument("--threads", type=int, default=COMMON["threads"])
    ap.add_argument(
        "--datasets",
        nargs="*",
        metavar="SUBSTR",
        help="only data sets whose name contains one of these (case-insensitive)",
    )
    args = ap.parse_args(argv)
    COMMON.update(resamples=args.resamples, threads=args.threads)

    aracne = load_impl(args.impl)
    accepts = set(inspect.signature(aracne).parameters)
    Xw, gw, rw, _ = synthetic_grn(60, 40, 6, seed=1, cache=False)
    t0 = time.perf_counter()
    aracne(Xw, gw, rw, resamples=2, threads=args.threads, progress=False)  # compile the JIT
    print(f"warm-up (JIT) {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    datasets = all_datasets(quick=True)
    if args.datasets:
        want = [s.lower() for s in args.datasets]
        datasets = {k: v for k, v in datasets.items() if any(s in k.lower() for s in want)}
    results = []
    t_all = time.perf_counter()
    for name, build in datasets.items():
        print(f"{name} ...", file=sys.stderr, flush=True)
        results.append(evaluate_dataset(name, build, aracne, accepts))
    text = format_report(results, args.impl)
    text += f"\nTotal {time.perf_counter() - t_all:.0f} s.\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
