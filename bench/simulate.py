"""Expression data with known regulatory networks, and scoring against them.

Used by ``bench/aracne_speed.py`` and ``bench/aracne_accuracy.py``; run it directly
to build (and cache) every benchmark data set and print a summary of each::

    python bench/simulate.py

Data sets
---------
``synthetic_grn``
    A random regulatory network simulated directly in NumPy. Regulators form a shallow
    DAG (roots, then regulators driven by roots, then regulators driven by those), so DPI
    has triangles to resolve. About 70% of all genes have at least one regulator; each
    regulated gene is a noisy, partly nonlinear (linear, tanh, Hill-like, exponential,
    AND-like product) function of 1-3 regulators. Expression is log-normal and positive.
    With ``nonmonotone > 0`` that fraction of the responses is U-shaped (z^2), a dependence
    that a copula correlation (GCMI) cannot see and adaptive partitioning can.
``krumsiek11``
    scanpy's simulated myeloid progenitors (640 cells x 11 genes) and the coupling list
    of the Boolean model it was simulated from.
``sergio_case``
    A sub-network of the RegNetwork human file shipped inside SERGIO (hubs plus some of
    their targets, cycles removed), simulated with SERGIO and its technical noise
    (outliers, library size, dropout), then library-size normalised to 1e4 and log1p'd.

Each generator returns ``(X, genes, regulators, truth)``: ``X`` is samples x genes
(float64), ``truth`` a DataFrame with columns ``regulator`` and ``target`` (directed).
SERGIO (GPL-3) is imported here only, never from ``netinfer``.

Scoring rule
------------
A predicted edge is a regulator->target pair. Because ARACNe cannot orient an edge
between two regulators, such edges are scored undirected: a predicted edge between two
regulators is correct if either direction is in the truth, and the two directions of
such a pair count as one edge, both in the prediction and in the truth. Edges from a
regulator to a non-regulator stay directed.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.resources
import json
import os
import pickle
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

CACHE_DIR = Path(os.environ.get("NETINFER_BENCH_CACHE", "/tmp/netinfer-bench-cache"))
"""Where simulated data sets are cached (override with ``NETINFER_BENCH_CACHE``)."""

SCORING_RULE = (
    "Edges are regulator->target. An edge between two regulators is scored undirected "
    "(correct if either direction is in the truth; both directions count once)."
)

Dataset = tuple[np.ndarray, list[str], list[str], pd.DataFrame]


# --------------------------------------------------------------------------------------
# caching
# --------------------------------------------------------------------------------------


def _cached(name: str, params: dict, build) -> Dataset:
    """Return a data set from the on-disk cache, building and storing it if missing.

    Parameters
    ----------
    name : str
        Generator name, part of the cache file name.
    params : dict
        JSON-serialisable parameters; their hash keys the cache entry.
    build : callable
        Zero-argument function that builds the data set.

    Returns
    -------
    tuple
        ``(X, genes, regulators, truth)``.
    """
    key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    path = CACHE_DIR / f"{name}-{key}.pkl"
    if path.exists():
        try:
            with path.open("rb") as fh:
                return pickle.load(fh)
        except Exception:  # noqa: BLE001 - a corrupt cache entry is simply rebuilt
            path.unlink(missing_ok=True)
    data = build()
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with tmp.open("wb") as fh:
        pickle.dump(data, fh, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(path)
    return data


# --------------------------------------------------------------------------------------
# synthetic network
# --------------------------------------------------------------------------------------


def _standardize(v: np.ndarray) -> np.ndarray:
    """Return ``v`` centred and scaled to unit variance (zeros if constant)."""
    sd = v.std()
    return (v - v.mean()) / sd if sd > 0 else np.zeros_like(v)


def _response(z: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Apply one monotone (possibly nonlinear) response of a target to a regulator.

    Parameters
    ----------
    z : ndarray
        Standardised regulator activity, one value per sample.
    kind : {"linear", "tanh", "hill", "exp", "square"}
        Shape of the response ("square" is U-shaped, the only non-monotone one).
    rng : numpy.random.Generator
        Source of the response's random parameters.

    Returns
    -------
    ndarray
        The response, same shape as ``z``.
    """
    if kind == "linear":
        return z
    if kind == "tanh":
        return np.tanh(rng.uniform(1.0, 2.0) * z)
    if kind == "hill":  # switch-like, threshold somewhere in the bulk of the distribution
        return 1.0 / (1.0 + np.exp(-rng.uniform(2.0, 4.0) * (z - rng.uniform(-0.7, 0.7))))
    if kind == "exp":
        return np.exp(rng.uniform(0.5, 0.9) * z)
    if kind == "square":
        return z * z
    raise ValueError(kind)


