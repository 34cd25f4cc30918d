"""Cell-type networks from single-cell counts, as the GREmLN paper builds them.

counts -> QC and normalization -> Leiden clusters within each cell type -> ARACNe in every cluster
-> per cell type, a consensus of its cluster networks -> the graph store.

- **QC** (the paper's defaults, all parameters): total UMI between ``min_counts`` and
  ``max_counts``, then the middle ``trim`` fraction by total UMI, then at least ``min_genes``
  expressed genes; each cell normalized to 1e6 total and log1p.
- **Clusters** within each cell type, each of at least ``max(min_cells, cluster_cells)`` cells:
  PCA, neighbours and Leiden (leidenalg), seeded; clusters under that size are merged into the
  one with the nearest centroid, and a type with fewer than twice that many cells is one cluster.
  So every type with ``min_cells`` cells gets a network (types under ``min_cells`` are listed with
  their sizes). Optional metacells pool each cell's counts with its k nearest neighbours inside
  its cluster before normalizing; the pooled profiles overlap, so they are not independent
  samples.
- **Per-cluster ARACNe** on at most ``max_cells`` profiles (a seeded sample), with either MI
  estimator (``estimator``) and ``resamples`` resamples (Poisson consolidation, Bonferroni).
- **Consensus** of a type with several clusters: an edge's recurrence k over the clusters that
  tested it (each cluster's ARACNe run drops the genes constant in that cluster) is tested
  against the chance of recurring that often given each cluster network's edge density over the
  pairs it tested (Poisson-binomial); Benjamini-Hochberg over every pair tested in at least one
  cluster; edges with q <= ``fdr`` are kept with k, p, q and their mean MI. A type of one cluster
  keeps that cluster's network (and the report says so). With C clusters the smallest p-value is
  the product of the densities, so a few clusters of dense networks can leave nothing
  significant: when BH cannot accept even the edges found in every cluster, the type's network
  is ARACNe on the whole type (at most ``max_cells`` profiles, job ``whole``) instead, and the
  report says so (``consensus_limit``, ``whole_type``).
- **Defaults** (``RESAMPLES``, ``MAX_CELLS``, ``CLUSTER_CELLS``) were chosen on SERGIO
  simulations (``bench/celltype_defaults.py``; docs/defaults.md says how): a cluster network of
  a few hundred cells with 20 resamples keeps a third to a half of the edges that 100 keep, and
  splitting a type into small clusters costs more recall than the consensus gains.
- **Small and empty networks**: a network with fewer edges than regulators is reported with the
  reason (cells, detected genes, the edges its resamples held) and warned about; a run whose
  networks hold no edge at all raises ``EmptyResultError`` unless ``allow_empty``.
- **Memory**: profiles stay sparse; only each job's at most ``max_cells`` rows are densified.

Cluster jobs run in this process or on a Dask client. Each finished cluster network is written to
``work_dir`` under a key of its data and options, so a rerun after a crash skips it and ends with
the same result.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from netinfer.aracne import aracne, check_estimator
from netinfer.integrate import exclusion_probabilities
from netinfer.io import InputError, atomic_write
from netinfer.sc.validate import require_cells_after_qc, validate_counts

CLUSTER_KEY = "netinfer_cluster"
# defaults chosen on SERGIO simulations (bench/celltype_defaults.py, docs/defaults.md)
RESAMPLES = 100
MAX_CELLS = 1000
CLUSTER_CELLS = 1000
# the job name of a whole cell type, run when the consensus of its clusters cannot accept any edge
WHOLE_TYPE = "whole"


class EmptyResultError(InputError):
    """A run whose networks hold no edge at all (allowed with ``allow_empty``)."""


@dataclass
class CelltypeResult:
    """Consensus networks per cell type, the cluster networks they came from, and a run report."""

    networks: dict[str, pd.DataFrame]
    clusters: dict[tuple[str, str], pd.DataFrame]
    report: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterJob:
    """One (cell type, cluster) ARACNe run: its profiles and everything it depends on."""

    cell_type: str
    cluster: str
    X: np.ndarray
    genes: np.ndarray
    regulators: tuple[str, ...]
    options: dict

    @property
    def key(self) -> str:
        """Content key: the same data and options give the same key (and the same network)."""
        digest = hashlib.sha256()
        digest.update(np.ascontiguousarray(self.X).tobytes())
        digest.update("\n".join(map(str, self.genes)).encode())
        digest.update("\n".join(self.regulators).encode())
        digest.update(json.dumps(self.options, sort_keys=True, default=str).encode())
        digest.update(b"cluster job v2: edges and recurrence")
        return digest.hexdigest()[:16]


def qc_mask(
    totals: np.ndarray,
    expressed: np.ndarray,
    *,
    min_counts: int = 1000,
    max_counts: int = 100_000,
    trim: float | None = 0.9,
    min_genes: int = 500,
) -> tuple[np.ndarray, dict]:
    """Which cells pass QC, from their total UMI and expressed genes; and what each rule removed.

    The rules apply in order: total UMI in [min_counts, max_counts], then the middle ``trim``
    fraction of the remaining cells by total UMI (``None``: off), then >= ``min_genes`` genes.
    """
    keep = np.ones(totals.size, dtype=bool)
    report = {"input": int(totals.size)}
    for rule, fails in (
        ("below_min_counts", totals < min_counts),
        ("above_max_counts", totals > max_counts),
    ):
        report[rule] = int((keep & fails).sum())
        keep &= ~fails
    report["outside_middle_fraction"] = 0
    if trim is not None and keep.any():
        if not 0.0 < trim <= 1.0:
            raise ValueError(f"trim must be in (0, 1], not {trim}")
        low, high = np.quantile(totals[keep], [(1 - trim) / 2, 1 - (1 - trim) / 2])
        outside = keep & ((totals < low) | (totals > high))
        report["outside_middle_fraction"] = int(outside.sum())
        keep &= ~outside
    report["below_min_genes"] = int((keep & (expressed < min_genes)).sum())
    keep &= expressed >= min_genes
    report["kept"] = int(keep.sum())
    return keep, report


def quality_control(
    adata,
    *,
    min_counts: int = 1000,
    max_counts: int = 100_000,
    trim: float | None = 0.9,
    min_genes: int = 500,
):
    """Filter cells by total UMI and expressed genes; report what each rule removed.

    Parameters
    ----------
    adata
        Raw counts, cells x genes.
    min_counts, max_counts
        Total UMI range (inclusive).
    trim
        Keep the middle fraction of the remaining cells by total UMI (``None``: off).
    min_genes
        Minimum number of expressed genes.

    Returns
    -------
    The filtered AnnData (a copy) and a report ``{"input", "below_min_counts",
    "above_max_counts", "outside_middle_fraction", "below_min_genes", "kept"}``.
    """
    X = adata.X
    values = X.data if sp.issparse(X) else np.asarray(X).ravel()
    sample = values[:1_000_000]
    if np.any(sample != np.round(sample)):
        warnings.warn(
            "the matrix has non-integer values: QC thresholds and normalization assume raw UMI "
            "counts (pass counts, e.g. a 'counts' layer)",
            UserWarning,
            stacklevel=2,
        )
    totals = np.asarray(X.sum(axis=1)).ravel()
    expressed = np.asarray((X > 0).sum(axis=1)).ravel()
    keep, report = qc_mask(
        totals,
        expressed,
        min_counts=min_counts,
        max_counts=max_counts,
        trim=trim,
        min_genes=min_genes,
    )
    return adata[keep].copy(), report


def normalize(counts):
    """log1p of counts scaled to 1e6 per cell (float64; sparse input stays sparse CSR)."""
    if sp.issparse(counts):
        X = sp.csr_matrix(counts, dtype=np.float64, copy=True)
        totals = np.asarray(X.sum(axis=1)).ravel()
        totals[totals == 0] = 1.0
        X = sp.csr_matrix(sp.diags(1e6 / totals) @ X)
        X.data = np.log1p(X.data)
        return X
    X = np.asarray(counts, dtype=np.float64)
    totals = X.sum(axis=1, keepdims=True)
    totals[totals == 0] = 1.0
    return np.log1p(X / totals * 1e6)


def to_dense(X) -> np.ndarray:
    """A dense array of a sparse or dense matrix."""
    return X.toarray() if sp.issparse(X) else np.asarray(X)


def pca_coordinates(profiles, *, seed: int, n_comps: int = 30) -> np.ndarray:
    """PCA coordinates of normalized profiles (sparse or dense), seeded."""
    import anndata as ad
    import scanpy as sc

    work = ad.AnnData(profiles.astype(np.float32))
    n_comps = int(min(n_comps, profiles.shape[0] - 1, profiles.shape[1] - 1))
    sc.pp.pca(work, n_comps=n_comps, random_state=seed)
    return work.obsm["X_pca"]


def leiden_clusters(profiles, *, resolution: float, seed: int, coords=None) -> np.ndarray:
    """Leiden clusters (leidenalg) of normalized profiles on a PCA neighbour graph, as strings.

    Clusters are numbered by decreasing size; the same seed gives the same clusters. ``coords``:
    PCA coordinates already computed for these profiles.
    """
    import anndata as ad
    import igraph
    import leidenalg
    import scanpy as sc

    n_cells = profiles.shape[0]
    if n_cells < 10:
        return np.zeros(n_cells, dtype=int).astype(str)
    if coords is None:
        coords = pca_coordinates(profiles, seed=seed)
    work = ad.AnnData(obsm={"X_pca": coords})
    sc.pp.neighbors(work, n_neighbors=min(15, n_cells - 1), use_rep="X_pca", random_state=seed)
    graph = work.obsp["connectivities"].tocoo()
    network = igraph.Graph(n=n_cells, edges=list(zip(graph.row, graph.col)), directed=True)
    partition = leidenalg.find_partition(
        network,
        leidenalg.RBConfigurationVertexPartition,
        weights=graph.data.tolist(),
        resolution_parameter=resolution,
        seed=seed,
        n_iterations=-1,
    )
    return np.asarray(partition.membership).astype(str)


def merge_small_clusters(labels: np.ndarray, coords: np.ndarray, min_size: int) -> np.ndarray:
    """Merge every cluster under ``min_size`` cells into the cluster with the nearest centroid.

    The smallest cluster is merged first, and centroids are recomputed after each merge, until
    every cluster holds ``min_size`` cells or one cluster is left. Clusters are renumbered
    ``"0", "1", ...`` by decreasing size (ties by their first cell), so the result depends only
    on the partition.
    """
    _, codes = np.unique(labels, return_inverse=True)
    members = [np.flatnonzero(codes == c) for c in range(codes.max() + 1)]
    while len(members) > 1:
        sizes = np.array([m.size for m in members])
        smallest = int(np.argmin(sizes))
        if sizes[smallest] >= min_size:
            break
        centroids = np.array([coords[m].mean(axis=0) for m in members])
        distance = np.linalg.norm(centroids - centroids[smallest], axis=1)
        distance[smallest] = np.inf
        nearest = int(np.argmin(distance))
        members[nearest] = np.sort(np.concatenate([members[nearest], members[smallest]]))
        del members[smallest]
    members.sort(key=lambda m: (-m.size, m[0]))
    merged = np.empty(labels.size, dtype=object)
    for number, cells in enumerate(members):
        merged[cells] = str(number)
    return merged.astype(str)


def type_clusters(profiles, *, resolution: float, min_size: int, seed: int) -> np.ndarray:
    """Clusters of one cell type's cells, each of at least ``min_size`` cells.

    A type with fewer than ``2 * min_size`` cells is one cluster; a larger one is split by
    Leiden at ``resolution`` and its clusters under ``min_size`` are merged into their nearest
    neighbours (``merge_small_clusters``), so no cell of the type is left out.
    """
    n_cells = profiles.shape[0]
    if n_cells < 2 * min_size:
        return np.zeros(n_cells, dtype=int).astype(str)
    coords = pca_coordinates(profiles, seed=seed)
    labels = leiden_clusters(profiles, resolution=resolution, seed=seed, coords=coords)
    return merge_small_clusters(labels, coords, min_size)


def pool_metacells(counts, coords: np.ndarray, rows: np.ndarray, k: int):
    """Counts of the cells ``rows``, each summed with its k nearest neighbours among all cells.

    Parameters
    ----------
    counts
        Raw counts of a cluster's cells (sparse or dense).
    coords
        Their PCA coordinates.
    rows
        The cells to pool (positions in ``counts``).
    k
        Neighbours per cell (capped at the cluster size - 1).
    """
    from sklearn.neighbors import NearestNeighbors

    k = min(k, counts.shape[0] - 1)
    if k < 1:
        return counts[rows]
    _, neighbours = NearestNeighbors(n_neighbors=k + 1).fit(coords).kneighbors(coords[rows])
    pooling = sp.csr_matrix(
        (np.ones(neighbours.size), neighbours.ravel(), np.arange(0, neighbours.size + 1, k + 1)),
        shape=(len(rows), counts.shape[0]),
    )
    return pooling @ counts


def tested_pairs(
    detected: Sequence[Sequence[str]], regulators: Sequence[str]
) -> tuple[pd.Index, np.ndarray, np.ndarray, int]:
    """Which pairs the clusters tested: cluster c tested (r, t), r != t, when both are among its
    detected (non-constant) genes, because ARACNe drops the others before testing.

    Returns
    -------
    ``genes`` (the union of the detected genes), ``present`` (clusters x genes, True where a
    cluster detected a gene), the number of pairs each cluster tested, and the number of pairs
    tested by at least one cluster. Counted over gene patterns (which clusters detected a gene),
    never over all pairs, so memory stays clusters x genes.
    """
    genes = pd.Index(sorted(set().union(*map(set, detected))))
    present = np.zeros((len(detected), genes.size), dtype=bool)
    for c, cluster_genes in enumerate(detected):
        present[c, genes.get_indexer(list(cluster_genes))] = True
    is_regulator = genes.isin(list(map(str, regulators)))
    n_regs = present[:, is_regulator].sum(axis=1)
    per_cluster = n_regs * (present.sum(axis=1) - 1)  # a gene is not its own target
    patterns, counts = np.unique(present.T, axis=0, return_counts=True)
    reg_patterns, reg_counts = np.unique(present[:, is_regulator].T, axis=0, return_counts=True)
    overlap = (reg_patterns.astype(np.int64) @ patterns.T.astype(np.int64)) > 0
    anywhere = int(reg_counts @ overlap @ counts) - int(is_regulator.sum())
    return genes, present, per_cluster, anywhere


def consensus(
    networks: Sequence[pd.DataFrame],
    detected: Sequence[Sequence[str]],
    regulators: Sequence[str],
    *,
    fdr: float = 0.05,
) -> pd.DataFrame:
    """Edges recurring across cluster networks more often than the networks' densities explain.

    Cluster c tested only the pairs of the genes it detected (``tested_pairs``); its network's
    edge density is d_c = edges / pairs it tested. Under the null an edge is in network c by
    chance with probability d_c, independently across the clusters that tested it, so its
    recurrence count follows the Poisson-binomial distribution of those clusters' densities: the
    binomial test with each cluster's own density. Benjamini-Hochberg runs over every pair tested
    by at least one cluster (pairs never seen have p = 1).

    Parameters
    ----------
    networks
        The cluster networks of one cell type (``regulator``, ``target``, ``mi``).
    detected
        Per cluster, the genes its ARACNe run tested (those not constant in the cluster).
    regulators
        Candidate regulator ids.
    fdr
        Benjamini-Hochberg level.

    Returns
    -------
    ``regulator``, ``target``, ``mi`` (mean over the clusters with the edge), ``count``,
    ``tested`` (clusters that tested the pair), ``pvalue``, ``qvalue`` of the kept edges, by
    decreasing count then MI. ``attrs``: ``tested_pairs`` (the size of the BH family), ``floor``
    (the p-value of an edge found in every cluster) and ``in_every_cluster`` (how many were).
    """
    genes, present, per_cluster, family = tested_pairs(detected, regulators)
    density = np.array([len(net) for net in networks]) / np.maximum(per_cluster, 1)
    pooled = pd.concat([net[["regulator", "target", "mi"]] for net in networks])
    edges = (
        pooled.groupby(["regulator", "target"], sort=True)["mi"]
        .agg(mi="mean", count="size")
        .reset_index()
    )
    regulator_detected = present[:, genes.get_indexer(edges["regulator"])]
    testers = (regulator_detected & present[:, genes.get_indexer(edges["target"])]).T
    edges["tested"] = testers.sum(axis=1)
    pvalue = np.ones(len(edges))
    patterns, which = np.unique(testers, axis=0, return_inverse=True)
    for number, pattern in enumerate(patterns):  # one Poisson-binomial per set of testers
        pmf = np.array([1.0])
        for d in density[pattern]:
            pmf = np.convolve(pmf, [1.0 - d, d])
        at_least = np.cumsum(pmf[::-1])[::-1]  # at_least[k] = P(count >= k)
        rows = which.ravel() == number
        pvalue[rows] = at_least[edges["count"].to_numpy()[rows]]
    edges["pvalue"] = pvalue
    edges["qvalue"] = benjamini_hochberg(pvalue, family)
    kept = edges[edges["qvalue"] <= fdr]
    kept = kept.sort_values(["count", "mi"], ascending=False).reset_index(drop=True)
    kept.attrs["tested_pairs"] = family
    kept.attrs["floor"] = float(np.prod(density))  # p of an edge found in every cluster
    kept.attrs["in_every_cluster"] = int((edges["count"] == len(networks)).sum())
    return kept


def benjamini_hochberg(pvalues: np.ndarray, n_tests: int) -> np.ndarray:
    """BH q-values of ``pvalues`` in a family of ``n_tests`` tests whose others have p = 1.

    The untested rest never lowers a q-value (p = 1 ranks last), so the family size is all
    they change, and they are never materialized.
    """
    order = np.argsort(pvalues, kind="stable")
    ranks = np.arange(1, pvalues.size + 1)
    scaled = pvalues[order] * n_tests / ranks
    qvalues = np.empty_like(scaled)
    qvalues[order] = np.minimum.accumulate(scaled[::-1])[::-1]
    return np.minimum(qvalues, 1.0)


def run_cluster_job(job: ClusterJob) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ARACNe on one cluster's profiles: its network and the recurrence of every pair it saw.

    A plain function of its argument: it runs here or on a Dask worker.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # absent regulators / constant genes
        # messages name the cluster (the command line puts the file for <AnnData>)
        where = f"<AnnData>: cell type {job.cell_type!r}, cluster {job.cluster}"
        result = aracne(job.X, job.genes, list(job.regulators), source=where, **job.options)
    return result.edges, result.recurrence


def _save_edges(edges: pd.DataFrame, path: Path) -> None:
    """Write an edge table losslessly (floats as repr), atomically."""
    with atomic_write(path) as handle:
        edges.to_csv(handle, sep="\t", index=False, na_rep="nan")


def _load_edges(path: Path) -> pd.DataFrame:
    """Read what ``_save_edges`` wrote, bit for bit (gene ids stay text whatever they look like)."""
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    for column in table.columns.drop(["regulator", "target"]):
        table[column] = table[column].astype(np.int64 if column == "count" else np.float64)
    return table


def _why_few_edges(entry: dict, n_edges: int) -> str:
    """Why a type's network is small: its cells, detected genes and the signal its runs saw."""
    clusters = entry["clusters"].values()
    detected = min(info["detected_genes"] for info in clusters)
    per_resample = max(info["edges_per_resample"] for info in clusters)
    if per_resample < 1:
        signal = "almost no pair passed the MI threshold in its resamples (weak signal)"
    else:
        signal = (
            f"its resampled networks held up to {per_resample:g} edges each, "
            "but few recurred often enough to be significant"
        )
    sizes = ", ".join(str(info["cells"]) for info in clusters)
    return (
        f"{n_edges} edges from {entry['cells']} cells in {len(entry['clusters'])} cluster(s) "
        f"({sizes} cells), at least {detected} detected genes per cluster; {signal}"
    )


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def celltype_networks(
    adata,
    regulators: Sequence[str],
    *,
    store=None,
    cell_type_key: str | None = None,
    min_counts: int = 1000,
    max_counts: int = 100_000,
    trim: float | None = 0.9,
    min_genes: int = 500,
    resolution: float = 1.0,
    cluster_cells: int = CLUSTER_CELLS,
    max_cells: int = MAX_CELLS,
    min_cells: int = 50,
    metacells: int | None = None,
    resamples: int = RESAMPLES,
    fdr: float = 0.05,
    estimator: str = "apmi",
    aracne_options: dict | None = None,
    keep_cluster_networks: bool = False,
    allow_empty: bool = False,
    client=None,
    work_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    progress: bool = False,
    sources: Sequence[str] = (),
) -> CelltypeResult:
    """One consensus regulatory network per cell type (see the module docstring).

    Parameters
    ----------
    adata
        Raw counts, cells x genes.
    regulators
        Candidate regulator ids.
    store
        A writable ``GraphStore`` to receive the consensus networks (kind ``consensus``, named
        after the cell type); ``None`` keeps them in memory only.
    cell_type_key
        ``obs`` column of cell types; ``None`` uses Leiden clusters of all cells as types.
    min_counts, max_counts, trim, min_genes
        QC, see ``quality_control``.
    resolution
        Leiden resolution within each cell type.
    cluster_cells
        A type is split only into clusters of at least this many cells (and at least
        ``min_cells``): smaller Leiden clusters are merged into their nearest one, and a type
        with fewer than twice as many cells is one cluster (``type_clusters``).
    max_cells
        Profiles per cluster at most (a seeded sample).
    min_cells
        Cell types with fewer cells are skipped and listed with their sizes; every other type
        gets a network, stored even when it has no edge.
    metacells
        Pool each cell with its k nearest neighbours within its cluster (``None``: off).
    resamples
        ARACNe resamples per cluster network.
    fdr
        Consensus Benjamini-Hochberg level.
    estimator
        MI estimator of the cluster networks: ``"apmi"`` (ARACNe's adaptive partitioning) or
        ``"gcmi"`` (Gaussian-copula MI); see ``netinfer.aracne.aracne``.
    aracne_options
        More ``netinfer.aracne.aracne`` options for the cluster networks.
    keep_cluster_networks
        Also store each cluster network (kind ``grn``, named ``<type>.cluster<id>``).
    allow_empty
        Store the networks even when none of them has an edge; otherwise that is an
        ``EmptyResultError`` (an ``InputError``) and nothing is stored.
    client
        A ``distributed.Client`` to run the cluster jobs on.
    work_dir
        Folder where finished cluster networks are kept, so that a rerun resumes.
    seed
        Seed of clustering, sampling and ARACNe.
    progress
        Show a progress bar over cluster jobs.
    sources
        Input files to record with the stored networks.

    Returns
    -------
    ``CelltypeResult`` with ``networks`` (cell type -> consensus edges), ``clusters``
    ((cell type, cluster) -> ARACNe edges) and ``report``.
    """
    started = time.perf_counter()
    check_estimator(estimator)  # before QC and clustering, not in the first cluster job
    _, labelled = validate_counts(
        adata, "<AnnData>", command="celltype_networks", cell_type_key=cell_type_key
    )
    if not labelled.all():  # cells without a label are left out (validate warned)
        adata = adata[labelled]
    genes = adata.var_names.astype(str).to_numpy()
    present = [r for r in dict.fromkeys(map(str, regulators)) if r in set(genes)]
    if not present:
        raise InputError(
            f"<AnnData>: none of the {len(regulators)} regulators is among the "
            f"{len(genes)} genes (e.g. regulators {', '.join(map(str, list(regulators)[:3]))}; "
            f"genes {', '.join(genes[:3])})"
        )
    cells, qc = quality_control(
        adata, min_counts=min_counts, max_counts=max_counts, trim=trim, min_genes=min_genes
    )
    require_cells_after_qc(qc, "<AnnData>")
    report = {"qc": qc, "regulators": len(present), "genes": int(len(genes)), "cell_types": {}}
    profiles = normalize(cells.X)
    if cell_type_key is None:
        labels = leiden_clusters(profiles, resolution=resolution, seed=seed)
        types = np.array([f"leiden_{label}" for label in labels], dtype=object)
    else:
        types = cells.obs[cell_type_key].astype(str).to_numpy()
    options = {
        "resamples": resamples,
        "seed": seed,
        "estimator": estimator,
        **(aracne_options or {}),
    }
    if client is not None:
        options.setdefault("threads", 1)  # one job per worker thread

    jobs, too_small, detected, members_of = [], {}, {}, {}

    def cluster_job(cell_type: str, cluster: str, idx: np.ndarray, info: dict) -> ClusterJob:
        """The ARACNe job of cells ``idx`` (at most ``max_cells`` of them, a seeded sample)."""
        stream = zlib.crc32(f"{cell_type}\t{cluster}".encode())
        rng = np.random.default_rng(np.random.SeedSequence([seed, stream]))
        rows = np.arange(idx.size)
        if idx.size > max_cells:
            rows = np.sort(rng.choice(idx.size, size=max_cells, replace=False))
        if metacells:  # pool with neighbours from the whole cluster, not only the sample
            coords = pca_coordinates(profiles[idx], seed=seed)
            X = to_dense(normalize(pool_metacells(cells.X[idx], coords, rows, metacells)))
        else:
            X = to_dense(profiles[idx[rows]])
        info["profiles"] = int(rows.size)
        informative = np.ptp(X, axis=0) > 0  # the genes ARACNe keeps and tests
        info["detected_genes"] = int(informative.sum())
        detected[(cell_type, cluster)] = genes[informative]
        return ClusterJob(cell_type, cluster, X, genes, tuple(present), options)

    for cell_type in sorted(set(types)):
        members = members_of[cell_type] = np.flatnonzero(types == cell_type)
        entry = report["cell_types"][cell_type] = {"cells": int(members.size), "clusters": {}}
        if members.size < min_cells:
            entry["skipped"] = f"{members.size} cells, fewer than min_cells={min_cells}"
            too_small[cell_type] = int(members.size)
            continue
        labels = type_clusters(
            profiles[members],
            resolution=resolution,
            min_size=max(min_cells, cluster_cells),
            seed=seed,
        )
        for cluster in sorted(map(str, set(labels)), key=lambda c: (len(c), c)):
            info = entry["clusters"][cluster] = {"cells": int((labels == cluster).sum())}
            jobs.append(cluster_job(cell_type, cluster, members[labels == cluster], info))
    if too_small:
        report["too_small"] = too_small
        warnings.warn(
            f"{len(too_small)} cell type(s) have fewer than min_cells={min_cells} cells and get "
            "no network: " + "; ".join(f"{t} ({n} cells)" for t, n in too_small.items()),
            UserWarning,
            stacklevel=2,
        )

    cluster_networks = _run_jobs(jobs, client=client, work_dir=work_dir, progress=progress)
    runs_per_cluster = max(1, options["resamples"])

    def record(job_list, infos) -> None:
        for job in job_list:
            edges, seen, status = cluster_networks[(job.cell_type, job.cluster)]
            info = infos(job)
            info["edges"] = int(len(edges))
            info["edges_per_resample"] = round(float(seen["count"].sum()) / runs_per_cluster, 1)
            info["status"] = status

    def type_network(keys):
        """The network of one type from its cluster networks, and the pairs they tested."""
        nets = [cluster_networks[key][0] for key in keys]
        if len(nets) == 1:
            network = nets[0][["regulator", "target", "mi"]].assign(
                count=1, tested=1, pvalue=nets[0]["pvalue"], qvalue=np.nan
            )
            return network, tested_pairs([detected[keys[0]]], present)[3]
        network = consensus(nets, [detected[key] for key in keys], present, fdr=fdr)
        return network, network.attrs["tested_pairs"]

    record(jobs, lambda job: report["cell_types"][job.cell_type]["clusters"][job.cluster])
    keys_of, networks, whole_jobs = {}, {}, []
    for cell_type, entry in report["cell_types"].items():
        if "skipped" in entry:
            continue
        keys = keys_of[cell_type] = [(cell_type, c) for c in entry["clusters"]]
        network, n_tested = networks[cell_type] = type_network(keys)
        if len(keys) == 1:
            entry["note"] = "one cluster: its ARACNe network is the type's network"
            continue
        # every p-value is >= the floor, so BH rejects only at ranks >= floor * pairs / fdr
        needed = int(np.ceil(network.attrs["floor"] * n_tested / fdr))
        if needed > network.attrs["in_every_cluster"]:
            # the consensus cannot accept any edge, whatever the data: the type's network is
            # ARACNe on the whole type instead (its own resampling test), not an empty one
            entry["consensus_limit"] = (
                f"with {len(keys)} clusters an edge found in all of them has p = "
                f"{network.attrs['floor']:.2g}, and BH at {fdr} over {n_tested} pairs accepts "
                f"edges only when at least {needed} have p-values about that small; "
                f"{network.attrs['in_every_cluster']} were found in every cluster"
            )
            entry["note"] = (
                "the consensus of its clusters cannot reach significance (consensus_limit): "
                "the type's network is ARACNe on the whole type"
            )
            whole = entry["whole_type"] = {"cells": entry["cells"]}
            whole_jobs.append(cluster_job(cell_type, WHOLE_TYPE, members_of[cell_type], whole))
    if whole_jobs:
        cluster_networks.update(
            _run_jobs(whole_jobs, client=client, work_dir=work_dir, progress=progress)
        )
        record(whole_jobs, lambda job: report["cell_types"][job.cell_type]["whole_type"])
        for job in whole_jobs:
            keys_of[job.cell_type] = [(job.cell_type, WHOLE_TYPE)]
            networks[job.cell_type] = type_network(keys_of[job.cell_type])
    for cell_type, (network, n_tested) in list(networks.items()):
        entry = report["cell_types"][cell_type]
        outputs = [cluster_networks[key] for key in keys_of[cell_type]]
        exclusion, mixture = exclusion_probabilities(
            network,
            [output[1] for output in outputs],
            n_trials=runs_per_cluster * len(outputs),
            n_pairs=max(1, n_tested),
        )
        networks[cell_type] = network.assign(exclusion=exclusion)
        entry["consensus_edges"] = int(len(network))
        entry["tested_pairs"] = n_tested
        entry["recurrence_mixture"] = {
            "n_trials": mixture.n_trials,
            "pi0": mixture.pi0,
            "p0": mixture.p0,
            "p1": mixture.p1,
        }
        if len(network) < len(present):  # fewer edges than regulators: say why
            entry["few_edges"] = _why_few_edges(entry, len(network))
            if "consensus_limit" in entry:
                entry["few_edges"] += f"; {entry['consensus_limit']}, so {entry['note']}"
    few = {t: e["few_edges"] for t, e in report["cell_types"].items() if "few_edges" in e}
    if few:
        warnings.warn(
            f"{len(few)} cell type network(s) have fewer edges than regulators: "
            + "; ".join(f"{t}: {why}" for t, why in few.items()),
            UserWarning,
            stacklevel=2,
        )
    if not allow_empty and not any(len(network) for network in networks.values()):
        reasons = "; ".join(f"{t}: {why}" for t, why in few.items()) or (
            f"no cell type has min_cells={min_cells} cells"
        )
        raise EmptyResultError(
            f"<AnnData>: no cell type network has an edge, nothing was stored ({reasons}). "
            "Allow an empty result with --allow-empty (allow_empty=True)"
        )
    clusters = {key: value[0] for key, value in cluster_networks.items()}
    if store is not None:
        params = {
            "cell_type_key": cell_type_key,
            "min_counts": min_counts,
            "max_counts": max_counts,
            "trim": trim,
            "min_genes": min_genes,
            "resolution": resolution,
            "cluster_cells": cluster_cells,
            "max_cells": max_cells,
            "min_cells": min_cells,
            "metacells": metacells,
            "resamples": resamples,
            "fdr": fdr,
            "estimator": options["estimator"],
            "aracne_options": aracne_options,
            "seed": seed,
        }
        _store_networks(store, networks, clusters, report, keep_cluster_networks, sources, params)
    report["seconds"] = round(time.perf_counter() - started, 2)
    return CelltypeResult(networks=networks, clusters=clusters, report=report)


