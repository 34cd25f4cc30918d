"""Bayesian integration of cell-type networks into a graph for every unseen cell (GREmLN eq. 1-3).

1. **Edge exclusion posteriors** Pr(e not in G_c | X_train, c). The evidence for an edge of cell
   type c is its recurrence T_e: the number of resampled ARACNe networks, over all of the type's
   clusters (N networks in all), that contain it. Pairs that are not edges appear at a small null
   rate p0, edges at a higher rate p1, so T follows a two-group binomial mixture
   pi0 Bin(N, p0) + (1 - pi0) Bin(N, p1), fitted by EM to the T of all regulator-target pairs
   (most of them 0). The posterior that e is not an edge given T_e is the local false discovery
   rate lfdr(T) = pi0 f0(T) / (pi0 f0(T) + (1 - pi0) f1(T)), decreasing in T. Edges outside a
   type's network have exclusion probability 1.
2. **Cell-type posterior** w_c(i) of a query cell: the fraction of its k nearest training cells of
   type c, in a PCA space fitted on the training cells only. The query's labels are never read.
3. **Integrated graph**: p_i(e) = sum_c w_c(i) Pr(e not in G_c) = 1 - sum_c w_c(i) s_c(e), with
   s_c = 1 - exclusion, nonzero only on G_c; the cell's graph is {e : p_i(e) <= alpha}. Cells
   with the same w share the computation and the graph.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from netinfer.io import InputError


@dataclass(frozen=True)
class BinomialMixture:
    """A fitted two-group binomial mixture over recurrence counts 0..n_trials."""

    n_trials: int
    pi0: float
    p0: float
    p1: float
    iterations: int

    def lfdr(self) -> np.ndarray:
        """Local false discovery rate Pr(not an edge | T = t) for t = 0..n_trials."""
        t = np.arange(self.n_trials + 1)
        null = np.log(self.pi0) + stats.binom.logpmf(t, self.n_trials, self.p0)
        alt = np.log1p(-self.pi0) + stats.binom.logpmf(t, self.n_trials, self.p1)
        return np.exp(null - np.logaddexp(null, alt))


def fit_binomial_mixture(
    counts: np.ndarray, *, n_trials: int, n_pairs: int, tol: float = 1e-10, max_iter: int = 5000
) -> BinomialMixture:
    """EM fit of pi0 Bin(N, p0) + (1 - pi0) Bin(N, p1), p0 < p1, to recurrence counts.

    Parameters
    ----------
    counts
        Recurrence T of the pairs seen at least once (values in 1..n_trials).
    n_trials
        N, the number of resampled networks the counts are out of.
    n_pairs
        All pairs that could have been seen: the ``n_pairs - len(counts)`` unseen have T = 0.

    Returns
    -------
    The fitted mixture.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if n_trials < 1:
        raise ValueError(f"n_trials must be at least 1, not {n_trials}")
    if counts.size > n_pairs or (counts.size and (counts.min() < 1 or counts.max() > n_trials)):
        raise ValueError("counts must be in 1..n_trials, at most n_pairs of them")
    histogram = np.bincount(counts, minlength=n_trials + 1).astype(np.float64)
    histogram[0] = n_pairs - counts.size
    t = np.arange(n_trials + 1)
    # start: the pairs seen in most networks are edges; the rest are noise
    strong = histogram[t > n_trials / 2].sum()
    pi0 = min(1 - 1e-6, max(0.5, 1 - (strong + 1) / n_pairs))
    p1 = 0.8
    p0 = max(1e-9, min(0.5, (histogram @ t / n_trials / n_pairs) * 0.5))
    iteration = 0
    while iteration < max_iter:
        iteration += 1
        null = np.log(pi0) + stats.binom.logpmf(t, n_trials, p0)
        alt = np.log1p(-pi0) + stats.binom.logpmf(t, n_trials, p1)
        responsibility = np.exp(alt - np.logaddexp(null, alt))  # Pr(edge | t)
        weight_alt = histogram @ responsibility
        weight_null = histogram.sum() - weight_alt
        new_pi0 = min(1 - 1e-12, max(1e-12, weight_null / histogram.sum()))
        new_p0 = (histogram * (1 - responsibility)) @ t / max(weight_null * n_trials, 1e-300)
        new_p1 = (histogram * responsibility) @ t / max(weight_alt * n_trials, 1e-300)
        new_p0, new_p1 = np.clip([new_p0, new_p1], 1e-12, 1 - 1e-12)
        if new_p0 > new_p1:  # keep the null component the rarer one
            new_p0, new_p1, new_pi0 = new_p1, new_p0, 1 - new_pi0
        change = max(abs(new_pi0 - pi0), abs(new_p0 - p0), abs(new_p1 - p1))
        pi0, p0, p1 = float(new_pi0), float(new_p0), float(new_p1)
        if change < tol:
            break
    return BinomialMixture(n_trials, pi0, p0, p1, iteration)