def _drive(
    parents: np.ndarray, rng: np.random.Generator, noise: float, nonmonotone: float = 0.0
) -> np.ndarray:
    """Latent activity of a gene driven by the given regulators' activities.

    Parameters
    ----------
    parents : ndarray, shape (n_parents, n_samples)
        Standardised activities of the gene's regulators.
    rng : numpy.random.Generator
        Random source.
    noise : float
        Standard deviation of the Gaussian noise added to the standardised signal.
    nonmonotone : float
        Probability that a response is U-shaped instead (no extra draws when 0, so the
        monotone data sets are unchanged).

    Returns
    -------
    ndarray
        Standardised latent activity of the gene.
    """
    kinds = rng.choice(
        ["linear", "tanh", "hill", "exp"], size=len(parents), p=[0.3, 0.3, 0.25, 0.15]
    )
    if nonmonotone > 0:
        kinds = np.where(rng.random(len(parents)) < nonmonotone, "square", kinds)
    terms = [
        rng.choice([-1.0, 1.0], p=[0.35, 0.65]) * _standardize(_response(z, k, rng))
        for z, k in zip(parents, kinds, strict=True)
    ]
    weights = list(rng.uniform(0.7, 1.2, size=len(terms)))
    if len(parents) >= 2 and rng.random() < 0.3:  # AND-like cooperative term
        a, b = rng.choice(len(parents), size=2, replace=False)
        gate = 1.0 / (1.0 + np.exp(-2.0 * parents[a])) / (1.0 + np.exp(-2.0 * parents[b]))
        terms.append(_standardize(gate))
        weights.append(rng.uniform(0.7, 1.2))
    signal = _standardize(np.dot(weights, np.asarray(terms)))
    return _standardize(signal + noise * rng.standard_normal(signal.shape))


