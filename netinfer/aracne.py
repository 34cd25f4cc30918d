"""ARACNe over arrays, and its AnnData wrapper.

One ARACNe run: for each resample of the samples, rank every gene (random tie-breaking), compute the
MI of every regulator against every gene, keep the pairs above the null model's threshold (or
Benjamini-Hochberg FDR), prune indirect edges by DPI; then consolidate the resampled networks into
one network with per-edge significance. Final MI and Spearman correlation are computed on all
samples.

Two MI estimators, chosen with ``estimator``; every later step is the same for both:

- ``"apmi"`` (default): ARACNe's adaptive partitioning of the rank square
  (``netinfer.mi.apmi``), with a simulated null (``netinfer.mi.null``). It sees any dependence that
  shows in the ranks, monotone or not.
- ``"gcmi"``: Gaussian-copula MI (``netinfer.mi.gcmi``), -0.5 ln(1 - r^2) of the normal scores of
  the ranks, with an analytic null. All pairs are one matrix product, and no null is simulated, so
  a run costs a fraction; it sees monotone dependence only.

Defaults, and why:

- ``resampling="subsample"`` at 0.632: subsamples have no duplicated samples, so the null for the
  subsample size is exact. Bootstrap duplicates (identical values in both genes) look like local
  dependence to the adaptive partitioning: at 500 samples the MI at null p = 1e-8 rises from 0.097
  (no duplicates) to 0.48. Our bootstrap null includes them, so bootstrap thresholds are honest but
  strict; ARACNe-AP applies a duplicate-free threshold to bootstraps.
- ``fdr=0.05``: Benjamini-Hochberg over regulators x (genes - 1) pairs in each resample, as ARACNe3
  does. A fixed per-pair p-value (``pvalue=1e-8``, ARACNe-AP's customary value, which here means
  what it says) ignores how many pairs are tested and how many are real; in
  ``bench/aracne_accuracy.py`` FDR control had the best or equal F1 on every data set, with
  precision >= 0.96 on the synthetic networks.
- ``pruning="dpi"`` (ARACNe-AP's rule), ``consolidation="poisson"`` with Bonferroni at 0.05: more
  precise than MaxEnt and the binomial test in ``bench/aracne_accuracy.py``, at similar recall.
- ``resamples=100``; ``seed=0``: the same seed gives the same network with any number of threads or
  Dask workers (every random draw comes from a stream keyed on the seed and the resample number).
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numba
import numpy as np

from netinfer import distributed
from netinfer.consolidate import CONSOLIDATION_TESTS, ResampleNetwork, consolidate
from netinfer.io import InputError, validate_expression
from netinfer.mi.apmi import (
    PARTITIONS,
    apmi_pairs,
    apmi_regulators,
    min_split_for,
    rank_codes,
    resample_ranks,
)
from netinfer.mi.gcmi import (
    copula_scores,
    effective_sample_size,
    gcmi_null,
    gcmi_pairs,
    gcmi_regulators,
)
from netinfer.mi.null import (
    benjamini_hochberg_cutoff,
    null_model,
    resample_indices,
    subsample_size,
)
from netinfer.prune import PRUNING_RULES, prune

if TYPE_CHECKING:
    import pandas as pd
# pandas (for the result tables) is imported when they are made, after the resamples, so a
# run's peak memory does not hold it (tests/test_imports.py)

FULL_DATA_STREAM = 0x66756C6C  # "full": the seed stream of the all-samples ranking

#: The MI estimators: adaptive partitioning (ARACNe's) and Gaussian-copula MI.
ESTIMATORS = ("apmi", "gcmi")

#: Options that make ``aracne`` run each reference's method, for a lab that must reproduce its
#: numbers (``netinfer aracne --compat NAME``; explicit options override them). Quirks kept on
#: purpose: ARACNe3's nominal cell widths and (r + 1) / (n + 1) midpoints, ARACNe-AP's integer
#: midpoints over descending ranks and its consolidation tail P(X > k). Defects not reproduced:
#: ARACNe-AP's threshold that ignores its p-value and its bootstrap that never draws the last
#: sample; ARACNe3's cache-dependent null. Our defaults keep our own choices.
COMPAT_PRESETS = {
    "aracne3": dict(
        estimator="apmi",
        partition="aracne3",
        leaf_rule="aracne3",
        resampling="subsample",
        subsample_fraction=0.632,
        fdr=0.05,
        pvalue=None,
        pruning="maxent",
        consolidation="binomial",
    ),
    "aracne-ap": dict(
        estimator="apmi",
        partition="aracne-ap",
        leaf_rule="aracne-ap",
        resampling="bootstrap",
        pvalue=1e-8,
        fdr=None,
        pruning="dpi",
        consolidation="poisson-ap",
    ),
}


def check_estimator(estimator: str, bias_correction: bool = False) -> None:
    """Raise ValueError for an unknown estimator, or a bias correction it does not have."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, not {estimator!r}")
    if bias_correction and estimator != "gcmi":
        raise ValueError("bias_correction applies to estimator='gcmi' only")


