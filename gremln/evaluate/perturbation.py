"""Reverse perturbation prediction (paper section 4): from a perturbed cell's profile, which gene
was perturbed?

The data is any Perturb-seq-like AnnData of counts with the perturbed gene of every cell in
``obs[perturbation_key]`` (``control`` for unperturbed cells, which are left out: the classes are
the perturbations). On ``n_splits`` stratified random splits (70/10/20%), every model is scored:

- frozen (``gremln``, ``vanilla``, and the ``pca`` baseline): the linear probe of
  :mod:`~gremln.evaluate.celltype` on the cell embeddings;
- fine-tuned (``gremln_finetuned``, ``vanilla_finetuned``): a copy of the model with a linear
  head on the mean of its final gene-token states, trained end to end with cross-entropy on the
  training cells for ``epochs`` epochs, keeping the epoch of lowest validation loss;
- ``lasso``: L1-penalized (lasso) multinomial logistic regression on the standardized
  log-normalized expression of the most variable genes, its penalty chosen on the validation
  cells.

Every perturbed gene is removed from every cell's input (its column dropped from the data, for
all models and baselines, and from the control cells too): a knocked-out gene is simply absent
from its cells' tokens, so with it the task is trivial (the lasso reached 0.92 on the simulated
knock-outs from that alone); without it, only the downstream effects tell the perturbations
apart. Use :func:`without_perturbed_genes` on the pre-training cells as well.

Reported on the test cells: accuracy and macro-F1 (and macro precision and recall). Perturbation
labels are read for the training and validation cells only: the test cells' inputs (tokens and
graphs) never depend on them.
"""

from __future__ import annotations

import copy
import os
import warnings

import anndata as ad
import numpy as np
import torch
from torch import nn

from gremln.evaluate import (
    EVALUATION_ASSIGNMENT,
    as_model,
    feature_sets,
    graph_source,
    model_set,
    refuse_label_reading_graphs,
    save_figure,
    split_graph_settings,
    standardize,
    summarize,
    variable_genes,
    write_result,
)
from gremln.evaluate.celltype import (
    Classifier,
    classification_scores,
    linear_probe,
    plot_confusion,
)
from netinfer.io import InputError
from netinfer.sc.validate import require_obs_column

EVALUATION = "perturbation"
FIGURE = "perturbation_confusion.png"
LASSO_PENALTIES = (0.01, 0.1, 1.0)  # inverse strengths C, strongest first: ties keep the sparser


