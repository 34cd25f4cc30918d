"""GREmLN embeddings: shapes, pooling, determinism, graph modes, the label-leak guard, the CLI."""

from __future__ import annotations

import shutil

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
import zarr

from cli.gremln import main as gremln_main
from gremln.cellstore import CellStore, prepare
from gremln.data import TokenArrayDataset, collate_padded
from gremln.embed import compute_embeddings, embed, load_model, tokenize
from gremln.train import GRAPH_INTEGRATIONS, TrainConfig, train
from netinfer.io import InputError
from netinfer.store import GraphStore, StoreError

KEY = "bulk_labels"


def store_digest(path) -> dict[str, str]:
    """SHA-256 of every file under a store, by relative path: equal digests, unchanged bytes."""
    import hashlib
    from pathlib import Path

    root = Path(path)
    return {
        str(file.relative_to(root)): hashlib.sha256(file.read_bytes()).hexdigest()
        for file in sorted(root.rglob("*"))
        if file.is_file()
    }


QC = dict(min_counts=100, max_counts=10**6, trim=None, min_genes=50)
TINY = dict(d_model=32, n_layers=1, n_heads=4, batch_size=16, num_workers=0, device="cpu")
FAST = dict(max_length=100, progress=False)  # short sequences: quick forward passes


def pretrained_models(folder, *, steps: int = 8, attentions=("diffusion",)) -> dict:
    """pbmc68k counts, a graph store of random cell-type networks (with exclusion posteriors)
    and a PPI graph, and tiny models pre-trained on them, one per name in ``attentions``: an
    attention (``diffusion``, ``vanilla``) or a ``--graph-integration`` variant (``adapter``...).

    Returns ``{"counts": h5ad, "graphs": store, "cells": cell store, <name>: run dir}``.
    """
    from netinfer.datasets import pbmc68k_counts

    adata = pbmc68k_counts()
    adata.write_h5ad(folder / "pbmc.h5ad")
    genes = np.asarray(adata.var_names)
    rng = np.random.default_rng(0)
    graphs = folder / "graphs.zarr"
    with GraphStore.create(graphs) as store:
        for i, cell_type in enumerate(sorted(set(adata.obs[KEY]))):
            pairs = np.unique(rng.choice(len(genes), size=(1500, 2)), axis=0)
            pairs = pairs[pairs[:, 0] != pairs[:, 1]]
            edges = pd.DataFrame(
                {
                    "regulator": genes[pairs[:, 0]],
                    "target": genes[pairs[:, 1]],
                    "exclusion": rng.uniform(0, 0.04, len(pairs)),
                }
            )
            store.add_graph(f"net{i}", edges, kind="consensus", cell_type=cell_type)
        pairs = np.unique(rng.choice(len(genes), size=(800, 2)), axis=0)
        ppi = pd.DataFrame({"gene_a": genes[pairs[:, 0]], "gene_b": genes[pairs[:, 1]]})
        store.add_graph("toy_ppi", ppi[ppi.gene_a != ppi.gene_b], kind="ppi", directed=False)
    prepare(
        folder / "pbmc.h5ad",
        folder / "cells.zarr",
        graphs_path=graphs,
        cell_type_key=KEY,
        n_bins=11,
        **QC,
    )
    runs = {"counts": folder / "pbmc.h5ad", "graphs": graphs, "cells": folder / "cells.zarr"}
    for name in attentions:  # an attention, or a --graph-integration variant
        variant = GRAPH_INTEGRATIONS.get(name, (name, False))
        config = TrainConfig(
            cells=str(folder / "cells.zarr"),
            graphs=str(graphs),
            out=str(folder / name),
            attention=variant[0],
            adapter=variant[1],
            **TINY,
            max_steps=steps,
            max_length=128,
            lr=1e-3,
            log_every=steps,
            eval_every=steps,
            eval_cells=16,
        )
        train(config)
        runs[name] = folder / name
    return runs


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    runs = pretrained_models(tmp_path_factory.mktemp("embed"))
    model = load_model(runs["diffusion"])
    adata = ad.read_h5ad(runs["counts"])
    is_reference = np.random.default_rng(1).random(adata.n_obs) < 0.6
    return runs, model, adata[is_reference].copy(), adata[~is_reference].copy()


