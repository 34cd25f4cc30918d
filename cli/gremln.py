"""The ``gremln`` command: argument parsing, progress and summaries; the work is library calls.

Built so far: ``prepare`` (tokenized cells into a cell store). Training, embeddings and
evaluations are open work (see README, 'Status').
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from rich.console import Console

from cli.options import add_qc_arguments, qc_options


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gremln",
        description="GREmLN, a graph-aware transcriptomics foundation model. Built so far: "
        "prepare. Training, embedding and evaluation are not implemented yet.",
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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gremln`` console script."""
    args = _parser().parse_args(argv)
    console = Console(stderr=True)
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
