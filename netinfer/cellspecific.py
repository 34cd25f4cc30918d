"""Cell-specific networks (GRNFormer): the edges of the regulons active in each cell.

1. **Regulon activity** (AUCell-style): per cell, genes are ranked by expression (ties in a
   deterministic per-cell pseudo-random order); a regulon's score is the area under the recovery
   curve of its targets over the top ``max_rank`` genes, divided by the largest area its number
   of targets allows, so it lies in [0, 1].
2. **Activity threshold per regulon**: a two-component Gaussian mixture over the cells' scores.
   When it is bimodal (two components fit better than one by BIC, and their weighted densities
   cross between the means) the threshold is that crossing point; otherwise cells above
   mu + 2 sigma of the dominant component are active.
3. **A cell's network** is the union of the edges of its type's network whose regulator is
   active in the cell. Cells are processed in chunks; identical networks are stored once, as an
   assignment of per-cell graphs in the graph store (``GraphStore.get_assignment``), whose
   parameters record ``kind = "cellspecific"`` and, as ``read_labels``, that every cell's
   graph was made from its own label (``{"column": cell_type_key, "of": "own cells"}``): an
   evaluation that predicts these cells' labels must not give them these graphs (``gremln
   evaluate`` refuses them).
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from netinfer.io import InputError
from netinfer.sc.validate import require_obs_column

#: ``params["read_labels"]["of"]`` of an assignment whose cells' graphs were made from their own
#: labels
READ_OWN_LABELS = "own cells"


@njit(cache=True)
def _mix(cell: np.uint64, gene_keys: np.ndarray) -> np.ndarray:
    """A 64-bit mix of cell and gene keys: a pseudo-random order of tied genes."""
    mixed = gene_keys ^ (cell * np.uint64(0x9E3779B97F4A7C15))
    mixed ^= mixed >> np.uint64(33)
    mixed *= np.uint64(0xFF51AFD7ED558CCD)
    mixed ^= mixed >> np.uint64(33)
    return mixed


@njit(cache=True, parallel=True)
def _regulon_auc(values, cell_keys, gene_keys, regulon_ptr, regulon_genes, max_rank):
    """(cells, regulons) normalized AUC of each regulon's targets in each cell's gene ranking."""
    n_cells, n_genes = values.shape
    n_regulons = regulon_ptr.shape[0] - 1
    scores = np.zeros((n_cells, n_regulons))
    for i in prange(n_cells):
        ties = np.argsort(_mix(cell_keys[i], gene_keys))
        order = ties[np.argsort(-values[i][ties], kind="mergesort")]  # stable: ties stay mixed
        rank = np.empty(n_genes, dtype=np.int64)
        for r in range(n_genes):
            rank[order[r]] = r
        for j in range(n_regulons):
            area = 0.0
            for p in range(regulon_ptr[j], regulon_ptr[j + 1]):
                r = rank[regulon_genes[p]]
                if r < max_rank:
                    area += max_rank - r
            n_top = min(regulon_ptr[j + 1] - regulon_ptr[j], max_rank)
            best = n_top * max_rank - n_top * (n_top - 1) / 2.0  # targets at ranks 0..n_top-1
            scores[i, j] = area / best if best > 0 else 0.0
    return scores


def _keys(names) -> np.ndarray:
    """A stable 64-bit key per name (independent of order and process)."""
    return np.array(
        [int.from_bytes(hashlib.blake2b(str(n).encode(), digest_size=8).digest()) for n in names],
        dtype=np.uint64,
    )


def regulon_activity(
    expression,
    genes,
    regulons: dict[str, list[str]],
    *,
    cells=None,
    max_rank: float = 0.05,
) -> np.ndarray:
    """AUCell-style activity of each regulon in each cell (see the module docstring).

    Parameters
    ----------
    expression
        Cells x genes (dense or sparse; any monotone normalization gives the same scores).
    genes
        Gene ids of the columns.
    regulons
        Regulator -> its targets; targets outside ``genes`` are ignored.
    cells
        Cell ids (seed the order of tied genes, so a cell's score does not depend on its
        neighbours in the matrix); default the row numbers.
    max_rank
        The recovery curve's extent: a fraction of the genes (< 1) or a number of genes.

    Returns
    -------
    (cells, regulons) float64 in [0, 1], columns in the order of ``regulons``.
    """
    import scipy.sparse as sp

    genes = [str(g) for g in genes]
    column = {g: i for i, g in enumerate(genes)}
    indices = [[column[t] for t in targets if t in column] for targets in regulons.values()]
    pointer = np.concatenate([[0], np.cumsum([len(t) for t in indices])]).astype(np.int64)
    members = np.array([i for t in indices for i in t], dtype=np.int64)
    top = int(max_rank * len(genes)) if max_rank < 1 else int(max_rank)
    if top < 1:
        raise ValueError(f"max_rank {max_rank} leaves no gene of {len(genes)} in the curve")
    dense = expression.toarray() if sp.issparse(expression) else np.asarray(expression)
    names = np.arange(dense.shape[0]) if cells is None else cells
    return _regulon_auc(dense.astype(np.float64), _keys(names), _keys(genes), pointer, members, top)


@dataclass
class Threshold:
    """A regulon's activity threshold and how it was found (``bimodal``: mixture crossing)."""

    value: float
    bimodal: bool


