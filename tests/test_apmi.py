"""The adaptive-partitioning MI kernel against an independent brute force and analytic MI."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from apmi_brute import brute_apmi
from hypothesis import given, settings
from hypothesis import strategies as st

from netinfer.mi.apmi import (
    apmi,
    apmi_pairs,
    apmi_regulators,
    min_split_for,
    random_tie_ranks,
    rank_codes,
)


def _kernel_mi(ranks, min_split):
    codes, depth = rank_codes(ranks)
    return apmi_pairs(codes, np.array([0]), np.array([1]), depth, min_split)[0]


@settings(max_examples=60, deadline=None)
@given(
    m=st.integers(2, 160),
    rho=st.floats(-0.99, 0.99),
    rounding=st.sampled_from([None, 0, 1]),
    min_split=st.sampled_from([3, 4]),
    seed=st.integers(0, 2**32 - 1),
)
def test_kernel_equals_brute_force(m, rho, rounding, min_split, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=m)
    y = rho * x + np.sqrt(1 - rho**2) * rng.normal(size=m)
    if rounding is not None:  # heavy ties, broken at random
        x, y = np.round(x, rounding), np.round(y, rounding)
    ranks = random_tie_ranks(np.vstack([x, y]), rng)
    expected = brute_apmi(list(ranks[0]), list(ranks[1]), min_split)
    assert _kernel_mi(ranks, min_split) == pytest.approx(expected, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("rho", [0.0, 0.3, 0.6, 0.9])
@pytest.mark.parametrize("leaf_rule", ["aracne-ap", "aracne3"])
def test_bivariate_normal_matches_analytic_mi(rho, leaf_rule):
    """Stated tolerance at n = 2,000: mean of 5 replicates within 0.01 nats + 6% of the truth."""
    true = -0.5 * np.log(1 - rho**2)
    estimates = []
    for seed in range(5):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=2000)
        y = rho * x + np.sqrt(1 - rho**2) * rng.normal(size=2000)
        estimates.append(apmi(x, y, leaf_rule=leaf_rule, seed=seed))
    assert abs(np.mean(estimates) - true) <= 0.01 + 0.06 * true


def test_ranks_are_permutations_with_per_gene_random_ties():
    values = np.zeros((2, 50))  # all tied: the tie order is the only thing left
    values[:, 25:] = 1.0
    ranks = random_tie_ranks(values, np.random.default_rng(3))
    for row in ranks:
        assert sorted(row) == list(range(50))
        assert set(row[:25]) == set(range(25))  # ties stay within their value
    assert not np.array_equal(ranks[0], ranks[1])  # each gene gets its own random order
    again = random_tie_ranks(values, np.random.default_rng(3))
    np.testing.assert_array_equal(ranks, again)


def test_regulator_matrix_symmetric_and_thread_independent():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 60))  # genes x samples
    X[5] += X[0]
    codes, depth = rank_codes(random_tie_ranks(X, rng))
    reg_cols = np.array([0, 5, 7, 11], dtype=np.int64)
    previous = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        single = apmi_regulators(codes, reg_cols, depth, 3)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        multi = apmi_regulators(codes, reg_cols, depth, 3)
    finally:
        numba.set_num_threads(previous)
    np.testing.assert_array_equal(single, multi)
    for i, a in enumerate(reg_cols):
        assert single[i, a] == 0.0
        for j, b in enumerate(reg_cols):
            assert single[i, b] == single[j, a]
    pairs = apmi_pairs(codes, np.full(120, 5), np.arange(120), depth, 3)
    mask = np.arange(120) != 5
    np.testing.assert_allclose(pairs[mask], single[1, mask], rtol=1e-12)
    assert single[0, 5] > 0.2 > np.median(single[0])


def test_leaf_rule_names():
    assert min_split_for("aracne-ap") == 3
    assert min_split_for("aracne3") == 4
    with pytest.raises(ValueError, match="leaf_rule"):
        min_split_for("aracne2")
