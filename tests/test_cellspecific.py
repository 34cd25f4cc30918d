"""Cell-specific networks: regulon AUC against a brute force, mixture thresholds, stored graphs."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

from netinfer.cellspecific import activity_threshold, cellspecific_networks, regulon_activity
from netinfer.io import InputError
from netinfer.store import GraphStore, StoreError


def _brute_auc(values: np.ndarray, targets: list[int], max_rank: int) -> float:
    """The recovery curve summed point by point (values without ties)."""
    order = np.argsort(-values)
    found = np.cumsum(np.isin(order[:max_rank], targets))
    best = np.cumsum(np.arange(max_rank) < min(len(targets), max_rank))
    return found.sum() / best.sum()


def test_regulon_auc_matches_the_recovery_curve():
    rng = np.random.default_rng(0)
    values = rng.random((20, 60))  # continuous: no ties
    genes = [f"g{i}" for i in range(60)]
    regulons = {"A": ["g1", "g5", "g7"], "B": [f"g{i}" for i in range(0, 60, 3)], "C": ["zz"]}
    scores = regulon_activity(values, genes, regulons, max_rank=10)
    for cell in range(20):
        for j, targets in enumerate(regulons.values()):
            idx = [genes.index(t) for t in targets if t in genes]
            expected = _brute_auc(values[cell], idx, 10) if idx else 0.0
            assert scores[cell, j] == pytest.approx(expected, abs=1e-12)
    # a regulon whose targets are the top genes scores 1; ranks, not values, matter
    top = [genes[i] for i in np.argsort(-values[0])[:4]]
    assert regulon_activity(values[:1], genes, {"top": top}, max_rank=10)[0, 0] == 1.0
    monotone = regulon_activity(np.log1p(values * 5), genes, regulons, max_rank=10)
    np.testing.assert_array_equal(monotone, scores)


def test_ties_are_broken_per_cell_deterministically():
    values = np.zeros((2, 50))
    values[:, :3] = 1.0  # 47 tied zeros
    regulons = {"R": [f"g{i}" for i in range(10, 20)]}
    genes = [f"g{i}" for i in range(50)]
    once = regulon_activity(values, genes, regulons, cells=["a", "b"], max_rank=8)
    again = regulon_activity(values[::-1], genes, regulons, cells=["b", "a"], max_rank=8)
    np.testing.assert_array_equal(once, again[::-1])  # a cell's score is its own
    assert once[0, 0] != once[1, 0]  # different cells, different tie orders


def test_thresholds_on_bimodal_and_skewed_activity():
    rng = np.random.default_rng(1)
    bimodal = np.concatenate([rng.normal(0.1, 0.02, 700), rng.normal(0.5, 0.05, 300)])
    cut = activity_threshold(bimodal)
    assert cut.bimodal and 0.15 < cut.value < 0.4
    assert abs((bimodal > cut.value).mean() - 0.3) < 0.01
    skewed = rng.gamma(2.0, 0.02, 1000)  # one skewed mode: no crossing between two modes
    cut = activity_threshold(skewed)
    assert not cut.bimodal
    # the upper part of the dominant component, not a mode
    assert np.median(skewed) < cut.value and (skewed > cut.value).mean() < 0.3
    assert not activity_threshold(np.full(50, 0.2)).bimodal


def _planted(tmp_path):
    """Counts of 300 cells of 2 types where G0's regulon is strongly on in 40% of the cells, and
    a graph store with the types' networks."""
    rng = np.random.default_rng(2)
    genes = [f"G{i}" for i in range(40)]
    n = 300
    X = rng.poisson(1.0, size=(n, 40)).astype(np.float32)
    on = rng.random(n) < 0.4
    X[np.ix_(on, [5, 6, 7, 8])] += 30
    adata = ad.AnnData(X, var=pd.DataFrame(index=genes))
    adata.obs_names = [f"cell{i}" for i in range(n)]
    adata.obs["type"] = np.where(np.arange(n) < 200, "A", "B")
    targets = {"G0": ["G5", "G6", "G7", "G8"], "G1": ["G20", "G21"], "G2": ["G20", "G21"]}
    store_path = tmp_path / "graphs.zarr"
    with GraphStore.create(store_path) as store:
        for cell_type, regulators in (("A", ["G0", "G1"]), ("B", ["G0", "G2"])):
            edges = [(r, t) for r in regulators for t in targets[r]]
            table = pd.DataFrame(edges, columns=["regulator", "target"])
            store.add_graph(f"net{cell_type}", table, kind="consensus", cell_type=cell_type)
    return adata, on, store_path, targets


