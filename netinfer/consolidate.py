"""Consolidation of resampled networks into one network with per-edge significance.

An edge that is real should appear in most resampled networks; one that is not appears in a
resample only by chance. Both tests below ask how surprising an edge's count k over B resamples is
under "this edge is noise", and keep the edges whose Bonferroni-adjusted p-value (over all
``n_possible`` regulator-target pairs) is below ``alpha``:

- ``"poisson"`` (ARACNe-AP): k ~ Poisson(lambda), lambda = (edges summed over all resamples) /
  n_possible, the mean count of a pair. ARACNe-AP computes P(X > k), which is not a p-value (it
  leaves out X = k); we use P(X >= k). ``"poisson-ap"`` keeps ARACNe-AP's P(X > k), for
  ``compat="aracne-ap"`` only.
- ``"binomial"`` (ARACNe3): k ~ Binomial(B, theta), theta = the mean over resamples of each
  resample's estimated false-positive rate per pair (the threshold's p-value, or the FDR-implied
  rate, scaled by the fraction of edges that survived pruning).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import special

CONSOLIDATION_TESTS = ("poisson", "binomial", "poisson-ap")


@dataclass(frozen=True)
class ResampleNetwork:
    """One resample's pruned network: flat edge ids (regulator * n_genes + gene) and MI values."""

    edge_ids: np.ndarray
    mi: np.ndarray
    false_positive_rate: float
    n_thresholded: int


@dataclass(frozen=True)
class Consolidated:
    """Edges seen in any resample, with counts and consolidation p-values (Bonferroni-adjusted)."""

    edge_ids: np.ndarray
    count: np.ndarray
    mean_mi: np.ndarray
    pvalue: np.ndarray
    significant: np.ndarray


def consolidate(
    networks: list[ResampleNetwork],
    *,
    n_possible: int,
    test: str = "poisson",
    alpha: float = 0.05,
) -> Consolidated:
    """Count each edge over the resampled networks and test its count.

    Parameters
    ----------
    networks
        The resampled networks.
    n_possible
        Number of regulator-target pairs that were tested in each resample.
    test
        ``"poisson"``, ``"binomial"`` or ``"poisson-ap"`` (see the module docstring).
    alpha
        Family-wise level: an edge is kept when its Bonferroni-adjusted p-value is below it.

    Returns
    -------
    Every edge seen at least once, sorted by edge id.
    """
    if test not in CONSOLIDATION_TESTS:
        raise ValueError(f"consolidation must be one of {CONSOLIDATION_TESTS}, not {test!r}")
    all_ids = np.concatenate([net.edge_ids for net in networks])
    all_mi = np.concatenate([net.mi for net in networks])
    edge_ids, inverse, count = np.unique(all_ids, return_inverse=True, return_counts=True)
    mean_mi = np.bincount(inverse, weights=all_mi, minlength=edge_ids.size) / count
    n_resamples = len(networks)
    if test in ("poisson", "poisson-ap"):
        lam = all_ids.size / n_possible
        shift = 0 if test == "poisson-ap" else 1  # pdtrc(k, lam) = P(X > k)
        tail = lambda k: special.pdtrc(k - shift, lam)  # noqa: E731
    else:
        theta = float(np.mean([net.false_positive_rate for net in networks]))
        tail = lambda k: special.bdtrc(k - 1, n_resamples, theta)  # noqa: E731  P(X >= k)
    pvalue = np.minimum(1.0, tail(count) * n_possible)
    best = min(1.0, float(tail(n_resamples)) * n_possible)
    if all_ids.size and best >= alpha:
        warnings.warn(
            f"no edge can pass the {test} consolidation test: even an edge found in all "
            f"{n_resamples} resamples has adjusted p = {best:.2g} >= {alpha}. The networks are "
            f"dense for {n_possible} possible pairs; use more resamples (or the other test)",
            UserWarning,
            stacklevel=3,
        )
    return Consolidated(edge_ids, count, mean_mi, pvalue, pvalue < alpha)
