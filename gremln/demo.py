"""The end-to-end demo: counts -> cell-type networks -> graph store -> pre-training -> embeddings
-> cell-type evaluation, on scanpy's bundled pbmc68k_reduced (700 PBMCs, 10 cell types).

Every stage is the library call the corresponding command makes; the settings are the small ones
that fit the data (700 cells) and a few CPU minutes. ``run_demo`` returns (and ``gremln demo``
prints) the time of each stage, the network sizes, where the loss curve is, and the macro-F1 of
GREmLN's embeddings next to the PCA baseline's.
"""

from __future__ import annotations

import csv
import os
import shutil
import time
import warnings
from pathlib import Path

CELL_TYPE_KEY = "bulk_labels"


def run_demo(out_dir: str | os.PathLike[str], *, steps: int = 600, progress: bool = True) -> dict:
    """Run the whole pipeline on the bundled data into ``out_dir``.

    Parameters
    ----------
    out_dir
        Created if needed; receives the data, ``graphs.zarr``, ``cells.zarr``, the training run
        ``run/``, ``embeddings.h5ad``, ``evaluation/`` and ``loss_curve.png``.
    steps
        Pre-training steps (600: about two minutes on 2 cores).
    progress
        Show progress bars.

    Returns
    -------
    dict
        ``stages`` (seconds each), ``networks`` (edges per cell type), ``train`` (the last
        validation metrics), ``macro_f1`` (per model: mean and std), and the output paths.
    """
    import anndata as ad

    from gremln.cellstore import prepare
    from gremln.embed import embed
    from gremln.evaluate.celltype import evaluate_celltype
    from gremln.train import TrainConfig, train
    from netinfer.datasets import write_example
    from netinfer.io import read_regulators
    from netinfer.pipeline import celltype_networks
    from netinfer.store import GraphStore

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for product in ("cells.zarr", "run", "evaluation"):  # a rerun starts afresh
        shutil.rmtree(out / product, ignore_errors=True)
    stages: dict[str, float] = {}

    def stage(name: str, started: float) -> None:
        stages[name] = round(time.perf_counter() - started, 1)

    started = time.perf_counter()
    counts_path, tfs_path = write_example(out)
    adata = ad.read_h5ad(counts_path)
    stage("example data", started)

    started = time.perf_counter()
    graphs = out / "graphs.zarr"
    GraphStore.create(graphs, overwrite=True).close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # types too small for a network are skipped
        networks = celltype_networks(
            adata,
            read_regulators(tfs_path),
            cell_type_key=CELL_TYPE_KEY,
            min_counts=100,
            min_genes=50,
            trim=None,
            min_cells=30,
            resolution=0.5,
            metacells=5,
            store=graphs,
            progress=progress,
        ).networks
    stage("cell-type networks", started)

    started = time.perf_counter()
    # cells of the types that got a network with edges (the others are too few for one, or
    # their clusters agreed on no edge): pre-training sees graphs, and the integration of the
    # evaluation's cells draws on them
    with_edges = [cell_type for cell_type, network in networks.items() if len(network)]
    kept = adata[adata.obs[CELL_TYPE_KEY].isin(with_edges)].copy()
    kept_path = out / "pbmc68k_with_networks.h5ad"
    kept.write_h5ad(kept_path)
    cells = out / "cells.zarr"
    prepare(
        kept_path,
        cells,
        graphs_path=graphs,
        cell_type_key=CELL_TYPE_KEY,
        min_counts=100,
        max_counts=10**6,
        trim=None,
        min_genes=50,
        n_bins=11,
        progress=progress,
    )
    stage("cell store", started)

    started = time.perf_counter()
    run = out / "run"
    config = TrainConfig(
        cells=str(cells),
        graphs=str(graphs),
        out=str(run),
        d_model=64,
        n_layers=2,
        n_heads=4,
        batch_size=16,
        num_workers=0,
        max_steps=steps,
        lr=1e-3,
        log_every=50,
        eval_every=max(1, steps // 4),
        checkpoint_every=steps,
        device="cpu",
    )
    trained = train(config)
    curve = plot_loss_curve(run / "metrics.csv", out / "loss_curve.png")
    stage("pre-training", started)

    started = time.perf_counter()
    embedded = embed(
        kept,
        run / "model",
        graphs,
        reference=kept,
        cell_type_key=CELL_TYPE_KEY,
        device="cpu",
        progress=progress,
    )
    embedded.write_h5ad(out / "embeddings.h5ad")
    stage("embeddings", started)

    started = time.perf_counter()
    result = evaluate_celltype(
        kept,
        run / "model",
        graphs,
        cell_type_key=CELL_TYPE_KEY,
        out_dir=out / "evaluation",
        progress=progress,
    )
    stage("cell-type evaluation", started)
    return {
        "stages": stages,
        "total_s": round(sum(stages.values()), 1),
        "networks": {cell_type: len(edges) for cell_type, edges in networks.items()},
        "train": {split: trained.get(split) for split in ("val_seen", "val_unseen")},
        "macro_f1": {name: m["macro_f1"] for name, m in result["models"].items()},
        "outputs": {
            "graphs": str(graphs),
            "cells": str(cells),
            "model": str(run / "model"),
            "metrics": str(run / "metrics.csv"),
            "loss_curve": str(curve),
            "embeddings": str(out / "embeddings.h5ad"),
            "evaluation": str(out / "evaluation"),
        },
    }


def plot_loss_curve(metrics_csv: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """Plot the loss of every split in a run's ``metrics.csv``, with the unigram and per-gene
    entropies (the losses of a model that ignores its input, and of one that knows only the
    masked gene)."""
    from gremln.evaluate import new_figure

    with open(metrics_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    figure = new_figure(figsize=(6, 4))
    axes = figure.subplots()
    for split in ("train", "val_seen", "val_unseen"):
        mine = [r for r in rows if r["split"] == split]
        if mine:
            steps = [int(r["step"]) for r in mine]
            axes.plot(steps, [float(r["loss"]) for r in mine], marker="o", label=split)
    held_out = [r for r in rows if r["split"] == "val_seen"]
    if held_out:
        for column, style in (("unigram_entropy", "--"), ("gene_entropy", ":")):
            label = column.replace("_", " ").replace("gene", "per-gene")
            axes.axhline(float(held_out[-1][column]), color="grey", linestyle=style, label=label)
    axes.set_xlabel("step")
    axes.set_ylabel("masked-bin cross-entropy (nats)")
    axes.legend()
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    return path
