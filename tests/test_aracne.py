"""ARACNe end to end: recovery of a planted network, determinism, Dask, AnnData."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import planted_network

from netinfer import InputError, aracne, aracne_adata
from netinfer.aracne import COMPAT_PRESETS, _spearman, average_ranks, benjamini_hochberg_edges
from netinfer.distributed import prepare_client

FAST = dict(resamples=8, null_pairs=100_000, seed=3)


def _edge_set(edges):
    return set(zip(edges["regulator"], edges["target"]))


def _directed_hits(found, truth):
    """Predicted edges that are true in either direction (regulator pairs are symmetric)."""
    return {e for e in found if e in truth or e[::-1] in truth}


def test_recovers_planted_network(planted):
    X, genes, regulators, truth = planted
    result = aracne(X, genes, regulators, **FAST)
    found = _edge_set(result.edges)
    hits = _directed_hits(found, truth)
    assert len(hits) / len(found) >= 0.95  # precision
    assert len(hits) >= 0.9 * len(truth)  # recall
    edges = result.edges
    assert list(edges.columns) == ["regulator", "target", "mi", "pvalue", "count", "scc", "log_p"]
    assert (np.diff(edges["mi"].to_numpy()) <= 0).all()
    assert (edges["pvalue"] < 0.05).all() and (edges["count"] <= 8).all()
    np.testing.assert_allclose(edges["log_p"], np.log(edges["pvalue"]))
    assert result.summary["final_edges"] == len(edges)
    assert len(result.summary["edges_per_resample"]) == 8
    # the null is simulated on samples of the size each resample has
    assert result.summary["resample_size"] == result.summary["null_resample_size"] == 127


def test_same_seed_same_network_any_threads(planted):
    X, genes, regulators, _ = planted
    X = np.round(X, 1)  # ties: the seed decides their order, so it shows in every MI
    one = aracne(X, genes, regulators, threads=1, **FAST)
    two = aracne(X, genes, regulators, threads=2, **FAST)
    pd.testing.assert_frame_equal(one.edges, two.edges)
    assert one.summary["edges_per_resample"] == two.summary["edges_per_resample"]
    other_seed = aracne(X, genes, regulators, threads=2, **{**FAST, "seed": 4})
    assert not np.array_equal(other_seed.edges["mi"], one.edges["mi"])


@pytest.mark.parametrize("estimator", ["apmi", "gcmi"])
def test_dask_local_cluster_gives_the_same_network(planted, estimator):
    X, genes, regulators, _ = planted
    local = aracne(X, genes, regulators, estimator=estimator, **FAST).edges
    client, close = prepare_client(workers=2, threads=1)
    try:
        assert len(client.scheduler_info()["workers"]) == 2
        on_dask = aracne(X, genes, regulators, estimator=estimator, client=client, **FAST).edges
    finally:
        close()
    pd.testing.assert_frame_equal(local, on_dask, check_exact=True)


@pytest.mark.parametrize(
    "options",
    [
        dict(resampling="bootstrap"),
        dict(pvalue=1e-8),
        dict(fdr=0.05, pruning="maxent", consolidation="binomial", leaf_rule="aracne3"),
        dict(resamples=0),
        COMPAT_PRESETS["aracne3"],
        COMPAT_PRESETS["aracne-ap"],
    ],
)
def test_variants_run_and_stay_precise(planted, options):
    X, genes, regulators, truth = planted
    result = aracne(X, genes, regulators, **{**FAST, **options})
    found = _edge_set(result.edges)
    assert found and len(_directed_hits(found, truth)) / len(found) >= 0.9


def test_pruning_removes_indirect_edges(planted):
    X, genes, regulators, truth = planted
    pruned = _edge_set(aracne(X, genes, regulators, **FAST).edges)
    unpruned = _edge_set(aracne(X, genes, regulators, **{**FAST, "pruning": "none"}).edges)
    assert pruned < unpruned
    removed = unpruned - pruned
    assert len(_directed_hits(removed, truth)) < len(removed) / 2


def test_full_output_ranks_every_pair(planted):
    X, genes, regulators, _ = planted
    normal = aracne(X, genes, regulators, **FAST).edges
    full = aracne(X, genes, regulators, full_output=True, **FAST).edges
    assert len(full) == len(regulators) * (len(genes) - 1)
    significant = full[full["significant"]].drop(columns="significant").reset_index(drop=True)
    pd.testing.assert_frame_equal(significant, normal)
    assert (full.loc[full["count"] == 0, "pvalue"] == 1.0).all()


def test_input_problems_are_named(planted):
    X, genes, regulators, _ = planted
    with pytest.warns(UserWarning, match="1 of 9 regulators are absent"):
        aracne(X, genes, [*regulators, "NOPE"], **FAST)
    with pytest.raises(InputError, match="none of the 2 regulators"):
        aracne(X, genes, ["A", "B"], **FAST)
    constant = X.copy()
    constant[:, 30] = 1.0
    with pytest.warns(UserWarning, match="constant"):
        result = aracne(constant, genes, regulators, **FAST)
    assert result.summary["constant_genes_ignored"] == 1
    assert "G030" not in set(result.edges["target"])
    with pytest.raises(ValueError, match="either pvalue or fdr"):
        aracne(X, genes, regulators, pvalue=1e-8, fdr=0.05)
    with pytest.raises(ValueError, match="resampling"):
        aracne(X, genes, regulators, resampling="jackknife")
    with pytest.raises(InputError, match="samples"):
        aracne(X[:5], genes, regulators, **FAST)


def test_anndata_wrapper_with_sparse_layer_roundtrips_h5ad(tmp_path):
    X, genes, regulators, _ = planted_network(seed=1)
    adata = ad.AnnData(np.zeros_like(X), var=pd.DataFrame(index=genes))
    adata.layers["counts"] = sp.csr_matrix(X)
    aracne_adata(adata, regulators, layer="counts", **FAST)
    network = adata.uns["aracne"]["network"]
    expected = aracne(X, genes, regulators, **FAST).edges
    pd.testing.assert_frame_equal(network, expected)
    assert adata.uns["aracne"]["params"]["layer"] == "counts"
    adata.write_h5ad(tmp_path / "net.h5ad")
    back = ad.read_h5ad(tmp_path / "net.h5ad")
    assert len(back.uns["aracne"]["network"]) == len(network)
    copy = aracne_adata(adata, regulators, layer="counts", key_added="other", copy=True, **FAST)
    assert "other" in copy.uns and "other" not in adata.uns
    with pytest.raises(InputError, match="no layer 'missing'"):
        aracne_adata(adata, regulators, layer="missing")


@pytest.mark.parametrize("blank_id", ["", "  "])
def test_empty_gene_id_fails_naming_its_line(tmp_path, capsys, blank_id):
    from cli import netinfer as cli

    matrix = tmp_path / "expr.tsv"
    rows = ["gene\tS1\tS2\tS3", "A\t1\t2\t3", "", "B\t3\t1\t2", f"{blank_id}\t2\t3\t1"]
    matrix.write_text("\n".join(rows) + "\n")
    regulators = tmp_path / "tfs.txt"
    regulators.write_text("A\n")
    out = tmp_path / "net.txt"
    args = ["aracne", str(matrix), "--regulators", str(regulators), "--output", str(out)]
    assert cli.main(args) == 2
    assert f"{matrix}: empty gene id on line 5;" in capsys.readouterr().err
    assert not out.exists()


def test_compat_preset_sets_the_method_and_explicit_flags_override_it():
    from cli import netinfer as cli

    def options(*flags):
        return cli._method_options(
            cli._parser().parse_args(["aracne", "e.tsv", "--regulators", "r", *flags])
        )

    assert options() == {}  # the library's own defaults
    assert options("--compat", "aracne3") == COMPAT_PRESETS["aracne3"]
    overridden = options(
        "--compat", "aracne-ap", "--leaf-rule", "aracne3", "--fdr", "0.1", "--subsample", "0.5"
    )
    assert overridden == {
        **COMPAT_PRESETS["aracne-ap"],
        "leaf_rule": "aracne3",
        "fdr": 0.1,
        "pvalue": None,
        "resampling": "subsample",
        "subsample_fraction": 0.5,
    }
    result = aracne(
        np.random.default_rng(0).normal(size=(40, 6)),
        list("ABCDEF"),
        ["A"],
        resamples=2,
        null_pairs=100_000,
        **overridden,
    )
    assert result.settings["partition"] == "aracne-ap" and result.settings["leaf_rule"] == "aracne3"
    with pytest.raises(ValueError, match="null_pairs"):
        aracne(np.zeros((40, 2)) + np.arange(40)[:, None], ["A", "B"], ["A"], null_pairs=0)


def test_poisson_ap_consolidation_is_aracne_aps_strict_tail():
    from scipy import stats

    from netinfer.consolidate import ResampleNetwork, consolidate

    ids = [np.array([0, 1, 2]), np.array([0, 1]), np.array([0, 5])]
    networks = [ResampleNetwork(i, np.ones(i.size), 0.01, i.size) for i in ids]
    ours = consolidate(networks, n_possible=100, test="poisson")
    theirs = consolidate(networks, n_possible=100, test="poisson-ap")
    lam = 7 / 100
    np.testing.assert_array_equal(ours.count, [3, 2, 1, 1])
    np.testing.assert_allclose(
        ours.pvalue, np.minimum(1, 100 * stats.poisson.sf(ours.count - 1, lam))
    )
    np.testing.assert_allclose(
        theirs.pvalue, np.minimum(1, 100 * stats.poisson.sf(ours.count, lam))
    )
    assert (theirs.pvalue < ours.pvalue).all()


def test_average_ranks_and_spearman_equal_scipy():
    """Against scipy.stats (the independent reference): ties share their mean rank."""
    from scipy import stats

    rng = np.random.default_rng(0)
    X = np.round(rng.normal(size=(57, 40)), 1)  # many ties
    X[:, 3] = 1.0  # a constant column
    np.testing.assert_array_equal(average_ranks(X), stats.rankdata(X, axis=0))
    first, second = rng.integers(0, 40, size=(2, 300))
    varying = (first != 3) & (second != 3)
    pairs = zip(first[varying], second[varying], strict=True)
    expected = [stats.spearmanr(X[:, a], X[:, b])[0] for a, b in pairs]
    result = _spearman(X, first, second)
    np.testing.assert_allclose(result[varying], expected, rtol=1e-12)
    assert np.all(result[~varying] == 0.0)  # a constant column: no correlation
    # with the run's sort order (genes x samples, as SortedGenes keeps it): no sort, same ranks
    order = np.argsort(X.T, axis=1, kind="stable").astype(np.int32)
    np.testing.assert_array_equal(average_ranks(X, order.T), stats.rankdata(X, axis=0))
    np.testing.assert_array_equal(_spearman(X, first, second, order), result)


@pytest.mark.parametrize("estimator", ["apmi", "gcmi"])
def test_fdr_edges_equal_benjamini_hochberg_over_every_candidate(estimator):
    """Only candidates that can pass get a p-value (``benjamini_hochberg_edges``): the same
    rejections as statsmodels' Benjamini-Hochberg over the p-values of every tested pair."""
    from statsmodels.stats.multitest import multipletests

    from netinfer.mi.gcmi import gcmi_null
    from netinfer.mi.null import null_model

    if estimator == "gcmi":
        null = gcmi_null(80)
    else:
        null = null_model(80, scheme="none", fraction=1.0, min_split=3, seed=0, n_pairs=300_000)
    rng = np.random.default_rng(1)
    for planted, fdr in ((0, 0.05), (40, 0.05), (2_000, 0.05), (2_000, 0.2), (20_000, 0.01)):
        pvalues = rng.random(100_000)  # the null's p-values of null pairs, then planted ones
        pvalues[:planted] = 10 ** rng.uniform(-9, -3, planted)
        mi = np.zeros(pvalues.size)  # p near 1: never a candidate
        low = np.flatnonzero(pvalues < 0.09)
        mi[low] = [null.threshold(p) for p in pvalues[low]]
        candidates = mi > null.threshold(fdr)
        reject = multipletests(null.pvalue(mi), alpha=fdr, method="fdr_bh")[0]
        edges = benjamini_hochberg_edges(mi, candidates, null, mi.size, fdr)
        np.testing.assert_array_equal(edges, reject & candidates)
        assert edges.sum() >= 0.5 * min(planted, 1_000)