def perturbed_cells(
    adata, perturbation_key: str, *, control: str = "control", min_cells: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """The perturbed cells (rows) and their perturbations.

    Raises
    ------
    InputError
        No such column, fewer than two perturbations, or perturbations with fewer than
        ``min_cells`` cells (too few to split into training, validation and test cells).
    """
    require_obs_column(adata, perturbation_key)
    labels = adata.obs[perturbation_key].astype(str).to_numpy()
    rows = np.flatnonzero(labels != control)
    names, counts = np.unique(labels[rows], return_counts=True)
    if len(names) < 2:
        raise InputError(
            f"<data>: obs[{perturbation_key!r}] has {len(names)} perturbation(s) besides the "
            f"control {control!r}; reverse perturbation prediction needs two or more"
        )
    rare = [f"{name} ({n})" for name, n in zip(names, counts) if n < min_cells]
    if rare:
        raise InputError(
            f"<data>: obs[{perturbation_key!r}] has perturbation(s) with fewer than {min_cells} "
            f"cells, too few to split: {', '.join(rare[:5])}; remove them or lower min_cells"
        )
    return rows, labels[rows]


class PerturbationClassifier(nn.Module):
    """A GREmLN model with a linear head on the mean of its final gene-token states."""

    def __init__(self, model, n_classes: int):
        super().__init__()
        self.model = model
        self.head = nn.Linear(model.config.d_model, n_classes)

    def forward(self, batch: dict) -> torch.Tensor:
        """Class logits of a padded batch's cells."""
        hidden = self.model(batch)["hidden"]
        genes = ~batch["padding_mask"].to(hidden.device)
        genes[:, 0] = False  # CLS
        pooled = (hidden * genes[..., None]).sum(dim=1) / genes.sum(dim=1, keepdim=True)
        return self.head(pooled)


def without_perturbed_genes(
    adata, perturbation_key: str, *, control: str = "control"
) -> tuple[ad.AnnData, list[str]]:
    """``adata`` (a copy) without the genes any of its cells' perturbations names, in every cell
    (controls included), and those genes. Perturbations that name no gene of ``adata``
    (e.g. guide ids) remove nothing."""
    require_obs_column(adata, perturbation_key)
    named = set(adata.obs[perturbation_key].astype(str)) - {control}
    genes = adata.var_names.astype(str)
    removed = genes[genes.isin(named)]
    return adata[:, ~genes.isin(named)].copy(), sorted(removed)


def finetuned_classifier(
    adata,
    model,
    graphs_path,
    codes: np.ndarray,
    n_classes: int,
    *,
    graph_mode: str = "integrated",
    reference=None,
    cell_type_key: str | None = None,
    layer: str | None = None,
    epochs: int = 5,
    lr: float = 1e-4,
    head_lr: float = 1e-3,
    batch_size: int = 16,
    max_length: int | None = 2048,
    seed: int = 0,
    hook=None,
) -> Classifier:
    """Fine-tuning as a :data:`~gremln.evaluate.celltype.Classifier`: per split, a copy of
    ``model`` with a :class:`PerturbationClassifier` head, trained with cross-entropy on the
    training cells (AdamW; ``lr`` for the model, ``head_lr`` for the head; cells reshuffled
    every epoch), keeping the weights of the epoch with the lowest validation loss.

    ``codes`` are read at the training and validation rows only. The cells' graphs are as in
    :func:`gremln.evaluate.feature_sets`; ``hook`` is called with every batch the model
    receives.
    """
    from gremln.embed import token_dataset

    def batches(dataset, rows: np.ndarray):
        dataset.indices = rows  # the dataset serves these cells, in this order
        for batch in dataset:
            batch.pop("targets")  # nothing is masked
            if hook is not None:
                hook(batch)
            yield batch

    def classify(train, val, test, split: int) -> np.ndarray:
        fit_rows = np.sort(np.concatenate([train, val]))
        dataset, _ = token_dataset(
            adata,
            model,
            graphs_path,
            **split_graph_settings(
                adata, model, fit_rows, graph_mode, reference, cell_type_key, layer
            ),
            cell_type_key=cell_type_key,
            assignment=EVALUATION_ASSIGNMENT,
            layer=layer,
            max_length=max_length,
            batch_size=batch_size,
        )
        rng = np.random.default_rng(np.random.SeedSequence([seed, split, 0x66696E65]))  # "fine"
        with torch.random.fork_rng(devices=[]):  # seeded head and dropout, global RNG untouched
            torch.manual_seed(seed + split)
            classifier = PerturbationClassifier(copy.deepcopy(model), n_classes)
            optimizer = torch.optim.AdamW(
                [
                    {"params": classifier.model.parameters(), "lr": lr},
                    {"params": classifier.head.parameters(), "lr": head_lr},
                ]
            )
            best = (float("inf"), copy.deepcopy(classifier.state_dict()))
            for _ in range(epochs):
                classifier.train()
                for batch in batches(dataset, rng.permutation(train)):
                    optimizer.zero_grad()
                    loss = nn.functional.cross_entropy(
                        classifier(batch), torch.from_numpy(codes[batch["cells"].numpy()])
                    )
                    loss.backward()
                    optimizer.step()
                logits, cells = _logits(classifier, batches(dataset, val))
                loss = float(nn.functional.cross_entropy(logits, torch.from_numpy(codes[cells])))
                if loss < best[0]:
                    best = (loss, copy.deepcopy(classifier.state_dict()))
            classifier.load_state_dict(best[1])
            logits, cells = _logits(classifier, batches(dataset, test))
        return logits.argmax(dim=1).numpy()[np.argsort(cells)]  # by row, as test is sorted

    return classify


@torch.no_grad()
def _logits(classifier: PerturbationClassifier, batches) -> tuple[torch.Tensor, np.ndarray]:
    """Logits of every cell the batches hold, and those cells (rows of the data)."""
    classifier.eval()
    logits, cells = [], []
    for batch in batches:
        logits.append(classifier(batch).float().cpu())
        cells.append(batch["cells"].numpy())
    return torch.cat(logits), np.concatenate(cells)


def lasso_classifier(lognorm, codes: np.ndarray, *, n_genes: int = 2000, seed: int = 0):
    """The lasso baseline as a :data:`~gremln.evaluate.celltype.Classifier`: L1-penalized
    multinomial logistic regression (saga) on the standardized log-normalized expression of the
    ``n_genes`` most variable genes of the fitting cells; the penalty in ``LASSO_PENALTIES``
    with the best validation accuracy. ``codes`` are read at the training and validation rows
    only."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    from netinfer.pipeline import to_dense

    def classify(train, val, test, split: int) -> np.ndarray:
        fit_rows = np.sort(np.concatenate([train, val]))
        x = standardize(to_dense(lognorm[:, variable_genes(lognorm, fit_rows, n_genes)]), train)
        best = (-1.0, None)
        for penalty in LASSO_PENALTIES:
            lasso = LogisticRegression(
                C=penalty, l1_ratio=1.0, solver="saga", max_iter=500, tol=1e-3, random_state=seed
            )
            with warnings.catch_warnings():
                # a penalty that does not converge within max_iter simply loses on validation
                warnings.simplefilter("ignore", ConvergenceWarning)
                lasso.fit(x[train], codes[train])
            accuracy = float((lasso.predict(x[val]) == codes[val]).mean()) if len(val) else 0.0
            if accuracy > best[0]:
                best = (accuracy, lasso)
        return best[1].predict(x[test])

    return classify


def evaluate_perturbation(
    adata,
    model,
    graphs_path: str | os.PathLike[str],
    *,
    perturbation_key: str,
    out_dir: str | os.PathLike[str],
    control: str = "control",
    vanilla=None,
    compare: dict | None = None,
    graph_mode: str = "integrated",
    reference=None,
    cell_type_key: str | None = None,
    layer: str | None = None,
    min_cells: int = 5,
    n_splits: int = 3,
    n_pcs: int = 50,
    epochs: int = 5,
    seed: int = 0,
    embed_options: dict | None = None,
    progress: bool = True,
) -> dict:
    """Reverse perturbation prediction, frozen and fine-tuned, with the lasso and PCA baselines;
    writes ``OUT_DIR/perturbation.json`` and ``OUT_DIR/perturbation_confusion.png``.

    Parameters
    ----------
    adata
        Counts with each cell's perturbed gene in ``obs[perturbation_key]``.
    model
        The GREmLN model (or a saved model's or a run directory's path).
    graphs_path
        The graph store.
    perturbation_key
        The perturbation column.
    out_dir
        Where the result and the figure go.
    control
        The label of unperturbed cells (left out).
    vanilla
        The vanilla-attention ablation trained identically (optional).
    compare
        Further models by name (e.g. the other ``--graph-integration`` variants), each
        evaluated like ``model``.
    graph_mode, reference, cell_type_key
        The cells' graphs, as :func:`gremln.evaluate.feature_sets` (``ppi:NAME`` gives every
        cell the same graph; ``integrated`` without a reference reads ``cell_type_key`` of the
        training and validation cells); not ``celltype``, nor a reference (or an
        ``assignment:NAME``) that read the labels of perturbed cells.
    layer
        Layer holding the counts.
    min_cells
        Fewest cells a perturbation may have.
    n_splits, n_pcs, epochs, seed
        Random splits, components of the PCA baseline, fine-tuning epochs, seed of everything.
    embed_options
        Further keyword arguments of :func:`gremln.embed.compute_embeddings` (``max_length``,
        ``batch_size`` and ``hook`` also serve fine-tuning).
    progress
        Show progress bars.

    Returns
    -------
    The result as written (see :mod:`gremln.evaluate`).
    """
    from netinfer.pipeline import normalize

    if graph_mode == "celltype":
        raise ValueError("graph mode celltype reads every cell's label; use integrated or ppi:NAME")
    rows, labels = perturbed_cells(adata, perturbation_key, control=control, min_cells=min_cells)
    refuse_label_reading_graphs(
        graphs_path,
        graph_mode,
        adata[rows],
        reference=reference,
        cell_type_key=cell_type_key,
        layer=layer,
    )
    perturbed, removed = without_perturbed_genes(adata[rows], perturbation_key, control=control)
    classes, codes = np.unique(labels, return_inverse=True)
    models = {name: as_model(m) for name, m in model_set(model, vanilla, compare).items()}
    graphs = dict(graph_mode=graph_mode, reference=reference, cell_type_key=cell_type_key)
    features = feature_sets(
        perturbed,
        models,
        graphs_path,
        **graphs,
        layer=layer,
        n_pcs=n_pcs,
        seed=seed,
        embed_options=embed_options,
        progress=progress,
    )
    classifiers = {name: linear_probe(f, codes, len(classes), seed) for name, f in features.items()}
    options = embed_options or {}
    for name, m in models.items():
        classifiers[f"{name}_finetuned"] = finetuned_classifier(
            perturbed,
            m,
            graphs_path,
            codes,
            len(classes),
            **graphs,
            layer=layer,
            epochs=epochs,
            batch_size=options.get("batch_size", 16),
            max_length=options.get("max_length", 2048),
            seed=seed,
            hook=options.get("hook"),
        )
    lognorm = normalize(perturbed.layers[layer] if layer is not None else perturbed.X)
    classifiers["lasso"] = lasso_classifier(lognorm, codes, seed=seed)
    per_split, confusion = classification_scores(
        classifiers, codes, len(classes), n_splits=n_splits, seed=seed
    )
    scores = summarize(per_split)
    figure = save_figure(plot_confusion(confusion, list(classes), scores), out_dir, FIGURE)
    result = {
        "evaluation": EVALUATION,
        "data": {
            "cells": int(len(rows)),
            "control_cells": int(adata.n_obs - len(rows)),
            "genes": int(perturbed.n_vars),
            "perturbations": list(classes),
            "removed_genes": removed,
        },
        "params": {
            "perturbation_key": perturbation_key,
            "control": control,
            "graphs": graph_source(graph_mode, reference),
            "n_splits": n_splits,
            "n_pcs": n_pcs,
            "epochs": epochs,
            "seed": seed,
            "frozen": "linear probe on cell embeddings (as celltype)",
            "finetuned": "linear head on mean-pooled states, cross-entropy, AdamW, best "
            "validation epoch",
            "lasso": f"L1 logistic regression, C in {list(LASSO_PENALTIES)} by validation",
        },
        "models": scores,
        "confusion": {name: counts.tolist() for name, counts in confusion.items()},
        "figures": [figure],
    }
    write_result(out_dir, EVALUATION, result)
    return result