@dataclass(frozen=True)
class AracneSettings:
    """Everything a resample needs besides the data; recorded with the result."""

    estimator: str = "apmi"
    bias_correction: bool = False
    resamples: int = 100
    resampling: str = "subsample"
    subsample_fraction: float = 0.632
    pvalue: float | None = None
    fdr: float | None = 0.05
    pruning: str = "dpi"
    dpi_tolerance: float = 0.0
    consolidation: str = "poisson"
    consolidation_pvalue: float = 0.05
    leaf_rule: str = "aracne-ap"
    partition: str = "netinfer"
    null_pairs: int | None = None
    seed: int = 0

    def check(self) -> None:
        """Raise ValueError naming the first invalid option."""
        check_estimator(self.estimator, self.bias_correction)
        if self.resamples < 0:
            raise ValueError(f"resamples must be >= 0, not {self.resamples}")
        if self.resampling not in ("subsample", "bootstrap"):
            raise ValueError(
                f"resampling must be 'subsample' or 'bootstrap', not {self.resampling!r}"
            )
        if not 0.0 < self.subsample_fraction < 1.0:
            raise ValueError(f"subsample_fraction must be in (0, 1), not {self.subsample_fraction}")
        if (self.pvalue is None) == (self.fdr is None):
            raise ValueError("the threshold needs exactly one of pvalue and fdr")
        if self.pvalue is not None and not 0.0 < self.pvalue < 1.0:
            raise ValueError(f"pvalue must be in (0, 1), not {self.pvalue}")
        if self.fdr is not None and not 0.0 < self.fdr < 1.0:
            raise ValueError(f"fdr must be in (0, 1), not {self.fdr}")
        if self.pruning not in PRUNING_RULES:
            raise ValueError(f"pruning must be one of {PRUNING_RULES}, not {self.pruning!r}")
        if self.consolidation not in CONSOLIDATION_TESTS:
            raise ValueError(
                f"consolidation must be one of {CONSOLIDATION_TESTS}, not {self.consolidation!r}"
            )
        if not 0.0 < self.consolidation_pvalue < 1.0:
            raise ValueError(
                f"consolidation_pvalue must be in (0, 1), not {self.consolidation_pvalue}"
            )
        min_split_for(self.leaf_rule)
        if self.null_pairs is not None and self.null_pairs < 1:
            raise ValueError(f"null_pairs must be a positive integer, not {self.null_pairs}")
        if self.partition not in PARTITIONS:
            raise ValueError(f"partition must be one of {PARTITIONS}, not {self.partition!r}")
        if self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, not {self.seed}")

    @property
    def scheme(self) -> str:
        """The resampling scheme actually run: ``"none"`` when there is one run on all samples."""
        return "none" if self.resamples == 0 else self.resampling

    @property
    def threshold_pvalue(self) -> float:
        """The per-pair p-value of the MI threshold: ``pvalue``, or with FDR the level itself
        (pairs above it can never be rejected, so it is a cheap pre-filter)."""
        return self.pvalue if self.fdr is None else self.fdr

    def resample_size(self, n_samples: int) -> int:
        if self.scheme == "subsample":
            return subsample_size(n_samples, self.subsample_fraction)
        return n_samples


