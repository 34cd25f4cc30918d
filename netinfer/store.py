"""The graph store: every network of the project in one Zarr v3 group, with one gene vocabulary.

Layout (``V`` = vocabulary size when the graph was written)::

    STORE/                      attrs["netinfer_graph_store"] = {schema_version, created,
      vocab/<key>/symbols         tool_version, vocab: <key>, graphs: {name: record}}
      vocab/<key>/ensembl       gene symbols and Ensembl ids ("" when unknown); append-only
      graphs/<key>/             attrs: name, kind, directed, cell_type, sources, params, ...
        adjacency/              CSR, anndata's sparse encoding (data, indices, indptr; V x V)
        edge_attrs/<attr>       per-edge arrays aligned with adjacency/data (mi, pvalue, ...)

Publishing: a graph (or a grown vocabulary) is written under a fresh random key and becomes
visible only when the root attributes, a single atomic write, point to it. A crash leaves at most
unreferenced data, which ``validate`` reports and ``cleanup`` removes, never a half-written graph.
A writer holds a lock file, so a second writer gets a clear error; readers take no lock, so many
data-loader processes can read at once. Vocabulary indices never change: new genes are appended,
and each graph records a checksum of the vocabulary prefix it indexes.

Directed regulator -> target edges are stored as given; ``symmetrize=True`` derives the
undirected view (max of both directions) on request. Undirected graphs (PPI) store each pair once.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import socket
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from llvmlite import ir
from llvmlite.binding import llvm_version_info
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from netinfer.io import InputError, read_network, write_aracne3, write_aracne_ap
from netinfer.sc.validate import check_edges

SCHEMA_VERSION = 1
ROOT_KEY = "netinfer_graph_store"
LOCK_NAME = ".netinfer-writer.lock"
KINDS = ("grn", "ppi", "consensus", "integrated", "cellspecific")
CHUNK = 1 << 20
#: Columns that hold a DataFrame's edge endpoints, tried in this order.
ENDPOINTS = (("regulator", "target"), ("source", "target"), ("gene_a", "gene_b"))


class StoreError(Exception):
    """A store that cannot be used as asked: locked, newer schema, missing graph, corrupted."""


def _tool_version() -> str:
    from netinfer import __version__

    return __version__


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _checksum(values: np.ndarray) -> str:
    """SHA-256 of an array's values (strings joined by newlines, numbers as little-endian bytes)."""
    digest = hashlib.sha256()
    if values.dtype.kind in "OUT":
        digest.update("\n".join(map(str, values)).encode())
    else:
        digest.update(values.dtype.str.encode())
        digest.update(np.ascontiguousarray(values).tobytes())
    return digest.hexdigest()


