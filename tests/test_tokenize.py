"""gremln tokenization: rank bins, tie order, vocabulary, real-data bin occupancy."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from gremln.tokenize import (
    CLS,
    MASK,
    PAD,
    GeneVocabulary,
    gene_keys,
    rank_bins,
    tokenize_cells,
)
from netinfer.io import InputError


def test_rank_bins_follow_the_definition():
    rng = np.random.default_rng(0)
    for n, n_bins in [(1, 100), (7, 5), (99, 100), (250, 100), (1000, 51)]:
        values = rng.lognormal(size=n)
        bins = rank_bins(values, n_bins, cell_key=3, keys=gene_keys([f"g{i}" for i in range(n)]))
        ranks = np.argsort(np.argsort(values))  # no ties here: plain ranks
        np.testing.assert_array_equal(bins, 1 + ranks * (n_bins - 1) // n)
        assert bins.min() >= 1 and bins.max() <= n_bins - 1
        assert (np.diff(bins[np.argsort(values)]) >= 0).all()  # higher value, higher bin


def test_ties_are_ordered_deterministically_and_without_gene_bias():
    genes = [f"g{i}" for i in range(200)]
    keys = gene_keys(genes)
    tied = np.ones(200)  # all equal: the tie order alone decides
    first = rank_bins(tied, 11, cell_key=1, keys=keys)
    np.testing.assert_array_equal(first, rank_bins(tied, 11, cell_key=1, keys=keys))
    assert np.bincount(first)[1:].tolist() == [20] * 10  # evenly filled despite the ties
    other = rank_bins(tied, 11, cell_key=2, keys=keys)
    assert not np.array_equal(first, other)  # another cell, another order
    mean_bin = np.mean([rank_bins(tied, 11, cell_key=c, keys=keys) for c in range(300)], axis=0)
    assert np.abs(mean_bin - 5.5).max() < 1.0  # no gene is always ranked high


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
    offsets, gene_ids, bins, unknown = tokenize_cells(
        X, ["a", "b", "c", "d", "e"], vocab, cell_ids=["c1", "c2"]
    )
    assert unknown == ["d"] and offsets.tolist() == [0, 3, 4]
    cell0 = dict(zip(gene_ids[:3].tolist(), bins[:3].tolist()))
    assert cell0 == {4: 3, 6: 2, 5: 1}  # b (5.0) highest, e (2.0), c (1.0)
    assert (np.diff(bins[:3]) <= 0).all()
    assert gene_ids[3:].tolist() == [3] and bins[3:].tolist() == [1]


def test_bins_are_evenly_filled_on_real_counts():
    from netinfer.datasets import pbmc68k_counts
    from netinfer.pipeline import normalize

    adata = pbmc68k_counts()  # shallow cells: many genes share a count of 1
    vocab = GeneVocabulary(list(adata.var_names), n_bins=11)
    offsets, _, bins, _ = tokenize_cells(
        normalize(adata.X), adata.var_names, vocab, cell_ids=adata.obs_names
    )
    occupancy = np.bincount(bins, minlength=11)[1:] / bins.size
    assert np.abs(occupancy - 0.1).max() < 0.01  # each of 10 bins holds 10% +- 1 point
    assert offsets[-1] == bins.size and (np.diff(offsets) > 50).all()
