"""The GREmLN dataset: cells as masked token sequences with their regulatory subgraphs, in packed
or padded batches, sharded across DDP ranks and loader workers.

Per cell (from the cell store): ``[CLS] g_1 ... g_n`` gene tokens with their rank bins, at most
``max_length`` genes (the highest bins are kept: tokens are stored by decreasing bin); a
``mask_fraction`` of the gene positions get the MASK bin (gene ids are never masked; the CLS token
never is), with the true bins as targets (-100 elsewhere); and the cell's graph restricted to its
genes, symmetrized, as local edges (CLS, position 0, is not part of the graph).

Order: the cells of a split are read in blocks of ``block`` consecutive cells (one contiguous
read each); blocks are shuffled, and cells within a block, per (seed, epoch), and dealt to DDP
ranks round-robin, so rank shards never overlap and cover every cell. A rank's cells form a
sequence of units (cells, or batches of ``batch_size`` cells); loader workers take every
``n_workers``-th unit starting at ``position`` + their id, which is the order in which the
DataLoader collects them, so any number of workers yields exactly the units of a single process,
in the same order. ``position`` (units already consumed in this epoch) resumes an epoch where a
checkpoint left it.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from numba import njit

from gremln.cellstore import CellStore
from gremln.tokenize import CLS, PAD

IGNORE = -100  # targets of unmasked positions (torch's cross-entropy ignore_index)


@dataclass
class ShardSpec:
    """Which part of the data this process reads."""

    rank: int = 0
    world_size: int = 1


def shard_blocks(
    n_cells: int, *, block: int, seed: int, epoch: int, rank: int, world_size: int
) -> list[np.ndarray]:
    """The blocks of cell positions (into the split) one rank reads in an epoch, in order."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, epoch, 0x6F72646572]))  # "order"
    starts = np.arange(0, n_cells, block)
    starts = starts[rng.permutation(starts.size)]
    blocks = [
        np.arange(s, min(s + block, n_cells))[rng.permutation(min(block, n_cells - s))]
        for s in starts
    ]
    return blocks[rank::world_size]


class GraphSource:
    """The graphs a loader reads: a graph store opened read-only, with graphs and assignments
    held in memory on top of it (an evaluation's visible graph, an integration's per-cell graphs).

    Nothing is ever written to the store, so evaluations need no writer lock, two of them on one
    store cannot collide, and a crash leaves nothing behind. In-memory graphs and assignments
    shadow the store's of the same name. ``integrate`` (netinfer) can store its assignment here:
    the source offers the store's reading methods and an in-memory ``assignment_writer``.

    Parameters
    ----------
    graphs
        A graph store's path, or another source (its in-memory graphs and assignments are
        copied, so adding to the new one leaves it alone).
    """

    def __init__(self, graphs: str | os.PathLike[str] | GraphSource):
        if isinstance(graphs, GraphSource):
            self.url = graphs.url
            self._graphs, self._assignments = dict(graphs._graphs), dict(graphs._assignments)
        else:
            self.url = os.fspath(graphs)
            self._graphs, self._assignments = {}, {}
        self._store = None  # opened on first use, in each process

    def __fspath__(self) -> str:
        return self.url

    def __str__(self) -> str:
        return self.url

    def __getstate__(self) -> dict:  # loader workers open the store themselves
        return {**self.__dict__, "_store": None}

    def __enter__(self) -> GraphSource:
        return self

    def __exit__(self, *exc) -> None:
        pass  # read-only: no lock to release

    @property
    def store(self):
        """The graph store, opened read-only."""
        if self._store is None:
            from netinfer.store import GraphStore

            self._store = GraphStore.open(self.url)
        return self._store

    @property
    def genes(self) -> np.ndarray:
        return self.store.genes

    def gene_index(self, genes) -> np.ndarray:
        return self.store.gene_index(genes)

    def __contains__(self, name: str) -> bool:
        return name in self._graphs or name in self.store

    def list(self):
        """The store's graphs (``GraphStore.list``); in-memory graphs are not listed."""
        return self.store.list()

    def get(self, name: str, **options):
        """A graph of the store (``GraphStore.get``)."""
        return self.store.get(name, **options)

    def add_graph(self, name: str, gene_a: np.ndarray, gene_b: np.ndarray) -> None:
        """Hold an undirected graph in memory (its edges as gene names, all in the store's
        vocabulary), replacing one of that name."""
        a, b = self.gene_index(gene_a), self.gene_index(gene_b)
        if (a < 0).any() or (b < 0).any():
            unknown = np.concatenate([np.asarray(gene_a)[a < 0], np.asarray(gene_b)[b < 0]])
            raise ValueError(
                f"graph {name!r}: {unknown.size} endpoint(s) not in the vocabulary of {self.url} "
                f"(e.g. {', '.join(map(str, unknown[:3]))})"
            )
        a, b = a[a != b], b[a != b]  # no self-loops, as the store's undirected view
        n = len(self.genes)
        ones = np.ones(2 * a.size, dtype=np.int8)
        self._graphs[name] = sp.csr_matrix((ones, (np.r_[a, b], np.r_[b, a])), shape=(n, n))

    def undirected_edges(self, name, gene_indices, labels=None, *, dtype=np.int32) -> np.ndarray:
        """Both directions of every edge among a cell's genes (``GraphStore.undirected_edges``)."""
        if name not in self._graphs:
            return self.store.undirected_edges(name, gene_indices, labels, dtype=dtype)
        cell = np.asarray(gene_indices, dtype=np.int64)
        labels = np.arange(cell.size) if labels is None else np.asarray(labels)
        among = self._graphs[name][cell][:, cell].tocoo()
        return np.stack([labels[among.row], labels[among.col]]).astype(dtype)

    def assignment_writer(self, name: str, *, overwrite: bool = False) -> _AssignmentInMemory:
        """Collect per-cell graphs in memory (the interface of ``GraphStore.assignment_writer``;
        an in-memory assignment of the same name is replaced, whatever ``overwrite``)."""
        return _AssignmentInMemory(self, name)

    def get_assignment(self, name: str):
        """An in-memory assignment, else the store's (``GraphStore.get_assignment``)."""
        if name in self._assignments:
            return self._assignments[name]
        return self.store.get_assignment(name)


