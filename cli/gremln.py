"""The ``gremln`` command: argument parsing, progress and summaries; the work is library calls.

``prepare`` tokenizes cells into a cell store; ``train`` pre-trains the model (also under
``torchrun --nproc_per_node N -m cli.gremln train ...``); ``embed`` writes cell and gene
embeddings; ``evaluate celltype|expression|edges|all`` scores frozen embeddings against
baselines; ``finetune perturbation`` predicts which gene a cell's perturbation hit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

from rich.console import Console

from cli.options import add_qc_arguments, input_errors, qc_options
from netinfer.sc.validate import read_h5ad, require_obs_column


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gremln",
        description="GREmLN, a graph-aware transcriptomics foundation model: prepare cells, "
        "train, embed, evaluate.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="the whole pipeline on bundled pbmc68k_reduced, with a summary",
        description="Counts -> cell-type networks -> graph store -> cell store -> a small "
        "pre-training -> embeddings -> cell-type evaluation, on scanpy's bundled "
        "pbmc68k_reduced, written to DIR; prints the time per stage, network sizes, the loss "
        "curve file and macro-F1 next to the PCA baseline (a few minutes on 2 cores).",
    )
    demo.add_argument("directory", metavar="DIR")
    demo.add_argument("--steps", type=int, default=600, help="pre-training steps (default 600)")
    prepare = commands.add_parser(
        "prepare",
        help="tokenize counts into a cell store (rank bins, vocabulary, splits, graph keys)",
        description="QC (the paper's defaults), normalization to 1e6 and log1p, per-cell rank "
        "bins of the expressed genes, and each cell's graph in the graph store; written to a "
        "Zarr cell store, chunk by chunk (backed mode). Several data sets append into one store.",
    )
    prepare.add_argument("counts", metavar="COUNTS.h5ad")
    prepare.add_argument("--cells", required=True, metavar="CELLS.zarr")
    prepare.add_argument("--graphs", required=True, metavar="GRAPHS.zarr")
    prepare.add_argument("--cell-type-key", required=True, metavar="KEY")
    add_qc_arguments(prepare)
    prepare.add_argument(
        "--bins",
        type=int,
        default=100,
        help="expression bins including 0 = not expressed (default: 100)",
    )
    prepare.add_argument(
        "--graph-mode",
        default="celltype",
        help="celltype (the type's consensus network), integrated (the graph store's assignment "
        "named after the data set) or ppi:NAME (default: celltype)",
    )
    prepare.add_argument(
        "--require-type-networks",
        action="store_true",
        help="in celltype mode, refuse the data when a cell type has no consensus network "
        "(default: those cells get graphs from the kNN integration against the typed cells, "
        "stored as the assignment DATASET-without-type-network and counted in the report)",
    )
    prepare.add_argument("--append", action="store_true", help="add to an existing cell store")
    prepare.add_argument(
        "--allow-empty",
        action="store_true",
        help="accept a data set of which no cell passes QC and has a label (default: an error)",
    )
    prepare.add_argument("--seed", type=int, default=0, help="seed of the splits (default: 0)")
    prepare.add_argument("--quiet", action="store_true")
    _add_train_parser(commands)
    _add_embed_parser(commands)
    _add_evaluate_parser(commands)
    _add_finetune_parser(commands)
    _add_hold_out_parser(commands)
    return parser


# flag -> TrainConfig field, for the flags whose names differ
TRAIN_FLAGS = {"layers": "n_layers", "heads": "n_heads", "workers": "num_workers"}


def _add_train_parser(commands) -> None:
    train = commands.add_parser(
        "train",
        help="masked-rank pre-training (one CPU, one GPU, or many through torchrun)",
        description="Pre-train GREmLN on a cell store with its graph store. Settings come from "
        "--config FILE.toml (flat keys, those of gremln.train.TrainConfig) and then the flags. "
        "Writes RUN_DIR/metrics.csv, RUN_DIR/checkpoint.pt and, at the end, RUN_DIR/model. "
        "Multi-GPU or multi-node: torchrun --nproc_per_node N -m cli.gremln train ...",
    )
    train.add_argument("--cells", metavar="CELLS.zarr")
    train.add_argument("--graphs", metavar="GRAPHS.zarr")
    train.add_argument("--out", metavar="RUN_DIR")
    train.add_argument("--config", metavar="FILE.toml", help="settings; flags override them")
    train.add_argument("--attention", choices=["diffusion", "vanilla"])
    train.add_argument(
        "--graph-integration",
        choices=["diffusion", "adapter", "both", "none"],
        help="how graphs enter the model: diffusion attention (GREmLN), the structure adapter "
        "(GRNFormer), both, or none; sets --attention and the adapter",
    )
    train.add_argument(
        "--cellspecific", metavar="NAME", help="assignment of cell-specific graphs for the adapter"
    )
    train.add_argument(
        "--coexpression-fraction",
        type=float,
        help="share of each training cell's edges replaced by co-expression pairs (default 0)",
    )
    train.add_argument("--d-model", type=int, metavar="D", help="width (default 512)")
    train.add_argument("--layers", type=int, metavar="L", help="transformer blocks (default 3)")
    train.add_argument("--heads", type=int, metavar="H", help="attention heads (default 8)")
    train.add_argument("--beta", type=float, help="diffusion time (default 0.1)")
    train.add_argument(
        "--learn-beta",
        action="store_true",
        default=None,
        help="learn a diffusion time per head and block, starting at --beta",
    )
    train.add_argument(
        "--beta-max", type=float, help="largest learned diffusion time (default 5; sets K)"
    )
    train.add_argument(
        "--diffuse",
        choices=["query", "query_key_value", "input"],
        help="what diffusion attention diffuses: the queries (default, the paper), queries keys "
        "and values, or the block's input",
    )
    train.add_argument("--batch-size", type=int, metavar="B", help="cells per process and step")
    train.add_argument("--max-length", type=int, help="genes per cell at most (default 2048)")
    train.add_argument("--max-steps", type=int, metavar="N", help="steps (default 10000)")
    train.add_argument("--lr", type=float, help="peak learning rate (default 3e-4)")
    train.add_argument("--seed", type=int, metavar="S")
    train.add_argument("--workers", type=int, help="data loader processes (default 2)")
    train.add_argument("--log-every", type=int, metavar="N")
    train.add_argument("--eval-every", type=int, metavar="N")
    train.add_argument("--checkpoint-every", type=int, metavar="N")
    train.add_argument("--device", choices=["auto", "cpu", "cuda"])
    train.add_argument("--tensorboard", action="store_true", default=None)
    train.add_argument("--resume", action="store_true", help="continue from RUN_DIR's checkpoint")
    train.add_argument(
        "--until-step",
        type=int,
        metavar="N",
        help="stop after step N with a checkpoint (the schedule still runs to --max-steps); "
        "--resume continues",
    )


def _train(args, console: Console) -> int:
    from gremln.train import GRAPH_INTEGRATIONS, NonFiniteLoss, TrainConfig, train

    settings = {
        TRAIN_FLAGS.get(name, name): value
        for name, value in vars(args).items()
        if name not in ("command", "config", "resume", "until_step", "graph_integration")
    }
    if args.graph_integration is not None:
        if args.attention is not None:
            console.print("[red]error:[/red] give --graph-integration or --attention, not both")
            return 2
        settings["attention"], settings["adapter"] = GRAPH_INTEGRATIONS[args.graph_integration]
    from netinfer.store import StoreError

    try:
        if args.config is not None and not os.path.isfile(args.config):
            raise FileNotFoundError(f"{args.config}: no such file (--config)")
        try:
            config = TrainConfig.from_sources(args.config, **settings)
        except ValueError as error:
            if str(error).startswith("missing settings"):
                raise ValueError(
                    f"{error}: give --cells CELLS.zarr, --graphs GRAPHS.zarr and --out RUN_DIR "
                    "(or set them in --config FILE.toml)"
                ) from None
            raise
        _check_train_inputs(config)
        summary = train(config, resume=args.resume, until_step=args.until_step)
    except NonFiniteLoss as error:
        console.print(f"[red]stopped:[/red] {error}", highlight=False)
        return 3
    except (ValueError, StoreError, FileExistsError, FileNotFoundError, TypeError) as error:
        message = str(error).replace("pass resume", "pass resume (--resume)")
        console.print(f"[red]error:[/red] {message}", highlight=False)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, indent=2))
    return 0


def _check_train_inputs(config) -> None:
    """Open the cell and graph stores and check the run directory before training starts, so a
    wrong path is a short error (not a traceback from a loader worker) and nothing is created."""
    from gremln.cellstore import CellStore
    from netinfer.io import InputError
    from netinfer.store import GraphStore

    CellStore.open(config.cells)
    GraphStore.open(config.graphs).close()
    if os.path.exists(config.out) and not os.path.isdir(config.out):
        raise InputError(f"{config.out}: is a file; --out takes the run directory to write")


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The data, the model and how it runs: shared by embed, evaluate and finetune."""
    parser.add_argument("data", metavar="DATA.h5ad", help="counts, cells x genes")
    parser.add_argument(
        "--model", required=True, metavar="RUN_DIR", help="a training run (or its model/ folder)"
    )
    parser.add_argument("--store", required=True, metavar="GRAPHS.zarr", help="the graph store")
    parser.add_argument("--layer", metavar="L", help="layer holding the counts (default: X)")
    parser.add_argument("--batch-size", type=int, default=32, help="cells per forward pass")
    parser.add_argument(
        "--max-length", type=int, default=2048, help="genes per cell at most (default: 2048)"
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--seed", type=int, default=0, help="(default: 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_graph_arguments(parser: argparse.ArgumentParser) -> None:
    """The model's arguments, and how cells get their graphs: shared by embed and evaluate."""
    _add_model_arguments(parser)
    parser.add_argument(
        "--graph-mode",
        default="integrated",
        help="integrated (kNN integration against labelled reference cells; the data's labels "
        "are never read), celltype (each cell's own type network), assignment:NAME (per-cell "
        "graphs of netinfer integrate or cellspecific), ppi:NAME or none (default: integrated)",
    )
    parser.add_argument(
        "--reference",
        metavar="TRAIN.h5ad",
        help="integrated mode: labelled counts to integrate the cells against (its "
        "--cell-type-key column is read)",
    )
    parser.add_argument(
        "--pooling", choices=["mean", "cls"], default="mean", help="cell embedding (default: mean)"
    )


def _add_embed_parser(commands) -> None:
    embed = commands.add_parser(
        "embed",
        help="cell and gene embeddings of a pre-trained model",
        description="Embed every cell (no QC, nothing dropped) with a pre-trained GREmLN model: "
        "cell embeddings in obsm['X_gremln'] (mean of the gene tokens' final states, or CLS), "
        "gene embeddings averaged over cells in varm['gremln'], provenance in uns['gremln']. "
        "In integrated mode the cells get their graphs from netinfer's kNN integration against "
        "--reference (stored in the graph store as assignment --assignment), or from an "
        "existing assignment of that name.",
    )
    _add_graph_arguments(embed)
    embed.add_argument("--out", required=True, metavar="OUT.h5ad")
    embed.add_argument(
        "--cell-type-key",
        metavar="KEY",
        help="label column: the reference's (integrated) or the data's (celltype mode only)",
    )
    embed.add_argument(
        "--assignment",
        default="gremln-embed",
        help="name of the integration's assignment in the graph store (default: gremln-embed)",
    )
    embed.add_argument("--k", type=int, default=15, help="integration neighbours (default: 15)")
    embed.add_argument(
        "--alpha",
        type=float,
        default=0.25,
        help="integration false-edge level, at least 1/k (default: 0.25)",
    )
    embed.add_argument(
        "--gene-embeddings",
        choices=["mean", "none"],
        default="mean",
        help="per-gene embeddings averaged over cells, in varm (default: mean)",
    )
    embed.add_argument(
        "--per-cell",
        metavar="GENES.zarr",
        help="also write every cell's gene embeddings to this Zarr group",
    )


def _add_evaluate_parser(commands) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="score frozen embeddings against baselines (cell types, expression, edges, all)",
        description="Paper section 4: each evaluation writes OUT_DIR/<evaluation>.json (per "
        "model and baseline, each metric's mean and std over random splits) and PNG figures.",
    )
    tasks = evaluate.add_subparsers(dest="evaluation", required=True, metavar="EVALUATION")
    celltype = tasks.add_parser(
        "celltype",
        help="linear classifier of cell types on frozen embeddings",
        description="A linear classifier with early stopping on a validation split, on three "
        "stratified random splits: macro precision, recall and F1, accuracy; a confusion-matrix "
        "figure. Baselines: PCA of log-normalized expression, and --vanilla when given. Without "
        "--reference, each split's training cells are the integration's reference; a reference "
        "(or an assignment:NAME of netinfer integrate) that read the labels of the evaluated "
        "cells is refused.",
    )
    expression = tasks.add_parser(
        "expression",
        help="linear regression from frozen embeddings to expression",
        description="Ridge regression from embeddings to the log-normalized expression of the "
        "most variable genes, R^2 on held-out cells (appendix A.6); a predicted-vs-true figure. "
        "Baselines: PCA of log-normalized expression, and --vanilla when given.",
    )
    edges = tasks.add_parser(
        "edges",
        help="link prediction of hidden edges of cell-type networks from gene embeddings",
        description="Hide the edges held out of pre-training (--held-out, from gremln "
        "hold-out-edges) in each cell type's consensus network; GREmLN embeds the type's cells "
        "with the visible graph, and a link predictor on its frozen gene embeddings scores the "
        "hidden edges against sampled non-edges: AUROC and average precision over three seeds; "
        "ROC and precision-recall figures. Baselines (through a graph attention network over "
        "the visible graph): PCA gene loadings, and --vanilla.",
    )
    everything = tasks.add_parser(
        "all",
        help="every evaluation, and one markdown table (OUT_DIR/summary.md)",
        description="celltype, expression and edges (with --held-out) on DATA (and "
        "perturbation on --perturbation), each with its defaults, then OUT_DIR/summary.md: a "
        "row per model, a column per metric (mean ± std).",
    )
    for task in (celltype, expression, everything):
        _add_graph_arguments(task)
    _add_model_arguments(edges)
    for task in (celltype, expression, edges, everything):
        _add_comparison_arguments(task)
    for task in (celltype, edges, everything):
        task.add_argument(
            "--cell-type-key",
            required=True,
            metavar="KEY",
            help="the label column (data, reference)",
        )
    for task in (edges, everything):
        task.add_argument(
            "--held-out",
            metavar="EDGES.tsv",
            required=task is edges,
            help="the edges held out of pre-training (gremln hold-out-edges): the hidden edges"
            + ("" if task is edges else "; without it the edges evaluation is left out"),
        )
    edges.add_argument(
        "--cell-types",
        metavar="A,B,...",
        help="the types whose networks are evaluated, e.g. those held out of pre-training "
        "(default: every type with a consensus network)",
    )
    edges.add_argument(
        "--min-edges",
        type=int,
        default=10,
        help="networks with fewer edges among expressed genes are left out (default: 10)",
    )
    edges.add_argument(
        "--epochs", type=int, default=200, help="link predictor training steps (default: 200)"
    )
    everything.add_argument(
        "--perturbation", metavar="PERTURB.h5ad", help="also run the perturbation evaluation"
    )
    everything.add_argument("--perturbation-key", metavar="KEY", help="its perturbation column")
    everything.add_argument("--control", default="control", help="its control label")
    expression.add_argument(
        "--cell-type-key",
        metavar="KEY",
        help="label column of the reference, or of the training cells without one",
    )
    expression.add_argument(
        "--n-genes", type=int, default=200, help="most variable genes to predict (default: 200)"
    )


def _add_comparison_arguments(parser: argparse.ArgumentParser) -> None:
    """Output, the ablation and the baselines: shared by every evaluation."""
    parser.add_argument("--out", required=True, metavar="OUT_DIR")
    parser.add_argument(
        "--vanilla", metavar="RUN_DIR", help="the vanilla-attention ablation, side by side"
    )
    parser.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="NAME=RUN_DIR",
        help="a further model, side by side under NAME, e.g. adapter=runs/adapter for the "
        "--graph-integration variants (repeatable)",
    )
    parser.add_argument("--splits", type=int, default=3, help="random splits (default: 3)")
    parser.add_argument(
        "--n-pcs", type=int, default=50, help="components of the PCA baseline (default: 50)"
    )


