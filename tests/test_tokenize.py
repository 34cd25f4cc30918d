"""gremln tokenization: bins by value (against a brute-force reference), vocabulary, real data."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from gremln.tokenize import (
    CLS,
    MASK,
    PAD,
    GeneVocabulary,
    tokenize_cells,
    value_bins,
)
from netinfer.io import InputError


def _bins_by_brute_force(values, n_bins):
    """The binning rule written out: sorted cell values, quantile edges by hand (linear
    interpolation between order statistics), duplicates dropped, each value's interval found by
    a scan."""
    ordered, n = sorted(float(v) for v in values), len(values)
    edges = []
    for k in range(n_bins - 1):
        position = k / (n_bins - 1) * (n - 1)
        low = int(position)
        high = min(low + 1, n - 1)
        edge = ordered[low] + (position - low) * (ordered[high] - ordered[low])
        if not edges or edge != edges[-1]:
            edges.append(edge)
    bins = []
    for value in values:
        k = 0
        while k < len(edges) and edges[k] <= value:
            k += 1
        bins.append(k)  # the interval [edges[k - 1], edges[k]) holds the value: bin k
    return np.array(bins)


def test_value_bins_match_a_brute_force_reference():
    rng = np.random.default_rng(0)
    cases = [rng.lognormal(size=n) for n in (1, 7, 99, 250)]
    cases += [rng.poisson(1.5, size=n) + 1.0 for n in (5, 60, 400)]  # shallow: many ties
    cases += [np.full(30, 2.0), np.array([1.0, 1.0, 1.0, 5.0])]
    for values in cases:
        for n_bins in (2, 5, 11, 100):
            bins = value_bins(values, n_bins)
            np.testing.assert_array_equal(bins, _bins_by_brute_force(values, n_bins))
            assert bins.min() >= 1 and bins.max() <= n_bins - 1


def test_tied_values_share_a_bin_and_order_is_kept():
    rng = np.random.default_rng(1)
    values = (rng.poisson(0.8, size=500) + 1).astype(float)  # counts 1, 2, 3, ...: all tied
    bins = value_bins(values, 11)
    for value in np.unique(values):
        assert np.unique(bins[values == value]).size == 1, value
    by_value = bins[np.argsort(values, kind="stable")]
    assert (np.diff(by_value) >= 0).all()  # a larger value never gets a lower bin
    assert value_bins(np.full(40, 3.0), 11).tolist() == [1] * 40  # one value, one bin
    # distinct values: close to equal-count bins (each of 10 bins within one value of n / 10)
    counts = np.bincount(value_bins(rng.lognormal(size=1000), 11))[1:]
    assert counts.size == 10 and np.abs(counts - 100).max() <= 1


def test_vocabulary_specials_encode_and_round_trip(tmp_path):
    vocab = GeneVocabulary(["TP53", "MYC"], ensembl=["ENSG1", "ENSG2"], n_bins=10)
    assert (PAD, MASK, CLS) == (0, 1, 2) and len(vocab) == 5
    assert (vocab.bin_pad, vocab.bin_mask, vocab.bin_cls) == (10, 11, 12)
    ids, unknown = vocab.encode(["MYC", "NOPE", "TP53"])
    assert ids.tolist() == [4, -1, 3] and unknown == ["NOPE"]
    vocab.save(tmp_path / "vocab.json")
    back = GeneVocabulary.load(tmp_path / "vocab.json")
    assert back.genes == vocab.genes and back.ensembl == vocab.ensembl and back.n_bins == 10
    with pytest.raises(InputError, match="duplicated genes: TP53"):
        GeneVocabulary(["TP53", "TP53"])
    (tmp_path / "other.json").write_text('{"special_tokens": ["a"], "genes": [], "n_bins": 3}')
    with pytest.raises(InputError, match="not a gremln vocabulary"):
        GeneVocabulary.load(tmp_path / "other.json")


def test_tokenize_cells_keeps_expressed_known_genes_by_decreasing_bin():
    X = sp.csr_matrix(np.array([[0, 5.0, 1.0, 0, 2.0], [3.0, 0, 0, 0, 0]]))
    vocab = GeneVocabulary(["a", "b", "c", "e"], n_bins=4)  # "d" is not in the vocabulary
    offsets, gene_ids, bins, unknown = tokenize_cells(X, ["a", "b", "c", "d", "e"], vocab)
    assert unknown == ["d"] and offsets.tolist() == [0, 3, 4]
    cell0 = dict(zip(gene_ids[:3].tolist(), bins[:3].tolist()))
    assert cell0 == {4: 3, 6: 2, 5: 1}  # b (5.0) highest, e (2.0), c (1.0)
    assert (np.diff(bins[:3]) <= 0).all()
    assert gene_ids[3:].tolist() == [3] and bins[3:].tolist() == [1]


def test_bins_on_real_counts_are_a_function_of_the_value():
    from netinfer.datasets import pbmc68k_counts
    from netinfer.pipeline import normalize

    adata = pbmc68k_counts()  # shallow cells: many genes share a count of 1
    X = normalize(adata.X)
    vocab = GeneVocabulary(list(adata.var_names), n_bins=11)
    offsets, gene_ids, bins, _ = tokenize_cells(X, adata.var_names, vocab)
    assert offsets[-1] == bins.size and (np.diff(offsets) > 50).all()
    column = {g: j for j, g in enumerate(adata.var_names)}
    X = sp.csr_matrix(X)
    for i in (0, 100, adata.n_obs - 1):
        cell = slice(offsets[i], offsets[i + 1])
        values = X[i, [column[vocab.genes[g - 3]] for g in gene_ids[cell]]].toarray().ravel()
        np.testing.assert_array_equal(bins[cell], value_bins(values, 11))
        for value in np.unique(values):  # equal values, one bin
            assert np.unique(bins[cell][values == value]).size == 1
        assert (bins[cell][values == values.min()] == 1).all()  # the lowest value: bin 1
