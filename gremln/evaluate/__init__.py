"""Evaluations of frozen GREmLN embeddings (paper section 4), each with its baselines and figures.

One module per evaluation: :mod:`~gremln.evaluate.celltype` (a linear classifier of cell types),
:mod:`~gremln.evaluate.expression` (linear regression to expression),
:mod:`~gremln.evaluate.edges` (link prediction on held-out edges of cell-type graphs) and
:mod:`~gremln.evaluate.perturbation` (which gene was knocked out, frozen and fine-tuned);
:mod:`~gremln.evaluate.all` runs them all and writes one table. Shared here: the features every
model or baseline gives the cells of a split (:func:`feature_sets`), the random splits, metric
summaries and the result file.

Every evaluation writes ``OUT_DIR/<evaluation>.json``::

    {"evaluation": "celltype", "data": {...}, "params": {...},
     "models": {"gremln": {"macro_f1": {"mean": ..., "std": ..., "values": [...]}, ...},
                "vanilla": {...}, "pca": {...}},
     "figures": ["celltype_confusion.png"]}

``std`` is the sample standard deviation over the splits (0 for one split). Nothing in the file
depends on the time or the machine's state, so a rerun with the same seed writes the same file.

Features never see a test cell's label: models embed every cell with the graphs of
:func:`gremln.embed.compute_embeddings`. In ``integrated`` mode without a separate reference,
the reference of each split is its training and validation cells, so test cells get their graphs
from their neighbours among those; a vanilla model ignores graphs and embeds once. Graphs made
from the evaluated cells' labels, their own or their neighbours' (a given reference, or a stored
assignment, that holds evaluated cells), are refused (:func:`refuse_label_reading_graphs`). The
integration is held in memory as the assignment ``gremln-evaluate`` (a fresh one per split):
evaluations only read the graph store, so they need no writer lock and never collide.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from netinfer.io import InputError, atomic_write

SPLIT_FRACTIONS = (0.7, 0.1, 0.2)  # train, validation, test
EVALUATION_ASSIGNMENT = "gremln-evaluate"  # the integration's assignment, held in memory


def model_set(model, vanilla=None, compare: dict | None = None) -> dict:
    """The models an evaluation compares: ``gremln``, ``vanilla`` when given, then ``compare``
    (name -> model) in its order."""
    models = {"gremln": model} | ({"vanilla": vanilla} if vanilla is not None else {})
    for name in compare or {}:
        if name in models or name == "pca" or name.endswith("_finetuned"):
            raise ValueError(
                f"model name {name!r} is taken: gremln, vanilla and pca (and NAME_finetuned "
                "for fine-tuned copies) name the evaluations' own rows"
            )
    return models | dict(compare or {})


def as_model(model):
    """A :class:`~gremln.model.GremlnModel` as is, or the saved model at a path."""
    from gremln.embed import load_model

    return model if not isinstance(model, str | os.PathLike) else load_model(model)


def ignores_graphs(model) -> bool:
    """Whether the model never reads a graph: vanilla attention and no structure adapter (the
    vanilla ablation, ``--graph-integration none``)."""
    return model.config.attention == "vanilla" and not model.config.adapter


def metric_summary(values) -> dict:
    """``{"mean", "std", "values"}`` of one metric over splits (sample std; 0 for one split)."""
    values = [float(v) for v in values]
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {"mean": float(np.mean(values)), "std": std, "values": values}


def summarize(per_split: dict[str, list[dict]]) -> dict:
    """Per model, each metric's summary over the splits (``per_split[model]``: one dict of
    metric values per split)."""
    return {
        model: {metric: metric_summary([s[metric] for s in splits]) for metric in splits[0]}
        for model, splits in per_split.items()
    }


def write_result(out_dir: str | os.PathLike[str], evaluation: str, result: dict) -> Path:
    """Write ``OUT_DIR/<evaluation>.json`` atomically and return its path."""
    path = Path(out_dir) / f"{evaluation}.json"
    with atomic_write(path) as handle:
        json.dump(result, handle, indent=2)
        handle.write("\n")
    return path


def save_figure(figure, out_dir: str | os.PathLike[str], name: str) -> str:
    """Save a matplotlib figure as ``OUT_DIR/NAME`` (PNG) and return NAME."""
    path = Path(out_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{name}.tmp.png")
    figure.savefig(staging, dpi=120, bbox_inches="tight")
    os.replace(staging, path)
    return name


def new_figure(**options):
    """A matplotlib figure outside pyplot: it needs no display, leaves the session's backend
    (e.g. a notebook's inline one) alone, and is freed with its last reference."""
    from matplotlib.figure import Figure

    return Figure(**options)


def random_splits(
    n_cells: int, *, n_splits: int, seed: int, labels: np.ndarray | None = None
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``n_splits`` random (train, validation, test) row sets in ``SPLIT_FRACTIONS``.

    With ``labels`` the splits are stratified: each class is split in those fractions (rounded;
    at least one training cell per class), so rare classes are in every part they can be.
    Split i is drawn from seed (``seed``, i): deterministic.
    """
    groups = [np.arange(n_cells)] if labels is None else _classes(labels)
    splits = []
    for i in range(n_splits):
        rng = np.random.default_rng(np.random.SeedSequence([seed, i, 0x73706C6974]))  # "split"
        parts = ([], [], [])
        for rows in groups:
            rows = rng.permutation(rows)
            n_test = int(round(SPLIT_FRACTIONS[2] * len(rows)))
            n_val = int(round(SPLIT_FRACTIONS[1] * len(rows)))
            n_test = min(n_test, len(rows) - 1)
            n_val = min(n_val, len(rows) - 1 - n_test)
            parts[2].append(rows[:n_test])
            parts[1].append(rows[n_test : n_test + n_val])
            parts[0].append(rows[n_test + n_val :])
        splits.append(tuple(np.sort(np.concatenate(part)) for part in parts))
    return splits


def _classes(labels: np.ndarray) -> list[np.ndarray]:
    labels = np.asarray(labels)
    return [np.flatnonzero(labels == value) for value in np.unique(labels)]


def graph_source(graph_mode: str, reference) -> str:
    """Where the cells' graphs came from, in words, for the result file."""
    if graph_mode != "integrated":
        return graph_mode
    if reference is not None:
        return "integrated against the given reference"
    return "integrated against each split's training and validation cells"


def variable_genes(lognorm, rows: np.ndarray, n_genes: int) -> np.ndarray:
    """Columns of the ``n_genes`` genes of highest variance over ``rows`` (sorted; ties by
    column), for a sparse or dense matrix (nothing densified)."""
    subset = lognorm[rows]
    mean = np.asarray(subset.mean(axis=0)).ravel()
    squares = subset.multiply(subset) if hasattr(subset, "multiply") else subset**2
    variance = np.asarray(squares.mean(axis=0)).ravel() - mean**2
    return np.sort(np.argsort(-variance, kind="stable")[: min(n_genes, lognorm.shape[1])])


def pca_features(
    lognorm, fit_rows: np.ndarray, *, n_pcs: int, seed: int, n_genes: int = 2000
) -> np.ndarray:
    """The PCA baseline: principal components of log-normalized expression of the ``n_genes``
    most variable genes, both fitted on ``fit_rows`` only, for every cell."""
    from sklearn.decomposition import PCA

    from netinfer.pipeline import to_dense

    dense = to_dense(lognorm[:, variable_genes(lognorm, fit_rows, n_genes)])
    n_comps = int(min(n_pcs, len(fit_rows) - 1, dense.shape[1]))
    return PCA(n_components=n_comps, random_state=seed).fit(dense[fit_rows]).transform(dense)


def feature_sets(
    adata,
    models: dict,
    graphs_path,
    *,
    graph_mode: str = "integrated",
    reference=None,
    cell_type_key: str | None = None,
    layer: str | None = None,
    n_pcs: int = 50,
    seed: int = 0,
    embed_options: dict | None = None,
    progress: bool = True,
) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """For every model and the PCA baseline, a function from a split's fitting rows (training
    and validation cells) to features of all cells.

    Parameters
    ----------
    adata
        Counts (``X`` or ``layer``), cells x genes.
    models
        Name -> :class:`~gremln.model.GremlnModel` (or a saved model's path).
    graphs_path
        The graph store.
    graph_mode
        As :func:`gremln.embed.embed`. ``integrated`` without ``reference`` integrates each
        split's cells against its fitting rows, whose labels (``cell_type_key``) it reads; the
        other cells' labels are never read.
    reference
        Labelled reference cells for ``integrated`` mode (then embedded once).
    cell_type_key
        Label column of the reference (or of the fitting rows), or of ``adata`` in celltype mode.
    layer
        Layer holding the counts.
    n_pcs
        Components of the PCA baseline.
    seed
        Seed of the PCA and of the integration.
    embed_options
        Further keyword arguments of :func:`gremln.embed.compute_embeddings` (``pooling``,
        ``batch_size``, ``max_length``, ``integration``).
    progress
        Show progress bars.
    """
    from gremln.embed import compute_embeddings
    from netinfer.pipeline import normalize

    counts = adata.layers[layer] if layer is not None else adata.X
    per_split = graph_mode == "integrated" and reference is None
    if per_split and (cell_type_key is None or cell_type_key not in adata.obs):
        raise InputError(
            f"<data>: integrated graphs need labelled reference cells: give a reference, or the "
            f"label column of the training cells (no obs column {cell_type_key!r}; columns are: "
            f"{', '.join(map(str, adata.obs.columns)) or 'none'})"
        )
    options = {
        "gene_embeddings": None,
        "layer": layer,
        "progress": progress,
        "integration": {"seed": seed},
        **(embed_options or {}),
    }

    def model_features(model) -> Callable[[np.ndarray], np.ndarray]:
        model = as_model(model)
        cache: dict[bytes, np.ndarray] = {}

        def features(fit_rows: np.ndarray) -> np.ndarray:
            key = b"" if ignores_graphs(model) or not per_split else np.asarray(fit_rows).tobytes()
            if key not in cache:
                settings = split_graph_settings(
                    adata, model, fit_rows, graph_mode, reference, cell_type_key, layer
                )
                cache[key] = compute_embeddings(
                    adata,
                    model,
                    graphs_path,
                    cell_type_key=cell_type_key,
                    assignment=EVALUATION_ASSIGNMENT,
                    **settings,
                    **options,
                ).cells
            return cache[key]

        return features

    lognorm = normalize(counts)
    sets = {name: model_features(model) for name, model in models.items()}
    sets["pca"] = lambda fit_rows: pca_features(lognorm, fit_rows, n_pcs=n_pcs, seed=seed)
    return sets


def split_graph_settings(
    adata, model, fit_rows, graph_mode: str, reference, cell_type_key, layer
) -> dict:
    """``graph_mode`` and ``reference`` of :func:`gremln.embed.compute_embeddings` for one split:
    no graph for a model that ignores graphs; in ``integrated`` mode without a reference, the
    split's fitting cells with only their labels (``cell_type_key``) as the reference."""
    import anndata as ad

    if ignores_graphs(model):
        return dict(graph_mode="none", reference=None)
    if graph_mode == "integrated" and reference is None:
        fitting = adata[fit_rows]
        counts = fitting.layers[layer] if layer is not None else fitting.X
        reference = ad.AnnData(X=counts, obs=fitting.obs[[cell_type_key]], var=fitting.var[[]])
    return dict(graph_mode=graph_mode, reference=reference)


def refuse_label_reading_graphs(
    graphs_path,
    graph_mode: str,
    evaluated,
    *,
    reference=None,
    cell_type_key: str | None = None,
    layer: str | None = None,
) -> None:
    """Refuse graphs whose making read an evaluated cell's label: given to evaluated cells, they
    would carry those labels into the features.

    - ``assignment:NAME`` whose ``read_labels`` (in its parameters) says it read labels: of its
      own cells (``netinfer cellspecific``: each cell's graph gives its label away), or of the
      reference cells listed in its ``label_cells`` (``netinfer integrate``: each reference
      cell's label reaches the graphs of its neighbours, mostly cells of its own type).
    - ``integrated`` with a given ``reference``: the integration about to run reads the labels
      of the reference's labelled cells, in the same way.

    A stored assignment's cells are matched by id. A given reference's cell is an evaluated cell
    when it has the same id and the same counts (on their shared genes), as ``integrate`` tells
    a cell from another that only shares its id (default names "0", "1", ... of two data sets).
    An integration's assignment written before ``label_cells`` was recorded says nothing of its
    reference and is accepted unchecked.

    Parameters
    ----------
    graphs_path
        The graph store.
    graph_mode
        The evaluation's graph mode.
    evaluated
        The evaluated cells (AnnData): those whose labels are predicted.
    reference, cell_type_key
        The integration's reference and its label column (``integrated`` mode).
    layer
        The layer holding the evaluated cells' counts (default ``X``; the reference's are in
        ``X``, as the integration reads them).

    Raises
    ------
    InputError
        Some evaluated cell's label was read (or would be); the message names the store and
        assignment (or ``<reference>``), how many evaluated cells, a few of them, and what to
        do instead.
    """
    import pandas as pd

    cell_ids = pd.Index(np.asarray(evaluated.obs_names).astype(str))
    if graph_mode == "integrated":
        if reference is None or cell_type_key is None:
            return  # each split's fitting cells are its reference (or embedding refuses it)
        from netinfer.sc.validate import labelled_cells

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the integration warns about them
            labelled = labelled_cells(reference, cell_type_key, "<reference>")
        read = pd.Index(np.asarray(reference.obs_names[labelled]).astype(str))
        _refuse_evaluated(
            cell_ids,
            _same_cells(evaluated, reference, read.intersection(cell_ids), layer),
            f"<reference>: the integration would read the labels (obs[{cell_type_key!r}]) of "
            "its cells, which reach the graphs of their neighbours",
            "Give a reference without the evaluated cells, or none (each split's training and "
            "validation cells are then the reference)",
        )
        return
    if not graph_mode.startswith("assignment:"):
        return
    from gremln.data import GraphSource
    from netinfer.integrate import READ_REFERENCE_LABELS

    name = graph_mode.removeprefix("assignment:")
    assignment = GraphSource(graphs_path).get_assignment(name)
    read = assignment.meta.get("params", {}).get("read_labels")
    if not read:
        return
    column = read.get("column")
    if read.get("of") != READ_REFERENCE_LABELS:
        _refuse_evaluated(
            cell_ids,
            assignment.cells,
            f"{graphs_path}: assignment {name!r} was made from its cells' own labels "
            f"(obs[{column!r}] of {read.get('of')}, e.g. netinfer cellspecific), whose graphs "
            "would give their labels away",
            "Use graph mode integrated, ppi:NAME or none",
        )
        return
    if assignment.label_cells is None:
        raise InputError(
            f"{graphs_path}: assignment {name!r} was made from its reference cells' labels "
            "but does not list them (no label_cells array), so it cannot be checked; make it "
            "again with netinfer integrate"
        )
    _refuse_evaluated(
        cell_ids,
        assignment.label_cells,
        f"{graphs_path}: assignment {name!r} was made from the labels (obs[{column!r}]) of its "
        "reference cells (netinfer integrate), which reach the graphs of their neighbours",
        "Integrate with a reference that excludes the evaluated cells (netinfer integrate "
        "--reference), or use graph mode integrated, ppi:NAME or none. (Cells are matched by "
        "id: if these are other cells that only share ids with reference cells, give the two "
        "data sets distinct cell ids and integrate again.)",
    )


def _same_cells(evaluated, reference, ids, layer: str | None):
    """Of ``ids`` (cells of both), those with the same counts in both on their shared genes
    (up to float rounding): the same cells, not others that only share their ids."""
    import scipy.sparse as sp

    if not len(ids):
        return ids
    genes = evaluated.var_names.intersection(reference.var_names)
    mine = evaluated[ids, genes]
    mine = sp.csr_matrix(mine.layers[layer] if layer is not None else mine.X, dtype=np.float64)
    theirs = sp.csr_matrix(reference[ids, genes].X, dtype=np.float64)

    def row_sums(matrix):
        return np.asarray(abs(matrix).sum(axis=1)).ravel()

    return ids[row_sums(mine - theirs) <= 1e-6 * (row_sums(mine) + row_sums(theirs))]


def _refuse_evaluated(cell_ids, read_ids, what: str, remedy: str) -> None:
    """Raise ``InputError`` (``what``; how many evaluated cells were read, a few ids;
    ``remedy``) when any of ``cell_ids`` is among ``read_ids``."""
    leaked = cell_ids[cell_ids.isin(np.asarray(read_ids).astype(object))]  # (zarr: StringDType)
    if len(leaked):
        raise InputError(
            f"{what}; {len(leaked)} of the {len(cell_ids)} evaluated cells are among them "
            f"(e.g. {', '.join(leaked[:3])}): their labels would reach the evaluated cells' "
            f"features. {remedy}"
        )


def standardize(features: np.ndarray, fit_rows: np.ndarray) -> np.ndarray:
    """Features centred and scaled by the mean and standard deviation of ``fit_rows``."""
    mean = features[fit_rows].mean(axis=0)
    std = features[fit_rows].std(axis=0)
    return (features - mean) / np.where(std > 0, std, 1.0)
