"""Command-line options shared by the ``netinfer`` and ``gremln`` commands."""

from __future__ import annotations

import argparse


def input_errors() -> tuple[type[Exception], ...]:
    """The errors a command reports as one ``error:`` line with exit code 2 (bad input, paths,
    stores), imported only when an error is being matched, so start-up stays light."""
    from netinfer.io import InputError
    from netinfer.store import StoreError

    return (
        InputError,
        StoreError,
        FileNotFoundError,
        FileExistsError,
        IsADirectoryError,
        NotADirectoryError,
        PermissionError,
        ValueError,
    )


def add_qc_arguments(parser: argparse.ArgumentParser) -> None:
    """Cell QC flags, named as scanpy's ``filter_cells``, with GREmLN's defaults."""
    parser.add_argument("--min-counts", type=int, default=1000, help="(default: 1000)")
    parser.add_argument("--max-counts", type=int, default=100_000, help="(default: 100000)")
    parser.add_argument(
        "--trim",
        type=float,
        default=0.9,
        help="then keep the middle fraction by total UMI; 1 = off (default: 0.9)",
    )
    parser.add_argument("--min-genes", type=int, default=500, help="(default: 500)")


def qc_options(args: argparse.Namespace) -> dict:
    """The QC keyword arguments of ``netinfer.pipeline.qc_mask`` from parsed flags."""
    return {
        "min_counts": args.min_counts,
        "max_counts": args.max_counts,
        "trim": None if args.trim >= 1 else args.trim,
        "min_genes": args.min_genes,
    }