class _AssignmentInMemory:
    """``GraphStore.assignment_writer``'s interface, publishing into a :class:`GraphSource`."""

    def __init__(self, source: GraphSource, name: str):
        self.source, self.name = source, name
        self.graphs: list[np.ndarray] = []

    @property
    def n_graphs(self) -> int:
        return len(self.graphs)

    def add_graph(self, edges: np.ndarray) -> int:
        self.graphs.append(np.asarray(edges, dtype=np.int32))
        return self.n_graphs - 1

    def publish(
        self,
        *,
        cells,
        graph_index,
        weights,
        cell_types,
        edge_rows,
        edge_cols,
        params=None,
        label_cells=None,
    ):
        from netinfer.store import Assignment

        sizes = [len(g) for g in self.graphs]
        self.source._assignments[self.name] = Assignment(
            cells=np.asarray(cells, dtype=str),
            graph_index=np.asarray(graph_index, dtype=np.int32),
            weights=np.asarray(weights, dtype=np.float32),
            cell_types=np.asarray(cell_types, dtype=str),
            edge_rows=np.asarray(edge_rows, dtype=np.int32),
            edge_cols=np.asarray(edge_cols, dtype=np.int32),
            graph_offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
            graph_edges=np.concatenate(self.graphs or [np.empty(0, np.int32)]),
            meta={"name": self.name, "params": dict(params or {})},
            label_cells=None if label_cells is None else np.asarray(label_cells, dtype=str),
        )