def file_checksum(path: str | os.PathLike[str]) -> dict:
    """Provenance of an input file: its path, size and SHA-256."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"path": os.fspath(path), "bytes": os.path.getsize(path), "sha256": digest.hexdigest()}


@dataclass
class Graph:
    """A graph read from the store.

    Attributes
    ----------
    name
        The graph's name in the store.
    adjacency
        SciPy CSR over the store's whole vocabulary (rows regulators / sources, columns targets).
    genes
        The vocabulary: gene symbol of each row and column.
    edge_attrs
        Per-edge arrays aligned with ``adjacency.data`` (which holds the graph's weight).
    meta
        Kind, directedness, cell type, sources with checksums, parameters, tool version, time.
    """

    name: str
    adjacency: sp.csr_matrix
    genes: np.ndarray
    edge_attrs: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def to_dataframe(self) -> pd.DataFrame:
        """One row per edge: ``source``, ``target``, ``weight`` and the edge attributes."""
        coo = self.adjacency.tocoo()
        table = pd.DataFrame(
            {"source": self.genes[coo.row], "target": self.genes[coo.col], "weight": coo.data}
        )
        for name, values in self.edge_attrs.items():
            table[name] = values
        return table


@dataclass
class Assignment:
    """Per-cell graphs: cell i uses graph ``graph_index[i]``; ``graph(j)`` gives its edges.

    ``label_cells`` are the ids of the cells whose labels the making of the graphs read (an
    integration's labelled reference cells), ``None`` when none were recorded (an assignment
    that read no labels, or one written before they were recorded).
    """

    cells: np.ndarray
    graph_index: np.ndarray
    weights: np.ndarray
    cell_types: np.ndarray
    edge_rows: np.ndarray
    edge_cols: np.ndarray
    graph_offsets: np.ndarray
    graph_edges: np.ndarray
    meta: dict = field(default_factory=dict)
    label_cells: np.ndarray | None = None

    @property
    def n_graphs(self) -> int:
        return len(self.graph_offsets) - 1

    def graph(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Graph j: source and target vocabulary indices of its edges."""
        edges = self.graph_edges[self.graph_offsets[j] : self.graph_offsets[j + 1]]
        return self.edge_rows[edges], self.edge_cols[edges]

    def cell_graph(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """The graph of cell i."""
        return self.graph(int(self.graph_index[i]))


class AssignmentWriter:
    """Streams distinct graphs of an assignment into the store, then publishes it atomically.

    Graph j is a list of indices into the edge list given to ``publish`` (``edge_rows`` ->
    ``edge_cols``, vocabulary indices). Nothing is visible until ``publish``; an abandoned writer
    leaves unreferenced data that ``GraphStore.cleanup`` removes.
    """

    def __init__(self, store: GraphStore, name: str):
        self._store = store
        self.name = name
        self.key = uuid.uuid4().hex
        self._group = None  # created at the first write: a writer given up before then
        self._edges = None  # (e.g. on an input error) leaves the store's bytes unchanged
        self._offsets = [0]
        self._buffer: list[np.ndarray] = []
        self._buffered = 0
        self._largest_edge = -1  # checked at publish without reading the edges back

    @property
    def n_graphs(self) -> int:
        return len(self._offsets) - 1

    def add_graph(self, edges: np.ndarray) -> int:
        """Append one graph (its edge indices); return its index j."""
        self._buffer.append(np.asarray(edges, dtype=np.int32))
        self._buffered += len(edges)
        if len(edges):
            self._largest_edge = max(self._largest_edge, int(self._buffer[-1].max()))
        self._offsets.append(self._offsets[-1] + len(edges))
        if self._buffered >= 4 * CHUNK:
            self._flush()
        return self.n_graphs - 1

    def _open(self):
        if self._group is None:
            self._group = self._store._group.create_group(f"assignments/{self.key}")
            self._group.create_group("graphs")
            self._edges = self._group.create_array(
                "graphs/edges", shape=(0,), dtype=np.int32, chunks=(CHUNK,)
            )
        return self._group

    def _flush(self) -> None:
        if self._buffer:
            self._open()
            self._edges.append(np.concatenate(self._buffer))
            self._buffer, self._buffered = [], 0

    def publish(
        self,
        *,
        cells: Sequence[str],
        graph_index: np.ndarray,
        weights: np.ndarray,
        cell_types: Sequence[str],
        edge_rows: np.ndarray,
        edge_cols: np.ndarray,
        params: dict | None = None,
        label_cells: Sequence[str] | None = None,
    ) -> None:
        """Write each cell's graph index and posterior, then make the assignment visible.

        Parameters
        ----------
        cells
            Cell ids.
        graph_index
            For each cell, its graph j.
        weights
            Cells x cell types: each cell's posterior over ``cell_types``.
        cell_types
            Column names of ``weights``.
        edge_rows, edge_cols
            The edge list the graphs index into (vocabulary indices).
        params
            How the assignment was made (JSON-serializable).
        label_cells
            Ids of the cells whose labels the graphs were made from (an integration's
            reference), stored as the array ``label_cells`` so evaluations can refuse graphs
            that carry their cells' labels; ``None``: no such array.
        """
        arrays = {
            "cells": np.asarray(cells, dtype=str),
            "graph_index": np.asarray(graph_index, dtype=np.int32),
            "weights": np.asarray(weights, dtype=np.float32),
            "cell_types": np.asarray(cell_types, dtype=str),
            "edges/rows": np.asarray(edge_rows, dtype=np.int32),
            "edges/cols": np.asarray(edge_cols, dtype=np.int32),
            "graphs/offsets": np.asarray(self._offsets, dtype=np.int64),
        }
        if label_cells is not None:
            arrays["label_cells"] = np.asarray(label_cells, dtype=str)
        n_cells = len(arrays["cells"])
        index = arrays["graph_index"]
        n_edges = len(arrays["edges/rows"])
        problems = [
            (index.shape != (n_cells,), "graph_index needs one entry per cell"),
            (
                arrays["weights"].shape != (n_cells, len(arrays["cell_types"])),
                "weights must be cells x cell_types",
            ),
            (
                n_cells and not 0 <= index.min() <= index.max() < self.n_graphs,
                "graph_index out of range",
            ),
            (n_edges != len(arrays["edges/cols"]), "edge_rows and edge_cols differ in length"),
            (
                self._largest_edge >= n_edges,
                "a graph indexes past the edge list",
            ),
            (
                n_edges
                and max(arrays["edges/rows"].max(), arrays["edges/cols"].max())
                >= len(self._store.genes),
                "edges outside the vocabulary",
            ),
        ]
        for failed, message in problems:
            if failed:
                raise ValueError(f"assignment {self.name!r}: {message}")
        self._flush()
        self._open().create_group("edges")
        for path, values in arrays.items():
            chunks = (max(1, min(CHUNK, values.shape[0])),) + values.shape[1:]
            dtype = str if values.dtype.kind == "U" else values.dtype
            array = self._group.create_array(path, shape=values.shape, dtype=dtype, chunks=chunks)
            if values.size:
                array[:] = values
        self._group.attrs.update(
            {
                "name": self.name,
                "n_graphs": self.n_graphs,
                "params": json.loads(json.dumps(params or {}, default=str)),
                "tool_version": _tool_version(),
                "created": _now(),
            }
        )
        assignments = dict(self._store._root.get("assignments", {}))
        replaced = assignments.get(self.name)
        assignments[self.name] = self.key
        self._store._update_root(assignments=assignments)
        if replaced is not None:
            del self._store._group[f"assignments/{replaced}"]


@njit(cache=True)
def _induced_edges(indptr, indices, cell_genes, member, local_of, edge_buf):
    """Edges among ``cell_genes``: local source, local target and position in the CSR arrays.

    One pass over the cell's rows stores every edge position and advances only on targets inside
    the cell, so the hot loop has one byte lookup (``member``, the vocabulary as a 0/1 mask) and
    one store per edge, without branches. ``member``, ``local_of`` (all -1) and ``edge_buf``
    (length nnz) are scratch; the first two are restored before returning.
    """
    n_local = cell_genes.shape[0]
    n_rows = member.shape[0]
    for k in range(n_local):
        g = cell_genes[k]
        if g < 0 or g >= n_rows:
            for done in range(k):
                member[cell_genes[done]] = 0
                local_of[cell_genes[done]] = -1
            raise IndexError("gene index outside the vocabulary")
        member[g] = 1
        local_of[g] = k
    row_end = np.empty(n_local, dtype=np.int64)
    pos = 0
    for k in range(n_local):
        g = cell_genes[k]
        for e in range(indptr[g], indptr[g + 1]):
            edge_buf[pos] = e
            pos += np.int64(member[indices[e]])
        row_end[k] = pos
    src = np.empty(pos, dtype=np.int32)
    dst = np.empty(pos, dtype=np.int32)
    edges = edge_buf[:pos].copy()
    start = 0
    for k in range(n_local):
        for p in range(start, row_end[k]):
            src[p] = k
            dst[p] = local_of[indices[edges[p]]]
        start = row_end[k]
    for k in range(n_local):
        member[cell_genes[k]] = 0
        local_of[cell_genes[k]] = -1
    return src, dst, edges


@intrinsic
def _prefetch(typingctx, array, index):
    """Ask the CPU to start loading ``array[index]`` into its caches (``llvm.prefetch``: a hint
    that never faults and never stalls, unlike a load)."""

    def codegen(context, builder, signature, args):
        view = context.make_array(signature.args[0])(context, builder, args[0])
        byte_pointer = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        function = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32]),
            _PREFETCH_INTRINSIC,
        )
        pointer = builder.bitcast(builder.gep(view.data, [args[1]]), byte_pointer)
        builder.call(function, [pointer, i32(0), i32(3), i32(1)])  # read, keep, data cache
        return context.get_dummy_value()

    return types.void(array, index), codegen


