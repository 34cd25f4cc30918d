"""Cell-type classification from frozen embeddings (paper section 4).

For each of ``n_splits`` stratified random splits (70% train, 10% validation, 20% test), every
model's cell embeddings (and the PCA baseline's components) are standardized on the training
cells and a linear classifier (multinomial logistic regression) is fitted by full-batch Adam on
the training cells, stopping when the validation loss has not improved for ``patience`` epochs
and keeping the best weights. Reported on the test cells: macro precision, recall and F1 over the
classes present in the test labels or predictions, and accuracy. The figure holds one row-
normalized confusion matrix per model, summed over the splits' test cells.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from gremln.evaluate import (
    feature_sets,
    graph_source,
    model_set,
    new_figure,
    random_splits,
    refuse_label_reading_graphs,
    save_figure,
    standardize,
    summarize,
    write_result,
)
from netinfer.sc.validate import require_obs_column

EVALUATION = "celltype"
FIGURE = "celltype_confusion.png"


@dataclass
class LinearProbe:
    """A fitted linear classifier: ``predict`` gives class codes."""

    weight: torch.Tensor
    bias: torch.Tensor
    epochs: int
    best_epoch: int

    def predict(self, features: np.ndarray) -> np.ndarray:
        logits = torch.from_numpy(features).float() @ self.weight.T + self.bias
        return logits.argmax(dim=1).numpy()


def fit_linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    *,
    n_classes: int,
    seed: int = 0,
    lr: float = 0.01,
    weight_decay: float = 1e-4,
    max_epochs: int = 2000,
    patience: int = 50,
    min_delta: float = 1e-4,
) -> LinearProbe:
    """Multinomial logistic regression with early stopping on the validation loss.

    Parameters
    ----------
    train_x, train_y, val_x, val_y
        Standardized features and class codes (0..n_classes-1) of the training and validation
        cells.
    n_classes
        Number of classes.
    seed
        Seed of the initial weights.
    lr, weight_decay
        Adam's step size and L2 penalty (full batch).
    max_epochs, patience, min_delta
        Stop after ``max_epochs``, or after ``patience`` epochs in which the validation loss did
        not fall by more than ``min_delta`` below its best (separable classes would otherwise
        creep on).

    Returns
    -------
    The weights of the epoch with the best validation loss.
    """
    generator = torch.Generator().manual_seed(seed)
    layer = torch.nn.Linear(train_x.shape[1], n_classes)
    with torch.no_grad():
        layer.weight.normal_(0.0, 0.01, generator=generator)
        layer.bias.zero_()
    optimizer = torch.optim.Adam(layer.parameters(), lr=lr, weight_decay=weight_decay)
    inputs = {
        part: (torch.from_numpy(x).float(), torch.from_numpy(y).long())
        for part, x, y in (("train", train_x, train_y), ("val", val_x, val_y))
    }
    best = (float("inf"), 0, layer.weight.detach().clone(), layer.bias.detach().clone())
    epoch = 0
    while epoch < max_epochs and epoch - best[1] < patience:
        epoch += 1
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(layer(inputs["train"][0]), inputs["train"][1]).backward()
        optimizer.step()
        with torch.no_grad():
            loss = float(
                torch.nn.functional.cross_entropy(layer(inputs["val"][0]), inputs["val"][1])
            )
        if loss < best[0] - min_delta:
            best = (loss, epoch, layer.weight.detach().clone(), layer.bias.detach().clone())
    return LinearProbe(best[2], best[3], epochs=epoch, best_epoch=best[1])


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """Macro precision, recall and F1 (over the classes in ``y_true`` or ``y_pred``; a class
    never predicted has precision 0) and accuracy."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, average="macro", zero_division=0
    )
    return {
        "macro_f1": float(f1),
        "precision": float(precision),
        "recall": float(recall),
        "accuracy": float(accuracy_score(y_true, y_pred)),
    }