def _add_hold_out_parser(commands) -> None:
    hold_out = commands.add_parser(
        "hold-out-edges",
        help="before pre-training: hold edges out of every graph for the edges evaluation",
        description="Choose a fraction of the cell-type networks' gene pairs (pooled over types) "
        "and write PRETRAIN_GRAPHS, a copy of GRAPHS in which no graph (nor any per-cell graph "
        "of an assignment) has any of them: pre-train on it (gremln prepare --graphs), then give "
        "EDGES.tsv to gremln evaluate edges --held-out, with GRAPHS as --store.",
    )
    hold_out.add_argument("graphs", metavar="GRAPHS", help="graph store with the networks (read)")
    hold_out.add_argument("pretraining", metavar="PRETRAIN_GRAPHS", help="graph store to write")
    hold_out.add_argument("--edges", required=True, metavar="EDGES.tsv", help="held-out pairs")
    hold_out.add_argument(
        "--fraction", type=float, default=0.15, help="share of pairs held out (default: 0.15)"
    )
    hold_out.add_argument("--seed", type=int, default=0, help="seed of the choice (default: 0)")
    hold_out.add_argument(
        "--cell-types", metavar="A,B,...", help="only these types' networks' pairs (default: all)"
    )
    hold_out.add_argument("--overwrite", action="store_true", help="replace PRETRAIN_GRAPHS")