class CellDataset(torch.utils.data.IterableDataset):
    """Masked cells with their subgraphs (see the module docstring).

    Parameters
    ----------
    cells_path
        The cell store (``gremln prepare``).
    graphs_path
        The graph store holding the cells' graphs (its path, opened read-only), or a
        :class:`GraphSource`.
    split
        ``train``, ``val_seen``, ``val_unseen`` or ``None`` for all cells.
    max_length
        Genes per cell at most (highest bins kept); ``None``: all.
    mask_fraction
        Fraction of gene positions whose bin is masked.
    seed, epoch
        Seed of order and masks; ``set_epoch`` changes the epoch.
    shard
        This process's DDP rank and world size (default: from torch.distributed when running).
    position
        Units (cells, or batches) this rank already consumed in this epoch (resume).
    block
        Consecutive cells read at once.
    batch_size
        Yield collated batches of this many cells (``None``: single examples).
    layout
        ``packed`` (:func:`collate_packed`) or ``padded`` (:func:`collate_padded`) batches.
    cellspecific
        Also give each cell its graph in this assignment of per-cell graphs (``netinfer
        cellspecific --name``) as ``cellspecific_edge_index`` (for the structure adapter).
    coexpression_fraction
        Replace this fraction of each cell's undirected edges by edges of the co-expression kNN
        graph of the split's cells (:func:`coexpression_knn_graph`) among its genes, drawn anew
        per epoch (GRNFormer's graph perturbation); the count is kept while the kNN graph has
        enough such edges.
    coexpression_neighbours
        k of that kNN graph.
    """

    # class-level defaults: subclasses that build their own state inherit them
    cellspecific: str | None = None
    coexpression_fraction: float = 0.0
    coexpression: sp.csr_matrix | None = None

    def __init__(
        self,
        cells_path,
        graphs_path,
        *,
        split: str | None = "train",
        max_length: int | None = None,
        mask_fraction: float = 0.3,
        seed: int = 0,
        epoch: int = 0,
        shard: ShardSpec | None = None,
        position: int = 0,
        block: int = 256,
        batch_size: int | None = None,
        layout: str = "packed",
        cellspecific: str | None = None,
        coexpression_fraction: float = 0.0,
        coexpression_neighbours: int = 10,
    ):
        super().__init__()
        if not 0.0 <= coexpression_fraction <= 1.0:
            raise ValueError(
                f"coexpression_fraction must be in [0, 1], not {coexpression_fraction}"
            )
        if not 0.0 <= mask_fraction < 1.0:
            raise ValueError(f"mask_fraction must be in [0, 1), not {mask_fraction}")
        if layout not in ("packed", "padded"):
            raise ValueError(f"layout must be 'packed' or 'padded', not {layout!r}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be positive, not {batch_size}")
        self.cells_path, self.graphs_path = str(cells_path), GraphSource(graphs_path)
        store = CellStore.open(self.cells_path)
        self.n_bins = store.vocabulary.n_bins
        obs = store.obs
        self.indices = np.flatnonzero(obs["split"] == split) if split else np.arange(len(obs))
        self.max_length, self.mask_fraction = max_length, mask_fraction
        self.seed, self.epoch, self.position, self.block = seed, epoch, position, block
        self.batch_size, self.layout = batch_size, layout
        self.cellspecific, self.coexpression_fraction = cellspecific, coexpression_fraction
        if coexpression_fraction:
            self.coexpression = coexpression_knn_graph(
                self.cells_path, split, k=coexpression_neighbours
            )
        if (
            shard is None
            and torch.distributed.is_available()
            and torch.distributed.is_initialized()
        ):
            shard = ShardSpec(torch.distributed.get_rank(), torch.distributed.get_world_size())
        self.shard = shard or ShardSpec()
        self._cells = None  # opened lazily in each worker process

    def set_epoch(self, epoch: int) -> None:
        """Start a new epoch (new order and masks), from its beginning."""
        self.epoch, self.position = epoch, 0

    def _open(self):
        cells = CellStore.open(self.cells_path)
        graphs = self.graphs_path
        # cell-store token id -> graph-store vocabulary index (-1: gene not in any graph)
        to_graph = np.full(len(cells.vocabulary), -1, dtype=np.int64)
        to_graph[3:] = graphs.gene_index(cells.vocabulary.genes)
        self._cells, self._graphs, self._to_graph = cells, graphs, to_graph
        self._tokens = cells._group["tokens/gene_ids"], cells._group["tokens/bins"]
        self._keys = cells.obs["graph_key"].to_numpy()
        self._cell_ids = cells.obs["cell_id"].to_numpy()
        self._assignments = {}

    def __iter__(self):
        if self._cells is None:
            self._open()
        info = torch.utils.data.get_worker_info()
        if info is not None:
            exit_with_parent()
        worker, n_workers = (info.id, info.num_workers) if info else (0, 1)
        blocks = shard_blocks(
            len(self.indices),
            block=self.block,
            seed=self.seed,
            epoch=self.epoch,
            rank=self.shard.rank,
            world_size=self.shard.world_size,
        )
        if not blocks:
            return
        order = np.concatenate(blocks)
        block_ends = np.cumsum([len(b) for b in blocks])
        size = self.batch_size or 1
        read = {}  # block number -> its tokens (a unit spans at most a few blocks)
        for unit in range(self.position + worker, -(-len(order) // size), n_workers):
            start, stop = unit * size, min((unit + 1) * size, len(order))
            first, last = np.searchsorted(block_ends, [start, stop - 1], side="right")
            read = {
                b: read[b] if b in read else self._read(blocks[b]) for b in range(first, last + 1)
            }
            cells = []
            for at in range(start, stop):
                number = int(np.searchsorted(block_ends, at, side="right"))
                lo, gene_ids, bins = read[number]
                cell = int(self.indices[order[at]])
                span = slice(self._cells.offsets[cell] - lo, self._cells.offsets[cell + 1] - lo)
                cells.append((cell, gene_ids[span], bins[span]))
            yield self.example(*cells[0]) if self.batch_size is None else self.batch(cells)

    def _read(self, block: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
        """The tokens of a block of cells: one contiguous read."""
        cells = self.indices[block]
        lo = int(self._cells.offsets[cells.min()])
        hi = int(self._cells.offsets[cells.max() + 1])
        return lo, self._tokens[0][lo:hi], self._tokens[1][lo:hi]

    def example(self, cell: int, gene_ids: np.ndarray, bins: np.ndarray) -> dict:
        """One training example from a cell's stored tokens (deterministic per seed, epoch):
        1-D ``gene_ids``, ``bins`` and ``targets`` with CLS in front, ``edge_index`` (2, E)."""
        gene_ids, bins = gene_ids[: self.max_length], bins[: self.max_length]
        lengths = np.array([gene_ids.size + 1])
        edges = self.edges(cell, gene_ids)
        # edges are most of a batch's bytes: positions as int16 whenever they fit
        dtype = _torch_dtype(position_dtype(gene_ids.size + 1))
        out = _arena(
            {name: ((gene_ids.size + 1,), token) for name, token in TOKEN_DTYPES.items()}
            | {key: (e.shape, dtype) for key, e in edges.items()}
        )
        for key, e in edges.items():
            out[key].numpy()[:] = e
        self._fill_tokens([cell], gene_ids, bins, lengths, np.zeros(1, np.int64), out)
        return {"cell": cell, **out}

    def batch(self, cells: list[tuple[int, np.ndarray, np.ndarray]]) -> dict:
        """A batch in this dataset's layout from (cell, gene ids, bins) of stored tokens; the
        same tensors as collating the cells' :meth:`example` (:func:`collate_packed`,
        :func:`collate_padded`), built at once."""
        pieces = [(ids[: self.max_length], bins[: self.max_length]) for _, ids, bins in cells]
        lengths = np.array([ids.size + 1 for ids, _ in pieces])
        gene_ids = np.concatenate([ids for ids, _ in pieces])
        bins = np.concatenate([b for _, b in pieces])
        numbers = [cell for cell, _, _ in cells]
        edges = [self.edges(cell, ids) for cell, (ids, _) in zip(numbers, pieces)]
        by_key = {key: [e[key] for e in edges] for key in edges[0]}
        out, starts = _new_batch(numbers, lengths, by_key, self.layout, pad_bin=self.n_bins)
        self._fill_tokens(numbers, gene_ids, bins, lengths, starts, out)
        return out

    def _fill_tokens(self, cells, gene_ids, bins, lengths, starts, out: dict) -> None:
        """Write CLS and the cells' tokens, masked, into ``out``'s flat token tensors at
        ``starts``."""
        n_masked = np.rint(self.mask_fraction * (lengths - 1)).astype(np.int64)
        _masked_tokens(
            gene_ids,
            bins,
            lengths - 1,
            n_masked,
            np.asarray(cells, dtype=np.int64),
            self.seed,
            self.epoch,
            self.n_bins,
            *(out[name].view(-1).numpy() for name in ("gene_ids", "bins", "targets")),
            starts,
        )

    def edges(self, cell: int, gene_ids: np.ndarray) -> dict[str, np.ndarray]:
        """The cell's graphs among its tokens ``gene_ids``: ``edge_index`` (with the
        co-expression perturbation when asked for) and ``cellspecific_edge_index`` when asked
        for, each (2, E) token positions."""
        edges = self.subgraph(cell, gene_ids)
        if self.coexpression_fraction:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch, cell]))
            among = sp.triu(self.coexpression[gene_ids][:, gene_ids]).tocoo()
            candidates = np.stack([among.row, among.col]) + 1  # token positions, i < j
            edges = coexpression_perturbation(edges, candidates, self.coexpression_fraction, rng)
        out = {"edge_index": edges}
        if self.cellspecific is not None:
            out["cellspecific_edge_index"] = self._assigned_subgraph(
                self.cellspecific, cell, self._to_graph[gene_ids]
            )
        return out

    def subgraph(self, cell: int, gene_ids: np.ndarray) -> np.ndarray:
        """The cell's graph among its genes, symmetrized: (2, E) token positions (gene k of
        ``gene_ids`` is at position k + 1, after CLS)."""
        graph_index = self._to_graph[gene_ids]
        in_graph = np.flatnonzero(graph_index >= 0)
        key = self._keys[cell]
        if key.startswith("assignment:"):  # a per-cell graph from netinfer integrate
            return self._assigned_subgraph(key.removeprefix("assignment:"), cell, graph_index)
        return self._graphs.undirected_edges(
            key, graph_index[in_graph], labels=in_graph + 1, dtype=position_dtype(len(gene_ids) + 1)
        )

    def _assigned_subgraph(self, name: str, cell: int, graph_index: np.ndarray):
        if name not in self._assignments:
            assignment = self._graphs.get_assignment(name)
            rows = {c: i for i, c in enumerate(assignment.cells)}
            self._assignments[name] = (assignment, rows)
        assignment, rows = self._assignments[name]
        sources, targets = assignment.cell_graph(rows[self._cell_ids[cell]])
        local = np.full(len(self._graphs.genes), -1, dtype=np.int64)
        present = np.flatnonzero(graph_index >= 0)
        local[graph_index[present]] = present
        keep = (local[sources] >= 0) & (local[targets] >= 0)
        pairs = np.unique(
            np.concatenate(
                [
                    np.stack([local[sources[keep]], local[targets[keep]]], axis=1),
                    np.stack([local[targets[keep]], local[sources[keep]]], axis=1),
                ]
            ),
            axis=0,
        )
        return (pairs.T + 1).astype(np.int32)


