"""bench/graph_ablation.py: the win rule, the degree-preserving shuffle, and a smoke run of the
whole experiment (small counts drawn from a known network, without SERGIO)."""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from gremln.cellstore import CellStore


@pytest.fixture(scope="module")
def ablation():
    path = Path(__file__).parents[1] / "bench" / "graph_ablation.py"
    spec = importlib.util.spec_from_file_location("graph_ablation", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["graph_ablation"] = module  # worker processes unpickle its functions by name
    spec.loader.exec_module(module)
    return module


def test_a_condition_wins_only_by_more_than_the_largest_spread(ablation):
    losses = {"a": [1.00, 1.02], "b": [1.10, 1.11], "c": [1.20, 1.25]}
    assert ablation.winner(losses) == ("a", pytest.approx(0.05))  # 0.10 ahead > spread 0.05
    losses["c"] = [1.05, 1.16]  # spread 0.11 now exceeds a's lead over b
    assert ablation.winner(losses)[0] is None


def test_shuffle_keeps_every_degree_and_makes_no_loops_or_duplicates(ablation):
    rng = np.random.default_rng(0)
    genes = [f"g{i}" for i in range(40)]
    pairs = {(genes[a], genes[b]) for a, b in rng.integers(0, 40, (150, 2)) if a != b}
    edges = pd.DataFrame(sorted(pairs), columns=["regulator", "target"])
    shuffled = ablation.degree_preserving_shuffle(edges, seed=1)
    assert Counter(shuffled["regulator"]) == Counter(edges["regulator"])
    assert Counter(shuffled["target"]) == Counter(edges["target"])
    assert (shuffled["regulator"] != shuffled["target"]).all()
    assert not shuffled.duplicated().any()
    kept = len(set(map(tuple, shuffled.to_numpy())) & pairs) / len(pairs)
    assert kept < 0.3  # most edges moved


def _toy_counts(seed=0, n_types=4, cells_per_type=40, n_genes=30):
    """Counts whose targets follow their regulators along a known network."""
    rng = np.random.default_rng(seed)
    genes = [f"G{i}" for i in range(n_genes)]
    regulators = np.arange(6)
    truth = [(genes[r], genes[t]) for t in range(6, n_genes) for r in rng.choice(regulators, 2)]
    truth = pd.DataFrame(sorted(set(truth)), columns=["regulator", "target"])
    levels = np.zeros((n_types * cells_per_type, n_genes))
    types = np.repeat(np.arange(n_types), cells_per_type)
    levels[:, :6] = rng.normal(rng.normal(0, 1, (n_types, 6))[types], 0.3)
    index = {g: i for i, g in enumerate(genes)}
    for regulator, target in truth.itertuples(index=False):
        levels[:, index[target]] += levels[:, index[regulator]]
    counts = rng.poisson(np.exp(1.0 + 0.5 * levels))
    obs = pd.DataFrame({"cell_type": [f"type{t}" for t in types]})
    obs.index = [f"c{i}" for i in range(len(types))]
    return ad.AnnData(counts.astype(np.float32), obs=obs, var=pd.DataFrame(index=genes)), truth


def test_smoke_run_trains_every_condition_and_writes_table_and_figure(ablation, tmp_path):
    adata, truth = _toy_counts()
    size = dict(
        steps=2,
        eval_every=1,
        eval_cells=16,
        model=dict(d_model=16, n_layers=1, n_heads=2, batch_size=8, max_length=32, lr=1e-3),
    )
    conditions = ["true", "shuffle", "vanilla", "adapter true"]
    result = ablation.run_experiment(
        adata, truth, tmp_path, conditions=conditions, size=size, seeds=[0, 1], beta=1.0
    )
    rows = {row["condition"]: row for row in result["rows"]}
    assert list(rows) == conditions
    for name, row in rows.items():
        mean, spread = row["val_seen loss"]
        assert np.isfinite(mean) and spread >= 0
        assert row["gene_entropy"][0] > 0 and row["unigram_entropy"][0] > 0
        assert len(row["steps to vanilla's loss"]) == 2
        if name != "vanilla":  # the graph changes the output, at init and after training
            assert row["output change (init)"][0] > 0 and row["output change (trained)"][0] > 0
    assert rows["vanilla"]["steps to vanilla's loss"] == [2, 2]
    assert "output change (init)" not in rows["vanilla"]
    assert rows["true"]["query change"][0] > 0 and "query change" not in rows["vanilla"]
    assert result["edges"]["truth"] == result["edges"]["shuffle"] < len(truth)  # 15% held out
    assert result["figure"].stat().st_size > 10_000
    assert ("won" in result["text"]) and "| true |" in result["text"]


def test_downstream_evaluations_of_every_condition_in_two_worker_processes(ablation, tmp_path):
    """Zero-shot cell types (types never pre-trained on), held-out edges and knock-outs, on every
    trained model, with the runs in two one-thread worker processes."""
    adata, truth = _toy_counts(n_types=6)
    kept = adata.obs["cell_type"].isin(["type4", "type5"]).to_numpy()
    kept_out, adata = adata[kept].copy(), adata[~kept].copy()
    knockouts = _toy_counts(seed=1, n_types=3)[0]
    labels = {"type0": "control", "type1": "G0", "type2": "G1"}
    knockouts.obs["perturbation"] = knockouts.obs["cell_type"].map(labels)
    size = dict(
        steps=2,
        eval_every=2,
        eval_cells=16,
        model=dict(d_model=16, n_layers=1, n_heads=2, batch_size=8, max_length=32, lr=1e-3),
    )
    result = ablation.run_experiment(
        adata,
        truth,
        tmp_path,
        conditions=["true", "vanilla"],
        size=size,
        seeds=[0],
        beta=1.0,
        dependence=False,
        evaluate=True,
        kept_out=kept_out,
        knockouts=knockouts,
        jobs=2,
    )
    rows = {row["condition"]: row for row in result["rows"]}
    assert list(rows) == ["true", "vanilla", "lasso (baseline)", "pca (baseline)"]
    columns = ["zero-shot macro-F1", "held-out edge AUROC", "perturbation accuracy"]
    for name in ("true", "vanilla"):
        for column in [*columns, "perturbation accuracy (fine-tuned)"]:
            assert 0.0 <= rows[name][column][0] <= 1.0
    assert set(rows["pca (baseline)"]) == {"condition", *columns}
    # the held-out pairs are in the full truth and in no pre-training graph
    held = pd.read_csv(tmp_path / "held_out.tsv", sep="\t")
    assert result["held_out_pairs"] == len(held) > 0
    from netinfer.store import GraphStore

    with GraphStore.open(tmp_path / "graphs.zarr") as store:
        for name in ("truth", "shuffle"):
            table = store.get(name).to_dataframe()
            seen = {frozenset(p) for p in zip(table["source"], table["target"])}
            assert not seen & {frozenset(p) for p in zip(held["gene_a"], held["gene_b"])}
    assert result["edges"]["truth"] == len(truth) - len(held)
    # every model pre-trained on the cells of the types it was given, none of the kept-out ones
    store = CellStore.open(tmp_path / "cells-truth.zarr")
    assert not set(store.obs["cell_type"]) & {"type4", "type5"}