def _hold_out(args) -> dict:
    from gremln.evaluate.edges import hold_out_edges, write_held_out
    from netinfer.io import InputError

    if os.path.isdir(args.edges):
        raise InputError(f"{args.edges}: is a directory; --edges takes the .tsv file to write")
    held_out = hold_out_edges(
        args.graphs,
        args.pretraining,
        fraction=args.fraction,
        seed=args.seed,
        cell_types=args.cell_types.split(",") if args.cell_types else None,
        overwrite=args.overwrite,
    )
    write_held_out(held_out, args.edges)
    return {"held_out_pairs": len(held_out), "pretraining_graphs": args.pretraining}


def _add_finetune_parser(commands) -> None:
    finetune = commands.add_parser(
        "finetune",
        help="fine-tuned tasks (reverse perturbation prediction)",
        description="Tasks that train the model further, scored beside frozen embeddings.",
    )
    tasks = finetune.add_subparsers(dest="task", required=True, metavar="TASK")
    perturbation = tasks.add_parser(
        "perturbation",
        help="which gene was perturbed, from a perturbed cell's profile",
        description="Reverse perturbation prediction on any Perturb-seq-like h5ad of counts "
        "with a perturbation column (control cells left out): a linear probe on frozen "
        "embeddings, and the model fine-tuned with a classification head (cross-entropy); "
        "accuracy and macro-F1 over three stratified splits. Baselines: lasso logistic "
        "regression on log-normalized expression, PCA, and --vanilla.",
    )
    _add_graph_arguments(perturbation)
    _add_comparison_arguments(perturbation)
    perturbation.add_argument("--perturbation-key", required=True, metavar="KEY")
    perturbation.add_argument(
        "--control", default="control", help="label of unperturbed cells (default: control)"
    )
    perturbation.add_argument(
        "--cell-type-key",
        metavar="KEY",
        help="integrated mode: label column of the reference, or of the training cells",
    )
    perturbation.add_argument(
        "--epochs", type=int, default=5, help="fine-tuning epochs (default: 5)"
    )


