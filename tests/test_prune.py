"""DPI and MaxEnt pruning against a plain loop over every triangle."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from netinfer.prune import prune


def _brute_prune(mi, edges, reg_cols, maxent, tolerance):
    """Visit every (regulator, regulator, gene) triangle; decide on the unpruned network."""
    keep = edges.copy()
    n_regs, n_genes = mi.shape
    factor = 1.0 - tolerance
    for a, b in itertools.permutations(range(n_regs), 2):
        if not edges[a, reg_cols[b]]:
            continue
        for g in range(n_genes):
            if g in (reg_cols[a], reg_cols[b]) or not (edges[a, g] and edges[b, g]):
                continue
            x, y, z = mi[a, g], mi[b, g], mi[a, reg_cols[b]]
            if x < factor * min(y, z):
                keep[a, g] = False
            if maxent and z < factor * min(x, y):
                keep[a, reg_cols[b]] = False
    return keep


def _random_network(seed, n_regs=12, n_genes=40, density=0.35):
    rng = np.random.default_rng(seed)
    reg_cols = rng.choice(n_genes, size=n_regs, replace=False).astype(np.int64)
    mi = rng.random((n_regs, n_genes))
    for i, j in itertools.combinations(range(n_regs), 2):  # regulator pairs are symmetric
        mi[j, reg_cols[i]] = mi[i, reg_cols[j]]
    edges = rng.random((n_regs, n_genes)) < density
    for i, j in itertools.combinations(range(n_regs), 2):
        edges[j, reg_cols[i]] = edges[i, reg_cols[j]]
    edges[np.arange(n_regs), reg_cols] = False
    mi[np.arange(n_regs), reg_cols] = 0.0
    return mi, edges, reg_cols


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("rule", ["dpi", "maxent"])
@pytest.mark.parametrize("tolerance", [0.0, 0.1])
def test_prune_matches_triangle_loop(seed, rule, tolerance):
    mi, edges, reg_cols = _random_network(seed)
    got = prune(mi, edges, reg_cols, rule=rule, tolerance=tolerance)
    np.testing.assert_array_equal(
        got, _brute_prune(mi, edges, reg_cols, rule == "maxent", tolerance)
    )
    assert not (got & ~edges).any()


def test_dpi_keeps_regulator_edge_that_maxent_removes():
    # regulators 0 and 1 (genes 0, 1), target gene 2; the regulator-regulator edge is weakest
    reg_cols = np.array([0, 1], dtype=np.int64)
    mi = np.array([[0.0, 0.2, 0.9, 0.0], [0.2, 0.0, 0.8, 0.0]])
    edges = mi > 0
    dpi = prune(mi, edges, reg_cols, rule="dpi")
    maxent = prune(mi, edges, reg_cols, rule="maxent")
    np.testing.assert_array_equal(dpi, edges)
    assert maxent[0, 2] and maxent[1, 2] and not maxent[0, 1] and not maxent[1, 0]
    # with a weak target edge, DPI removes it and keeps the regulator edge
    mi[1, 2] = 0.1
    dpi = prune(mi, mi > 0, reg_cols, rule="dpi")
    assert not dpi[1, 2] and dpi[0, 2] and dpi[0, 1] and dpi[1, 0]


def test_none_and_bad_options():
    mi, edges, reg_cols = _random_network(0)
    np.testing.assert_array_equal(prune(mi, edges, reg_cols, rule="none"), edges)
    with pytest.raises(ValueError, match="pruning"):
        prune(mi, edges, reg_cols, rule="clr")
    with pytest.raises(ValueError, match="tolerance"):
        prune(mi, edges, reg_cols, tolerance=1.0)
