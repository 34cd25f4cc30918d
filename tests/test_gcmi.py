"""Gaussian-copula MI: accuracy, invariance, blocking, determinism, its null law, where it loses,
and ARACNe end to end with ``estimator="gcmi"``."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import planted_network
from scipy import stats
from threadpoolctl import threadpool_limits

from netinfer import aracne, aracne_adata
from netinfer.mi.apmi import apmi
from netinfer.mi.gcmi import (
    bias,
    copula_normalize,
    effective_sample_size,
    gcmi,
    gcmi_null,
    gcmi_pairs,
    gcmi_regulators,
)
from netinfer.mi.null import null_model, resample_indices

FAST = dict(resamples=8, seed=3, estimator="gcmi")


def _edge_set(edges):
    return set(zip(edges["regulator"], edges["target"]))


def _precision_recall(found, truth):
    hits = {e for e in found if e in truth or e[::-1] in truth}
    return len(hits) / max(1, len(found)), len(hits) / len(truth)


def _scores(n_genes=40, n_samples=150, seed=0):
    """Copula scores of correlated genes with ties (rounded values), and their raw values."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((4, n_samples))
    values = rng.standard_normal((n_genes, 4)) @ latent + rng.standard_normal((n_genes, n_samples))
    values = np.round(values, 1)
    return copula_normalize(values, np.random.default_rng(seed + 1)), values


@pytest.mark.parametrize("rho", [0.0, 0.25, 0.5, 0.75])
def test_bivariate_normals_give_the_analytic_mi(rho):
    rng = np.random.default_rng(int(rho * 100))
    x, y = rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], size=10_000).T
    expected = -0.5 * np.log(1 - rho**2)
    assert gcmi(x, y) == pytest.approx(expected, abs=0.01)
    # Ince et al.'s bias correction subtracts about 1 / (2 n)
    assert gcmi(x, y) - gcmi(x, y, bias_correction=True) == pytest.approx(bias(10_000))
    assert bias(10_000) == pytest.approx(1 / 20_000, rel=1e-3)


def test_invariant_to_monotone_transforms_of_each_gene():
    X, genes, regulators, _ = planted_network(seed=2)
    X = np.round(X, 1)  # ties too: the seeded tie-breaking must see the same tie groups
    transforms = [np.log1p, np.sqrt, lambda v: 3 * v + 7, np.arcsinh, lambda v: v**3]
    transformed = np.column_stack(
        [transforms[g % len(transforms)](X[:, g]) for g in range(X.shape[1])]
    )
    raw = copula_normalize(X.T, np.random.default_rng(5))
    np.testing.assert_array_equal(raw, copula_normalize(transformed.T, np.random.default_rng(5)))
    one = aracne(X, genes, regulators, **FAST).edges
    other = aracne(transformed, genes, regulators, **FAST).edges
    pd.testing.assert_frame_equal(one.drop(columns="scc"), other.drop(columns="scc"))


def test_blocked_and_unblocked_products_agree_with_the_correlation():
    scores, _ = _scores()
    reg_cols = np.array([5, 0, 17, 3], dtype=np.int64)
    whole = gcmi_regulators(scores, reg_cols, block_genes=scores.shape[0])
    for block in (1, 7, 16):
        np.testing.assert_allclose(
            gcmi_regulators(scores, reg_cols, block_genes=block), whole, rtol=0, atol=1e-12
        )
    r = np.corrcoef(scores)[reg_cols]
    reference = -0.5 * np.log1p(-np.minimum(r * r, 1 - 1e-16))
    reference[np.arange(reg_cols.size), reg_cols] = 0.0
    np.testing.assert_allclose(whole, reference, rtol=1e-9, atol=1e-12)
    # regulator pairs exactly symmetric (DPI needs it), self pairs 0
    for i, j in [(0, 1), (2, 3), (1, 2)]:
        assert whole[i, reg_cols[j]] == whole[j, reg_cols[i]]
    first, second = np.repeat(reg_cols, 40), np.tile(np.arange(40), reg_cols.size)
    not_self = first != second
    np.testing.assert_allclose(
        gcmi_pairs(scores, first[not_self], second[not_self]), whole.ravel()[not_self], atol=1e-12
    )
    with pytest.raises(ValueError, match="block_genes"):
        gcmi_regulators(scores, reg_cols, block_genes=0)


