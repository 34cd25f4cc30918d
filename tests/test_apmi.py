"""The adaptive-partitioning MI kernel against an independent brute force and analytic MI."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from apmi_brute import brute_apmi
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_ports import aracne3_mi, aracne_ap_mi

from netinfer.mi.apmi import (
    PARTITIONS,
    apmi,
    apmi_pairs,
    apmi_regulators,
    min_split_for,
    partition_tables,
    random_tie_ranks,
    rank_codes,
    resample_ranks,
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


@pytest.mark.parametrize("draw", ["subsample", "bootstrap", "all"])
def test_resample_ranks_order_by_value_then_priority(draw):
    """Ranks from each gene's sort order over all samples equal a lexicographic sort of the
    resample's (value, priority) pairs (the brute force), with many ties: rounded values, and
    bootstrap repeats."""
    rng = np.random.default_rng(0)
    values = np.round(rng.normal(size=(30, 90)), 1)  # genes x samples
    draws = {
        "subsample": np.sort(rng.choice(90, size=57, replace=False)),
        "bootstrap": np.sort(rng.integers(0, 90, size=90)),
        "all": np.arange(90),
    }[draw]
    priorities = rng.random((30, draws.size))
    order = np.argsort(values, axis=1, kind="stable").astype(np.int32)
    ranks = resample_ranks(values, order, draws, priorities)
    for gene in range(30):
        by_value_then_priority = np.lexsort((priorities[gene], values[gene, draws]))
        np.testing.assert_array_equal(ranks[gene, by_value_then_priority], np.arange(draws.size))


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


@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(4, 400),
    rho=st.floats(-0.99, 0.99),
    seed=st.integers(0, 2**32 - 1),
)
def test_compat_partitions_equal_ported_references(m, rho, seed):
    """Tie-free data: per-pair MI equal to ports of ARACNe3's calcAPMISplit and ARACNe-AP's
    computeMI (tests/reference_ports.py) to 1e-6 (ARACNe3 computes in float32)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=m)
    y = rho * x + np.sqrt(1 - rho**2) * rng.normal(size=m)
    ours3 = apmi(x, y, leaf_rule="aracne3", partition="aracne3")
    assert abs(ours3 - aracne3_mi(list(x), list(y))) < 1e-6
    ours_ap = apmi(x, y, leaf_rule="aracne-ap", partition="aracne-ap")
    assert abs(ours_ap - aracne_ap_mi(list(x), list(y))) < 1e-6


def test_partitions_differ_where_their_rounding_does():
    """ARACNe3's midpoints differ from ours at odd sizes; ARACNe-AP's integer midpoints over
    descending ranks mirror ours at most sizes, not all (measured: 9 of 40 pairs at 777)."""

    def n_differ(m, partition):
        differ = 0
        for seed in range(20):
            rng = np.random.default_rng(seed)
            x = rng.normal(size=m)
            y = 0.7 * x + rng.normal(size=m)
            ours = apmi(x, y, partition="netinfer")
            differ += abs(apmi(x, y, partition=partition) - ours) > 1e-9
        return differ

    assert n_differ(101, "aracne3") >= 15
    assert n_differ(777, "aracne-ap") >= 1
    with pytest.raises(ValueError, match="partition"):
        partition_tables(101, "aracne2")


@pytest.mark.parametrize("partition", PARTITIONS)
@pytest.mark.parametrize("m", [4, 7, 100, 101, 316, 1000])
def test_partition_tables_are_nested_and_cover_every_rank(partition, m):
    codes, widths = partition_tables(m, partition)
    depth = int(np.log2(widths.size)) - 1
    assert 2 ** (depth + 1) == widths.size
    assert np.unique(codes).size == m and codes.min() >= 0 and codes.max() < 2**depth
    for d in range(depth + 1):
        level = widths[2**d : 2 ** (d + 1)]
        assert level.sum() == pytest.approx(m)  # the intervals of each depth tile the m ranks
        if partition != "aracne3":  # widths counted in ranks: the ranks each interval holds
            held = np.bincount(codes >> (depth - d), minlength=2**d)
            np.testing.assert_array_equal(held, level)