Classifier = Callable[[np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]
"""Fits on a split's training (and validation) rows and predicts the class codes of its test
rows: ``classify(train, val, test, split_index)``."""


def linear_probe(
    featurize: Callable[[np.ndarray], np.ndarray], codes: np.ndarray, n_classes: int, seed: int
) -> Classifier:
    """A :class:`LinearProbe` on standardized features (``featurize``: a split's fitting rows
    to features of all cells, see :func:`gremln.evaluate.feature_sets`)."""

    def classify(train, val, test, split: int) -> np.ndarray:
        x = standardize(featurize(np.sort(np.concatenate([train, val]))), train)
        probe = fit_linear_probe(
            x[train], codes[train], x[val], codes[val], n_classes=n_classes, seed=seed + split
        )
        return probe.predict(x[test])

    return classify


def classification_scores(
    classifiers: dict[str, Classifier], codes: np.ndarray, n_classes: int, *, n_splits, seed
) -> tuple[dict[str, list[dict]], dict[str, np.ndarray]]:
    """Every classifier on every stratified random split
    (:func:`gremln.evaluate.random_splits`): per classifier, the metrics of each split
    (:func:`classification_metrics`) and the confusion counts (true x predicted, summed over
    the splits' test cells)."""
    scores: dict[str, list[dict]] = {name: [] for name in classifiers}
    confusion = {name: np.zeros((n_classes, n_classes), dtype=np.int64) for name in classifiers}
    splits = random_splits(len(codes), n_splits=n_splits, seed=seed, labels=codes)
    for i, (train, val, test) in enumerate(splits):
        for name, classify in classifiers.items():
            predicted = classify(train, val, test, i)
            scores[name].append(classification_metrics(codes[test], predicted))
            np.add.at(confusion[name], (codes[test], predicted), 1)
    return scores, confusion


def celltype_scores(
    features: dict,
    labels: np.ndarray,
    *,
    n_splits: int = 3,
    seed: int = 0,
) -> tuple[dict[str, list[dict]], dict[str, np.ndarray], list[str]]:
    """Fit and score the linear classifier of every feature set on every split.

    Parameters
    ----------
    features
        Name -> function from a split's fitting rows to features of all cells
        (:func:`gremln.evaluate.feature_sets`).
    labels
        Every cell's type.
    n_splits, seed
        The stratified random splits (:func:`gremln.evaluate.random_splits`).

    Returns
    -------
    Per feature set, the metrics of each split; per feature set, the confusion counts (true x
    predicted, summed over the splits' test cells); the class names.
    """
    classes, codes = np.unique(np.asarray(labels).astype(str), return_inverse=True)
    probes = {name: linear_probe(f, codes, len(classes), seed) for name, f in features.items()}
    scores, confusion = classification_scores(
        probes, codes, len(classes), n_splits=n_splits, seed=seed
    )
    return scores, confusion, list(classes)


def plot_confusion(confusion: dict[str, np.ndarray], classes: list[str], scores: dict):
    """One row-normalized confusion matrix per model, side by side."""
    size = 1.6 + 0.35 * len(classes)
    figure = new_figure(figsize=(size * len(confusion), size + 1))
    axes = figure.subplots(1, len(confusion), squeeze=False)
    for axis, (name, counts) in zip(axes[0], confusion.items()):
        rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        axis.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        axis.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
        axis.set_yticks(range(len(classes)), classes if axis is axes[0][0] else [], fontsize=7)
        axis.set_xlabel("predicted")
        f1 = scores[name]["macro_f1"]
        axis.set_title(f"{name}\nmacro-F1 {f1['mean']:.3f} ± {f1['std']:.3f}", fontsize=9)
    axes[0][0].set_ylabel("true")
    return figure


def evaluate_celltype(
    adata,
    model,
    graphs_path: str | os.PathLike[str],
    *,
    cell_type_key: str,
    out_dir: str | os.PathLike[str],
    vanilla=None,
    compare: dict | None = None,
    graph_mode: str = "integrated",
    reference=None,
    layer: str | None = None,
    n_splits: int = 3,
    n_pcs: int = 50,
    seed: int = 0,
    embed_options: dict | None = None,
    progress: bool = True,
) -> dict:
    """Cell-type classification from frozen embeddings, with baselines; writes the result file
    ``OUT_DIR/celltype.json`` and the figure ``OUT_DIR/celltype_confusion.png``.

    Parameters
    ----------
    adata
        Counts with the cell types in ``obs[cell_type_key]``.
    model
        The GREmLN model (or a saved model's or a run directory's path).
    graphs_path
        The graph store.
    cell_type_key
        The label column (of ``adata``; of ``reference`` too when one is given).
    out_dir
        Where the result and the figure go.
    vanilla
        The vanilla-attention ablation trained identically (optional).
    compare
        Further models by name (e.g. the other ``--graph-integration`` variants), each
        evaluated like ``model``.
    graph_mode
        ``integrated``, ``ppi:NAME`` or ``none`` (see :func:`gremln.evaluate.feature_sets`);
        not ``celltype``, which would give every test cell the graph of its own label, nor an
        ``assignment:NAME`` made from the cells' own labels (``netinfer cellspecific``).
    reference
        Labelled reference cells for the integration (default: each split's training cells);
        refused when it holds cells of ``adata`` (their labels would reach their neighbours'
        graphs), as is an ``assignment:NAME`` whose integration read them.
    layer
        Layer holding the counts.
    n_splits, n_pcs, seed
        Random splits, components of the PCA baseline, seed of everything.
    embed_options
        Further keyword arguments of :func:`gremln.embed.compute_embeddings`.
    progress
        Show progress bars.

    Returns
    -------
    The result as written (see :mod:`gremln.evaluate`).
    """
    if graph_mode == "celltype":
        raise ValueError(
            "graph mode celltype gives every test cell the graph of its own label; use "
            "integrated (the default), ppi:NAME or none"
        )
    require_obs_column(adata, cell_type_key)
    refuse_label_reading_graphs(
        graphs_path,
        graph_mode,
        adata,
        reference=reference,
        cell_type_key=cell_type_key,
        layer=layer,
    )
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
    labels = adata.obs[cell_type_key].astype(str).to_numpy()
    per_split, confusion, classes = celltype_scores(features, labels, n_splits=n_splits, seed=seed)
    scores = summarize(per_split)
    figure = save_figure(plot_confusion(confusion, classes, scores), out_dir, FIGURE)
    result = {
        "evaluation": EVALUATION,
        "data": {"cells": int(adata.n_obs), "genes": int(adata.n_vars), "cell_types": classes},
        "params": {
            "cell_type_key": cell_type_key,
            "graphs": graph_source(graph_mode, reference),
            "n_splits": n_splits,
            "n_pcs": n_pcs,
            "seed": seed,
            "classifier": "logistic regression, Adam, early stopping on validation loss",
        },
        "models": scores,
        "confusion": {name: counts.tolist() for name, counts in confusion.items()},
        "figures": [figure],
    }
    write_result(out_dir, EVALUATION, result)
    return result