def synthetic_grn(
    n_genes: int,
    n_samples: int,
    n_regulators: int,
    *,
    seed: int = 0,
    frac_regulated: float = 0.7,
    noise: tuple[float, float] = (0.5, 1.0),
    nonmonotone: float = 0.0,
    cache: bool = True,
) -> Dataset:
    """Simulate expression from a random regulatory network.

    Regulators are genes ``TF000``, ``TF001``, ...; the others are ``G00000``, ...
    About 40% of the regulators are roots (independent, standard normal activity); the
    rest get 1-2 parents among earlier regulators of depth at most 1, giving a shallow
    DAG of depth 2 among regulators. Every other gene gets, with the probability that
    makes ``frac_regulated`` of all genes regulated, 1-3 regulators (chosen with
    heavy-tailed preference, so some regulators are hubs), and is a weighted sum of
    monotone responses to them (plus, sometimes, an AND-like product term) plus noise.
    Unregulated genes are independent noise. Expression is
    ``exp(mu_g + s_g * activity)``: positive and log-normal.

    Parameters
    ----------
    n_genes : int
        Number of genes, regulators included.
    n_samples : int
        Number of samples.
    n_regulators : int
        Number of candidate regulators (the first genes).
    seed : int
        Seed; the output is a deterministic function of all arguments.
    frac_regulated : float
        Target fraction of all genes with at least one regulator.
    noise : tuple of float
        Range of the per-gene noise standard deviation relative to the unit-variance
        signal.
    nonmonotone : float
        Fraction of responses that are U-shaped (z^2) rather than monotone.
    cache : bool
        Read from / write to :data:`CACHE_DIR`.

    Returns
    -------
    X : ndarray, shape (n_samples, n_genes)
        Expression, float64, positive.
    genes : list of str
        Gene names, columns of ``X``.
    regulators : list of str
        Candidate regulator names (subset of ``genes``).
    truth : DataFrame
        Columns ``regulator``, ``target``: the direct regulatory edges.
    """
    if not 0 < n_regulators < n_genes:
        raise ValueError("need 0 < n_regulators < n_genes")
    params = dict(
        n_genes=n_genes,
        n_samples=n_samples,
        n_regulators=n_regulators,
        seed=seed,
        frac_regulated=frac_regulated,
        noise=list(noise),
        version=1,
    )
    if nonmonotone > 0:  # keyed only when used: the monotone data sets keep their cache
        params["nonmonotone"] = nonmonotone

    def build() -> Dataset:
        rng = np.random.default_rng(seed)
        regulators = [f"TF{i:03d}" for i in range(n_regulators)]
        genes = regulators + [f"G{i:05d}" for i in range(n_genes - n_regulators)]
        act = np.empty((n_genes, n_samples))
        depth = np.zeros(n_regulators, dtype=int)
        edges: list[tuple[int, int]] = []

        n_root = max(1, round(0.4 * n_regulators))
        act[:n_root] = rng.standard_normal((n_root, n_samples))
        for i in range(n_root, n_regulators):
            pool = np.flatnonzero(depth[:i] <= 1)
            k = min(len(pool), rng.choice([1, 2], p=[0.6, 0.4]))
            parents = rng.choice(pool, size=k, replace=False)
            depth[i] = depth[parents].max() + 1
            act[i] = _drive(act[parents], rng, rng.uniform(*noise), nonmonotone)
            edges += [(int(p), i) for p in parents]

        n_targets = n_genes - n_regulators
        p_reg = (frac_regulated * n_genes - (n_regulators - n_root)) / n_targets
        p_reg = float(np.clip(p_reg, 0.0, 1.0))
        pref = rng.lognormal(0.0, 0.8, size=n_regulators)
        pref /= pref.sum()
        for g in range(n_regulators, n_genes):
            if rng.random() >= p_reg:
                act[g] = rng.standard_normal(n_samples)
                continue
            k = rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2])
            parents = rng.choice(n_regulators, size=k, replace=False, p=pref)
            act[g] = _drive(act[parents], rng, rng.uniform(*noise), nonmonotone)
            edges += [(int(p), g) for p in parents]

        mu = rng.normal(2.0, 1.0, size=n_genes)
        scale = rng.uniform(0.3, 1.0, size=n_genes)
        X = np.exp(mu[:, None] + scale[:, None] * act).T.copy()
        truth = pd.DataFrame(
            [(genes[a], genes[b]) for a, b in edges], columns=["regulator", "target"]
        )
        return X, genes, regulators, truth

    return _cached("synthetic", params, build) if cache else build()


# --------------------------------------------------------------------------------------
# scanpy krumsiek11
# --------------------------------------------------------------------------------------


def _krumsiek11_model_text() -> str:
    """Return the text of scanpy's krumsiek11 model file (the one with the coupling list)."""
    root = importlib.resources.files("scanpy")
    for rel in (("sim_models", "krumsiek11.txt"), ("datasets", "krumsiek11.txt")):
        res = root.joinpath(*rel)
        if res.is_file():
            text = res.read_text()
            if "# coupling list:" in text:
                return text
    raise FileNotFoundError("no krumsiek11 model file with a coupling list in scanpy")


def krumsiek11_truth() -> pd.DataFrame:
    """Parse the krumsiek11 coupling list (``target regulator weight``) into edges.

    Returns
    -------
    DataFrame
        Columns ``regulator``, ``target``, ``weight``; self-loops dropped.
    """
    lines = _krumsiek11_model_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("# coupling list:"))
    rows = []
    for line in lines[start + 1 :]:
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        target, regulator, weight = parts[0], parts[1], float(parts[2])
        if target != regulator:
            rows.append((regulator, target, weight))
    return pd.DataFrame(rows, columns=["regulator", "target", "weight"])


