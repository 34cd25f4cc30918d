"""The gremln cell store: prepare real and simulated data, append, splits, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gremln.cellstore import CellStore, assign_splits, prepare
from gremln.tokenize import tokenize_cells
from netinfer.io import InputError
from netinfer.pipeline import normalize, quality_control
from netinfer.store import GraphStore

QC = dict(min_counts=100, max_counts=10**6, trim=None, min_genes=50)


def _graph_store(path, cell_types):
    """A graph store with a (tiny) consensus network for each cell type."""
    with GraphStore.create(path) as store:
        for i, cell_type in enumerate(sorted(cell_types)):
            edges = pd.DataFrame({"regulator": ["SPI1"], "target": [f"T{i}"], "mi": [0.5]})
            store.add_graph(f"net{i}", edges, kind="consensus", cell_type=cell_type)
    return path


@pytest.fixture(scope="module")
def pbmc(tmp_path_factory):
    from netinfer.datasets import pbmc68k_counts

    folder = tmp_path_factory.mktemp("cells")
    adata = pbmc68k_counts()
    adata.write_h5ad(folder / "pbmc68k.h5ad")
    graphs = _graph_store(folder / "graphs.zarr", set(adata.obs["bulk_labels"]))
    return folder, adata, graphs


def test_splits_hold_out_whole_types_then_cells():
    types = np.repeat([f"t{i}" for i in range(20)], 50)
    split = assign_splits(types, seed=3)
    unseen = {t for t, s in zip(types, split) if s == "val_unseen"}
    assert len(unseen) == 3  # 15% of 20 types, whole types
    assert all(s == "val_unseen" for t, s in zip(types, split) if t in unseen)
    rest = split[~np.isin(types, list(unseen))]
    assert (rest == "val_seen").sum() == round(0.15 * rest.size)
    np.testing.assert_array_equal(split, assign_splits(types, seed=3))
    assert not np.array_equal(split, assign_splits(types, seed=4))


def test_prepare_real_counts_and_append_a_simulated_data_set(pbmc, tmp_path):
    from test_pipeline import _typed_counts

    folder, adata, graphs = pbmc
    cells = tmp_path / "cells.zarr"
    report = prepare(
        folder / "pbmc68k.h5ad",
        cells,
        graphs_path=graphs,
        cell_type_key="bulk_labels",
        n_bins=11,
        chunk=128,
        **QC,
    )
    kept, qc = quality_control(adata, **QC)
    assert report["qc"] == qc and report["cells_in_store"] == kept.n_obs
    store = CellStore.open(cells)
    assert len(store) == kept.n_obs and store.vocabulary.n_bins == 11
    offsets, gene_ids, bins, _ = tokenize_cells(normalize(kept.X), kept.var_names, store.vocabulary)
    for i in (0, 17, len(store) - 1):  # tokens equal a direct computation
        ids, cell_bins = store.cell(i)
        np.testing.assert_array_equal(ids, gene_ids[offsets[i] : offsets[i + 1]])
        np.testing.assert_array_equal(cell_bins, bins[offsets[i] : offsets[i + 1]])
    assert set(store.obs["graph_key"]) <= {f"net{i}" for i in range(10)}
    assert set(store.obs["split"]) == {"train", "val_seen", "val_unseen"}

    simulated, _, _ = _typed_counts()  # other genes: outside the vocabulary, reported
    simulated.obs["bulk_labels"] = "Dendritic"
    simulated.var_names = [*adata.var_names[:150], *simulated.var_names[150:]]
    simulated.write_h5ad(tmp_path / "simulated.h5ad")
    appended = prepare(
        tmp_path / "simulated.h5ad",
        cells,
        graphs_path=graphs,
        cell_type_key="bulk_labels",
        append=True,
        **QC,
    )
    assert appended["genes_outside_vocabulary"] == 50
    store = CellStore.open(cells)
    assert len(store) == kept.n_obs + simulated.n_obs
    assert store.obs["dataset"].value_counts().to_dict() == {
        "pbmc68k": kept.n_obs,
        "simulated": simulated.n_obs,
    }
    ids, _ = store.cell(len(store) - 1)
    assert ids.max() < len(store.vocabulary) and ids.size > 0


def test_prepare_gives_types_without_network_integrated_graphs(pbmc, tmp_path):
    folder, adata, _ = pbmc
    labels = adata.obs["bulk_labels"].astype(str)
    sizes = labels.value_counts()
    small = sorted(sizes[sizes < 30].index)  # pbmc68k_reduced: 3 types, no network for them
    assert len(small) == 3
    genes = adata.var_names.astype(str)
    graphs = tmp_path / "graphs.zarr"
    with GraphStore.create(graphs) as store:
        for i, cell_type in enumerate(sorted(set(labels) - set(small))):
            edges = pd.DataFrame(
                {"regulator": [genes[0]], "target": [genes[i + 1]], "mi": [0.5], "exclusion": 0.0}
            )
            store.add_graph(f"net{i}", edges, kind="consensus", cell_type=cell_type)
    counts = folder / "pbmc68k.h5ad"
    with pytest.raises(InputError, match="no consensus network for 3 cell type"):
        prepare(
            counts,
            tmp_path / "refused.zarr",
            graphs_path=graphs,
            cell_type_key="bulk_labels",
            require_type_networks=True,
            **QC,
        )
    report = prepare(
        counts, tmp_path / "cells.zarr", graphs_path=graphs, cell_type_key="bulk_labels", **QC
    )
    kept = CellStore.open(tmp_path / "cells.zarr").obs
    expected = kept[kept["cell_type"].isin(small)]["cell_type"].value_counts()
    assert report["integrated_cells"] == expected.to_dict() and expected.sum() > 0
    name = "pbmc68k-without-type-network"
    assert report["integration"]["assignment"] == name
    assert set(report["integration"]["cell_types"]).isdisjoint(small)
    integrated = kept["cell_type"].isin(small).to_numpy()
    assert set(kept["graph_key"][integrated]) == {f"assignment:{name}"}
    assert not kept["graph_key"][~integrated].str.startswith("assignment:").any()
    with GraphStore.open(graphs) as store:
        assignment = store.get_assignment(name)
        assert sorted(assignment.cells) == sorted(kept["cell_id"][integrated])
        # a cell whose neighbours are all of one type gets that type's one edge
        unanimous = np.flatnonzero(assignment.weights.max(axis=1) == 1.0)
        assert unanimous.size > 0
        for i in unanimous:
            rows, cols = assignment.cell_graph(i)
            assert len(rows) == 1 and store.genes[rows[0]] == genes[0]


def test_prepare_bad_input(pbmc, tmp_path):
    folder, adata, graphs = pbmc
    cells = tmp_path / "cells.zarr"
    with pytest.raises(InputError, match="no obs column 'celltype'"):
        prepare(folder / "pbmc68k.h5ad", cells, graphs_path=graphs, cell_type_key="celltype")
    partial = _graph_store(tmp_path / "partial.zarr", ["Dendritic"])
    with pytest.raises(InputError, match="no consensus network for 9 cell type"):
        prepare(
            folder / "pbmc68k.h5ad",
            cells,
            graphs_path=partial,
            cell_type_key="bulk_labels",
            require_type_networks=True,
            **QC,
        )
    prepare(folder / "pbmc68k.h5ad", cells, graphs_path=graphs, cell_type_key="bulk_labels", **QC)
    with pytest.raises(InputError, match="exists; pass append"):
        prepare(folder / "pbmc68k.h5ad", cells, graphs_path=graphs, cell_type_key="bulk_labels")
    with pytest.raises(InputError, match="already holds a data set named 'pbmc68k'"):
        prepare(
            folder / "pbmc68k.h5ad",
            cells,
            graphs_path=graphs,
            cell_type_key="bulk_labels",
            append=True,
            **QC,
        )
    import zarr

    group = zarr.open_group(cells, mode="a")
    group["tokens/offsets"].append(np.array([10**9], dtype=np.int64))  # a truncated store
    with pytest.raises(InputError, match="truncated cell store"):
        CellStore.open(cells)
