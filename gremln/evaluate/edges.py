"""Edge prediction on held-out edges of cell-type graphs (paper section 4): do a model's frozen
gene embeddings, given part of a cell type's network, recover the rest of it?

Contexts: every cell type of the data with a consensus network in the graph store (or those
asked for) with at least ``min_edges`` edges among genes expressed in its cells and known to
every model. A context's genes are those edges' endpoints; edges are taken undirected.

For each of ``n_splits`` seeded splits and each context, ``hidden_fraction`` (15%) of the edges
are hidden. Negatives are gene pairs that are no edge at all: as many as the visible edges for
training and as many as the hidden ones for testing, disjoint. Every model sees the visible
graph only, in its own way:

- GREmLN (diffusion attention) through its attention: the cells of the type are embedded with
  the visible graph as every cell's graph (written to the graph store as ``VISIBLE_GRAPH``,
  removed at the end), and each gene's state is averaged over those cells (genes in no cell's
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
VISIBLE_GRAPH = "gremln-evaluate-edges"  # the visible graph GREmLN embeds with, in the store


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
    """

    cell_type: str
    graph: str
    genes: np.ndarray
    rows: np.ndarray
    pairs: np.ndarray


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
    pairs: np.ndarray, n_genes: int, *, hidden_fraction: float = 0.15, seed: int = 0, split: int = 0
) -> EdgeSplit:
    """Hide ``hidden_fraction`` of the edges (at least one) and draw negatives (pairs that are
    no edge), as many as the visible edges for training and as the hidden ones for testing.

    Deterministic in (``seed``, ``split``).

    Raises
    ------
    ValueError
        Fewer non-edges than negatives needed.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, split, 0x65646765]))  # "edge"
    order = rng.permutation(len(pairs))
    n_hidden = min(max(1, int(round(hidden_fraction * len(pairs)))), len(pairs) - 1)
    hidden, visible = pairs[np.sort(order[:n_hidden])], pairs[np.sort(order[n_hidden:])]
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
    *,
    known_genes: set[str] | None = None,
    cell_types=None,
    min_edges: int = 10,
    layer: str | None = None,
) -> tuple[list[EdgeContext], dict[str, str]]:
    """The cell types' networks to evaluate on (see the module docstring), and why the other
    types with a network were left out."""
    import scipy.sparse as sp

    from netinfer.store import GraphStore

    require_obs_column(adata, cell_type_key)
    labels = adata.obs[cell_type_key].astype(str).to_numpy()
    counts = sp.csr_matrix(adata.layers[layer] if layer is not None else adata.X)
    column = {gene: i for i, gene in enumerate(adata.var_names.astype(str))}
    wanted = set(labels) if cell_types is None else set(map(str, cell_types)) & set(labels)
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
            contexts.append(EdgeContext(cell_type, name, genes, rows, pairs))
    if not contexts:
        raise InputError(
            f"{graphs_path}: no consensus network of a cell type in obs[{cell_type_key!r}] "
            f"has {min_edges} edges or more among genes expressed in its cells "
            f"({'; '.join(f'{t}: {why}' for t, why in skipped.items()) or 'no network at all'})"
        )
    return contexts, skipped


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
    import pandas as pd
    from sklearn.decomposition import PCA

    from gremln.embed import compute_embeddings
    from netinfer.pipeline import normalize, to_dense
    from netinfer.store import GraphStore

    options = {"layer": layer, "progress": progress, **(embed_options or {})}
    column = {gene: i for i, gene in enumerate(adata.var_names.astype(str))}

    def model_features(model) -> GeneFeatures:
        cache: dict[str, np.ndarray] = {}  # a model that ignores graphs embeds a type once

        def features(context: EdgeContext, visible: np.ndarray) -> np.ndarray:
            if ignores_graphs(model) and context.cell_type in cache:
                return cache[context.cell_type]
            graph_mode = "none"
            if not ignores_graphs(model):
                graph_mode = f"ppi:{VISIBLE_GRAPH}"
                edges = pd.DataFrame(
                    {"gene_a": context.genes[visible[:, 0]], "gene_b": context.genes[visible[:, 1]]}
                )
                with GraphStore.open(graphs_path, mode="a") as store:
                    store.add_graph(
                        VISIBLE_GRAPH, edges, kind="ppi", directed=False, overwrite=True
                    )
            embedded = compute_embeddings(
                adata[context.rows], model, graphs_path, graph_mode=graph_mode, **options
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
    hidden_fraction: float = 0.15,
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
            split_edges(
                c.pairs, len(c.genes), hidden_fraction=hidden_fraction, seed=seed, split=split
            )
            for c in contexts
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
    out_dir: str | os.PathLike[str],
    vanilla=None,
    compare: dict | None = None,
    cell_types=None,
    min_edges: int = 10,
    hidden_fraction: float = 0.15,
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
        The graph store with the types' consensus networks (the visible graph is written there
        while the evaluation runs, as ``VISIBLE_GRAPH``).
    cell_type_key
        The label column: which cells' states make a type's gene embeddings.
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
    hidden_fraction
        Edges hidden per split.
    layer
        Layer holding the counts.
    n_splits, n_pcs, epochs, seed
        Edge splits, components of the PCA baseline, training steps of the link predictor,
        seed of everything.
    embed_options
        Further keyword arguments of :func:`gremln.embed.compute_embeddings`.
    progress
        Show progress bars.

    Returns
    -------
    The result as written (see :mod:`gremln.evaluate`).
    """
    from netinfer.store import GraphStore

    models = {name: as_model(m) for name, m in model_set(model, vanilla, compare).items()}
    vocabularies = [set(m.vocabulary.genes) for m in models.values()]
    contexts, skipped = edge_contexts(
        adata,
        graphs_path,
        cell_type_key,
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
    try:
        per_split, per_context, pooled = edge_scores(
            contexts,
            features,
            n_splits=n_splits,
            hidden_fraction=hidden_fraction,
            seed=seed,
            epochs=epochs,
        )
    finally:
        with GraphStore.open(graphs_path, mode="a") as store:
            if VISIBLE_GRAPH in store:
                store.remove(VISIBLE_GRAPH)
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
                }
                for c in contexts
            ],
            "skipped": skipped,
        },
        "params": {
            "cell_type_key": cell_type_key,
            "hidden_fraction": hidden_fraction,
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