def krumsiek11() -> Dataset:
    """scanpy's krumsiek11 simulation (640 cells x 11 genes) with its true network.

    Returns
    -------
    X : ndarray, shape (640, 11)
        Simulated expression as shipped (float64).
    genes : list of str
        Gene names.
    regulators : list of str
        Every gene that regulates another gene in the model.
    truth : DataFrame
        Columns ``regulator``, ``target``, ``weight``.
    """
    import scanpy as sc

    sc.settings.datasetdir = CACHE_DIR / "scanpy-data"  # scanpy mkdirs this; keep it out of cwd
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = sc.datasets.krumsiek11()
    X = np.asarray(adata.X, dtype=np.float64)
    genes = [str(g) for g in adata.var_names]
    truth = krumsiek11_truth()
    missing = set(truth.regulator) | set(truth.target)
    missing -= set(genes)
    if missing:
        raise ValueError(f"krumsiek11 truth names genes not in the data: {sorted(missing)}")
    regulators = [g for g in genes if g in set(truth.regulator)]
    return X, genes, regulators, truth


# --------------------------------------------------------------------------------------
# SERGIO on a RegNetwork sub-network
# --------------------------------------------------------------------------------------


def regnetwork_dag(hubs: Sequence[str], targets_per_hub: int):
    """A DAG sub-network of RegNetwork (human, as shipped in SERGIO) around some hubs.

    Parameters
    ----------
    hubs : sequence of str
        Hub regulators; each contributes its first ``targets_per_hub`` targets.
    targets_per_hub : int
        Number of successors taken per hub.

    Returns
    -------
    networkx.DiGraph
        Induced sub-graph on hubs and their targets, with self-loops and (greedily)
        cycles removed, isolated nodes dropped.
    """
    import networkx as nx
    import SERGIO

    ref = Path(SERGIO.__file__).parent / "GRN" / "ref" / "human.source"
    e = pd.read_csv(ref, sep="\t", header=None, names=["reg", "reg_id", "tar", "tar_id"], dtype=str)
    mirna = "miR|hsa-|let-"
    e = e[~e.reg.str.contains(mirna) & ~e.tar.str.contains(mirna)]
    e = e.drop_duplicates(["reg", "tar"])
    g = nx.DiGraph()
    g.add_edges_from(e[["reg", "tar"]].values)
    nodes = set(hubs)
    for h in hubs:
        nodes |= set(list(g.successors(h))[:targets_per_hub])
    # build the sub-graph in file order: g.subgraph() iterates a set, whose order depends on
    # PYTHONHASHSEED, and SERGIO's random draws follow the edge order
    order = [n for n in g if n in nodes]
    sub = nx.DiGraph()
    sub.add_nodes_from(order)
    sub.add_edges_from((a, b) for a, b in g.edges(order) if b in nodes)
    sub.remove_edges_from(nx.selfloop_edges(sub))
    while True:  # SERGIO needs a DAG
        try:
            sub.remove_edges_from(nx.find_cycle(sub))
        except nx.NetworkXNoCycle:
            break
    sub.remove_nodes_from([n for n in list(sub) if sub.degree(n) == 0])
    return sub


def normalize_log1p(counts: np.ndarray, target_sum: float = 1e4) -> np.ndarray:
    """Library-size normalise each cell to ``target_sum`` and apply ``log1p``.

    Parameters
    ----------
    counts : ndarray, shape (n_cells, n_genes)
        Raw counts.
    target_sum : float
        Total per cell after normalisation.

    Returns
    -------
    ndarray
        Normalised, log-transformed expression (float64); empty cells stay zero.
    """
    counts = np.asarray(counts, dtype=np.float64)
    lib = counts.sum(axis=1, keepdims=True)
    return np.log1p(np.divide(counts * target_sum, lib, out=np.zeros_like(counts), where=lib > 0))


def simulate_clean(grn, n_types: int, cells_per_type: int) -> pd.DataFrame:
    """Noise-free SERGIO steady-state expression (genes x cells) of ``n_types`` types.

    Uses NumPy's global RNG (SERGIO does), which the caller seeds.
    """
    from SERGIO._sergio import sergio
    from SERGIO.MR._profile import mrProfile

    mr = mrProfile(MR_names=sorted(grn.get_mrs()), n_types=n_types)  # SERGIO keeps MRs in a set
    mr.build_rnd()
    grn.init(mr, update_half_resp=True)
    sim = sergio(grn)
    sim.simulate(nCells=cells_per_type, noise_s=1, safety_iter=150, scale_iter=10)
    return sim.getSimExpr()


