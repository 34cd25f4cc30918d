"""The ``gremln`` command: argument parsing, progress and summaries; the work is library calls.

``prepare`` tokenizes cells into a cell store; ``train`` pre-trains the model (also under
``torchrun --nproc_per_node N -m cli.gremln train ...``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

from rich.console import Console

from cli.options import add_qc_arguments, qc_options


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gremln",
        description="GREmLN, a graph-aware transcriptomics foundation model: prepare cells, "
        "then train.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
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
    prepare.add_argument("--append", action="store_true", help="add to an existing cell store")
    prepare.add_argument("--seed", type=int, default=0, help="seed of the splits (default: 0)")
    prepare.add_argument("--quiet", action="store_true")
    _add_train_parser(commands)
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
    train.add_argument("--d-model", type=int, metavar="D", help="width (default 512)")
    train.add_argument("--layers", type=int, metavar="L", help="transformer blocks (default 3)")
    train.add_argument("--heads", type=int, metavar="H", help="attention heads (default 8)")
    train.add_argument("--beta", type=float, help="diffusion time (default 0.1)")
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
    from gremln.train import NonFiniteLoss, TrainConfig, train

    settings = {
        TRAIN_FLAGS.get(name, name): value
        for name, value in vars(args).items()
        if name not in ("command", "config", "resume", "until_step")
    }
    try:
        config = TrainConfig.from_sources(args.config, **settings)
        summary = train(config, resume=args.resume, until_step=args.until_step)
    except NonFiniteLoss as error:
        console.print(f"[red]stopped:[/red] {error}", highlight=False)
        return 3
    except (ValueError, FileExistsError, FileNotFoundError, TypeError) as error:
        console.print(f"[red]error:[/red] {error}", highlight=False)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gremln`` console script."""
    args = _parser().parse_args(argv)
    console = Console(stderr=True, soft_wrap=True)
    if args.command == "train":
        return _train(args, console)
    from gremln.cellstore import prepare
    from netinfer.io import InputError
    from netinfer.store import StoreError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            report = prepare(
                args.counts,
                args.cells,
                graphs_path=args.graphs,
                cell_type_key=args.cell_type_key,
                **qc_options(args),
                n_bins=args.bins,
                graph_mode=args.graph_mode,
                append=args.append,
                seed=args.seed,
                progress=not args.quiet,
            )
    except (InputError, StoreError, FileNotFoundError, ValueError) as error:
        console.print(f"[red]error:[/red] {error}", highlight=False)
        return 2
    print(json.dumps(report, indent=2))  # the report to stdout, progress to stderr
    return 0


if __name__ == "__main__":
    sys.exit(main())
