"""Every evaluation in one run, and one markdown table of their results.

:func:`evaluate_all` runs :mod:`~gremln.evaluate.celltype`, :mod:`~gremln.evaluate.expression`,
:mod:`~gremln.evaluate.edges` and, given perturbation data, :mod:`~gremln.evaluate.perturbation`,
each writing its own result file into ``OUT_DIR``, then ``OUT_DIR/summary.md``: one row per
model, one column per evaluation metric, mean ± std over the splits.
"""

from __future__ import annotations

import os
from pathlib import Path

from gremln.evaluate import as_model, refuse_label_reading_graphs
from netinfer.io import InputError, atomic_write

SUMMARY = "summary.md"
TABLE_METRICS = {
    "celltype": ("macro_f1", "precision", "recall", "accuracy"),
    "expression": ("r2",),
    "edges": ("auroc", "ap"),
    "perturbation": ("accuracy", "macro_f1"),
}


def summary_table(results: dict[str, dict]) -> str:
    """A markdown table of result files (evaluation -> result): a row per model (in order of
    first appearance), a column per metric of ``TABLE_METRICS``; "–" where a model was not
    part of an evaluation."""
    columns = [
        (evaluation, metric) for evaluation in results for metric in TABLE_METRICS[evaluation]
    ]
    models = list(dict.fromkeys(name for result in results.values() for name in result["models"]))
    lines = [
        "| model | "
        + " | ".join(f"{evaluation} {metric}" for evaluation, metric in columns)
        + " |",
        "|---" + "|---:" * len(columns) + "|",
    ]
    for name in models:
        cells = []
        for evaluation, metric in columns:
            summary = results[evaluation]["models"].get(name, {}).get(metric)
            cells.append(
                "–" if summary is None else f"{summary['mean']:.3f} ± {summary['std']:.3f}"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def evaluate_all(
    adata,
    model,
    graphs_path: str | os.PathLike[str],
    *,
    cell_type_key: str,
    out_dir: str | os.PathLike[str],
    vanilla=None,
    compare: dict | None = None,
    held_out=None,
    perturbation=None,
    perturbation_key: str | None = None,
    control: str = "control",
    graph_mode: str = "integrated",
    reference=None,
    layer: str | None = None,
    n_splits: int = 3,
    n_pcs: int = 50,
    seed: int = 0,
    embed_options: dict | None = None,
    evaluation_options: dict[str, dict] | None = None,
    progress: bool = True,
) -> dict[str, dict]:
    """Run every evaluation with its defaults and write ``OUT_DIR/summary.md``.

    Parameters
    ----------
    adata
        Counts with the cell types in ``obs[cell_type_key]`` (celltype, expression, edges).
    model, graphs_path, out_dir, vanilla, compare, graph_mode, reference, layer, n_splits, n_pcs,
    seed, embed_options, progress
        As in every evaluation (e.g. :func:`gremln.evaluate.celltype.evaluate_celltype`).
    cell_type_key
        The label column of ``adata`` (and of ``reference``).
    held_out
        The edges held out of the models' pre-training
        (:func:`gremln.evaluate.edges.hold_out_edges`): the edges evaluation runs only with
        them, since edges the models saw in pre-training cannot be "recovered".
    perturbation
        Perturb-seq-like counts for :func:`gremln.evaluate.perturbation.evaluate_perturbation`
        (optional; the same graphs settings apply to them).
    perturbation_key, control
        Its perturbation column and control label.
    evaluation_options
        Evaluation -> further keyword arguments of its function, e.g. ``{"edges": {"epochs":
        50}, "perturbation": {"epochs": 2}}``.

    Returns
    -------
    Evaluation -> its result, as written.
    """
    from gremln.evaluate.celltype import evaluate_celltype
    from gremln.evaluate.edges import evaluate_edges
    from gremln.evaluate.expression import evaluate_expression
    from gremln.evaluate.perturbation import evaluate_perturbation, perturbed_cells

    if perturbation is not None:  # checked first: a bad column fails before the long runs
        if perturbation_key is None:
            raise ValueError("perturbation data needs perturbation_key, its perturbation column")
        try:
            rows, _ = perturbed_cells(perturbation, perturbation_key, control=control)
        except InputError as error:  # say which of the two data sets it is about
            raise InputError(str(error).replace("<data>", "<perturbation>")) from error
        refuse_label_reading_graphs(
            graphs_path,
            graph_mode,
            perturbation[rows],
            reference=reference,
            cell_type_key=cell_type_key,
            layer=layer,
        )
    model = as_model(model)
    vanilla = as_model(vanilla) if vanilla is not None else None
    compare = {name: as_model(other) for name, other in (compare or {}).items()}
    common = dict(
        out_dir=out_dir,
        vanilla=vanilla,
        compare=compare,
        layer=layer,
        n_splits=n_splits,
        n_pcs=n_pcs,
        seed=seed,
        embed_options=embed_options,
        progress=progress,
    )
    graphs = dict(graph_mode=graph_mode, reference=reference, cell_type_key=cell_type_key)
    extra = {evaluation: {} for evaluation in TABLE_METRICS} | (evaluation_options or {})
    results = {
        "celltype": evaluate_celltype(
            adata, model, graphs_path, **graphs, **common, **extra["celltype"]
        ),
        "expression": evaluate_expression(
            adata, model, graphs_path, **graphs, **common, **extra["expression"]
        ),
    }
    if held_out is not None:
        results["edges"] = evaluate_edges(
            adata,
            model,
            graphs_path,
            cell_type_key=cell_type_key,
            held_out=held_out,
            **common,
            **extra["edges"],
        )
    if perturbation is not None:
        results["perturbation"] = evaluate_perturbation(
            perturbation,
            model,
            graphs_path,
            perturbation_key=perturbation_key,
            control=control,
            **graphs,
            **common,
            **extra["perturbation"],
        )
    with atomic_write(Path(out_dir) / SUMMARY) as handle:
        handle.write(summary_table(results))
    return results
