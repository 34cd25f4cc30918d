"""GREmLN's evaluations on pbmc68k_reduced, end to end on the CPU, beside the vanilla-attention
ablation and the PCA baseline.

Steps (every seed fixed, so a rerun gives the same table on the same machine):

1. ``netinfer.datasets.pbmc68k_counts`` (700 cells x 765 genes, 10 types in ``bulk_labels``) and
   cell-type networks from it (``celltype_networks`` with the README's demo settings; types of
   fewer than ``min_cells`` cells get none, which leaves 7 types with a network).
2. ``gremln prepare`` of the cells of those 7 types (each cell paired with its type's network),
   then pre-training of two models with the same settings and steps: GREmLN (diffusion
   attention) and the vanilla-attention ablation.
3. ``evaluate_celltype`` and ``evaluate_expression`` on all 700 cells (all 10 types), three
   random splits. The cells' graphs come from the kNN integration against each split's training
   cells (the test cells' labels are never read); the vanilla model uses no graph.

Usage: python bench/gremln_evaluations.py [--steps N] [--work DIR] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import anndata as ad

from gremln.cellstore import prepare
from gremln.evaluate.celltype import evaluate_celltype
from gremln.evaluate.expression import evaluate_expression
from gremln.train import TrainConfig, train
from netinfer.datasets import human_tfs, pbmc68k_counts
from netinfer.pipeline import celltype_networks
from netinfer.store import GraphStore

KEY = "bulk_labels"
MODEL = dict(d_model=64, n_layers=2, n_heads=4, batch_size=16, max_length=256, lr=1e-3)


def networks_and_cells(work: Path) -> tuple[Path, Path, Path]:
    """The counts, the graph store with the cell-type networks, and the cell store."""
    counts = pbmc68k_counts()
    counts.write_h5ad(work / "pbmc68k.h5ad")
    graphs = work / "graphs.zarr"
    GraphStore.create(graphs, overwrite=True).close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # types too small for a network: skipped
        result = celltype_networks(
            counts,
            human_tfs(),
            cell_type_key=KEY,
            min_counts=100,
            min_genes=50,
            trim=None,
            min_cells=30,
            resolution=0.5,
            metacells=5,
            resamples=20,
            store=graphs,
        )
    with_network = counts[counts.obs[KEY].isin(result.networks)].copy()
    with_network.write_h5ad(work / "pretrain.h5ad")
    prepare(
        work / "pretrain.h5ad",
        work / "cells.zarr",
        graphs_path=graphs,
        cell_type_key=KEY,
        min_counts=100,
        max_counts=10**6,
        trim=None,
        min_genes=50,
        n_bins=11,
    )
    edges = {cell_type: len(network) for cell_type, network in result.networks.items()}
    print(f"networks (edges per type): {edges}")
    return work / "pbmc68k.h5ad", graphs, work / "cells.zarr"


def pretrain(cells: Path, graphs: Path, out: Path, *, attention: str, steps: int) -> dict:
    config = TrainConfig(
        cells=str(cells),
        graphs=str(graphs),
        out=str(out),
        attention=attention,
        **MODEL,
        max_steps=steps,
        num_workers=0,
        log_every=max(1, steps // 4),
        eval_every=steps,
        checkpoint_every=steps,
    )
    return train(config)


def table(celltype: dict, expression: dict) -> str:
    """One markdown row per model: each metric's mean ± std over the splits."""
    columns = [
        (celltype, "macro_f1"),
        (celltype, "precision"),
        (celltype, "recall"),
        (celltype, "accuracy"),
        (expression, "r2"),
    ]
    header = "| model | " + " | ".join(f"{metric}" for _, metric in columns) + " |"
    lines = [header, "|---" + "|---:" * len(columns) + "|"]
    for name in celltype["models"]:
        values = [result["models"][name][metric] for result, metric in columns]
        cells = [f"{v['mean']:.3f} ± {v['std']:.3f}" for v in values]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="pre-training steps per model")
    parser.add_argument("--work", default="bench-output/gremln-evaluations", metavar="DIR")
    parser.add_argument("--out", metavar="FILE.md", help="also write the table here")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    counts_path, graphs, cells = networks_and_cells(work)
    print(f"networks and cell store: {time.perf_counter() - started:.0f} s")
    runs = {}
    for name, attention in (("gremln", "diffusion"), ("vanilla", "vanilla")):
        begun = time.perf_counter()
        summary = pretrain(cells, graphs, work / name, attention=attention, steps=args.steps)
        runs[name] = work / name
        held_out = summary.get("val_seen", {})
        print(
            f"pre-trained {name}: {args.steps} steps in {time.perf_counter() - begun:.0f} s, "
            f"val_seen loss {held_out.get('loss', float('nan')):.3f} "
            f"(unigram entropy {held_out.get('unigram_entropy', float('nan')):.3f})"
        )
    adata = ad.read_h5ad(counts_path)
    # the integration notes, per split, the types without edges: the networks line above says it
    warnings.filterwarnings("ignore", message=".*no consensus network, or an empty one")
    common = dict(vanilla=runs["vanilla"], cell_type_key=KEY, progress=False)
    begun = time.perf_counter()
    celltype = evaluate_celltype(
        adata, runs["gremln"], graphs, out_dir=work / "evaluations", **common
    )
    expression = evaluate_expression(
        adata, runs["gremln"], graphs, out_dir=work / "evaluations", **common
    )
    print(f"evaluations: {time.perf_counter() - begun:.0f} s")
    total = time.perf_counter() - started
    text = (
        f"pbmc68k_reduced: {adata.n_obs} cells, {len(celltype['data']['cell_types'])} types; "
        f"{args.steps} pre-training steps per model; total {total:.0f} s\n\n"
        + table(celltype, expression)
    )
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
