"""The edge evaluation: metrics, baselines, figures, reruns, hidden edges kept from the model."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pytest
import torch
from test_embed import KEY, pretrained_models

from cli.gremln import main as gremln_main
from gremln.embed import load_model
from gremln.evaluate.edges import (
    VISIBLE_GRAPH,
    GraphAttention,
    edge_contexts,
    evaluate_edges,
    split_edges,
    undirected_pairs,
)
from netinfer.store import GraphStore

FAST = {"max_length": 100}  # short sequences: quick forward passes
PNG = b"\x89PNG\r\n\x1a\n"
TYPES = ["CD56+ NK", "CD8+/CD45RA+ Naive Cytotoxic"]  # two small types: quick
OPTIONS = dict(cell_type_key=KEY, cell_types=TYPES, n_pcs=10, epochs=20, progress=False)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    runs = pretrained_models(tmp_path_factory.mktemp("edges"), attentions=("diffusion", "vanilla"))
    return runs, ad.read_h5ad(runs["counts"])


def test_edges_evaluation_reports_every_model_and_reruns_identically(setup, tmp_path):
    runs, adata = setup
    args = (adata, load_model(runs["diffusion"]), runs["graphs"])
    options = dict(vanilla=runs["vanilla"], embed_options=FAST, **OPTIONS)
    result = evaluate_edges(*args, out_dir=tmp_path / "a", **options)
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
    assert set(result["cell_types"]["gremln"]) == set(TYPES)
    written = (tmp_path / "a" / "edges.json").read_text()
    assert json.loads(written) == result
    for figure in result["figures"]:
        assert (tmp_path / "a" / figure).read_bytes()[:8] == PNG
    with GraphStore.open(runs["graphs"]) as store:
        assert VISIBLE_GRAPH not in store  # the temporary visible graph is removed
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
        out_dir=tmp_path,
        n_splits=2,
        embed_options={**FAST, "batch_size": 1000, "hook": batches.append},  # a batch per split
        **(OPTIONS | {"cell_types": TYPES[:1], "epochs": 2}),
    )
    (context,), _ = edge_contexts(
        adata, runs["graphs"], KEY, known_genes=set(model.vocabulary.genes), cell_types=TYPES[:1]
    )
    assert len(batches) == 2
    for split, batch in enumerate(batches):
        pairs = split_edges(context.pairs, len(context.genes), seed=0, split=split)
        names = {tuple(context.genes[p]) for p in pairs.visible}
        hidden = {tuple(context.genes[p]) for p in pairs.hidden}
        rows, sources, targets = batch["edge_index"].long().numpy()
        tokens = batch["gene_ids"].numpy()
        genes = np.asarray(model.vocabulary.genes)
        seen = {
            tuple(sorted(pair))
            for pair in zip(genes[tokens[rows, sources] - 3], genes[tokens[rows, targets] - 3])
        }
        assert seen and seen <= names  # the model sees visible edges only
        assert not seen & hidden


def test_split_edges_hides_a_fraction_and_draws_true_negatives():
    rng = np.random.default_rng(0)
    pairs = undirected_pairs(rng.integers(0, 40, 200), rng.integers(0, 40, 200))
    split = split_edges(pairs, 40, hidden_fraction=0.15, seed=3, split=1)
    assert len(split.hidden) == round(0.15 * len(pairs))
    assert len(split.visible) + len(split.hidden) == len(pairs)
    edges = set(map(tuple, pairs))
    negatives = list(map(tuple, np.concatenate([split.train_negatives, split.test_negatives])))
    assert len(set(negatives)) == len(negatives) == len(pairs)  # disjoint, one per edge
    assert not set(negatives) & edges and all(i < j for i, j in negatives)
    assert set(map(tuple, split.hidden)) | set(map(tuple, split.visible)) == edges
    again = split_edges(pairs, 40, hidden_fraction=0.15, seed=3, split=1)
    assert np.array_equal(again.test_negatives, split.test_negatives)
    other = split_edges(pairs, 40, hidden_fraction=0.15, seed=3, split=2)
    assert not np.array_equal(other.hidden, split.hidden)


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
