"""GREmLN's evaluations on pbmc68k_reduced and on a simulated Perturb-seq data set, end to end on
the CPU, beside the vanilla-attention ablation and the baselines.

Steps (every seed fixed, so a rerun gives the same tables on the same machine):

1. ``netinfer.datasets.pbmc68k_counts`` (700 cells x 765 genes, 10 types in ``bulk_labels``) and
   cell-type networks from it (``celltype_networks`` with the README's demo settings; types of
   fewer than ``min_cells`` cells get none, which leaves 7 types with a network). Then, before
   any pre-training, ``hold_out_edges``: 15% of the networks' gene pairs (pooled over types) are
   held out, and a copy of the graph store without them in any graph is what pre-training
   reads; the edges evaluation hides exactly those pairs.
2. ``gremln prepare`` of the cells of those 7 types (each cell paired with its type's network in
   the pre-training store), then pre-training of the four ``--graph-integration`` variants with
   the same data, settings and steps: ``gremln`` (diffusion attention), ``vanilla`` (none: the
   ablation), ``adapter`` (GRNFormer's structure adapter over the cell's graph, vanilla
   attention) and ``both``.
3. ``evaluate_all`` on all 700 cells (all 10 types), three random splits: celltype and
   expression (the cells' graphs come from the kNN integration against each split's training
   cells, whose labels alone are read; the vanilla model uses no graph, the other three read
   the same graphs) and edges (the types' networks with at least 10 edges among expressed
   genes, 15% hidden per seed).
4. The simulated data (``simulate.sergio_knockouts``): SERGIO on a RegNetwork sub-network,
   control cells and knock-outs of the 4 master regulators with the most targets. The knocked-out
   genes are removed from every cell (controls included: ``without_perturbed_genes``), so that
   only downstream effects tell the knock-outs apart, and 15% of the true network's edges are
   held out of pre-training as above. The four variants are pre-trained on all its cells with
   the true network less those edges as every cell's graph (no labels are read in
   pre-training), then ``evaluate_all`` with ``--cell-type-key
   perturbation`` (celltype: which condition, control included), the true network as the
   control cells' network for edges, and the perturbation evaluation (which gene was knocked
   out). Every cell gets the true network as its graph (``ppi:truth``), so no evaluation reads
   a test cell's label.

Usage: python bench/gremln_evaluations.py [--steps N] [--sim-steps N] [--work DIR] [--out FILE.md]
       [--reuse]
"""

from __future__ import annotations

import argparse
import csv
import time
import warnings
from pathlib import Path

import anndata as ad
from simulate import sergio_knockouts

from gremln.cellstore import prepare
from gremln.evaluate.all import evaluate_all
from gremln.evaluate.edges import hold_out_edges, write_held_out
from gremln.evaluate.perturbation import without_perturbed_genes
from gremln.train import GRAPH_INTEGRATIONS, TrainConfig, train
from netinfer.datasets import human_tfs, pbmc68k_counts
from netinfer.pipeline import celltype_networks
from netinfer.store import GraphStore

KEY = "bulk_labels"
MODEL = dict(d_model=64, n_layers=2, n_heads=4, batch_size=16, max_length=256, lr=1e-3)
SIM_QC = dict(min_counts=10, max_counts=10**6, trim=None, min_genes=5)  # 61 genes per cell
#: row name in the tables -> ``--graph-integration``
VARIANTS = {"gremln": "diffusion", "vanilla": "none", "adapter": "adapter", "both": "both"}


def held_out_store(graphs: Path, work: Path, prefix: str = "") -> tuple[Path, Path]:
    """Hold 15% of the networks' pairs out of pre-training: the pre-training store without them
    and the held-out pairs' file (rebuilt identically on every run: seeded)."""
    pretraining = work / f"{prefix}pretraining_graphs.zarr"
    held_out = hold_out_edges(graphs, pretraining, fraction=0.15, seed=0, overwrite=True)
    write_held_out(held_out, work / f"{prefix}held_out.tsv")
    print(f"{prefix or 'pbmc '}held out of pre-training: {len(held_out)} gene pairs")
    return pretraining, work / f"{prefix}held_out.tsv"


