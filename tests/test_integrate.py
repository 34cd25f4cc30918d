"""Bayesian integration: exclusion posteriors, kNN type posteriors, per-cell graphs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.decomposition import PCA
from test_pipeline import FAST, _typed_counts

from netinfer.integrate import (
    READ_REFERENCE_LABELS,
    TypeNetworks,
    exclusion_probabilities,
    fit_recurrence_mixture,
    integrate,
    integrated_graphs,
    knn_type_posterior,
)
from netinfer.io import InputError
from netinfer.pipeline import celltype_networks, normalize, to_dense
from netinfer.store import GraphStore

pytestmark = pytest.mark.filterwarnings("ignore:skipped .* min_cells:UserWarning")


def _true_lfdr(pi0, null, alt, n_trials):
    """lfdr of a known mixture; ``null``/``alt`` are a rate p (binomial) or (a, b) (beta)."""
    t = np.arange(n_trials + 1)

    def pmf(group):
        if np.ndim(group) == 0:
            return stats.binom.pmf(t, n_trials, group)
        return stats.betabinom.pmf(t, n_trials, *group)

    f0, f1 = pi0 * pmf(null), (1 - pi0) * pmf(alt)
    return f0 / (f0 + f1)


@pytest.mark.parametrize(
    "n_pairs, edge_rate, null, alt, n_trials",
    [
        (200_000, 0.01, 0.02, 0.7, 40),  # independent resamples: binomial counts
        (50_000, 0.05, 0.005, 0.9, 20),
        (100_000, 0.002, 0.01, 0.5, 100),
        (100_000, 0.01, (0.3, 29.7), (2.1, 0.9), 20),  # correlated resamples: overdispersed
        (100_000, 0.03, (0.5, 49.5), (3.0, 1.0), 40),
    ],
)
def test_mixture_recovers_known_counts(n_pairs, edge_rate, null, alt, n_trials):
    rng = np.random.default_rng(0)
    is_edge = rng.random(n_pairs) < edge_rate

    def rates(group, size):
        return np.full(size, group) if np.ndim(group) == 0 else rng.beta(*group, size)

    counts = rng.binomial(n_trials, np.where(is_edge, rates(alt, n_pairs), rates(null, n_pairs)))
    fit = fit_recurrence_mixture(counts[counts > 0], n_trials=n_trials, n_pairs=n_pairs)
    mean = [g if np.ndim(g) == 0 else g[0] / sum(g) for g in (null, alt)]
    assert fit.pi0 == pytest.approx(1 - edge_rate, abs=0.003)
    assert fit.p0 == pytest.approx(mean[0], rel=0.1) and fit.p1 == pytest.approx(mean[1], rel=0.1)
    lfdr = fit.lfdr()
    assert np.all(np.diff(lfdr) <= 1e-12)  # more recurrence, less doubt
    true = _true_lfdr(1 - edge_rate, null, alt, n_trials)
    seen = counts[counts > 0]  # where the posterior is used: close to the truth on average
    assert np.abs(lfdr - true)[seen].mean() < 0.02
    chosen = lfdr[counts] <= 0.05  # the posterior means what it says: few nulls among these
    assert (~is_edge[chosen]).mean() <= 0.05


def test_overdispersed_recurrence_gives_graded_posteriors():
    # one cluster's 20 resamples share its cells: a pair's finds are correlated
    rng = np.random.default_rng(3)
    is_edge = rng.random(50_000) < 0.02
    rate = np.where(is_edge, rng.beta(1.5, 1.0, is_edge.size), rng.beta(0.2, 20, is_edge.size))
    counts = rng.binomial(20, rate)
    lfdr = fit_recurrence_mixture(counts[counts > 0], n_trials=20, n_pairs=counts.size).lfdr()
    graded = (lfdr > 0.05) & (lfdr < 0.95)
    assert graded.sum() >= 3  # not collapsed to 0 or 1 as a binomial mixture would
    true = _true_lfdr(0.98, (0.2, 20), (1.5, 1.0), 20)
    assert np.abs(lfdr - true).max() < 0.1


def test_exclusion_probabilities_look_up_total_recurrence():
    recurrences = [
        pd.DataFrame(
            {"regulator": ["A", "A", "B"], "target": ["X", "Y", "X"], "count": [10, 1, 2]}
        ),
        pd.DataFrame({"regulator": ["A", "B"], "target": ["X", "Z"], "count": [9, 1]}),
    ]
    edges = pd.DataFrame({"regulator": ["A", "B"], "target": ["X", "Z"]})
    exclusion, mixture = exclusion_probabilities(edges, recurrences, n_trials=20, n_pairs=500)
    lfdr = mixture.lfdr()
    assert exclusion.tolist() == [lfdr[19], lfdr[1]]
    assert exclusion[0] < 0.01 < exclusion[1]


def _networks():
    return TypeNetworks.from_edges(
        {
            "a": (np.array([0, 0, 1]), np.array([1, 2, 2]), np.array([0.01, 0.2, 0.0])),
            "b": (np.array([0, 3]), np.array([1, 1]), np.array([0.03, 0.001])),
            "c": (np.empty(0, int), np.empty(0, int), np.empty(0)),
        }
    )


@pytest.mark.parametrize("k, alpha", [(15, 0.05), (4, 0.3), (20, 0.5)])
def test_integrated_graphs_match_the_formula(k, alpha):
    networks = _networks()
    union = list(zip(networks.rows, networks.cols))
    exclusion = {  # dense reference: absent edges have exclusion 1
        "a": {(0, 1): 0.01, (0, 2): 0.2, (1, 2): 0.0},
        "b": {(0, 1): 0.03, (3, 1): 0.001},
        "c": {},
    }
    rng = np.random.default_rng(0)
    counts = np.vstack([np.eye(3, dtype=int) * k, rng.multinomial(k, [0.5, 0.4, 0.1], size=60)])
    counts = np.unique(counts, axis=0)
    graph_of_row, graphs = integrated_graphs(counts, networks, k=k, alpha=alpha)
    for row, graph in zip(counts, graph_of_row):
        w = row / k
        expected = {
            e
            for e in union
            if sum(wc * exclusion[t].get(e, 1.0) for wc, t in zip(w, "abc")) <= alpha
        }
        assert {union[i] for i in graphs[graph]} == expected
    with pytest.raises(ValueError, match="alpha"):
        integrated_graphs(counts, networks, k=k, alpha=1.0)


def test_pure_posterior_gets_exactly_the_type_edges_under_alpha():
    networks = _networks()
    union = list(zip(networks.rows, networks.cols))
    graph_of_row, graphs = integrated_graphs(np.array([[15, 0, 0]]), networks, k=15, alpha=0.05)
    assert [union[i] for i in graphs[graph_of_row[0]]] == [(0, 1), (1, 2)]  # 0.01, 0.0; not 0.2


def test_knn_posterior_counts_the_nearest_training_types():
    rng = np.random.default_rng(1)
    train = rng.normal(size=(60, 3))
    labels = np.array(["x", "y", "z"])[rng.integers(0, 3, 60)]
    query = rng.normal(size=(10, 3))
    counts = knn_type_posterior(train, labels, query, types=["x", "y", "z"], k=7)
    for row, q in zip(counts, query):
        nearest = np.argsort(np.linalg.norm(train - q, axis=1))[:7]
        assert row.tolist() == [int((labels[nearest] == t).sum()) for t in "xyz"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    adata, regulators, _ = _typed_counts(shift=6.0)  # types a kNN can tell apart
    is_query = np.random.default_rng(0).random(adata.n_obs) < 0.25
    reference, query = adata[~is_query].copy(), adata[is_query].copy()
    path = tmp_path_factory.mktemp("integrate") / "graphs.zarr"
    with GraphStore.create(path) as store:
        celltype_networks(reference, regulators, store=store, cell_type_key="cell_type", **FAST)
    return path, reference, query


def test_integrate_end_to_end_never_reads_query_labels(trained, tmp_path):
    path, reference, query = trained
    with GraphStore.open(path, mode="a") as store:
        first = integrate(query, reference, store, cell_type_key="cell_type", name="q1")
        shuffled = query.copy()
        shuffled.obs["cell_type"] = np.random.default_rng(5).permutation(
            shuffled.obs["cell_type"].to_numpy()
        )
        del query.obs["cell_type"]  # and with no labels at all
        second = integrate(shuffled, reference, store, cell_type_key="cell_type", name="q2")
        third = integrate(query, reference, store, cell_type_key="cell_type", name="q3")
        stored = store.get_assignment("q1")
        genes = store.genes
        type_graphs = {
            store.info(n)["cell_type"]: store.get(n).to_dataframe() for n in store.list()["name"]
        }
    for other in (second, third):
        np.testing.assert_array_equal(other.graph_index, first.graph_index)
        np.testing.assert_array_equal(other.weights, first.weights)
    summary = first.summary
    assert summary["knn_heldout_accuracy"] > 0.9 and summary["distinct_graphs"] >= 2
    assert list(stored.cells) == list(query.obs_names)
    np.testing.assert_array_equal(stored.graph_index, first.graph_index)
    pure = 0
    assert summary["alpha"] * summary["k"] >= 1  # the default: one neighbour cannot veto
    # a cell whose neighbours are all of type c gets exactly G_c's edges with exclusion <= alpha
    for i, w in enumerate(first.weights):
        if w.max() < 1.0:
            continue
        pure += 1
        expected = type_graphs[first.types[int(w.argmax())]]
        expected = expected[expected["exclusion"] <= first.summary["alpha"]]
        rows, cols = stored.cell_graph(i)
        assert set(zip(genes[rows], genes[cols])) == set(
            zip(expected["source"], expected["target"])
        )
    assert pure >= 10  # the property was checked on enough cells


def test_integrate_records_whose_labels_it_read(trained):
    path, reference, query = trained
    partly = reference.copy()
    labels = partly.obs["cell_type"].astype(object).to_numpy()
    labels[:7] = None  # unlabelled reference cells are left out: their labels are not read
    partly.obs["cell_type"] = labels
    with GraphStore.open(path, mode="a") as store:
        with pytest.warns(UserWarning, match="7 of .* have no label"):
            result = integrate(query, partly, store, cell_type_key="cell_type", name="read")
    with GraphStore.open(path) as store:  # read back from disk
        stored = store.get_assignment("read")
    assert [str(c) for c in stored.label_cells] == list(reference.obs_names[7:])
    assert not set(stored.label_cells) & set(query.obs_names)
    read = {"column": "cell_type", "of": READ_REFERENCE_LABELS}
    assert stored.meta["params"]["read_labels"] == read == result.summary["read_labels"]


def test_reference_cells_are_never_their_own_neighbours(trained):
    path, reference, _ = trained
    query = reference[::5].copy()  # training cells, as gremln's per-split integration gives
    query.obs = query.obs[[]]
    k = 5
    with GraphStore.open(path, mode="a") as store:
        result = integrate(query, reference, store, cell_type_key="cell_type", k=k, name="self")
    assert result.summary["query_cells_in_reference"] == query.n_obs
    # brute force in the same PCA space (fitted on all reference cells, as integrate does)
    ref = to_dense(normalize(reference.X))
    n_comps = min(50, ref.shape[0] - 1, ref.shape[1])
    coords = PCA(n_components=n_comps, random_state=0).fit(ref).transform(ref)
    labels = reference.obs["cell_type"].astype(str).to_numpy()
    for row, weights in zip(range(0, reference.n_obs, 5), result.weights):
        distance = np.linalg.norm(coords - coords[row], axis=1)
        distance[row] = np.inf  # never itself
        nearest = np.argsort(distance)[:k]
        expected = [np.mean(labels[nearest] == t) for t in result.types]
        np.testing.assert_allclose(weights, expected)
    # other cells that only share names with reference cells are not taken for them
    renamed = query.copy()
    renamed.obs_names = np.roll(query.obs_names.to_numpy(), 1)
    with GraphStore.open(path, mode="a") as store:
        result = integrate(renamed, reference, store, cell_type_key="cell_type", k=k, name="n")
    assert result.summary["query_cells_in_reference"] == 0
    for row, weights in zip(range(0, reference.n_obs, 5), result.weights):
        nearest = np.argsort(np.linalg.norm(coords - coords[row], axis=1))[:k]  # itself first
        assert nearest[0] == row
        np.testing.assert_allclose(weights, [np.mean(labels[nearest] == t) for t in result.types])


def test_knn_posterior_skips_the_cell_itself_not_its_duplicates():
    train = np.array([[0.0], [0.0], [1.0], [5.0], [6.0]])
    labels = np.array(["x", "y", "x", "y", "y"])
    counts = knn_type_posterior(
        train, labels, train[[0, 3]], types=["x", "y"], k=2, itself=np.array([0, -1])
    )
    # cell 0 finds its duplicate (row 1, y) and row 2 (x), not itself; the new cell at 5 finds
    # rows 3 and 4
    assert counts.tolist() == [[1, 1], [0, 2]]
    with pytest.raises(ValueError, match="less itself"):
        knn_type_posterior(train, labels, train[:1], types=["x", "y"], k=5, itself=np.array([0]))


def test_integrate_bad_input(trained):
    path, reference, query = trained
    with GraphStore.open(path, mode="a") as store:
        with pytest.raises(ValueError, match="alpha"):
            integrate(query, reference, store, cell_type_key="cell_type", alpha=0.0)
        with pytest.raises(ValueError, match="one neighbour"):
            integrate(query, reference, store, cell_type_key="cell_type", k=15, alpha=0.05)
        few_genes = query[:, :20].copy()
        with pytest.raises(InputError, match="only 20 of the reference's 200 genes"):
            integrate(few_genes, reference, store, cell_type_key="cell_type")
        with pytest.raises(InputError, match="no obs column 'type'"):
            integrate(query, reference, store, cell_type_key="type")
        relabelled = reference.copy()
        relabelled.obs["cell_type"] = (
            relabelled.obs["cell_type"].astype(str).replace({"type B": "type C"})
        )
        with pytest.warns(UserWarning) as caught:
            result = integrate(query, relabelled, store, cell_type_key="cell_type", name="qx")
        messages = " ".join(str(w.message) for w in caught)
        assert "no training cells" in messages and "type B" in messages
        assert "no consensus network" in messages and "type C" in messages
        # type C has no network: it is out of the posterior and vetoes nothing
        assert result.types == ["type A"] and result.summary["types_without_network"] == ["type C"]
        assert np.all(result.weights == 1.0) and result.summary["distinct_graphs"] == 1
        assert result.summary["mean_edges_per_cell"] > 0
        nothing = relabelled.copy()
        nothing.obs["cell_type"] = "type D"
        no_network = pytest.raises(InputError, match="none of the reference's 1 cell types")
        with pytest.warns(UserWarning, match="no training cells"), no_network:
            integrate(query, nothing, store, cell_type_key="cell_type", name="qy")