def exclusion_probabilities(
    edges: pd.DataFrame, recurrences: list[pd.DataFrame], *, n_trials: int, n_pairs: int
) -> tuple[np.ndarray, BinomialMixture]:
    """Pr(e not in G_c) for the edges of a cell type's network, from their recurrence.

    Parameters
    ----------
    edges
        The type's network (``regulator``, ``target``).
    recurrences
        Per cluster, every pair seen in at least one of its resampled networks with its
        ``count`` (``AracneResult.recurrence``).
    n_trials
        Resampled networks in all (clusters x resamples).
    n_pairs
        Regulator-target pairs tested in each network.

    Returns
    -------
    The exclusion probability of each edge (its lfdr) and the fitted mixture.
    """
    total = pd.concat(recurrences).groupby(["regulator", "target"])["count"].sum()
    mixture = fit_binomial_mixture(total.to_numpy(), n_trials=n_trials, n_pairs=n_pairs)
    keys = pd.MultiIndex.from_frame(edges[["regulator", "target"]])
    recurrence = total.reindex(keys).fillna(0).to_numpy(np.int64)
    return mixture.lfdr()[recurrence], mixture


@dataclass
class TypeNetworks:
    """Cell-type networks over the union of their edges, as sparse types x edges matrices.

    ``exclusion[c, e]`` is Pr(e not in G_c) for the edges of G_c (absent edges: implicit 1);
    ``member[c, e]`` is 1 where e is in G_c.
    """

    types: list[str]
    rows: np.ndarray
    cols: np.ndarray
    exclusion: sp.csr_matrix
    member: sp.csr_matrix

    @classmethod
    def from_edges(cls, networks: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]):
        """Build from ``{type: (row, col, exclusion)}`` in vocabulary indices."""
        types = sorted(networks)
        pairs = (
            np.concatenate([np.stack([networks[t][0], networks[t][1]], axis=1) for t in types])
            if types
            else np.empty((0, 2), dtype=np.int64)
        )
        union, position = np.unique(pairs, axis=0, return_inverse=True)
        type_of = np.repeat(np.arange(len(types)), [len(networks[t][0]) for t in types])
        values = np.concatenate([networks[t][2] for t in types]) if types else np.empty(0)
        shape = (len(types), len(union))
        exclusion = sp.csr_matrix((values, (type_of, position.ravel())), shape=shape)
        member = sp.csr_matrix((np.ones(values.size), (type_of, position.ravel())), shape=shape)
        return cls(types, union[:, 0], union[:, 1], exclusion, member)


def integrated_edges(
    weights: np.ndarray, networks: TypeNetworks, *, alpha: float = 0.05, batch: int = 256
) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each row of ``weights`` (posteriors over ``networks.types``), its graph's edges.

    p(e) = sum_c w_c Pr(e not in G_c) = W X + (1 - W M) on the union of edges (1 elsewhere), so a
    cell whose weight is all on type c gets exactly the edges of G_c with exclusion <= alpha.

    Returns
    -------
    Per row: the union-edge positions in the graph and their p.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), not {alpha}")
    graphs = []
    for start in range(0, weights.shape[0], batch):
        w = sp.csr_matrix(weights[start : start + batch])
        excluded = (w @ networks.exclusion).tocsr()
        covered = (w @ networks.member).tocsr()  # same sparsity pattern as ``excluded``
        excluded.sort_indices()
        covered.sort_indices()
        for row in range(w.shape[0]):
            lo, hi = covered.indptr[row], covered.indptr[row + 1]
            edges = covered.indices[lo:hi]
            p = np.zeros(edges.size)
            # an edge may have exclusion 0 (stored as an explicit zero or dropped): align on index
            e_lo, e_hi = excluded.indptr[row], excluded.indptr[row + 1]
            p[np.searchsorted(edges, excluded.indices[e_lo:e_hi])] = excluded.data[e_lo:e_hi]
            p += 1.0 - covered.data[lo:hi]
            keep = p <= alpha
            graphs.append((edges[keep], p[keep]))
    return graphs


