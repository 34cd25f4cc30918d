"""Expression from frozen embeddings (paper appendix A.6): how much of a cell's expression a
linear map of its embedding recovers.

Targets: log-normalized expression (1e6 per cell, log1p) of the ``n_genes`` most variable genes
of the training cells. For each of ``n_splits`` random splits, ridge regression (the penalty
chosen by efficient leave-one-out over a grid on the training and validation cells) maps each
model's standardized cell embeddings, and the PCA baseline's components, to the targets; R^2 is
computed on the held-out test cells per gene and averaged over genes. The PCA baseline is fitted
on the training cells only, so it never sees the test cells' expression. The figure shows
predicted against true values of the test cells of the first split, one panel per model.
"""

from __future__ import annotations

import os

import numpy as np

from gremln.evaluate import (
    feature_sets,
    graph_source,
    model_set,
    new_figure,
    random_splits,
    save_figure,
    standardize,
    summarize,
    variable_genes,
    write_result,
)
from netinfer.pipeline import to_dense

EVALUATION = "expression"
FIGURE = "expression_predicted_vs_true.png"
RIDGE_PENALTIES = np.logspace(-2, 4, 13)


def ridge_predictions(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray
) -> tuple[np.ndarray, float]:
    """Ridge regression fitted on the training cells (penalty by leave-one-out over
    ``RIDGE_PENALTIES``): predictions for the test cells and the penalty chosen."""
    from sklearn.linear_model import RidgeCV

    ridge = RidgeCV(alphas=RIDGE_PENALTIES).fit(train_x, train_y)
    return ridge.predict(test_x), float(ridge.alpha_)


def r2_per_gene(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """1 - SSE / SST of each column (SST around the column's mean); constant columns give 0."""
    residual = ((y_true - y_pred) ** 2).sum(axis=0)
    total = ((y_true - y_true.mean(axis=0)) ** 2).sum(axis=0)
    return np.where(total > 0, 1.0 - residual / np.where(total > 0, total, 1.0), 0.0)


def expression_scores(
    features: dict,
    lognorm: np.ndarray,
    *,
    n_genes: int = 200,
    n_splits: int = 3,
    seed: int = 0,
) -> tuple[dict[str, list[dict]], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Fit and score the regression of every feature set on every split.

    Parameters
    ----------
    features
        Name -> function from a split's fitting rows to features of all cells
        (:func:`gremln.evaluate.feature_sets`).
    lognorm
        Log-normalized expression, cells x genes (sparse or dense; only the targets are
        densified).
    n_genes
        Target genes: the most variable over each split's fitting cells.
    n_splits, seed
        The random splits (:func:`gremln.evaluate.random_splits`).

    Returns
    -------
    Per feature set, the metrics of each split (``r2``: mean over genes; ``ridge_penalty``);
    per feature set, (true, predicted) test values of the first split.
    """
    scores: dict[str, list[dict]] = {name: [] for name in features}
    first: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for train, val, test in random_splits(lognorm.shape[0], n_splits=n_splits, seed=seed):
        fit_rows = np.sort(np.concatenate([train, val]))
        targets = to_dense(lognorm[:, variable_genes(lognorm, fit_rows, n_genes)])
        for name, featurize in features.items():
            x = standardize(featurize(fit_rows), fit_rows)
            predicted, penalty = ridge_predictions(x[fit_rows], targets[fit_rows], x[test])
            r2 = r2_per_gene(targets[test], predicted)
            scores[name].append({"r2": float(r2.mean()), "ridge_penalty": penalty})
            first.setdefault(name, (targets[test], predicted))
    return scores, first


def plot_predicted_vs_true(first: dict, scores: dict):
    """Predicted against true expression of test cells, one hexbin panel per model."""
    figure = new_figure(figsize=(3.6 * len(first), 3.6))
    axes = figure.subplots(1, len(first), squeeze=False)
    for axis, (name, (true, predicted)) in zip(axes[0], first.items()):
        axis.hexbin(true.ravel(), predicted.ravel(), gridsize=40, bins="log", cmap="viridis")
        low, high = float(true.min()), float(true.max())
        axis.plot([low, high], [low, high], color="0.3", linestyle="--", linewidth=0.8)
        axis.set_xlabel("true log-normalized expression")
        r2 = scores[name]["r2"]
        axis.set_title(f"{name}\nR² {r2['mean']:.3f} ± {r2['std']:.3f}", fontsize=9)
    axes[0][0].set_ylabel("predicted")
    return figure


def evaluate_expression(
    adata,
    model,
    graphs_path: str | os.PathLike[str],
    *,
    out_dir: str | os.PathLike[str],
    vanilla=None,
    compare: dict | None = None,
    graph_mode: str = "integrated",
    reference=None,
    cell_type_key: str | None = None,
    layer: str | None = None,
    n_genes: int = 200,
    n_splits: int = 3,
    n_pcs: int = 50,
    seed: int = 0,
    embed_options: dict | None = None,
    progress: bool = True,
) -> dict:
    """Linear regression from frozen embeddings to expression of held-out cells, with the PCA
    baseline; writes ``OUT_DIR/expression.json`` and ``OUT_DIR/expression_predicted_vs_true.png``.

    Parameters
    ----------
    adata
        Counts (``X`` or ``layer``).
    model
        The GREmLN model (or a saved model's or a run directory's path).
    graphs_path
        The graph store.
    out_dir
        Where the result and the figure go.
    vanilla
        The vanilla-attention ablation trained identically (optional).
    compare
        Further models by name (e.g. the other ``--graph-integration`` variants), each
        evaluated like ``model``.
    graph_mode
        As :func:`gremln.evaluate.feature_sets` (``celltype`` reads every cell's label).
    reference
        Labelled reference cells for the integration.
    cell_type_key
        Label column of the reference, or (without one) of the training cells; of every cell in
        celltype mode.
    layer
        Layer holding the counts.
    n_genes, n_splits, n_pcs, seed
        Target genes, random splits, components of the PCA baseline, seed of everything.
    embed_options
        Further keyword arguments of :func:`gremln.embed.compute_embeddings`.
    progress
        Show progress bars.

    Returns
    -------
    The result as written (see :mod:`gremln.evaluate`).
    """
    from netinfer.pipeline import normalize

    features = feature_sets(
        adata,
        model_set(model, vanilla, compare),
        graphs_path,
        graph_mode=graph_mode,
        reference=reference,
        cell_type_key=cell_type_key,
        layer=layer,
        n_pcs=n_pcs,
        seed=seed,
        embed_options=embed_options,
        progress=progress,
    )
    lognorm = normalize(adata.layers[layer] if layer is not None else adata.X)
    per_split, first = expression_scores(
        features, lognorm, n_genes=n_genes, n_splits=n_splits, seed=seed
    )
    scores = summarize(per_split)
    figure = save_figure(plot_predicted_vs_true(first, scores), out_dir, FIGURE)
    result = {
        "evaluation": EVALUATION,
        "data": {"cells": int(adata.n_obs), "genes": int(adata.n_vars)},
        "params": {
            "graphs": graph_source(graph_mode, reference),
            "target_genes": int(min(n_genes, adata.n_vars)),
            "n_splits": n_splits,
            "n_pcs": n_pcs,
            "seed": seed,
            "regression": "ridge, penalty by leave-one-out on the training cells",
        },
        "models": scores,
        "figures": [figure],
    }
    write_result(out_dir, EVALUATION, result)
    return result
