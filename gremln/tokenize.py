"""Cells as tokens: QC, normalization, per-cell expression bins, gene vocabulary (GREmLN 3.1, A.2).

A cell becomes the list of its expressed genes (gene token ids) with one expression-bin token each:
bin 0 is "not expressed"; the expressed genes get bins 1..n_bins-1 by value, as the paper defines
them (bin k where the value lies in [b_k, b_k+1)). The edges b_k are quantiles of the cell's own
nonzero values, so bins mean the same thing in deep and shallow cells; edges that coincide are
collapsed, so equal values always share a bin and a shallow cell with few distinct values uses few
bins. The bin is then a function of the cell's values alone: a model can learn it. QC and
normalization are netinfer's (``netinfer.pipeline``): the same defaults, and the same report of
what each rule removed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from netinfer.io import InputError, atomic_write

SPECIAL_TOKENS = ("<pad>", "<mask>", "<cls>")
PAD, MASK, CLS = range(3)


@dataclass
class GeneVocabulary:
    """Gene tokens: ids 0-2 are PAD, MASK and CLS, genes follow from 3 in the given order.

    Bin tokens use the same three special ids after the expression bins: ``n_bins`` (PAD),
    ``n_bins + 1`` (MASK), ``n_bins + 2`` (CLS).
    """

    genes: list[str]
    ensembl: list[str] = field(default_factory=list)
    n_bins: int = 100

    def __post_init__(self):
        if len(set(self.genes)) != len(self.genes):
            seen, duplicated = set(), []
            for gene in self.genes:
                if gene in seen:
                    duplicated.append(gene)
                seen.add(gene)
            raise InputError(f"<vocabulary>: duplicated genes: {', '.join(duplicated[:5])}")
        if self.ensembl and len(self.ensembl) != len(self.genes):
            raise ValueError("ensembl ids must be given for every gene or for none")
        if self.n_bins < 2:
            raise ValueError(f"n_bins must be at least 2, not {self.n_bins}")
        self._index = {gene: i + len(SPECIAL_TOKENS) for i, gene in enumerate(self.genes)}

    def __len__(self) -> int:
        """Number of gene tokens, specials included."""
        return len(self.genes) + len(SPECIAL_TOKENS)

    @property
    def bin_pad(self) -> int:
        return self.n_bins

    @property
    def bin_mask(self) -> int:
        return self.n_bins + 1

    @property
    def bin_cls(self) -> int:
        return self.n_bins + 2

    def encode(self, genes: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """Token ids of ``genes`` (-1 for genes outside the vocabulary) and those genes."""
        ids = np.array([self._index.get(str(g), -1) for g in genes], dtype=np.int64)
        unknown = [str(g) for g, i in zip(genes, ids) if i < 0]
        return ids, unknown

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the vocabulary as JSON (atomically)."""
        with atomic_write(path) as handle:
            json.dump(
                {
                    "special_tokens": list(SPECIAL_TOKENS),
                    "genes": self.genes,
                    "ensembl": self.ensembl,
                    "n_bins": self.n_bins,
                },
                handle,
            )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> GeneVocabulary:
        """Read a vocabulary written by ``save``."""
        with open(path) as handle:
            data = json.load(handle)
        if data.get("special_tokens") != list(SPECIAL_TOKENS):
            raise InputError(f"{path}: not a gremln vocabulary (special tokens differ)")
        return cls(data["genes"], data.get("ensembl", []), data["n_bins"])


def value_bins(values: np.ndarray, n_bins: int) -> np.ndarray:
    """Expression bins of one cell's expressed values (all > 0), by value: 1..n_bins-1.

    The edges are the cell's quantiles ``b_k = quantile(values, (k - 1) / (n_bins - 1))`` for
    k = 1..n_bins-1 (linear interpolation), so ``b_1`` is the smallest value; coinciding edges are
    collapsed into one, and a value gets the k of the collapsed edge interval ``[b_k, b_k+1)``
    that holds it (the largest value is in the last interval).

    Parameters
    ----------
    values
        The cell's expression of its expressed genes.
    n_bins
        Total bins including bin 0 (not expressed).

    Returns
    -------
    numpy.ndarray
        int64 bins in 1..n_bins-1: equal values share a bin, larger values never get a lower bin;
        with distinct values, close to equal-count bins.
    """
    if values.size == 0:
        return np.empty(0, dtype=np.int64)
    edges = np.unique(np.quantile(values, np.arange(n_bins - 1) / (n_bins - 1)))
    return np.searchsorted(edges, values, side="right").astype(np.int64)


def tokenize_cells(
    X, genes: Sequence[str], vocabulary: GeneVocabulary
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Token ids and bins of every cell's expressed, in-vocabulary genes (ragged).

    Parameters
    ----------
    X
        Normalized expression, cells x genes (sparse or dense; zeros are "not expressed").
    genes
        Column gene ids.
    vocabulary
        The gene vocabulary; genes outside it are dropped (and returned).

    Returns
    -------
    ``offsets`` (cells + 1), ``gene_ids`` and ``bins`` (ragged, cell i at
    ``offsets[i]:offsets[i + 1]``, genes by decreasing bin), and the dropped genes.
    """
    ids, unknown = vocabulary.encode(genes)
    known = ids >= 0
    X = sp.csr_matrix(X)[:, known]
    ids = ids[known]
    X.eliminate_zeros()
    offsets = np.zeros(X.shape[0] + 1, dtype=np.int64)
    gene_ids = np.empty(X.nnz, dtype=np.int32)
    bins = np.empty(X.nnz, dtype=np.int16)
    for i in range(X.shape[0]):
        lo, hi = X.indptr[i], X.indptr[i + 1]
        columns, values = X.indices[lo:hi], X.data[lo:hi]
        cell_bins = value_bins(values, vocabulary.n_bins)
        order = np.argsort(-cell_bins, kind="stable")
        gene_ids[lo:hi] = ids[columns[order]]
        bins[lo:hi] = cell_bins[order]
        offsets[i + 1] = hi
    return offsets, gene_ids, bins, unknown
