"""Calibration of the APMI null's tail: observed over nominal exceedance on fresh null draws.

For each sample size, the null model is fitted as ``netinfer aracne`` fits it (1 M null MI values,
seed 3), and its thresholds at p = 1e-3 ... 1e-6 are applied to an independent, larger set of null
MI values (seed 4). Seeds 1 and 2 served to choose the tail model (``netinfer.mi.null``); these are
fresh. A calibrated tail gives observed / nominal near 1, within the Poisson error of the fresh
draw count (the 95% band is printed). For comparison, the same values fitted by the tails tried
before: exponential above the top 1% (generalized Pareto with shape 0, the previous model),
generalized Pareto with free shape above the top 1%, and gamma above the top 1%.

    PYTHONPATH=. python bench/null_calibration.py [--sizes 50 100 500 5000] [--fresh 20e6 ...]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from scipy import stats

os.environ["NETINFER_CACHE_DIR"] = ""  # measure fresh simulations, keep nothing on disk

from netinfer.mi.null import fit_null, null_model  # noqa: E402

PVALUES = (1e-3, 1e-4, 1e-5, 1e-6)
EARLIER_FRACTION = 0.01  # the tail start of the models tried before: the top 1%


def earlier_tails(values: np.ndarray, n_samples: int):
    """Threshold functions (p -> MI) of the exponential, free-shape generalized Pareto and gamma
    tails above the top 1% of the null values, each fitted once."""
    n_tail = int(round(EARLIER_FRACTION * values.size))
    start = values[values.size - n_tail - 1]
    excess = values[values.size - n_tail :] - start
    scale = excess.mean()
    shape, _, pareto_scale = stats.genpareto.fit(excess, floc=0)
    gamma = fit_null(values, n_samples=n_samples, tail_fraction=EARLIER_FRACTION)
    return (
        lambda p: start + scale * np.log(EARLIER_FRACTION / p),
        lambda p: start + stats.genpareto.isf(p / EARLIER_FRACTION, shape, 0, pareto_scale),
        gamma.threshold,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 500, 5000])
    parser.add_argument(
        "--fresh",
        type=float,
        nargs="+",
        default=[10e6, 20e6, 20e6, 2e6],
        help="fresh null draws per size",
    )
    parser.add_argument(
        "--null-pairs", type=float, default=1e6, help="null values of the fitted model"
    )
    parser.add_argument(
        "--seeds", type=int, nargs=2, default=[3, 4], help="seeds of the fit and the fresh draws"
    )
    args = parser.parse_args()
    rows = []
    for n, fresh_pairs in zip(args.sizes, args.fresh, strict=True):
        started = time.perf_counter()
        common = dict(scheme="none", fraction=1.0, min_split=3)
        fit_seed, fresh_seed = args.seeds
        model = null_model(n, seed=fit_seed, n_pairs=int(args.null_pairs), **common)
        fresh = null_model(n, seed=fresh_seed, n_pairs=int(fresh_pairs), **common).values
        seconds = time.perf_counter() - started
        models = (model.threshold, *earlier_tails(model.values, n))
        for p in PVALUES:
            expected = p * fresh.size
            low, high = stats.poisson.interval(0.95, expected)
            cells = [np.count_nonzero(fresh > threshold(p)) / expected for threshold in models]
            rows.append((n, fresh.size, p, expected, low / expected, high / expected, *cells))
        print(f"{n} samples: {seconds:.0f} s", flush=True)
    print(
        "\n| samples | fresh draws | p | expected count | 95% band of a calibrated tail "
        "| gamma, top 0.1% (now) | exponential, top 1% (before) | free-shape Pareto, top 1% "
        "| gamma, top 1% |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for n, size, p, expected, low, high, *ratios in rows:
        cells = " | ".join(f"{r:.2f}" for r in ratios)
        print(f"| {n:,} | {size:,} | {p:g} | {expected:,.0f} | {low:.2f}-{high:.2f} | {cells} |")


if __name__ == "__main__":
    main()
