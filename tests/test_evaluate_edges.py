"""The edge evaluation: edges held out before pre-training, metrics, baselines, figures, reruns,
hidden edges kept from the model, the store only read."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from test_embed import KEY, pretrained_models, store_digest

from cli.gremln import main as gremln_main
from gremln.embed import load_model
from gremln.evaluate.edges import (
    VISIBLE_GRAPH,
    GraphAttention,
    edge_contexts,
    evaluate_edges,
    hold_out_edges,
    read_held_out,
    split_edges,
    undirected_pairs,
    write_held_out,
)
from netinfer.store import GraphStore

FAST = {"max_length": 100}  # short sequences: quick forward passes
PNG = b"\x89PNG\r\n\x1a\n"
TYPES = ["CD56+ NK", "CD8+/CD45RA+ Naive Cytotoxic"]  # two small types: quick
OPTIONS = dict(cell_type_key=KEY, cell_types=TYPES, n_pcs=10, epochs=20, progress=False)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("edges")
    runs = pretrained_models(folder, attentions=("diffusion", "vanilla"))
    runs["held_out"] = hold_out_edges(runs["graphs"], folder / "pretraining.zarr", cell_types=TYPES)
    return runs, ad.read_h5ad(runs["counts"])


def test_edges_evaluation_reports_every_model_and_reruns_identically(setup, tmp_path):
    runs, adata = setup
    args = (adata, load_model(runs["diffusion"]), runs["graphs"])
    options = dict(vanilla=runs["vanilla"], embed_options=FAST, held_out=runs["held_out"])
    options |= OPTIONS
    before = store_digest(runs["graphs"])
    with GraphStore.open(runs["graphs"], mode="a"):  # another writer holds the store: no matter
        result = evaluate_edges(*args, out_dir=tmp_path / "a", **options)
    assert store_digest(runs["graphs"]) == before  # the store is only read
    assert list(result["models"]) == ["gremln", "vanilla", "pca"]
    for scores in result["models"].values():
        for metric in ("auroc", "ap"):
            assert len(scores[metric]["values"]) == 3 and scores[metric]["std"] >= 0
            assert all(0 <= v <= 1 for v in scores[metric]["values"])
    # GREmLN sees the visible graph through its attention, the others through graph attention
    assert result["params"]["graph_attention"] == {"gremln": False, "vanilla": True, "pca": True}
    contexts = result["data"]["contexts"]
    assert [c["cell_type"] for c in contexts] == sorted(TYPES)
    assert all(c["edges"] >= 10 and c["genes"] > 10 for c in contexts)
    assert all(0 < c["hidden"] < c["edges"] for c in contexts)
    assert set(result["cell_types"]["gremln"]) == set(TYPES)
    written = (tmp_path / "a" / "edges.json").read_text()
    assert json.loads(written) == result
    for figure in result["figures"]:
        assert (tmp_path / "a" / figure).read_bytes()[:8] == PNG
    with GraphStore.open(runs["graphs"]) as store:
        assert VISIBLE_GRAPH not in store  # the visible graph was held in memory
    evaluate_edges(*args, out_dir=tmp_path / "b", **options)
    assert (tmp_path / "b" / "edges.json").read_text() == written  # seeds fixed


def test_hidden_edges_never_reach_the_model(setup, tmp_path):
    runs, adata = setup
    model = load_model(runs["diffusion"])
    batches = []
    evaluate_edges(
        adata,
        model,
        runs["graphs"],
        held_out=runs["held_out"],
        out_dir=tmp_path,
        n_splits=2,
        embed_options={**FAST, "batch_size": 1000, "hook": batches.append},  # a batch per split
        **(OPTIONS | {"cell_types": TYPES[:1], "epochs": 2}),
    )
    (context,), _ = edge_contexts(
        adata,
        runs["graphs"],
        KEY,
        runs["held_out"],
        known_genes=set(model.vocabulary.genes),
        cell_types=TYPES[:1],
    )
    held_out = {tuple(sorted(p)) for p in runs["held_out"].itertuples(index=False)}
    assert len(batches) == 2
    for split, batch in enumerate(batches):
        pairs = split_edges(context.pairs, len(context.genes), context.held_out, split=split)
        names = {tuple(context.genes[p]) for p in pairs.visible}
        hidden = {tuple(context.genes[p]) for p in pairs.hidden}
        assert hidden and hidden <= held_out and not names & held_out
        rows, sources, targets = batch["edge_index"].long().numpy()
        tokens = batch["gene_ids"].numpy()
        genes = np.asarray(model.vocabulary.genes)
        seen = {
            tuple(sorted(pair))
            for pair in zip(genes[tokens[rows, sources] - 3], genes[tokens[rows, targets] - 3])
        }
        assert seen and seen <= names  # the model sees visible edges only
        assert not seen & hidden


def test_split_edges_hides_the_held_out_edges_and_draws_true_negatives():
    rng = np.random.default_rng(0)
    pairs = undirected_pairs(rng.integers(0, 40, 200), rng.integers(0, 40, 200))
    hidden = rng.random(len(pairs)) < 0.15
    split = split_edges(pairs, 40, hidden, seed=3, split=1)
    assert np.array_equal(split.hidden, pairs[hidden])
    assert np.array_equal(split.visible, pairs[~hidden])
    edges = set(map(tuple, pairs))
    negatives = list(map(tuple, np.concatenate([split.train_negatives, split.test_negatives])))
    assert len(set(negatives)) == len(negatives) == len(pairs)  # disjoint, one per edge
    assert not set(negatives) & edges and all(i < j for i, j in negatives)
    again = split_edges(pairs, 40, hidden, seed=3, split=1)
    assert np.array_equal(again.test_negatives, split.test_negatives)
    other = split_edges(pairs, 40, hidden, seed=3, split=2)  # new negatives, same hidden edges
    assert not np.array_equal(other.test_negatives, split.test_negatives)


def _undirected(graph) -> set[tuple[str, str]]:
    rows, cols = graph.adjacency.nonzero()
    return {tuple(sorted(pair)) for pair in zip(graph.genes[rows], graph.genes[cols])}


def test_hidden_edges_are_absent_from_every_pretraining_graph(tmp_path):
    genes = [f"g{i}" for i in range(30)]
    rng = np.random.default_rng(1)
    shared = [("g0", "g1"), ("g2", "g3"), ("g4", "g5")]  # in both types' networks and the PPI
    graphs = tmp_path / "graphs.zarr"
    with GraphStore.create(graphs) as store:
        for cell_type in ("A", "B"):
            pairs = {tuple(genes[i] for i in rng.choice(30, 2, replace=False)) for _ in range(60)}
            pairs = sorted((pairs - {p[::-1] for p in shared}) | set(shared))
            table = pd.DataFrame(pairs, columns=["regulator", "target"])
            table["exclusion"] = rng.uniform(0, 0.05, len(table))
            store.add_graph(f"net_{cell_type}", table, kind="consensus", cell_type=cell_type)
        ppi = pd.DataFrame([p[::-1] for p in shared] + [("g7", "g8")], columns=["gene_a", "gene_b"])
        store.add_graph("ppi", ppi, kind="ppi", directed=False)
        union = store.get("net_A").adjacency.nonzero()  # per-cell graphs over net_A's edges
        n_edges = len(union[0])
        store.add_assignment(
            "per_cell",
            graphs=[np.arange(n_edges), np.arange(0, n_edges, 2)],
            cells=["c0", "c1", "c2"],
            graph_index=np.array([0, 1, 0]),
            weights=np.ones((3, 1)),
            cell_types=["A"],
            edge_rows=union[0],
            edge_cols=union[1],
            label_cells=["r0", "r1"],
        )
    before = store_digest(graphs)
    held = hold_out_edges(graphs, tmp_path / "pretraining.zarr", fraction=0.3, seed=2)
    assert store_digest(graphs) == before  # the source is only read
    held_pairs = {tuple(sorted(p)) for p in held.itertuples(index=False)}
    with GraphStore.open(graphs) as source:
        networks = [_undirected(source.get(name)) for name in ("net_A", "net_B")]
        pooled = networks[0] | networks[1]
        assert held_pairs <= pooled and len(held_pairs) == round(0.3 * len(pooled))
        with GraphStore.open(tmp_path / "pretraining.zarr") as copy:
            assert list(copy.genes) == list(source.genes)
            assert set(copy.list()["name"]) == set(source.list()["name"])
            for name in source.list()["name"]:
                kept = _undirected(copy.get(name))
                assert not kept & held_pairs  # in no graph, either direction
                assert kept == _undirected(source.get(name)) - held_pairs
                assert copy.info(name)["kind"] == source.info(name)["kind"]
            table = copy.get("net_B").to_dataframe()
            original = source.get("net_B").to_dataframe().set_index(["source", "target"])
            assert np.array_equal(  # edge attributes travel with their edges
                table["exclusion"], original.loc[list(zip(table.source, table.target)), "exclusion"]
            )
            a, b = source.get_assignment("per_cell"), copy.get_assignment("per_cell")
            assert list(b.label_cells) == ["r0", "r1"]  # whose labels it read, still known
            for cell in range(3):
                rows, cols = b.cell_graph(cell)
                seen = {tuple(sorted(p)) for p in zip(copy.genes[rows], copy.genes[cols])}
                rows, cols = a.cell_graph(cell)
                whole = {tuple(sorted(p)) for p in zip(source.genes[rows], source.genes[cols])}
                assert seen == whole - held_pairs
    write_held_out(held, tmp_path / "held.tsv")
    assert read_held_out(tmp_path / "held.tsv").equals(held)
    again = hold_out_edges(graphs, tmp_path / "again.zarr", fraction=0.3, seed=2)
    assert again.equals(held)  # seeded
    with pytest.raises(ValueError, match="must be a new path"):
        hold_out_edges(graphs, graphs, overwrite=True)
    assert store_digest(graphs) == before


def test_graph_attention_reads_neighbours_only():
    torch.manual_seed(0)
    network = GraphAttention(4, d_hidden=8, heads=2)
    x = torch.randn(5, 4)
    path = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])  # 0 - 1 - 2; 3 and 4 alone
    edges = torch.cat([path, torch.arange(5).repeat(2, 1)], dim=1)
    changed = x.clone()
    changed[4] += 1.0
    before, after = network(x, edges), network(changed, edges)
    torch.testing.assert_close(before[:4], after[:4])  # two hops from 0, 1, 2, 3: never 4
    assert not torch.allclose(before[4], after[4])


def test_cli_evaluate_edges(setup, tmp_path, capsys):
    runs, adata = setup
    adata.write_h5ad(tmp_path / "data.h5ad")
    common = [str(tmp_path / "data.h5ad"), "--model", str(runs["diffusion"]), "--store"]
    common += [str(runs["graphs"]), "--quiet", "--max-length", "100", "--n-pcs", "10"]
    common += ["--cell-types", TYPES[0], "--splits", "1", "--epochs", "5"]
    held = tmp_path / "held.tsv"
    code = gremln_main(
        ["hold-out-edges", str(runs["graphs"]), str(tmp_path / "pre.zarr"), "--edges", str(held)]
        + ["--cell-types", TYPES[0]]
    )
    assert code == 0 and json.loads(capsys.readouterr().out)["held_out_pairs"] > 0
    common += ["--held-out", str(held)]
    code = gremln_main(
        ["evaluate", "edges", *common, "--cell-type-key", KEY, "--out", str(tmp_path / "e")]
    )
    assert code == 0, capsys.readouterr().err
    assert "auroc" in capsys.readouterr().out
    assert list(json.loads((tmp_path / "e" / "edges.json").read_text())["models"]) == [
        "gremln",
        "pca",
    ]
    code = gremln_main(["evaluate", "edges", *common, "--cell-type-key", "cluster", "--out", "x"])
    assert code == 2 and "no obs column 'cluster'" in capsys.readouterr().err
    (tmp_path / "bad.tsv").write_text("source\ttarget\nA\tB\n")
    bad = [*common[:-1], str(tmp_path / "bad.tsv"), "--cell-type-key", KEY, "--out", "x"]
    code = gremln_main(["evaluate", "edges", *bad])
    assert code == 2 and "bad.tsv: held-out edges need columns gene_a and gene_b" in (
        capsys.readouterr().err
    )