def regnetwork_grn(hubs, targets_per_hub: int):
    """A SERGIO GRN (master regulators set) on :func:`regnetwork_dag`'s sub-network, with its
    parameterized edge table; draws from NumPy's global RNG, which the caller seeds."""
    from SERGIO.GRN._components import Gene, SingleInteraction
    from SERGIO.GRN._grn import GRN
    from SERGIO.GRN._utils import grnParam, parameterize_grn

    sub = regnetwork_dag(hubs, targets_per_hub)
    edges = pd.DataFrame(
        [[i, a, 0, b] for i, (a, b) in enumerate(sub.edges())],
        columns=["index", "reg", "coop", "tar"],
    )
    net = parameterize_grn(edges, grnParam())
    grn = GRN()
    for _, r in net.iterrows():
        grn.add_interaction(
            SingleInteraction(
                reg=[Gene(r.reg, r.reg_decay)], tar=Gene(r.tar, r.tar_decay), k=r.k, h=r.h, n=r.n
            )
        )
    grn.setMRs()
    return grn, net


def technical_noise(expr: np.ndarray, log_library_mean: float, dropout_percentile: float):
    """SERGIO's outliers, library size and dropout on clean genes x cells expression; returns
    counts as cells x genes."""
    from SERGIO.Noise._noise import scNoise

    counts = scNoise()._add_noise(
        expr,
        prob_o=0.01,
        mean_o=0.8,
        scale_o=1,
        mean_l=log_library_mean,
        scale_l=0.4,
        shape_d=6.5,
        perc_d=dropout_percentile,
    )
    return np.asarray(counts).T


def sergio_case(
    n_cell_types: int,
    *,
    hubs: Sequence[str] = ("STAT3", "MYC", "TP53"),
    targets_per_hub: int = 20,
    cells_per_type: int = 200,
    seed: int = 0,
    dropout_percentile: float = 82,
    log_library_mean: float = 4.6,
    cache: bool = True,
) -> Dataset:
    """SERGIO single-cell simulation on a RegNetwork sub-network, with technical noise.

    Builds :func:`regnetwork_dag`, parameterises it with SERGIO's defaults, draws
    random master-regulator profiles for ``n_cell_types`` cell types, simulates
    ``cells_per_type`` cells per type, adds SERGIO's technical noise (outliers,
    library size, dropout to ~82% zeros) and normalises like a user would
    (:func:`normalize_log1p`). Genes never detected are dropped (from ``X`` and from
    the truth).

    Parameters
    ----------
    n_cell_types : int
        Number of cell types (master-regulator profiles).
    hubs : sequence of str
        Hub regulators for :func:`regnetwork_dag`.
    targets_per_hub : int
        Successors taken per hub.
    cells_per_type : int
        Cells simulated per cell type.
    seed : int
        Seed for NumPy's global RNG, which SERGIO uses.
    dropout_percentile : float
        SERGIO's ``perc_d``: dropout probability midpoint at this percentile of expression
        (82 gives ~80% zeros; lower is milder).
    log_library_mean : float
        SERGIO's ``mean_l``: mean of the log library-size factor (4.6 gives ~50 counts
        per cell for ~60 genes; higher is deeper sequencing).
    cache : bool
        Read from / write to :data:`CACHE_DIR`.

    Returns
    -------
    X : ndarray, shape (n_cell_types * cells_per_type, n_genes)
        log1p(CP10k) expression.
    genes : list of str
        Gene names.
    regulators : list of str
        Genes with out-degree > 0 in the truth.
    truth : DataFrame
        Columns ``regulator``, ``target``, ``k`` (SERGIO interaction strength; sign =
        activation / repression).
    """
    params = dict(
        n_cell_types=n_cell_types,
        hubs=list(hubs),
        targets_per_hub=targets_per_hub,
        cells_per_type=cells_per_type,
        seed=seed,
        dropout_percentile=dropout_percentile,
        log_library_mean=log_library_mean,
        version=2,
    )

    def build() -> Dataset:
        np.random.seed(seed)
        grn, net = regnetwork_grn(hubs, targets_per_hub)
        expr = simulate_clean(grn, n_cell_types, cells_per_type)  # genes x cells
        counts = technical_noise(expr.values, log_library_mean, dropout_percentile)
        keep = counts.sum(axis=0) > 0
        genes = [str(g) for g, k in zip(expr.index, keep, strict=True) if k]
        X = normalize_log1p(counts[:, keep])
        truth = net[["reg", "tar", "k"]].rename(columns={"reg": "regulator", "tar": "target"})
        truth = truth[truth.regulator.isin(genes) & truth.target.isin(genes)]
        truth = truth.reset_index(drop=True)
        regulators = [g for g in genes if g in set(truth.regulator)]
        return X, genes, regulators, truth

    return _cached("sergio", params, build) if cache else build()


