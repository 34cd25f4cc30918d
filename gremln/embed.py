"""Cell and gene embeddings of a pre-trained GREmLN model: the frozen features the evaluations
(:mod:`gremln.evaluate`) read.

Every cell is tokenized in memory with the model's vocabulary, exactly as ``gremln prepare``
does: normalized to 1e6 per cell and log1p, then rank bins, which depend only on the order of a
cell's values (so raw counts and log-normalized values give the same tokens). No QC is applied
and no cell is dropped: a cell without any expressed gene of the vocabulary is an error that
names it. Nothing is masked. Each cell gets its graph by
``graph_mode``:

- ``integrated`` (default): the per-cell graph of netinfer's kNN integration (GREmLN eq. 1-3)
  against a labelled reference; the query's own labels are never read (the query handed to the
  integration carries no obs columns at all). The integration is held in memory (a
  :class:`~gremln.data.GraphSource`): the graph store is only read.
- ``celltype``: the consensus network of the cell's own type (reads the label column, so only
  when asked for: it gives away the label).
- ``ppi:NAME``: the graph NAME of the store, for every cell.
- ``assignment:NAME``: the per-cell graphs of the store's assignment NAME (e.g. ``netinfer
  integrate --name NAME``), which must cover every cell.
- ``none``: no edges (what a vanilla-attention model sees anyway).

The model runs in eval mode without gradients, batch by batch (bf16 autocast on CUDA). The cell
embedding is the mean of the cell's final gene-token states (``pooling="mean"``) or its CLS state
(``"cls"``); a gene's embedding is its state averaged over the cells that express it.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from gremln.cellstore import _graph_keys
from gremln.data import GraphSource, TokenArrayDataset
from gremln.model import GremlnModel, flash_attn_varlen_func
from gremln.tokenize import tokenize_cells
from netinfer.io import InputError
from netinfer.pipeline import normalize

POOLINGS = ("mean", "cls")
GENE_EMBEDDINGS = ("mean", "per_cell")
PER_CELL_KEY = "gremln_gene_embeddings"


def load_model(path: str | os.PathLike[str], *, device: str | torch.device = "cpu"):
    """A saved model from its directory, or from a training run directory (``RUN_DIR/model``).

    Raises
    ------
    FileNotFoundError
        Neither ``path`` nor ``path/model`` holds a ``config.json``.
    """
    path = Path(path)
    if not (path / "config.json").exists() and (path / "model" / "config.json").exists():
        path = path / "model"
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"{path}: no config.json (neither a saved GREmLN model nor a run directory with one "
            "in model/)"
        )
    return GremlnModel.from_pretrained(path, map_location=str(resolve_device(device)))


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or a torch device."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for, but CUDA is not available")
    return device


@dataclass
class Embeddings:
    """What :func:`compute_embeddings` returns.

    Attributes
    ----------
    cells
        Cells x d (float32).
    genes
        Genes (the data's columns) x d: each gene's state averaged over the cells in whose
        sequence it is; NaN for genes in none. ``None`` when not asked for.
    gene_cells
        For each gene, the number of cells its mean is over (``None`` with ``genes``).
    info
        Provenance: settings, the graph source, genes outside the vocabulary, the integration's
        summary.
    """

    cells: np.ndarray
    genes: np.ndarray | None
    gene_cells: np.ndarray | None
    info: dict


def compute_embeddings(
    adata,
    model: GremlnModel,
    graphs_path: str | os.PathLike[str],
    *,
    graph_mode: str = "integrated",
    reference=None,
    cell_type_key: str | None = None,
    assignment: str = "gremln-embed",
    integration: dict | None = None,
    pooling: str = "mean",
    gene_embeddings: str | None = "mean",
    per_cell_path: str | os.PathLike[str] | None = None,
    layer: str | None = None,
    max_length: int | None = 2048,
    batch_size: int = 32,
    progress: bool = True,
    hook=None,
) -> Embeddings:
    """Cell (and gene) embeddings as arrays; :func:`embed` has the parameters.

    ``hook``, if given, is called with every batch the model receives (tests use it to check
    which inputs the model saw).
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
    if gene_embeddings not in (*GENE_EMBEDDINGS, None):
        raise ValueError(
            f"gene_embeddings must be 'mean', 'per_cell' or None, not {gene_embeddings!r}"
        )
    if (gene_embeddings == "per_cell") != (per_cell_path is not None):
        raise ValueError("per_cell_path is needed with gene_embeddings='per_cell', and only then")
    device = next(model.parameters()).device
    use_flash = flash_attn_varlen_func is not None and device.type == "cuda"
    dataset, info = token_dataset(
        adata,
        model,
        graphs_path,
        graph_mode=graph_mode,
        reference=reference,
        cell_type_key=cell_type_key,
        assignment=assignment,
        integration=integration,
        layer=layer,
        max_length=max_length,
        batch_size=batch_size,
        layout="packed" if use_flash else "padded",
    )
    var_of_token = np.full(len(model.vocabulary), -1, dtype=np.int64)
    ids, _ = model.vocabulary.encode(adata.var_names)
    var_of_token[ids[ids >= 0]] = np.flatnonzero(ids >= 0)
    d = model.config.d_model
    cells = np.empty((adata.n_obs, d), dtype=np.float32)
    gene_sums = np.zeros((adata.n_vars, d))
    gene_cells = np.zeros(adata.n_vars, dtype=np.int64)
    writer = (
        _PerCellWriter(per_cell_path, d, adata.obs_names, adata.var_names, dataset.indices)
        if per_cell_path is not None
        else None
    )
    for rows, positions, genes, hidden, cell_index in _token_states(
        model, dataset, device, progress=progress, hook=hook
    ):
        is_gene = positions > 0
        if pooling == "cls":  # CLS is every cell's first token, in row order
            cells[cell_index] = hidden[~is_gene]
        rows, hidden, columns = rows[is_gene], hidden[is_gene], var_of_token[genes[is_gene]]
        n_genes = np.bincount(rows, minlength=len(cell_index))
        if pooling == "mean":  # tokens come cell by cell, each cell with at least one gene
            starts = np.concatenate([[0], np.cumsum(n_genes)[:-1]])
            cells[cell_index] = (
                np.add.reduceat(hidden.astype(np.float64), starts) / n_genes[:, None]
            )
        if gene_embeddings:  # a sparse genes x tokens product sums each gene's states
            ones = np.ones(len(columns))
            tokens_of_gene = sp.csr_matrix(
                (ones, (columns, np.arange(len(columns)))), shape=(adata.n_vars, len(columns))
            )
            gene_sums += tokens_of_gene @ hidden.astype(np.float64)
            gene_cells += np.bincount(columns, minlength=adata.n_vars)
        if writer is not None:
            writer.append(columns, hidden, n_genes)
    if writer is not None:
        writer.publish(info)
    genes_mean = None
    if gene_embeddings:
        with np.errstate(invalid="ignore", divide="ignore"):  # genes in no cell: NaN
            genes_mean = (gene_sums / gene_cells[:, None]).astype(np.float32)
    info.update(
        pooling=pooling,
        max_length=max_length,
        gene_embeddings=gene_embeddings or "none",
        model_config=asdict(model.config),
    )
    return Embeddings(cells, genes_mean, gene_cells if gene_embeddings else None, info)


def token_dataset(
    adata,
    model: GremlnModel,
    graphs_path: str | os.PathLike[str],
    *,
    graph_mode: str = "integrated",
    reference=None,
    cell_type_key: str | None = None,
    assignment: str = "gremln-embed",
    integration: dict | None = None,
    layer: str | None = None,
    max_length: int | None = 2048,
    batch_size: int = 32,
    layout: str = "padded",
) -> tuple[TokenArrayDataset, dict]:
    """Every cell's tokens and graph as the model's batches, cells of similar length together
    (the dataset's ``indices`` set another order), and what tokenizing and the graphs reported.

    The parameters are those of :func:`embed`; ``layout`` is ``padded`` or ``packed``.
    """
    if model.vocabulary is None:
        raise InputError("<model>: saved without vocabulary.json; cannot tokenize cells for it")
    if not adata.obs_names.is_unique or not adata.var_names.is_unique:
        raise InputError(
            "<data>: cell ids and gene ids must be unique (adata.obs_names_make_unique(), "
            "adata.var_names_make_unique())"
        )
    counts = adata.layers[layer] if layer is not None else adata.X
    tokens, info = tokenize(counts, adata.var_names, adata.obs_names, model.vocabulary)
    graphs = GraphSource(graphs_path)  # the integration's assignment goes here, not the store
    keys, info["graphs"] = cell_graph_keys(
        adata,
        counts,
        graphs,
        graph_mode,
        reference=reference,
        cell_type_key=cell_type_key,
        assignment=assignment,
        integration=integration,
    )
    offsets = tokens[0]
    lengths = np.diff(offsets) if max_length is None else np.minimum(np.diff(offsets), max_length)
    dataset = TokenArrayDataset(
        *tokens,
        vocabulary=model.vocabulary,
        graphs_path=graphs,
        graph_keys=keys,
        cell_ids=adata.obs_names.astype(str).to_numpy(),
        max_length=max_length,
        batch_size=batch_size,
        layout=layout,
        order=np.argsort(lengths, kind="stable"),  # similar lengths together: little padding
    )
    return dataset, info


def embed(
    adata,
    model,
    graphs_path: str | os.PathLike[str],
    *,
    graph_mode: str = "integrated",
    reference=None,
    cell_type_key: str | None = None,
    assignment: str = "gremln-embed",
    integration: dict | None = None,
    pooling: str = "mean",
    gene_embeddings: str | None = "mean",
    per_cell_path: str | os.PathLike[str] | None = None,
    layer: str | None = None,
    max_length: int | None = 2048,
    batch_size: int = 32,
    device: str = "auto",
    key_added: str = "gremln",
    copy: bool = False,
    progress: bool = True,
):
    """Embed cells (and genes) with a pre-trained GREmLN model.

    Parameters
    ----------
    adata
        Counts, cells x genes (``X`` or ``layer``); cell and gene ids unique. Every cell is
        embedded: no QC, nothing dropped.
    model
        A :class:`~gremln.model.GremlnModel`, or the path of a saved model or of a training run
        directory (``RUN_DIR/model``).
    graphs_path
        The graph store with the cells' graphs (only read), or a
        :class:`~gremln.data.GraphSource`.
    graph_mode
        ``integrated`` (default), ``celltype``, ``ppi:NAME``, ``assignment:NAME`` or ``none``
        (see the module docstring).
    reference
        Integrated mode: labelled training cells (counts, types in ``obs[cell_type_key]``). The
        kNN integration against them is held in memory as the assignment ``assignment``
        (nothing is written to the graph store). Without a reference the store's existing
        assignment ``assignment`` (``netinfer integrate --name``) must cover every cell.
    cell_type_key
        The label column: the reference's in integrated mode, ``adata``'s in celltype mode (read
        in no other case).
    assignment
        Name of the integration's assignment (in memory; with no reference, the store's).
    integration
        Further keyword arguments of :func:`netinfer.integrate.integrate` (``k``, ``alpha``,
        ``n_pcs``, ``seed``, ``min_overlap``).
    pooling
        Cell embedding: ``mean`` of the gene tokens' states, or the ``cls`` token's state.
    gene_embeddings
        ``mean`` (per gene, averaged over cells, in ``varm``), ``per_cell`` (also every cell's
        gene states, to ``per_cell_path``) or ``None``.
    per_cell_path
        Zarr group for per-cell gene embeddings, cells in the order they were embedded (by
        length): ``cells`` (ids) and ``rows`` (rows in ``adata``), ``offsets`` (cells + 1: cell
        i's tokens are ``offsets[i]:offsets[i + 1]``), ``genes`` (column in ``adata`` of each
        token), ``hidden`` (tokens x d) and ``gene_names``. Written to a temporary folder that
        is renamed into place.
    layer
        Layer holding the counts (default ``X``).
    max_length
        Genes per cell at most (the highest bins are kept, as in training).
    batch_size
        Cells per forward pass.
    device
        ``auto``, ``cpu`` or ``cuda``; a model object stays on its own device.
    key_added
        ``obsm[f"X_{key_added}"]``, ``varm[key_added]``, ``uns[key_added]``.
    copy
        Return a copy instead of writing into ``adata``.
    progress
        Show a progress bar.

    Returns
    -------
    ``adata`` (or its copy) with ``obsm["X_gremln"]`` (cells x d), and with gene embeddings
    ``varm["gremln"]`` (genes x d; NaN for genes in no cell's sequence) and
    ``var["gremln_cells"]`` (cells each gene's mean is over); ``uns["gremln"]`` records the
    settings, the graph source and the genes outside the model's vocabulary.
    """
    model_path = None
    if not isinstance(model, GremlnModel):
        model_path = os.fspath(model)
        model = load_model(model, device=device)
    result = compute_embeddings(
        adata,
        model,
        graphs_path,
        graph_mode=graph_mode,
        reference=reference,
        cell_type_key=cell_type_key,
        assignment=assignment,
        integration=integration,
        pooling=pooling,
        gene_embeddings=gene_embeddings,
        per_cell_path=per_cell_path,
        layer=layer,
        max_length=max_length,
        batch_size=batch_size,
        progress=progress,
    )
    adata = adata.copy() if copy else adata
    adata.obsm[f"X_{key_added}"] = result.cells
    if result.genes is not None:
        adata.varm[key_added] = result.genes
        adata.var[f"{key_added}_cells"] = result.gene_cells
    info = {**result.info, "graph_store": os.fspath(graphs_path)}
    if model_path is not None:
        info["model"] = model_path
    if per_cell_path is not None:
        info["per_cell_path"] = os.fspath(per_cell_path)
    adata.uns[key_added] = _without_none(info)
    return adata


def tokenize(counts, var_names, obs_names, vocabulary) -> tuple[tuple, dict]:
    """Every cell's tokens (``offsets``, ``gene_ids``, ``bins``) and what tokenizing reported.

    Raises
    ------
    InputError
        Negative values (not counts), no gene of the vocabulary, or cells without any
        expressed gene of it.
    """
    counts = sp.csr_matrix(counts)
    if counts.nnz and counts.data.min() < 0:
        raise InputError("<data>: negative values; embed expects counts (or normalized values)")
    # netinfer's normalization, as gremln prepare: the same tokens in the same order (bins do
    # not change, but the order of equal bins follows the matrix's internal column order)
    offsets, gene_ids, bins, unknown = tokenize_cells(
        normalize(counts), list(map(str, var_names)), vocabulary
    )
    if len(unknown) == len(var_names):
        raise InputError(
            f"<data>: none of its {len(var_names)} genes is in the model's vocabulary "
            f"(e.g. {', '.join(unknown[:3])}; the model knows e.g. "
            f"{', '.join(vocabulary.genes[:3])}). Are both in the same gene ids?"
        )
    empty = np.flatnonzero(np.diff(offsets) == 0)
    if empty.size:
        raise InputError(
            f"<data>: {empty.size} cell(s) express no gene of the model's vocabulary (e.g. "
            f"{', '.join(map(str, np.asarray(obs_names)[empty[:3]]))}); remove them "
            "(e.g. scanpy.pp.filter_cells(adata, min_genes=1)); no cell is dropped silently"
        )
    info = {"genes_outside_vocabulary": len(unknown), "examples_outside_vocabulary": unknown[:5]}
    return (offsets, gene_ids, bins), info


def cell_graph_keys(
    adata,
    counts,
    graphs: GraphSource,
    graph_mode: str,
    *,
    reference=None,
    cell_type_key: str | None = None,
    assignment: str = "gremln-embed",
    integration: dict | None = None,
) -> tuple[np.ndarray, dict]:
    """Each cell's graph key in ``graphs`` (see :func:`embed`), and where they came from; an
    integration's assignment is added to ``graphs`` (in memory)."""
    import anndata as ad
    import pandas as pd

    cell_ids = adata.obs_names.astype(str).to_numpy()
    unlabelled = np.empty(adata.n_obs, dtype=object)  # the store's checks need no labels

    def checked_keys(mode: str, cell_types: np.ndarray = unlabelled) -> np.ndarray:
        return _graph_keys(graphs, mode, cell_types, "<data>", cell_ids)

    if graph_mode == "none":
        return np.full(adata.n_obs, "", dtype=object), {"mode": "none"}
    if graph_mode.startswith(("ppi:", "assignment:")):
        return checked_keys(graph_mode), {"mode": graph_mode}
    if graph_mode == "celltype":
        if cell_type_key is None or cell_type_key not in adata.obs:
            raise InputError(
                f"<data>: graph mode celltype reads each cell's type, but there is no obs "
                f"column {cell_type_key!r}; columns are: "
                f"{', '.join(map(str, adata.obs.columns)) or 'none'}"
            )
        labels = adata.obs[cell_type_key].astype(str).to_numpy()
        return checked_keys("celltype", labels), {"mode": "celltype"}
    if graph_mode != "integrated":
        raise ValueError(
            "graph_mode must be integrated, celltype, ppi:NAME, assignment:NAME or none, not "
            f"{graph_mode!r}"
        )
    info = {"mode": "integrated", "assignment": assignment}
    if reference is not None:
        from netinfer.integrate import integrate

        if cell_type_key is None:
            raise InputError("<reference>: integrated mode needs cell_type_key, its label column")
        # the query carries no obs columns: its labels cannot be read, by construction
        query = ad.AnnData(
            X=sp.csr_matrix(counts),
            obs=pd.DataFrame(index=cell_ids),
            var=pd.DataFrame(index=adata.var_names.astype(str)),
        )
        # into the in-memory source: the store is only read
        result = integrate(
            query,
            reference,
            graphs,
            cell_type_key=cell_type_key,
            name=assignment,
            overwrite=True,
            **(integration or {}),
        )
        info["integration"] = result.summary
    return checked_keys(f"assignment:{assignment}"), info


@torch.no_grad()
def _token_states(model, dataset, device, *, progress: bool, hook=None):
    """Per batch: every real token's cell row (within the batch), position, gene token id and
    final hidden state (float32), and the batch's cells (their rows in the data), as arrays."""
    model.eval()
    autocast = torch.autocast(
        device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"
    )
    with tqdm(total=len(dataset), desc="gremln embed", unit="cell", disable=not progress) as bar:
        for batch in dataset:
            batch.pop("targets")  # nothing is masked: no objective to compute
            if hook is not None:
                hook(batch)
            with autocast:
                hidden = model(batch)["hidden"].float().cpu()
            if "cu_seqlens" in batch:
                lengths = batch["cu_seqlens"].diff().long()
                rows = torch.repeat_interleave(torch.arange(lengths.numel()), lengths)
                positions = torch.arange(hidden.shape[0]) - batch["cu_seqlens"][rows].long()
                genes = batch["gene_ids"]
            else:
                real = ~batch["padding_mask"]
                rows, positions = real.nonzero(as_tuple=True)
                hidden, genes = hidden[real], batch["gene_ids"][real]
            yield (
                rows.numpy(),
                positions.numpy(),
                genes.numpy(),
                hidden.numpy(),
                batch["cells"].numpy(),
            )
            bar.update(len(batch["cells"]))


class _PerCellWriter:
    """Per-cell gene embeddings, appended batch by batch into a staging Zarr group that is
    renamed into place on ``publish``."""

    def __init__(self, path, d: int, cell_ids, gene_ids, order: np.ndarray):
        import zarr

        self.path = Path(path)
        self.staging = self.path.with_name(f".{self.path.name}.tmp")
        shutil.rmtree(self.staging, ignore_errors=True)
        self.group = zarr.open_group(self.staging, mode="w")
        self.genes = self.group.create_array("genes", shape=(0,), dtype=np.int32, chunks=(1 << 16,))
        self.hidden = self.group.create_array(
            "hidden", shape=(0, d), dtype=np.float32, chunks=(max(1, (1 << 20) // d), d)
        )
        self.lengths: list[np.ndarray] = []
        self.order = np.asarray(order, dtype=np.int64)
        self.cell_ids, self.gene_ids = np.asarray(cell_ids, str), np.asarray(gene_ids, str)

    def append(self, columns: np.ndarray, hidden: np.ndarray, lengths: np.ndarray) -> None:
        """One batch: its tokens' gene columns and states, and each of its cells' token count."""
        self.genes.append(columns.astype(np.int32))
        self.hidden.append(hidden.astype(np.float32), axis=0)
        self.lengths.append(lengths)

    def publish(self, info: dict) -> None:
        offsets = np.concatenate([[0], np.cumsum(np.concatenate(self.lengths))]).astype(np.int64)
        for name, values in (
            ("offsets", offsets),
            ("rows", self.order),
            ("cells", self.cell_ids[self.order]),
            ("gene_names", self.gene_ids),
        ):
            dtype = str if values.dtype.kind == "U" else values.dtype
            array = self.group.create_array(
                name, shape=values.shape, dtype=dtype, chunks=(max(1, values.size),)
            )
            array[:] = values
        self.group.attrs[PER_CELL_KEY] = _without_none(
            {"genes_outside_vocabulary": info["genes_outside_vocabulary"], **info["graphs"]}
        )
        if self.path.exists():
            shutil.rmtree(self.path)
        self.staging.rename(self.path)


def _without_none(value):
    """``value`` with ``None`` entries of its dicts removed (h5ad cannot store them)."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_without_none(v) for v in value]
    return value