def test_cellspecific_networks_are_the_active_regulons_edges(tmp_path):
    adata, on, store_path, targets = _planted(tmp_path)
    with GraphStore.open(store_path, "a") as store:
        result = cellspecific_networks(adata, store, cell_type_key="type", max_rank=8)
    store = GraphStore.open(store_path)
    assignment = store.get_assignment("cellspecific")
    assert assignment.meta["params"]["kind"] == "cellspecific"
    # provenance: every cell's graph was made from its own label (evaluations refuse it)
    assert assignment.meta["params"]["read_labels"] == {"column": "type", "of": "own cells"}
    vocabulary = np.asarray(store.genes)
    cuts = result.thresholds
    scores = regulon_activity(
        adata.X, adata.var_names, {"G0": targets["G0"]}, cells=adata.obs_names, max_rank=8
    )[:, 0]
    for i in range(adata.n_obs):
        rows, cols = assignment.cell_graph(i)
        got = {(vocabulary[r], vocabulary[c]) for r, c in zip(rows, cols)}
        cell_type = adata.obs["type"].iloc[i]
        g0_on = scores[i] > cuts[cell_type]["G0"].value
        assert {e for e in got if e[0] == "G0"} == (
            {("G0", t) for t in targets["G0"]} if g0_on else set()
        )
        allowed = {"A": {"G0", "G1"}, "B": {"G0", "G2"}}[cell_type]
        assert {e[0] for e in got} <= allowed
    # G0's regulon separates the cells it was planted in
    assert np.mean((scores > cuts["A"]["G0"].value) == on) > 0.95
    assert result.summary["distinct_graphs"] <= 8
    with pytest.raises(InputError, match="no obs column 'celltype'"):
        cellspecific_networks(adata, GraphStore.open(store_path, "a"), cell_type_key="celltype")


def test_cli_and_the_gremln_loader_read_the_cell_networks(tmp_path):
    from cli.netinfer import main
    from gremln.cellstore import CellStore, prepare
    from gremln.data import CellDataset

    adata, _, store_path, _ = _planted(tmp_path)
    adata.write_h5ad(tmp_path / "cells.h5ad")
    args = ["cellspecific", str(tmp_path / "cells.h5ad"), "--store", str(store_path)]
    assert main([*args, "--cell-type-key", "type", "--max-rank", "8", "--name", "cs"]) == 0
    assert main([*args, "--cell-type-key", "kind"]) == 2  # a missing column: a clear error
    qc = dict(min_counts=1, max_counts=10**6, trim=None, min_genes=1, n_bins=5)
    common = dict(graphs_path=store_path, cell_type_key="type", **qc)
    with pytest.raises(StoreError, match="no assignment named .other."):
        prepare(
            tmp_path / "cells.h5ad", tmp_path / "c.zarr", graph_mode="assignment:other", **common
        )
    prepare(tmp_path / "cells.h5ad", tmp_path / "c.zarr", graph_mode="assignment:cs", **common)
    graphs = GraphStore.open(store_path)
    assignment, vocabulary = graphs.get_assignment("cs"), np.asarray(graphs.genes)
    row_of = {cell: i for i, cell in enumerate(assignment.cells)}
    store = CellStore.open(tmp_path / "c.zarr")
    n_with_edges = 0
    for ex in CellDataset(tmp_path / "c.zarr", store_path, split=None, cellspecific="cs"):
        assert torch.equal(ex["cellspecific_edge_index"], ex["edge_index"])  # the same graphs
        cell_id = store.obs["cell_id"].iloc[ex["cell"]]
        expressed = set(adata.var_names[adata[cell_id].X.ravel() > 0])
        rows, cols = assignment.cell_graph(row_of[cell_id])
        kept = [(a, b) for a, b in zip(vocabulary[rows], vocabulary[cols]) if {a, b} <= expressed]
        genes = np.asarray(store.vocabulary.genes)[ex["gene_ids"][1:].numpy() - 3]
        got = {(genes[i - 1], genes[j - 1]) for i, j in ex["edge_index"].T.tolist()}
        assert got == set(kept) | {(b, a) for a, b in kept}
        n_with_edges += bool(kept)
    assert n_with_edges > 50