def knn_type_posterior(
    train_coords: np.ndarray,
    train_labels: np.ndarray,
    query_coords: np.ndarray,
    *,
    types: list[str],
    k: int = 15,
) -> np.ndarray:
    """Counts of each type among every query cell's k nearest training cells (cells x types).

    Divide by k for the posterior w; integer counts let identical posteriors be found exactly.
    """
    from sklearn.neighbors import NearestNeighbors

    if not 1 <= k <= len(train_labels):
        raise ValueError(f"k must be in [1, {len(train_labels)}] (training cells), not {k}")
    code = {t: i for i, t in enumerate(types)}
    labels = np.array([code[t] for t in train_labels])
    _, neighbours = NearestNeighbors(n_neighbors=k).fit(train_coords).kneighbors(query_coords)
    counts = np.zeros((query_coords.shape[0], len(types)), dtype=np.int32)
    np.add.at(counts, (np.repeat(np.arange(neighbours.shape[0]), k), labels[neighbours.ravel()]), 1)
    return counts


@dataclass
class IntegrationResult:
    """Per-cell graphs of a query: ``graph_index[i]`` is cell i's position in ``graphs``."""

    types: list[str]
    weights: np.ndarray
    graph_index: np.ndarray
    graphs: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
    graph_names: list[str]
    summary: dict