def activity_threshold(scores: np.ndarray, *, seed: int = 0) -> Threshold:
    """The activity threshold of one regulon over cells (see the module docstring)."""
    from sklearn.mixture import GaussianMixture

    x = np.asarray(scores, dtype=np.float64).reshape(-1, 1)
    if x.shape[0] < 4 or np.ptp(x) == 0:
        return Threshold(float(x.max(initial=0.0)) + 1e-12, False)  # nothing to separate
    one = GaussianMixture(1, random_state=seed).fit(x)
    two = GaussianMixture(2, random_state=seed, n_init=2).fit(x)
    weights, means = two.weights_, two.means_.ravel()
    sds = np.sqrt(two.covariances_.ravel())
    order = np.argsort(means)
    crossing = _density_crossing(weights[order], means[order], sds[order])
    if two.bic(x) < one.bic(x) and crossing is not None and _has_dip(two, means[order]):
        return Threshold(crossing, True)
    if two.bic(x) < one.bic(x):
        dominant = int(np.argmax(weights))
        return Threshold(float(means[dominant] + 2 * sds[dominant]), False)
    return Threshold(float(one.means_[0, 0] + 2 * np.sqrt(one.covariances_[0, 0, 0])), False)


def _has_dip(mixture, means) -> bool:
    """Whether the mixture's density falls between its means below its value at both: two modes,
    not one skewed mode that two components happen to fit better."""
    grid = np.linspace(means[0], means[1], 257).reshape(-1, 1)
    density = np.exp(mixture.score_samples(grid))
    return bool(density[1:-1].min() < 0.99 * min(density[0], density[-1]))


def _density_crossing(weights, means, sds) -> float | None:
    """Where the weighted normal densities of two components cross between their means."""
    (w1, w2), (m1, m2), (s1, s2) = weights, means, sds
    # log w1 N(x; m1, s1) = log w2 N(x; m2, s2): a quadratic a x^2 + b x + c = 0
    a = 1 / (2 * s2**2) - 1 / (2 * s1**2)
    b = m1 / s1**2 - m2 / s2**2
    c = m2**2 / (2 * s2**2) - m1**2 / (2 * s1**2) + np.log((w1 * s2) / (w2 * s1))
    roots = [-c / b] if abs(a) < 1e-12 else np.roots([a, b, c])
    inside = [float(r.real) for r in np.atleast_1d(roots) if abs(np.imag(r)) < 1e-12]
    inside = [r for r in inside if m1 < r < m2]
    return inside[0] if inside else None


@dataclass
class CellSpecificResult:
    """Per cell: its graph index in the stored assignment and its active regulators count."""

    graph_index: np.ndarray
    active: np.ndarray
    thresholds: dict[str, dict[str, Threshold]]
    summary: dict


