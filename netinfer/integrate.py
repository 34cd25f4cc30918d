"""Bayesian integration of cell-type networks into a graph for every unseen cell (GREmLN eq. 1-3).

1. **Edge exclusion posteriors** Pr(e not in G_c | X_train, c). The evidence for an edge of cell
   type c is its recurrence T_e: the number of resampled ARACNe networks, over all of the type's
   clusters (N networks in all), that contain it. Pairs that are not edges appear at a small null
   rate, edges at a higher one. The resamples of a cluster share its cells, so a pair's finds are
   correlated: T follows a two-group *beta-binomial* mixture
   pi0 BB(N, a0, b0) + (1 - pi0) BB(N, a1, b1), fitted by maximum likelihood to the T of all
   regulator-target pairs (most of them 0); a binomial mixture would call that overdispersion
   certainty and push every posterior to 0 or 1. The posterior that e is not an edge given T_e
   is the local false discovery rate lfdr(T) = pi0 f0(T) / (pi0 f0(T) + (1 - pi0) f1(T)),
   non-increasing in T. Edges outside a type's network have exclusion probability 1.
2. **Cell-type posterior** w_c(i) of a query cell: the fraction of its k nearest training cells of
   type c, in a PCA space fitted on the training cells only, over the types that have a
   non-empty network (the kNN searches only their cells: a type without a network cannot veto
   every edge). The query's labels are never read, and a query cell that is also a training
   cell is never its own neighbour.
3. **Integrated graph**: p_i(e) = sum_c w_c(i) Pr(e not in G_c) = 1 - sum_c w_c(i) s_c(e), with
   s_c = 1 - exclusion, nonzero only on G_c; the cell's graph is {e : p_i(e) <= alpha}. Each
   neighbour weighs 1/k, so alpha >= 1/k is required: one neighbour of a type lacking an edge
   cannot remove it. Cells with the same w share the computation and the graph.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import optimize, special, stats

from netinfer.io import InputError
from netinfer.sc.validate import validate_counts

#: ``params["read_labels"]["of"]`` of an integration's assignment: the graphs were made from the
#: labels of the reference cells listed in the assignment's ``label_cells``
READ_REFERENCE_LABELS = "reference cells (label_cells)"


@dataclass(frozen=True)
class RecurrenceMixture:
    """A fitted two-group beta-binomial mixture over recurrence counts 0..n_trials.

    Each group is a beta-binomial BB(N, a, b): a pair's rate of being found is Beta(a, b) and
    its count Bin(N, rate). The resampled networks of one cluster share their cells, so a pair's
    finds are correlated and its count is overdispersed against a binomial; the beta absorbs
    that instead of pushing every posterior to 0 or 1 (with little overdispersion a and b grow
    large and the group is a binomial). Constraints keep the groups apart: the null's rate
    density is not piled up at 1 (b0 >= 1) and the edges' not at 0 (a1 >= 1). ``iterations``
    counts the optimizer's iterations.
    """

    n_trials: int
    pi0: float
    null: tuple[float, float]
    alt: tuple[float, float]
    iterations: int

    @property
    def p0(self) -> float:
        """Mean rate of the null group."""
        return self.null[0] / sum(self.null)

    @property
    def p1(self) -> float:
        """Mean rate of the edge group."""
        return self.alt[0] / sum(self.alt)

    def _log_joint(self) -> tuple[np.ndarray, np.ndarray]:
        t = np.arange(self.n_trials + 1)
        null = np.log(self.pi0) + stats.betabinom.logpmf(t, self.n_trials, *self.null)
        alt = np.log1p(-self.pi0) + stats.betabinom.logpmf(t, self.n_trials, *self.alt)
        return null, alt

    def lfdr(self) -> np.ndarray:
        """Local false discovery rate Pr(not an edge | T = t) for t = 0..n_trials, made
        non-increasing in t (more recurrence never means more doubt)."""
        null, alt = self._log_joint()
        return np.minimum.accumulate(np.exp(null - np.logaddexp(null, alt)))


_BOUNDS = np.array(
    [
        (special.logit(1e-6), special.logit(1 - 1e-9)),  # logit pi0
        np.log((1e-3, 1e7)),  # null a
        np.log((1.0, 1e7)),  # null b >= 1: noise's rate density is not piled up at 1
        np.log((1.0, 1e7)),  # edge a >= 1: an edge's rate density is not piled up at 0
        np.log((1e-3, 1e7)),  # edge b
    ]
)


def fit_recurrence_mixture(counts: np.ndarray, *, n_trials: int, n_pairs: int) -> RecurrenceMixture:
    """Maximum-likelihood fit of pi0 BB(N, a0, b0) + (1 - pi0) BB(N, a1, b1) to recurrence counts.

    The likelihood is over the histogram of counts 0..N (N + 1 values), so one quasi-Newton
    search over the five parameters (logit pi0 and log shapes) is cheap; EM converges slowly
    here, as the two groups' shapes trade off against pi0.

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
    The fitted mixture (see ``RecurrenceMixture`` for its constraints).
    """
    counts = np.asarray(counts, dtype=np.int64)
    if n_trials < 1:
        raise ValueError(f"n_trials must be at least 1, not {n_trials}")
    if counts.size > n_pairs or (counts.size and (counts.min() < 1 or counts.max() > n_trials)):
        raise ValueError("counts must be in 1..n_trials, at most n_pairs of them")
    histogram = np.bincount(counts, minlength=n_trials + 1).astype(np.float64)
    histogram[0] = n_pairs - counts.size
    frequency = histogram / n_pairs
    t = np.arange(n_trials + 1)
    # start: the pairs seen in most networks are edges, the rest noise at half the mean rate
    strong = histogram[t > n_trials / 2].sum()
    pi0 = min(1 - 1e-6, max(0.5, 1 - (strong + 1) / n_pairs))
    p0 = max(1e-6, min(0.3, (frequency @ t / n_trials) * 0.5))
    start = np.array([special.logit(pi0), np.log(0.9), np.log(0.9 * (1 - p0) / p0), 2.0, 0.0])

    def mixture(x, iterations=0):
        return RecurrenceMixture(
            n_trials,
            float(special.expit(x[0])),
            tuple(np.exp(x[1:3]).tolist()),
            tuple(np.exp(x[3:5]).tolist()),
            iterations,
        )

    def negative_log_likelihood(x):
        null, alt = mixture(x)._log_joint()
        return -(frequency @ np.logaddexp(null, alt))

    start = np.clip(start, _BOUNDS[:, 0], _BOUNDS[:, 1])
    found = optimize.minimize(
        negative_log_likelihood,
        start,
        method="L-BFGS-B",
        bounds=_BOUNDS,
        options={"ftol": 1e-13, "gtol": 1e-9, "maxiter": 2000},
    )
    return mixture(found.x, int(found.nit))


def exclusion_probabilities(
    edges: pd.DataFrame, recurrences: list[pd.DataFrame], *, n_trials: int, n_pairs: int
) -> tuple[np.ndarray, RecurrenceMixture]:
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
    mixture = fit_recurrence_mixture(total.to_numpy(), n_trials=n_trials, n_pairs=n_pairs)
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


def integrated_graphs(
    counts: np.ndarray,
    networks: TypeNetworks,
    *,
    k: int,
    alpha: float = 0.05,
    add_graph: Callable[[np.ndarray], int] | None = None,
    block: int = 64,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The graph of each posterior w = counts / k over ``networks.types`` (rows of ``counts``).

    p(e) = sum_c w_c Pr(e not in G_c) = w X + (1 - w M) on the union of edges (1 elsewhere); the
    graph is {e : p(e) <= alpha}. Rows sharing the same support S (types with weight) share their
    candidate edges: e can only pass if the types of S lacking it can weigh at most alpha, which
    for alpha < 1/k leaves the intersection of S's networks. Each support's candidates are built
    once as a small dense block, and all its rows are thresholded with one matrix product. A row
    whose weight is all on type c gets exactly the edges of G_c with exclusion <= alpha.

    Parameters
    ----------
    counts
        Distinct rows of neighbour-type counts (rows x types), summing to ``k``.
    networks
        The cell-type networks.
    k
        Neighbours per cell.
    alpha
        False-edge level.
    add_graph
        Called with each new distinct graph (sorted union-edge indices), returning its index; by
        default graphs are kept in the returned list. Give a store writer's ``add_graph`` to
        stream them to disk instead (memory then stays bounded).
    block
        Rows thresholded per matrix product.

    Returns
    -------
    For each row, the index of its graph; and the distinct graphs (empty when ``add_graph`` is
    given).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), not {alpha}")
    graph_of_row = np.empty(counts.shape[0], dtype=np.int64)
    graphs: list[np.ndarray] = []
    if add_graph is None:

        def add_graph(edges: np.ndarray) -> int:
            graphs.append(edges)
            return len(graphs) - 1

    seen: dict[bytes, int] = {}  # digest of (support, passing mask) -> graph index
    groups: dict[tuple, list[int]] = {}
    for row, support in enumerate(map(tuple, (counts > 0).astype(np.int8))):
        groups.setdefault(support, []).append(row)
    for support_mask, rows in groups.items():
        support = np.flatnonzero(support_mask)
        weights = counts[np.ix_(rows, support)] / k
        member = networks.member[support]
        columns = np.unique(member.indices)
        present = member[:, columns].toarray()
        lightest = weights.min(axis=0)
        candidates = lightest @ (1.0 - present) <= alpha  # else some row could pass it
        columns = columns[candidates]
        present = present[:, candidates]
        excluded = networks.exclusion[support][:, columns].toarray()
        for start in range(0, len(rows), block):
            w = weights[start : start + block]
            passing = (w @ excluded + (1.0 - w @ present)) <= alpha
            for offset, mask in enumerate(passing):
                digest = hashlib.blake2b(bytes(support_mask), digest_size=16)
                digest.update(np.packbits(mask).tobytes())
                key = digest.digest()
                if key not in seen:
                    seen[key] = add_graph(columns[mask])
                graph_of_row[rows[start + offset]] = seen[key]
    return graph_of_row, graphs


def knn_type_posterior(
    train_coords: np.ndarray,
    train_labels: np.ndarray,
    query_coords: np.ndarray,
    *,
    types: list[str],
    k: int = 15,
    itself: np.ndarray | None = None,
) -> np.ndarray:
    """Counts of each type among every query cell's k nearest training cells (cells x types).

    Divide by k for the posterior w; integer counts let identical posteriors be found exactly.
    ``itself[i]`` is the training row of query cell i when it is also a training cell (else
    -1): a cell is never its own neighbour, so it gets its k nearest *other* training cells.
    """
    from sklearn.neighbors import NearestNeighbors

    n_train = len(train_labels)
    itself = np.full(query_coords.shape[0], -1) if itself is None else np.asarray(itself)
    if not 1 <= k <= n_train - int(itself.max(initial=-1) >= 0):
        raise ValueError(f"k must be in [1, {n_train}] (training cells, less itself), not {k}")
    code = {t: i for i, t in enumerate(types)}
    labels = np.array([code[t] for t in train_labels])
    n_neighbors = min(k + 1, n_train)  # one spare, for the cell itself
    _, found = NearestNeighbors(n_neighbors=n_neighbors).fit(train_coords).kneighbors(query_coords)
    # drop the cell itself where found (by row, not distance: duplicates are other cells), else
    # the farthest of the k + 1
    keep = found != itself[:, None]
    keep[keep.sum(axis=1) > k, -1] = False
    neighbours = found[keep].reshape(found.shape[0], k)
    counts = np.zeros((query_coords.shape[0], len(types)), dtype=np.int32)
    np.add.at(counts, (np.repeat(np.arange(neighbours.shape[0]), k), labels[neighbours.ravel()]), 1)
    return counts


@dataclass
class IntegrationResult:
    """Each query cell's posterior and graph index; the graphs themselves are in the store
    (``GraphStore.get_assignment(name)``)."""

    types: list[str]
    weights: np.ndarray
    graph_index: np.ndarray
    summary: dict


def _type_graphs(store, types: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The consensus network of each type in the store, as (row, col, exclusion)."""
    listing = store.list()
    listing = listing[listing["kind"] == "consensus"]
    by_type = dict(zip(listing["cell_type"], listing["name"]))
    edges_of = dict(zip(listing["name"], listing["edges"]))
    unused = sorted(t for t in set(by_type) - set(types) if edges_of[by_type[t]] > 0)
    if unused:  # (an empty network would add nothing anyway)
        warnings.warn(
            f"{store.url}: {len(unused)} cell type network(s) have no training cells and are "
            f"ignored: {', '.join(unused[:5])}",
            UserWarning,
            stacklevel=3,
        )
    missing = [t for t in types if t not in by_type or edges_of[by_type[t]] == 0]
    if len(missing) == len(types):
        raise InputError(
            f"{store.url}: none of the reference's {len(types)} cell types has a non-empty "
            "consensus network; make them with netinfer celltype-networks, or give the cells a "
            "PPI or curated graph instead"
        )
    if missing:
        warnings.warn(
            f"{store.url}: no consensus network, or an empty one, for {len(missing)} training "
            f"cell type(s) ({', '.join(missing[:5])}): their cells are left out of the kNN, so "
            "query cells near them take the graphs of the nearest types that have one",
            UserWarning,
            stacklevel=3,
        )
    networks = {}
    for cell_type in sorted(set(types) - set(missing)):
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
    alpha: float = 0.25,
    n_pcs: int = 50,
    name: str = "integrated",
    min_overlap: float = 0.5,
    seed: int = 0,
    overwrite: bool = False,
    allow_empty: bool = False,
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
        False-edge level: an edge is in a cell's graph when p_i(e) <= alpha. Each neighbour
        weighs 1/k, so m neighbours of types lacking an edge remove it once m/k > alpha: alpha
        must be at least 1/k (one neighbour cannot veto an edge), and below 0.5 an edge needs
        most of the weight. The default 0.25 with k = 15 lets 3 of 15 neighbours lack an edge.
    n_pcs
        PCA components, fitted on the reference only.
    name
        Name of the assignment in the store (the distinct graphs are stored inside it).
    min_overlap
        Stop when fewer than this fraction of the reference genes are in the query.
    seed
        Seed of the PCA and of the held-out split for the accuracy.
    overwrite
        Replace an earlier integration of the same name.
    allow_empty
        Store the integration even when every query cell's graph is empty (by default an
        error, and the store is left unchanged).

    Both data sets are checked first (``netinfer.sc.validate``: ids, finite raw counts, the
    reference's labels; reference cells without a label are left out with a warning).

    Returns
    -------
    ``IntegrationResult``; the store gets the assignment ``name``: the distinct graphs, each
    cell's graph index, the weights, the cell types that have a network and, as
    ``label_cells``, the ids of the labelled reference cells, whose labels were read
    (``GraphStore.get_assignment``; ``params["read_labels"]`` says so).

    Notes
    -----
    The type posterior is over the types that have a non-empty network: the k nearest reference
    cells are sought among the cells of those types only, so a query cell of a type without a
    network gets the graphs of its nearest types that have one. A query cell that is also a
    reference cell (the same obs name and the same expression profile) is never its own
    neighbour; a different cell that only shares a name (default names "0", "1", ... of two
    data sets) is an ordinary neighbour.
    """
    from sklearn.decomposition import PCA

    from netinfer.pipeline import normalize, to_dense

    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), not {alpha}")
    if alpha * k < 1.0 - 1e-9:  # (alpha = 1/k itself passes despite rounding)
        raise ValueError(
            f"alpha {alpha} is below 1/k = 1/{k}: one neighbour of a type lacking an edge would "
            f"remove it from the cell's graph; use alpha >= {1 / k:.3g} (or more neighbours)"
        )
    if n_pcs < 1:
        raise ValueError(f"n_pcs must be at least 1, not {n_pcs}")
    validate_counts(query, "<query>", command="integrate")  # its labels are never read
    _, labelled = validate_counts(
        reference, "<reference>", command="integrate", cell_type_key=cell_type_key
    )
    if not labelled.all():
        reference = reference[labelled]
    if not 1 <= k < reference.n_obs:
        raise InputError(
            f"<reference>: k={k} neighbours need more reference cells than k (it has "
            f"{reference.n_obs} labelled cells); give a smaller --k or more reference cells"
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
    type_graphs = _type_graphs(store, sorted(set(labels)))
    types = sorted(type_graphs)
    ref = to_dense(normalize(reference[:, shared].X))
    n_comps = int(min(n_pcs, ref.shape[0] - 1, ref.shape[1]))

    def fitted_pca(rows):
        return PCA(n_components=min(n_comps, int(rows.sum()) - 1), random_state=seed).fit(ref[rows])

    pca = fitted_pca(np.ones(len(labels), dtype=bool))
    in_knn = np.isin(labels, types)  # cells of the types with a network
    ref_coords = pca.transform(ref[in_knn])
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

    # accuracy of the classifier on training cells that neither its PCA nor its kNN saw
    held_out = np.random.default_rng(seed).random(len(labels)) < 0.2
    accuracy = None
    if (held_out & in_knn).any() and (~held_out & in_knn).sum() > max(k, 2):
        split_pca = fitted_pca(~held_out)
        fit, scored = ~held_out & in_knn, held_out & in_knn
        counts = knn_type_posterior(
            split_pca.transform(ref[fit]),
            labels[fit],
            split_pca.transform(ref[scored]),
            types=types,
            k=k,
        )
        accuracy = float(np.mean(np.asarray(types)[counts.argmax(axis=1)] == labels[scored]))

    # a query cell that is a reference cell must not find itself: the same name (the first
    # reference cell of that name) and the same profile, as default names ("0", "1", ...) of
    # two data sets coincide for different cells
    names = pd.Index(reference.obs_names[in_knn].astype(str))
    row_of = pd.Series(np.arange(len(names)), index=names)[~names.duplicated()]
    itself = row_of.reindex(query.obs_names.astype(str)).fillna(-1).to_numpy(np.int64)
    named = np.flatnonzero(itself >= 0)
    offset = np.linalg.norm(query_coords[named] - ref_coords[itself[named]], axis=1)
    scale = np.sqrt(np.mean(np.sum(ref_coords**2, axis=1))) if len(ref_coords) else 1.0
    itself[named[offset > 1e-6 * max(scale, 1e-12)]] = -1
    counts = knn_type_posterior(
        ref_coords, labels[in_knn], query_coords, types=types, k=k, itself=itself
    )
    distinct, cell_to_distinct = np.unique(counts, axis=0, return_inverse=True)
    cell_to_distinct = cell_to_distinct.ravel()
    networks = TypeNetworks.from_edges(type_graphs)
    writer = store.assignment_writer(name, overwrite=overwrite)
    sizes = []

    def add_graph(edges: np.ndarray) -> int:
        sizes.append(len(edges))
        return writer.add_graph(edges)

    graph_of_weight, _ = integrated_graphs(
        distinct, networks, k=k, alpha=alpha, add_graph=add_graph
    )
    graph_index = graph_of_weight[cell_to_distinct]
    sizes = np.asarray(sizes, dtype=np.int64)
    summary = {
        "query_cells": int(query.n_obs),
        "reference_cells": int(reference.n_obs),
        "shared_genes": int(len(shared)),
        "gene_overlap": round(overlap, 4),
        "cell_types": types,
        "types_without_network": sorted(set(labels) - set(types)),
        "query_cells_in_reference": int((itself >= 0).sum()),
        "knn_heldout_accuracy": accuracy,
        "distinct_weights": int(len(distinct)),
        "distinct_graphs": int(len(sizes)),
        "mean_edges_per_cell": float(sizes[graph_index].mean()) if len(graph_index) else 0.0,
        "k": k,
        "alpha": alpha,
        "n_pcs": n_comps,
        # provenance: the query cells' graphs carry these cells' labels (evaluations check this)
        "read_labels": {"column": cell_type_key, "of": READ_REFERENCE_LABELS},
    }
    if not allow_empty and not sizes[graph_index].any():
        raise InputError(
            f"<query>: every one of its {query.n_obs} cells would get an empty graph: no edge "
            f"of the {len(types)} cell-type networks ({len(networks.rows)} edges in all) has an "
            f"exclusion probability <= alpha={alpha} for them. Check the networks (netinfer "
            "store ls), raise alpha, or pass allow_empty (--allow-empty) to store empty graphs"
        )
    writer.publish(
        cells=query.obs_names.astype(str).to_numpy(),
        graph_index=graph_index,
        weights=counts / k,
        cell_types=types,
        edge_rows=networks.rows,
        edge_cols=networks.cols,
        params=summary,
        label_cells=reference.obs_names.astype(str).to_numpy(),
    )
    return IntegrationResult(types, counts / k, graph_index, summary)