@dataclass
class AracneResult:
    """An ARACNe network.

    Attributes
    ----------
    edges
        One row per edge: ``regulator``, ``target``, ``mi`` (nats, all samples, by the run's
        estimator), ``pvalue``
        (Bonferroni-adjusted consolidation p-value; the MI null p-value when there is a single
        run), ``count`` (resamples containing the edge), ``scc`` (Spearman correlation),
        ``log_p`` (natural log of ``pvalue``); with ``full_output`` every pair and a
        ``significant`` column. Sorted by MI, largest first.
    summary
        Run figures: genes, samples, regulators, threshold, edges per resample, final edges,
        ``tested_pairs`` (regulators x (genes - 1)), time (``seconds``, of which
        ``null_seconds``, ``resamples_seconds`` and ``final_seconds``: the final MI, Spearman
        and consolidation on all samples).
    settings
        The options of the run.
    recurrence
        Every pair seen in at least one resampled network, significant or not: ``regulator``,
        ``target``, ``count`` (resamples containing it). The evidence for posteriors over edges
        (``netinfer.pipeline``).
    """

    edges: pd.DataFrame
    summary: dict
    settings: dict = field(default_factory=dict)
    recurrence: pd.DataFrame | None = None


@dataclass(frozen=True)
class SortedGenes:
    """The expression as genes x samples with each gene's stable sort order, made once per run,
    so that a resample's ranks need no sort (``netinfer.mi.apmi.resample_ranks``)."""

    values: np.ndarray
    order: np.ndarray

    @classmethod
    def of(cls, X: np.ndarray) -> SortedGenes:
        """From a samples x genes matrix."""
        values = np.ascontiguousarray(X.T)
        return cls(values, np.argsort(values, axis=1, kind="stable").astype(np.int32))

    def ranks(self, draws: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Ranks (genes x draws) over the samples ``draws`` (ascending), ties broken at random:
        the same as ``random_tie_ranks(values[:, draws], rng)``."""
        priorities = rng.random((self.values.shape[0], draws.size))
        return resample_ranks(self.values, self.order, draws, priorities)


def _mi_matrix(ranks, reg_cols, settings: AracneSettings) -> np.ndarray:
    """MI of every regulator (rows) with every gene (columns) from rank rows (genes x samples)."""
    if settings.estimator == "gcmi":
        scores = copula_scores(ranks)
        return gcmi_regulators(scores, reg_cols, bias_correction=settings.bias_correction)
    codes, widths = rank_codes(ranks, settings.partition)
    return apmi_regulators(codes, reg_cols, widths, min_split_for(settings.leaf_rule))


def _mi_pairs(ranks, first, second, settings: AracneSettings) -> np.ndarray:
    """MI of the gene pairs (first[k], second[k]) from rank rows (genes x samples)."""
    if settings.estimator == "gcmi":
        scores = copula_scores(ranks)
        return gcmi_pairs(scores, first, second, bias_correction=settings.bias_correction)
    codes, widths = rank_codes(ranks, settings.partition)
    return apmi_pairs(codes, first, second, widths, min_split_for(settings.leaf_rule))


def _run_null(n_samples: int, settings: AracneSettings):
    """The null model of a run: simulated for APMI, the analytic law for GCMI."""
    if settings.estimator == "gcmi":
        size = settings.resample_size(n_samples)
        # bootstrap: the expected effective size of n draws with replacement, n^2 / (2n - 1);
        # each resample then uses its own draws' size
        effective = size**2 / (2 * size - 1) if settings.scheme == "bootstrap" else size
        return gcmi_null(size, n_effective=effective, bias_correction=settings.bias_correction)
    return null_model(
        n_samples,
        scheme=settings.scheme,
        fraction=settings.subsample_fraction,
        min_split=min_split_for(settings.leaf_rule),
        partition=settings.partition,
        seed=settings.seed,
        n_pairs=settings.null_pairs,
    )


def _resample_network(
    resample: int, *, data: SortedGenes, reg_cols, settings: AracneSettings, cutoff, null
) -> ResampleNetwork:
    """One resample's pruned network (a plain function of its arguments, run locally or on Dask)."""
    stream = FULL_DATA_STREAM if settings.scheme == "none" else resample
    rng = np.random.default_rng(np.random.SeedSequence([settings.seed, stream]))
    n_genes, n_samples = data.values.shape
    idx = resample_indices(n_samples, settings.scheme, settings.subsample_fraction, rng)
    mi = _mi_matrix(data.ranks(idx, rng), reg_cols, settings)
    if settings.estimator == "gcmi" and settings.scheme == "bootstrap":
        # duplicated draws act as weights: the law holds at this resample's own effective size
        null = gcmi_null(
            idx.size,
            n_effective=effective_sample_size(idx),
            bias_correction=settings.bias_correction,
        )
        cutoff = null.threshold(settings.threshold_pvalue)
    not_self = np.ones(mi.shape, dtype=bool)
    not_self[np.arange(reg_cols.size), reg_cols] = False
    n_tests = int(not_self.sum())
    candidates = (mi > cutoff) & not_self
    if settings.fdr is None:
        edges = candidates
        rate = settings.pvalue
    else:
        edges = benjamini_hochberg_edges(mi, candidates, null, n_tests, settings.fdr)
        n_edges = int(edges.sum())
        rate = settings.fdr * n_edges / max(1.0, n_tests - (1 - settings.fdr) * n_edges)
    kept = prune(mi, edges, reg_cols, rule=settings.pruning, tolerance=settings.dpi_tolerance)
    reg, gene = np.nonzero(kept)
    n_thresholded = int(edges.sum())
    # pruning removes edges regardless of truth: the false-positive rate shrinks with the kept share
    rate *= reg.size / n_thresholded if n_thresholded else 1.0
    return ResampleNetwork(
        edge_ids=reg.astype(np.int64) * n_genes + gene,
        mi=mi[reg, gene],
        false_positive_rate=rate,
        n_thresholded=n_thresholded,
    )


def benjamini_hochberg_edges(
    mi: np.ndarray, candidates: np.ndarray, null, n_tests: int, fdr: float
) -> np.ndarray:
    """The ``candidates`` (a mask over ``mi``) that Benjamini-Hochberg rejects at level ``fdr``
    over ``n_tests`` tests, by their ``null`` p-values.

    No p-value above fdr x candidates / n_tests can be rejected, so only the candidates above
    the null's MI threshold at twice that bound (room for the threshold's rounding) get a
    p-value: the same rejections as p-values for all candidates, at a fraction of their cost.
    """
    bound = 2.0 * fdr * np.count_nonzero(candidates) / n_tests
    if bound < fdr:
        candidates = candidates & (mi > null.threshold(bound))
    pvalues = null.pvalue(mi[candidates])
    edges = np.zeros_like(candidates)
    edges[candidates] = pvalues <= benjamini_hochberg_cutoff(pvalues, n_tests, fdr)
    return edges


def _spearman(
    X: np.ndarray, first: np.ndarray, second: np.ndarray, order: np.ndarray | None = None
) -> np.ndarray:
    """Spearman correlation (average ranks for ties) of the column pairs (first[k], second[k]);
    ``order``: each column's ascending sort order (genes x samples, ``SortedGenes.order``), if
    already known."""
    columns, index = np.unique(np.concatenate([first, second]), return_inverse=True)
    z = np.empty((X.shape[0], columns.size))
    step = max(1, 2**18 // X.shape[0])  # columns at once: temporaries and gathers of 2 MB
    for start in range(0, columns.size, step):
        chunk = columns[start : start + step]
        z[:, start : start + step] = average_ranks(
            X[:, chunk], None if order is None else order[chunk].T
        )
    z -= z.mean(axis=0)
    norms = np.linalg.norm(z, axis=0)
    norms[norms == 0] = np.inf
    z /= norms
    first, second = index[: first.size], index[first.size :]
    out = np.empty(first.size)
    for start in range(0, first.size, step):
        chunk = slice(start, start + step)
        out[chunk] = np.einsum("ij,ij->j", z[:, first[chunk]], z[:, second[chunk]])
    return out


def average_ranks(values: np.ndarray, order: np.ndarray | None = None) -> np.ndarray:
    """Ranks 1..n within each column of ``values`` (n x k), tied values sharing the mean of
    their ranks (``scipy.stats.rankdata``'s default, without importing scipy.stats); ``order``:
    each column's ascending sort order (n x k), if already known."""
    n = values.shape[0]
    if order is None:
        order = np.argsort(values, axis=0, kind="stable")
    ordered = np.take_along_axis(values, order, axis=0)
    position = np.arange(n)[:, None]
    starts = np.ones(ordered.shape, dtype=bool)  # a position that opens a run of ties
    starts[1:] = ordered[1:] != ordered[:-1]
    ends = np.ones(ordered.shape, dtype=bool)  # a position that closes one
    ends[:-1] = starts[1:]
    first = np.maximum.accumulate(np.where(starts, position, 0), axis=0)
    last = np.minimum.accumulate(np.where(ends, position, n - 1)[::-1], axis=0)[::-1]
    ranks = np.empty(values.shape)
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=0)
    return ranks


def _check_regulators(regulators: Sequence[str], genes: np.ndarray, source: str) -> np.ndarray:
    """Gene columns of the regulators present in ``genes`` (order kept, duplicates dropped)."""
    column = {gene: i for i, gene in enumerate(genes)}
    unique = list(dict.fromkeys(str(r) for r in regulators))
    absent = [r for r in unique if r not in column]
    if len(absent) == len(unique):
        raise InputError(
            f"{source}: none of the {len(unique)} regulators is a gene of the expression matrix "
            f"(e.g. {', '.join(unique[:3])})"
        )
    if absent:
        warnings.warn(
            f"{source}: {len(absent)} of {len(unique)} regulators are absent from the expression "
            f"matrix (e.g. {', '.join(absent[:5])}); they are ignored",
            UserWarning,
            stacklevel=3,
        )
    return np.array([column[r] for r in unique if r in column], dtype=np.int64)


def aracne(
    X,
    genes: Sequence[str],
    regulators: Sequence[str],
    *,
    estimator: str = "apmi",
    bias_correction: bool = False,
    resamples: int = 100,
    resampling: str = "subsample",
    subsample_fraction: float = 0.632,
    pvalue: float | None = None,
    fdr: float | None = None,
    pruning: str = "dpi",
    dpi_tolerance: float = 0.0,
    consolidation: str = "poisson",
    consolidation_pvalue: float = 0.05,
    leaf_rule: str = "aracne-ap",
    partition: str = "netinfer",
    null_pairs: int | None = None,
    full_output: bool = False,
    seed: int = 0,
    threads: int | None = None,
    client=None,
    progress: bool = False,
    min_samples: int = 10,
    source: str = "<array>",
) -> AracneResult:
    """Infer a regulatory network with ARACNe.

    Parameters
    ----------
    X
        Expression, samples x genes (dense or SciPy sparse).
    genes
        Gene ids, one per column of ``X``.
    regulators
        Candidate regulator ids (e.g. transcription factors); ids absent from ``genes`` are
        reported and ignored.
    estimator
        ``"apmi"``: ARACNe's adaptive-partitioning MI with a simulated null; sees monotone and
        non-monotone dependence. ``"gcmi"``: Gaussian-copula MI with its analytic null; monotone
        dependence only, at a fraction of the cost. See ``netinfer.mi.gcmi``.
    bias_correction
        With ``"gcmi"``: subtract Ince et al.'s analytic bias from every MI (the network is the
        same, the reported MI values shift by about 1 / (2 n)).
    resamples
        Number of resampled networks to consolidate; 0 runs one network on all samples.
    resampling
        ``"subsample"`` (without replacement) or ``"bootstrap"`` (with replacement).
    subsample_fraction
        Fraction of samples per subsample.
    pvalue
        Threshold at the null model's MI for this per-pair p-value (e.g. 1e-8, ARACNe-AP's
        customary value) instead of FDR control.
    fdr
        Benjamini-Hochberg FDR level over regulators x (genes - 1) pairs in each resample, as
        ARACNe3 does. The default, 0.05, applies when neither ``pvalue`` nor ``fdr`` is given.
    pruning
        ``"dpi"`` (ARACNe-AP), ``"maxent"`` (ARACNe3) or ``"none"``.
    dpi_tolerance
        Relative tolerance of the DPI comparison (0: strict).
    consolidation
        ``"poisson"`` (ARACNe-AP) or ``"binomial"`` (ARACNe3) test of edge counts.
    consolidation_pvalue
        Bonferroni-adjusted p-value below which a consolidated edge is kept.
    leaf_rule
        ``"aracne-ap"`` (test cells of >= 3 points) or ``"aracne3"`` (>= 4); ``"apmi"`` only.
    partition
        Where the adaptive partition puts cell midpoints: ``"netinfer"`` (cells at k m / 2^d
        ranks, widths counted in ranks), ``"aracne3"`` or ``"aracne-ap"`` (each reference's own
        rounding, to reproduce its MI values; see ``netinfer.mi.apmi``); ``"apmi"`` only.
        ``COMPAT_PRESETS`` holds every option of each reference's method.
    null_pairs
        Number of null MI values simulated for the threshold (``"apmi"``; GCMI's null is
        analytic). None: chosen by the resample size m, about 3e10 / m, from 100 M values up
        to 300 samples down to 10 M from 3,000 (``netinfer.mi.null.default_null_pairs``): about
        10 s on two cores once per sample size, then cached on disk.
    full_output
        Return every regulator-target pair, ranked by MI, with a ``significant`` column, instead
        of only the significant edges.
    seed
        Seed of every random draw (resamples, tie-breaking, null model).
    threads
        Numba threads in this process (default: all cores).
    client
        A ``distributed.Client``: resamples run as Dask tasks on it.
    progress
        Show a progress bar over resamples.
    min_samples
        Fewer samples than this is an error.
    source
        Name of the data in error messages (a file path).

    Returns
    -------
    The network; see ``AracneResult``.
    """
    started = time.perf_counter()
    if pvalue is not None and fdr is not None:
        raise ValueError("give either pvalue or fdr, not both")
    if pvalue is None and fdr is None:
        fdr = AracneSettings.fdr
    settings = AracneSettings(
        estimator=estimator,
        bias_correction=bias_correction,
        resamples=resamples,
        resampling=resampling,
        subsample_fraction=subsample_fraction,
        pvalue=pvalue,
        fdr=fdr,
        pruning=pruning,
        dpi_tolerance=dpi_tolerance,
        consolidation=consolidation,
        consolidation_pvalue=consolidation_pvalue,
        leaf_rule=leaf_rule,
        partition=partition,
        null_pairs=null_pairs,
        seed=seed,
    )
    settings.check()
    if hasattr(X, "toarray"):
        X = X.toarray()
    expr = validate_expression(X, genes, source=source, min_samples=min_samples)
    informative = np.ptp(expr.X, axis=0) > 0
    # no copy of the matrix when every gene varies (the caller usually still holds it)
    X = np.ascontiguousarray(expr.X if informative.all() else expr.X[:, informative])
    genes = np.asarray(expr.genes)[informative]
    reg_cols = _check_regulators(regulators, genes, source)
    n_samples, n_genes = X.shape
    if n_genes < 2:
        raise InputError(f"{source}: ARACNe needs at least 2 non-constant genes, found {n_genes}")

    previous_threads = numba.get_num_threads()
    if threads is not None:
        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    try:
        size = settings.resample_size(n_samples)
        step_started = time.perf_counter()
        null = _run_null(n_samples, settings)
        cutoff = null.threshold(settings.threshold_pvalue)
        null_seconds = time.perf_counter() - step_started
        step_started = time.perf_counter()
        runs = list(range(max(1, resamples)))
        data = SortedGenes.of(X)
        broadcast = dict(data=data, reg_cols=reg_cols, settings=settings, cutoff=cutoff, null=null)
        with _progress_bar(len(runs), progress) as bar:
            if client is None:
                networks = []
                for resample in runs:
                    networks.append(_resample_network(resample, **broadcast))
                    bar.update()
            else:
                networks = distributed.map_ordered(
                    client, _resample_network, runs, broadcast=broadcast, on_done=bar.update
                )
        resamples_seconds = time.perf_counter() - step_started
        step_started = time.perf_counter()
        full_rng = np.random.default_rng(np.random.SeedSequence([settings.seed, FULL_DATA_STREAM]))
        full_ranks = [data.ranks(np.arange(n_samples), full_rng)]  # _final_edges empties it
        order = data.order  # for the Spearman ranks
        del data, broadcast  # the sorted matrix is done with: its memory goes before the tables
        edges = _final_edges(
            X, order, full_ranks, genes, reg_cols, networks, settings, null, full_output
        )
        seen, seen_count = np.unique(
            np.concatenate([net.edge_ids for net in networks]), return_counts=True
        )
        seen_reg, seen_gene = np.divmod(seen, n_genes)
        import pandas as pd

        recurrence = pd.DataFrame(
            {
                "regulator": genes[reg_cols[seen_reg]].astype(str),
                "target": genes[seen_gene].astype(str),
                "count": seen_count.astype(np.int64),
            }
        )
        final_seconds = time.perf_counter() - step_started
    finally:
        numba.set_num_threads(previous_threads)

    summary = {
        "genes": int(n_genes),
        "samples": int(n_samples),
        "regulators": int(reg_cols.size),
        "constant_genes_ignored": int((~informative).sum()),
        "resample_size": int(size),
        "null_resample_size": int(null.n_samples),
        "threshold": float(cutoff) if fdr is None else None,
        "null_pairs": int(null.n_values) if estimator == "apmi" else 0,  # GCMI: analytic
        "edges_per_resample": [int(net.edge_ids.size) for net in networks],
        "final_edges": int(edges["significant"].sum()) if full_output else int(len(edges)),
        "tested_pairs": int(reg_cols.size * (n_genes - 1)),
        "seconds": round(time.perf_counter() - started, 3),
        "null_seconds": round(null_seconds, 3),
        "resamples_seconds": round(resamples_seconds, 3),
        "final_seconds": round(final_seconds, 3),
    }
    return AracneResult(
        edges=edges, summary=summary, settings=asdict(settings), recurrence=recurrence
    )


def _final_edges(
    X, order, full_ranks, genes, reg_cols, networks, settings, null, full_output
) -> pd.DataFrame:
    """Consolidate (two resamples or more) and describe each edge on all samples.

    ``order`` is each gene's sort order over the samples (genes x samples); ``full_ranks``
    holds every gene's ranks over all samples (genes x samples); it is emptied once the final MI
    is computed, so that memory is free before the tables are made."""
    n_genes = X.shape[1]
    n_possible = reg_cols.size * (n_genes - 1)
    if len(networks) >= 2:
        merged = consolidate(
            networks,
            n_possible=n_possible,
            test=settings.consolidation,
            alpha=settings.consolidation_pvalue,
        )
        ids, count, pvalue, keep = merged.edge_ids, merged.count, merged.pvalue, merged.significant
    else:
        ids = networks[0].edge_ids
        count = np.ones(ids.size, dtype=np.int64)
        pvalue, keep = None, np.ones(ids.size, dtype=bool)

    if full_output:
        # every regulator-target pair, with what consolidation found for the pairs it saw
        n_pairs = reg_cols.size * n_genes
        reg, gene = np.divmod(np.arange(n_pairs, dtype=np.int64), n_genes)
        pairs = gene != reg_cols[reg]
        seen_count = np.zeros(n_pairs, dtype=np.int64)
        seen_count[ids] = count
        significant = np.zeros(n_pairs, dtype=bool)
        significant[ids] = keep
        mi = _mi_matrix(full_ranks.pop(), reg_cols, settings).ravel()[pairs]
        reg, gene, count, keep_mask = reg[pairs], gene[pairs], seen_count[pairs], significant[pairs]
        if pvalue is None:
            pvalue = null.pvalue(mi)
        else:
            seen_p = np.ones(n_pairs)
            seen_p[ids] = pvalue
            pvalue = seen_p[pairs]
    else:
        reg, gene = np.divmod(ids[keep], n_genes)
        count = count[keep]
        mi = _mi_pairs(full_ranks.pop(), reg_cols[reg], gene, settings)
        pvalue = null.pvalue(mi) if pvalue is None else pvalue[keep]
        keep_mask = None

    scc = _spearman(X, reg_cols[reg], gene, order)
    import pandas as pd

    table = pd.DataFrame(
        {
            "regulator": genes[reg_cols[reg]].astype(str),
            "target": genes[gene].astype(str),
            "mi": mi,
            "pvalue": pvalue,
            "count": count.astype(np.int64),
            "scc": scc,
            "log_p": np.log(np.maximum(pvalue, np.finfo(float).tiny)),
        }
    )
    if keep_mask is not None:
        table["significant"] = keep_mask
    order = np.lexsort((table["target"], table["regulator"], -table["mi"].to_numpy()))
    return table.iloc[order].reset_index(drop=True)


def _progress_bar(total: int, shown: bool):
    """A tqdm bar over the resamples, or a silent stand-in (tqdm is imported only to show one)."""
    if not shown:
        return nullcontext(_NoBar())
    if "IPython" in sys.modules:  # a notebook's widget
        from tqdm.auto import tqdm
    else:  # the plain bar, without tqdm.auto's asyncio (6 MB)
        from tqdm import tqdm

    return tqdm(total=total, desc="ARACNe resamples", unit="net")


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass


def aracne_adata(
    adata,
    regulators: Sequence[str],
    *,
    layer: str | None = None,
    key_added: str = "aracne",
    copy: bool = False,
    **kwargs,
):
    """Run ARACNe on an AnnData (cells x genes) and store the network in ``uns[key_added]``.

    Parameters
    ----------
    adata
        The data; ``X`` or ``layers[layer]`` holds expression (counts or normalized; ARACNe only
        uses ranks within genes, so any monotone per-gene transform gives the same network).
    regulators
        Candidate regulator ids (``var_names``).
    layer
        Layer to use instead of ``X``.
    key_added
        Key in ``uns``.
    copy
        Return a copy instead of writing into ``adata``.
    **kwargs
        Options of ``aracne`` (``resamples``, ``pvalue``, ``seed``, ...).

    Returns
    -------
    ``None``, or the copy when ``copy=True``. Adds ``uns[key_added]`` with ``network`` (the edge
    DataFrame), ``params`` (the options) and ``summary`` (the run figures).
    """
    if layer is not None and layer not in adata.layers:
        raise InputError(
            f"<AnnData>: no layer {layer!r}; layers are: {', '.join(adata.layers) or 'none'}"
        )
    adata = adata.copy() if copy else adata
    matrix = adata.X if layer is None else adata.layers[layer]
    result = aracne(matrix, adata.var_names.to_numpy(), regulators, **kwargs)
    params = {k: v for k, v in result.settings.items() if v is not None}
    params["layer"] = layer
    adata.uns[key_added] = {"network": result.edges, "params": params, "summary": result.summary}
    return adata if copy else None