def sergio_knockouts(
    *,
    hubs: Sequence[str] = ("STAT3", "MYC", "TP53"),
    targets_per_hub: int = 20,
    n_knockouts: int = 4,
    cells_per_condition: int = 150,
    seed: int = 0,
    dropout_percentile: float = 60,
    log_library_mean: float = 6.0,
):
    """A Perturb-seq-like SERGIO simulation: control cells and knock-outs of master regulators.

    One regulatory network (:func:`regnetwork_dag`, SERGIO's default parameters) and one random
    master-regulator profile, the control. Each knock-out is a copy of that profile with one
    master regulator's production rate set to zero, simulated as a SERGIO "cell type" beside
    the control, so the perturbation travels down the network to its targets. The regulators
    knocked out are those with the most targets. Technical noise as in :func:`sergio_case`
    (milder dropout and deeper libraries by default, so that knock-outs leave a trace).

    Parameters
    ----------
    hubs, targets_per_hub
        The sub-network of :func:`regnetwork_dag`.
    n_knockouts
        Master regulators knocked out, one per condition.
    cells_per_condition
        Cells simulated per condition (control included).
    seed
        Seed of NumPy's global RNG, which SERGIO uses.
    dropout_percentile, log_library_mean
        SERGIO's ``perc_d`` and ``mean_l`` (see :func:`sergio_case`).

    Returns
    -------
    adata : AnnData
        Integer counts (cells x genes; genes never detected dropped), ``obs["perturbation"]``
        (``control`` or the knocked-out gene).
    truth : DataFrame
        The network: ``regulator``, ``target``, ``k`` (sign: activation or repression).
    """
    import anndata as ad
    from SERGIO._sergio import sergio
    from SERGIO.MR._profile import mrProfile

    np.random.seed(seed)
    grn, net = regnetwork_grn(hubs, targets_per_hub)
    regulators = sorted(grn.get_mrs())  # SERGIO keeps them in a set
    out_degree = net.groupby("reg").size()
    knocked_out = sorted(regulators, key=lambda g: (-out_degree.get(g, 0), g))[:n_knockouts]
    control = mrProfile(MR_names=regulators, n_types=1)
    control.build_rnd()
    profile = mrProfile(MR_names=regulators, n_types=1 + len(knocked_out))
    for regulator in regulators:
        rates = np.repeat(control.profile[regulator][0], 1 + len(knocked_out))
        rates[1 + np.flatnonzero(np.asarray(knocked_out) == regulator)] = 0.0
        profile.profile[regulator] = rates
    profile.init_ = True
    grn.init(profile, update_half_resp=True)
    sim = sergio(grn)
    sim.simulate(nCells=cells_per_condition, noise_s=1, safety_iter=150, scale_iter=10)
    expr = sim.getSimExpr()  # genes x cells, condition by condition
    counts = technical_noise(expr.values, log_library_mean, dropout_percentile)
    counts = counts.astype(np.float32)
    keep = counts.sum(axis=0) > 0
    genes = [str(g) for g, k in zip(expr.index, keep, strict=True) if k]
    conditions = np.repeat(["control", *knocked_out], cells_per_condition)
    adata = ad.AnnData(
        X=counts[:, keep],
        obs=pd.DataFrame(
            {"perturbation": pd.Categorical(conditions)},
            index=[f"cell{i}" for i in range(len(conditions))],
        ),
        var=pd.DataFrame(index=genes),
    )
    truth = net[["reg", "tar", "k"]].rename(columns={"reg": "regulator", "tar": "target"})
    truth = truth[truth.regulator.isin(genes) & truth.target.isin(genes)].reset_index(drop=True)
    return adata, truth


