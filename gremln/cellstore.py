"""The cell store: tokenized cells on disk (Zarr v3), read by the GREmLN data loader.

Layout::

    CELLS.zarr/                 attrs["gremln_cell_store"] = {schema_version, n_bins, datasets,
      vocab/genes, vocab/ensembl                                   created}
      tokens/offsets            int64, cells + 1: cell i is tokens[offsets[i]:offsets[i + 1]]
      tokens/gene_ids           int32 gene token ids (vocabulary order, specials first)
      tokens/bins               int16 expression bins, by decreasing bin within a cell
      obs/<column>              cell_id, dataset, cell_type, graph_key, split (strings)

Token arrays are sharded and compressed. ``prepare`` appends a data set: it reads an h5ad in
backed mode chunk by chunk (QC needs every cell's total first, so two passes), never the whole
matrix. The vocabulary is fixed by the first data set (or given); later data sets drop, and
report, genes outside it.

Splits (paper A.2), deterministic by seed: 15% of the cell types are held out with their graphs
(``val_unseen``), then 15% of the remaining cells (``val_seen``); the rest is ``train``.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gremln.tokenize import GeneVocabulary, tokenize_cells
from netinfer.io import InputError
from netinfer.sc.validate import (
    MatrixCheck,
    counts_remedy,
    labelled_cells,
    read_h5ad,
    require_cells_after_qc,
)

SCHEMA_VERSION = 1
ROOT_KEY = "gremln_cell_store"
OBS_COLUMNS = ("cell_id", "dataset", "cell_type", "graph_key", "split")
# ~64 cells of 2,000 genes: a loader's read decodes little beyond the cells it needs
TOKEN_CHUNK = 1 << 17
TOKEN_SHARD = 1 << 24


def assign_splits(
    cell_types: np.ndarray,
    *,
    seed: int,
    unseen_fraction: float = 0.15,
    seen_fraction: float = 0.15,
) -> np.ndarray:
    """``train`` / ``val_seen`` / ``val_unseen`` per cell (see the module docstring)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x73706C6974]))  # "split"
    types = np.array(sorted(set(cell_types)))
    n_unseen = int(round(unseen_fraction * len(types)))
    unseen = set(rng.choice(types, size=n_unseen, replace=False)) if n_unseen else set()
    split = np.full(len(cell_types), "train", dtype=object)
    held = np.isin(cell_types, list(unseen))
    split[held] = "val_unseen"
    remaining = np.flatnonzero(~held)
    n_seen = int(round(seen_fraction * remaining.size))
    split[rng.choice(remaining, size=n_seen, replace=False)] = "val_seen"
    return split


