"""GREmLN pre-training: learning on real data, exact resume, DDP (gloo, 2 processes), the CLI."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from cli.gremln import main as gremln_main
from gremln.cellstore import CellStore, prepare
from gremln.data import CellDataset, ShardSpec
from gremln.model import GremlnConfig, GremlnModel
from gremln.train import NonFiniteLoss, TrainConfig, gene_entropy, lr_factor, train

TINY = dict(d_model=32, n_layers=2, n_heads=4, batch_size=16, num_workers=0, device="cpu")


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """pbmc68k counts, cell-type networks from the network pipeline, and the cell store."""
    from netinfer.datasets import human_tfs, pbmc68k_counts
    from netinfer.pipeline import celltype_networks
    from netinfer.store import GraphStore

    folder = tmp_path_factory.mktemp("train")
    graphs = folder / "graphs.zarr"
    GraphStore.create(graphs).close()
    adata = pbmc68k_counts()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # types too small for a network: skipped
        result = celltype_networks(
            adata,
            human_tfs(),
            cell_type_key="bulk_labels",
            min_counts=100,
            min_genes=50,
            trim=None,
            min_cells=30,
            resolution=0.5,
            metacells=5,
            resamples=10,
            store=graphs,
        )
    assert sum(len(edges) for edges in result.networks.values()) > 20
    adata[adata.obs["bulk_labels"].isin(result.networks)].copy().write_h5ad(folder / "pbmc.h5ad")
    prepare(
        folder / "pbmc.h5ad",
        folder / "cells.zarr",
        graphs_path=graphs,
        cell_type_key="bulk_labels",
        min_counts=100,
        max_counts=10**6,
        trim=None,
        min_genes=50,
        n_bins=11,
    )
    return folder / "cells.zarr", graphs


def _rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_pretraining_beats_the_unigram_entropy_on_held_out_cells(stores, tmp_path):
    cells, graphs = stores
    config = TrainConfig(
        cells=str(cells),
        graphs=str(graphs),
        out=str(tmp_path / "run"),
        **{**TINY, "d_model": 64},
        max_steps=300,
        lr=1e-3,
        log_every=50,
        eval_every=150,
    )
    summary = train(config)
    assert summary["step"] == 300 and summary["chebyshev_order"] == 3
    for split in ("val_seen", "val_unseen"):
        row = summary[split]
        # clearly below what a model that ignores its input reaches
        assert row["loss"] < row["unigram_entropy"] - 0.08, row
    rows = _rows(tmp_path / "run")
    assert list(rows[0]) == [
        "step",
        "split",
        "loss",
        "masked_acc",
        "lr",
        "cells_per_s",
        "unigram_entropy",
        "gene_entropy",
        "query_change",
    ]
    for row in rows:  # knowing the gene helps; the diffusion moves the queries (validation)
        assert float(row["gene_entropy"]) < float(row["unigram_entropy"])
        assert (row["query_change"] == "") == (row["split"] == "train")
        assert row["split"] == "train" or 0 <= float(row["query_change"]) < 0.2
    # held-out cells of the training types have edges among their genes: their queries move
    assert all(float(r["query_change"]) > 0 for r in rows if r["split"] == "val_seen")
    assert {(r["step"], r["split"]) for r in rows} >= {("150", "val_seen"), ("300", "val_unseen")}
    model = GremlnModel.from_pretrained(tmp_path / "run" / "model")
    assert model.vocabulary.genes == CellStore.open(cells).vocabulary.genes


def test_gene_entropy_against_a_hand_count():
    # 3 bins; training tokens: gene 7 in bins (0, 3, 1), gene 9 in (2, 0, 0), no other gene.
    # Training unigram with one pseudo-count per bin: (2+1, 3+1, 1+1) / (6 + 3) = (3, 4, 2) / 9.
    # p(b | g) = (C_gb + 3 u_b) / (C_g + 3):
    # gene 7, bin 1: (3 + 4/3) / 7 = 13/21; bin 2: (1 + 2/3) / 7 = 5/21
    # gene 9, bin 0: (2 + 1) / 5 = 3/5; gene 4 (never in training), bin 1: the unigram, 4/9
    reference = np.zeros((10, 3))
    reference[7] = [0, 3, 1]
    reference[9] = [2, 0, 0]
    genes, bins = np.array([7, 7, 9, 4]), np.array([1, 2, 0, 1])
    logs = math.log(13 / 21) + math.log(5 / 21) + math.log(3 / 5) + math.log(4 / 9)
    assert gene_entropy(genes, bins, reference) == pytest.approx(-logs / 4, abs=1e-15)
    # many training tokens: the gene's own distribution (3:1 over 2 bins), scored on the same mix
    many = np.zeros((6, 2))
    many[5] = [7500, 2500]
    targets = np.array([0, 0, 0, 1] * 250)
    plug_in = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert gene_entropy(np.full(targets.size, 5), targets, many) == pytest.approx(plug_in, abs=1e-3)
    assert gene_entropy(np.empty(0, int), np.empty(0, int), reference) == 0.0


def test_gene_bin_counts_count_the_split_tokens_of_all_or_of_sampled_cells(stores):
    cells = CellStore.open(stores[0])
    n_bins = cells.vocabulary.n_bins
    expected = np.zeros((len(cells.vocabulary), n_bins))
    train_rows = np.flatnonzero(cells.obs["split"].to_numpy() == "train")
    for i in train_rows:
        genes, bins = cells.cell(int(i))
        np.add.at(expected, (genes, bins), 1)
    np.testing.assert_array_equal(cells.gene_bin_counts("train"), expected)
    # cut as the loader cuts: the first max_length tokens of each cell
    cut = np.zeros_like(expected)
    for i in train_rows:
        genes, bins = cells.cell(int(i))
        np.add.at(cut, (genes[:50], bins[:50]), 1)
    np.testing.assert_array_equal(cells.gene_bin_counts("train", max_length=50), cut)
    assert cut.sum() < expected.sum()
    # a token budget below the store's size: whole cells, drawn from the split, reproducibly
    budget = int(cells.offsets[-1]) // 2
    sampled = cells.gene_bin_counts("train", max_tokens=budget, seed=3)
    assert 0 < sampled.sum() < expected.sum()
    assert (sampled <= expected).all()
    np.testing.assert_array_equal(
        sampled, cells.gene_bin_counts("train", max_tokens=budget, seed=3)
    )


def test_resume_continues_exactly(stores, tmp_path):
    cells, graphs = stores
    common = dict(cells=str(cells), graphs=str(graphs), **TINY, max_steps=6, log_every=3)
    common.update(eval_every=3, checkpoint_every=3, eval_cells=32)
    whole = tmp_path / "whole"
    train(TrainConfig(out=str(whole), **common))
    split = tmp_path / "split"
    assert train(TrainConfig(out=str(split), **common), until_step=3)["step"] == 3
    assert not (split / "model").exists()  # not finished: no final model yet
    with pytest.raises(FileExistsError, match="pass resume"):
        train(TrainConfig(out=str(split), **common))
    train(TrainConfig(out=str(split), **common), resume=True)
    a = torch.load(whole / "checkpoint.pt", weights_only=False)
    b = torch.load(split / "checkpoint.pt", weights_only=False)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["positions"] == b["positions"] and a["step"] == b["step"] == 6

    def comparable(rows):
        return [{k: v for k, v in r.items() if k != "cells_per_s"} for r in rows]

    assert comparable(_rows(whole)) == comparable(_rows(split))


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint(stores, tmp_path):
    cells, graphs = stores
    run = tmp_path / "run"
    config = TrainConfig(
        cells=str(cells),
        graphs=str(graphs),
        out=str(run),
        **TINY,
        max_steps=20,
        lr=1e30,
        warmup_fraction=0.0,
        grad_clip=1e30,
        checkpoint_every=1,
    )
    with pytest.raises(NonFiniteLoss, match="the loss is (nan|inf)") as raised:
        train(config)
    stopped_at = int(str(raised.value).split(":")[0].removeprefix("step "))
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert state["step"] == stopped_at - 1  # the last good state, intact
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_config_file_flags_and_errors(stores, tmp_path):
    cells, graphs = stores
    (tmp_path / "run.toml").write_text(f'cells = "{cells}"\nd_model = 48\nmax_steps = 7\n')
    config = TrainConfig.from_sources(
        tmp_path / "run.toml", graphs=str(graphs), out="x", max_steps=9, lr=None
    )
    assert (config.d_model, config.max_steps, config.lr) == (48, 9, 3e-4)  # flags override
    (tmp_path / "bad.toml").write_text("d_modle = 48\n")
    with pytest.raises(ValueError, match=r"bad.toml: unknown keys d_modle"):
        TrainConfig.from_sources(tmp_path / "bad.toml")
    with pytest.raises(ValueError, match="missing settings: graphs, out"):
        TrainConfig.from_sources(cells=str(cells))
    with pytest.raises(ValueError, match="attention must be one of"):
        TrainConfig(cells="c", graphs="g", out="o", attention="graph").model_config(10, 11)


def test_learning_rate_warms_up_then_anneals():
    factors = [lr_factor(s, total=100, warmup_fraction=0.1, start=1e-5) for s in range(101)]
    assert factors[0] == 1e-5 and factors[10] == 1.0 and factors[100] == 0.0
    assert all(a < b for a, b in zip(factors[:10], factors[1:11]))  # linear warm-up
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))  # then cosine down
    assert math.isclose(factors[55], 0.5, abs_tol=1e-12)


def test_model_outputs_packed_padded_and_saved(stores, tmp_path):
    cells, graphs = stores
    store = CellStore.open(cells)
    config = GremlnConfig(n_genes=len(store.vocabulary), n_bins=11, d_model=32, n_heads=4)
    torch.manual_seed(0)
    model = GremlnModel(config, store.vocabulary).eval()
    common = dict(split=None, batch_size=5, max_length=200)
    packed = next(iter(CellDataset(cells, graphs, layout="packed", **common)))
    padded = next(iter(CellDataset(cells, graphs, layout="padded", **common)))
    assert packed["edge_index"].shape[1] > 0
    with torch.no_grad():
        a, b = model(packed), model(padded)
    torch.testing.assert_close(a["hidden"], b["hidden"][~padded["padding_mask"]])
    torch.testing.assert_close(a["loss"], b["loss"])
    model.save_pretrained(tmp_path / "saved")
    loaded = GremlnModel.from_pretrained(tmp_path / "saved").eval()
    with torch.no_grad():
        assert torch.equal(loaded(packed)["hidden"], a["hidden"])
    # without edges the diffusion layer is vanilla attention, exactly
    vanilla = GremlnModel(GremlnConfig(**{**vars(config), "attention": "vanilla"})).eval()
    vanilla.load_state_dict(model.state_dict())
    no_edges = {**packed, "edge_index": packed["edge_index"][:, :0]}
    with torch.no_grad():
        assert torch.equal(model(no_edges)["hidden"], vanilla(no_edges)["hidden"])
        assert not torch.equal(model(packed)["hidden"], vanilla(packed)["hidden"])


def _ddp_gradients(rank: int, world_size: int, init: str, cells, graphs, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world_size)
    model = _seeded_model(cells)
    network = torch.nn.parallel.DistributedDataParallel(model)
    network(_first_batch(cells, graphs, rank, world_size))["loss"].backward()
    torch.save({n: p.grad for n, p in model.named_parameters()}, Path(out) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def _seeded_model(cells) -> GremlnModel:
    vocabulary = CellStore.open(cells).vocabulary
    torch.manual_seed(0)
    config = GremlnConfig(n_genes=len(vocabulary), n_bins=11, d_model=32, n_heads=4, dropout=0.0)
    return GremlnModel(config, vocabulary)


def _first_batch(cells, graphs, rank: int, world_size: int) -> dict:
    data = CellDataset(
        cells, graphs, shard=ShardSpec(rank, world_size), batch_size=6, layout="padded"
    )
    return next(iter(data))


def test_ddp_gradients_match_a_single_process(stores, tmp_path):
    cells, graphs = stores
    init = f"file://{tmp_path / 'rendezvous'}"
    args = (2, init, str(cells), str(graphs), str(tmp_path))
    torch.multiprocessing.spawn(_ddp_gradients, args=args, nprocs=2)
    # the same two shards' batches in one process: DDP averages their gradients
    model = _seeded_model(cells)
    expected = {}
    for rank in range(2):
        model.zero_grad()
        model(_first_batch(cells, graphs, rank, 2))["loss"].backward()
        for name, p in model.named_parameters():
            expected[name] = expected.get(name, 0) + p.grad / 2
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        for name, grad in expected.items():
            torch.testing.assert_close(got[name], grad, atol=1e-6, rtol=1e-4)


def test_torchrun_two_processes_through_the_cli(stores, tmp_path):
    cells, graphs = stores
    run = tmp_path / "run"
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"),
        *("--master_port", str(29500 + os.getpid() % 1000)),
        *("-m", "cli.gremln", "train", "--cells", str(cells), "--graphs", str(graphs)),
        *("--out", str(run), "--d-model", "32", "--layers", "1", "--heads", "4"),
        *("--batch-size", "8", "--max-steps", "4", "--log-every", "2", "--eval-every", "4"),
        *("--workers", "0", "--device", "cpu"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count('"step": 4') >= 1  # one summary, from rank 0
    rows = _rows(run)
    assert [(r["step"], r["split"]) for r in rows].count(("4", "train")) == 1  # one writer
    assert GremlnModel.from_pretrained(run / "model").config.n_layers == 1


def test_cli_errors(stores, tmp_path, capsys):
    cells, graphs = stores
    (tmp_path / "bad.toml").write_text("colour = 1\n")
    code = gremln_main(["train", "--config", str(tmp_path / "bad.toml")])
    assert code == 2 and "unknown keys colour" in capsys.readouterr().err
    args = ["train", "--cells", str(cells), "--graphs", str(graphs), "--out", str(tmp_path)]
    code = gremln_main([*args, "--resume", "--device", "cpu"])
    assert code == 2 and "no checkpoint to resume from" in capsys.readouterr().err


def test_the_four_graph_integrations_train(stores, tmp_path):
    import anndata as ad

    from gremln.train import GRAPH_INTEGRATIONS
    from netinfer.cellspecific import cellspecific_networks
    from netinfer.store import GraphStore

    cells, graphs = stores
    adata = ad.read_h5ad(cells.parent / "pbmc.h5ad")
    with GraphStore.open(graphs, "a") as store:
        cellspecific_networks(adata, store, cell_type_key="bulk_labels", overwrite=True)
    for name, (attention, adapter) in GRAPH_INTEGRATIONS.items():
        config = TrainConfig(
            cells=str(cells),
            graphs=str(graphs),
            out=str(tmp_path / name),
            **TINY,
            attention=attention,
            adapter=adapter,
            cellspecific="cellspecific" if adapter else None,
            coexpression_fraction=0.2,
            max_steps=2,
            eval_cells=16,
        )
        summary = train(config)
        assert math.isfinite(summary["val_seen"]["loss"]), name
        model = GremlnModel.from_pretrained(tmp_path / name / "model")
        assert (model.config.attention, model.config.adapter) == (attention, adapter)


def test_cli_graph_integration_sets_attention_and_adapter(stores, tmp_path, capsys):
    cells, graphs = stores
    args = ["train", "--cells", str(cells), "--graphs", str(graphs), "--device", "cpu"]
    args += ["--d-model", "16", "--heads", "2", "--layers", "1", "--max-steps", "1"]
    args += ["--workers", "0", "--batch-size", "4"]
    out = tmp_path / "adapter"
    assert gremln_main([*args, "--out", str(out), "--graph-integration", "adapter"]) == 0
    config = GremlnModel.from_pretrained(out / "model").config
    assert (config.attention, config.adapter) == ("vanilla", True)
    both = [*args, "--out", str(tmp_path / "x"), "--graph-integration", "both"]
    assert gremln_main([*both, "--attention", "vanilla"]) == 2
    assert "not both" in capsys.readouterr().err
