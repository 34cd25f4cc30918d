"""Reading expression matrices and regulator lists, writing ARACNe network files.

Readers validate their input and raise :class:`InputError` with a message that starts with the
file path (or ``'<array>'`` for in-memory data) and says where the problem is, so that a user
can fix the file without a debugger. Writers replace their output atomically.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import sys
import uuid
import warnings
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
# pandas and scipy.sparse are imported where they are needed: `netinfer aracne` on a text
# matrix needs neither until its result table (tests/test_imports.py)

__all__ = [
    "Expression",
    "InputError",
    "atomic_write",
    "read_expression",
    "read_network",
    "read_regulators",
    "validate_expression",
    "write_aracne3",
    "write_aracne_ap",
]

_ARRAY = "<array>"
_N_EXAMPLES = 3
_TEXT_SEPARATORS = {".tsv": "\t", ".txt": "\t", ".csv": ","}
# Cell texts that mean "missing" rather than "garbage": reported as non-finite values, not as
# non-numeric cells. Compared after stripping and lower-casing.
_MISSING_TOKENS = frozenset({"", "na", "nan", "-nan", "n/a", "#n/a", "null", "<na>"})


class InputError(ValueError):
    """Bad user input.

    The message always starts with the file path (or ``'<array>'`` for in-memory data) and names
    the row/gene/sample and the problem.
    """


# eq=False: field-wise ``==`` on numpy arrays is ambiguous, so compare by identity.
@dataclass(frozen=True, eq=False)
class Expression:
    """A validated expression matrix.

    Attributes
    ----------
    X
        Samples x genes, float64, C-contiguous, all values finite.
    genes
        Gene ids, object array of str, length ``X.shape[1]``, unique.
    samples
        Sample ids, object array of str, length ``X.shape[0]``.
    source
        File path, or ``'<array>'`` for in-memory data.
    orientation
        Human-readable sentence saying which layout was assumed, with the counts.
    """

    X: np.ndarray
    genes: np.ndarray
    samples: np.ndarray
    source: str
    orientation: str


def read_expression(
    path: str | os.PathLike[str], *, layer: str | None = None, min_samples: int = 3
) -> Expression:
    """Read and validate an expression matrix.

    Parameters
    ----------
    path
        ``.h5ad`` (AnnData, cells x genes) or ``.tsv``/``.txt``/``.csv``, optionally gzipped
        (``.tsv.gz`` etc.), in ARACNe layout: genes x samples, one header line (gene id column
        name, then sample names), then one line per gene (gene id, then one value per sample).
        Text files are tab-separated, ``.csv`` comma-separated, with no quoting. A header one
        field short (as R's ``write.table`` writes it) is accepted with a warning.
    layer
        For ``.h5ad`` only: use ``adata.layers[layer]`` instead of ``adata.X``.
    min_samples
        Fewest samples (cells) accepted.

    Returns
    -------
    Expression
        Samples x genes matrix with ids, source and a sentence describing the layout assumed.

    Raises
    ------
    InputError
        If the file is missing, malformed, has non-numeric or non-finite values, duplicated gene
        ids or too few samples. The message starts with ``path``.
    """
    source = os.fspath(path)
    _require_file(source)
    name = Path(source).name.lower()
    if name.endswith(".h5ad"):
        return _read_h5ad(source, layer=layer, min_samples=min_samples)
    stem = name.removesuffix(".gz")
    sep = next((s for ext, s in _TEXT_SEPARATORS.items() if stem.endswith(ext)), None)
    if sep is None:
        raise InputError(
            f"{source}: unsupported file type; expected .h5ad, .tsv, .txt or .csv "
            "(text formats optionally gzipped, e.g. .tsv.gz)"
        )
    if layer is not None:
        raise InputError(f"{source}: layer={layer!r} is only meaningful for .h5ad files")
    try:
        X, genes, samples = _read_text_matrix(source, sep)
    except (UnicodeDecodeError, EOFError, gzip.BadGzipFile) as exc:
        raise InputError(f"{source}: cannot read as UTF-8 text ({exc})") from None
    expr = validate_expression(X, genes, samples=samples, source=source, min_samples=min_samples)
    return replace(
        expr,
        orientation=f"read {source} as genes x samples (ARACNe layout): "
        f"{X.shape[1]} genes (rows), {X.shape[0]} samples (columns)",
    )


def validate_expression(
    X,
    genes: Sequence[str] | np.ndarray,
    *,
    samples: Sequence[str] | np.ndarray | None = None,
    source: str = _ARRAY,
    min_samples: int = 3,
) -> Expression:
    """Validate an in-memory samples x genes matrix.

    Parameters
    ----------
    X
        Samples x genes array-like or scipy sparse matrix of real numbers.
    genes
        Gene ids, one per column of ``X``.
    samples
        Sample ids, one per row of ``X``; defaults to ``'0'``, ``'1'``, ...
    source
        Where the data came from, used as the prefix of error messages.
    min_samples
        Fewest samples accepted.

    Returns
    -------
    Expression
        ``X`` as C-contiguous float64 with ids as object arrays of str.

    Raises
    ------
    InputError
        If ``X`` is not 2-D, empty, not numeric or not finite, if the ids do not match its shape,
        if gene ids are duplicated or if there are fewer than ``min_samples`` samples.

    Warns
    -----
    UserWarning
        For duplicated sample ids and for constant genes.
    """
    X = X.toarray() if _is_sparse(X) else np.asarray(X)
    if X.ndim != 2:
        raise InputError(f"{source}: expected a 2-D samples x genes matrix, got {X.ndim}-D")
    if X.size == 0:
        raise InputError(f"{source}: empty matrix ({X.shape[0]} samples x {X.shape[1]} genes)")
    if X.dtype.kind not in "biufO":
        raise InputError(f"{source}: expression values must be real numbers, got dtype {X.dtype}")
    try:
        X = np.ascontiguousarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{source}: expression values must be real numbers ({exc})") from None
    n_samples, n_genes = X.shape

    genes = _as_ids(genes)
    if len(genes) != n_genes:
        raise InputError(f"{source}: {len(genes)} gene ids for {n_genes} matrix columns")
    samples = _as_ids(range(n_samples) if samples is None else samples)
    if len(samples) != n_samples:
        raise InputError(f"{source}: {len(samples)} sample ids for {n_samples} matrix rows")

    if n_samples < min_samples:
        raise InputError(
            f"{source}: {n_samples} samples, but at least {min_samples} are needed "
            f"(min_samples={min_samples})"
        )
    dup_genes = _duplicated(genes)
    if len(dup_genes):
        raise InputError(
            f"{source}: {len(dup_genes)} gene ids occur more than once "
            f"(e.g. {_examples(dup_genes, quote=True)}); gene ids must be unique"
        )
    dup_samples = _duplicated(samples)
    if len(dup_samples):
        warnings.warn(
            f"{source}: {len(dup_samples)} sample ids occur more than once "
            f"(e.g. {_examples(dup_samples, quote=True)})",
            UserWarning,
            stacklevel=2,
        )

    bad = ~np.isfinite(X)
    if bad.any():
        rows, cols = np.nonzero(bad)
        where = "; ".join(
            f"gene {genes[c]!r}, sample {samples[r]!r}: {X[r, c]}"
            for r, c in zip(rows[:_N_EXAMPLES], cols[:_N_EXAMPLES], strict=True)
        )
        more = ", ..." if len(rows) > _N_EXAMPLES else ""
        raise InputError(
            f"{source}: {len(rows)} non-finite values (NA, NaN, empty or inf) in "
            f"{len(np.unique(cols))} genes and {len(np.unique(rows))} samples (e.g. {where}{more})"
            "; ARACNe-AP would silently read NA as 0, netinfer refuses: impute the values or "
            "drop the affected genes or samples"
        )

    # Exact test rather than var() == 0, which rounding can make slightly positive.
    constant = np.flatnonzero(X.max(axis=0) == X.min(axis=0))
    if len(constant):
        warnings.warn(
            f"{source}: {len(constant)} of {n_genes} genes are constant across samples "
            f"(e.g. {_examples(genes[constant], quote=True)}); constant genes carry no "
            "information and will be ignored by ARACNe",
            UserWarning,
            stacklevel=2,
        )

    return Expression(
        X=X,
        genes=genes,
        samples=samples,
        source=source,
        orientation=f"{source} as samples x genes: {n_samples} samples (rows), "
        f"{n_genes} genes (columns)",
    )


def read_regulators(
    path: str | os.PathLike[str], *, genes: Iterable[str] | None = None
) -> list[str]:
    """Read a regulator list: one id per line.

    Surrounding whitespace is stripped; blank lines and lines starting with ``#`` are skipped.

    Parameters
    ----------
    path
        Text file, optionally gzipped (``.gz``).
    genes
        Gene ids of the expression matrix. If given, regulators absent from it are dropped with
        a warning.

    Returns
    -------
    list of str
        Unique regulator ids in file order (only those present in ``genes`` if it is given).

    Raises
    ------
    InputError
        If the file is missing, holds no ids, has a line with more than one field (tab or
        comma), or if none of its ids is in ``genes``.

    Warns
    -----
    UserWarning
        For duplicated ids and for ids absent from ``genes``.
    """
    source = os.fspath(path)
    _require_file(source)
    ids: dict[str, None] = {}  # dict keeps first-occurrence order
    n_dup = 0
    try:
        with _open_text(source) as fh:
            for lineno, line in enumerate(fh, 1):
                rid = line.strip()
                if not rid or rid.startswith("#"):
                    continue
                if "\t" in rid or "," in rid:
                    raise InputError(
                        f"{source}: line {lineno}: {rid!r} has more than one field; "
                        "expected one regulator id per line"
                    )
                if rid in ids:
                    n_dup += 1
                ids[rid] = None
    except (UnicodeDecodeError, EOFError, gzip.BadGzipFile) as exc:
        raise InputError(f"{source}: cannot read as UTF-8 text ({exc})") from None
    if not ids:
        raise InputError(f"{source}: no regulator ids (empty file, or only comments)")
    if n_dup:
        warnings.warn(
            f"{source}: {n_dup} duplicate regulator ids ignored", UserWarning, stacklevel=2
        )
    regulators = list(ids)
    if genes is None:
        return regulators

    known = set(map(str, genes))
    present = [r for r in regulators if r in known]
    absent = [r for r in regulators if r not in known]
    if not present:
        raise InputError(
            f"{source}: none of the {len(regulators)} regulators is in the expression matrix "
            f"(regulators e.g. {_examples(regulators)}; genes e.g. {_examples(sorted(known))}); "
            "do both use the same kind of gene id?"
        )
    if absent:
        warnings.warn(
            f"{source}: {len(absent)} of {len(regulators)} regulators are absent from the "
            f"expression matrix (e.g. {_examples(absent)}); they are ignored",
            UserWarning,
            stacklevel=2,
        )
    return present


@contextmanager
def atomic_write(path: str | os.PathLike[str], *, binary: bool = False) -> Iterator[IO]:
    """Open ``path`` for writing text (or bytes) so that it is replaced all at once, or not at all.

    Text goes to a temporary file in the same directory, which is fsynced and then renamed onto
    ``path``. If the block raises, the temporary file is removed and an existing file at
    ``path`` is left untouched. Paths ending in ``.gz`` are gzip-compressed. The parent
    directory is created if missing.

    Parameters
    ----------
    path
        Destination file.
    binary
        Yield the raw binary handle instead (no gzip, no text encoding).

    Yields
    ------
    file object
        UTF-8 text handle writing ``\\n`` line endings, or the binary handle.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory; give the path of a file to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    # os.open with 0o666 honours the umask, unlike tempfile.mkstemp's fixed 0o600.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with open(fd, "wb") as raw:
            with ExitStack() as stack:
                if binary:
                    yield raw
                else:
                    stream = raw
                    if path.name.endswith(".gz"):
                        # mtime=0 keeps the output byte-identical across runs.
                        stream = stack.enter_context(
                            gzip.GzipFile(filename=path.name, mode="wb", fileobj=raw, mtime=0)
                        )
                    fh = io.TextIOWrapper(stream, encoding="utf-8", newline="\n")
                    # detach() flushes without closing `raw`, which must stay open for fsync.
                    stack.callback(fh.detach)
                    yield fh
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_aracne_ap(edges: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write a network in ARACNe-AP format, atomically.

    Parameters
    ----------
    edges
        Columns ``regulator``, ``target``, ``mi`` (nats) and ``pvalue``; rows are written in
        this order.
    path
        Output file; gzip-compressed if it ends in ``.gz``.

    Raises
    ------
    ValueError
        If a required column is missing.
    """
    _write_table(
        edges,
        path,
        {"regulator": "Regulator", "target": "Target", "mi": "MI", "pvalue": "pvalue"},
    )


def write_aracne3(edges: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write a network in ARACNe3 format, atomically.

    Parameters
    ----------
    edges
        Columns ``regulator``, ``target``, ``mi`` (nats), ``scc`` (Spearman correlation),
        ``count`` (resamples containing the edge) and ``log_p`` (natural log of the p-value);
        rows are written in this order.
    path
        Output file; gzip-compressed if it ends in ``.gz``.

    Raises
    ------
    ValueError
        If a required column is missing.
    """
    _write_table(
        edges,
        path,
        {
            "regulator": "regulator.values",
            "target": "target.values",
            "mi": "mi.values",
            "scc": "scc.values",
            "count": "count.values",
            "log_p": "log.p.values",
        },
    )


#: ARACNe network file headers -> our edge column names.
NETWORK_HEADERS = {
    "aracne-ap": {"Regulator": "regulator", "Target": "target", "MI": "mi", "pvalue": "pvalue"},
    "aracne3": {
        "regulator.values": "regulator",
        "target.values": "target",
        "mi.values": "mi",
        "scc.values": "scc",
        "count.values": "count",
        "log.p.values": "log_p",
    },
}


def header_matches(fields: Iterable[str], columns: Iterable[str]) -> bool:
    """Whether a header line's fields name ``columns`` in order, in any letter case (so
    ``regulator target mi pvalue`` is an ARACNe-AP header too)."""
    return [f.strip().casefold() for f in fields] == [c.casefold() for c in columns]


def read_network(path: str | os.PathLike[str], *, with_lines: bool = False):
    """Read an ARACNe-AP (``Regulator Target MI pvalue``) or ARACNe3 consolidated network file.

    Parameters
    ----------
    path
        Tab-separated network file, optionally gzipped; the format is detected from its header.

    with_lines
        Also return each row's line number in the file (for messages of later checks).

    Returns
    -------
    DataFrame with ``regulator``, ``target``, ``mi`` and, as the file has them, ``pvalue``,
    ``scc``, ``count`` and ``log_p`` (ARACNe3's ``pvalue`` is derived as exp(log_p)); with
    ``with_lines``, also the line numbers.
    """
    source = os.fspath(path)
    _require_file(source)
    try:
        with _open_text(source) as handle:
            header = handle.readline().rstrip("\r\n").split("\t")
            rows = [line.rstrip("\r\n").split("\t") for line in handle]
    except (UnicodeDecodeError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise InputError(f"{source}: cannot read as UTF-8 text ({exc})") from None
    formats = {name: cols for name, cols in NETWORK_HEADERS.items() if header_matches(header, cols)}
    if not formats:
        expected = " | ".join("\t".join(cols) for cols in NETWORK_HEADERS.values())
        raise InputError(
            f"{source}: line 1: unknown network header {header!r}; expected one of: {expected}"
        )
    columns = next(iter(formats.values()))
    body, lines = [], []
    for number, fields in enumerate(rows, start=2):
        if fields == [""]:
            continue
        if len(fields) != len(columns):
            raise InputError(
                f"{source}: line {number}: expected {len(columns)} tab-separated fields, found "
                f"{len(fields)}: {chr(9).join(fields)[:200]!r}"
            )
        body.append(fields)
        lines.append(number)
    import pandas as pd

    table = pd.DataFrame(body, columns=list(columns.values()))
    for column in table.columns[2:]:
        values = pd.to_numeric(table[column], errors="coerce")
        bad = np.flatnonzero(values.isna().to_numpy())
        if bad.size:
            row = int(bad[0])
            raise InputError(
                f"{source}: line {lines[row]}, column {column!r}: {table[column].iloc[row]!r} is "
                "not a number"
            )
        table[column] = values
    if "log_p" in table.columns:
        table["pvalue"] = np.exp(table["log_p"])
    return (table, np.asarray(lines)) if with_lines else table


def _write_table(edges: pd.DataFrame, path: str | os.PathLike[str], header: dict[str, str]) -> None:
    missing = [c for c in header if c not in edges.columns]
    if missing:
        raise ValueError(f"edges is missing required columns: {', '.join(missing)}")
    with atomic_write(path) as fh:
        # float_format=None writes repr(), the shortest text that round-trips exactly.
        edges[list(header)].to_csv(
            fh, sep="\t", header=list(header.values()), index=False, lineterminator="\n"
        )


def matrix_of(adata, layer: str | None, where: str, *, flag: str = ""):
    """The matrix ``adata.layers[layer]`` (``X`` for None) and its name for messages; a missing
    X or layer is an ``InputError`` naming ``where`` (and ``flag``, the option that chose it)."""
    if layer is None:
        if adata.X is None:
            raise InputError(f"{where}: empty matrix (the AnnData object has no X)")
        return adata.X, "X"
    if layer not in adata.layers:
        available = ", ".join(map(repr, adata.layers)) or "none"
        raise InputError(f"{where}: no layer {layer!r}{flag}; available layers: {available}")
    return adata.layers[layer], f"layer {layer!r}"


def _read_h5ad(source: str, *, layer: str | None, min_samples: int) -> Expression:
    # Imported here: anndata is slow to import and only needed for .h5ad input.
    import anndata

    try:
        with warnings.catch_warnings():
            # anndata warns about non-unique names; validate_expression reports them itself.
            warnings.filterwarnings(
                "ignore", message=".*names are not unique", category=UserWarning
            )
            adata = anndata.read_h5ad(source)
    except OSError as exc:
        raise InputError(
            f"{source}: not a readable .h5ad file; expected an AnnData file written by anndata "
            f"or scanpy (adata.write_h5ad). The reader said: {exc}"
        ) from None
    X, what = matrix_of(adata, layer, source)
    expr = validate_expression(
        X, adata.var_names, samples=adata.obs_names, source=source, min_samples=min_samples
    )
    return replace(
        expr,
        orientation=f"read {source} {what} as cells x genes (AnnData layout): "
        f"{adata.n_obs} cells (rows), {adata.n_vars} genes (columns)",
    )


def _read_text_matrix(source: str, sep: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Parse a genes x samples text file; return (samples x genes X, genes, samples).

    X may hold NaN for missing cells, left for validate_expression to report.
    """
    with _open_text(source) as fh:
        header_line = fh.readline()
        first_row = next((line for line in fh if line.rstrip("\r\n")), None)
    if not header_line:
        raise InputError(f"{source}: empty matrix (empty file)")
    if first_row is None:
        raise InputError(f"{source}: empty matrix (header line but no data rows)")
    header = header_line.rstrip("\r\n").split(sep)
    n_fields = first_row.count(sep) + 1
    # R's write.table(row.names=TRUE) omits the header cell above the row names; R's own
    # read.table applies this same rule (decided by the first data row).
    if n_fields == len(header) + 1:
        samples = header
        warnings.warn(
            f"{source}: the header line has one field fewer than the data rows (as R's "
            "write.table writes it); assuming the first column holds the gene ids",
            UserWarning,
            stacklevel=3,
        )
    else:
        samples = header[1:]
        n_fields = len(header)
    if n_fields < 2:
        raise InputError(f"{source}: empty matrix (no sample columns)")
    X, genes = _read_plain_rows(source, sep, n_fields)
    if X is not None:
        return X, genes, samples

    import pandas as pd

    try:
        # na_filter=False: 'NA' stays text so gene ids like 'NA' survive and missing cells are
        # found below; low_memory=False avoids chunk-wise dtype guessing (and its warning).
        df = pd.read_csv(
            source,
            sep=sep,
            header=None,
            skiprows=1,
            dtype={0: str},
            na_filter=False,
            quoting=csv.QUOTE_NONE,
            low_memory=False,
            encoding="utf-8",
            compression="gzip" if source.lower().endswith(".gz") else None,
        )
    except pd.errors.ParserError:
        df = None  # a row with too many fields: _data_line_numbers() reports it
    if df is None or df.shape[1] != n_fields:
        _data_line_numbers(source, sep, n_fields)  # raises for the malformed rows
        # Only reached if pandas and the line scan disagree about the table's shape.
        raise InputError(f"{source}: cannot parse as a {sep!r}-separated table")

    genes = df.pop(0).to_numpy(dtype=object)
    blank = np.flatnonzero(pd.Series(genes).str.strip() == "")
    if blank.size:
        lines = _data_line_numbers(source, sep, n_fields)[blank]
        where = ", ".join(str(line) for line in lines[:_N_EXAMPLES])
        more = ", ..." if blank.size > _N_EXAMPLES else ""
        rows = "line" if blank.size == 1 else f"{blank.size} lines, e.g. lines"
        raise InputError(f"{source}: empty gene id on {rows} {where}{more}; every row needs one")
    text_cols = {c for c, dtype in df.dtypes.items() if dtype.kind == "O"}
    if text_cols:
        # Short rows also end up here, padded with '': check the structure first.
        lines = _data_line_numbers(source, sep, n_fields)
        bad: list[tuple[int, int, str]] = []
        columns = {}
        for i, (c, col) in enumerate(df.items()):
            if c in text_cols:
                values = pd.to_numeric(col, errors="coerce")
                missing = col.str.strip().str.lower().isin(_MISSING_TOKENS)
                bad.extend((r, i, col.iat[r]) for r in np.flatnonzero(values.isna() & ~missing))
                col = values.where(~missing)
            columns[c] = col
        if bad:
            bad.sort()
            where = [
                f"line {lines[r]}, gene {genes[r]!r}, sample {samples[c]!r}: {cell!r}"
                for r, c, cell in bad[:_N_EXAMPLES]
            ]
            if len(bad) == 1:
                raise InputError(f"{source}: {where[0]} is not a number")
            more = "; ..." if len(bad) > _N_EXAMPLES else ""
            raise InputError(
                f"{source}: {len(bad)} cells are not numbers, e.g. {'; '.join(where)}{more}"
            )
        df = pd.DataFrame(columns)
    # Parsed columns are stored as one samples x genes block, so this transpose is cheap.
    X = np.ascontiguousarray(df.to_numpy(dtype=np.float64).T)
    return X, genes, samples


class _NotPlain(Exception):
    """A row the fast reader leaves to the thorough one (and its messages)."""


def _read_plain_rows(source: str, sep: str, n_fields: int):
    """The fast path of ``_read_text_matrix``: numpy's C parser over the value fields, the gene
    ids split off line by line. Returns (samples x genes X, gene ids), or (None, None) when any
    row is not plain (wrong field count, empty gene id, a cell that is not a finite number), so
    that the thorough pandas parse finds and names the problem."""
    genes: list[str] = []

    def value_fields(handle):
        for line in handle:
            line = line.rstrip("\r\n")
            if not line:
                continue  # blank lines are skipped, as pandas does
            if line.count(sep) != n_fields - 1:
                raise _NotPlain
            gene, _, values = line.partition(sep)
            if not gene.strip():
                raise _NotPlain
            genes.append(gene)
            yield values

    try:
        with _open_text(source) as fh:
            fh.readline()  # the header
            values = np.loadtxt(
                value_fields(fh), delimiter=sep, dtype=np.float64, comments=None, ndmin=2
            )
    except (_NotPlain, ValueError):  # UnicodeDecodeError too: the thorough parse reports it
        return None, None
    if values.shape != (len(genes), n_fields - 1) or not np.isfinite(values).all():
        return None, None
    return np.ascontiguousarray(values.T), np.asarray(genes, dtype=object)


def _data_line_numbers(source: str, sep: str, n_fields: int) -> np.ndarray:
    """Return the 1-based line number of each data row, or raise for rows of the wrong width.

    Only called when something is wrong: it re-reads the file line by line.
    """
    lines: list[int] = []
    wrong: list[tuple[int, str, int]] = []
    with _open_text(source) as fh:
        next(fh)  # header
        for lineno, line in enumerate(fh, 2):
            line = line.rstrip("\r\n")
            if not line:
                continue  # blank lines are skipped, as pandas does
            lines.append(lineno)
            found = line.count(sep) + 1
            if found != n_fields:
                wrong.append((lineno, line.split(sep, 1)[0], found))
    if wrong:
        expected = f"{n_fields} fields (gene id + {n_fields - 1} samples)"
        if len(wrong) == 1:
            lineno, gene, found = wrong[0]
            raise InputError(
                f"{source}: line {lineno}, gene {gene!r}: expected {expected}, found {found}"
            )
        where = "; ".join(
            f"line {lineno}, gene {gene!r}: {found} fields"
            for lineno, gene, found in wrong[:_N_EXAMPLES]
        )
        more = "; ..." if len(wrong) > _N_EXAMPLES else ""
        raise InputError(
            f"{source}: {len(wrong)} rows have the wrong number of fields (expected {expected}),"
            f" e.g. {where}{more}"
        )
    return np.asarray(lines)


def _require_file(source: str) -> None:
    """Raise InputError unless ``source`` is an existing file (naming a directory as such)."""
    if os.path.isdir(source):
        raise InputError(f"{source}: is a directory, not a file")
    if not os.path.isfile(source):
        raise InputError(f"{source}: no such file")


def _open_text(source: str) -> IO[str]:
    # utf-8-sig drops a byte-order mark, which would otherwise stick to the first header cell.
    if source.lower().endswith(".gz"):
        return gzip.open(source, "rt", encoding="utf-8-sig")
    return open(source, encoding="utf-8-sig")


def _is_sparse(X) -> bool:
    """Whether X is a SciPy sparse matrix (if it is, scipy.sparse was imported already)."""
    sparse = sys.modules.get("scipy.sparse")
    return sparse is not None and sparse.issparse(X)


def _duplicated(ids: np.ndarray) -> list[str]:
    """The ids that occur more than once, in the order of their second occurrence."""
    seen: set[str] = set()
    repeated: dict[str, None] = {}
    for i in ids:
        if i in seen:
            repeated[i] = None
        seen.add(i)
    return list(repeated)


def _as_ids(ids: Iterable) -> np.ndarray:
    return np.asarray([str(i) for i in ids], dtype=object)


def _examples(values: Iterable, *, quote: bool = False) -> str:
    values = list(values)
    shown = [repr(v) if quote else str(v) for v in values[:_N_EXAMPLES]]
    return ", ".join(shown) + (", ..." if len(values) > _N_EXAMPLES else "")