def test_cell_and_gene_embeddings(setup):
    runs, model, _, query = setup
    out = embed(query, runs["diffusion"], runs["graphs"], graph_mode="ppi:toy_ppi", progress=False)
    assert out is query
    cells = query.obsm["X_gremln"]
    assert cells.shape == (query.n_obs, 32) and cells.dtype == np.float32
    assert np.isfinite(cells).all() and cells.std(axis=0).min() > 0  # cells differ
    genes, used = query.varm["gremln"], query.var["gremln_cells"].to_numpy()
    assert genes.shape == (query.n_vars, 32)
    expressed = np.asarray((query.X > 0).sum(axis=0)).ravel()
    np.testing.assert_array_equal(used > 0, expressed > 0)  # max_length cuts nothing here
    assert np.isfinite(genes[used > 0]).all() and np.isnan(genes[used == 0]).all()
    info = query.uns["gremln"]
    assert info["graphs"] == {"mode": "ppi:toy_ppi"} and info["pooling"] == "mean"
    assert info["model"] == str(runs["diffusion"]) and info["genes_outside_vocabulary"] == 0
    query.write_h5ad(runs["counts"].parent / "written.h5ad")  # everything added is storable


def test_tokens_are_those_of_gremln_prepare(setup):
    runs, model, _, _ = setup
    store = CellStore.open(runs["cells"])
    adata = ad.read_h5ad(runs["counts"])
    (offsets, gene_ids, bins), _ = tokenize(
        adata.X, adata.var_names, adata.obs_names, model.vocabulary
    )
    row = {cell: i for i, cell in enumerate(adata.obs_names)}
    for i in range(0, len(store), 97):
        j = row[store.obs["cell_id"].iloc[i]]
        stored = store.cell(i)
        np.testing.assert_array_equal(gene_ids[offsets[j] : offsets[j + 1]], stored[0])
        np.testing.assert_array_equal(bins[offsets[j] : offsets[j + 1]], stored[1])


def test_mean_and_cls_pooling_match_a_direct_forward_pass(setup):
    runs, model, _, query = setup
    common = dict(graph_mode="ppi:toy_ppi", gene_embeddings=None, **FAST)
    mean = compute_embeddings(query, model, runs["graphs"], **common).cells
    cls = compute_embeddings(query, model, runs["graphs"], pooling="cls", **common).cells
    (offsets, gene_ids, bins), _ = tokenize(
        query.X, query.var_names, query.obs_names, model.vocabulary
    )
    dataset = TokenArrayDataset(
        offsets,
        gene_ids,
        bins,
        vocabulary=model.vocabulary,
        graphs_path=runs["graphs"],
        graph_keys=np.full(query.n_obs, "toy_ppi"),
        cell_ids=query.obs_names,
        max_length=FAST["max_length"],
    )
    for cell in (0, 5, query.n_obs - 1):
        example = dataset[cell]
        assert example["edge_index"].shape[1] > 0  # the cell's graph is used
        with torch.no_grad():
            hidden = model(collate_padded([example], pad_bin=11))["hidden"][0]
        torch.testing.assert_close(torch.from_numpy(cls[cell]), hidden[0])
        torch.testing.assert_close(torch.from_numpy(mean[cell]), hidden[1:].mean(0))


def test_embeddings_are_deterministic_and_do_not_depend_on_the_batch(setup):
    runs, model, _, query = setup
    common = dict(graph_mode="ppi:toy_ppi", **FAST)
    a = compute_embeddings(query, model, runs["graphs"], batch_size=32, **common)
    b = compute_embeddings(query, model, runs["graphs"], batch_size=32, **common)
    c = compute_embeddings(query, model, runs["graphs"], batch_size=7, **common)
    np.testing.assert_array_equal(a.cells, b.cells)
    np.testing.assert_array_equal(a.genes, b.genes)
    np.testing.assert_allclose(a.cells, c.cells, atol=1e-5)


def test_integrated_mode_never_reads_the_query_labels(setup, tmp_path):
    runs, model, reference, query = setup
    shuffled = query.copy()
    shuffled.obs[KEY] = np.random.default_rng(0).permutation(shuffled.obs[KEY].to_numpy())
    unlabelled = query.copy()
    del unlabelled.obs[KEY]
    results, inputs = [], []
    before = store_digest(runs["graphs"])
    for data in (query, shuffled, unlabelled):
        seen = []
        results.append(
            compute_embeddings(
                data,
                model,
                runs["graphs"],
                reference=reference,
                cell_type_key=KEY,
                hook=seen.append,
                **FAST,
            )
        )
        inputs.append(seen)
    assert results[0].info["graphs"]["integration"]["query_cells"] == query.n_obs
    assert sum(batch["edge_index"].shape[1] for batch in inputs[0]) > 0
    for other, batches in zip(results[1:], inputs[1:]):
        np.testing.assert_array_equal(other.cells, results[0].cells)
        for a, b in zip(batches, inputs[0], strict=True):  # every model input is the same
            assert a.keys() == b.keys()
            assert all(torch.equal(a[k], b[k]) for k in a if isinstance(a[k], torch.Tensor))
    assert store_digest(runs["graphs"]) == before  # the integration was held in memory
    with pytest.raises(StoreError, match="no assignment named 'gremln-embed'"):
        compute_embeddings(unlabelled, model, runs["graphs"], **FAST)
    # without a reference, an assignment the user stored (netinfer integrate) is read
    from netinfer.integrate import integrate

    stored = tmp_path / "graphs.zarr"
    shutil.copytree(runs["graphs"], stored)
    with GraphStore.open(stored, mode="a") as store:
        integrate(unlabelled, reference, store, cell_type_key=KEY, name="mine")
    again = compute_embeddings(unlabelled, model, stored, graph_mode="assignment:mine", **FAST)
    np.testing.assert_array_equal(again.cells, results[0].cells)


