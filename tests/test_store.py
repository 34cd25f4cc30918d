"""The Zarr graph store: round trips, anndata compatibility, subgraphs, safety, validation."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import anndata.io
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import zarr

from netinfer.io import InputError, read_network, write_aracne3, write_aracne_ap
from netinfer.store import ROOT_KEY, SCHEMA_VERSION, GraphStore, StoreError


def _grn():
    return pd.DataFrame(
        {
            "regulator": ["TF1", "TF1", "TF2", "TF2"],
            "target": ["G1", "G2", "G1", "TF1"],
            "mi": [0.5, 0.2, 0.3, 0.4],
            "pvalue": [1e-6, 1e-3, 1e-4, 1e-5],
            "count": [9, 4, 7, 8],
        }
    )


@pytest.fixture
def store(tmp_path):
    with GraphStore.create(tmp_path / "graphs.zarr") as created:
        yield created


def _key(path, name):
    return zarr.open_group(path, mode="r").attrs[ROOT_KEY]["graphs"][name]["key"]


def test_every_kind_round_trips_and_anndata_reads_it(store, tmp_path):
    grn = _grn()
    store.add_graph("t_cells", grn, kind="grn", cell_type="T cell", params={"fdr": 0.05})
    ppi = sp.coo_matrix(([0.9, 0.7], ([0, 1], [1, 2])), shape=(3, 3))
    store.add_graph("hint", ppi, genes=["G1", "G3", "TF2"], kind="ppi", directed=False)
    store.add_graph("cons", grn.rename(columns={"mi": "weight"}), kind="consensus")
    store.add_graph("integ", grn[["regulator", "target"]], kind="integrated")
    assert list(store.list()["name"]) == ["cons", "hint", "integ", "t_cells"]
    assert list(store.genes) == ["TF1", "TF2", "G1", "G2", "G3"]  # first seen, sources first

    graph = store.get("t_cells")
    table = graph.to_dataframe()
    expected = grn.sort_values(
        ["regulator", "target"], key=lambda c: c.map({g: i for i, g in enumerate(store.genes)})
    ).reset_index(drop=True)
    assert list(zip(table["source"], table["target"])) == list(
        zip(expected["regulator"], expected["target"])
    )
    np.testing.assert_array_equal(table["weight"], expected["mi"])
    np.testing.assert_array_equal(table["count"], expected["count"])
    assert graph.meta["cell_type"] == "T cell" and graph.meta["params"] == {"fdr": 0.05}
    assert graph.meta["kind"] == "grn" and graph.meta["directed"] is True
    assert store.get("integ").adjacency.data.tolist() == [1.0] * 4

    hint = store.get("hint").to_dataframe()
    pairs = {frozenset(pair) for pair in zip(hint["source"], hint["target"])}
    assert pairs == {frozenset({"G1", "G3"}), frozenset({"G3", "TF2"})} and len(hint) == 2

    group = zarr.open_group(store.url, mode="r")
    adjacency = group[f"graphs/{_key(store.url, 't_cells')}/adjacency"]
    read = anndata.io.read_elem(adjacency)
    assert isinstance(read, sp.csr_matrix)
    assert (read != graph.adjacency[: read.shape[0], : read.shape[1]]).nnz == 0
    lazy = anndata.io.sparse_dataset(adjacency)
    assert lazy.shape == read.shape and (lazy.to_memory() != read).nnz == 0


def test_graphs_read_back_through_anndata_to_coo(store):
    store.add_graph("g", _grn(), kind="grn")
    adjacency = zarr.open_group(store.url, mode="r")[f"graphs/{_key(store.url, 'g')}/adjacency"]
    assert adjacency["indptr"].dtype == adjacency["indices"].dtype == np.int32
    coo = anndata.io.sparse_dataset(adjacency).to_memory().tocoo()  # needs one index dtype
    genes = store.genes
    assert set(zip(genes[coo.row], genes[coo.col], coo.data)) == set(
        zip(_grn()["regulator"], _grn()["target"], _grn()["mi"])
    )


def test_old_stores_with_mixed_index_dtypes_still_read(store):
    store.add_graph("g", _grn(), kind="grn")
    expected = store.get("g").adjacency.toarray()
    adjacency = zarr.open_group(store.url, mode="a")[f"graphs/{_key(store.url, 'g')}/adjacency"]
    indptr = adjacency["indptr"][:].astype(np.int64)  # as stores before one index dtype
    del adjacency["indptr"]
    adjacency.create_array("indptr", shape=indptr.shape, dtype=np.int64)[:] = indptr
    with GraphStore.open(store.url) as reopened:
        np.testing.assert_array_equal(reopened.get("g").adjacency.toarray(), expected)
        src, dst, _ = reopened.subgraph("g", reopened.gene_index(["TF1", "TF2", "G1"]))
        assert sorted(zip(src.tolist(), dst.tolist())) == [(0, 2), (1, 0), (1, 2)]


def test_network_headers_match_case_insensitively(store, tmp_path):
    path = tmp_path / "lower.tsv"
    path.write_text("regulator\ttarget\tmi\tpvalue\nTF1\tG1\t0.5\t1e-6\n")
    store.add_network_file("lower", path)
    assert store.get("lower").to_dataframe()[["source", "target"]].values.tolist() == [
        ["TF1", "G1"]
    ]
    upper = tmp_path / "upper.tsv"
    upper.write_text(
        "REGULATOR.VALUES\tTarget.Values\tmi.values\tscc.values\tcount.values"
        "\tlog.p.values\nTF1\tG2\t0.5\t0.3\t7\t-10\n"
    )
    assert read_network(upper)["count"].tolist() == [7]


def test_store_add_command_takes_a_lower_case_header(tmp_path):
    from cli import netinfer as cli

    path = tmp_path / "lower.tsv"
    path.write_text("regulator\ttarget\tmi\tpvalue\nTF1\tG1\t0.5\t1e-6\n")
    graphs = str(tmp_path / "graphs.zarr")
    assert cli.main(["store", "create", graphs]) == 0
    assert cli.main(["store", "add", graphs, "lower", str(path)]) == 0
    with GraphStore.open(graphs) as store:
        assert store.get("lower").to_dataframe()["pvalue"].tolist() == [1e-6]


def test_directed_edges_are_kept_and_symmetrized_only_on_request(store):
    store.add_graph("g", _grn(), kind="grn")
    a = store.get("g").adjacency
    tf1, tf2 = store.gene_index(["TF1", "TF2"])
    assert a[tf2, tf1] == 0.4 and a[tf1, tf2] == 0  # as given
    s = store.get("g", symmetrize=True).adjacency
    assert s[tf2, tf1] == s[tf1, tf2] == 0.4
    assert (s != s.T).nnz == 0


def test_subgraph_matches_dense_submatrix(tmp_path):
    rng = np.random.default_rng(0)
    n = 300
    dense = sp.random(n, n, density=0.05, random_state=1, format="csr")
    dense.setdiag(0)
    dense.eliminate_zeros()
    genes = [f"g{i}" for i in range(n)]
    with GraphStore.create(tmp_path / "s.zarr") as store:
        store.add_graph("r", dense, genes=genes, kind="grn")
        a = store.get("r").adjacency
        for symmetrize in (False, True):
            full = a.maximum(a.T).tocsr() if symmetrize else a
            for _ in range(20):
                cell = rng.choice(n, size=int(rng.integers(1, 120)), replace=False)
                src, dst, w = store.subgraph("r", cell, symmetrize=symmetrize)
                expected = full[cell][:, cell].tocoo()
                got = sp.coo_matrix((w, (src, dst)), shape=expected.shape)
                assert got.nnz == expected.nnz and (got != expected).nnz == 0
        with pytest.raises(IndexError):
            store.subgraph("r", np.array([n + 5]))


def test_network_files_and_export_round_trip(store, tmp_path):
    edges = _grn().assign(scc=[0.9, 0.1, 0.5, -0.7], log_p=lambda t: np.log(t["pvalue"]))
    write_aracne_ap(edges, tmp_path / "ap.txt")
    write_aracne3(edges, tmp_path / "a3.tsv")
    store.add_network_file("ap", tmp_path / "ap.txt")
    store.add_network_file("a3", tmp_path / "a3.tsv")
    assert store.info("a3")["sources"][0]["sha256"]
    for name, fmt in (("ap", "aracne-ap"), ("a3", "aracne3")):
        out = tmp_path / f"out_{name}.tsv"
        store.export(name, out, format=fmt)
        back = read_network(out).sort_values(["regulator", "target"]).reset_index(drop=True)
        ref = edges.sort_values(["regulator", "target"]).reset_index(drop=True)
        np.testing.assert_allclose(back["mi"], ref["mi"])
        np.testing.assert_allclose(back["pvalue"], ref["pvalue"], rtol=1e-12)


def test_names_overwrite_remove_and_errors(store):
    store.add_graph("g", _grn(), kind="grn")
    with pytest.raises(StoreError, match="overwrite=True"):
        store.add_graph("g", _grn(), kind="grn")
    store.add_graph("g", _grn().iloc[:2], kind="grn", overwrite=True)
    assert store.get("g").adjacency.nnz == 2
    assert store.validate() == []  # the replaced data is gone
    store.remove("g")
    assert "g" not in store
    with pytest.raises(StoreError, match="no graph named 'g'"):
        store.get("g")
    with pytest.raises(InputError, match="duplicated edge"):
        store.add_graph("d", pd.concat([_grn(), _grn().iloc[:1]]), kind="grn")
    with pytest.raises(InputError, match="either order"):
        store.add_graph(
            "u",
            pd.DataFrame({"gene_a": ["A", "B"], "gene_b": ["B", "A"]}),
            kind="ppi",
            directed=False,
        )
    with pytest.raises(InputError, match="no endpoint columns"):
        store.add_graph("x", pd.DataFrame({"from": ["A"], "to": ["B"]}), kind="grn")
    with pytest.raises(ValueError, match="kind"):
        store.add_graph("k", _grn(), kind="coexpression")


def test_assignment_keeps_the_cells_whose_labels_were_read(store, tmp_path):
    store.add_graph("g", _grn(), kind="grn")
    cells = dict(
        graphs=[np.array([0, 2]), np.array([1])],
        cells=["q1", "q2", "q3"],
        graph_index=np.array([0, 1, 0]),
        weights=np.array([[1.0, 0.0], [0.5, 0.5], [1.0, 0.0]]),
        cell_types=["A", "B"],
        edge_rows=np.array([0, 0, 1]),
        edge_cols=np.array([2, 3, 2]),
    )
    read = ["r1", "r2", "q1", "r3"]
    store.add_assignment("with", label_cells=read, **cells)
    store.add_assignment("without", **cells)  # as every assignment before label_cells
    store.close()
    with GraphStore.open(tmp_path / "graphs.zarr") as reopened:
        assert [str(c) for c in reopened.get_assignment("with").label_cells] == read
        assert reopened.get_assignment("without").label_cells is None
        assert reopened.validate() == []
    root = zarr.open_group(tmp_path / "graphs.zarr", mode="r")
    key = root.attrs[ROOT_KEY]["assignments"]
    stored = root["assignments"]  # an array in the assignment's group, only where given
    assert "label_cells" in stored[key["with"]] and "label_cells" not in stored[key["without"]]


def test_vocabulary_mismatch_is_refused(store):
    store.add_genes(["TP53"], ensembl=["ENSG00000141510"])
    with pytest.raises(StoreError, match="vocabulary mismatch.*TP53"):
        store.add_genes(["TP53"], ensembl=["ENSG00000000001"])
    assert list(store.ensembl) == ["ENSG00000141510"]


def test_second_writer_is_refused_and_readers_are_not(tmp_path):
    path = tmp_path / "s.zarr"
    writer = GraphStore.create(path)
    writer.add_graph("g", _grn(), kind="grn")
    with pytest.raises(StoreError, match="another writer holds the store"):
        GraphStore.open(path, mode="a")
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        counts = pool.map(_read_edges, [str(path)] * 4)
    assert counts == [4] * 4
    writer.close()
    GraphStore.open(path, mode="a").close()  # the lock is released


def _read_edges(path):
    with GraphStore.open(path) as reader:
        return int(reader.get("g").adjacency.nnz)


def test_interrupted_write_leaves_nothing_visible(store, monkeypatch):
    store.add_graph("kept", _grn(), kind="grn")

    def crash(**_):
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(store, "_update_root", crash)
    with pytest.raises(KeyboardInterrupt):
        store.add_graph("new", _grn().iloc[:1], kind="grn")
    monkeypatch.undo()
    assert "new" not in store and store.get("kept").adjacency.nnz == 4
    problems = store.validate()
    assert len(problems) == 1 and "unreferenced data from an interrupted write" in problems[0]
    assert len(store.cleanup()) == 1 and store.validate() == []


def test_validate_names_the_broken_array(tmp_path):
    path = tmp_path / "s.zarr"
    with GraphStore.create(path) as store:
        store.add_graph("g", _grn(), kind="grn")
    key = _key(path, "g")
    chunk = next((path / "graphs" / key / "adjacency" / "indices" / "c").rglob("*"))
    chunk.write_bytes(chunk.read_bytes()[:-3])  # truncated
    problems = GraphStore.open(path).validate()
    assert len(problems) == 1 and "adjacency/indices unreadable" in problems[0]
    chunk.unlink()  # a missing chunk reads as fill values: caught by the checksum
    problems = GraphStore.open(path).validate()
    assert any("adjacency/indices checksum mismatch" in p for p in problems)


def test_newer_schema_and_foreign_groups_are_explained(tmp_path):
    path = tmp_path / "s.zarr"
    GraphStore.create(path).close()
    group = zarr.open_group(path, mode="r+")
    root = dict(group.attrs[ROOT_KEY])
    root["schema_version"] = SCHEMA_VERSION + 1
    group.attrs[ROOT_KEY] = root
    with pytest.raises(StoreError, match="schema version 2.*Upgrade netinfer"):
        GraphStore.open(path)
    zarr.open_group(tmp_path / "plain.zarr", mode="w")
    with pytest.raises(StoreError, match="not a netinfer graph store"):
        GraphStore.open(tmp_path / "plain.zarr")
    with pytest.raises(StoreError, match="no such graph store"):
        GraphStore.open(tmp_path / "missing.zarr")
    with pytest.raises(StoreError, match="already exists"):
        GraphStore.create(path)
    GraphStore.create(path, overwrite=True).close()
    assert GraphStore.open(path).list().empty


def test_fsspec_url(tmp_path):
    url = Path(tmp_path / "remote.zarr").absolute().as_uri()
    with GraphStore.create(url) as store:
        store.add_graph("g", _grn(), kind="grn")
    with GraphStore.open(url) as reader:
        assert reader.get("g").adjacency.nnz == 4 and reader.validate() == []
        src, dst, _ = reader.subgraph("g", reader.gene_index(["TF2", "TF1"]))
        assert list(zip(src, dst)) == [(0, 1)]
    assert json.loads((tmp_path / "remote.zarr" / "zarr.json").read_text())
    assert not os.path.exists(tmp_path / "remote.zarr" / ".netinfer-writer.lock")