def _run_jobs(jobs, *, client, work_dir, progress) -> dict:
    """Cluster networks by (cell type, cluster), with a status: done, resumed."""
    results = {}
    folder = Path(work_dir) if work_dir is not None else None
    todo = []
    for job in jobs:
        path = (
            folder / f"{_safe(job.cell_type)}__{_safe(job.cluster)}__{job.key}.tsv.gz"
            if folder
            else None
        )
        if path is not None and path.exists():  # written last, so its twin is complete
            seen = _load_edges(path.with_name(path.name.replace(".tsv.gz", ".seen.tsv.gz")))
            results[(job.cell_type, job.cluster)] = (_load_edges(path), seen, "resumed")
        else:
            todo.append((job, path))
    bar = tqdm(
        total=len(jobs),
        initial=len(results),
        desc="cluster networks",
        unit="net",
        disable=not progress,
    )

    def finish(job, path, output) -> None:
        edges, seen = output
        if path is not None:  # atomic writes, the network last: a killed run leaves no half
            path.parent.mkdir(parents=True, exist_ok=True)
            _save_edges(seen, path.with_name(path.name.replace(".tsv.gz", ".seen.tsv.gz")))
            _save_edges(edges, path)
        results[(job.cell_type, job.cluster)] = (edges, seen, "done")
        bar.update()

    with bar:
        if client is None:
            for job, path in todo:
                finish(job, path, run_cluster_job(job))
        else:
            from distributed import as_completed

            futures = {
                client.submit(run_cluster_job, job, pure=False): (job, path) for job, path in todo
            }
            for future in as_completed(futures):
                finish(*futures[future], future.result())
    return results


