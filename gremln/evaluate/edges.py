"""Edge prediction on held-out edges of cell-type graphs (paper section 4): do a model's frozen
gene embeddings, given part of a cell type's network, recover the rest of it?

The hidden edges are chosen before pre-training: :func:`hold_out_edges` picks a fraction of the
cell-type networks' gene pairs (pooled over types, since types share edges) and writes the graph
store pre-training must read, a copy in which no graph (of any kind, nor any per-cell graph of
an assignment) has any of them. A model pre-trained on that store has never seen a hidden edge
in its attention; the evaluation reads the full store and hides exactly those pairs.

Contexts: every cell type of the data with a consensus network in the graph store (or those
asked for) with at least ``min_edges`` edges among genes expressed in its cells and known to
every model, at least one of them held out and one not. A context's genes are those edges'
endpoints; edges are taken undirected.

In every context the held-out edges are hidden and the others visible. Each of ``n_splits``
seeded splits draws new negatives, gene pairs that are no edge at all (as many as the visible
edges for training and as the hidden ones for testing, disjoint), and new predictor weights.
Every model sees the visible graph only, in its own way:

- GREmLN (diffusion attention) through its attention: the cells of the type are embedded with
  the visible graph as every cell's graph (held in memory as ``VISIBLE_GRAPH``; the store is
  only read), and each gene's state is averaged over those cells (genes in no cell's
  sequence, e.g. cut by ``max_length``, get zeros). A link predictor on these frozen gene
  embeddings (:class:`LinkPredictor` without an encoder) is trained on the visible edges against
  the training negatives.
- Models that ignore graphs (the vanilla ablation) and the PCA baseline (each gene's loadings on
  the principal components of the type's log-normalized expression) get the visible graph
  through a small two-layer graph attention network (:class:`GraphAttention`), trained with the
  same scorer, as in the paper.

Reported: AUROC and average precision of the hidden edges against the test negatives, averaged
over the contexts, per split (mean and std over splits). Figures: ROC and precision-recall
curves of every model, on the first split's test pairs of all contexts pooled.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from gremln.evaluate import (
    as_model,
    ignores_graphs,
    metric_summary,
    model_set,
    new_figure,
    save_figure,
    summarize,
    write_result,
)
from netinfer.io import InputError
from netinfer.sc.validate import require_obs_column

EVALUATION = "edges"
FIGURES = ("edges_roc.png", "edges_precision_recall.png")
VISIBLE_GRAPH = "gremln-evaluate-edges"  # the visible graph GREmLN embeds with, in memory
HELD_OUT_COLUMNS = ["gene_a", "gene_b"]  # the held-out edge table: one pair per row, a < b


@dataclass
class EdgeContext:
    """One cell type's network, restricted to genes every model can embed.

    Attributes
    ----------
    cell_type, graph
        The label and the consensus network's name in the graph store.
    genes
        The context's genes (the edges' endpoints), sorted.
    rows
        The type's cells (rows of the data).
    pairs
        Undirected edges as (i, j) indices into ``genes``, i < j, sorted.
    held_out
        Which of ``pairs`` were held out of pre-training (the hidden edges).
    """

    cell_type: str
    graph: str
    genes: np.ndarray
    rows: np.ndarray
    pairs: np.ndarray
    held_out: np.ndarray


@dataclass
class EdgeSplit:
    """A context's gene pairs (rows (i, j), i < j) for training and testing a link predictor."""

    visible: np.ndarray
    hidden: np.ndarray
    train_negatives: np.ndarray
    test_negatives: np.ndarray

    def test_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """The test pairs (hidden edges, then test negatives) and their labels."""
        labels = np.r_[np.ones(len(self.hidden)), np.zeros(len(self.test_negatives))]
        return np.concatenate([self.hidden, self.test_negatives]), labels


