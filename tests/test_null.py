"""Null model: calibration of its p-values, determinism, and Benjamini-Hochberg."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from netinfer.mi.null import benjamini_hochberg_cutoff, fit_null, null_model


def test_fitted_pvalues_are_calibrated_on_an_independent_null():
    """Fit on 200k null values, check exceedance rates of 2M others: valid (not above nominal,
    within the binomial noise) and not wildly conservative (measured ratios 0.4-0.9)."""
    fitted = null_model(100, scheme="none", fraction=1.0, min_split=3, seed=1, n_pairs=200_000)
    other = null_model(100, scheme="none", fraction=1.0, min_split=3, seed=2, n_pairs=2_000_000)
    n = other.values.size
    for p in (1e-2, 1e-3, 1e-4, 1e-5):
        observed = np.count_nonzero(other.values > fitted.threshold(p)) / n
        noise = 3 * np.sqrt(p / n)
        assert observed <= 1.15 * p + noise, p
        assert observed >= 0.2 * p - noise, p


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


def test_fit_rejects_too_small_tails():
    with pytest.raises(ValueError, match="tail fit"):
        fit_null(np.random.default_rng(0).random(1000), n_samples=10, tail_fraction=0.01)


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
