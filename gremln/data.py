"""The GREmLN dataset: cells as masked token sequences with their regulatory subgraphs, in packed
or padded batches, sharded across DDP ranks and loader workers.

Per cell (from the cell store): ``[CLS] g_1 ... g_n`` gene tokens with their rank bins, at most
``max_length`` genes (the highest bins are kept: tokens are stored by decreasing bin); a
``mask_fraction`` of the gene positions get the MASK bin (gene ids are never masked; the CLS token
never is), with the true bins as targets (-100 elsewhere); and the cell's graph restricted to its
genes, symmetrized, as local edges (CLS, position 0, is not part of the graph).

Order: the cells of a split are read in blocks of ``block`` consecutive cells (one contiguous
read each); blocks are shuffled, and cells within a block, per (seed, epoch). Blocks are dealt to
ranks and then to workers round-robin, so shards never overlap and cover every cell. A position
(cells already yielded by this shard) resumes an epoch where a checkpoint left it.
"""

from __future__ import annotations

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
    n_cells: int,
    *,
    block: int,
    seed: int,
    epoch: int,
    rank: int,
    world_size: int,
    worker: int,
    n_workers: int,
) -> list[np.ndarray]:
    """The blocks of cell positions (into the split) one worker of one rank reads, in order."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, epoch, 0x6F72646572]))  # "order"
    starts = np.arange(0, n_cells, block)
    starts = starts[rng.permutation(starts.size)]
    blocks = [
        np.arange(s, min(s + block, n_cells))[rng.permutation(min(block, n_cells - s))]
        for s in starts
    ]
    mine = blocks[rank::world_size]
    return mine[worker::n_workers]


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
        Cells this shard already yielded in this epoch (resume).
    block
        Consecutive cells read at once.
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
    ):
        super().__init__()
        if not 0.0 <= mask_fraction < 1.0:
            raise ValueError(f"mask_fraction must be in [0, 1), not {mask_fraction}")
        self.cells_path, self.graphs_path = str(cells_path), str(graphs_path)
        store = CellStore.open(self.cells_path)
        self.n_bins = store.vocabulary.n_bins
        obs = store.obs
        self.indices = np.flatnonzero(obs["split"] == split) if split else np.arange(len(obs))
        self.max_length, self.mask_fraction = max_length, mask_fraction
        self.seed, self.epoch, self.position, self.block = seed, epoch, position, block
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
            worker=worker,
            n_workers=n_workers,
        )
        skip = self.position // n_workers + (worker < self.position % n_workers)
        for positions in blocks:
            if skip >= len(positions):
                skip -= len(positions)
                continue
            cells = self.indices[positions]
            lo, hi = (
                int(self._cells.offsets[cells.min()]),
                int(self._cells.offsets[cells.max() + 1]),
            )
            gene_ids, bins = self._tokens[0][lo:hi], self._tokens[1][lo:hi]
            for cell in cells[skip:]:
                span = slice(self._cells.offsets[cell] - lo, self._cells.offsets[cell + 1] - lo)
                yield self.example(int(cell), gene_ids[span], bins[span])
            skip = 0

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
        src, dst = self.subgraph(cell, gene_ids)
        return {
            "cell": cell,
            "gene_ids": torch.from_numpy(tokens),
            "bins": torch.from_numpy(inputs.astype(np.int64)),
            "targets": torch.from_numpy(targets.astype(np.int64)),
            # int32: edges are most of a batch's bytes; CLS takes position 0
            "edge_index": torch.from_numpy(np.stack([src, dst]).astype(np.int32) + 1),
        }

    def subgraph(self, cell: int, gene_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The cell's graph among its genes, symmetrized, in positions 0..n-1 of ``gene_ids``."""
        graph_index = self._to_graph[gene_ids]
        in_graph = np.flatnonzero(graph_index >= 0)
        key = self._keys[cell]
        if key.startswith("assignment:"):  # a per-cell graph from netinfer integrate
            return self._assigned_subgraph(key.removeprefix("assignment:"), cell, graph_index)
        # rows in vocabulary order: the scan then walks the graph forward (prefetch-friendly)
        order = in_graph[np.argsort(graph_index[in_graph], kind="stable")]
        src, dst, _ = self._graphs.subgraph(key, graph_index[order], symmetrize=True, weights=False)
        return order[src], order[dst]

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
        return pairs[:, 0], pairs[:, 1]


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
    lengths = torch.tensor([len(ex["gene_ids"]) for ex in batch])
    starts = torch.cumsum(lengths, 0) - lengths
    return {
        "gene_ids": torch.cat([ex["gene_ids"] for ex in batch]),
        "bins": torch.cat([ex["bins"] for ex in batch]),
        "targets": torch.cat([ex["targets"] for ex in batch]),
        "cu_seqlens": torch.cat([torch.zeros(1), torch.cumsum(lengths, 0)]).to(torch.int32),
        "max_seqlen": int(lengths.max()),
        "edge_index": torch.cat([ex["edge_index"] + int(s) for ex, s in zip(batch, starts)], dim=1),
        "cells": torch.tensor([ex["cell"] for ex in batch]),
    }