# LLVM names the intrinsic by pointer type: opaque pointers ("p0") from LLVM 17 on
_PREFETCH_INTRINSIC = "llvm.prefetch.p0" if llvm_version_info[0] >= 17 else "llvm.prefetch.p0i8"
_ROWS_AHEAD = 8  # rows prefetched ahead of the scan: measured best among 2-32


@njit(cache=True)
def _undirected_edges(indptr, upper_indices, cell_genes, labels, label_of, out):
    """Both directions of every edge among ``cell_genes``, scanning only the upper triangle.

    ``upper_indices`` holds the columns of the symmetrized graph's upper triangle (diagonal
    included), so each undirected edge is read once (half the scan of the full symmetric rows)
    and mirrored. Edges are written as ``labels`` of their genes into ``out[:, :count]``;
    ``label_of`` (all -1) is scratch, restored before returning. Returns ``count``.

    The cell's rows lie scattered in a graph far larger than the caches, and each row is too
    short for the CPU to reach the next row's load by itself, so their misses would come one
    after another: the row ``_ROWS_AHEAD`` ahead is prefetched (about 2x faster here).
    """
    n_rows = label_of.shape[0]
    for k in range(cell_genes.shape[0]):
        g = cell_genes[k]
        if g < 0 or g >= n_rows:
            for done in range(k):
                label_of[cell_genes[done]] = -1
            raise IndexError("gene index outside the vocabulary")
        label_of[g] = labels[k]
        _prefetch(indptr, g)
    count = 0
    for k in range(cell_genes.shape[0]):
        if k + _ROWS_AHEAD < cell_genes.shape[0]:
            _prefetch(upper_indices, indptr[cell_genes[k + _ROWS_AHEAD]])
        g = cell_genes[k]
        source = labels[k]
        for e in range(indptr[g], indptr[g + 1]):
            target = label_of[upper_indices[e]]
            out[0, count] = source
            out[1, count] = target
            count += np.int64(target >= 0)
    upper = count
    for p in range(upper):
        if out[0, p] != out[1, p]:
            out[0, count] = out[1, p]
            out[1, count] = out[0, p]
            count += 1
    for k in range(cell_genes.shape[0]):
        label_of[cell_genes[k]] = -1
    return count


@dataclass
class _Loaded:
    """A graph held in memory for fast subgraphs: CSR arrays (uint16 column indices when the
    vocabulary allows: half the memory traffic of the scan) and its edge attributes."""

    matrix: sp.csr_matrix
    scan_indices: np.ndarray
    attrs: dict


