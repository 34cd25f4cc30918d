"""Command-line options shared by the ``netinfer`` and ``gremln`` commands."""

from __future__ import annotations

import argparse


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


def read_h5ad(path: str, *, what: str = "", backed: bool = False):
    """An h5ad file, with a short error (no traceback) when it is missing, a directory or not
    an AnnData file; ``what`` names the argument (e.g. ``"--reference"``) in the message."""
    import os

    import anndata

    from netinfer.io import InputError

    where = f" ({what})" if what else ""
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory, not an .h5ad file{where}")
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file{where}")
    try:
        return anndata.read_h5ad(path, backed="r" if backed else None)
    except OSError as error:
        raise InputError(
            f"{path}: not a readable .h5ad file{where}; expected an AnnData file written by "
            f"anndata or scanpy (adata.write_h5ad). The reader said: {error}"
        ) from None


def require_counts(X, path: str, *, what: str = "X", command: str, remedy: str) -> None:
    """Raise an error unless ``X`` (its first million stored values) holds raw counts:
    non-negative integers. The message names the file and the matrix, says what the values look
    like, and gives ``remedy``."""
    import numpy as np
    import scipy.sparse as sp

    from netinfer.io import InputError

    values = X.data if sp.issparse(X) else np.asarray(X).ravel()
    values = np.asarray(values[:1_000_000], dtype=np.float64)
    if values.size == 0:
        return
    low, high = float(values.min()), float(values.max())
    fractional = values[values != np.round(values)]
    if low >= 0 and fractional.size == 0:
        return
    if low < 0:
        problem = f"negative values (min {low:.3g}; looks scaled or centred)"
    else:
        looks = "log-normalized" if high <= 30 else "normalized (e.g. CPM)"
        problem = (
            f"non-integer values (max {high:.3g}, e.g. {float(fractional[0]):.3g}; looks {looks})"
        )
    raise InputError(
        f"{path}: {what} holds {problem}, but {command} needs raw UMI counts; {remedy}"
    )


def counts_remedy(adata, *, layer_flag: bool) -> str:
    """What to do when an h5ad's matrix holds no counts: which layer to pass (with
    ``layer_flag``) or how to put the counts into X, given its layers and ``raw``."""
    layers = list(adata.layers.keys())
    if layers:
        listed = ", ".join(layers)
        if layer_flag:
            return f"pass the layer holding the counts with --layer (layers here: {listed})"
        return (
            f"write the counts into X first, e.g. adata.X = adata.layers[{layers[0]!r}] "
            f"(layers here: {listed})"
        )
    if adata.raw is not None:
        return (
            "if adata.raw holds the counts, write them out as X first: "
            "adata.raw.to_adata().write_h5ad(...)"
        )
    return "this file has no layers and no adata.raw: use the counts matrix the data came from"
