"""Bayesian integration: exclusion posteriors, kNN type posteriors, per-cell graphs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_pipeline import FAST, _typed_counts

from netinfer.integrate import (
    BinomialMixture,
    TypeNetworks,
    exclusion_probabilities,
    fit_binomial_mixture,
    integrate,
    integrated_graphs,
    knn_type_posterior,
)
from netinfer.io import InputError
from netinfer.pipeline import celltype_networks
from netinfer.store import GraphStore

pytestmark = pytest.mark.filterwarnings("ignore:skipped .* min_cells:UserWarning")


@pytest.mark.parametrize(
    "n_pairs, edge_rate, p0, p1, n_trials",
    [
        (200_000, 0.01, 0.02, 0.7, 40),
        (50_000, 0.05, 0.005, 0.9, 20),
        (100_000, 0.002, 0.01, 0.5, 100),
    ],
)
def test_mixture_recovers_known_counts(n_pairs, edge_rate, p0, p1, n_trials):
    rng = np.random.default_rng(0)
    is_edge = rng.random(n_pairs) < edge_rate
    counts = np.where(
        is_edge, rng.binomial(n_trials, p1, n_pairs), rng.binomial(n_trials, p0, n_pairs)
    )
    fit = fit_binomial_mixture(counts[counts > 0], n_trials=n_trials, n_pairs=n_pairs)
    assert fit.pi0 == pytest.approx(1 - edge_rate, abs=0.002)
    assert fit.p0 == pytest.approx(p0, rel=0.05) and fit.p1 == pytest.approx(p1, rel=0.05)
    lfdr = fit.lfdr()
    assert np.all(np.diff(lfdr) <= 1e-12)  # more recurrence, less doubt
    true = BinomialMixture(n_trials, 1 - edge_rate, p0, p1, 0).lfdr()
    assert np.abs(lfdr - true).max() < 0.1
    chosen = lfdr[counts] <= 0.05  # the posterior means what it says: few nulls among these
    assert (~is_edge[chosen]).mean() <= 0.05 and chosen[is_edge].mean() > 0.9


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
    # a cell whose neighbours are all of type c gets exactly G_c's edges with exclusion <= alpha
    for i, w in enumerate(first.weights):
        if w.max() < 1.0:
            continue
        pure += 1
        expected = type_graphs[first.types[int(w.argmax())]]
        expected = expected[expected["exclusion"] <= 0.05]
        rows, cols = stored.cell_graph(i)
        assert set(zip(genes[rows], genes[cols])) == set(
            zip(expected["source"], expected["target"])
        )
    assert pure >= 10  # the property was checked on enough cells


def test_integrate_bad_input(trained):
    path, reference, query = trained
    with GraphStore.open(path, mode="a") as store:
        with pytest.raises(ValueError, match="alpha"):
            integrate(query, reference, store, cell_type_key="cell_type", alpha=0.0)
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
            integrate(query, relabelled, store, cell_type_key="cell_type", name="qx")
        messages = " ".join(str(w.message) for w in caught)
        assert "no training cells" in messages and "type B" in messages
        assert "no consensus network" in messages and "type C" in messages