@dataclass
class CellStore:
    """A cell store opened for reading: tokens, obs table and vocabulary."""

    path: str
    vocabulary: GeneVocabulary
    offsets: np.ndarray
    obs: pd.DataFrame
    _group: object

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> CellStore:
        """Open a cell store (clear errors for missing, foreign, newer or truncated stores)."""
        import zarr

        path = os.fspath(path)
        if os.path.isfile(path):
            raise InputError(
                f"{path}: is a file, not a cell store (a Zarr directory made by gremln prepare)"
            )
        if not os.path.exists(os.path.join(path, "zarr.json")):
            raise InputError(f"{path}: no such cell store (make one with gremln prepare)")
        group = zarr.open_group(path, mode="r")
        root = group.attrs.get(ROOT_KEY)
        if root is None:
            raise InputError(
                f"{path}: a Zarr group, but not a gremln cell store (a graph store?); give the "
                "cell store made by gremln prepare"
            )
        if root["schema_version"] > SCHEMA_VERSION:
            raise InputError(
                f"{path}: cell-store schema version {root['schema_version']} is newer than this "
                f"gremln reads ({SCHEMA_VERSION}); upgrade gremln"
            )
        try:
            vocabulary = GeneVocabulary(
                list(group["vocab/genes"][:]), list(group["vocab/ensembl"][:]), root["n_bins"]
            )
            offsets = group["tokens/offsets"][:]
            obs = pd.DataFrame({c: group[f"obs/{c}"][:] for c in OBS_COLUMNS})
            n_tokens = group["tokens/gene_ids"].shape[0]
        except KeyError as error:
            raise InputError(f"{path}: truncated cell store, missing {error}") from None
        if offsets[-1] != n_tokens or len(obs) != len(offsets) - 1:
            raise InputError(
                f"{path}: truncated cell store: tokens/offsets ends at {offsets[-1]} but "
                f"tokens/gene_ids has {n_tokens}; obs has {len(obs)} rows for "
                f"{len(offsets) - 1} cells"
            )
        return cls(path, vocabulary, offsets, obs, group)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def gene_bin_counts(
        self,
        split: str,
        *,
        max_length: int | None = None,
        max_tokens: int = 20_000_000,
        seed: int = 0,
    ) -> np.ndarray:
        """Tokens per gene and bin (vocabulary x bins) over the cells of ``split``, each cell cut
        to its first ``max_length`` tokens as the loader cuts it: all the split's cells while the
        store holds at most ``max_tokens`` tokens, else cells drawn at random (seeded) until
        about ``max_tokens // 20`` tokens are read."""
        n_bins = self.vocabulary.n_bins
        lengths = np.diff(self.offsets)
        in_split = self.obs["split"].to_numpy() == split
        if self.offsets[-1] <= max_tokens:
            gene_ids = self._group["tokens/gene_ids"][:]
            bins = self._group["tokens/bins"][:]
            keep = np.repeat(in_split, lengths)
            if max_length is not None:
                position = np.arange(len(gene_ids)) - np.repeat(self.offsets[:-1], lengths)
                keep &= position < max_length
            gene_ids, bins = gene_ids[keep], bins[keep]
        else:
            rng = np.random.default_rng(seed)
            rows = rng.permutation(np.flatnonzero(in_split))
            read = np.cumsum(np.minimum(lengths[rows], max_length or max_tokens))
            rows = np.sort(rows[: np.searchsorted(read, max_tokens // 20) + 1])
            pairs = [self.cell(int(i)) for i in rows]
            gene_ids = np.concatenate([np.empty(0, np.int32)] + [g[:max_length] for g, _ in pairs])
            bins = np.concatenate([np.empty(0, np.int16)] + [b[:max_length] for _, b in pairs])
        flat = gene_ids.astype(np.int64) * n_bins + bins
        counts = np.bincount(flat, minlength=len(self.vocabulary) * n_bins)
        return counts.reshape(len(self.vocabulary), n_bins).astype(np.float64)

    def cell(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Gene token ids and bins of cell i."""
        span = slice(int(self.offsets[i]), int(self.offsets[i + 1]))
        return self._group["tokens/gene_ids"][span], self._group["tokens/bins"][span]


def prepare(
    counts_path: str | os.PathLike[str],
    cells_path: str | os.PathLike[str],
    *,
    graphs_path: str | os.PathLike[str],
    cell_type_key: str,
    min_counts: int = 1000,
    max_counts: int = 100_000,
    trim: float | None = 0.9,
    min_genes: int = 500,
    n_bins: int = 100,
    graph_mode: str = "celltype",
    require_type_networks: bool = False,
    append: bool = False,
    vocabulary: GeneVocabulary | None = None,
    seed: int = 0,
    chunk: int = 10_000,
    progress: bool = False,
    allow_empty: bool = False,
) -> dict:
    """Tokenize an h5ad of counts into the cell store (creating it, or appending with ``append``).

    Parameters
    ----------
    counts_path
        Raw counts, cells x genes, with cell types in ``obs[cell_type_key]``.
    cells_path
        The cell store.
    graphs_path
        The graph store the cells' graphs live in.
    cell_type_key
        Cell-type column.
    min_counts, max_counts, trim, min_genes
        QC, as ``netinfer.pipeline.quality_control`` (the paper's defaults).
    n_bins
        Expression bins including bin 0 (not expressed).
    graph_mode
        ``"celltype"``: each cell's type's consensus network; ``"integrated"``: the graph store's
        assignment named after the data set (``netinfer integrate --name``);
        ``"assignment:NAME"``: the per-cell graphs of the assignment NAME (e.g. ``netinfer
        cellspecific --name``); ``"ppi:NAME"``: the PPI graph NAME for every cell.
    require_type_networks
        In ``celltype`` mode, refuse the data when a cell type has no consensus network (an
        empty one is then kept as the cells' graph). By default, cells of a type without a
        network or with an empty one get a graph from the kNN integration instead
        (``netinfer.integrate.integrate``, their nearest cells of the types that have one),
        stored in the graph store as the assignment ``<data set>-without-type-network``.
    append
        Add to an existing store (its vocabulary and bins are kept).
    vocabulary
        The vocabulary of a new store (default: the data set's genes after QC).
    seed
        Seed of the splits.
    chunk
        Cells read per chunk (backed mode).
    progress
        Show a progress bar.
    allow_empty
        Accept a data set of which no cell is kept (by QC or for want of a label); by default
        that is an error, and nothing is written.

    Every input is checked before the first write (``netinfer.sc.validate``: ids, labels, and
    raw counts over the whole matrix, in the first pass), so an error leaves the store as it was.

    Returns
    -------
    A report: cells read, removed by each QC rule, kept, genes dropped (outside the
    vocabulary), cells per split and, in ``celltype`` mode, the cells per type given an integrated
    graph (``integrated_cells``) with the integration's summary.
    """
    import scipy.sparse as sp
    import zarr
    from tqdm.auto import tqdm

    from netinfer.pipeline import normalize, qc_mask

    counts_path, cells_path = os.fspath(counts_path), os.fspath(cells_path)
    data = read_h5ad(counts_path, backed=True)
    exists = os.path.exists(os.path.join(cells_path, "zarr.json"))
    if os.path.isfile(cells_path) or (
        not exists and os.path.isdir(cells_path) and os.listdir(cells_path)
    ):
        raise InputError(
            f"{cells_path}: exists and is not a cell store; give a new path (e.g. cells.zarr)"
        )
    if exists and not append:
        raise InputError(f"{cells_path}: exists; pass append to add a data set to it")
    if append and not exists:
        raise InputError(f"{cells_path}: no cell store to append to")
    labelled = labelled_cells(data, cell_type_key, counts_path)
    dataset = os.path.basename(counts_path).removesuffix(".h5ad")
    previous = CellStore.open(cells_path) if exists else None
    if previous is not None and dataset in set(previous.obs["dataset"]):
        raise InputError(f"{cells_path}: already holds a data set named {dataset!r}")
    cell_types = data.obs[cell_type_key].astype(str).to_numpy()

    # pass 1, chunk by chunk: QC needs every cell's totals before any cell is kept; the counts
    # are checked on the same reads, over the whole matrix
    check = MatrixCheck(
        counts_path,
        cells=data.obs_names,
        genes=data.var_names,
        counts_for="gremln prepare",
        remedy=counts_remedy(data, layer_flag=False),
    )
    totals = np.zeros(data.n_obs)
    expressed = np.zeros(data.n_obs, dtype=np.int64)
    for start in range(0, data.n_obs, chunk):
        block = sp.csr_matrix(data.X[start : start + chunk])
        check.update(block, start)
        totals[start : start + block.shape[0]] = np.asarray(block.sum(axis=1)).ravel()
        expressed[start : start + block.shape[0]] = np.diff((block > 0).tocsr().indptr)
    check.finish()
    keep, qc = qc_mask(
        totals,
        expressed,
        min_counts=min_counts,
        max_counts=max_counts,
        trim=trim,
        min_genes=min_genes,
    )
    if not labelled.all():
        qc["without_label"] = int((keep & ~labelled).sum())
        keep &= labelled
        qc["kept"] = int(keep.sum())
    if not allow_empty:
        require_cells_after_qc(qc, counts_path, allow_flag=True)
    kept_rows = np.flatnonzero(keep)
    graph_keys = _graph_keys(
        graphs_path,
        graph_mode,
        cell_types[kept_rows],
        dataset,
        np.asarray(data.obs_names[kept_rows]).astype(str),
        require_type_networks=require_type_networks,
    )
    integrated = {}
    without = np.flatnonzero(pd.isna(graph_keys))
    if without.size:
        graph_keys[without], integrated = _integrate_cells_without_network(
            data,
            kept_rows,
            without,
            cell_types,
            graphs_path,
            f"{dataset}-without-type-network",
            seed=seed,
        )

    genes = list(data.var_names.astype(str))
    vocabulary = (
        previous.vocabulary
        if previous is not None
        else (vocabulary or GeneVocabulary(genes, n_bins=n_bins))
    )
    if not set(genes) & set(vocabulary.genes):
        raise InputError(
            f"{counts_path}: none of its {len(genes)} genes (e.g. {', '.join(genes[:3])}) is in "
            f"the cell store's vocabulary (e.g. {', '.join(vocabulary.genes[:3])}): every cell "
            "would be empty. Are both in the same kind of gene id?"
        )
    group = zarr.open_group(cells_path, mode="a")
    if previous is None:
        _create(group, vocabulary)
    base = int(group["tokens/offsets"][-1])  # tokens already in the store
    dropped: list[str] = []
    # pass 2: tokenize the kept cells, chunk by chunk, appending to the token arrays
    with tqdm(
        total=kept_rows.size, desc=f"tokenizing {dataset}", unit="cell", disable=not progress
    ) as bar:
        for start in range(0, kept_rows.size, chunk):
            rows = kept_rows[start : start + chunk]
            block_offsets, gene_ids, bins, dropped = tokenize_cells(
                normalize(sp.csr_matrix(data.X[rows])),
                genes,
                vocabulary,
            )
            group["tokens/gene_ids"].append(gene_ids)
            group["tokens/bins"].append(bins.astype(np.int16))
            group["tokens/offsets"].append(base + block_offsets[1:])  # offsets last: readers
            base += int(block_offsets[-1])  # never see cells whose tokens are missing
            bar.update(rows.size)
    new_obs = pd.DataFrame(
        {
            "cell_id": data.obs_names[kept_rows].astype(str),
            "dataset": dataset,
            "cell_type": cell_types[kept_rows],
            "graph_key": graph_keys,
        }
    )
    obs = (
        pd.concat([previous.obs.drop(columns="split"), new_obs], ignore_index=True)
        if (previous is not None)
        else new_obs
    )
    obs["split"] = assign_splits(obs["cell_type"].to_numpy(), seed=seed)
    for column in OBS_COLUMNS:  # rewritten last: a crash before here leaves the old table
        _write_strings(group, f"obs/{column}", obs[column].to_numpy())
    root = dict(group.attrs[ROOT_KEY])
    root["datasets"] = [
        *root["datasets"],
        {"name": dataset, "path": counts_path, "cells": int(kept_rows.size), "qc": qc},
    ]
    group.attrs[ROOT_KEY] = root
    return {
        "dataset": dataset,
        "qc": qc,
        "genes_outside_vocabulary": len(dropped),
        "examples_outside_vocabulary": dropped[:5],
        "cells_in_store": int(len(obs)),
        "splits": {k: int(v) for k, v in obs["split"].value_counts().items()},
        **integrated,
    }


REFERENCE_CELLS = 20_000
"""Reference cells (at most; beyond, a seeded random sample of them) of the integration that
gives graphs to cells of types without a network."""


def _integrate_cells_without_network(
    data, kept_rows, without, cell_types, graphs_path, name: str, *, seed: int
) -> tuple[np.ndarray, dict]:
    """Graphs for the kept cells ``without`` (positions in ``kept_rows``) whose type has no
    network: the kNN integration against the kept cells of the types that have one."""
    import anndata as ad
    import scipy.sparse as sp

    from netinfer.integrate import integrate
    from netinfer.store import GraphStore

    with_network = np.setdiff1d(np.arange(kept_rows.size), without)
    if with_network.size == 0:
        raise InputError(
            f"{graphs_path}: none of the kept cells' types has a consensus network; make them "
            "with netinfer celltype-networks, or choose another graph mode (ppi:NAME, ...)"
        )
    if with_network.size > REFERENCE_CELLS:
        picked = np.random.default_rng(seed).choice(with_network, REFERENCE_CELLS, replace=False)
        with_network = np.sort(picked)
    genes = pd.DataFrame(index=data.var_names.astype(str))

    def cells(positions, obs):
        rows = kept_rows[positions]
        obs.index = np.asarray(data.obs_names[rows]).astype(str)
        return ad.AnnData(X=sp.csr_matrix(data.X[rows]), obs=obs, var=genes)

    query = cells(without, pd.DataFrame())  # no labels: the integration cannot read them
    reference = cells(
        with_network, pd.DataFrame({"cell_type": cell_types[kept_rows][with_network]})
    )
    with GraphStore.open(graphs_path, mode="a") as store:
        result = integrate(
            query, reference, store, cell_type_key="cell_type", name=name, overwrite=True, seed=seed
        )
    types, counts = np.unique(cell_types[kept_rows][without], return_counts=True)
    report = {
        "integrated_cells": {str(t): int(n) for t, n in zip(types, counts)},
        "integration": {"assignment": name, **result.summary},
    }
    return np.full(without.size, f"assignment:{name}", dtype=object), report


def _create(group, vocabulary: GeneVocabulary) -> None:
    """An empty cell store with its vocabulary."""
    _write_strings(group, "vocab/genes", np.asarray(vocabulary.genes))
    ensembl = vocabulary.ensembl or [""] * len(vocabulary.genes)
    _write_strings(group, "vocab/ensembl", np.asarray(ensembl))
    for name, dtype in (("gene_ids", np.int32), ("bins", np.int16)):
        group.create_array(
            f"tokens/{name}",
            shape=(0,),
            dtype=dtype,
            chunks=(TOKEN_CHUNK,),
            shards=(TOKEN_SHARD,),
        )
    offsets = group.create_array(
        "tokens/offsets", shape=(1,), dtype=np.int64, chunks=(TOKEN_CHUNK,)
    )
    offsets[:] = np.zeros(1, dtype=np.int64)
    group.attrs[ROOT_KEY] = {
        "schema_version": SCHEMA_VERSION,
        "n_bins": vocabulary.n_bins,
        "datasets": [],
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _write_strings(group, path: str, values: np.ndarray) -> None:
    """(Re)write a string array."""
    if path in group:
        del group[path]
    array = group.create_array(
        path, shape=values.shape, dtype=str, chunks=(max(1, min(TOKEN_CHUNK, values.size)),)
    )
    if values.size:
        array[:] = values.astype(str)


def _graph_keys(
    graphs_path,
    graph_mode: str,
    cell_types: np.ndarray,
    dataset: str,
    cell_ids: np.ndarray,
    *,
    require_type_networks: bool = True,
) -> np.ndarray:
    """Each cell's graph in the graph store (a path or a :class:`gremln.data.GraphSource`),
    checked to exist there; in ``celltype`` mode without ``require_type_networks``, None for
    the cells whose type has no (or an empty) consensus network."""
    from gremln.data import GraphSource

    with GraphSource(graphs_path) as store:
        if graph_mode.startswith("ppi:"):
            name = graph_mode[4:]
            if name not in store:
                raise InputError(f"{graphs_path}: no graph {name!r} for graph mode {graph_mode}")
            return np.full(cell_types.size, name, dtype=object)
        if graph_mode == "integrated" or graph_mode.startswith("assignment:"):
            name = dataset if graph_mode == "integrated" else graph_mode.removeprefix("assignment:")
            assigned = store.get_assignment(name).cells  # raises, naming the assignments there
            missing = cell_ids[~np.isin(cell_ids, assigned)]
            if missing.size:
                raise InputError(
                    f"{graphs_path}: assignment {name!r} has no graph for {missing.size} cell(s) "
                    f"of {dataset} (e.g. {', '.join(missing[:3])})"
                )
            return np.full(cell_types.size, f"assignment:{name}", dtype=object)
        if graph_mode != "celltype":
            raise ValueError(
                "graph_mode must be celltype, integrated, assignment:NAME or ppi:NAME, not "
                f"{graph_mode!r}"
            )
        listing = store.list()
        listing = listing[listing["kind"] == "consensus"]
        if not require_type_networks:  # an empty network is no graph: integrate those cells
            listing = listing[listing["edges"] > 0]
        by_type = dict(zip(listing["cell_type"], listing["name"]))
    missing = sorted(set(cell_types) - set(by_type))
    if missing and require_type_networks:
        raise InputError(
            f"{graphs_path}: no consensus network for {len(missing)} cell type(s) of {dataset} "
            f"(e.g. {', '.join(missing[:3])}); make them with netinfer "
            "celltype-networks. Types it skipped (fewer than --min-cells cells) have none: leave "
            "their cells out, or choose another graph mode (integrated, assignment:NAME, "
            "ppi:NAME); gremln prepare without --require-type-networks gives them integrated "
            "graphs"
        )
    return np.array([by_type.get(t) for t in cell_types], dtype=object)