def cellspecific_networks(
    adata,
    store,
    *,
    cell_type_key: str,
    name: str = "cellspecific",
    max_rank: float = 0.05,
    chunk: int = 2048,
    seed: int = 0,
    overwrite: bool = False,
) -> CellSpecificResult:
    """Store each cell's network: the edges of its type's regulons that are active in it.

    Parameters
    ----------
    adata
        Expression (cells x genes; counts or normalized) with cell types in
        ``obs[cell_type_key]``.
    store
        A writable ``GraphStore`` holding the types' consensus networks.
    cell_type_key
        The cell-type column.
    name
        The assignment's name in the store (``gremln prepare --graph-mode assignment:NAME``).
    max_rank
        Extent of the recovery curve (a fraction of the genes, or a number).
    chunk
        Cells scored at once (bounds memory).
    seed
        Seed of the mixture fits.
    overwrite
        Replace an assignment of the same name.

    Returns
    -------
    ``CellSpecificResult``; the store gets the assignment ``name``.
    """
    from netinfer.integrate import TypeNetworks

    require_obs_column(adata, cell_type_key, "<adata>")
    labels = adata.obs[cell_type_key].astype(str).to_numpy()
    listing = store.list()
    listing = listing[listing["kind"] == "consensus"]
    by_type = dict(zip(listing["cell_type"], listing["name"]))
    types = sorted(set(labels))
    missing = [t for t in types if t not in by_type]
    if missing:
        raise InputError(
            f"{store.url}: no consensus network for {len(missing)} cell type(s) of "
            f"{cell_type_key!r}: {', '.join(missing[:5])}; make them with netinfer "
            "celltype-networks. Types it skipped (fewer than --min-cells cells) have none: leave "
            "their cells out"
        )
    vocabulary = np.asarray(store.genes)
    networks = {}
    for cell_type in types:
        coo = store.get(by_type[cell_type]).adjacency.tocoo()
        networks[cell_type] = (coo.row, coo.col, np.ones(coo.nnz))
    union = TypeNetworks.from_edges(networks)
    edge_of = {(int(r), int(c)): e for e, (r, c) in enumerate(zip(union.rows, union.cols))}
    writer = store.assignment_writer(name, overwrite=overwrite)
    graph_of_pattern: dict[bytes, int] = {}
    graph_index = np.zeros(adata.n_obs, dtype=np.int64)
    active_count = np.zeros(adata.n_obs, dtype=np.int64)
    thresholds = {}
    for cell_type in types:
        rows, cols, _ = networks[cell_type]
        regulators = np.unique(rows)
        regulons = {
            str(vocabulary[g]): [str(t) for t in vocabulary[cols[rows == g]]] for g in regulators
        }
        edges_of = [
            np.array([edge_of[(int(g), int(t))] for t in cols[rows == g]]) for g in regulators
        ]
        cells = np.flatnonzero(labels == cell_type)
        scores = (
            np.vstack(
                [
                    regulon_activity(
                        adata[cells[start : start + chunk]].X,
                        adata.var_names,
                        regulons,
                        cells=adata.obs_names[cells[start : start + chunk]],
                        max_rank=max_rank,
                    )
                    for start in range(0, len(cells), chunk)
                ]
            )
            if len(regulons)
            else np.zeros((len(cells), 0))
        )
        cuts = {r: activity_threshold(scores[:, j], seed=seed) for j, r in enumerate(regulons)}
        thresholds[cell_type] = cuts
        active = scores > np.array([cuts[r].value for r in regulons])
        active_count[cells] = active.sum(axis=1)
        for cell, pattern in zip(cells, active):
            key = np.packbits(pattern).tobytes() + cell_type.encode()
            if key not in graph_of_pattern:
                chosen = [edges_of[j] for j in np.flatnonzero(pattern)]
                edges = np.sort(np.concatenate(chosen)) if chosen else np.empty(0, np.int64)
                graph_of_pattern[key] = writer.add_graph(edges)
            graph_index[cell] = graph_of_pattern[key]
    if not len(graph_of_pattern):
        warnings.warn(f"{store.url}: no cells, so no cell-specific networks", UserWarning, 2)
    summary = {
        "cells": int(adata.n_obs),
        "cell_types": types,
        "distinct_graphs": len(graph_of_pattern),
        "mean_active_regulons": float(active_count.mean()) if adata.n_obs else 0.0,
        "bimodal_regulons": int(sum(t.bimodal for c in thresholds.values() for t in c.values())),
        "regulons": int(sum(len(c) for c in thresholds.values())),
        "max_rank": max_rank,
        "kind": "cellspecific",
        # provenance: each cell's graph depends on its own label (evaluations check this)
        "read_labels": {"column": cell_type_key, "of": READ_OWN_LABELS},
    }
    writer.publish(
        cells=adata.obs_names.astype(str).to_numpy(),
        graph_index=graph_index,
        weights=(labels[:, None] == np.asarray(types)[None, :]).astype(np.float32),
        cell_types=types,
        edge_rows=union.rows,
        edge_cols=union.cols,
        params=summary,
    )
    return CellSpecificResult(graph_index, active_count, thresholds, summary)