def _read_h5ad(path: str, what: str):
    return read_h5ad(path, what=what)


def _read_data(args):
    """DATA, with its --layer checked."""
    from netinfer.io import InputError

    adata = _read_h5ad(args.data, "DATA")
    if args.layer is not None and args.layer not in adata.layers:
        layers = ", ".join(adata.layers) or "none"
        raise InputError(f"{args.data}: no layer {args.layer!r} (--layer); layers: {layers}")
    return adata


def _check_model(path: str, flag: str) -> None:
    """Before reading data: the model path names a directory (load_model checks its files)."""
    from netinfer.io import InputError

    if not os.path.isdir(path):
        problem = "is a file" if os.path.exists(path) else "no such directory"
        raise InputError(
            f"{path}: {problem} ({flag}); pass the run directory of gremln train (RUN_DIR) or "
            "its model/ folder"
        )


def _check_output(path: str, *, directory: bool) -> None:
    """Before any work: the output path is not the wrong kind of thing."""
    from netinfer.io import InputError

    if directory and os.path.isfile(path):
        raise InputError(f"{path}: is a file; --out takes the directory to write the results to")
    if not directory and os.path.isdir(path):
        raise InputError(f"{path}: is a directory; --out takes the .h5ad file to write")


def _embed(args) -> dict:
    from gremln.embed import embed

    if args.reference is not None and args.cell_type_key is None:
        raise ValueError("--reference needs --cell-type-key, the reference's label column")
    _check_output(args.out, directory=False)
    _check_model(args.model, "--model")
    adata = _read_data(args)
    reference = _read_h5ad(args.reference, "--reference") if args.reference else None
    if reference is not None:
        require_obs_column(reference, args.cell_type_key, args.reference, "--cell-type-key")
    embed(
        adata,
        args.model,
        args.store,
        graph_mode=args.graph_mode,
        reference=reference,
        cell_type_key=args.cell_type_key,
        assignment=args.assignment,
        integration={"k": args.k, "alpha": args.alpha, "seed": args.seed},
        pooling=args.pooling,
        gene_embeddings="per_cell" if args.per_cell else _none(args.gene_embeddings),
        per_cell_path=args.per_cell,
        layer=args.layer,
        max_length=args.max_length,
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.quiet,
    )
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    staging = f"{args.out}.tmp.h5ad"
    adata.write_h5ad(staging)
    os.replace(staging, args.out)
    info = adata.uns["gremln"]
    return {
        "cells": int(adata.n_obs),
        "dimensions": int(adata.obsm["X_gremln"].shape[1]),
        "graphs": info["graphs"],
        "genes_outside_vocabulary": info["genes_outside_vocabulary"],
        "examples_outside_vocabulary": list(info["examples_outside_vocabulary"]),
        "out": args.out,
    }