DEEP_HUBS = ("STAT3", "MYC", "TP53", "JUN", "E2F1", "SP1")
"""Hubs of the deeper SERGIO cascade: longest path 6 in the simulated DAG, vs 3 for the default
hubs (with ``targets_per_hub=15``). Genes SERGIO never detects (e.g. JUN at seed 0) leave the
truth, so the scored network can be shallower."""


# --------------------------------------------------------------------------------------
# scoring against the truth
# --------------------------------------------------------------------------------------


def edge_key(regulator: str, target: str, regulators: set[str]) -> tuple[str, str]:
    """Canonical key of an edge under :data:`SCORING_RULE`.

    Parameters
    ----------
    regulator, target : str
        Edge endpoints.
    regulators : set of str
        Candidate regulators.

    Returns
    -------
    tuple of str
        ``(regulator, target)``, or the sorted pair if both are regulators.
    """
    if target in regulators:
        return (regulator, target) if regulator <= target else (target, regulator)
    return (regulator, target)


def edge_keys(edges: pd.DataFrame | Iterable[tuple[str, str]], regulators) -> set[tuple[str, str]]:
    """Set of canonical edge keys of a DataFrame (``regulator``, ``target``) or pairs."""
    regs = set(regulators)
    if isinstance(edges, pd.DataFrame):
        edges = zip(edges["regulator"], edges["target"], strict=True)
    return {edge_key(str(a), str(b), regs) for a, b in edges if a != b}


def truth_keys(truth: pd.DataFrame, regulators) -> set[tuple[str, str]]:
    """Canonical keys of the true edges whose regulator is a candidate regulator."""
    regs = set(regulators)
    t = truth[truth["regulator"].isin(regs)]
    return edge_keys(t, regs)


def precision_recall(pred: set, truth: set) -> dict[str, float]:
    """Precision, recall and F1 of a predicted edge set.

    Parameters
    ----------
    pred, truth : set
        Canonical edge keys (see :func:`edge_keys`).

    Returns
    -------
    dict
        ``edges``, ``tp``, ``precision``, ``recall``, ``f1`` (precision is NaN for an
        empty prediction).
    """
    tp = len(pred & truth)
    p = tp / len(pred) if pred else float("nan")
    r = tp / len(truth) if truth else float("nan")
    f1 = 2 * p * r / (p + r) if pred and (p + r) > 0 else 0.0
    return dict(edges=len(pred), tp=tp, precision=p, recall=r, f1=f1)


def candidate_keys(genes: Sequence[str], regulators: Sequence[str]) -> list[tuple[str, str]]:
    """Every canonical regulator->target key (regulator != target), in a fixed order."""
    regs = set(regulators)
    keys = {edge_key(r, g, regs) for r in regulators for g in genes if g != r}
    return sorted(keys)


def aupr(scores: dict[tuple[str, str], float], candidates: Sequence, truth: set) -> float:
    """Area under the precision-recall curve (sklearn's average precision).

    Parameters
    ----------
    scores : dict
        Score per canonical key; higher is more confident. Candidates without a score
        get ``-inf``.
    candidates : sequence
        All candidate keys (:func:`candidate_keys`).
    truth : set
        True keys.

    Returns
    -------
    float
        Average precision over all candidates (NaN if no candidate is true).
    """
    from sklearn.metrics import average_precision_score

    y = np.fromiter((k in truth for k in candidates), dtype=bool, count=len(candidates))
    if not y.any():
        return float("nan")
    s = np.fromiter((scores.get(k, -np.inf) for k in candidates), float, count=len(candidates))
    finite = np.isfinite(s)
    if not finite.all():  # unranked pairs go below every ranked one
        s[~finite] = (s[finite].min() - 1.0) if finite.any() else 0.0
    return float(average_precision_score(y, s))


def spearman_abs(X: np.ndarray, genes: Sequence[str], regulators: Sequence[str]) -> np.ndarray:
    """|Spearman correlation| of every regulator with every gene.

    Parameters
    ----------
    X : ndarray, shape (n_samples, n_genes)
        Expression.
    genes, regulators : sequence of str
        Column names of ``X`` and the candidate regulators.

    Returns
    -------
    ndarray, shape (n_regulators, n_genes)
        Absolute Spearman correlations (0 for constant genes).
    """
    from scipy.stats import rankdata

    R = rankdata(X, axis=0)
    R -= R.mean(axis=0)
    sd = np.sqrt((R**2).sum(axis=0))
    R = np.divide(R, sd, out=np.zeros_like(R), where=sd > 0)
    idx = {g: i for i, g in enumerate(genes)}
    ri = [idx[r] for r in regulators]
    return np.abs(R[:, ri].T @ R)


