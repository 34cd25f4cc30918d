"""Cell-type networks from single-cell counts, as the GREmLN paper builds them.

counts -> QC and normalization -> Leiden clusters within each cell type -> ARACNe in every cluster
-> per cell type, a consensus of its cluster networks -> the graph store.

- **QC** (the paper's defaults, all parameters): total UMI between ``min_counts`` and
  ``max_counts``, then the middle ``trim`` fraction by total UMI, then at least ``min_genes``
  expressed genes; each cell normalized to 1e6 total and log1p.
- **Clusters** within each cell type: PCA, neighbours and Leiden (leidenalg), seeded. Optional
  metacells pool each cell's counts with its k nearest neighbours inside its cluster before
  normalizing. Use them when cells are shallow (a few thousand UMI or less): ARACNe's ranks then
  suffer from dropout ties. The pooled profiles overlap, so they are not independent samples;
  the consensus across clusters, not the per-cluster p-values, carries the statistics.
- **Per-cluster ARACNe** on at most ``max_cells`` profiles (a seeded sample), with either MI
  estimator (``estimator``); clusters under ``min_cells`` are skipped and recorded.
- **Consensus**: an edge's recurrence k over a type's C cluster networks is tested against the
  chance of recurring that often given each cluster network's edge density (a binomial test with
  per-cluster densities: Poisson-binomial); Benjamini-Hochberg over all regulator-target pairs
  (statsmodels); edges with q <= ``fdr`` are kept with k, p, q and their mean MI. A type with one
  usable cluster keeps that cluster's network (and the report says so). With C clusters the
  smallest p-value is the product of the densities, so two clusters of dense networks can leave
  nothing significant: more clusters (a higher ``resolution``) or sparser networks help.
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


def leiden_clusters(profiles, *, resolution: float, seed: int) -> np.ndarray:
    """Leiden clusters (leidenalg) of normalized profiles on a PCA neighbour graph, as strings.

    Clusters are numbered by decreasing size; the same seed gives the same clusters.
    """
    import anndata as ad
    import igraph
    import leidenalg
    import scanpy as sc

    n_cells = profiles.shape[0]
    if n_cells < 10:
        return np.zeros(n_cells, dtype=int).astype(str)
    work = ad.AnnData(obsm={"X_pca": pca_coordinates(profiles, seed=seed)})
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


def consensus(
    networks: Sequence[pd.DataFrame], *, n_possible: int, fdr: float = 0.05
) -> pd.DataFrame:
    """Edges recurring across cluster networks more often than the networks' densities explain.

    Under the null an edge is in cluster network c by chance with probability d_c, that network's
    edge density (edges / ``n_possible``), independently across clusters, so its recurrence count
    follows the Poisson-binomial distribution of (d_1, ..., d_C): the binomial test with each
    cluster's own density, which matters when cluster networks differ in size.

    Parameters
    ----------
    networks
        The cluster networks of one cell type (``regulator``, ``target``, ``mi``).
    n_possible
        Number of regulator-target pairs each network could contain.
    fdr
        Benjamini-Hochberg level over all ``n_possible`` pairs.

    Returns
    -------
    ``regulator``, ``target``, ``mi`` (mean over the clusters with the edge), ``count``,
    ``pvalue``, ``qvalue`` of the kept edges, by decreasing count then MI.
    """
    from statsmodels.stats.multitest import multipletests

    pmf = np.array([1.0])
    for network in networks:
        density = len(network) / n_possible
        pmf = np.convolve(pmf, [1.0 - density, density])
    at_least = np.cumsum(pmf[::-1])[::-1]  # at_least[k] = P(count >= k)
    pooled = pd.concat([net[["regulator", "target", "mi"]] for net in networks])
    edges = (
        pooled.groupby(["regulator", "target"], sort=True)["mi"]
        .agg(mi="mean", count="size")
        .reset_index()
    )
    edges["pvalue"] = at_least[edges["count"].to_numpy()]
    unseen = np.ones(max(0, n_possible - len(edges)))  # pairs never seen: p = 1, still tests
    qvalues = multipletests(np.concatenate([edges["pvalue"], unseen]), method="fdr_bh")[1]
    edges["qvalue"] = qvalues[: len(edges)]
    kept = edges[edges["qvalue"] <= fdr]
    return kept.sort_values(["count", "mi"], ascending=False).reset_index(drop=True)


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
    max_cells: int = 500,
    min_cells: int = 50,
    metacells: int | None = None,
    resamples: int = 20,
    fdr: float = 0.05,
    estimator: str = "apmi",
    aracne_options: dict | None = None,
    keep_cluster_networks: bool = False,
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
    max_cells
        Profiles per cluster at most (a seeded sample).
    min_cells
        Clusters (and cell types) with fewer cells are skipped and recorded.
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

    jobs, skipped = [], {}
    for cell_type in sorted(set(types)):
        members = np.flatnonzero(types == cell_type)
        entry = report["cell_types"][cell_type] = {"cells": int(members.size), "clusters": {}}
        if members.size < min_cells:
            entry["skipped"] = f"{members.size} cells, fewer than min_cells={min_cells}"
            skipped[cell_type] = f"{members.size} cells"
            continue
        if members.size < 2 * min_cells:  # splitting could only leave clusters under min_cells
            labels = np.zeros(members.size, dtype=int).astype(str)
        else:
            labels = leiden_clusters(profiles[members], resolution=resolution, seed=seed)
        for cluster in sorted(map(str, set(labels)), key=lambda c: (len(c), c)):
            idx = members[labels == cluster]
            info = entry["clusters"][cluster] = {"cells": int(idx.size)}
            if idx.size < min_cells:
                info["status"] = f"skipped: fewer than min_cells={min_cells}"
                skipped[f"{cell_type}, cluster {cluster}"] = f"{idx.size} cells"
                continue
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
            jobs.append(ClusterJob(cell_type, cluster, X, genes, tuple(present), options))
    if skipped:
        warnings.warn(
            f"skipped {len(skipped)} cell type(s) or cluster(s) with fewer than min_cells="
            f"{min_cells} cells: " + "; ".join(f"{t} ({why})" for t, why in skipped.items()),
            UserWarning,
            stacklevel=2,
        )

    cluster_networks = _run_jobs(jobs, client=client, work_dir=work_dir, progress=progress)
    networks = {}
    n_possible = len(present) * (len(genes) - 1)
    runs_per_cluster = max(1, options["resamples"])
    for job in jobs:
        info = report["cell_types"][job.cell_type]["clusters"][job.cluster]
        info["edges"] = int(len(cluster_networks[(job.cell_type, job.cluster)][0]))
        info["status"] = cluster_networks[(job.cell_type, job.cluster)][2]
    for cell_type, entry in report["cell_types"].items():
        outputs = [
            cluster_networks[(cell_type, c)]
            for c in entry["clusters"]
            if (cell_type, c) in cluster_networks
        ]
        nets = [output[0] for output in outputs]
        if not nets:
            entry.setdefault("skipped", "no cluster with enough cells")
            continue
        if len(nets) == 1:
            single = nets[0][["regulator", "target", "mi"]].assign(
                count=1, pvalue=nets[0]["pvalue"], qvalue=np.nan
            )
            networks[cell_type] = single
            entry["note"] = "one usable cluster: its network is kept as the consensus"
        else:
            networks[cell_type] = consensus(nets, n_possible=n_possible, fdr=fdr)
        exclusion, mixture = exclusion_probabilities(
            networks[cell_type],
            [output[1] for output in outputs],
            n_trials=runs_per_cluster * len(outputs),
            n_pairs=n_possible,
        )
        networks[cell_type]["exclusion"] = exclusion
        entry["consensus_edges"] = int(len(networks[cell_type]))
        entry["recurrence_mixture"] = {
            "n_trials": mixture.n_trials,
            "pi0": mixture.pi0,
            "p0": mixture.p0,
            "p1": mixture.p1,
        }
    clusters = {key: value[0] for key, value in cluster_networks.items()}
    if store is not None:
        params = {
            "cell_type_key": cell_type_key,
            "min_counts": min_counts,
            "max_counts": max_counts,
            "trim": trim,
            "min_genes": min_genes,
            "resolution": resolution,
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
        parts = []
        for cluster, info in entry["clusters"].items():
            if "edges" in info:
                parts.append(
                    f"{cluster}: {info['profiles']} profiles, {info['edges']} edges"
                    + (" (resumed)" if info["status"] == "resumed" else "")
                )
            else:
                parts.append(f"{cluster}: {info['cells']} cells, {info['status']}")
        note = f"; {entry['note']}" if "note" in entry else ""
        lines.append(
            f"{cell_type}: {entry['cells']} cells, {len(entry['clusters'])} clusters "
            f"[{'; '.join(parts)}] -> consensus {entry.get('consensus_edges', 0)} edges{note}"
        )
    if "seconds" in report:
        lines.append(f"time: {report['seconds']:.1f} s")
    return "\n".join(lines)