class GraphStore:
    """A Zarr v3 graph store; see the module docstring for layout and guarantees.

    Use ``GraphStore.create(path)`` for a new store and ``GraphStore.open(path, mode)`` for an
    existing one (``"r"`` to read, ``"a"`` to add and remove graphs). Paths may be local paths or
    fsspec URLs (``file:///...``). Writers should close the store (or use ``with``) to release
    their lock.
    """

    def __init__(self, url: str, group, *, writable: bool, release: Callable[[], None]):
        self.url = url
        self._group = group
        self.writable = writable
        self._release = release
        self._cache: dict[tuple[str, str], _Loaded] = {}
        self._genes: np.ndarray | None = None
        self._buffers: dict[str, np.ndarray] = {}

    # ----------------------------------------------------------------- opening and closing
    @classmethod
    def create(cls, path: str | os.PathLike[str], *, overwrite: bool = False) -> GraphStore:
        """Create an empty store (``overwrite=True`` replaces an existing one)."""
        import zarr

        url = os.fspath(path)
        _refuse_foreign(url)
        if _exists(url) and not overwrite:
            raise StoreError(f"{url}: already exists; open it, or pass overwrite=True")
        release = _acquire_lock(url)
        try:
            fs, path = _fs_and_path(url)
            for entry in fs.ls(path, detail=False):  # mode "w" would also delete the lock
                if not entry.endswith(LOCK_NAME):
                    fs.rm(entry, recursive=True)
            group = zarr.open_group(url, mode="a", **_storage_options(url))
            store = cls(url, group, writable=True, release=release)
            vocab_key = store._write_vocab(np.array([], dtype=str), np.array([], dtype=str))
            group.attrs[ROOT_KEY] = {
                "schema_version": SCHEMA_VERSION,
                "created": _now(),
                "tool_version": _tool_version(),
                "vocab": vocab_key,
                "graphs": {},
            }
            group.require_group("graphs")
        except BaseException:
            release()
            raise
        return store

    @classmethod
    def open(cls, path: str | os.PathLike[str], mode: str = "r") -> GraphStore:
        """Open an existing store for reading (``"r"``) or adding/removing graphs (``"a"``)."""
        import zarr

        url = os.fspath(path)
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', not {mode!r}")
        if not _exists(url):
            fs, where = _fs_and_path(url)
            if fs.isfile(where):
                raise StoreError(
                    f"{url}: is a file, not a graph store (a Zarr directory such as graphs.zarr)"
                )
            raise StoreError(
                f"{url}: no such graph store; create one with `netinfer store create {url}` (or "
                "let netinfer celltype-networks, aracne --store or ppi create it; in Python, "
                "GraphStore.create)"
            )
        release = _acquire_lock(url) if mode == "a" else _nothing
        try:
            group = zarr.open_group(url, mode="r" if mode == "r" else "r+", **_storage_options(url))
            root = group.attrs.get(ROOT_KEY)
            if root is None:
                raise StoreError(
                    f"{url}: a Zarr group, but not a netinfer graph store (a gremln cell store?); "
                    "give the graph store (netinfer store create, celltype-networks)"
                )
            if root["schema_version"] > SCHEMA_VERSION:
                raise StoreError(
                    f"{url}: written with graph-store schema version {root['schema_version']}; "
                    f"this netinfer ({_tool_version()}) reads up to version {SCHEMA_VERSION}. "
                    "Upgrade netinfer to read it."
                )
        except BaseException:
            release()
            raise
        return cls(url, group, writable=mode == "a", release=release)

    def close(self) -> None:
        """Release the writer lock (if held); the store is read-only afterwards."""
        self._release()
        self._release = _nothing
        self.writable = False

    def __enter__(self) -> GraphStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "a" if self.writable else "r"
        return f"GraphStore({self.url!r}, mode={mode!r}, {len(self._root['graphs'])} graphs)"

    # ----------------------------------------------------------------- vocabulary
    @property
    def _root(self) -> dict:
        return self._group.attrs[ROOT_KEY]

    @property
    def genes(self) -> np.ndarray:
        """Gene symbols of the vocabulary; index i is gene i in every graph."""
        if self._genes is None:
            self._genes = np.asarray(self._vocab_array("symbols")[:], dtype=object)
        return self._genes

    @property
    def ensembl(self) -> np.ndarray:
        """Ensembl ids of the vocabulary ("" where unknown)."""
        return np.asarray(self._vocab_array("ensembl")[:], dtype=object)

    def _vocab_array(self, name: str):
        return self._group[f"vocab/{self._root['vocab']}/{name}"]

    def gene_index(self, genes: Iterable[str]) -> np.ndarray:
        """Vocabulary indices of ``genes`` (-1 for genes not in the vocabulary)."""
        position = {gene: i for i, gene in enumerate(self.genes)}
        return np.array([position.get(str(g), -1) for g in genes], dtype=np.int64)

    def add_genes(self, genes: Sequence[str], ensembl: Sequence[str] | None = None) -> np.ndarray:
        """Append new genes to the vocabulary (existing indices never change); return indices.

        Raises StoreError when a gene's given Ensembl id contradicts the one in the store.
        """
        self._require_writable()
        genes = [str(g) for g in genes]
        ensembl = [""] * len(genes) if ensembl is None else [str(e) for e in ensembl]
        if len(ensembl) != len(genes):
            raise ValueError("genes and ensembl must have the same length")
        symbols, ids = list(self.genes), list(self.ensembl)
        position = {gene: i for i, gene in enumerate(symbols)}
        changed = False
        for gene, ens in zip(genes, ensembl):
            i = position.get(gene)
            if i is None:
                position[gene] = len(symbols)
                symbols.append(gene)
                ids.append(ens)
                changed = True
            elif ens and ids[i] and ids[i] != ens:
                raise StoreError(
                    f"{self.url}: vocabulary mismatch: gene {gene!r} is {ids[i]} in the store "
                    f"but {ens} in the new data"
                )
            elif ens and not ids[i]:
                ids[i] = ens
                changed = True
        if changed:
            old_key = self._root["vocab"]
            key = self._write_vocab(np.array(symbols, dtype=str), np.array(ids, dtype=str))
            self._update_root(vocab=key)
            del self._group[f"vocab/{old_key}"]
            self._genes = None
        return np.array([position[g] for g in genes], dtype=np.int64)

    def _write_vocab(self, symbols: np.ndarray, ensembl: np.ndarray) -> str:
        key = uuid.uuid4().hex
        for name, values in (("symbols", symbols), ("ensembl", ensembl)):
            array = self._group.create_array(
                f"vocab/{key}/{name}", shape=values.shape, dtype=str, chunks=(max(1, CHUNK),)
            )
            if values.size:
                array[:] = values
        self._group[f"vocab/{key}"].attrs["checksum"] = _checksum(symbols)
        return key

    def _update_root(self, **changes) -> None:
        """Publish: one atomic write of the root attributes."""
        root = dict(self._root)
        root.update(changes)
        self._group.attrs[ROOT_KEY] = root

    def _require_writable(self) -> None:
        if not self.writable:
            raise StoreError(f"{self.url}: opened read-only; open with mode='a' to change it")

    # ----------------------------------------------------------------- graphs
    def assignment_names(self) -> list[str]:
        """The names of the store's per-cell graph assignments, sorted."""
        return sorted(self._root.get("assignments", {}))

    def list(self) -> pd.DataFrame:
        """One row per graph: name, kind, directed, cell_type, edges, genes, created."""
        rows = []
        for name, record in sorted(self._root["graphs"].items()):
            meta = self._graph_group(name).attrs.asdict()
            rows.append(
                {
                    "name": name,
                    "kind": meta["kind"],
                    "directed": meta["directed"],
                    "cell_type": meta.get("cell_type"),
                    "edges": meta["n_edges"],
                    "genes": record["n_genes"],
                    "created": meta["created"],
                }
            )
        columns = ["name", "kind", "directed", "cell_type", "edges", "genes", "created"]
        return pd.DataFrame(rows, columns=columns)

    def __contains__(self, name: str) -> bool:
        return name in self._root["graphs"]

    def info(self, name: str) -> dict:
        """The graph's metadata (kind, sources with checksums, parameters, ...)."""
        return self._graph_group(name).attrs.asdict()

    def _graph_group(self, name: str):
        graphs = self._root["graphs"]
        if name not in graphs:
            known = ", ".join(sorted(graphs)) or "none"
            raise StoreError(f"{self.url}: no graph named {name!r} (graphs: {known})")
        return self._group[f"graphs/{graphs[name]['key']}"]

    def add_graph(
        self,
        name: str,
        edges,
        *,
        kind: str,
        genes: Sequence[str] | None = None,
        directed: bool = True,
        weight: str | None = None,
        cell_type: str | None = None,
        sources: Sequence[str | os.PathLike[str]] = (),
        params: dict | None = None,
        overwrite: bool = False,
    ) -> None:
        """Add a graph from an edge DataFrame or a SciPy sparse matrix.

        Parameters
        ----------
        name
            Name of the graph in the store.
        edges
            A DataFrame with endpoint columns (``regulator``/``target``, ``source``/``target`` or
            ``gene_a``/``gene_b``) and numeric columns that become edge attributes; or a square
            SciPy sparse matrix whose rows and columns are ``genes``.
        kind
            One of ``KINDS``.
        genes
            Row/column genes of a sparse matrix.
        directed
            Whether edges go from the first endpoint to the second. An undirected graph keeps
            each unordered pair once.
        weight
            The attribute used as the adjacency value (default: ``mi`` if present, else
            ``score``, else ``weight``, else 1).
        cell_type
            The cell type the graph describes, if any.
        sources
            Input files, recorded with their SHA-256.
        params
            Parameters that made the graph (JSON-serializable).
        overwrite
            Replace an existing graph of the same name.
        """
        self._require_writable()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        if name in self and not overwrite:
            raise StoreError(
                f"{self.url}: a graph named {name!r} exists; pass overwrite=True to replace it"
            )
        if not name or "/" in name:
            raise ValueError(f"graph names must be non-empty without '/', not {name!r}")
        table = _edge_table(edges, genes)
        weight = weight or next((c for c in ("mi", "score", "weight") if c in table.columns), None)
        if weight is not None and weight not in table.columns:
            raise InputError(f"{name}: no column {weight!r} for weight=; columns: {list(table)}")
        # other attributes may hold NaN on purpose (e.g. a consensus' untested q-values)
        check_edges(table, name, directed=directed, finite=[weight] if weight else [])
        recorded_sources = [file_checksum(s) for s in sources]  # before the first write
        endpoints = pd.unique(pd.concat([table["source"], table["target"]]))
        lookup = dict(zip(endpoints, self.add_genes(endpoints)))
        rows = table["source"].map(lookup).to_numpy(np.int64)
        cols = table["target"].map(lookup).to_numpy(np.int64)
        if not directed:  # one entry per unordered pair, lower index first
            rows, cols = np.minimum(rows, cols), np.maximum(rows, cols)
        order = np.argsort(rows * len(self.genes) + cols, kind="stable")
        n_genes = len(self.genes)
        rows, cols = rows[order], cols[order]
        values = table[weight].to_numpy(np.float64)[order] if weight else np.ones(rows.size)
        attrs = {
            column: table[column].to_numpy()[order]
            for column in table.columns
            if column not in ("source", "target") and pd.api.types.is_numeric_dtype(table[column])
        }
        indptr = np.zeros(n_genes + 1, dtype=np.int64)
        np.add.at(indptr, rows + 1, 1)
        # one index dtype for indptr and indices, as scipy needs when anndata reads them back
        index_dtype = np.int32 if max(rows.size, n_genes) <= np.iinfo(np.int32).max else np.int64
        arrays = {
            "adjacency/data": values,
            "adjacency/indices": cols.astype(index_dtype),
            "adjacency/indptr": np.cumsum(indptr).astype(index_dtype),
            **{f"edge_attrs/{column}": values for column, values in attrs.items()},
        }
        key = uuid.uuid4().hex
        group = self._group.create_group(f"graphs/{key}")
        group.create_group("adjacency")
        group.create_group("edge_attrs")
        for path, values in arrays.items():
            array = group.create_array(
                path,
                shape=values.shape,
                dtype=values.dtype,
                chunks=(max(1, min(CHUNK, values.size)),),
            )
            if values.size:
                array[:] = values
        group["adjacency"].attrs.update(
            {
                "encoding-type": "csr_matrix",
                "encoding-version": "0.1.0",
                "shape": [n_genes, n_genes],
            }
        )
        group.attrs.update(
            {
                "name": name,
                "kind": kind,
                "directed": bool(directed),
                "cell_type": cell_type,
                "weight": weight,
                "edge_attrs": sorted(attrs),
                "n_edges": int(rows.size),
                "sources": recorded_sources,
                "params": json.loads(json.dumps(params or {}, default=str)),
                "tool_version": _tool_version(),
                "created": _now(),
                "checksums": {path: _checksum(values) for path, values in arrays.items()},
            }
        )
        graphs = dict(self._root["graphs"])
        replaced = graphs.get(name)
        graphs[name] = {
            "key": key,
            "n_genes": n_genes,
            "vocab_checksum": _checksum(np.asarray(self.genes[:n_genes], dtype=str)),
        }
        self._update_root(graphs=graphs)
        if replaced is not None:
            del self._group[f"graphs/{replaced['key']}"]
        self._cache = {k: v for k, v in self._cache.items() if k[0] != name}

    def add_network_file(
        self, name: str, path, *, kind: str = "grn", allow_empty: bool = False, **options
    ) -> None:
        """Add an ARACNe-AP or ARACNe3 network file (recorded as the graph's source); the file
        is checked whole (ids, finite numbers, no edge twice) before the store is changed. A
        file without edges is refused unless ``allow_empty``."""
        table, lines = read_network(path, with_lines=True)
        check_edges(table.rename(columns={"regulator": "source"}), os.fspath(path), lines=lines)
        if table.empty and not allow_empty:
            raise InputError(
                f"{os.fspath(path)}: no edge after its header line; pass allow_empty "
                "(--allow-empty) to store an empty network"
            )
        self.add_graph(name, table, kind=kind, sources=[path], **options)

    def assignment_writer(self, name: str, *, overwrite: bool = False) -> AssignmentWriter:
        """Start storing per-cell graphs under ``name``: add graphs one by one (streamed to disk,
        so memory stays bounded), then ``publish`` the cells' index; see ``AssignmentWriter``."""
        self._require_writable()
        if name in self._root.get("assignments", {}) and not overwrite:
            raise StoreError(
                f"{self.url}: an assignment named {name!r} exists; pass overwrite=True"
            )
        return AssignmentWriter(self, name)

    def add_assignment(self, name: str, *, graphs: Sequence[np.ndarray], overwrite=False, **cells):
        """Store per-cell graphs in one call: ``graphs`` (union-edge indices per graph) and the
        keyword arguments of ``AssignmentWriter.publish``."""
        writer = self.assignment_writer(name, overwrite=overwrite)
        for edges in graphs:
            writer.add_graph(edges)
        writer.publish(**cells)

    def get_assignment(self, name: str) -> Assignment:
        """Per-cell graphs stored by ``add_assignment`` (see ``Assignment``)."""
        assignments = self._root.get("assignments", {})
        if name not in assignments:
            known = ", ".join(sorted(assignments)) or "none"
            raise StoreError(f"{self.url}: no assignment named {name!r} (assignments: {known})")
        group = self._group[f"assignments/{assignments[name]}"]
        return Assignment(
            cells=group["cells"][:],
            graph_index=group["graph_index"][:],
            weights=group["weights"][:],
            cell_types=group["cell_types"][:],
            edge_rows=group["edges/rows"][:],
            edge_cols=group["edges/cols"][:],
            graph_offsets=group["graphs/offsets"][:],
            graph_edges=group["graphs/edges"][:],
            meta=group.attrs.asdict(),
            # absent in assignments that read no labels and in stores written before it existed
            label_cells=group["label_cells"][:] if "label_cells" in group else None,
        )

    def remove(self, name: str) -> None:
        """Remove a graph: unpublished first, then its data deleted."""
        self._require_writable()
        self._graph_group(name)
        graphs = dict(self._root["graphs"])
        record = graphs.pop(name)
        self._update_root(graphs=graphs)
        del self._group[f"graphs/{record['key']}"]
        self._cache = {k: v for k, v in self._cache.items() if k[0] != name}

    def get(self, name: str, *, symmetrize: bool = False) -> Graph:
        """Read a graph as SciPy CSR over the whole vocabulary, with its edge attributes.

        ``symmetrize=True`` returns the undirected view max(A, A^T) (edge attributes, which
        belong to stored edges, are then not returned).
        """
        loaded = self._load(name, "symmetric" if symmetrize else "directed")
        return Graph(name, loaded.matrix, self.genes, loaded.attrs, self.info(name))

    def _load(self, name: str, view: str) -> _Loaded:
        """The graph in memory as ``directed``, ``symmetric`` (max(A, A^T)) or ``upper`` (the
        symmetric view's upper triangle, structure only)."""
        cached = self._cache.get((name, view))
        if cached is not None:
            return cached
        group = self._graph_group(name)
        adj = group["adjacency"]
        n = adj.attrs["shape"][0]
        size = len(self.genes)
        indptr = np.concatenate([adj["indptr"][:], np.full(size - n, adj["indptr"][-1])])
        matrix = sp.csr_matrix((adj["data"][:], adj["indices"][:], indptr), shape=(size, size))
        attrs = {k: group[f"edge_attrs/{k}"][:] for k in group.attrs["edge_attrs"]}
        if view != "directed":
            matrix = matrix.maximum(matrix.T).tocsr()
            attrs = {}
        if view == "upper":
            matrix = sp.triu(matrix, format="csr")
        matrix.sort_indices()
        small = size <= np.iinfo(np.uint16).max + 1
        scan = matrix.indices.astype(np.uint16) if small else matrix.indices
        loaded = self._cache[(name, view)] = _Loaded(matrix, scan, attrs)
        return loaded

    def subgraph(
        self,
        name: str,
        gene_indices: np.ndarray,
        *,
        symmetrize: bool = False,
        weights: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Edges among a cell's genes, in the cell's local indices.

        Parameters
        ----------
        name
            The graph.
        gene_indices
            Vocabulary indices of the cell's genes; local index k is ``gene_indices[k]``.
        symmetrize
            Use the undirected view max(A, A^T) (both directions of every edge).
        weights
            Also return edge weights (skip when only the structure is needed: faster).

        Returns
        -------
        ``src``, ``dst`` (int32 local indices) and ``weight`` (``None`` when not asked for).
        """
        if symmetrize and not weights:
            pairs = self.undirected_edges(name, gene_indices)
            return pairs[0], pairs[1], None
        loaded = self._load(name, "symmetric" if symmetrize else "directed")
        matrix = loaded.matrix
        cell = np.asarray(gene_indices, dtype=np.int64)
        scratch = (
            self._scratch("member", matrix.shape[0], np.uint8, 0),
            self._scratch("label_of", matrix.shape[0], np.int32, -1),
            self._scratch("edges", matrix.nnz, np.int64),
        )
        src, dst, edges = _induced_edges(matrix.indptr, loaded.scan_indices, cell, *scratch)
        return src, dst, (matrix.data[edges] if weights else None)

    def undirected_edges(
        self,
        name: str,
        gene_indices: np.ndarray,
        labels: np.ndarray | None = None,
        *,
        dtype=np.int32,
    ) -> np.ndarray:
        """Both directions of every edge of max(A, A^T) among a cell's genes, structure only.

        The fastest extraction (the GREmLN loader's): each undirected edge is scanned once.

        Parameters
        ----------
        name
            The graph.
        gene_indices
            Vocabulary indices of the cell's genes.
        labels
            What to write for each gene (default: its local index ``0..n-1``), e.g. its position
            in a token sequence.
        dtype
            Integer type of the result (labels must fit; int16 halves the bytes of short cells).

        Returns
        -------
        (2, E) array of source and target labels, in no particular order.
        """
        loaded = self._load(name, "upper")
        matrix = loaded.matrix
        cell = np.asarray(gene_indices, dtype=np.int64)
        labels = np.arange(cell.size) if labels is None else labels
        if len(labels) != cell.size:
            raise ValueError(f"{len(labels)} labels for {cell.size} genes")
        label_of = self._scratch("label_of", matrix.shape[0], np.int32, -1)
        out = self._scratch("pairs", 2 * 2 * matrix.nnz, np.int32).reshape(2, -1)
        count = _undirected_edges(
            matrix.indptr, loaded.scan_indices, cell, labels.astype(np.int32), label_of, out
        )
        return out[:, :count].astype(dtype)

    def _scratch(self, key: str, size: int, dtype, fill=None) -> np.ndarray:
        """A reusable buffer of at least ``size`` elements; kernels restore ``fill`` after use."""
        buffer = self._buffers.get(key)
        if buffer is None or buffer.size < size or buffer.dtype != dtype:
            buffer = np.empty(size, dtype) if fill is None else np.full(size, fill, dtype)
            self._buffers[key] = buffer
        return buffer[:size]

    def export(self, name: str, path, *, format: str = "aracne-ap") -> None:
        """Write a graph as an ARACNe-AP or ARACNe3 network file (atomically)."""
        graph = self.get(name)
        table = graph.to_dataframe().rename(columns={"source": "regulator"})
        if "mi" not in table.columns:
            table["mi"] = table["weight"]
        if "pvalue" in table.columns and "log_p" not in table.columns:
            table["log_p"] = np.log(table["pvalue"])
        if "log_p" in table.columns and "pvalue" not in table.columns:
            table["pvalue"] = np.exp(table["log_p"])
        for column in ("pvalue", "scc", "count", "log_p"):
            if column not in table.columns:
                table[column] = np.nan
        writers = {"aracne-ap": write_aracne_ap, "aracne3": write_aracne3}
        if format not in writers:
            raise ValueError(f"format must be one of {sorted(writers)}, not {format!r}")
        writers[format](table, path)

    # ----------------------------------------------------------------- integrity
    def validate(self) -> list[str]:
        """Check every graph and the vocabulary; return the problems found (empty: all good).

        Checks: arrays readable, checksums, CSR structure (indptr, index ranges), attribute
        lengths, the vocabulary prefix each graph indexes, and unreferenced data left by an
        interrupted write.
        """
        problems = []
        try:
            genes = self.genes
            vocab = self._group[f"vocab/{self._root['vocab']}"]
            if _checksum(np.asarray(genes, dtype=str)) != vocab.attrs["checksum"]:
                problems.append(f"vocab/{self._root['vocab']}/symbols: checksum mismatch")
            if len(set(genes)) != len(genes):
                problems.append("vocabulary: duplicated gene symbols")
        except Exception as error:  # noqa: BLE001 - any read failure is a finding
            return [f"vocabulary unreadable: {error}"]
        referenced = set()
        for name, record in self._root["graphs"].items():
            referenced.add(record["key"])
            problems += self._validate_graph(name, record, genes)
        stored = set(self._group["graphs"].group_keys())
        for key in sorted(stored - referenced):
            problems.append(f"graphs/{key}: unreferenced data from an interrupted write")
        return problems

    def _validate_graph(self, name: str, record: dict, genes: np.ndarray) -> list[str]:
        where = f"graph {name!r} (graphs/{record['key']})"
        try:
            group = self._group[f"graphs/{record['key']}"]
            meta = group.attrs.asdict()
        except Exception as error:  # noqa: BLE001
            return [f"{where}: missing or unreadable ({error})"]
        arrays, problems = {}, []
        for path, expected in meta["checksums"].items():
            try:
                arrays[path] = group[path][:]
            except Exception as error:  # noqa: BLE001
                problems.append(f"{where}: {path} unreadable ({type(error).__name__}: {error})")
                continue
            if _checksum(arrays[path]) != expected:
                problems.append(f"{where}: {path} checksum mismatch (corrupted)")
        n = record["n_genes"]
        if n > len(genes):
            problems.append(f"{where}: indexes {n} genes but the vocabulary has {len(genes)}")
        elif _checksum(np.asarray(genes[:n], dtype=str)) != record["vocab_checksum"]:
            problems.append(f"{where}: vocabulary mismatch (its first {n} genes changed)")
        indptr = arrays.get("adjacency/indptr")
        indices = arrays.get("adjacency/indices")
        if indptr is not None:
            if indptr.size != n + 1 or indptr[0] != 0 or np.any(np.diff(indptr) < 0):
                problems.append(f"{where}: adjacency/indptr is not a valid CSR row pointer")
            elif indices is not None and indptr[-1] != indices.size:
                problems.append(f"{where}: adjacency/indptr ends at {indptr[-1]}, not nnz")
        if indices is not None and indices.size and (indices.min() < 0 or indices.max() >= n):
            problems.append(f"{where}: adjacency/indices out of range [0, {n})")
        nnz = meta["n_edges"]
        for path, values in arrays.items():
            if path != "adjacency/indptr" and values.size != nnz:
                problems.append(f"{where}: {path} has {values.size} values, not {nnz} edges")
        return problems

    def cleanup(self) -> list[str]:
        """Delete data no graph or vocabulary refers to (left by interrupted writes)."""
        self._require_writable()
        referenced = {record["key"] for record in self._root["graphs"].values()}
        removed = []
        for key in set(self._group["graphs"].group_keys()) - referenced:
            del self._group[f"graphs/{key}"]
            removed.append(f"graphs/{key}")
        live = set(self._root.get("assignments", {}).values())
        if "assignments" in self._group:
            for key in set(self._group["assignments"].group_keys()) - live:
                del self._group[f"assignments/{key}"]
                removed.append(f"assignments/{key}")
        for key in set(self._group["vocab"].group_keys()) - {self._root["vocab"]}:
            del self._group[f"vocab/{key}"]
            removed.append(f"vocab/{key}")
        return sorted(removed)


def _edge_table(edges, genes) -> pd.DataFrame:
    """Normalize the accepted edge inputs to a DataFrame with ``source`` and ``target``."""
    if sp.issparse(edges):
        if genes is None:
            raise ValueError("a sparse matrix needs genes= naming its rows and columns")
        genes = np.asarray([str(g) for g in genes], dtype=object)
        if edges.shape != (genes.size, genes.size):
            raise ValueError(
                f"the matrix is {edges.shape[0]} x {edges.shape[1]} but {genes.size} genes given"
            )
        coo = sp.coo_matrix(edges)
        coo.sum_duplicates()
        return pd.DataFrame(
            {"source": genes[coo.row], "target": genes[coo.col], "weight": coo.data}
        )
    if not isinstance(edges, pd.DataFrame):
        raise TypeError("edges must be a pandas DataFrame or a SciPy sparse matrix")
    for source, target in ENDPOINTS:
        if source in edges.columns and target in edges.columns:
            table = edges.rename(columns={source: "source", target: "target"})
            table["source"] = table["source"].astype(str)
            table["target"] = table["target"].astype(str)
            return table.reset_index(drop=True)
    raise InputError(
        f"<DataFrame>: no endpoint columns; expected one of "
        f"{', '.join('/'.join(pair) for pair in ENDPOINTS)}, found {list(edges.columns)}"
    )


# ----------------------------------------------------------------- location and locking
def _is_url(url: str) -> bool:
    return "://" in url


def _storage_options(url: str) -> dict:
    return {"storage_options": {"auto_mkdir": True}} if _is_url(url) else {}


def _fs_and_path(url: str):
    import fsspec

    if _is_url(url):
        return fsspec.core.url_to_fs(url)
    return fsspec.filesystem("file"), str(Path(url).absolute())


def _exists(url: str) -> bool:
    fs, path = _fs_and_path(url)
    return fs.exists(f"{path}/zarr.json")


def _nothing() -> None:
    return None


def _refuse_foreign(url: str) -> None:
    """Raise StoreError when ``url`` is a file, another Zarr group, or a directory holding
    anything but a graph store (or a stale writer lock): creating a store there would delete
    its contents."""
    fs, path = _fs_and_path(url)
    if fs.isfile(path):
        raise StoreError(f"{url}: is a file; give the path of a directory for the graph store")
    if _exists(url):
        attributes = json.loads(fs.cat_file(f"{path}/zarr.json")).get("attributes", {})
        if ROOT_KEY not in attributes:
            raise StoreError(
                f"{url}: a Zarr group that is not a graph store (a gremln cell store?); "
                "creating a graph store there would delete it. Give another path"
            )
        return
    if not fs.isdir(path):
        return
    entries = [e for e in fs.ls(path, detail=False) if not e.endswith(LOCK_NAME)]
    if entries:
        names = ", ".join(sorted(os.path.basename(e.rstrip("/")) for e in entries)[:3])
        raise StoreError(
            f"{url}: a directory that is not a graph store ({len(entries)} "
            f"entr{'y' if len(entries) == 1 else 'ies'}, e.g. "
            f"{names}); creating a store there would delete them. Give a new path (e.g. "
            "graphs.zarr) or an empty directory"
        )


def _acquire_lock(url: str) -> Callable[[], None]:
    """Create the writer lock file, naming its holder (host, process id, time); return its
    release. A lock whose holder was a process of this host that is gone (killed, crashed) is
    taken over, with a warning saying so; a live holder, or one on another host, is refused
    with a StoreError naming it."""
    from fsspec.implementations.local import LocalFileSystem

    fs, path = _fs_and_path(url)
    fs.makedirs(path, exist_ok=True)
    lock = f"{path}/{LOCK_NAME}"
    owner = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": _now()})
    for attempt in range(2):
        try:
            if isinstance(fs, LocalFileSystem):
                descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                with os.fdopen(descriptor, "w") as handle:
                    handle.write(owner)
            else:  # object stores have no exclusive create: best effort
                if fs.exists(lock):
                    raise FileExistsError(lock)
                fs.pipe_file(lock, owner.encode())
            break
        except FileExistsError:
            try:
                holder = fs.cat_file(lock).decode()
            except OSError:  # released meanwhile: try again
                holder = None
            if holder is not None and (
                attempt or not _stale(holder) or not _remove_stale(fs, lock, holder)
            ):
                raise StoreError(
                    f"{url}: another writer holds the store ({holder}). Wait for it to finish; "
                    "if that process is gone (a lock from another host cannot be checked from "
                    f"here), delete {lock}"
                ) from None
            if holder is not None:
                import warnings

                warnings.warn(
                    f"{url}: took over the writer lock of a process that is gone ({holder}); "
                    "its unfinished writes were never published",
                    UserWarning,
                    stacklevel=3,
                )

    def release() -> None:
        try:
            fs.rm_file(lock)
        except FileNotFoundError:
            pass

    return release


def _stale(holder: str) -> bool:
    """Whether a lock's holder (its JSON) was a process of this host that no longer runs: no
    process has its id, or one that started after the lock was taken (the id was reused), or a
    killed child its parent has not reaped yet."""
    try:
        record = json.loads(holder)
        host, pid = record["host"], int(record["pid"])
        since = datetime.datetime.fromisoformat(record["since"]).timestamp()
    except (ValueError, KeyError, TypeError):
        return False  # not ours to judge
    if host != socket.gethostname() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        pass
    try:  # Linux: the process's state and start time (field 22, clock ticks after boot)
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        with open("/proc/stat") as stat:
            boot = next(int(line.split()[1]) for line in stat if line.startswith("btime"))
    except (OSError, IndexError, StopIteration):
        return False
    started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    return fields[0] == "Z" or started > since + 2  # "since" has whole seconds


def _remove_stale(fs, lock: str, holder: str) -> bool:
    """Remove a stale lock unless another process took it over first (then its content changed);
    whether it was removed. The lock is moved aside first, so that of two processes taking
    over, only one removes it."""
    aside = f"{lock}.{uuid.uuid4().hex}"
    try:
        fs.mv(lock, aside)
    except FileNotFoundError:
        return True  # someone else removed it: try to create ours
    if fs.cat_file(aside).decode() != holder:  # a live writer's fresh lock: put it back
        fs.mv(aside, lock)
        return False
    fs.rm_file(aside)
    return True