def networks_and_cells(work: Path, *, reuse: bool = False) -> tuple[Path, Path, Path, Path, Path]:
    """The counts, the graph store with the cell-type networks, the pre-training store and the
    held-out edges, and the cell store (kept from an earlier run with ``reuse``; the networks
    are rebuilt, identically)."""
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
    pretraining, held_out = held_out_store(graphs, work)
    with_network = counts[counts.obs[KEY].isin(result.networks)].copy()
    with_network.write_h5ad(work / "pretrain.h5ad")
    if not (reuse and (work / "cells.zarr").exists()):
        prepare(
            work / "pretrain.h5ad",
            work / "cells.zarr",
            graphs_path=pretraining,
            cell_type_key=KEY,
            min_counts=100,
            max_counts=10**6,
            trim=None,
            min_genes=50,
            n_bins=11,
        )
    edges = {cell_type: len(network) for cell_type, network in result.networks.items()}
    print(f"networks (edges per type): {edges}")
    return work / "pbmc68k.h5ad", graphs, pretraining, held_out, work / "cells.zarr"


def pretrain(
    cells: Path, graphs: Path, out: Path, *, integration: str, steps: int, reuse: bool = False
) -> dict:
    """Pre-train one variant; with ``reuse``, an earlier run's finished model in ``out`` is
    kept, and its last validation rows are returned as ``train`` would."""
    if reuse and (out / "model" / "config.json").exists():
        with open(out / "metrics.csv", newline="") as handle:
            rows = {row["split"]: row for row in csv.DictReader(handle)}
        return {
            split: {key: float(row[key]) for key in ("loss", "unigram_entropy")}
            for split, row in rows.items()
            if split.startswith("val")
        }
    attention, adapter = GRAPH_INTEGRATIONS[integration]
    config = TrainConfig(
        cells=str(cells),
        graphs=str(graphs),
        out=str(out),
        attention=attention,
        adapter=adapter,
        **MODEL,
        max_steps=steps,
        num_workers=0,
        log_every=max(1, steps // 4),
        eval_every=steps,
        checkpoint_every=steps,
    )
    return train(config)


def simulated_cells(work: Path, *, reuse: bool = False) -> tuple[Path, Path, Path, Path, Path]:
    """The SERGIO knock-out counts without the knocked-out genes, a graph store with the true
    network (as the control cells' consensus network, named ``truth``), the pre-training store
    and the held-out edges, and the cell store of every cell with the pre-training graph."""
    adata, truth = sergio_knockouts()
    adata, removed = without_perturbed_genes(adata, "perturbation")
    print(f"knocked-out genes removed from every cell: {removed}")
    adata.write_h5ad(work / "sergio_knockouts.h5ad")
    graphs = work / "sim_graphs.zarr"
    with GraphStore.create(graphs, overwrite=True) as store:
        store.add_graph("truth", truth, kind="consensus", cell_type="control")
    pretraining, held_out = held_out_store(graphs, work, prefix="sim_")
    if not (reuse and (work / "sim_cells.zarr").exists()):
        prepare(
            work / "sergio_knockouts.h5ad",
            work / "sim_cells.zarr",
            graphs_path=pretraining,
            cell_type_key="perturbation",
            graph_mode="ppi:truth",
            **SIM_QC,
            n_bins=11,
        )
    counts = adata.obs["perturbation"].value_counts().to_dict()
    print(
        f"simulated: {adata.n_obs} cells x {adata.n_vars} genes, {len(truth)} true edges, {counts}"
    )
    return work / "sergio_knockouts.h5ad", graphs, pretraining, held_out, work / "sim_cells.zarr"


def pretrain_variants(
    cells: Path, graphs: Path, work: Path, *, steps: int, prefix: str = "", reuse: bool = False
) -> dict:
    """The four graph integrations, trained alike; their run directories by name."""
    runs = {}
    for name, integration in VARIANTS.items():
        begun = time.perf_counter()
        runs[name] = work / f"{prefix}{name}"
        summary = pretrain(
            cells, graphs, runs[name], integration=integration, steps=steps, reuse=reuse
        )
        held_out = summary.get("val_seen", {})
        print(
            f"pre-trained {prefix}{name}: {steps} steps in {time.perf_counter() - begun:.0f} s, "
            f"val_seen loss {held_out.get('loss', float('nan')):.3f} "
            f"(unigram entropy {held_out.get('unigram_entropy', float('nan')):.3f})"
        )
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="pre-training steps per model")
    parser.add_argument(
        "--sim-steps", type=int, default=1000, help="pre-training steps on the simulated data"
    )
    parser.add_argument("--work", default="bench-output/gremln-evaluations", metavar="DIR")
    parser.add_argument("--out", metavar="FILE.md", help="also write the tables here")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep the cell stores and finished models of an earlier run in --work",
    )
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    counts_path, graphs, pretraining, held_out, cells = networks_and_cells(work, reuse=args.reuse)
    print(f"networks and cell store: {time.perf_counter() - started:.0f} s")
    runs = pretrain_variants(cells, pretraining, work, steps=args.steps, reuse=args.reuse)
    adata = ad.read_h5ad(counts_path)
    # the integration notes, per split, the types without edges: the networks line above says it
    warnings.filterwarnings("ignore", message=".*no consensus network, or an empty one")
    begun = time.perf_counter()
    pbmc = evaluate_all(
        adata,
        runs["gremln"],
        graphs,
        held_out=held_out,
        vanilla=runs["vanilla"],
        compare={name: runs[name] for name in ("adapter", "both")},
        cell_type_key=KEY,
        out_dir=work / "evaluations",
        progress=False,
    )
    pbmc_seconds = time.perf_counter() - begun
    contexts = {c["cell_type"]: c["edges"] for c in pbmc["edges"]["data"]["contexts"]}
    print(f"pbmc68k evaluations: {pbmc_seconds:.0f} s; edge contexts (edges): {contexts}")

    sim_counts, sim_graphs, sim_pretraining, sim_held_out, sim_cells = simulated_cells(
        work, reuse=args.reuse
    )
    sim_runs = pretrain_variants(
        sim_cells, sim_pretraining, work, steps=args.sim_steps, prefix="sim-", reuse=args.reuse
    )
    simulated = ad.read_h5ad(sim_counts)
    begun = time.perf_counter()
    sim = evaluate_all(
        simulated,
        sim_runs["gremln"],
        sim_graphs,
        held_out=sim_held_out,
        vanilla=sim_runs["vanilla"],
        compare={name: sim_runs[name] for name in ("adapter", "both")},
        cell_type_key="perturbation",
        graph_mode="ppi:truth",
        perturbation=simulated,
        perturbation_key="perturbation",
        out_dir=work / "sim-evaluations",
        progress=False,
    )
    sim_seconds = time.perf_counter() - begun
    total = time.perf_counter() - started
    text = (
        f"pbmc68k_reduced: {adata.n_obs} cells, {len(pbmc['celltype']['data']['cell_types'])} "
        f"types; {args.steps} pre-training steps per model; evaluations {pbmc_seconds:.0f} s\n\n"
        + (work / "evaluations" / "summary.md").read_text()
        + f"\nSERGIO knock-outs: {simulated.n_obs} cells x {simulated.n_vars} genes, "
        f"perturbations {sim['perturbation']['data']['perturbations']}; {args.sim_steps} "
        f"pre-training steps per model; evaluations {sim_seconds:.0f} s\n\n"
        + (work / "sim-evaluations" / "summary.md").read_text()
        + f"\ntotal {total:.0f} s"
    )
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