def test_same_seed_same_network_at_any_thread_count(planted):
    X, genes, regulators, _ = planted
    X = np.round(X, 1)  # ties: the seed decides their order, so it shows in every MI
    scores, _ = _scores(n_genes=3000, n_samples=120)
    reg_cols = np.arange(0, 3000, 50, dtype=np.int64)
    with threadpool_limits(limits=1, user_api="blas"):
        single = gcmi_regulators(scores, reg_cols, threads=1)
    with threadpool_limits(limits=2, user_api="blas"):
        np.testing.assert_array_equal(gcmi_regulators(scores, reg_cols, threads=2), single)
    one = aracne(X, genes, regulators, threads=1, **FAST)
    two = aracne(X, genes, regulators, threads=2, **FAST)
    pd.testing.assert_frame_equal(one.edges, two.edges, check_exact=True)
    pd.testing.assert_frame_equal(one.recurrence, two.recurrence)
    other_seed = aracne(X, genes, regulators, threads=2, **{**FAST, "seed": 4})
    assert not np.array_equal(other_seed.edges["mi"], one.edges["mi"])


def _exceedance(mi, threshold):
    return np.count_nonzero(mi > threshold) / mi.size


@pytest.mark.parametrize("n_samples", [40, 300])
def test_analytic_null_matches_the_permutation_null(n_samples):
    """Independent genes: their ranks are random permutations, so the MI of all pairs is the
    permutation null. The finite-sample law's exceedance rates are nominal; the bare asymptotic
    chi-square(1) law admits more at small n (measured 1.1-2.4x)."""
    rng = np.random.default_rng(n_samples)
    scores = copula_normalize(rng.standard_normal((1600, n_samples)), rng)
    first, second = np.triu_indices(scores.shape[0], k=1)
    mi = gcmi_pairs(scores, first, second)  # 1.28M null pairs
    law = gcmi_null(n_samples)
    for p in (1e-2, 1e-3, 1e-4):
        noise = 4 * np.sqrt(p / mi.size)
        assert abs(_exceedance(mi, law.threshold(p)) - p) <= 0.15 * p + noise, p
    chi2_rate = _exceedance(mi, stats.chi2.isf(1e-3, 1) / (2 * n_samples))
    if n_samples == 40:
        assert chi2_rate > 1.2e-3  # why the law is not the bare chi-square
    # the law is chi-square(1) for 2 n MI in the limit, and its p-values invert its thresholds
    big = gcmi_null(20_000)
    assert 2 * 20_000 * big.threshold(1e-6) == pytest.approx(stats.chi2.isf(1e-6, 1), rel=2e-3)
    for p in (1e-3, 1e-8, 1e-20):
        assert law.pvalue(law.threshold(p)) == pytest.approx(p, rel=1e-6)
    corrected = gcmi_null(n_samples, bias_correction=True)
    assert corrected.threshold(1e-3) == pytest.approx(law.threshold(1e-3) - bias(n_samples))
    assert law.pvalue(-0.1) == 1.0


def test_bootstrap_null_uses_the_effective_sample_size():
    rng = np.random.default_rng(0)
    n_samples, rates, naive = 200, [], []
    for _ in range(12):
        draws = resample_indices(n_samples, "bootstrap", 1.0, rng)
        scores = copula_normalize(rng.standard_normal((500, n_samples))[:, draws], rng)
        first, second = np.triu_indices(500, k=1)
        mi = gcmi_pairs(scores, first, second)
        law = gcmi_null(n_samples, n_effective=effective_sample_size(draws))
        rates.append(_exceedance(mi, law.threshold(1e-3)))
        naive.append(_exceedance(mi, gcmi_null(n_samples).threshold(1e-3)))
    assert 0.5e-3 <= np.mean(rates) <= 1.2e-3  # valid, mildly conservative
    assert np.mean(naive) > 10e-3  # duplicates ignored: an order of magnitude too many
    assert effective_sample_size(np.arange(10)) == 10.0
    assert effective_sample_size(np.array([0, 0, 1, 1])) == 2.0


