"""Null model: calibration of its p-values, determinism, and Benjamini-Hochberg."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

import netinfer.mi.null as null_module
from netinfer.mi.null import (
    KEPT_FRACTION,
    MAX_NULL_PAIRS,
    MIN_NULL_PAIRS,
    benjamini_hochberg_cutoff,
    default_null_pairs,
    default_tail_values,
    fit_null,
    null_batches,
    null_model,
)


@pytest.fixture(autouse=True)
def private_null_cache(tmp_path, monkeypatch):
    """Each test gets an empty disk cache and in-process cache."""
    monkeypatch.setenv("NETINFER_CACHE_DIR", str(tmp_path / "null-cache"))
    null_model.cache_clear()
    yield tmp_path / "null-cache"
    null_model.cache_clear()


def test_fitted_pvalues_are_calibrated_on_an_independent_null():
    """Fit on the default null (100 M values at 100 samples), count exceedances among 4 M fresh
    ones (streamed, never held). The bounds are 4 binomial standard deviations of the two draw
    counts (the fit's empirical count at p and the fresh count), so a calibrated tail cannot
    fail them.
    Deeper p-values need more fresh draws than a test can afford: bench/null_calibration.py."""
    fitted = null_model(100, scheme="none", fraction=1.0, min_split=3, seed=1)
    pvalues = np.array([1e-3, 1e-4])
    thresholds = np.array([fitted.threshold(p) for p in pvalues])
    exceed, n_fresh = np.zeros(2), 0
    fresh = dict(scheme="none", fraction=1.0, min_split=3, seed=2, n_pairs=4_000_000)
    for values in null_batches(100, **fresh):
        exceed += (values[:, None] > thresholds).sum(axis=0)
        n_fresh += values.size
    observed = exceed / n_fresh
    relative_sd = np.sqrt((1 - pvalues) / pvalues * (1 / fitted.n_values + 1 / n_fresh))
    assert np.all(np.abs(observed / pvalues - 1) <= 4 * relative_sd), observed / pvalues


def test_default_null_size_follows_the_resample_size():
    """About the same simulation work at every size (a pair costs about its sample count):
    100 M values up to 300 samples per resample, 10 M from 3,000, 3e10 / m in between; the
    tail on the top 10,000 values, or the top 0.1% of a smaller null."""
    assert default_null_pairs(32) == default_null_pairs(300) == MAX_NULL_PAIRS == 100_000_000
    assert default_null_pairs(3_000) == default_null_pairs(50_000) == MIN_NULL_PAIRS == 10**7
    assert default_null_pairs(600) == 50_000_000
    sizes = [default_null_pairs(m) for m in range(2, 6_000, 7)]
    assert all(a >= b for a, b in zip(sizes, sizes[1:]))
    assert default_tail_values(100_000_000) == default_tail_values(10_000_000) == 10_000
    assert default_tail_values(600_000) == 600


def test_streamed_summary_equals_the_sorted_null():
    """The model keeps the top of the stream and a sample of the rest; against all values
    held and sorted (the brute force): the same top values, the exact empirical p-value and
    np.quantile's threshold wherever the top reaches."""
    args = dict(scheme="subsample", fraction=0.632, min_split=3, seed=4, n_pairs=600_000)
    model = null_model(120, **args)
    values = np.sort(np.concatenate(list(null_batches(120, **args))))
    assert model.n_values == values.size
    np.testing.assert_array_equal(model.top, values[values.size - model.top.size :])
    assert model.top.size >= KEPT_FRACTION * values.size  # below KEPT_MAX here
    assert values[values.size - model.top.size - 1] < model.top[0]  # no tie split at the cut
    mi = np.quantile(values, [0.92, 0.97, 0.995, 0.9985])
    counts = values.size - np.searchsorted(values, mi, side="left")
    np.testing.assert_array_equal(model.pvalue(mi), (counts + 1) / (values.size + 1))
    for p in (0.09, 0.05, 0.01, 0.002):
        assert model.threshold(p) == pytest.approx(np.quantile(values, 1 - p), rel=1e-12)
    # below the top: the sample's estimate, close to the exact rate
    assert model.pvalue(np.quantile(values, 0.5)) == pytest.approx(0.5, abs=0.01)


def test_a_larger_null_keeps_at_most_kept_max_values(monkeypatch):
    """Memory does not grow with the null's size: past KEPT_MAX the kept top is a smaller
    fraction, still exact, the tail starts where it did, and a sample covers the rest."""
    monkeypatch.setattr(null_module, "KEPT_MAX", 20_000)
    args = dict(scheme="none", fraction=1.0, min_split=3, seed=6, n_pairs=600_000)
    model = null_model(60, **args)
    values = np.sort(np.concatenate(list(null_batches(60, **args))))
    assert 20_000 <= model.top.size < 0.1 * values.size
    np.testing.assert_array_equal(model.top, values[values.size - model.top.size :])
    assert model.tail_start == values[values.size - round(0.001 * values.size) - 1]
    # below the top: the sample's estimate, within its binomial error of the exact rate
    mi = np.quantile(values, 0.9)
    exact = np.count_nonzero(values >= mi) / values.size
    assert model.pvalue(mi) == pytest.approx(exact, abs=4 * np.sqrt(exact * (1 - exact) / 1e5))


def test_cold_and_warm_disk_cache_give_the_same_null(private_null_cache):
    args = dict(scheme="subsample", fraction=0.632, min_split=4, seed=5, n_pairs=100_000)
    cold = null_model(90, **args)
    (cached,) = private_null_cache.glob("null-90-*.npz")
    null_model.cache_clear()
    warm = null_model(90, **args)
    np.testing.assert_array_equal(warm.top, cold.top)
    np.testing.assert_array_equal(warm.body, cold.body)
    assert warm.threshold(1e-8) == cold.threshold(1e-8) and warm.n_samples == 57
    for damage in (b"not a numpy file", cached.read_bytes()[:1000]):  # simulated again
        cached.write_bytes(damage)
        null_model.cache_clear()
        assert null_model(90, **args).threshold(1e-8) == cold.threshold(1e-8)
        with np.load(cached) as rewritten:
            np.testing.assert_array_equal(rewritten["top"], cold.top)


def test_null_is_a_pure_function_of_its_arguments():
    args = dict(scheme="subsample", fraction=0.632, min_split=3, seed=7, n_pairs=100_000)
    first = null_model(80, **args).threshold(1e-8)
    null_model.cache_clear()
    null_model(50, **args)  # other work in between must not matter
    assert null_model(80, **args).threshold(1e-8) == first
    assert null_model(80, **{**args, "seed": 8}).threshold(1e-8) != first


def test_threshold_and_pvalue_are_inverse_and_monotone():
    model = null_model(120, scheme="none", fraction=1.0, min_split=3, seed=0, n_pairs=200_000)
    thresholds = [model.threshold(p) for p in (1e-2, 1e-4, 1e-8, 1e-12)]
    assert np.all(np.diff(thresholds) > 0)
    for p in (1e-4, 1e-8, 1e-12):
        assert model.pvalue(model.threshold(p)) == pytest.approx(p, rel=1e-9)
    # across the edge of the kept top (the top 10%), from exact values to the body's sample
    edge = model.top.size / model.n_values
    near = np.linspace(edge - 1e-4, edge + 1e-4, 401)
    assert np.all(np.diff([model.threshold(p) for p in near]) <= 0)


def test_fit_rejects_too_small_tails():
    with pytest.raises(ValueError, match="tail fit"):
        fit_null(np.random.default_rng(0).random(1000), n_samples=10, tail_values=10)


def test_bootstrap_duplicates_raise_the_null():
    kwargs = dict(fraction=1.0, min_split=3, seed=0, n_pairs=100_000)
    plain = null_model(200, scheme="none", **kwargs).threshold(1e-6)
    boot = null_model(200, scheme="bootstrap", **kwargs).threshold(1e-6)
    assert boot > 1.5 * plain


def test_benjamini_hochberg_matches_statsmodels():
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.random(5000), rng.random(200) * 1e-5])
    reject, *_ = multipletests(p, alpha=0.05, method="fdr_bh")
    cutoff = benjamini_hochberg_cutoff(p, p.size, 0.05)
    np.testing.assert_array_equal(p <= cutoff, reject)
    # only candidates passed, more tests counted: same as testing the full set
    full = np.concatenate([p, np.ones(10_000)])
    reject_full, *_ = multipletests(full, alpha=0.05, method="fdr_bh")
    assert (p <= benjamini_hochberg_cutoff(p[p < 0.05], full.size, 0.05)).sum() == reject_full.sum()
    assert benjamini_hochberg_cutoff(np.array([0.5, 0.9]), 2, 0.05) == -1.0
