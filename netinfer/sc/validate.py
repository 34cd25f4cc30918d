"""Input checks every single-cell command shares, so that a library user gets the same checks.

Each check raises :class:`~netinfer.io.InputError` with a message that starts with the file (or a
placeholder such as ``<AnnData>`` that the command line replaces by the file) and names the
matrix used (``X`` or ``layer 'counts'``), the cell, gene, label or line, and what is wrong.

Cells without a label
    A cell whose label is missing (NaN, None, an empty or blank string, or a text that means
    missing: ``nan``, ``NA``, ``<NA>``, ``N/A``, ``null``, any case) cannot be given a
    cell-type network. The rule, in every command that reads labels: such cells are dropped with
    one warning that counts them and names the first few; when no labelled cell is left, the
    command refuses (an error, not an empty result). A query given to ``integrate`` is never
    asked for labels.

Matrices are checked over every stored value, a block of rows at a time, so a backed (on-disk)
file is streamed rather than read whole, and a problem in its last cells is found too.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from netinfer.io import _MISSING_TOKENS, InputError, matrix_of

__all__ = [
    "check_edges",
    "MatrixCheck",
    "check_matrix",
    "counts_remedy",
    "labelled_cells",
    "read_h5ad",
    "require_cells_after_qc",
    "require_ids",
    "require_output_path",
    "require_obs_column",
    "validate_counts",
]

#: Rows read at a time when a matrix is checked (bounded memory for backed files).
CHUNK = 10_000
_N_EXAMPLES = 3


def read_h5ad(path: str | os.PathLike[str], *, what: str = "", backed: bool = False):
    """An h5ad file, with a short error (no traceback) when it is missing, a directory or not
    an AnnData file, or has no cell, no gene, or empty or duplicated ids (``require_ids``);
    ``what`` names the argument (e.g. ``"--reference"``) in the message."""
    import anndata

    path = os.fspath(path)
    where = f" ({what})" if what else ""
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory, not an .h5ad file{where}")
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file{where}")
    try:
        with warnings.catch_warnings():
            # anndata warns about non-unique names; require_ids reports them itself
            warnings.filterwarnings("ignore", message=".*names are not unique")
            adata = anndata.read_h5ad(path, backed="r" if backed else None)
    except (OSError, KeyError, TypeError, ValueError) as error:
        raise InputError(
            f"{path}: not a readable .h5ad file{where}; expected an AnnData file written by "
            f"anndata or scanpy (adata.write_h5ad). The reader said: {error}"
        ) from None
    require_ids(adata, path, what="X")
    return adata


def require_obs_column(adata, key: str | None, where: str = "<data>", flag: str | None = None):
    """Raise an :class:`InputError` unless ``adata.obs`` has the column ``key`` (``None``
    counts as missing). The message starts with ``where`` (the file, or a placeholder such as
    ``<data>``) and lists the columns there; with ``flag`` (the option that named the column),
    it also says to pass one of them with it."""
    if key is not None and key in adata.obs:
        return
    columns = ", ".join(map(str, adata.obs.columns)) or "none"
    if flag is None:
        raise InputError(f"{where}: no obs column {key!r}; columns are: {columns}")
    raise InputError(
        f"{where}: no obs column {key!r} ({flag}); its obs columns are: {columns}. "
        f"Pass one of them with {flag}"
    )


def require_ids(adata, where: str, *, what: str = "") -> None:
    """Raise unless ``adata`` has at least one cell and one gene, and unique, non-empty cell
    and gene ids; ``what`` says which matrix (e.g. ``"X"``) for the shape message."""
    matrix = f"{what} " if what else ""
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise InputError(
            f"{where}: the {matrix}matrix is empty ({adata.n_obs} cells x {adata.n_vars} genes); "
            "it needs at least one cell and one gene"
        )
    for axis, ids in (("gene", adata.var_names), ("cell", adata.obs_names)):
        names = pd.Index(ids).astype(str)
        blank = np.flatnonzero(names.str.strip() == "")
        if blank.size:
            raise InputError(
                f"{where}: {blank.size} empty {axis} id(s), e.g. at {axis} position {blank[0]}; "
                f"every {axis} needs a name"
            )
        duplicated = names[names.duplicated()].unique()
        if duplicated.size:
            raise InputError(
                f"{where}: {duplicated.size} duplicated {axis} id(s), e.g. "
                f"{_examples(duplicated)}; make them unique (e.g. adata."
                f"{'var' if axis == 'gene' else 'obs'}_names_make_unique())"
            )


def check_matrix(
    X,
    where: str,
    *,
    what: str = "X",
    cells=None,
    genes=None,
    counts_for: str | None = None,
    remedy: str = "",
    chunk: int = CHUNK,
) -> None:
    """Raise unless every value of ``X`` is finite (and, with ``counts_for``, a raw count: a
    non-negative integer), reading ``chunk`` rows at a time; see ``MatrixCheck``."""
    check = MatrixCheck(
        where, what=what, cells=cells, genes=genes, counts_for=counts_for, remedy=remedy
    )
    for start in range(0, X.shape[0], chunk):
        check.update(X[start : start + chunk], start)
    check.finish()


class MatrixCheck:
    """The checks of ``check_matrix``, fed one block of rows at a time, for code that reads the
    blocks anyway (``gremln.cellstore.prepare``'s first pass).

    Parameters
    ----------
    where
        The file (or placeholder) the message starts with.
    what
        The matrix used, e.g. ``"X"`` or ``"layer 'counts'"``.
    cells, genes
        Row and column ids, to name the cell and gene of a bad value.
    counts_for
        The command that needs raw counts (``None``: only finiteness is checked).
    remedy
        What to do when the values are not counts.
    """

    def __init__(
        self,
        where: str,
        *,
        what: str = "X",
        cells=None,
        genes=None,
        counts_for: str | None = None,
        remedy: str = "",
    ):
        self.where, self.what, self.cells, self.genes = where, what, cells, genes
        self.counts_for, self.remedy = counts_for, remedy
        self.high = -np.inf
        self.fractional: tuple[float, str] | None = None

    def update(self, block, start: int) -> None:
        """Check rows ``start, start + 1, ...`` (a dense or sparse block); raise at once on a
        non-finite or negative value."""
        if sp.issparse(block):
            block = sp.csr_matrix(block)
            values = block.data
        else:
            block = np.asarray(block)
            values = block.ravel()
        if values.dtype.kind not in "biuf":
            raise InputError(
                f"{self.where}: {self.what} holds values of type {values.dtype}, not numbers; "
                "expected a numeric cells x genes matrix"
            )
        values = values.astype(np.float64, copy=False)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise InputError(
                f"{self.where}: {self.what} holds {bad.size} non-finite value(s) in rows "
                f"{start}-{start + block.shape[0] - 1}, e.g. {values[bad[0]]} at "
                f"{self._locate(block, bad[0], start)}; expected finite numbers"
                + (" (raw counts)" if self.counts_for else "")
            )
        if self.counts_for is None or values.size == 0:
            return
        self.high = max(self.high, float(values.max()))
        first = int(np.argmin(values))
        if values[first] < 0:
            raise InputError(
                f"{self.where}: {self.what} holds negative values (min {values[first]:.3g} at "
                f"{self._locate(block, first, start)}; looks scaled or centred), but "
                f"{self.counts_for} needs raw UMI counts; {self.remedy}"
            )
        if self.fractional is None:
            off = np.flatnonzero(values != np.round(values))
            if off.size:
                self.fractional = (values[off[0]], self._locate(block, off[0], start))

    def finish(self) -> None:
        """Raise if any block held a non-integer value (after all, to report the maximum)."""
        if self.fractional is None:
            return
        value, at = self.fractional
        looks = "log-normalized" if self.high <= 30 else "normalized (e.g. CPM)"
        raise InputError(
            f"{self.where}: {self.what} holds non-integer values (max {self.high:.3g}, e.g. "
            f"{value:.3g} at {at}; looks {looks}), but {self.counts_for} needs raw UMI counts; "
            f"{self.remedy}"
        )

    def _locate(self, block, flat: int, start: int) -> str:
        """``cell 'c' (row r), gene 'g'`` for the ``flat``-th value of a block (stored values
        of a CSR block, or a dense block's values in C order)."""
        if sp.issparse(block):
            row = int(np.searchsorted(block.indptr, flat, side="right")) - 1
            col = int(block.indices[flat])
        else:
            row, col = (int(i) for i in np.unravel_index(flat, block.shape))
        row += start
        cell = (
            f"cell {str(self.cells[row])!r} (row {row})" if self.cells is not None else f"row {row}"
        )
        gene = f"gene {str(self.genes[col])!r}" if self.genes is not None else f"column {col}"
        return f"{cell}, {gene}"


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


def labelled_cells(adata, key: str, where: str, *, flag: str | None = None) -> np.ndarray:
    """Which cells have a label in ``obs[key]`` (see the module docstring for the rule).

    Warns once, counting and naming the cells without one; raises :class:`InputError` when
    the column is missing or no cell has a label.
    """
    require_obs_column(adata, key, where, flag)
    labels = adata.obs[key]
    # NaN/None, and texts that mean missing: "", "nan" (what astype(str) makes of NaN), "NA", ...
    texts = labels.astype(str).str.strip().str.lower()
    missing = labels.isna().to_numpy() | texts.isin(_MISSING_TOKENS).to_numpy()
    if missing.all():
        raise InputError(
            f"{where}: no cell has a label in obs column {key!r}"
            + (f" ({flag})" if flag else "")
            + f": all {missing.size} are empty, NaN or NA; give the column with the cell types"
        )
    if missing.any():
        unlabelled = np.asarray(adata.obs_names[missing]).astype(str)
        warnings.warn(
            f"{where}: {unlabelled.size} of {missing.size} cells have no label in obs column "
            f"{key!r} (empty, NaN or NA), e.g. {_examples(unlabelled)}; they are left out",
            UserWarning,
            stacklevel=2,
        )
    return ~missing


def require_cells_after_qc(qc: dict, where: str, *, allow_flag: bool = False) -> None:
    """Raise when QC kept no cell, saying what removed them and which flags to change; with
    ``allow_flag``, also that ``--allow-empty`` accepts it. ``qc`` is a report of
    ``netinfer.pipeline.qc_mask``, with ``without_label`` where unlabelled cells were left out."""
    if qc["kept"]:
        return
    removed = ", ".join(f"{rule} {n}" for rule, n in qc.items() if rule not in ("input", "kept"))
    raise InputError(
        f"{where}: no cell left: of its {qc['input']} cells, none passes QC"
        f"{' and has a label' if 'without_label' in qc else ''} (removed: {removed}); "
        "lower the QC thresholds (--min-counts, --min-genes, --max-counts, --trim)"
        + (", or pass --allow-empty to write none" if allow_flag else "")
    )


def validate_counts(
    adata,
    where: str,
    *,
    command: str,
    layer: str | None = None,
    counts: bool = True,
    cell_type_key: str | None = None,
    flag: str | None = None,
    layer_flag: bool = True,
):
    """The checks of an AnnData input of a single-cell command, before anything is written.

    Parameters
    ----------
    adata
        Cells x genes, in memory or backed.
    where
        The file (or placeholder) messages start with.
    command
        The command (or function) named in messages, e.g. ``"netinfer celltype-networks"``.
    layer
        Check ``adata.layers[layer]`` instead of ``X``.
    counts
        Require raw counts (non-negative integers); otherwise finite values only.
    cell_type_key
        The label column, when the command reads labels.
    flag
        The option naming the label column, for messages.
    layer_flag
        Whether the command has a ``--layer`` option (for the remedy it suggests).

    Returns
    -------
    The matrix checked, and which cells have a label (all ``True`` without ``cell_type_key``).
    """
    X, what = matrix_of(adata, layer, where, flag=" (--layer)")
    require_ids(adata, where, what=what)
    labelled = (
        np.ones(adata.n_obs, dtype=bool)
        if cell_type_key is None
        else labelled_cells(adata, cell_type_key, where, flag=flag)
    )
    check_matrix(
        X,
        where,
        what=what,
        cells=adata.obs_names,
        genes=adata.var_names,
        counts_for=command if counts else None,
        remedy=counts_remedy(adata, layer_flag=layer_flag) if counts else "",
    )
    return X, labelled


def require_output_path(path, *, flag: str, what: str, folder: bool = False) -> None:
    """Raise unless ``path`` can be written as a file (or, with ``folder``, a folder): what is
    there already is of that kind, and no folder above it is a file. Checked before the work, so
    that a long run does not fail at its last step; ``flag`` and ``what`` (e.g. ``"the JSON file
    to write"``) make the message."""
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        raise InputError(
            f"{path}: is {'a directory' if path.is_dir() else 'a file'}; {flag} takes {what}"
        )
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{path}: {parent} is a file, not a folder ({flag})")
            return


def check_edges(
    table: pd.DataFrame,
    where: str,
    *,
    directed: bool = True,
    finite: list[str] | None = None,
    lines: np.ndarray | None = None,
) -> None:
    """Raise unless an edge table (``source``, ``target`` and numeric attributes) has non-empty
    ids, finite numbers in the columns ``finite`` (default: every numeric column) and no edge
    twice (either order, when undirected).

    ``lines`` gives each row's line in the file, for messages (default: the row number).
    """

    def at(row: int) -> str:
        return f"line {lines[row]}" if lines is not None else f"row {row}"

    for column in ("source", "target"):
        blank = np.flatnonzero((table[column].astype(str).str.strip() == "").to_numpy())
        if blank.size:
            raise InputError(
                f"{where}: {at(blank[0])}: empty gene id in the {column} column "
                f"({blank.size} such row(s))"
            )
    for column in table.columns.drop(["source", "target"]) if finite is None else finite:
        if not pd.api.types.is_numeric_dtype(table[column]):
            continue
        values = table[column].to_numpy(np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise InputError(
                f"{where}: {at(bad[0])}: {column} is {values[bad[0]]} ({bad.size} non-finite "
                f"value(s) in column {column!r}); expected finite numbers"
            )
    source, target = table["source"].astype(str), table["target"].astype(str)
    if not directed:  # one unordered pair: either order is the same edge
        ordered = source <= target
        source, target = source.where(ordered, target), target.where(ordered, source)
    twice = np.flatnonzero(pd.MultiIndex.from_arrays([source, target]).duplicated())
    if twice.size:
        row = int(twice[0])
        first = int(np.flatnonzero((source == source.iloc[row]) & (target == target.iloc[row]))[0])
        raise InputError(
            f"{where}: {at(row)}: duplicated edge {source.iloc[row]} -> {target.iloc[row]}"
            f"{'' if directed else ' (undirected: either order)'}, first at {at(first)}; "
            f"{twice.size} duplicated edge(s) in all"
        )


def _examples(values) -> str:
    values = list(values)
    shown = ", ".join(repr(str(v)) for v in values[:_N_EXAMPLES])
    return shown + (f" and {len(values) - _N_EXAMPLES} more" if len(values) > _N_EXAMPLES else "")