def test_celltype_mode_uses_the_labels_and_differs_from_no_graph(setup):
    runs, model, _, query = setup
    common = dict(gene_embeddings=None, **FAST)
    by_type = compute_embeddings(
        query, model, runs["graphs"], graph_mode="celltype", cell_type_key=KEY, **common
    )
    no_graph = compute_embeddings(query, model, runs["graphs"], graph_mode="none", **common)
    assert not np.allclose(by_type.cells, no_graph.cells)
    with pytest.raises(InputError, match="graph mode celltype reads each cell's type.*'cluster'"):
        compute_embeddings(
            query, model, runs["graphs"], graph_mode="celltype", cell_type_key="cluster"
        )


def test_per_cell_gene_embeddings_average_to_the_gene_means(setup, tmp_path):
    runs, model, _, query = setup
    path = tmp_path / "genes.zarr"
    result = compute_embeddings(
        query,
        model,
        runs["graphs"],
        graph_mode="ppi:toy_ppi",
        gene_embeddings="per_cell",
        per_cell_path=path,
        batch_size=13,
        **FAST,
    )
    group = zarr.open_group(path, mode="r")
    offsets, genes, hidden = group["offsets"][:], group["genes"][:], group["hidden"][:]
    assert offsets[-1] == len(genes) == len(hidden) and len(offsets) == query.n_obs + 1
    rows = group["rows"][:]
    assert sorted(rows) == list(range(query.n_obs))
    assert list(group["cells"][:]) == list(query.obs_names[rows])
    mine = hidden[offsets[3] : offsets[4]]
    np.testing.assert_allclose(mine.mean(0), result.cells[rows[3]], atol=1e-5)
    column = int(np.argmax(result.gene_cells))
    np.testing.assert_allclose(hidden[genes == column].mean(0), result.genes[column], atol=1e-5)


def test_bad_inputs_get_clear_errors(setup, tmp_path):
    runs, model, _, query = setup
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: no config.json"):
        load_model(tmp_path / "empty")
    foreign = ad.AnnData(
        X=query.X, obs=query.obs, var=pd.DataFrame(index=[f"x{i}" for i in range(query.n_vars)])
    )
    with pytest.raises(InputError, match="none of its 765 genes is in the model's vocabulary"):
        compute_embeddings(foreign, model, runs["graphs"], graph_mode="none")
    silent = query.copy()
    dense = silent.X.toarray()
    dense[2] = 0
    silent.X = sp.csr_matrix(dense)
    with pytest.raises(InputError, match=rf"1 cell\(s\) express no gene.*{query.obs_names[2]}"):
        compute_embeddings(silent, model, runs["graphs"], graph_mode="none")
    with pytest.raises(StoreError, match="no assignment named 'elsewhere'"):
        compute_embeddings(query, model, runs["graphs"], assignment="elsewhere")


def test_cli_embed(setup, tmp_path, capsys):
    runs, _, reference, query = setup
    reference.write_h5ad(tmp_path / "reference.h5ad")
    query.write_h5ad(tmp_path / "query.h5ad")
    out = tmp_path / "embedded.h5ad"
    args = ["embed", str(tmp_path / "query.h5ad"), "--model", str(runs["diffusion"])]
    args += ["--store", str(runs["graphs"]), "--out", str(out), "--quiet", "--max-length", "100"]
    code = gremln_main([*args, "--reference", str(tmp_path / "reference.h5ad")])
    assert code == 2 and "--reference needs --cell-type-key" in capsys.readouterr().err
    code = gremln_main(
        [*args, "--reference", str(tmp_path / "reference.h5ad"), "--cell-type-key", KEY]
    )
    assert code == 0, capsys.readouterr().err
    written = ad.read_h5ad(out)
    assert written.obsm["X_gremln"].shape == (query.n_obs, 32)
    assert written.uns["gremln"]["graphs"]["mode"] == "integrated"
    assert "cells" in capsys.readouterr().out
    code = gremln_main([*args, "--model", str(tmp_path)])
    assert code == 2 and "no config.json" in capsys.readouterr().err
