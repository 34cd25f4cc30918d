"""The null distribution of adaptive-partitioning MI, its fitted tail, thresholds and FDR control.

Under independence the two genes' ranks are independent random permutations, whatever the
expression values, so the null distribution of the estimator depends only on the number of
samples and on how the samples were drawn. We simulate it by running the *same* resampling and
ranking code on genes of independent random values, and compute the MI of all pairs among them.

A p-value far below 1 / (number of null values) needs a tail model. Above the tail start ``u``
(by default the top 10,000 null values) the null values are fitted by a gamma distribution
truncated at ``u``, by maximum likelihood: P(MI > x) = tail_fraction * G(x) / G(u), with G the
gamma survival function and tail_fraction the share of null values above ``u``. Below ``u``
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
- gamma above the top 0.1%: 0.99, 1.03, 1.19, 1.25 at 100 samples, 0.89 to 1.19 at 500 (three
  1 M subsets), 0.92, 0.95, 1.44, 1.90 at 50, where MI takes few distinct values.

With 1 M null values that gamma tail rests on 1,000 values, and on fresh seeds it was
anti-conservative at 1e-5 and 1e-6 (up to 1.9 and 2.7): one fit varies too much for three
decades of extrapolation. With 10 M values (the same model on 10,000 tail values; seeds 5-8) the
report seeds 9-10 gave 0.96-1.06 from 1e-3 to 1e-5 but 0.91-1.51 at 1e-6: the fit still varied by
about +-40% three decades below the tail start, and most at 50-100 samples. Starting the tail at
the top 0.03% or 0.01% of 10 M was no better (0.62 to 1.52 on seeds 7-8 and 11-12).

The default null is therefore as large as a fixed amount of work allows (``default_null_pairs``):
a pair's MI costs about its sample count m, so about 3e10 / m values, from 100 M at up to 300
samples per resample (where 10 M had missed) to 10 M from 3,000 (where it had held), about 10 s
on two cores at any size. The tail stays on the top 10,000 values, so with 100 M it starts at
p = 1e-4 and p = 1e-6 is two decades away. On the choice seeds (1-2, 7-8, 11-12; 100 M fresh
values) this gave 0.84 to 1.22 at 1e-6 at 50, 100, 500 and 5,000 samples; tails on the top
1,000, 3,000 or 30,000 values did about as well (0.78 to 1.19), so the count was left as it was.
The report on fresh seeds is in bench/RESULTS.md.

The values are summarized as they are simulated (``_summarize``): the top 10% exactly, at most
1 M values (so with 10 M, every p-value from the tail start to 0.1 is the exact empirical one
over all of them; with 100 M, up to 0.01), and the first 100,000 values as a sample for larger
p-values. So the simulation holds a few batches and about 1.1 M values whatever the null's
size, and the disk cache holds the same (about 9 MB per key).

``tests/test_null.py`` checks p-values from a fit on one sample against the exceedance rates of an
independent one, and the streamed summary against all values sorted; ``bench/null_calibration.py``
runs the calibration tables at 50 to 5,000 samples.

The Gaussian-copula estimator needs no simulation: its null law is analytic
(``netinfer.mi.gcmi.GaussianCopulaNull``, with the same ``pvalue`` and ``threshold`` methods), and
``benjamini_hochberg_cutoff`` serves both.

ARACNe-AP's fit regresses on the wrong array, so its threshold hardly moves with the p-value; and
ARACNe3's cached null changes results between a cold and a warm cache. Here the null is a pure
function of (sample size, resampling scheme, estimator, seed, size), so every run with the same
seed gets the same threshold. It is computed once per such key and cached twice: in the process
(``functools.lru_cache``) and on disk, as the summary and its fitted tail in one ``.npz`` file per
key under ``null_cache_dir()``; a warm cache gives the same model as a cold one (and needs no
fit, so no scipy.optimize).
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import special

from netinfer.io import atomic_write
from netinfer.mi.apmi import apmi_pairs, random_tie_ranks, rank_codes

#: The default null's size, chosen by the resample size m (``default_null_pairs``): about
#: ``NULL_WORK`` / m values, so about the same time at any size (10 s on two cores), but never
#: fewer than ``MIN_NULL_PAIRS`` nor more than ``MAX_NULL_PAIRS``.
MAX_NULL_PAIRS = 100_000_000
MIN_NULL_PAIRS = 10_000_000
NULL_WORK = 30_000_000_000
#: The fitted tail rests on the top ``TAIL_VALUES`` null values, or on the top
#: ``MAX_TAIL_FRACTION`` of a small null.
TAIL_VALUES = 10_000
MAX_TAIL_FRACTION = 0.001
#: The top 10% of the null values are kept exactly, but at most ``KEPT_MAX`` of them: with the
#: default 10 M, every p-value from the tail start to 0.1 (the FDR pre-filter's range) is the
#: exact empirical one, and a larger null costs time, not memory. Above them a sample serves.
KEPT_FRACTION = 0.1
KEPT_MAX = 1_000_000
#: Null values kept (from the start of the stream) to estimate p-values above ``KEPT_FRACTION``.
BODY_SAMPLE = 100_000
#: Null genes per simulated batch: each batch gives all their pairs.
NULL_GENES_PER_BATCH = 512
#: Part of every disk-cache key: bump it when the simulation or the estimator changes its values.
NULL_CACHE_VERSION = 3


@dataclass(frozen=True)
class NullModel:
    """The null MI distribution, summarized: its top values, a sample below them, and a
    truncated-gamma tail above the ``1 - tail_fraction`` quantile.

    Attributes
    ----------
    top
        The largest null values (the top ``KEPT_FRACTION``, at most ``KEPT_MAX`` but at least
        twice the tail, and every value equal to the smallest of them), sorted ascending.
    body
        A sample of the null values below ``top[0]``, sorted ascending.
    n_values
        Number of null values simulated.
    tail_start
        The MI ``u`` where the fitted tail begins.
    tail_fraction
        Fraction of null values above ``tail_start``.
    shape, scale
        The fitted gamma distribution's shape and scale (nats).
    n_samples
        The number of samples each null MI was computed on (after resampling).
    """

    top: np.ndarray
    body: np.ndarray
    n_values: int
    tail_start: float
    tail_fraction: float
    shape: float
    scale: float
    n_samples: int

    def _tail_sf(self, mi):
        """The fitted gamma's survival function at ``mi`` (nats)."""
        return special.gammaincc(self.shape, np.asarray(mi) / self.scale)

    def pvalue(self, mi: np.ndarray | float) -> np.ndarray:
        """P(MI_null >= mi): empirical up to the tail start, the fitted tail above it."""
        mi = np.asarray(mi, dtype=np.float64)
        n, n_top = self.n_values, self.top.size
        at_least = n_top - np.searchsorted(self.top, mi, side="left")
        if self.body.size:  # values below top[0] that reach mi, in proportion
            share = 1.0 - np.searchsorted(self.body, mi, side="left") / self.body.size
            at_least = at_least + (n - n_top) * share
        empirical = (at_least + 1.0) / (n + 1.0)
        tail = (
            self.tail_fraction
            * self._tail_sf(np.maximum(mi, self.tail_start))
            / self._tail_sf(self.tail_start)
        )
        return np.where(mi > self.tail_start, tail, empirical)

    def threshold(self, pvalue: float) -> float:
        """The MI whose null p-value is ``pvalue`` (edges need MI above it)."""
        if not 0.0 < pvalue < 1.0:
            raise ValueError(f"pvalue must be in (0, 1), not {pvalue}")
        if pvalue < self.tail_fraction:
            target = self._tail_sf(self.tail_start) * pvalue / self.tail_fraction
            return float(self.scale * special.gammainccinv(self.shape, target))
        # the 1 - pvalue quantile of all values, interpolated as np.quantile does
        n, n_top = self.n_values, self.top.size
        index = (n - 1) * (1.0 - pvalue) - (n - n_top)
        if index >= 0:
            lower = int(index)
            upper = min(lower + 1, n_top - 1)
            return float(self.top[lower] + (index - lower) * (self.top[upper] - self.top[lower]))
        # P(MI >= x | MI < top[0]), clipped: next to top[0], np.quantile's index and p * n
        # disagree by one value
        share_of_rest = min(1.0, max(0.0, (pvalue * n - n_top) / (n - n_top)))
        return float(np.quantile(self.body, 1.0 - share_of_rest))