def undirected_pairs(sources: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Unique (i, j) pairs with i < j of directed edges (self-loops dropped), sorted."""
    pairs = np.stack([np.minimum(sources, targets), np.maximum(sources, targets)], axis=1)
    return np.unique(pairs[pairs[:, 0] != pairs[:, 1]].astype(np.int64), axis=0)


def split_edges(
    pairs: np.ndarray, n_genes: int, hidden: np.ndarray, *, seed: int = 0, split: int = 0
) -> EdgeSplit:
    """Hide the edges ``pairs[hidden]`` (a boolean mask: those held out of pre-training) and draw
    negatives (pairs that are no edge), as many as the visible edges for training and as the
    hidden ones for testing.

    Deterministic in (``seed``, ``split``).

    Raises
    ------
    ValueError
        Fewer non-edges than negatives needed.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, split, 0x65646765]))  # "edge"
    hidden = np.asarray(hidden, dtype=bool)
    hidden, visible = pairs[hidden], pairs[~hidden]
    n_negatives = len(pairs)
    if n_genes * (n_genes - 1) // 2 - len(pairs) < n_negatives:
        raise ValueError(f"{n_genes} genes have too few non-edges for {n_negatives} negatives")
    taken = set((pairs[:, 0] * n_genes + pairs[:, 1]).tolist())
    negatives: list[int] = []
    while len(negatives) < n_negatives:
        draws = np.sort(rng.integers(0, n_genes, size=(2 * n_negatives, 2)), axis=1)
        for key in (draws[:, 0] * n_genes + draws[:, 1])[draws[:, 0] < draws[:, 1]].tolist():
            if key not in taken and len(negatives) < n_negatives:
                taken.add(key)
                negatives.append(key)
    keys = np.asarray(negatives, dtype=np.int64)
    negative_pairs = np.stack([keys // n_genes, keys % n_genes], axis=1)
    return EdgeSplit(
        visible, hidden, negative_pairs[: len(visible)], negative_pairs[len(visible) :]
    )


class GraphAttentionLayer(nn.Module):
    """A graph attention layer (Velickovic et al. 2018): each node's new state is a softmax-
    weighted sum of its neighbours' projected states (self-loop included), per head."""

    def __init__(self, d_in: int, d_out: int, heads: int):
        super().__init__()
        self.heads, self.d_out = heads, d_out
        self.project = nn.Linear(d_in, heads * d_out, bias=False)
        self.attend_source = nn.Parameter(torch.randn(heads, d_out) * d_out**-0.5)
        self.attend_target = nn.Parameter(torch.randn(heads, d_out) * d_out**-0.5)

    def forward(self, x: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
        """``x``: nodes x d_in; ``edges``: (2, E) source -> target, both directions and
        self-loops. Returns nodes x heads x d_out."""
        source, target = edges
        h = self.project(x).view(-1, self.heads, self.d_out)
        logits = nn.functional.leaky_relu(
            (h[source] * self.attend_source).sum(-1) + (h[target] * self.attend_target).sum(-1),
            0.2,
        )
        # softmax over each target's incoming edges, shifted by their maximum for stability
        largest = torch.full((len(x), self.heads), -torch.inf).scatter_reduce(
            0, target[:, None].expand_as(logits), logits, reduce="amax"
        )
        weights = torch.exp(logits - largest[target])
        totals = torch.zeros(len(x), self.heads).index_add_(0, target, weights)
        weights = weights / totals[target]
        return torch.zeros_like(h).index_add_(0, target, weights[..., None] * h[source])


class GraphAttention(nn.Module):
    """Two graph attention layers (ELU between them, heads concatenated, then averaged)."""

    def __init__(self, d_in: int, d_hidden: int = 32, heads: int = 4):
        super().__init__()
        self.first = GraphAttentionLayer(d_in, d_hidden, heads)
        self.second = GraphAttentionLayer(heads * d_hidden, d_hidden, heads)
        self.d_out = d_hidden

    def forward(self, x: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
        x = nn.functional.elu(self.first(x, edges).flatten(1))
        return self.second(x, edges).mean(dim=1)


class LinkPredictor(nn.Module):
    """Scores gene pairs from gene features: an optional graph attention encoder over the
    visible graph, then an MLP on the pair's elementwise product and absolute difference
    (symmetric in the two genes)."""

    def __init__(self, d_in: int, *, graph_attention: bool, d_hidden: int = 32):
        super().__init__()
        self.encoder = GraphAttention(d_in, d_hidden) if graph_attention else None
        d_gene = self.encoder.d_out if graph_attention else d_in
        self.scorer = nn.Sequential(
            nn.Linear(2 * d_gene, d_hidden), nn.ReLU(), nn.Linear(d_hidden, 1)
        )

    def forward(self, x: torch.Tensor, edges: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        if self.encoder is not None:
            x = self.encoder(x, edges)
        a, b = x[pairs[:, 0]], x[pairs[:, 1]]
        return self.scorer(torch.cat([a * b, (a - b).abs()], dim=1)).squeeze(1)


def link_prediction_scores(
    features: np.ndarray,
    split: EdgeSplit,
    *,
    graph_attention: bool,
    seed: int = 0,
    epochs: int = 200,
    lr: float = 0.01,
    weight_decay: float = 5e-4,
) -> np.ndarray:
    """Train a :class:`LinkPredictor` on the visible edges against the training negatives
    (full-batch Adam, binary cross-entropy) and score the split's test pairs.

    Parameters
    ----------
    features
        Genes x d features of the context's genes (standardized here).
    split
        The context's pairs; only ``visible`` edges reach the encoder's graph.
    graph_attention
        Condition the features on the visible graph with :class:`GraphAttention`.
    seed
        Seed of the initial weights.
    epochs, lr, weight_decay
        Full-batch Adam steps, step size and L2 penalty.

    Returns
    -------
    Probabilities of the test pairs (:meth:`EdgeSplit.test_pairs` order).
    """
    std = features.std(axis=0)
    x = torch.from_numpy((features - features.mean(axis=0)) / np.where(std > 0, std, 1.0)).float()
    loops = np.arange(len(x))
    visible = split.visible.T
    edges = torch.from_numpy(
        np.concatenate([visible, visible[::-1], np.stack([loops, loops])], axis=1)
    )
    pairs = torch.from_numpy(np.concatenate([split.visible, split.train_negatives]))
    labels = torch.cat([torch.ones(len(split.visible)), torch.zeros(len(split.train_negatives))])
    with torch.random.fork_rng(devices=[]):  # seeded weights without touching the global RNG
        torch.manual_seed(seed)
        predictor = LinkPredictor(x.shape[1], graph_attention=graph_attention)
    optimizer = torch.optim.Adam(predictor.parameters(), lr=lr, weight_decay=weight_decay)
    threads = torch.get_num_threads()
    # one thread: index_add_ sums in thread order, so more threads break reruns' equality (the
    # graphs are small: nothing is lost)
    torch.set_num_threads(1)
    try:
        for _ in range(epochs):
            optimizer.zero_grad()
            logits = predictor(x, edges, pairs)
            nn.functional.binary_cross_entropy_with_logits(logits, labels).backward()
            optimizer.step()
        with torch.no_grad():
            test = torch.from_numpy(split.test_pairs()[0])
            return torch.sigmoid(predictor(x, edges, test)).numpy().astype(np.float64)
    finally:
        torch.set_num_threads(threads)


def edge_contexts(
    adata,
    graphs_path,
    cell_type_key: str,
    held_out: pd.DataFrame,
    *,
    known_genes: set[str] | None = None,
    cell_types=None,
    min_edges: int = 10,
    layer: str | None = None,
) -> tuple[list[EdgeContext], dict[str, str]]:
    """The cell types' networks to evaluate on (see the module docstring), with their edges in
    ``held_out`` (:func:`hold_out_edges`) marked, and why the other types with a network were
    left out."""
    import scipy.sparse as sp

    from netinfer.store import GraphStore

    require_obs_column(adata, cell_type_key)
    labels = adata.obs[cell_type_key].astype(str).to_numpy()
    counts = sp.csr_matrix(adata.layers[layer] if layer is not None else adata.X)
    column = {gene: i for i, gene in enumerate(adata.var_names.astype(str))}
    wanted = set(labels) if cell_types is None else set(map(str, cell_types)) & set(labels)
    # as sorted name pairs: a context's pairs (i < j into sorted genes) are in that order
    held = {tuple(sorted(p)) for p in zip(held_out["gene_a"].astype(str), held_out["gene_b"])}
    contexts, skipped = [], {}
    with GraphStore.open(graphs_path) as store:
        listing = store.list()
        listing = listing[(listing["kind"] == "consensus") & listing["cell_type"].isin(wanted)]
        for cell_type, name in sorted(zip(listing["cell_type"], listing["name"])):
            rows = np.flatnonzero(labels == cell_type)
            expressed = np.asarray((counts[rows] > 0).sum(axis=0)).ravel() > 0
            usable = {g for g, i in column.items() if expressed[i]}
            usable &= known_genes if known_genes is not None else usable
            table = store.get(name).to_dataframe()
            table = table[table["source"].isin(usable) & table["target"].isin(usable)]
            genes = np.unique(np.concatenate([table["source"], table["target"]]).astype(str))
            pairs = undirected_pairs(
                np.searchsorted(genes, table["source"].astype(str)),
                np.searchsorted(genes, table["target"].astype(str)),
            )
            if len(pairs) < min_edges:
                skipped[cell_type] = f"{len(pairs)} edges among expressed genes (< {min_edges})"
                continue
            hidden = np.array([(genes[i], genes[j]) in held for i, j in pairs], dtype=bool)
            if hidden.all() or not hidden.any():
                skipped[cell_type] = f"{hidden.sum()} of its {len(pairs)} edges held out"
                continue
            contexts.append(EdgeContext(cell_type, name, genes, rows, pairs, hidden))
    if not contexts:
        raise InputError(
            f"{graphs_path}: no consensus network of a cell type in obs[{cell_type_key!r}] "
            f"has {min_edges} edges or more among genes expressed in its cells, some but not "
            "all of them held out "
            f"({'; '.join(f'{t}: {why}' for t, why in skipped.items()) or 'no network at all'})"
        )
    return contexts, skipped


def hold_out_edges(
    graphs_path: str | os.PathLike[str],
    pretraining_path: str | os.PathLike[str],
    *,
    fraction: float = 0.15,
    seed: int = 0,
    cell_types=None,
    overwrite: bool = False,
) -> pd.DataFrame:
    """Before pre-training: choose the edges the edges evaluation will hide, and write the graph
    store pre-training reads, a copy of ``graphs_path`` in which no graph has any of them.

    The held-out edges are ``fraction`` of the distinct undirected gene pairs of the cell types'
    consensus networks (of every type, or of ``cell_types``), pooled: a pair that several types
    share is one pair, held out of all of them. The copy keeps the store's vocabulary, every
    graph of any kind with its metadata and edge attributes, and every assignment, each less the
    held-out pairs (in either direction); ``graphs_path`` is only read. The copy is written to a
    temporary folder and renamed into place.

    Parameters
    ----------
    graphs_path
        The graph store with the cell types' consensus networks.
    pretraining_path
        Where the pre-training graph store is written.
    fraction
        Share of the pooled pairs held out (at least one).
    seed
        Seed of the choice.
    cell_types
        The types whose networks' pairs may be held out (default: every type's).
    overwrite
        Replace an existing store at ``pretraining_path``.

    Returns
    -------
    The held-out pairs, columns ``gene_a`` < ``gene_b`` (the table :func:`evaluate_edges`
    needs; ``write_held_out`` saves it).

    Raises
    ------
    InputError
        No consensus network with an edge (of the types asked for).
    """
    import shutil

    from netinfer.store import GraphStore, StoreError

    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), not {fraction}")
    target = os.fspath(pretraining_path)
    if os.path.abspath(target) == os.path.abspath(os.fspath(graphs_path)):
        raise ValueError(f"{target}: the pre-training store must be a new path, not GRAPHS")
    if os.path.exists(target) and not overwrite:
        raise StoreError(f"{target}: already exists; pass overwrite=True to replace it")
    staging = os.path.join(
        os.path.dirname(os.path.abspath(target)), f".{os.path.basename(target)}.tmp"
    )
    with GraphStore.open(graphs_path) as source:
        genes = source.genes
        n = len(genes)
        listing = source.list()
        networks = listing[listing["kind"] == "consensus"]
        if cell_types is not None:
            networks = networks[networks["cell_type"].isin(set(map(str, cell_types)))]
        keys = [_pair_keys(*source.get(name).adjacency.nonzero(), n) for name in networks["name"]]
        pooled = np.unique(np.concatenate(keys)) if keys else np.empty(0, np.int64)
        if not pooled.size:
            raise InputError(f"{graphs_path}: no consensus network with an edge to hold out")
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x686F6C64]))  # "hold"
        n_held = min(max(1, int(round(fraction * pooled.size))), pooled.size)
        held = np.sort(rng.choice(pooled, n_held, replace=False))
        shutil.rmtree(staging, ignore_errors=True)
        with GraphStore.create(staging) as copy:
            copy.add_genes(genes, source.ensembl)
            for name in listing["name"]:
                _copy_graph(source, copy, name, held)
            for name in source.assignment_names():
                _copy_assignment(source.get_assignment(name), copy, name, held)
    if os.path.exists(target):
        shutil.rmtree(target)
    os.replace(staging, target)
    return pd.DataFrame({"gene_a": genes[held // n], "gene_b": genes[held % n]})


def _pair_keys(rows: np.ndarray, cols: np.ndarray, n: int) -> np.ndarray:
    """One int64 per unordered pair of vocabulary indices (lower index first); self-loops too."""
    rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
    return np.minimum(rows, cols) * n + np.maximum(rows, cols)


def _copy_graph(source, copy, name: str, held: np.ndarray) -> None:
    """Graph ``name`` of ``source`` into ``copy`` (same vocabulary) without the ``held`` pairs."""
    graph = source.get(name)
    info = source.info(name)
    coo = graph.adjacency.tocoo()
    keep = ~np.isin(_pair_keys(coo.row, coo.col, len(graph.genes)), held)
    table = graph.to_dataframe()[keep]
    if info["weight"] != "weight":  # the adjacency's values are another column (or ones)
        table = table.drop(columns="weight")
    copy.add_graph(
        name,
        table,
        kind=info["kind"],
        directed=info["directed"],
        weight=info["weight"],
        cell_type=info["cell_type"],
        params={**info["params"], "held_out_pairs": int(held.size)},
    )


def _copy_assignment(assignment, copy, name: str, held: np.ndarray) -> None:
    """An assignment into ``copy`` (same vocabulary), its edges in ``held`` left out."""
    n = len(copy.genes)
    keep = ~np.isin(_pair_keys(assignment.edge_rows, assignment.edge_cols, n), held)
    renumber = np.cumsum(keep) - 1
    writer = copy.assignment_writer(name)
    for j in range(assignment.n_graphs):
        edges = assignment.graph_edges[
            assignment.graph_offsets[j] : assignment.graph_offsets[j + 1]
        ]
        writer.add_graph(renumber[edges[keep[edges]]])
    read = assignment.label_cells  # whose labels it read stays known in the copy
    writer.publish(
        cells=[str(c) for c in assignment.cells],  # zarr's string arrays as plain str
        graph_index=assignment.graph_index,
        weights=assignment.weights,
        cell_types=[str(t) for t in assignment.cell_types],
        edge_rows=assignment.edge_rows[keep],
        edge_cols=assignment.edge_cols[keep],
        params={**assignment.meta.get("params", {}), "held_out_pairs": int(held.size)},
        label_cells=None if read is None else [str(c) for c in read],
    )


def write_held_out(table: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Save the held-out pairs as a tab-separated file (``gene_a``, ``gene_b``), atomically."""
    from netinfer.io import atomic_write

    with atomic_write(path) as handle:
        table[HELD_OUT_COLUMNS].to_csv(handle, sep="\t", index=False)


def read_held_out(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The held-out pairs written by :func:`write_held_out`.

    Raises
    ------
    InputError
        Not a table with ``gene_a`` and ``gene_b`` columns and at least one row.
    """
    try:
        table = pd.read_csv(path, sep="\t", dtype=str)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise InputError(f"{path}: cannot read the held-out edges ({error})") from None
    missing = [c for c in HELD_OUT_COLUMNS if c not in table.columns]
    if missing or table.empty:
        raise InputError(
            f"{path}: held-out edges need columns gene_a and gene_b and at least one row (made "
            f"by gremln hold-out-edges); found columns {', '.join(table.columns) or 'none'} and "
            f"{len(table)} row(s)"
        )
    blank = table[HELD_OUT_COLUMNS].isna().any(axis=1).to_numpy()
    if blank.any():
        raise InputError(f"{path}: row {int(np.flatnonzero(blank)[0]) + 2} has an empty gene")
    return table[HELD_OUT_COLUMNS]


GeneFeatures = Callable[[EdgeContext, np.ndarray], np.ndarray]


def gene_feature_sets(
    adata,
    models: dict,
    graphs_path,
    *,
    layer: str | None = None,
    n_pcs: int = 50,
    seed: int = 0,
    embed_options: dict | None = None,
    progress: bool = True,
) -> dict[str, tuple[GeneFeatures, bool]]:
    """For every model and the PCA baseline: a function from a context and its visible edges to
    features of the context's genes, and whether the link predictor must add the visible graph
    through graph attention (the model did not see it)."""
    from sklearn.decomposition import PCA

    from gremln.data import GraphSource
    from gremln.embed import compute_embeddings
    from netinfer.pipeline import normalize, to_dense

    options = {"layer": layer, "progress": progress, **(embed_options or {})}
    graphs = GraphSource(graphs_path)  # the visible graphs are held here: the store is read only
    column = {gene: i for i, gene in enumerate(adata.var_names.astype(str))}

    def model_features(model) -> GeneFeatures:
        cache: dict[str, np.ndarray] = {}  # a model that ignores graphs embeds a type once

        def features(context: EdgeContext, visible: np.ndarray) -> np.ndarray:
            if ignores_graphs(model) and context.cell_type in cache:
                return cache[context.cell_type]
            graph_mode = "none"
            if not ignores_graphs(model):
                graph_mode = f"ppi:{VISIBLE_GRAPH}"
                graphs.add_graph(
                    VISIBLE_GRAPH, context.genes[visible[:, 0]], context.genes[visible[:, 1]]
                )
            embedded = compute_embeddings(
                adata[context.rows], model, graphs, graph_mode=graph_mode, **options
            )
            genes = np.nan_to_num(embedded.genes[[column[g] for g in context.genes]], nan=0.0)
            if ignores_graphs(model):
                cache[context.cell_type] = genes
            return genes

        return features

    lognorm = normalize(adata.layers[layer] if layer is not None else adata.X)

    def pca_loadings(context: EdgeContext, visible: np.ndarray) -> np.ndarray:
        values = to_dense(lognorm[context.rows][:, [column[g] for g in context.genes]])
        n_comps = int(min(n_pcs, *values.shape))
        pca = PCA(n_components=n_comps, random_state=seed).fit(values)
        return pca.components_.T * np.sqrt(pca.explained_variance_)

    sets = {}
    for name, model in models.items():
        model = as_model(model)
        sets[name] = (model_features(model), ignores_graphs(model))
    sets["pca"] = (pca_loadings, True)
    return sets


def edge_scores(
    contexts: list[EdgeContext],
    features: dict[str, tuple[GeneFeatures, bool]],
    *,
    n_splits: int = 3,
    seed: int = 0,
    epochs: int = 200,
) -> tuple[dict[str, list[dict]], dict[str, dict], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Train and score the link predictor of every feature set on every split and context.

    Returns
    -------
    Per feature set, the metrics of each split (mean over contexts); per feature set, each
    context's metrics over the splits; per feature set, (labels, scores) of the first split's
    test pairs, all contexts pooled.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    per_split: dict[str, list[dict]] = {name: [] for name in features}
    per_context = {
        name: {c.cell_type: {"auroc": [], "ap": []} for c in contexts} for name in features
    }
    first: dict[str, tuple[list, list]] = {name: ([], []) for name in features}
    for split in range(n_splits):
        splits = [
            split_edges(c.pairs, len(c.genes), c.held_out, seed=seed, split=split) for c in contexts
        ]
        for name, (featurize, graph_attention) in features.items():
            for context, pairs in zip(contexts, splits):
                scores = link_prediction_scores(
                    featurize(context, pairs.visible),
                    pairs,
                    graph_attention=graph_attention,
                    seed=seed + split,
                    epochs=epochs,
                )
                labels = pairs.test_pairs()[1]
                metrics = per_context[name][context.cell_type]
                metrics["auroc"].append(float(roc_auc_score(labels, scores)))
                metrics["ap"].append(float(average_precision_score(labels, scores)))
                if split == 0:
                    first[name][0].append(labels)
                    first[name][1].append(scores)
            per_split[name].append(
                {
                    metric: float(np.mean([m[metric][-1] for m in per_context[name].values()]))
                    for metric in ("auroc", "ap")
                }
            )
    contexts_summary = {
        name: {
            cell_type: {metric: metric_summary(values) for metric, values in metrics.items()}
            for cell_type, metrics in by_type.items()
        }
        for name, by_type in per_context.items()
    }
    pooled = {name: (np.concatenate(y), np.concatenate(s)) for name, (y, s) in first.items()}
    return per_split, contexts_summary, pooled


def plot_curves(pooled: dict, scores: dict):
    """ROC and precision-recall curves of every model (first split, contexts pooled)."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    roc, pr = new_figure(figsize=(4.2, 4.2)), new_figure(figsize=(4.2, 4.2))
    roc_axis, pr_axis = roc.subplots(), pr.subplots()
    for name, (labels, values) in pooled.items():
        false_positive, true_positive, _ = roc_curve(labels, values)
        auroc = scores[name]["auroc"]
        roc_axis.plot(
            false_positive,
            true_positive,
            label=f"{name} ({auroc['mean']:.3f} ± {auroc['std']:.3f})",
        )
        precision, recall, _ = precision_recall_curve(labels, values)
        ap = scores[name]["ap"]
        pr_axis.plot(recall, precision, label=f"{name} ({ap['mean']:.3f} ± {ap['std']:.3f})")
    roc_axis.plot([0, 1], [0, 1], color="0.5", linestyle="--", linewidth=0.8)
    roc_axis.set(
        xlabel="false positive rate", ylabel="true positive rate", title="hidden edges: ROC"
    )
    pr_axis.axhline(0.5, color="0.5", linestyle="--", linewidth=0.8)  # one negative per edge
    pr_axis.set(xlabel="recall", ylabel="precision", title="hidden edges: precision-recall")
    for axis in (roc_axis, pr_axis):
        axis.legend(fontsize=7, title="model (AUROC / AP over splits)", title_fontsize=7)
    return roc, pr


def evaluate_edges(
    adata,
    model,
    graphs_path: str | os.PathLike[str],
    *,
    cell_type_key: str,
    held_out: pd.DataFrame | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    vanilla=None,
    compare: dict | None = None,
    cell_types=None,
    min_edges: int = 10,
    layer: str | None = None,
    n_splits: int = 3,
    n_pcs: int = 50,
    epochs: int = 200,
    seed: int = 0,
    embed_options: dict | None = None,
    progress: bool = True,
) -> dict:
    """Link prediction of hidden edges of cell-type networks from frozen gene embeddings, with
    baselines; writes ``OUT_DIR/edges.json``, ``OUT_DIR/edges_roc.png`` and
    ``OUT_DIR/edges_precision_recall.png``.

    Parameters
    ----------
    adata
        Counts with the cell types in ``obs[cell_type_key]``.
    model
        The GREmLN model (or a saved model's or a run directory's path).
    graphs_path
        The graph store with the types' full consensus networks (only read).
    cell_type_key
        The label column: which cells' states make a type's gene embeddings.
    held_out
        The edges held out of pre-training (:func:`hold_out_edges`; a table or its file from
        :func:`write_held_out`): the hidden edges. The models must have been pre-trained on
        the store :func:`hold_out_edges` wrote, or the score is contaminated.
    out_dir
        Where the result and the figures go.
    vanilla
        The vanilla-attention ablation trained identically (optional).
    compare
        Further models by name (e.g. the other ``--graph-integration`` variants), each
        evaluated like ``model``.
    cell_types
        The types whose networks are evaluated, e.g. those held out of pre-training (default:
        every type with a network).
    min_edges
        Networks with fewer edges among the type's expressed genes are left out.
    layer
        Layer holding the counts.
    n_splits, n_pcs, epochs, seed
        Splits (negatives and predictor weights), components of the PCA baseline, training
        steps of the link predictor, seed of everything.
    embed_options
        Further keyword arguments of :func:`gremln.embed.compute_embeddings`.
    progress
        Show progress bars.

    Returns
    -------
    The result as written (see :mod:`gremln.evaluate`).
    """
    if not isinstance(held_out, pd.DataFrame):
        held_out = read_held_out(held_out)
    models = {name: as_model(m) for name, m in model_set(model, vanilla, compare).items()}
    vocabularies = [set(m.vocabulary.genes) for m in models.values()]
    contexts, skipped = edge_contexts(
        adata,
        graphs_path,
        cell_type_key,
        held_out,
        known_genes=set.intersection(*vocabularies),
        cell_types=cell_types,
        min_edges=min_edges,
        layer=layer,
    )
    features = gene_feature_sets(
        adata,
        models,
        graphs_path,
        layer=layer,
        n_pcs=n_pcs,
        seed=seed,
        embed_options=embed_options,
        progress=progress,
    )
    per_split, per_context, pooled = edge_scores(
        contexts, features, n_splits=n_splits, seed=seed, epochs=epochs
    )
    scores = summarize(per_split)
    figures = [
        save_figure(figure, out_dir, name)
        for figure, name in zip(plot_curves(pooled, scores), FIGURES)
    ]
    result = {
        "evaluation": EVALUATION,
        "data": {
            "cells": int(adata.n_obs),
            "genes": int(adata.n_vars),
            "contexts": [
                {
                    "cell_type": c.cell_type,
                    "graph": c.graph,
                    "cells": int(len(c.rows)),
                    "genes": int(len(c.genes)),
                    "edges": int(len(c.pairs)),
                    "hidden": int(c.held_out.sum()),
                }
                for c in contexts
            ],
            "skipped": skipped,
        },
        "params": {
            "cell_type_key": cell_type_key,
            "held_out_pairs": int(len(held_out)),
            "min_edges": min_edges,
            "n_splits": n_splits,
            "n_pcs": n_pcs,
            "epochs": epochs,
            "seed": seed,
            "graph_attention": {name: conditioned for name, (_, conditioned) in features.items()},
            "predictor": "MLP on (a * b, |a - b|) of the pair's gene features, Adam, BCE "
            "against one sampled non-edge per edge",
        },
        "models": scores,
        "cell_types": per_context,
        "figures": figures,
    }
    write_result(out_dir, EVALUATION, result)
    return result
