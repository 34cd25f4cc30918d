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
    """

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
    ):
        super().__init__()
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
            examples = []
            for at in range(start, stop):
                number = int(np.searchsorted(block_ends, at, side="right"))
                lo, gene_ids, bins = read[number]
                cell = int(self.indices[order[at]])
                span = slice(self._cells.offsets[cell] - lo, self._cells.offsets[cell + 1] - lo)
                examples.append(self.example(cell, gene_ids[span], bins[span]))
            yield examples[0] if self.batch_size is None else self.collate(examples)

    def _read(self, block: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
        """The tokens of a block of cells: one contiguous read."""
        cells = self.indices[block]
        lo = int(self._cells.offsets[cells.min()])
        hi = int(self._cells.offsets[cells.max() + 1])
        return lo, self._tokens[0][lo:hi], self._tokens[1][lo:hi]

    def collate(self, examples: list[dict]) -> dict:
        """A batch in this dataset's layout."""
        if self.layout == "packed":
            return collate_packed(examples)
        return collate_padded(examples, pad_bin=self.n_bins)

    def example(self, cell: int, gene_ids: np.ndarray, bins: np.ndarray) -> dict:
        """One training example from a cell's stored tokens (deterministic per seed, epoch)."""
        if self.max_length is not None:
            gene_ids, bins = gene_ids[: self.max_length], bins[: self.max_length]
        n = gene_ids.size
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch, cell]))
        masked = np.zeros(n, dtype=bool)
        masked[rng.choice(n, size=int(round(self.mask_fraction * n)), replace=False)] = True
        tokens = np.concatenate([[CLS], gene_ids]).astype(np.int64)
        inputs = np.concatenate([[self.n_bins + 2], np.where(masked, self.n_bins + 1, bins)])
        targets = np.concatenate([[IGNORE], np.where(masked, bins, IGNORE)])
        return {
            "cell": cell,
            "gene_ids": torch.from_numpy(tokens),
            "bins": torch.from_numpy(inputs.astype(np.int64)),
            "targets": torch.from_numpy(targets.astype(np.int64)),
            # int32: edges are most of a batch's bytes
            "edge_index": torch.from_numpy(self.subgraph(cell, gene_ids)),
        }

    def subgraph(self, cell: int, gene_ids: np.ndarray) -> np.ndarray:
        """The cell's graph among its genes, symmetrized: (2, E) int32 token positions (gene k of
        ``gene_ids`` is at position k + 1, after CLS)."""
        graph_index = self._to_graph[gene_ids]
        in_graph = np.flatnonzero(graph_index >= 0)
        key = self._keys[cell]
        if key.startswith("assignment:"):  # a per-cell graph from netinfer integrate
            return self._assigned_subgraph(key.removeprefix("assignment:"), cell, graph_index)
        return self._graphs.undirected_edges(key, graph_index[in_graph], labels=in_graph + 1)

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


def collate_padded(batch: list[dict], *, pad_bin: int) -> dict:
    """Padded batch: (B, L) tokens, bins, targets and ``padding_mask`` (True = padding); edges as
    (3, E): batch row, source, target positions."""
    length = max(len(ex["gene_ids"]) for ex in batch)
    out = {
        "gene_ids": torch.full((len(batch), length), PAD, dtype=torch.long),
        "bins": torch.full((len(batch), length), pad_bin, dtype=torch.long),
        "targets": torch.full((len(batch), length), IGNORE, dtype=torch.long),
        "padding_mask": torch.ones((len(batch), length), dtype=torch.bool),
    }
    edges = []
    for row, ex in enumerate(batch):
        n = len(ex["gene_ids"])
        for name in ("gene_ids", "bins", "targets"):
            out[name][row, :n] = ex[name]
        out["padding_mask"][row, :n] = False
        rows = torch.full((1, ex["edge_index"].shape[1]), row, dtype=torch.int32)
        edges.append(torch.cat([rows, ex["edge_index"]]))
    out["edge_index"] = torch.cat(edges, dim=1)
    out["cells"] = torch.tensor([ex["cell"] for ex in batch])
    return out


def collate_packed(batch: list[dict]) -> dict:
    """Packed batch without padding: concatenated tokens, ``cu_seqlens`` (B + 1, int32, for
    variable-length attention kernels), ``max_seqlen``, and edges offset into the packed axis."""
    lengths = [len(ex["gene_ids"]) for ex in batch]
    token_starts = np.concatenate([[0], np.cumsum(lengths)])
    edge_starts = np.concatenate([[0], np.cumsum([ex["edge_index"].shape[1] for ex in batch])])
    edges = _batch_tensor((2, int(edge_starts[-1])), torch.int32)
    for ex, start, end, offset in zip(batch, edge_starts, edge_starts[1:], token_starts):
        torch.add(ex["edge_index"], int(offset), out=edges[:, start:end])
    tokens = {
        name: torch.cat(
            [ex[name] for ex in batch], out=_batch_tensor((int(token_starts[-1]),), torch.int64)
        )
        for name in ("gene_ids", "bins", "targets")
    }
    return {
        **tokens,
        "cu_seqlens": torch.from_numpy(token_starts.astype(np.int32)),
        "max_seqlen": max(lengths),
        "edge_index": edges,
        "cells": torch.tensor([ex["cell"] for ex in batch]),
    }


def _batch_tensor(shape: tuple, dtype: torch.dtype) -> torch.Tensor:
    """An output tensor for a batch; in a loader worker, in shared memory from the start (as
    torch's default collate does) so that sending it to the main process copies nothing."""
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(math.prod(shape))
    return torch.empty(0, dtype=dtype).new(storage).view(shape)
