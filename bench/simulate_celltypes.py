"""SERGIO simulations of several cell types, as raw counts with cell-type labels.

Used by ``bench/celltype_accuracy.py``. Two scenarios over one gene set, a RegNetwork DAG
(:func:`simulate.regnetwork_dag`) parameterised once with SERGIO's defaults (interaction
strengths ``k``, Hill coefficients ``n``):

``shared``
    Every cell type follows the same network: SERGIO's own multi-type mode, in which the
    master regulators' production rates differ per type (``mrProfile.build_rnd``).
``specific``
    Each cell type follows its own network: the DAG with a different random share of its
    edges dropped (40% by default), simulated by SERGIO as a single cell type with its own
    master-regulator production rates; the cells of all types are then concatenated. A gene
    left with no regulator in a type becomes a master regulator there (its own production
    rate plus SERGIO's intrinsic noise), so every gene is present in every type.

In both, SERGIO's technical noise (outliers, library size, dropout, Poisson counts) is
applied once to the concatenated noise-free expression, and genes never detected are
dropped. Results are cached like ``bench/simulate.py``'s data sets.

Run directly for a summary of both scenarios::

    python bench/simulate_celltypes.py
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from simulate import (  # noqa: E402
    DEEP_HUBS,
    _cached,
    regnetwork_dag,
    simulate_clean,
    technical_noise,
)

SCENARIOS = ("shared", "specific")


@dataclass
class CellTypeData:
    """Raw counts of several cell types with the network each type was simulated from.

    Attributes
    ----------
    counts : ndarray, shape (n_cells, n_genes)
        Raw UMI counts (int64).
    genes : list of str
        Gene names, columns of ``counts``.
    cell_types : ndarray of str, shape (n_cells,)
        Cell type of each cell (``type0``, ``type1``, ...).
    regulators : list of str
        Candidate regulators: genes with out-degree > 0 in the full DAG (the same list for
        every type).
    truths : dict
        Cell type -> DataFrame (``regulator``, ``target``, ``k``) of that type's true edges
        between detected genes.
    """

    counts: np.ndarray
    genes: list[str]
    cell_types: np.ndarray
    regulators: list[str]
    truths: dict[str, pd.DataFrame]

    def to_anndata(self, key: str = "cell_type"):
        """AnnData of the counts with the cell types in ``obs[key]``."""
        import anndata as ad

        obs = pd.DataFrame(
            {key: pd.Categorical(self.cell_types)},
            index=[f"cell{i:05d}" for i in range(len(self.cell_types))],
        )
        return ad.AnnData(
            X=self.counts.astype(np.float32), obs=obs, var=pd.DataFrame(index=self.genes)
        )


def _grn(edges: pd.DataFrame, genes: Sequence[str]):
    """A SERGIO GRN over ``genes`` with the given parameterised edges.

    Genes without any edge are added as isolated genes: SERGIO then treats them as master
    regulators (own production rate, intrinsic noise only).
    """
    from SERGIO.GRN._components import Gene, SingleInteraction
    from SERGIO.GRN._grn import GRN

    grn = GRN()
    for r in edges.itertuples(index=False):
        grn.add_interaction(
            SingleInteraction(
                reg=[Gene(r.reg, r.reg_decay)], tar=Gene(r.tar, r.tar_decay), k=r.k, h=None, n=r.n
            )
        )
    for g in genes:  # no-op for genes already in an interaction
        grn._add_gene(Gene(g, 0.8))
    grn.setMRs()
    return grn


def sergio_celltypes(
    scenario: str,
    n_types: int = 3,
    *,
    hubs: Sequence[str] = DEEP_HUBS,
    targets_per_hub: int = 15,
    cells_per_type: int = 600,
    drop_fraction: float = 0.4,
    dropout_percentile: float = 65,
    log_library_mean: float = 6.9,
    seed: int = 0,
    cache: bool = True,
) -> CellTypeData:
    """Simulate raw counts of several cell types with SERGIO.

    Parameters
    ----------
    scenario : {"shared", "specific"}
        One network for all types, or one network per type (see the module docstring).
    n_types : int
        Number of cell types.
    hubs, targets_per_hub
        Sub-network of RegNetwork (:func:`simulate.regnetwork_dag`).
    cells_per_type : int
        Cells simulated per type.
    drop_fraction : float
        ``specific`` only: fraction of the DAG's edges dropped in each type (a different
        random subset per type).
    dropout_percentile : float
        SERGIO's ``perc_d`` (dropout midpoint percentile; higher means more zeros).
    log_library_mean : float
        SERGIO's ``mean_l``: cells have about ``exp(mean_l)`` counts before dropout.
    seed : int
        Seed of NumPy's global RNG (which SERGIO uses) and of the edge drops.
    cache : bool
        Read from / write to ``simulate.CACHE_DIR``.

    Returns
    -------
    CellTypeData
        Counts, genes, cell-type labels, regulators and per-type truth.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {SCENARIOS}, not {scenario!r}")
    params = dict(
        scenario=scenario,
        n_types=n_types,
        hubs=list(hubs),
        targets_per_hub=targets_per_hub,
        cells_per_type=cells_per_type,
        drop_fraction=drop_fraction if scenario == "specific" else None,
        dropout_percentile=dropout_percentile,
        log_library_mean=log_library_mean,
        seed=seed,
        version=1,
    )

    def build() -> CellTypeData:
        from SERGIO.GRN._utils import grnParam, parameterize_grn

        np.random.seed(seed)
        sub = regnetwork_dag(hubs, targets_per_hub)
        all_genes = [str(g) for g in sub.nodes()]
        edges = pd.DataFrame(
            [[i, a, 0, b] for i, (a, b) in enumerate(sub.edges())],
            columns=["index", "reg", "coop", "tar"],
        )
        net = parameterize_grn(edges, grnParam())  # one k, n per edge, shared by all types
        names = [f"type{t}" for t in range(n_types)]
        type_edges: dict[str, pd.DataFrame] = {}
        if scenario == "shared":
            expr = simulate_clean(_grn(net, all_genes), n_types, cells_per_type)
            type_edges = dict.fromkeys(names, net)
        else:
            rng = np.random.default_rng([seed, 0x64726F70])  # "drop"
            parts = []
            for name in names:
                keep = rng.random(len(net)) >= drop_fraction
                type_edges[name] = net[keep].reset_index(drop=True)
                part = simulate_clean(_grn(type_edges[name], all_genes), 1, cells_per_type)
                parts.append(part.loc[all_genes])
            expr = pd.concat(parts, axis=1)
        expr = expr.loc[all_genes]
        labels = np.repeat(np.array(names), cells_per_type)
        counts = technical_noise(
            expr.to_numpy(dtype=np.float64), log_library_mean, dropout_percentile
        ).astype(np.int64)  # cells x genes
        detected = counts.sum(axis=0) > 0
        genes = [g for g, d in zip(all_genes, detected, strict=True) if d]
        regulators = [g for g in genes if sub.out_degree(g) > 0]
        truths = {}
        for name, e in type_edges.items():
            t = e[["reg", "tar", "k"]].rename(columns={"reg": "regulator", "tar": "target"})
            t = t[t.regulator.isin(genes) & t.target.isin(genes)]
            truths[name] = t.reset_index(drop=True)
        return CellTypeData(
            counts=np.ascontiguousarray(counts[:, detected]),
            genes=genes,
            cell_types=labels,
            regulators=regulators,
            truths=truths,
        )

    return _cached(f"sergio-celltypes-{scenario}", params, build) if cache else build()