def _store_networks(store, networks, clusters, report, keep_clusters, sources, params) -> None:
    from netinfer.store import GraphStore

    owned = not isinstance(store, GraphStore)
    if owned:
        store = GraphStore.open(store, mode="a")
    try:
        for cell_type, edges in networks.items():
            name = cell_type.replace("/", "_")  # store names cannot hold "/"
            store.add_graph(
                name,
                edges,
                kind="consensus",
                cell_type=cell_type,
                params={**params, "report": report["cell_types"][cell_type]},
                sources=sources,
                overwrite=True,
            )
            report["cell_types"][cell_type]["graph"] = name
        if keep_clusters:
            for (cell_type, cluster), edges in clusters.items():
                store.add_graph(
                    f"{cell_type.replace('/', '_')}.cluster{cluster}",
                    edges,
                    kind="grn",
                    cell_type=cell_type,
                    params=params,
                    sources=sources,
                    overwrite=True,
                )
    finally:
        if owned:
            store.close()


def format_report(report: dict) -> str:
    """A readable summary of a ``celltype_networks`` report."""
    qc = report["qc"]
    lines = [
        f"QC: {qc['input']} cells -> {qc['kept']} kept (below min counts {qc['below_min_counts']}, "
        f"above max counts {qc['above_max_counts']}, outside middle fraction "
        f"{qc['outside_middle_fraction']}, below min genes {qc['below_min_genes']})",
        f"{report['regulators']} regulators, {report['genes']} genes",
    ]
    for cell_type, entry in report["cell_types"].items():
        if "skipped" in entry:
            lines.append(f"{cell_type}: {entry['cells']} cells, skipped ({entry['skipped']})")
            continue
        parts = [
            f"{cluster}: {info['cells']} cells, {info['profiles']} profiles, {info['edges']} edges"
            + (" (resumed)" if info["status"] == "resumed" else "")
            for cluster, info in entry["clusters"].items()
        ]
        if "whole_type" in entry:
            whole = entry["whole_type"]
            parts.append(f"whole type: {whole['profiles']} profiles, {whole['edges']} edges")
        note = f"; {entry['note']}" if "note" in entry else ""
        few = f"\n  few edges: {entry['few_edges']}" if "few_edges" in entry else ""
        lines.append(
            f"{cell_type}: {entry['cells']} cells, {len(entry['clusters'])} cluster(s) "
            f"[{'; '.join(parts)}] -> consensus network {entry['consensus_edges']} edges{note}{few}"
        )
    if "seconds" in report:
        lines.append(f"time: {report['seconds']:.1f} s")
    return "\n".join(lines)