def exit_with_parent() -> None:
    """In a loader worker on Linux: be killed as soon as the process that started it (the
    trainer) dies, rather than at torch's own parent check (every 5 s)."""
    import sys

    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import multiprocessing
    import os
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    parent = multiprocessing.parent_process()
    if parent is not None and parent.pid != os.getppid():  # it died before prctl took effect
        os._exit(1)


def position_dtype(size: int) -> type:
    """The integer type of token positions below ``size``: int16 when they fit, else int32."""
    return np.int16 if size <= np.iinfo(np.int16).max else np.int32


def _edge_keys(example: dict) -> list[str]:
    """The graphs an example carries (``edge_index``, ``cellspecific_edge_index``, ...)."""
    return [key for key in example if key.endswith("edge_index")]


#: token tensors' types: a quarter of int64's bytes through a loader worker's shared memory,
#: which costs time in proportion; the model widens them on its device
TOKEN_DTYPES = {"gene_ids": torch.int32, "bins": torch.int16, "targets": torch.int16}


def _torch_dtype(dtype) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype)).dtype


def _arena(specs: dict[str, tuple[tuple, torch.dtype]]) -> dict[str, torch.Tensor]:
    """Empty tensors (name -> (shape, dtype)), all views of one buffer: in a loader worker,
    one shared-memory block whose single file descriptor the main process receives (a
    descriptor per tensor cost the main process twice the time per batch)."""
    spans, total = {}, 0
    for name, (shape, dtype) in specs.items():
        nbytes = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
        spans[name] = (total, nbytes)
        total += -(-nbytes // 8) * 8  # 8-byte aligned: any dtype may view its part
    buffer = _batch_tensor((max(total, 8),), torch.uint8)
    return {
        name: buffer[start : start + nbytes].view(dtype).view(shape)
        for (name, (shape, dtype)), (start, nbytes) in zip(specs.items(), spans.values())
    }


def _new_batch(
    cells, lengths: np.ndarray, edges: dict[str, list], layout: str, *, pad_bin: int
) -> tuple[dict, np.ndarray]:
    """A batch's tensors in one :func:`_arena`, all written but the tokens: padded, (B, L)
    tokens filled with PAD, the padding bin and IGNORE, and ``padding_mask``; packed,
    ``cu_seqlens`` and ``max_seqlen``; the cells' edges stacked (:func:`_write_edges`) and
    ``cells``. Also returns each cell's first token in the flattened token tensors."""
    n = len(lengths)
    counts = {key: int(sum(e.shape[1] for e in lists)) for key, lists in edges.items()}
    if layout == "padded":
        shape = (n, int(lengths.max()))
        edge_dtype = _torch_dtype(position_dtype(max(shape)))
        extra = {"padding_mask": (shape, torch.bool)}
        edge_rows = 3
    else:
        shape = (int(lengths.sum()),)
        edge_dtype, extra, edge_rows = torch.int32, {"cu_seqlens": ((n + 1,), torch.int32)}, 2
    out = _arena(
        {name: (shape, dtype) for name, dtype in TOKEN_DTYPES.items()}
        | extra
        | {key: ((edge_rows, count), edge_dtype) for key, count in counts.items()}
        | {"cells": ((n,), torch.int64)}
    )
    if layout == "padded":
        for name, fill in (("gene_ids", PAD), ("bins", pad_bin), ("targets", IGNORE)):
            out[name].fill_(fill)
        out["padding_mask"].copy_(torch.arange(shape[1]) >= torch.from_numpy(lengths)[:, None])
        starts = np.arange(n, dtype=np.int64) * shape[1]
    else:
        ends = np.cumsum(lengths)
        out["cu_seqlens"].numpy()[:] = np.concatenate([[0], ends])
        out["max_seqlen"] = int(lengths.max())
        starts = (ends - lengths).astype(np.int64)
    for key, lists in edges.items():
        _write_edges(out[key].numpy(), lists, starts if layout == "packed" else None)
    out["cells"].numpy()[:] = cells
    return out, starts


def _write_edges(out: np.ndarray, edges: list, offsets: np.ndarray | None) -> None:
    """The cells' (2, E_i) local edges one after another into ``out``: padded (``offsets``
    None), (3, E) with each edge's batch row first; packed, (2, E) shifted by each cell's
    first token."""
    start = 0
    for row, e in enumerate(edges):
        end = start + e.shape[1]
        if offsets is None:
            out[0, start:end] = row
            out[1:, start:end] = e
        else:
            np.add(e, offsets[row], out=out[:, start:end], dtype=out.dtype, casting="unsafe")
        start = end


def _numpy(tensor) -> np.ndarray:
    return tensor.numpy() if isinstance(tensor, torch.Tensor) else np.asarray(tensor)


def _collate(batch: list[dict], layout: str, pad_bin: int) -> dict:
    lengths = np.array([len(ex["gene_ids"]) for ex in batch])
    edges = {key: [_numpy(ex[key]) for ex in batch] for key in _edge_keys(batch[0])}
    cells = [ex["cell"] for ex in batch]
    out, starts = _new_batch(cells, lengths, edges, layout, pad_bin=pad_bin)
    for name in TOKEN_DTYPES:
        flat = out[name].view(-1)
        for ex, start, n in zip(batch, starts, lengths):
            flat[start : start + n] = ex[name]
    return out


def collate_padded(batch: list[dict], *, pad_bin: int) -> dict:
    """Padded batch of examples: (B, L) tokens, bins, targets and ``padding_mask`` (True =
    padding); edges as (3, E): batch row, source, target positions (int16 when B and L allow,
    else int32)."""
    return _collate(batch, "padded", pad_bin)


def collate_packed(batch: list[dict]) -> dict:
    """Packed batch of examples without padding: concatenated tokens, ``cu_seqlens`` (B + 1,
    int32, for variable-length attention kernels), ``max_seqlen``, and edges offset into the
    packed axis (int32)."""
    return _collate(batch, "packed", pad_bin=0)


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@njit(cache=True)
def _mix(x):
    """splitmix64's finalizer: a bijective scramble of a uint64."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@njit(cache=True)
def _masked_tokens(
    gene_ids,
    bins,
    lengths,
    n_masked,
    cells,
    seed,
    epoch,
    n_bins,
    out_ids,
    out_bins,
    out_targets,
    starts,
):
    """Per cell i (its ``lengths[i]`` tokens next in ``gene_ids``/``bins``), write CLS and the
    tokens from ``starts[i]`` on, with ``n_masked[i]`` positions' bins replaced by MASK and
    kept as targets (IGNORE elsewhere). Which positions: a partial Fisher-Yates shuffle driven
    by splitmix64 keyed by (seed, epoch, cell), so a cell's mask does not depend on its batch."""
    source = 0
    for i in range(lengths.shape[0]):
        n, first = lengths[i], starts[i]
        out_ids[first], out_bins[first], out_targets[first] = CLS, n_bins + 2, IGNORE
        for k in range(n):
            out_ids[first + 1 + k] = gene_ids[source + k]
            out_bins[first + 1 + k] = bins[source + k]
            out_targets[first + 1 + k] = IGNORE
        state = _mix(_mix(_mix(np.uint64(seed) + _GOLDEN) + np.uint64(epoch)) + np.uint64(cells[i]))
        positions = np.arange(n)
        for j in range(n_masked[i]):
            state += _GOLDEN
            pick = j + np.int64(_mix(state) % np.uint64(n - j))
            positions[j], positions[pick] = positions[pick], positions[j]
            at = first + 1 + positions[j]
            out_targets[at] = out_bins[at]
            out_bins[at] = n_bins + 1
        source += n


@functools.lru_cache(maxsize=4)  # training makes a dataset per epoch: build the graph once
def coexpression_knn_graph(
    cells_path: str, split: str | None = "train", *, k: int = 10, max_cells: int = 20_000
) -> sp.csr_matrix:
    """The gene co-expression kNN graph of a split's cells (GRNFormer's perturbation graph).

    Each gene's expression over the cells is its stored rank bin (0 where not expressed); two
    genes are joined when either is among the other's ``k`` genes of highest Pearson
    correlation (positive only) over the cells. At most ``max_cells`` cells are read, evenly
    spaced over the split (deterministic).

    Returns
    -------
    Symmetric CSR over the cell store's token ids (1 for an edge; no self-loops).
    """
    store = CellStore.open(cells_path)
    cells = np.flatnonzero(store.obs["split"] == split) if split else np.arange(len(store.obs))
    cells = cells[np.linspace(0, len(cells) - 1, min(len(cells), max_cells)).astype(np.int64)]
    group, offsets = store._group, store.offsets
    gene_ids, bins = group["tokens/gene_ids"][:], group["tokens/bins"][:]
    spans = [np.arange(offsets[c], offsets[c + 1]) for c in cells]
    lengths = [len(span) for span in spans]
    taken = np.concatenate(spans) if spans else np.empty(0, np.int64)
    n_tokens = len(store.vocabulary)
    x = sp.csr_matrix(
        (bins[taken].astype(np.float64), gene_ids[taken], np.r_[0, np.cumsum(lengths)]),
        shape=(len(cells), n_tokens),
    )
    n = max(len(cells), 1)
    mean = np.asarray(x.mean(axis=0)).ravel()
    sd = np.sqrt(np.maximum(np.asarray(x.multiply(x).mean(axis=0)).ravel() - mean**2, 0.0))
    genes = np.flatnonzero(sd > 0)
    sources, targets = [], []
    xt = x[:, genes].T.tocsr()
    for start in range(0, len(genes), 512):  # a block of genes' correlations with all at once
        block = genes[start : start + 512]
        covariance = (xt @ x[:, block]).toarray() / n - np.outer(mean[genes], mean[block])
        correlation = covariance / np.outer(sd[genes], sd[block])
        correlation[start + np.arange(len(block)), np.arange(len(block))] = -np.inf  # self
        top = np.argsort(-correlation, axis=0, kind="stable")[: min(k, len(genes) - 1)]
        positive = np.take_along_axis(correlation, top, axis=0) > 0
        sources.append(np.broadcast_to(block, top.shape)[positive])
        targets.append(genes[top[positive]])
    sources = np.concatenate(sources) if sources else np.empty(0, np.int64)
    targets = np.concatenate(targets) if targets else np.empty(0, np.int64)
    ones = np.ones(2 * sources.size, dtype=np.int8)
    graph = sp.csr_matrix(
        (ones, (np.r_[sources, targets], np.r_[targets, sources])), shape=(n_tokens, n_tokens)
    )
    graph.data[:] = 1
    return graph


def coexpression_perturbation(
    edges: np.ndarray, candidates: np.ndarray, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Replace ``fraction`` of a cell's undirected edges by co-expression edges among its genes.

    Parameters
    ----------
    edges
        (2, E) symmetric edges in token positions.
    candidates
        (2, C) the co-expression kNN graph's edges among the cell's genes, in token positions,
        first < second (:func:`coexpression_knn_graph`).
    fraction
        Share of the undirected edges replaced.
    rng
        The example's generator.

    Returns
    -------
    (2, E) int32 symmetric edges, as many as before: ``round(fraction * E / 2)`` undirected
    edges dropped and as many candidates that are no edge yet added, uniformly at random (fewer
    of both when too few candidates are free).
    """
    upper = edges[:, edges[0] < edges[1]].astype(np.int64)
    size = int(max(upper.max(initial=0), candidates.max(initial=0))) + 1
    free = candidates[:, ~np.isin(candidates[0] * size + candidates[1], upper[0] * size + upper[1])]
    n_replaced = min(int(round(fraction * upper.shape[1])), free.shape[1])
    if n_replaced == 0:
        return edges
    kept = upper[:, rng.choice(upper.shape[1], upper.shape[1] - n_replaced, replace=False)]
    added = free[:, np.sort(rng.choice(free.shape[1], n_replaced, replace=False))]
    upper = np.concatenate([kept, added], axis=1)
    return np.concatenate([upper, upper[::-1]], axis=1).astype(np.int32)


def _batch_tensor(shape: tuple, dtype: torch.dtype) -> torch.Tensor:
    """An output tensor for a batch; in a loader worker, in shared memory from the start (as
    torch's default collate does) so that sending it to the main process copies nothing."""
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(math.prod(shape))
    return torch.empty(0, dtype=dtype).new(storage).view(shape)


class TokenArrayDataset(CellDataset):
    """Cells tokenized in memory (the arrays of :func:`gremln.tokenize.tokenize_cells`) rather
    than read from a cell store: the examples of :class:`CellDataset`, with the same subgraphs,
    served in a given order (no shuffling, no sharding), for embedding and evaluation.

    Parameters
    ----------
    offsets, gene_ids, bins
        Ragged tokens: cell i is ``gene_ids[offsets[i]:offsets[i + 1]]`` (genes by decreasing
        bin), as ``tokenize_cells`` returns them.
    vocabulary
        The vocabulary the token ids are of.
    graphs_path
        The graph store holding the cells' graphs (its path, opened read-only), or a
        :class:`GraphSource` (e.g. with an integration's assignment held in memory).
    graph_keys
        Each cell's graph: a graph name, ``assignment:NAME`` (a per-cell graph of an integration,
        looked up by cell id), or ``""`` for no graph.
    cell_ids
        Cell ids (the rows of an assignment).
    max_length, mask_fraction, seed, batch_size, layout
        As :class:`CellDataset` (``mask_fraction`` 0: nothing masked, no targets to predict).
    order
        The cells to serve, in this order (default: all, in their order); batches of cells of
        similar length waste less on padding.
    """

    def __init__(
        self,
        offsets: np.ndarray,
        gene_ids: np.ndarray,
        bins: np.ndarray,
        *,
        vocabulary,
        graphs_path,
        graph_keys: np.ndarray,
        cell_ids: np.ndarray,
        max_length: int | None = None,
        mask_fraction: float = 0.0,
        seed: int = 0,
        batch_size: int | None = None,
        layout: str = "packed",
        order: np.ndarray | None = None,
    ):
        torch.utils.data.IterableDataset.__init__(self)
        if not 0.0 <= mask_fraction < 1.0:
            raise ValueError(f"mask_fraction must be in [0, 1), not {mask_fraction}")
        if layout not in ("packed", "padded"):
            raise ValueError(f"layout must be 'packed' or 'padded', not {layout!r}")
        if not len(offsets) - 1 == len(graph_keys) == len(cell_ids):
            raise ValueError("offsets, graph_keys and cell_ids must describe the same cells")
        self.offsets, self.gene_ids, self.bins = offsets, gene_ids, bins
        self.vocabulary, self.graphs_path = vocabulary, GraphSource(graphs_path)
        self.n_bins = vocabulary.n_bins
        self.indices = np.arange(len(offsets) - 1) if order is None else np.asarray(order)
        self.max_length, self.mask_fraction = max_length, mask_fraction
        self.seed, self.epoch, self.batch_size, self.layout = seed, 0, batch_size, layout
        self._keys = np.asarray(graph_keys, dtype=object)
        self._cell_ids = np.asarray(cell_ids, dtype=object)
        self._graphs = None  # opened on first use

    def __len__(self) -> int:
        return len(self.indices)

    def _open(self):
        self._graphs = self.graphs_path
        self._to_graph = np.full(len(self.vocabulary), -1, dtype=np.int64)
        self._to_graph[3:] = self._graphs.gene_index(self.vocabulary.genes)
        self._assignments = {}

    def __iter__(self):
        size = self.batch_size or 1
        for start in range(0, len(self.indices), size):
            cells = [self._tokens_of(int(cell)) for cell in self.indices[start : start + size]]
            yield self.example(*cells[0]) if self.batch_size is None else self.batch(cells)

    def __getitem__(self, cell: int) -> dict:
        """The example of cell ``cell``."""
        return self.example(*self._tokens_of(int(cell)))

    def _tokens_of(self, cell: int) -> tuple[int, np.ndarray, np.ndarray]:
        span = slice(int(self.offsets[cell]), int(self.offsets[cell + 1]))
        return cell, self.gene_ids[span], self.bins[span]

    def subgraph(self, cell: int, gene_ids: np.ndarray) -> np.ndarray:
        """As :meth:`CellDataset.subgraph`; a cell whose graph key is ``""`` has no edges."""
        if not self._keys[cell]:
            return np.empty((2, 0), dtype=np.int32)
        if self._graphs is None:
            self._open()
        return super().subgraph(cell, gene_ids)
