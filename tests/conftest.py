"""Shared fixtures: a small expression matrix with a planted regulatory network."""

from __future__ import annotations

import os

import numpy as np
import pytest


@pytest.fixture(autouse=True, scope="session")
def _null_cache_in_a_temporary_folder(tmp_path_factory):
    """Simulated nulls are cached on disk; the tests never write into the user's own cache."""
    before = os.environ.get("NETINFER_CACHE_DIR")
    os.environ["NETINFER_CACHE_DIR"] = str(tmp_path_factory.mktemp("netinfer-cache"))
    yield
    if before is None:
        del os.environ["NETINFER_CACHE_DIR"]
    else:
        os.environ["NETINFER_CACHE_DIR"] = before


def planted_network(n_samples=200, n_genes=60, n_regulators=8, seed=0):
    """Log-normal expression where each odd non-regulator gene follows one regulator.

    Returns X (samples x genes), gene ids, regulator ids and the set of true (regulator, target).
    """
    rng = np.random.default_rng(seed)
    X = rng.lognormal(size=(n_samples, n_genes))
    genes = [f"G{i:03d}" for i in range(n_genes)]
    truth = set()
    X[:, 1] = X[:, 0] * np.exp(0.2 * rng.normal(size=n_samples))  # a regulator-regulator edge
    truth.add((genes[0], genes[1]))
    for g in range(n_regulators, n_genes, 2):
        r = int(rng.integers(0, n_regulators))
        X[:, g] = np.log1p(X[:, r]) * np.exp(0.25 * rng.normal(size=n_samples))
        truth.add((genes[r], genes[g]))
    return X, genes, genes[:n_regulators], truth


@pytest.fixture
def planted():
    return planted_network()