def summary(data: CellTypeData) -> pd.DataFrame:
    """One row per cell type: cells, UMI per cell, zeros, true edges."""
    rows = []
    for name, truth in data.truths.items():
        c = data.counts[data.cell_types == name]
        umi = c.sum(axis=1)
        rows.append(
            dict(
                cell_type=name,
                cells=c.shape[0],
                genes=len(data.genes),
                regulators=len(data.regulators),
                true_edges=len(truth),
                median_umi=float(np.median(umi)),
                min_umi=int(umi.min()),
                zeros=float((c == 0).mean()),
            )
        )
    return pd.DataFrame(rows)


def main(argv: Sequence[str] | None = None) -> None:
    """Build (and cache) both scenarios and print a summary of each."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells-per-type", type=int, default=600)
    args = ap.parse_args(argv)
    for scenario in SCENARIOS:
        data = sergio_celltypes(scenario, cells_per_type=args.cells_per_type)
        print(f"## {scenario}")
        print(summary(data).round(3).to_string(index=False))
        if scenario == "specific":
            sets = [set(zip(t.regulator, t.target)) for t in data.truths.values()]
            print(
                f"edges in every type: {len(set.intersection(*sets))}, "
                f"in any type: {len(set.union(*sets))}"
            )


if __name__ == "__main__":
    main()