def network_stats(genes, regulators, truth) -> dict:
    """Simple description of a data set's true network (for summaries)."""
    import networkx as nx

    g = nx.DiGraph()
    g.add_nodes_from(genes)
    g.add_edges_from(zip(truth["regulator"], truth["target"], strict=True))
    regulated = sum(1 for n in genes if g.in_degree(n) > 0)
    depth = nx.dag_longest_path_length(g) if nx.is_directed_acyclic_graph(g) else "cyclic"
    return dict(
        genes=len(genes),
        regulators=len(regulators),
        true_edges=len(truth),
        scored_true_edges=len(truth_keys(truth, regulators)),
        frac_regulated=regulated / len(genes),
        depth=depth,
    )


def f3(v: float) -> str:
    """Three decimals, ``-`` for NaN (e.g. precision of an empty edge set)."""
    return "-" if v != v else f"{v:.3f}"


def markdown_table(rows: Sequence[dict]) -> str:
    """Format a list of dicts (same keys) as an aligned markdown pipe table.

    Parameters
    ----------
    rows : sequence of dict
        Table rows; the first row's keys are the columns. Floats print with 4
        significant digits, NaN as ``-``; format other values beforehand.

    Returns
    -------
    str
        The table, readable both as plain text and as markdown.
    """
    if not rows:
        return "(no rows)"

    def cell(v) -> str:
        if isinstance(v, float):
            return "-" if v != v else f"{v:.4g}"
        return str(v)

    cols = list(rows[0])
    body = [[cell(r.get(c, "")) for c in cols] for r in rows]
    width = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(cols)]
    numeric = [
        all(b[i].replace(".", "", 1).lstrip("-").isdigit() or b[i] == "-" for b in body)
        for i in range(len(cols))
    ]

    def line(vals) -> str:
        return (
            "| "
            + " | ".join(
                v.rjust(w) if n else v.ljust(w)
                for v, w, n in zip(vals, width, numeric, strict=True)
            )
            + " |"
        )

    sep = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if n else ("-" * (w + 2))
            for w, n in zip(width, numeric, strict=True)
        )
        + "|"
    )
    return "\n".join([line(cols), sep] + [line(b) for b in body])


# --------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------


def all_datasets(quick: bool = False) -> dict:
    """Zero-argument builders of every benchmark data set, by display name."""
    cases = {
        "synthetic 1000x300x100": lambda: synthetic_grn(1000, 300, 100, seed=0),
        "synthetic 1000x300x100, half the responses U-shaped": lambda: synthetic_grn(
            1000, 300, 100, seed=0, nonmonotone=0.5
        ),
        "krumsiek11": krumsiek11,
        "SERGIO 1 type": lambda: sergio_case(1, seed=0),
        "SERGIO 3 types": lambda: sergio_case(3, seed=0),
        "SERGIO deep cascade (3 types)": lambda: sergio_case(
            3, hubs=DEEP_HUBS, targets_per_hub=15, seed=0
        ),
    }
    if not quick:
        cases["synthetic 5000x500x300"] = lambda: synthetic_grn(5000, 500, 300, seed=0)
    return cases


def main(argv: Sequence[str] | None = None) -> None:
    """Build (and cache) every benchmark data set and print a summary."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="skip the 5000-gene synthetic case")
    args = ap.parse_args(argv)
    print(f"cache: {CACHE_DIR}")
    rows = []
    for name, build in all_datasets(args.quick).items():
        t0 = time.perf_counter()
        X, genes, regulators, truth = build()
        stats = network_stats(genes, regulators, truth)
        rows.append(
            dict(
                dataset=name,
                samples=X.shape[0],
                **stats,
                zeros=float((X == 0).mean()),
                seconds=time.perf_counter() - t0,
            )
        )
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(pd.DataFrame(rows).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
