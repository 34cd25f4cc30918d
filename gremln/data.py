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

import math
from dataclasses import dataclass

import numpy as np
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


class CellDataset(torch.utils.data.IterableDataset):
    """Masked cells with their subgraphs (see the module docstring).

    Parameters
    ----------
    cells_path
        The cell store (``gremln prepare``).
    graphs_path
        The graph store holding the cells' graphs.
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
        Replace this fraction of each cell's undirected edges by random pairs of its genes
        (all expressed: edges of its co-expression graph), per epoch; the count is kept.
    """

    # class-level defaults: subclasses that build their own state inherit them
    cellspecific: str | None = None
    coexpression_fraction: float = 0.0

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
        self.cells_path, self.graphs_path = str(cells_path), str(graphs_path)
        store = CellStore.open(self.cells_path)
        self.n_bins = store.vocabulary.n_bins
        obs = store.obs
        self.indices = np.flatnonzero(obs["split"] == split) if split else np.arange(len(obs))
        self.max_length, self.mask_fraction = max_length, mask_fraction
        self.seed, self.epoch, self.position, self.block = seed, epoch, position, block
        self.batch_size, self.layout = batch_size, layout
        self.cellspecific, self.coexpression_fraction = cellspecific, coexpression_fraction
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
        from netinfer.store import GraphStore

        cells = CellStore.open(self.cells_path)
        graphs = GraphStore.open(self.graphs_path)
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
            edges = coexpression_perturbation(edges, gene_ids.size, self.coexpression_fraction, rng)
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


def coexpression_perturbation(
    edges: np.ndarray, n_genes: int, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Replace ``fraction`` of a cell's undirected edges by random new pairs of its genes.

    Every pair of a cell's tokens is an edge of its co-expression graph (tokens are expressed
    genes), so the replacements are drawn uniformly among the pairs not already edges.

    Parameters
    ----------
    edges
        (2, E) symmetric edges in token positions 1..n_genes.
    n_genes
        Genes of the cell.
    fraction
        Share of the undirected edges replaced.
    rng
        The example's generator.

    Returns
    -------
    (2, E) int32 symmetric edges, as many as before (fewer only when the cell has too few free
    pairs).
    """
    upper = edges[:, edges[0] < edges[1]].astype(np.int64)
    n_replaced = int(round(fraction * upper.shape[1]))
    if n_replaced == 0:
        return edges
    kept = upper[:, rng.choice(upper.shape[1], upper.shape[1] - n_replaced, replace=False)]
    taken = set((upper[0] * (n_genes + 1) + upper[1]).tolist())
    free = n_genes * (n_genes - 1) // 2 - len(taken)
    added: list[int] = []
    while len(added) < min(n_replaced, free):
        pairs = np.sort(rng.integers(1, n_genes + 1, size=(2, 2 * n_replaced)), axis=0)
        for key in (pairs[0] * (n_genes + 1) + pairs[1])[pairs[0] < pairs[1]].tolist():
            if key not in taken and len(added) < n_replaced:
                taken.add(key)
                added.append(key)
    new = np.array(added, dtype=np.int64)
    upper = np.concatenate([kept, np.stack([new // (n_genes + 1), new % (n_genes + 1)])], axis=1)
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
        The graph store holding the cells' graphs.
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
        self.vocabulary, self.graphs_path = vocabulary, str(graphs_path)
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
        from netinfer.store import GraphStore

        self._graphs = GraphStore.open(self.graphs_path)
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