def _type_graphs(store, types: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The consensus network of each type in the store, as (row, col, exclusion)."""
    listing = store.list()
    listing = listing[listing["kind"] == "consensus"]
    by_type = dict(zip(listing["cell_type"], listing["name"]))
    unused = sorted(set(by_type) - set(types))
    if unused:
        warnings.warn(
            f"{store.url}: {len(unused)} cell type network(s) have no training cells and are "
            f"ignored: {', '.join(unused[:5])}",
            UserWarning,
            stacklevel=3,
        )
    missing = [t for t in types if t not in by_type]
    if missing:
        warnings.warn(
            f"{store.url}: no consensus network for {len(missing)} training cell type(s) "
            f"({', '.join(missing[:5])}); cells near them get no edges from them",
            UserWarning,
            stacklevel=3,
        )
    networks = {}
    for cell_type in types:
        if cell_type not in by_type:
            networks[cell_type] = (np.empty(0, int), np.empty(0, int), np.empty(0))
            continue
        graph = store.get(by_type[cell_type])
        if "exclusion" not in graph.edge_attrs:
            raise InputError(
                f"{store.url}: graph {by_type[cell_type]!r} has no 'exclusion' edge attribute; "
                "make the cell-type networks with this netinfer (celltype-networks)"
            )
        coo = graph.adjacency.tocoo()  # stored order is CSR order, as the attributes are
        networks[cell_type] = (coo.row, coo.col, graph.edge_attrs["exclusion"])
    return networks


def integrate(
    query,
    reference,
    store,
    *,
    cell_type_key: str,
    k: int = 15,
    alpha: float = 0.05,
    n_pcs: int = 50,
    name: str = "integrated",
    min_overlap: float = 0.5,
    seed: int = 0,
    overwrite: bool = False,
) -> IntegrationResult:
    """Give every query cell a regulatory graph without reading its label (see module docstring).

    Parameters
    ----------
    query
        Counts of the cells to give graphs to (cells x genes). Their labels are never read.
    reference
        Counts of the training cells, with their types in ``obs[cell_type_key]``.
    store
        A writable ``GraphStore`` holding the types' consensus networks (with ``exclusion``).
    cell_type_key
        The reference's cell-type column.
    k
        Neighbours of the kNN classifier.
    alpha
        False-edge level: an edge is in a cell's graph when p_i(e) <= alpha.
    n_pcs
        PCA components, fitted on the reference only.
    name
        Name of the assignment in the store; the distinct graphs are ``<name>.<j>``.
    min_overlap
        Stop when fewer than this fraction of the reference genes are in the query.
    seed
        Seed of the PCA and of the held-out split for the accuracy.
    overwrite
        Replace an earlier integration of the same name.

    Returns
    -------
    ``IntegrationResult``; the store gets the distinct graphs (kind ``integrated``) and the
    assignment ``name`` (cells, graph index, weights, cell types).
    """
    from sklearn.decomposition import PCA

    from netinfer.pipeline import normalize, to_dense

    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), not {alpha}")
    if cell_type_key not in reference.obs:
        raise InputError(
            f"<reference>: no obs column {cell_type_key!r}; columns are: "
            f"{', '.join(map(str, reference.obs.columns)) or 'none'}"
        )
    shared = reference.var_names.intersection(query.var_names)
    overlap = len(shared) / reference.n_vars
    if overlap < min_overlap:
        raise InputError(
            f"<query>: only {len(shared)} of the reference's {reference.n_vars} genes "
            f"({overlap:.0%}) are in the query ({query.n_vars} genes); below min_overlap "
            f"{min_overlap:.0%}. Are both in the same gene ids?"
        )
    labels = reference.obs[cell_type_key].astype(str).to_numpy()
    types = sorted(set(labels))
    ref = to_dense(normalize(reference[:, shared].X))
    n_comps = int(min(n_pcs, ref.shape[0] - 1, ref.shape[1]))
    pca = PCA(n_components=n_comps, random_state=seed).fit(ref)
    ref_coords = pca.transform(ref)
    query_coords = (
        np.vstack(
            [
                pca.transform(to_dense(normalize(query[start : start + 10_000, shared].X)))
                for start in range(0, query.n_obs, 10_000)
            ]
        )
        if query.n_obs
        else np.empty((0, n_comps))
    )

    # accuracy of the classifier on training cells it did not see
    held_out = np.random.default_rng(seed).random(len(labels)) < 0.2
    accuracy = None
    if held_out.any() and (~held_out).sum() >= k:
        counts = knn_type_posterior(
            ref_coords[~held_out], labels[~held_out], ref_coords[held_out], types=types, k=k
        )
        accuracy = float(np.mean(np.asarray(types)[counts.argmax(axis=1)] == labels[held_out]))

    counts = knn_type_posterior(ref_coords, labels, query_coords, types=types, k=k)
    distinct, cell_to_distinct = np.unique(counts, axis=0, return_inverse=True)
    cell_to_distinct = cell_to_distinct.ravel()
    networks = TypeNetworks.from_edges(_type_graphs(store, types))
    per_weight = integrated_edges(distinct / k, networks, alpha=alpha)

    graphs, graph_of_weight, seen = [], np.empty(len(per_weight), dtype=np.int64), {}
    for j, (edges, p) in enumerate(per_weight):
        key = edges.tobytes() + p.tobytes()  # same edges from other weights carry other p
        if key not in seen:
            seen[key] = len(graphs)
            graphs.append((networks.rows[edges], networks.cols[edges], p))
        graph_of_weight[j] = seen[key]
    graph_index = graph_of_weight[cell_to_distinct]

    genes = store.genes
    graph_names = [f"{name}.{j}" for j in range(len(graphs))]
    for graph_name, (rows, cols, p) in zip(graph_names, graphs):
        edges = pd.DataFrame({"regulator": genes[rows], "target": genes[cols], "exclusion": p})
        store.add_graph(
            graph_name,
            edges,
            kind="integrated",
            weight="exclusion",
            params={"assignment": name, "alpha": alpha},
            overwrite=overwrite,
        )
    summary = {
        "query_cells": int(query.n_obs),
        "reference_cells": int(reference.n_obs),
        "shared_genes": int(len(shared)),
        "gene_overlap": round(overlap, 4),
        "cell_types": types,
        "knn_heldout_accuracy": accuracy,
        "distinct_weights": int(len(distinct)),
        "distinct_graphs": int(len(graphs)),
        "mean_edges_per_cell": float(np.mean([len(graphs[g][0]) for g in graph_index]))
        if len(graph_index)
        else 0.0,
        "k": k,
        "alpha": alpha,
        "n_pcs": n_comps,
    }
    store.add_assignment(
        name,
        cells=query.obs_names.astype(str).to_numpy(),
        graphs=graph_names,
        graph_index=graph_index,
        weights=counts / k,
        cell_types=types,
        params=summary,
        overwrite=overwrite,
    )
    return IntegrationResult(types, counts / k, graph_index, graphs, graph_names, summary)
