"""The GREmLN dataset and loader: tokens, masks and edges against a direct computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from gremln.cellstore import CellStore, prepare
from gremln.data import IGNORE, CellDataset, ShardSpec, collate_packed, collate_padded
from gremln.tokenize import CLS
from netinfer.store import GraphStore

QC = dict(min_counts=100, max_counts=10**6, trim=None, min_genes=50)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    from netinfer.datasets import pbmc68k_counts

    folder = tmp_path_factory.mktemp("data")
    adata = pbmc68k_counts()
    adata.write_h5ad(folder / "pbmc.h5ad")
    rng = np.random.default_rng(0)
    genes = np.asarray(adata.var_names)
    with GraphStore.create(folder / "graphs.zarr") as store:
        for i, cell_type in enumerate(sorted(set(adata.obs["bulk_labels"]))):
            pairs = rng.choice(len(genes), size=(3000, 2))
            pairs = np.unique(pairs[pairs[:, 0] != pairs[:, 1]], axis=0)
            edges = pd.DataFrame({"regulator": genes[pairs[:, 0]], "target": genes[pairs[:, 1]]})
            store.add_graph(f"net{i}", edges, kind="consensus", cell_type=cell_type)
    prepare(
        folder / "pbmc.h5ad",
        folder / "cells.zarr",
        graphs_path=folder / "graphs.zarr",
        cell_type_key="bulk_labels",
        n_bins=11,
        **QC,
    )
    return folder / "cells.zarr", folder / "graphs.zarr"


def test_examples_match_a_direct_computation(stores):
    cells_path, graphs_path = stores
    data = CellDataset(cells_path, graphs_path, split=None, max_length=100, seed=1)
    store = CellStore.open(cells_path)
    graphs = GraphStore.open(graphs_path)
    examples = list(data)
    assert sorted(ex["cell"] for ex in examples) == list(range(len(store)))
    for ex in examples[:25]:
        ids, bins = store.cell(ex["cell"])
        ids, bins = ids[:100], bins[:100]  # stored by decreasing bin: the highest kept
        assert ex["gene_ids"].tolist() == [CLS, *ids.tolist()]  # gene ids are never masked
        masked = ex["targets"] != IGNORE
        assert int(masked.sum()) == round(0.3 * len(ids)) and not masked[0]
        assert (ex["bins"][masked] == 12).all() and ex["bins"][0] == 13  # MASK, CLS bins
        np.testing.assert_array_equal(ex["targets"][1:][masked[1:]], bins[masked[1:].numpy()])
        np.testing.assert_array_equal(ex["bins"][1:][~masked[1:]], bins[~masked[1:].numpy()])
        # edges: the cell's graph among its genes, symmetrized, positions shifted past CLS
        key = store.obs["graph_key"].iloc[ex["cell"]]
        adjacency = graphs.get(key, symmetrize=True).adjacency
        vocab = graphs.gene_index(np.asarray(store.vocabulary.genes)[ids - 3])
        present = np.flatnonzero(vocab >= 0)
        sub = adjacency[vocab[present]][:, vocab[present]].tocoo()
        expected = {(present[i] + 1, present[j] + 1) for i, j in zip(sub.row, sub.col)}
        assert set(map(tuple, ex["edge_index"].T.tolist())) == expected
        assert 0 not in ex["edge_index"]  # CLS is not part of the graph


def test_shards_cover_every_cell_once_and_resume(stores):
    cells_path, graphs_path = stores
    common = dict(split="train", seed=3, block=16)
    seen = []
    for rank in range(2):
        data = CellDataset(cells_path, graphs_path, shard=ShardSpec(rank, 2), **common)
        loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=2)
        seen += [ex["cell"] for ex in loader]
    everything = CellDataset(cells_path, graphs_path, **common)
    assert sorted(seen) == sorted(everything.indices.tolist()) and len(set(seen)) == len(seen)
    full = [ex["cell"] for ex in everything]
    assert full == [ex["cell"] for ex in CellDataset(cells_path, graphs_path, **common)]
    resumed = CellDataset(cells_path, graphs_path, position=37, **common)
    assert [ex["cell"] for ex in resumed] == full[37:]
    everything.set_epoch(1)
    assert [ex["cell"] for ex in everything] != full  # a new epoch, a new order


def test_packed_and_padded_batches_hold_the_same_cells(stores):
    cells_path, graphs_path = stores
    batch = list(CellDataset(cells_path, graphs_path, split=None, max_length=60))[:4]
    packed = collate_packed(batch)
    padded = collate_padded(batch, pad_bin=11)
    starts = packed["cu_seqlens"].tolist()
    assert starts[0] == 0 and packed["max_seqlen"] == padded["gene_ids"].shape[1]
    for row in range(4):
        n = starts[row + 1] - starts[row]
        for name in ("gene_ids", "bins", "targets"):
            assert torch.equal(packed[name][starts[row] : starts[row + 1]], padded[name][row, :n])
        assert not padded["padding_mask"][row, :n].any() and padded["padding_mask"][row, n:].all()
        mine = padded["edge_index"][0] == row
        assert torch.equal(padded["edge_index"][1:, mine], batch[row]["edge_index"])
    assert packed["edge_index"].shape[1] == padded["edge_index"].shape[1]
    assert (packed["edge_index"] < packed["gene_ids"].numel()).all()


@pytest.mark.parametrize("layout", ["packed", "padded"])
def test_batches_are_built_as_collated_examples(stores, layout):
    """A dataset's batches (built at once) equal its examples collated one by one: the same
    tokens, masks and edges, whatever batch a cell lands in."""
    cells_path, graphs_path = stores
    common = dict(split=None, seed=6, block=16, max_length=50, coexpression_fraction=0.25)
    examples = {ex["cell"]: ex for ex in CellDataset(cells_path, graphs_path, **common)}
    batches = list(CellDataset(cells_path, graphs_path, batch_size=5, layout=layout, **common))
    for batch in batches:
        chosen = [examples[cell] for cell in batch["cells"].tolist()]
        if layout == "packed":
            expected = collate_packed(chosen)
        else:
            expected = collate_padded(chosen, pad_bin=11)
        assert batch.keys() == expected.keys()
        for key, value in expected.items():
            if isinstance(value, torch.Tensor):
                assert value.dtype == batch[key].dtype and torch.equal(value, batch[key]), key
            else:
                assert value == batch[key], key


def test_batches_are_the_same_with_any_number_of_workers_and_resume(stores):
    cells_path, graphs_path = stores
    common = dict(split=None, seed=5, block=16, batch_size=7, layout="padded", max_length=40)
    single = list(CellDataset(cells_path, graphs_path, **common))
    assert all(len(b["cells"]) == 7 for b in single[:-1])

    def loaded(**extra):
        data = CellDataset(cells_path, graphs_path, **common, **extra)
        return list(torch.utils.data.DataLoader(data, batch_size=None, num_workers=2))

    workers = loaded()
    assert [b["cells"].tolist() for b in workers] == [b["cells"].tolist() for b in single]
    for name in ("gene_ids", "bins", "targets", "padding_mask", "edge_index"):
        assert all(torch.equal(a[name], b[name]) for a, b in zip(workers, single))
    resumed = loaded(position=5)  # an odd position: worker 0 must take unit 5
    assert [b["cells"].tolist() for b in resumed] == [b["cells"].tolist() for b in single[5:]]


def test_integrated_graph_mode_gives_each_cell_its_own_graph(stores, tmp_path):
    from netinfer.datasets import pbmc68k_counts

    _, graphs_path = stores
    adata = pbmc68k_counts()
    adata.write_h5ad(tmp_path / "pbmc.h5ad")
    graphs = GraphStore.open(graphs_path, "a")
    rng = np.random.default_rng(7)
    n_genes = len(graphs.genes)
    union = np.unique(rng.integers(0, n_genes, size=(4000, 2)), axis=0)
    union = union[union[:, 0] != union[:, 1]]
    per_graph = [np.sort(rng.choice(len(union), size=n, replace=False)) for n in (300, 900, 0)]
    graph_index = rng.integers(0, 3, size=adata.n_obs)
    graphs.add_assignment(
        "pbmc",
        graphs=per_graph,
        cells=adata.obs_names,
        graph_index=graph_index,
        weights=np.ones((adata.n_obs, 1)),
        cell_types=["any"],
        edge_rows=union[:, 0],
        edge_cols=union[:, 1],
        overwrite=True,
    )
    graphs.close()
    cells_path = tmp_path / "cells.zarr"
    prepare(
        tmp_path / "pbmc.h5ad",
        cells_path,
        graphs_path=graphs_path,
        cell_type_key="bulk_labels",
        graph_mode="integrated",
        n_bins=11,
        **QC,
    )
    store = CellStore.open(cells_path)
    assert set(store.obs["graph_key"]) == {"assignment:pbmc"}
    row_of = {cell: i for i, cell in enumerate(adata.obs_names)}
    vocab_genes = np.asarray(store.vocabulary.genes)
    graph_genes = np.asarray(GraphStore.open(graphs_path).genes)
    data = CellDataset(cells_path, graphs_path, split=None, max_length=80, seed=2)
    sizes = set()
    for ex in list(data)[:40]:
        ids = store.cell(ex["cell"])[0][:80]
        genes = list(vocab_genes[ids - 3])
        edges = union[per_graph[graph_index[row_of[store.obs["cell_id"].iloc[ex["cell"]]]]]]
        expected = set()
        for a, b in graph_genes[edges]:
            if a in genes and b in genes:
                i, j = genes.index(a) + 1, genes.index(b) + 1
                expected |= {(i, j), (j, i)}
        assert set(map(tuple, ex["edge_index"].T.tolist())) == expected
        sizes.add(len(expected) > 0)
    assert sizes == {True, False}  # cells with and without edges among their genes


def test_coexpression_perturbation_draws_from_the_knn_graph_and_keeps_the_edge_count(stores):
    from gremln.data import coexpression_perturbation

    rng = np.random.default_rng(0)
    pairs = np.unique(np.sort(rng.integers(1, 31, size=(2, 60)), axis=0), axis=1)
    pairs = pairs[:, pairs[0] < pairs[1]]
    edges = np.concatenate([pairs, pairs[::-1]], axis=1).astype(np.int32)
    candidates = np.unique(np.sort(rng.integers(1, 31, size=(2, 40)), axis=0), axis=1)
    candidates = candidates[:, candidates[0] < candidates[1]]
    out = coexpression_perturbation(edges, candidates, 0.2, np.random.default_rng(1))
    assert out.shape == edges.shape and out.dtype == np.int32
    before, after = set(map(tuple, edges.T.tolist())), set(map(tuple, out.T.tolist()))
    assert after == {(b, a) for a, b in after}  # symmetric, no duplicates
    assert len(after) == len(before)
    assert len(before - after) == 2 * round(0.2 * pairs.shape[1])
    knn = set(map(tuple, candidates.T.tolist()))
    assert {(a, b) for a, b in after - before if a < b} <= knn  # new edges: kNN graph edges
    again = coexpression_perturbation(edges, candidates, 0.2, np.random.default_rng(1))
    assert np.array_equal(out, again)
    # fewer free candidates than edges to replace: only as many replaced, the count kept
    few = coexpression_perturbation(edges, candidates[:, :2], 0.5, rng)
    assert few.shape == edges.shape and len(set(map(tuple, few.T.tolist())) - before) <= 4


def test_coexpression_knn_graph_matches_brute_force_correlations(stores):
    from gremln.data import coexpression_knn_graph

    cells_path, _ = stores
    store = CellStore.open(cells_path)
    graph = coexpression_knn_graph(str(cells_path), "train", k=5)
    train = np.flatnonzero(store.obs["split"] == "train")
    dense = np.zeros((len(train), len(store.vocabulary)))
    for row, cell in enumerate(train):
        ids, bins = store.cell(cell)
        dense[row, ids] = bins
    genes = np.flatnonzero(dense.std(axis=0) > 0)
    correlation = np.corrcoef(dense[:, genes].T)  # float64, all at once
    np.fill_diagonal(correlation, -np.inf)
    expected = set()
    for i, gene in enumerate(genes[:200]):
        best = np.argsort(-correlation[i], kind="stable")[:5]
        expected |= {(gene, genes[j]) for j in best if correlation[i, j] > 0}
    rows, cols = graph.nonzero()
    edges = set(zip(rows.tolist(), cols.tolist()))
    assert expected <= edges and all((b, a) in edges for a, b in expected)  # symmetric
    # and nothing else: every edge is in one of its genes' top 5
    top = {
        (gene, genes[j])
        for i, gene in enumerate(genes)
        for j in np.argsort(-correlation[i], kind="stable")[:5]
        if correlation[i, j] > 0
    }
    assert edges == top | {(b, a) for a, b in top}


def test_coexpression_perturbation_in_the_dataset(stores):
    from gremln.data import coexpression_knn_graph

    cells_path, graphs_path = stores
    plain = list(CellDataset(cells_path, graphs_path, split=None, seed=4))[:10]
    mixed = list(
        CellDataset(cells_path, graphs_path, split=None, seed=4, coexpression_fraction=0.5)
    )[:10]
    for a, b in zip(plain, mixed):
        assert torch.equal(a["bins"], b["bins"])  # the masks do not change
        assert a["edge_index"].shape == b["edge_index"].shape
    assert any(not torch.equal(a["edge_index"], b["edge_index"]) for a, b in zip(plain, mixed))
    graph = coexpression_knn_graph(str(cells_path), None)  # the dataset's cells: all
    for a, b in zip(plain, mixed):
        ids = b["gene_ids"].numpy()
        added = set(map(tuple, b["edge_index"].T.tolist())) - set(
            map(tuple, a["edge_index"].T.tolist())
        )
        assert all(graph[ids[i], ids[j]] for i, j in added)  # drawn from the kNN graph
