"""The null distribution of adaptive-partitioning MI, its fitted tail, thresholds and FDR control.

Under independence the two genes' ranks are independent random permutations, whatever the
expression values, so the null distribution of the estimator depends only on the number of
samples and on how the samples were drawn. We simulate it by running the *same* resampling and
ranking code on genes of independent random values, and compute the MI of all pairs among them.

A p-value far below 1 / (number of null values) needs a tail model. Above the tail start ``u``
(the ``1 - tail_fraction`` quantile of the null values) we fit an exponential tail by maximum
likelihood (the generalized Pareto family with shape 0, the limit for chi-square-like statistics
such as 2 n MI): P(MI > x) = tail_fraction * exp(-(x - u) / scale), with ``scale`` the mean excess
over ``u``. Below ``u`` p-values are empirical. ``tests/test_null.py`` checks that p-values from a
fit on one sample match the empirical exceedance rates of an independent, larger sample.

The Gaussian-copula estimator needs no simulation: its null law is analytic
(``netinfer.mi.gcmi.GaussianCopulaNull``, with the same ``pvalue`` and ``threshold`` methods), and
``benjamini_hochberg_cutoff`` serves both.

ARACNe-AP's fit regresses on the wrong array, so its threshold hardly moves with the p-value; and
ARACNe3's cached null changes results between a cold and a warm cache. Here the null is a pure
function of (sample size, resampling scheme, seed, size), so every run with the same seed gets the
same threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from netinfer.mi.apmi import apmi_pairs, random_tie_ranks, rank_codes

DEFAULT_NULL_PAIRS = 1_000_000
DEFAULT_TAIL_FRACTION = 0.01


@dataclass(frozen=True)
class NullModel:
    """Sorted null MI values with an exponential tail fit above the ``1 - tail_fraction`` quantile.

    Attributes
    ----------
    values
        Null MI values, sorted ascending.
    tail_start
        The MI ``u`` where the fitted tail begins.
    tail_fraction
        Fraction of null values above ``tail_start``.
    scale
        Mean excess over ``tail_start`` (the exponential tail's scale, in nats).
    n_samples
        The number of samples each null MI was computed on (after resampling).
    """

    values: np.ndarray
    tail_start: float
    tail_fraction: float
    scale: float
    n_samples: int

    def pvalue(self, mi: np.ndarray | float) -> np.ndarray:
        """P(MI_null >= mi): empirical below the tail start, the fitted tail above it."""
        mi = np.asarray(mi, dtype=np.float64)
        n = self.values.size
        exceed = n - np.searchsorted(self.values, mi, side="left")
        empirical = (exceed + 1.0) / (n + 1.0)
        tail = self.tail_fraction * np.exp(-(mi - self.tail_start) / self.scale)
        return np.where(mi > self.tail_start, tail, empirical)

    def threshold(self, pvalue: float) -> float:
        """The MI whose null p-value is ``pvalue`` (edges need MI above it)."""
        if not 0.0 < pvalue < 1.0:
            raise ValueError(f"pvalue must be in (0, 1), not {pvalue}")
        if pvalue >= self.tail_fraction:
            return float(np.quantile(self.values, 1.0 - pvalue))
        return float(self.tail_start + self.scale * np.log(self.tail_fraction / pvalue))


def fit_null(values: np.ndarray, *, n_samples: int, tail_fraction: float = DEFAULT_TAIL_FRACTION):
    """Fit the exponential tail of null MI ``values`` (see the module docstring)."""
    values = np.sort(np.asarray(values, dtype=np.float64))
    n_tail = int(round(tail_fraction * values.size))
    if n_tail < 50:
        raise ValueError(
            f"a tail fit needs at least 50 null values above the tail start; "
            f"{values.size} values x tail_fraction {tail_fraction} gives {n_tail}"
        )
    tail_start = float(values[values.size - n_tail - 1])
    scale = float(np.mean(values[values.size - n_tail :] - tail_start))
    return NullModel(values, tail_start, n_tail / values.size, scale, n_samples)


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
    """Simulate and fit the null MI distribution for data of ``n_samples`` samples.

    Null genes of independent normal values go through ``resample_indices`` and the random-tie
    ranking exactly as real genes do; all pairs within batches of genes give ``n_pairs`` null MI
    values (bootstrap draws differ between batches, so the null averages over draws). Cached per
    arguments; the result is a pure function of them.

    Parameters
    ----------
    n_samples
        Samples in the data, before resampling: the null resamples them as the data are.
    scheme, fraction
        The resampling scheme and subsample fraction, as in ``resample_indices``.
    min_split
        The estimator's leaf rule (3 for ARACNe-AP, 4 for ARACNe3).
    partition
        The estimator's partition (``netinfer.mi.apmi.PARTITIONS``).
    seed
        Seed of the null simulation.
    n_pairs
        Number of null MI values (at least; rounded up to whole batches).
    tail_fraction
        Fraction of the null above the tail start.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x6E756C6C]))  # "null" stream
    genes_per_batch = 512
    pairs_per_batch = genes_per_batch * (genes_per_batch - 1) // 2
    n_batches = max(1, -(-n_pairs // pairs_per_batch))
    first, second = np.triu_indices(genes_per_batch, k=1)
    first, second = first.astype(np.int64), second.astype(np.int64)
    values = []
    for _ in range(n_batches):
        idx = resample_indices(n_samples, scheme, fraction, rng)
        resample_size = idx.size
        genes = rng.standard_normal((genes_per_batch, n_samples))[:, idx]
        codes, widths = rank_codes(random_tie_ranks(genes, rng), partition)
        values.append(apmi_pairs(codes, first, second, widths, min_split))
    return fit_null(np.concatenate(values), n_samples=resample_size, tail_fraction=tail_fraction)


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