def test_non_monotone_dependence_is_seen_by_apmi_only():
    """y = x^2 + noise on a symmetric x: the copula correlation is near 0, adaptive partitioning
    sees the dependence. Where the regulation is not monotone, GCMI misses the edge."""
    rng = np.random.default_rng(0)
    n_samples = 300
    x = rng.standard_normal(n_samples)
    y = x**2 + 0.3 * rng.standard_normal(n_samples)
    apmi_null = null_model(
        n_samples, scheme="none", fraction=1.0, min_split=3, seed=0, n_pairs=100_000
    )
    assert apmi_null.pvalue(apmi(x, y)) < 1e-8
    assert gcmi_null(n_samples).pvalue(gcmi(x, y)) > 1e-3

    X = rng.lognormal(size=(n_samples, 30))
    X[:, 0] = np.exp(x)  # regulator R0: a U-shaped target and a monotone one
    X[:, 10] = y
    X[:, 11] = x + 0.3 * rng.standard_normal(n_samples)
    genes = [f"G{i:02d}" for i in range(30)]
    options = dict(resamples=4, seed=0, null_pairs=100_000)
    by_apmi = _edge_set(aracne(X, genes, genes[:3], **options).edges)
    by_gcmi = _edge_set(aracne(X, genes, genes[:3], estimator="gcmi", **options).edges)
    assert {("G00", "G10"), ("G00", "G11")} <= by_apmi
    assert ("G00", "G11") in by_gcmi and ("G00", "G10") not in by_gcmi


@pytest.mark.parametrize(
    "options",
    [
        dict(),
        dict(resampling="bootstrap"),
        dict(pvalue=1e-8),
        dict(pruning="maxent", consolidation="binomial"),
        dict(resamples=0),
        dict(bias_correction=True),
    ],
)
def test_gcmi_aracne_recovers_the_planted_network(planted, options):
    X, genes, regulators, truth = planted
    result = aracne(X, genes, regulators, **{**FAST, **options})
    precision, recall = _precision_recall(_edge_set(result.edges), truth)
    assert precision >= 0.95 and recall >= 0.9, (precision, recall)
    edges = result.edges
    assert list(edges.columns) == ["regulator", "target", "mi", "pvalue", "count", "scc", "log_p"]
    assert (np.diff(edges["mi"].to_numpy()) <= 0).all() and (edges["pvalue"] < 0.05).all()
    assert result.settings["estimator"] == "gcmi"
    assert result.summary["null_pairs"] == 0


def test_full_output_anndata_and_bad_options(planted):
    X, genes, regulators, _ = planted
    normal = aracne(X, genes, regulators, **FAST).edges
    full = aracne(X, genes, regulators, full_output=True, **FAST).edges
    assert len(full) == len(regulators) * (len(genes) - 1)
    significant = full[full["significant"]].drop(columns="significant").reset_index(drop=True)
    pd.testing.assert_frame_equal(significant, normal, rtol=1e-12)
    adata = ad.AnnData(X, var=pd.DataFrame(index=genes))
    aracne_adata(adata, regulators, **FAST)
    assert adata.uns["aracne"]["params"]["estimator"] == "gcmi"
    pd.testing.assert_frame_equal(adata.uns["aracne"]["network"], normal)
    with pytest.raises(ValueError, match="estimator must be one of"):
        aracne(X, genes, regulators, estimator="pearson")
    with pytest.raises(ValueError, match="bias_correction applies to estimator='gcmi'"):
        aracne(X, genes, regulators, bias_correction=True)
