"""Consolidation tests of edge counts, against direct probability sums."""

from __future__ import annotations

import math

import numpy as np
import pytest

from netinfer.consolidate import ResampleNetwork, consolidate


def _networks(edge_lists, rate=1e-4):
    return [
        ResampleNetwork(np.array(ids, dtype=np.int64), np.full(len(ids), 0.5), rate, len(ids))
        for ids in edge_lists
    ]


def test_poisson_counts_pvalues_and_bonferroni():
    nets = _networks([[1, 2, 3], [1, 2], [1, 7], [1]])
    out = consolidate(nets, n_possible=1000, test="poisson", alpha=0.05)
    np.testing.assert_array_equal(out.edge_ids, [1, 2, 3, 7])
    np.testing.assert_array_equal(out.count, [4, 2, 1, 1])
    lam = 8 / 1000
    for count, p in zip(out.count, out.pvalue):
        tail = 1 - sum(math.exp(-lam) * lam**i / math.factorial(i) for i in range(count))
        assert p == pytest.approx(min(1.0, 1000 * tail), rel=1e-6)
    np.testing.assert_array_equal(out.significant, out.pvalue < 0.05)
    assert out.significant[0] and not out.significant[2]


def test_binomial_uses_mean_false_positive_rate():
    nets = _networks([[5, 6], [5], [5], [5, 6]], rate=0.01)
    out = consolidate(nets, n_possible=100, test="binomial", alpha=0.05)
    theta = 0.01
    for count, p in zip(out.count, out.pvalue):
        tail = sum(math.comb(4, i) * theta**i * (1 - theta) ** (4 - i) for i in range(count, 5))
        assert p == pytest.approx(min(1.0, 100 * tail), rel=1e-6)
    assert out.significant.tolist() == [True, False]


def test_mean_mi_and_bad_test():
    nets = [
        ResampleNetwork(np.array([4]), np.array([0.2]), 0.0, 1),
        ResampleNetwork(np.array([4, 9]), np.array([0.4, 0.3]), 0.0, 2),
    ]
    with pytest.warns(UserWarning, match="no edge can pass"):  # 2 resamples cannot suffice
        out = consolidate(nets, n_possible=10)
    np.testing.assert_allclose(out.mean_mi, [0.3, 0.3])
    with pytest.raises(ValueError, match="consolidation"):
        consolidate(nets, n_possible=10, test="fisher")


def test_warns_when_no_count_can_be_significant():
    nets = _networks([[1, 2, 3]] * 3)  # 3 resamples, dense for 10 possible pairs
    with pytest.warns(UserWarning, match="even an edge found in all 3 resamples"):
        out = consolidate(nets, n_possible=10, test="poisson")
    assert not out.significant.any()
