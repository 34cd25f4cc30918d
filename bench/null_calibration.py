"""Calibration of the APMI null's tail: observed over nominal exceedance on fresh null draws.

For each sample size, the null model is fitted as ``netinfer aracne`` fits it (the default 10 M
null values, ``--seeds`` first), and its thresholds at p = 1e-3 ... 1e-6 are applied to an
independent stream of fresh null MI values (the second seed), counted as they are simulated,
never held. A calibrated tail gives observed / nominal near 1, within the Poisson error of the
fresh draw count (the 95% band is printed). For comparison, the model of the first 1 M values of
the same stream (the default before: the same tail model, gamma above the top 0.1%, fitted on
1,000 values instead of 10,000). ``--tail-fractions`` compares other tail starts of the model.
Seeds used so far are listed in bench/RESULTS.md: choose on some, report on others.

    PYTHONPATH=. python bench/null_calibration.py [--sizes 50 100 500 5000] [--fresh 20e6 ...]
        [--seeds 7 8]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from scipy import stats

os.environ["NETINFER_CACHE_DIR"] = ""  # measure fresh simulations, keep nothing on disk

from netinfer.mi.null import (  # noqa: E402
    DEFAULT_NULL_PAIRS,
    DEFAULT_TAIL_FRACTION,
    null_batches,
    null_model,
)

PVALUES = (1e-3, 1e-4, 1e-5, 1e-6)
BEFORE_PAIRS = 1_000_000  # the default null size before issue 20


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
        "--null-pairs", type=float, default=DEFAULT_NULL_PAIRS, help="null values of the model"
    )
    parser.add_argument(
        "--seeds", type=int, nargs=2, default=[7, 8], help="seeds of the fit and the fresh draws"
    )
    parser.add_argument(
        "--tail-fractions",
        type=float,
        nargs="+",
        default=[DEFAULT_TAIL_FRACTION],
        help="tail starts of the model (fractions of its null values above it) to compare",
    )
    args = parser.parse_args()
    common = dict(scheme="none", fraction=1.0, min_split=3)
    fit_seed, fresh_seed = args.seeds
    rows = []
    for n, fresh_pairs in zip(args.sizes, args.fresh, strict=True):
        started = time.perf_counter()
        models = [
            null_model(n, seed=fit_seed, n_pairs=int(args.null_pairs), tail_fraction=f, **common)
            for f in args.tail_fractions
        ]
        fit_seconds = time.perf_counter() - started
        models.append(null_model(n, seed=fit_seed, n_pairs=BEFORE_PAIRS, **common))
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
            f"({models[0].n_values * len(args.tail_fractions) / fit_seconds:,.0f} per s), "
            f"{n_fresh:,} fresh in "
            f"{fresh_seconds:.0f} s",
            flush=True,
        )
    size = f"{args.null_pairs / 1e6:g} M null"
    columns = [f"{size}, gamma above the top {100 * f:g}%" for f in args.tail_fractions]
    columns.append("1 M null, gamma above the top 0.1% (before)")
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