def _evaluate(args) -> dict:
    """Run one evaluation (or fine-tuning task, or all); return its result(s)."""
    from gremln.embed import load_model
    from gremln.evaluate.all import evaluate_all
    from gremln.evaluate.celltype import evaluate_celltype
    from gremln.evaluate.edges import evaluate_edges
    from gremln.evaluate.expression import evaluate_expression
    from gremln.evaluate.perturbation import evaluate_perturbation

    _check_output(args.out, directory=True)
    _check_model(args.model, "--model")
    if args.vanilla:
        _check_model(args.vanilla, "--vanilla")
    compare = _compared_models(args.compare)
    adata = _read_data(args)
    if args.command == "finetune":
        require_obs_column(adata, args.perturbation_key, args.data, "--perturbation-key")
    elif args.evaluation != "expression":  # the labels the evaluation scores against
        require_obs_column(adata, args.cell_type_key, args.data, "--cell-type-key")
    common = dict(
        vanilla=load_model(args.vanilla, device=args.device) if args.vanilla else None,
        compare={name: load_model(path, device=args.device) for name, path in compare.items()},
        out_dir=args.out,
        layer=args.layer,
        n_splits=args.splits,
        n_pcs=args.n_pcs,
        seed=args.seed,
        embed_options={"batch_size": args.batch_size, "max_length": args.max_length},
        progress=not args.quiet,
    )
    model = load_model(args.model, device=args.device)
    if args.command == "evaluate" and args.evaluation == "edges":
        cell_types = args.cell_types.split(",") if args.cell_types else None
        return evaluate_edges(
            adata,
            model,
            args.store,
            cell_type_key=args.cell_type_key,
            held_out=args.held_out,
            cell_types=cell_types,
            min_edges=args.min_edges,
            epochs=args.epochs,
            **common,
        )
    common["embed_options"]["pooling"] = args.pooling
    graphs = dict(
        graph_mode=args.graph_mode,
        reference=_read_h5ad(args.reference, "--reference") if args.reference else None,
        cell_type_key=args.cell_type_key,
    )
    if args.command == "finetune":
        return evaluate_perturbation(
            adata,
            model,
            args.store,
            perturbation_key=args.perturbation_key,
            control=args.control,
            epochs=args.epochs,
            **graphs,
            **common,
        )
    if args.evaluation == "all":
        if args.perturbation and not args.perturbation_key:
            raise ValueError("--perturbation needs --perturbation-key, its perturbation column")
        perturbation = (
            _read_h5ad(args.perturbation, "--perturbation") if args.perturbation else None
        )
        return evaluate_all(
            adata,
            model,
            args.store,
            held_out=args.held_out,
            perturbation=perturbation,
            perturbation_key=args.perturbation_key,
            control=args.control,
            **graphs,
            **common,
        )
    if args.evaluation == "celltype":
        return evaluate_celltype(adata, model, args.store, **graphs, **common)
    return evaluate_expression(adata, model, args.store, n_genes=args.n_genes, **graphs, **common)