def fit_null(values: np.ndarray, *, n_samples: int, tail_values: int | None = None):
    """The null model of MI ``values`` held in memory (see ``NullModel`` and the module
    docstring); the tail rests on the top ``tail_values`` (default ``default_tail_values``)."""
    values = np.asarray(values, dtype=np.float64)
    n_tail = default_tail_values(values.size) if tail_values is None else tail_values
    sample = values[:: max(1, values.size // BODY_SAMPLE)]  # in any order, sorted too
    summary = _summarize([values], _kept_count(values.size, n_tail), sample)
    return _fit(*summary, n_samples=n_samples, n_tail=n_tail)


def default_null_pairs(resample_size: int) -> int:
    """The default number of null values for resamples of ``resample_size`` samples: about
    ``NULL_WORK / resample_size`` (a pair's MI costs about its sample count), within
    ``MIN_NULL_PAIRS`` to ``MAX_NULL_PAIRS``: 100 M up to 300 samples, 10 M from 3,000."""
    return int(min(MAX_NULL_PAIRS, max(MIN_NULL_PAIRS, NULL_WORK // max(1, resample_size))))


def default_tail_values(n_values: int) -> int:
    """The default tail of a null of ``n_values``: its top ``TAIL_VALUES`` values, or its top
    ``MAX_TAIL_FRACTION`` when that is fewer."""
    return min(TAIL_VALUES, int(round(MAX_TAIL_FRACTION * n_values)))


def _kept_count(n_values: int, n_tail: int) -> int:
    """How many top values ``_summarize`` keeps of ``n_values`` (see ``KEPT_FRACTION``)."""
    fraction = min(int(np.ceil(KEPT_FRACTION * n_values)), KEPT_MAX)
    return max(1, fraction, 2 * n_tail)


def _summarize(batches, keep: int, sample: np.ndarray | None = None):
    """Stream null values: keep the ``keep`` largest (with every value tied with the smallest
    kept one) and, unless a ``sample`` is given, the first ``BODY_SAMPLE`` values (the batches
    are independent, so they are a sample of all).

    Returns ``top`` (sorted), ``body`` (the sample below ``top[0]``, sorted), the number of
    values seen and the mean and variance of the sample.
    """
    cut = -np.inf  # every value >= cut is kept; cut only rises
    kept, kept_size, seen = [], 0, 0
    head, head_size = [], 0
    for values in batches:
        seen += values.size
        if sample is None and head_size < BODY_SAMPLE:
            head.append(values[: BODY_SAMPLE - head_size].copy())
            head_size += head[-1].size
        kept.append(values[values >= cut])
        kept_size += kept[-1].size
        if kept_size > 2 * keep:
            pruned, cut = _prune_top(np.concatenate(kept), keep)
            kept, kept_size = [pruned], pruned.size
    top = np.sort(_prune_top(np.concatenate(kept), keep)[0])
    if sample is None:
        sample = np.concatenate(head)
    moments = (float(sample.mean()), float(sample.var()))
    return top, np.sort(sample[sample < top[0]]), seen, moments


def _prune_top(values: np.ndarray, keep: int) -> tuple[np.ndarray, float]:
    """The values at or above the ``keep``-th largest (ties kept), and that value."""
    if values.size <= keep:
        return values, -np.inf
    cut = np.partition(values, values.size - keep)[values.size - keep]
    return values[values >= cut], float(cut)


def _fit(top, body, n_values, moments, *, n_samples: int, n_tail: int) -> NullModel:
    """Fit the truncated-gamma tail to the top ``n_tail`` values by maximum likelihood
    (scipy.optimize is needed only here, when a null is simulated, so a run with a cached null
    never imports it)."""
    from scipy import optimize

    if n_tail < 50:
        raise ValueError(
            f"a tail fit needs at least 50 null values above the tail start, not {n_tail} "
            f"(of {n_values} null values)"
        )
    if n_tail >= top.size:
        raise ValueError(f"a tail of {n_tail} values must be below the kept {top.size} values")
    tail_start = float(top[top.size - n_tail - 1])
    tail = top[top.size - n_tail :]
    log_tail_sum = np.log(tail).sum()

    def negative_log_likelihood(log_params):
        shape, scale = np.exp(log_params)
        log_pdf_sum = (
            (shape - 1) * log_tail_sum
            - tail.sum() / scale
            - tail.size * (special.gammaln(shape) + shape * np.log(scale))
        )
        return -(log_pdf_sum - tail.size * np.log(special.gammaincc(shape, tail_start / scale)))

    # start from the moments of the whole null, where the gamma law holds roughly
    mean, var = moments
    start = np.log([mean**2 / var, var / mean])
    fit = optimize.minimize(
        negative_log_likelihood,
        start,
        method="Nelder-Mead",
        options={"xatol": 1e-10, "fatol": 1e-10, "maxiter": 10_000},
    )
    shape, scale = np.exp(fit.x)
    return NullModel(
        top,
        body,
        int(n_values),
        tail_start,
        n_tail / n_values,
        float(shape),
        float(scale),
        n_samples,
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
    n_pairs: int | None = None,
    tail_values: int | None = None,
) -> NullModel:
    """Simulate (or load from the disk cache) and fit the null MI distribution for data of
    ``n_samples`` samples.

    The values come from ``null_batches`` and are summarized as they stream (``NullModel``: the
    top 10% exactly, a sample of the rest), so memory stays at a few batches and the kept values
    whatever ``n_pairs`` is. Cached per arguments, in the process and on disk
    (``null_cache_dir``, with the fitted tail, so a warm cache needs no fit); the result is a
    pure function of them.

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
        Number of null MI values (at least; rounded up to whole batches); None:
        ``default_null_pairs`` of the resample size.
    tail_values
        Null values above the tail start; None: ``default_tail_values``.
    """
    resample_size = subsample_size(n_samples, fraction) if scheme == "subsample" else n_samples
    if n_pairs is None:
        n_pairs = default_null_pairs(resample_size)
    if tail_values is None:
        tail_values = default_tail_values(null_size(n_pairs))
    simulation = dict(
        scheme=scheme,
        fraction=fraction,
        min_split=min_split,
        seed=seed,
        partition=partition,
        n_pairs=n_pairs,
    )
    directory = null_cache_dir()
    path = None
    if directory is not None:
        key = (NULL_CACHE_VERSION, n_samples, *simulation.values(), tail_values)
        digest = hashlib.sha256(repr(key).encode()).hexdigest()[:24]
        path = directory / f"null-{n_samples}-{digest}.npz"
        try:
            return _load_model(path, resample_size)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass  # absent or unreadable: simulate, then (re)write it
    model = _fit(
        *_summarize(
            null_batches(n_samples, **simulation), _kept_count(null_size(n_pairs), tail_values)
        ),
        n_samples=resample_size,
        n_tail=tail_values,
    )
    if path is not None:
        try:
            with atomic_write(path, binary=True) as fh:
                np.savez(
                    fh,
                    top=model.top,
                    body=model.body,
                    fit=np.array(
                        [
                            model.n_values,
                            model.tail_start,
                            model.tail_fraction,
                            model.shape,
                            model.scale,
                        ]
                    ),
                )
        except OSError:
            pass  # a read-only cache only costs the next run the simulation
    return model


def _load_model(path: Path, n_samples: int) -> NullModel:
    """A null model written by ``null_model``."""
    # our own handle: np.load leaves its file open when a damaged archive fails to parse
    with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as stored:
        n_values, tail_start, tail_fraction, shape, scale = stored["fit"]
        return NullModel(
            stored["top"],
            stored["body"],
            int(n_values),
            float(tail_start),
            float(tail_fraction),
            float(shape),
            float(scale),
            n_samples,
        )


def null_size(n_pairs: int) -> int:
    """The null values ``null_batches`` gives for ``n_pairs``: rounded up to whole batches."""
    pairs_per_batch = NULL_GENES_PER_BATCH * (NULL_GENES_PER_BATCH - 1) // 2
    return max(1, -(-n_pairs // pairs_per_batch)) * pairs_per_batch


def null_batches(
    n_samples: int,
    *,
    scheme: str,
    fraction: float,
    min_split: int,
    seed: int,
    partition: str = "netinfer",
    n_pairs: int,
) -> Iterator[np.ndarray]:
    """Null MI values, one batch at a time, ``null_size(n_pairs)`` in all.

    Null genes of independent normal values go through ``resample_indices`` and the random-tie
    ranking exactly as real genes do; each batch is the MI of all pairs among
    ``NULL_GENES_PER_BATCH`` such genes (bootstrap draws differ between batches, so the null
    averages over draws). The same arguments give the same values; a larger ``n_pairs`` extends
    the same stream.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x6E756C6C]))  # "null" stream
    first, second = np.triu_indices(NULL_GENES_PER_BATCH, k=1)
    first, second = first.astype(np.int64), second.astype(np.int64)
    for _ in range(null_size(n_pairs) // first.size):
        idx = resample_indices(n_samples, scheme, fraction, rng)
        genes = rng.standard_normal((NULL_GENES_PER_BATCH, n_samples))[:, idx]
        codes, widths = rank_codes(random_tie_ranks(genes, rng), partition)
        yield apmi_pairs(codes, first, second, widths, min_split)


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
