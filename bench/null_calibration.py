"""Calibration of the APMI null's tail: observed over nominal exceedance on fresh null draws.

For each sample size, the null model is fitted as ``netinfer aracne`` fits it (the default
null size for that sample size, ``--seeds`` first), and its thresholds at p = 1e-3 ... 1e-6 are
applied to an independent stream of fresh null MI values (the second seed), counted as they are
simulated, never held. A calibrated tail gives observed / nominal near 1, within the Poisson
error of the fresh draw count (the 95% band is printed). For comparison, the models of the
first 10 M and 1 M values of the same stream (the defaults before: the same tail model, gamma
above the top 0.1%). ``--tail-values`` compares other tail starts of the default model.
Seeds used so far are listed in bench/RESULTS.md: choose on some, report on others.

    PYTHONPATH=. python bench/null_calibration.py [--sizes 50 100 500 5000] [--fresh 20e6 ...]
        [--seeds 7 8] [--null-pairs N] [--tail-values 10000 1000]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from scipy import stats

os.environ["NETINFER_CACHE_DIR"] = ""  # measure fresh simulations, keep nothing on disk

from netinfer.mi.null import (  # noqa: E402
    null_batches,
    null_model,
)

PVALUES = (1e-3, 1e-4, 1e-5, 1e-6)
#: Earlier default null sizes, each with the tail above its top 0.1%.
BEFORE_PAIRS = (10_000_000, 1_000_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 500, 5000])
    parser.add_argument(
        "--fresh",
        type=float,
        nargs="+",
        default=[20e6, 20e6, 20e6, 20e6],
        help="fresh null draws per size",
    )
    parser.add_argument(
        "--null-pairs",
        type=float,
        default=None,
        help="null values of the model (default: netinfer's default for the sample size)",
    )
    parser.add_argument(
        "--seeds", type=int, nargs=2, default=[7, 8], help="seeds of the fit and the fresh draws"
    )
    parser.add_argument(
        "--tail-values",
        type=int,
        nargs="+",
        default=[None],
        help="tail starts of the model (its null values above it) to compare",
    )
    args = parser.parse_args()
    common = dict(scheme="none", fraction=1.0, min_split=3)
    fit_seed, fresh_seed = args.seeds
    rows = []
    for n, fresh_pairs in zip(args.sizes, args.fresh, strict=True):
        n_pairs = None if args.null_pairs is None else int(args.null_pairs)  # None: as aracne
        started = time.perf_counter()
        models = [
            null_model(n, seed=fit_seed, n_pairs=n_pairs, tail_values=k, **common)
            for k in args.tail_values
        ]
        fit_seconds = time.perf_counter() - started
        models += [null_model(n, seed=fit_seed, n_pairs=b, **common) for b in BEFORE_PAIRS]
        thresholds = np.array([[m.threshold(p) for p in PVALUES] for m in models])
        exceed, n_fresh = np.zeros(thresholds.shape), 0
        started = time.perf_counter()
        for values in null_batches(n, seed=fresh_seed, n_pairs=int(fresh_pairs), **common):
            exceed += (values[:, None, None] > thresholds).sum(axis=0)
            n_fresh += values.size
        fresh_seconds = time.perf_counter() - started
        for k, p in enumerate(PVALUES):
            expected = p * n_fresh
            low, high = stats.poisson.interval(0.95, expected)
            ratios = exceed[:, k] / expected
            rows.append((n, n_fresh, p, expected, low / expected, high / expected, *ratios))
        print(
            f"{n} samples: {models[0].n_values:,} null values in {fit_seconds:.0f} s "
            f"({models[0].n_values * len(args.tail_values) / fit_seconds:,.0f} per s), "
            f"{n_fresh:,} fresh in "
            f"{fresh_seconds:.0f} s",
            flush=True,
        )
    size = "default null" if args.null_pairs is None else f"{args.null_pairs / 1e6:g} M null"
    default_tail = "the default tail (its top 10,000 values, or top 0.1% when smaller)"
    columns = [
        f"{size}, {default_tail if k is None else f'gamma above its top {k:,} values'}"
        for k in args.tail_values
    ]
    columns += [f"{b // 10**6} M null, gamma above the top 0.1% (before)" for b in BEFORE_PAIRS]
    print(
        "\n| samples | fresh draws | p | expected count | 95% band of a calibrated tail | "
        + " | ".join(columns)
        + " |"
    )
    print("| --- " * (5 + len(columns)) + "|")
    for n, size, p, expected, low, high, *ratios in rows:
        cells = " | ".join(f"{r:.2f}" for r in ratios)
        print(f"| {n:,} | {size:,} | {p:g} | {expected:,.0f} | {low:.2f}-{high:.2f} | {cells} |")


if __name__ == "__main__":
    main()
