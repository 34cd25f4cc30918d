"""The null distribution of adaptive-partitioning MI, its fitted tail, thresholds and FDR control.

Under independence the two genes' ranks are independent random permutations, whatever the
expression values, so the null distribution of the estimator depends only on the number of
samples and on how the samples were drawn. We simulate it by running the *same* resampling and
ranking code on genes of independent random values, and compute the MI of all pairs among them.

A p-value far below 1 / (number of null values) needs a tail model. Above the tail start ``u``
(the ``1 - tail_fraction`` quantile of the null values, by default the top 1,000 of 1 M) the null
values are fitted by a gamma distribution truncated at ``u``, by maximum likelihood:
P(MI > x) = tail_fraction * G(x) / G(u), with G the gamma survival function. Below ``u``
p-values are empirical. Why gamma: 2 m MI of a fixed partition is chi-square under independence,
and a chi-square's log-survival steepens with x towards its exponential rate. What was tried
(observed over nominal exceedance at p = 1e-3 to 1e-6 on 20 M fresh null values, fit on 1 M;
chosen on simulation seeds 1 and 2, reported in bench/RESULTS.md on fresh seeds):

- exponential tail above the top 1% (the generalized Pareto with shape 0; the previous model):
  0.91, 0.70, 0.48, 0.20 at 100 samples: conservative, more so the deeper;
- generalized Pareto with free shape above the top 1%: 0.93, 1.07, 1.60, 3.15 at 100 samples:
  its negative shape ends the tail too soon;
- gamma above the top 1%: 0.96, 1.09, 1.30, 1.35 at 100 samples but 1.01, 1.21, 1.52, 1.89 at
  500: the tail's shape changes between 1e-2 and 1e-4;
- gamma above the top 0.1% (the default): 0.99, 1.03, 1.19, 1.25 at 100 samples, 0.89 to 1.19 at
  500 (three 1 M subsets), 0.92, 0.95, 1.44, 1.90 at 50, where MI takes few distinct values.

On fresh seeds (bench/RESULTS.md) the default is calibrated at 1e-3 and 1e-4 (0.99 to 1.13) but
anti-conservative deeper (1.2 to 1.9 at 1e-5, 1.4 to 2.7 at 1e-6, 50 to 5,000 samples): one fit
from 1,000 tail values varies too much for two decades of extrapolation.

``tests/test_null.py`` checks p-values from a fit on one sample against the exceedance rates of an
independent one; ``bench/null_calibration.py`` runs the table above at 50 to 5,000 samples.

The Gaussian-copula estimator needs no simulation: its null law is analytic
(``netinfer.mi.gcmi.GaussianCopulaNull``, with the same ``pvalue`` and ``threshold`` methods), and
``benjamini_hochberg_cutoff`` serves both.

ARACNe-AP's fit regresses on the wrong array, so its threshold hardly moves with the p-value; and
ARACNe3's cached null changes results between a cold and a warm cache. Here the null is a pure
function of (sample size, resampling scheme, estimator, seed, size), so every run with the same
seed gets the same threshold. It is computed once per such key and cached twice: in the process
(``functools.lru_cache``) and on disk, as the exact null values in one ``.npy`` file per key under
``null_cache_dir()``; a warm cache gives the same values, hence the same fit, as a cold one.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import optimize, stats

from netinfer.io import atomic_write
from netinfer.mi.apmi import apmi_pairs, random_tie_ranks, rank_codes

DEFAULT_NULL_PAIRS = 1_000_000
DEFAULT_TAIL_FRACTION = 0.001  # the top 1,000 of the default 1 M null values
#: Part of every disk-cache key: bump it when the simulation or the estimator changes its values.
NULL_CACHE_VERSION = 1


@dataclass(frozen=True)
class NullModel:
    """Sorted null MI values with a truncated-gamma tail above the ``1 - tail_fraction`` quantile.

    Attributes
    ----------
    values
        Null MI values, sorted ascending.
    tail_start
        The MI ``u`` where the fitted tail begins.
    tail_fraction
        Fraction of null values above ``tail_start``.
    shape, scale
        The fitted gamma distribution's shape and scale (nats).
    n_samples
        The number of samples each null MI was computed on (after resampling).
    """

    values: np.ndarray
    tail_start: float
    tail_fraction: float
    shape: float
    scale: float
    n_samples: int

    def _tail_logsf(self, mi):
        """log P(MI_null > mi) of the fitted tail (meaningful for mi >= tail_start)."""
        gamma = stats.gamma(self.shape, scale=self.scale)
        return np.log(self.tail_fraction) + gamma.logsf(mi) - gamma.logsf(self.tail_start)

    def pvalue(self, mi: np.ndarray | float) -> np.ndarray:
        """P(MI_null >= mi): empirical below the tail start, the fitted tail above it."""
        mi = np.asarray(mi, dtype=np.float64)
        n = self.values.size
        exceed = n - np.searchsorted(self.values, mi, side="left")
        empirical = (exceed + 1.0) / (n + 1.0)
        tail = np.exp(self._tail_logsf(np.maximum(mi, self.tail_start)))
        return np.where(mi > self.tail_start, tail, empirical)

    def threshold(self, pvalue: float) -> float:
        """The MI whose null p-value is ``pvalue`` (edges need MI above it)."""
        if not 0.0 < pvalue < 1.0:
            raise ValueError(f"pvalue must be in (0, 1), not {pvalue}")
        if pvalue >= self.tail_fraction:
            return float(np.quantile(self.values, 1.0 - pvalue))
        target = self._tail_logsf(self.tail_start) + np.log(pvalue / self.tail_fraction)
        # the tail's log-survival is decreasing: bracket the root by doubling, then solve
        step = self.scale * max(self.shape, 1.0)
        high = self.tail_start + step
        while self._tail_logsf(high) > target:
            high += step
            step *= 2
        return float(
            optimize.brentq(
                lambda x: self._tail_logsf(x) - target, self.tail_start, high, xtol=1e-15
            )
        )


def fit_null(values: np.ndarray, *, n_samples: int, tail_fraction: float = DEFAULT_TAIL_FRACTION):
    """Fit the truncated-gamma tail of null MI ``values`` (see the module docstring)."""
    values = np.sort(np.asarray(values, dtype=np.float64))
    n_tail = int(round(tail_fraction * values.size))
    if n_tail < 50:
        raise ValueError(
            f"a tail fit needs at least 50 null values above the tail start; "
            f"{values.size} values x tail_fraction {tail_fraction} gives {n_tail}"
        )
    tail_start = float(values[values.size - n_tail - 1])
    tail = values[values.size - n_tail :]

    def negative_log_likelihood(log_params):
        shape, scale = np.exp(log_params)
        gamma = stats.gamma(shape, scale=scale)
        return -(gamma.logpdf(tail).sum() - tail.size * gamma.logsf(tail_start))

    # start from the moments of the whole null, where the gamma law holds roughly
    mean, var = values.mean(), values.var()
    start = np.log([mean**2 / var, var / mean])
    fit = optimize.minimize(
        negative_log_likelihood,
        start,
        method="Nelder-Mead",
        options={"xatol": 1e-10, "fatol": 1e-10, "maxiter": 10_000},
    )
    shape, scale = np.exp(fit.x)
    return NullModel(
        values, tail_start, n_tail / values.size, float(shape), float(scale), n_samples
    )


def resample_indices(n: int, scheme: str, fraction: float, rng: np.random.Generator):
    """Sample indices of one resample: ``"bootstrap"`` (n draws with replacement, every sample
    possible), ``"subsample"`` (ceil(fraction n) without replacement), or ``"none"`` (all)."""
    if scheme == "bootstrap":
        return np.sort(rng.integers(0, n, size=n))
    if scheme == "subsample":
        return np.sort(rng.choice(n, size=subsample_size(n, fraction), replace=False))
    if scheme == "none":
        return np.arange(n)
    raise ValueError(f"resampling must be 'bootstrap', 'subsample' or 'none', not {scheme!r}")


def subsample_size(n: int, fraction: float) -> int:
    """ceil(fraction n) without floating-point surprises (0.632 * 500 is 316.00000000000006)."""
    return int(np.ceil(round(fraction * n, 9)))


def null_cache_dir() -> Path | None:
    """Where simulated nulls are kept between runs: ``$NETINFER_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/netinfer/null`` or ``~/.cache/netinfer/null``. ``NETINFER_CACHE_DIR=""``
    turns the disk cache off (None)."""
    configured = os.environ.get("NETINFER_CACHE_DIR")
    if configured is not None:
        return Path(configured) if configured else None
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "netinfer" / "null"


@lru_cache(maxsize=8)
def null_model(
    n_samples: int,
    *,
    scheme: str,
    fraction: float,
    min_split: int,
    seed: int,
    partition: str = "netinfer",
    n_pairs: int = DEFAULT_NULL_PAIRS,
    tail_fraction: float = DEFAULT_TAIL_FRACTION,
) -> NullModel:
    """Simulate (or load from the disk cache) and fit the null MI distribution for data of
    ``n_samples`` samples.

    Null genes of independent normal values go through ``resample_indices`` and the random-tie
    ranking exactly as real genes do; all pairs within batches of genes give ``n_pairs`` null MI
    values (bootstrap draws differ between batches, so the null averages over draws). Cached per
    arguments, in the process and on disk (``null_cache_dir``); the result is a pure function of
    them.

    Parameters
    ----------
    n_samples
        Samples in the data, before resampling: the null resamples them as the data are.
    scheme, fraction
        The resampling scheme and subsample fraction, as in ``resample_indices``.
    min_split
        The estimator's leaf rule (3 for ARACNe-AP, 4 for ARACNe3).
    seed
        Seed of the null simulation.
    partition
        The estimator's partition (``netinfer.mi.apmi.PARTITIONS``).
    n_pairs
        Number of null MI values (at least; rounded up to whole batches).
    tail_fraction
        Fraction of the null above the tail start.
    """
    simulation = (n_samples, scheme, fraction, min_split, seed, partition, n_pairs)
    resample_size = subsample_size(n_samples, fraction) if scheme == "subsample" else n_samples
    directory = null_cache_dir()
    path = None
    if directory is not None:
        key = hashlib.sha256(repr((NULL_CACHE_VERSION, *simulation)).encode()).hexdigest()[:24]
        path = directory / f"null-{n_samples}-{key}.npy"
        try:
            values = np.load(path, allow_pickle=False)
            return fit_null(values, n_samples=resample_size, tail_fraction=tail_fraction)
        except (OSError, ValueError):
            pass  # absent or unreadable: simulate, then (re)write it
    values = _simulate_null(*simulation)
    if path is not None:
        try:
            with atomic_write(path, binary=True) as fh:
                np.save(fh, values, allow_pickle=False)
        except OSError:
            pass  # a read-only cache only costs the next run the simulation
    return fit_null(values, n_samples=resample_size, tail_fraction=tail_fraction)


def _simulate_null(n_samples, scheme, fraction, min_split, seed, partition, n_pairs):
    """``n_pairs`` (rounded up to whole batches) null MI values, sorted; see ``null_model``."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x6E756C6C]))  # "null" stream
    genes_per_batch = 512
    pairs_per_batch = genes_per_batch * (genes_per_batch - 1) // 2
    n_batches = max(1, -(-n_pairs // pairs_per_batch))
    first, second = np.triu_indices(genes_per_batch, k=1)
    first, second = first.astype(np.int64), second.astype(np.int64)
    values = []
    for _ in range(n_batches):
        idx = resample_indices(n_samples, scheme, fraction, rng)
        genes = rng.standard_normal((genes_per_batch, n_samples))[:, idx]
        codes, widths = rank_codes(random_tie_ranks(genes, rng), partition)
        values.append(apmi_pairs(codes, first, second, widths, min_split))
    return np.sort(np.concatenate(values))


def benjamini_hochberg_cutoff(pvalues: np.ndarray, n_tests: int, q: float) -> float:
    """Largest p-value rejected by Benjamini-Hochberg at level ``q`` over ``n_tests`` tests.

    ``pvalues`` may hold only the candidates (p <= q); the others cannot be rejected. Returns -1
    when nothing is rejected, so ``pvalues <= cutoff`` selects the rejections.
    """
    if not 0.0 < q < 1.0:
        raise ValueError(f"fdr must be in (0, 1), not {q}")
    candidates = np.sort(pvalues[pvalues <= q])
    if candidates.size == 0:
        return -1.0
    ranks = np.arange(1, candidates.size + 1)
    passing = np.nonzero(candidates <= q * ranks / n_tests)[0]
    return float(candidates[passing[-1]]) if passing.size else -1.0