def _compared_models(pairs: list[str]) -> dict[str, str]:
    """``--compare NAME=RUN_DIR`` values as name -> run directory, each checked."""
    models = {}
    for pair in pairs:
        name, _, path = pair.partition("=")
        if not name or not path:
            raise ValueError(f"--compare {pair}: expected NAME=RUN_DIR, e.g. adapter=runs/adapter")
        if name in models:
            raise ValueError(f"--compare: the name {name!r} is given twice")
        _check_model(path, f"--compare {name}")
        models[name] = path
    return models


def _none(value: str) -> str | None:
    return None if value == "none" else value


def _print_scores(result: dict, out_dir: str) -> None:
    """The models' metrics as a table (stdout); for ``evaluate all``, the summary table."""
    from rich.table import Table

    from gremln.evaluate.all import summary_table

    if "evaluation" not in result:  # evaluation -> result, from evaluate all
        print(summary_table(result), end="")
        return
    models = result["models"]
    metrics = [m for m in next(iter(models.values())) if m != "ridge_penalty"]
    table = Table(title=f"{result['evaluation']} ({out_dir})")
    table.add_column("model")
    for metric in metrics:
        table.add_column(metric, justify="right")
    for name, scores in models.items():
        cells = [f"{scores[m]['mean']:.3f} ± {scores[m]['std']:.3f}" for m in metrics]
        table.add_row(name, *cells)
    Console(soft_wrap=True).print(table)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gremln`` console script."""
    args = _parser().parse_args(argv)
    console = Console(stderr=True, soft_wrap=True)
    if args.command == "train":
        return _train(args, console)
    if args.command == "demo":
        return _demo(args, console)
    if args.command in ("embed", "evaluate", "finetune", "hold-out-edges"):
        return _embed_or_evaluate(args, console)
    from gremln.cellstore import prepare

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _warning_printer(console)
            _check_prepare_input(args.counts, args.cell_type_key)
            report = prepare(
                args.counts,
                args.cells,
                graphs_path=args.graphs,
                cell_type_key=args.cell_type_key,
                **qc_options(args),
                n_bins=args.bins,
                graph_mode=args.graph_mode,
                require_type_networks=args.require_type_networks,
                append=args.append,
                allow_empty=args.allow_empty,
                seed=args.seed,
                progress=not args.quiet,
            )
    except input_errors() as error:
        message = str(error).replace("pass append", "pass append (--append)")
        console.print(f"[red]error:[/red] {message}", highlight=False)
        return 2
    print(json.dumps(report, indent=2))  # the report to stdout, progress to stderr
    return 0


def _check_prepare_input(path: str, cell_type_key: str) -> None:
    """Before tokenizing: the counts file is an h5ad with the label column (named with its
    flag here; ``prepare`` checks the rest)."""
    data = read_h5ad(path, backed=True)
    try:
        require_obs_column(data, cell_type_key, path, "--cell-type-key")
    finally:
        data.file.close()


def _warning_printer(console: Console):
    """Warnings as one ``warning:`` line each, as netinfer prints them."""

    def show(message, *rest) -> None:
        console.print(f"[yellow]warning:[/yellow] {message}", highlight=False)

    return show


def _demo(args, console: Console) -> int:
    from rich.table import Table

    from gremln.demo import run_demo

    summary = run_demo(args.directory, steps=args.steps)
    table = Table(title="gremln demo", show_header=False)
    for stage, seconds in summary["stages"].items():
        table.add_row(stage, f"{seconds:.1f} s")
    table.add_row("total", f"{summary['total_s']:.1f} s")
    for cell_type, edges in summary["networks"].items():
        table.add_row(f"network: {cell_type}", f"{edges:,} edges")
    seen = summary["train"]["val_seen"]
    table.add_row(
        "held-out masked-bin loss",
        f"{seen['loss']:.3f} nats (unigram entropy {seen['unigram_entropy']:.3f}, "
        f"per-gene entropy {seen['gene_entropy']:.3f})",
    )
    for model, f1 in summary["macro_f1"].items():
        table.add_row(f"cell-type macro-F1: {model}", f"{f1['mean']:.3f} ± {f1['std']:.3f}")
    for name, path in summary["outputs"].items():
        table.add_row(name, path)
    console.print(table)
    return 0


def _embed_or_evaluate(args, console: Console) -> int:
    from netinfer.io import InputError
    from netinfer.store import StoreError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _warning_printer(console)
            if args.command == "embed":
                print(json.dumps(_embed(args), indent=2))
            elif args.command == "hold-out-edges":
                print(json.dumps(_hold_out(args), indent=2))
            else:
                _print_scores(_evaluate(args), args.out)
    except (InputError, StoreError, FileNotFoundError, ValueError) as error:
        # library errors say <data> for the data in memory: name its file here
        message = str(error).replace("<data>", args.data)
        if getattr(args, "perturbation", None):
            message = message.replace("<perturbation>", args.perturbation)
        if getattr(args, "reference", None):
            message = message.replace("<reference>", args.reference)
        elif "no assignment named" in message and getattr(args, "graph_mode", "") == "integrated":
            message += (
                ". The integrated graph mode needs --reference TRAIN.h5ad --cell-type-key KEY "
                "(labelled cells to integrate against), or an assignment made by netinfer "
                f"integrate --name {getattr(args, 'assignment', 'NAME')}; or choose --graph-mode "
                "celltype, ppi:NAME or none"
            )
        console.print(f"[red]error:[/red] {message}", highlight=False)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
