"""Malformed inputs to the five commands that write into a store: ``netinfer celltype-networks``,
``netinfer integrate``, ``netinfer store add``, ``netinfer ppi`` and ``gremln prepare``.

Every case asserts exit code 2, a message naming the file and the problem, no traceback, and that
the store (or output) the command would write is byte for byte as before (a hash of every file
under it), or still absent. The CLIs run in-process, so the ~100 cases take seconds.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cli import gremln as gremln_cli
from cli import netinfer as netinfer_cli
from netinfer.io import InputError
from netinfer.sc.validate import check_matrix, labelled_cells
from netinfer.store import LOCK_NAME, GraphStore

TYPES = ("type A", "type B")
GENES = [f"G{i:02d}" for i in range(30)]
QC = ["--min-counts", "10", "--min-genes", "5", "--trim", "1"]
PPI = Path(__file__).parent / "data" / "ppi"
NETWORK_HEADER = "Regulator\tTarget\tMI\tpvalue\n"


def _counts(n_cells: int = 60, seed: int = 0) -> ad.AnnData:
    counts = np.random.default_rng(seed).poisson(3.0, size=(n_cells, len(GENES)))
    obs = pd.DataFrame(
        {"cell_type": np.repeat(TYPES, n_cells // 2)}, index=[f"cell{i}" for i in range(n_cells)]
    )
    return ad.AnnData(
        sp.csr_matrix(counts.astype(np.float32)), obs=obs, var=pd.DataFrame(index=GENES)
    )


def _with(X=None, **changes) -> ad.AnnData:
    """The good data set with X (dense, cells x genes) or obs/var names changed."""
    adata = _counts()
    if X is not None:
        adata.X = X(adata.X.toarray())
    if "obs_names" in changes:
        adata.obs_names = changes["obs_names"]
    if "var_names" in changes:
        adata.var_names = changes["var_names"]
    if "labels" in changes:
        adata.obs["cell_type"] = changes["labels"]
    return adata


def _set(row: int, col: int, value: float):
    def change(X):
        X[row, col] = value
        return X

    return change


def _lognorm_late(X):  # counts in the first 50 cells, log-normalized values in the last 10
    X[50:] = np.log1p(X[50:] / X[50:].sum(1, keepdims=True) * 1e4)
    return X


BAD_H5AD = {
    "inf": _with(_set(59, 7, np.inf)),
    "nan": _with(_set(41, 3, np.nan)),
    "negative": _with(_set(55, 2, -4.0)),
    "lognorm_late": _with(_lognorm_late),
    "no_cells": _counts()[:0].copy(),
    "no_genes": _counts()[:, :0].copy(),
    "dup_genes": _with(var_names=GENES[:-1] + ["G00"]),
    "dup_cells": _with(obs_names=[f"cell{i % 59}" for i in range(60)]),
    "empty_gene_id": _with(var_names=[""] + GENES[1:]),
    "no_labels": _with(labels=pd.Categorical([np.nan] * 60, categories=list(TYPES))),
    "unknown_type": _with(labels=np.repeat(["type A", "type C"], 30)),
    "other_genes": _with(var_names=[f"X{i:02d}" for i in range(30)]),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Inputs, good and bad, and the stores the commands write into (built once)."""
    tmp = tmp_path_factory.mktemp("malformed")
    _counts().write_h5ad(tmp / "counts.h5ad")
    _counts(seed=1).write_h5ad(tmp / "fresh.h5ad")  # a data set the cell store lacks
    for name, adata in BAD_H5AD.items():
        adata.write_h5ad(tmp / f"{name}.h5ad")
    (tmp / "not_anndata.h5ad").write_text("gene,cell1\nG00,1\n")
    (tmp / "zero_bytes.h5ad").write_bytes(b"")
    (tmp / "a_directory").mkdir()
    (tmp / "foreign").mkdir()
    (tmp / "foreign" / "notes.txt").write_text("not a store\n")
    (tmp / "a_file.zarr").write_text("not a store\n")
    (tmp / "tfs.txt").write_text("G00\nG01\nG02\n")
    (tmp / "mouse_tfs.txt").write_text("Sox2\nPou5f1\n")
    networks = {
        "good": NETWORK_HEADER + "G00\tG05\t0.5\t0.001\nG01\tG06\t0.4\t0.002\n",
        "empty": "",
        "bad_header": "regulator target mi\nG00\tG05\t0.5\n",
        "short_line": NETWORK_HEADER + "G00\tG05\t0.5\t0.001\nG01\tG06\t0.4\n",
        "text_mi": NETWORK_HEADER + "G00\tG05\t0.5\t0.001\nG01\tG06\thigh\t0.002\n",
        "inf_mi": NETWORK_HEADER + "G00\tG05\t0.5\t0.001\n\nG01\tG06\tinf\t0.002\n",
        "nan_mi": NETWORK_HEADER + "G00\tG05\tNaN\t0.001\n",
        "duplicated": NETWORK_HEADER + "G00\tG05\t0.5\t0.001\nZZ1\tG07\t0.2\t0.01\n"
        "G00\tG05\t0.3\t0.002\n",
        "empty_id": NETWORK_HEADER + "G00\tG05\t0.5\t0.001\n\tG06\t0.4\t0.002\n",
        "header_only": NETWORK_HEADER + "\n",
    }
    for name, text in networks.items():
        (tmp / f"{name}.tsv").write_text(text)
    (tmp / "corrupt.tsv.gz").write_bytes(b"\x1f\x8b\x08\x00garbage, not gzip")
    (tmp / "binary.tsv").write_bytes(NETWORK_HEADER.encode() + b"G00\t\xff\xfe\x00\t0.5\t0.1\n")
    (tmp / "hint_bad_header.txt").write_text("A\tB\nx\ty\n")
    hint = (PPI / "HomoSapiens_binary_hq.txt").read_text().splitlines()
    (tmp / "hint_short_line.txt").write_text("\n".join([*hint[:3], "A0A\tQ01\tEWSR1", *hint[3:]]))
    (tmp / "hint_spaces.txt").write_text("\n".join(line.replace("\t", " ") for line in hint))
    string = (PPI / "9606.protein.links.v12.0.txt").read_text().splitlines()
    (tmp / "string_text_score.txt").write_text(
        "\n".join([*string[:2], string[2].rsplit(" ", 1)[0] + " high", *string[3:]])
    )
    (tmp / "string_bad_header.txt").write_text("a b c\n" + "\n".join(string[1:]))
    with GraphStore.create(tmp / "graphs.zarr") as store:
        for cell_type in TYPES:
            edges = pd.DataFrame(
                {
                    "regulator": ["G00", "G01"],
                    "target": ["G05", "G06"],
                    "mi": [0.5, 0.4],
                    "exclusion": [0.0, 0.01],
                }
            )
            store.add_graph(cell_type, edges, kind="consensus", cell_type=cell_type)
        store.add_graph("hint", pd.DataFrame({"gene_a": ["G00"], "gene_b": ["G01"]}), kind="ppi")
    with GraphStore.create(tmp / "weak.zarr") as store:  # no edge passes alpha
        for cell_type in TYPES:
            edges = pd.DataFrame(
                {"regulator": ["G00"], "target": ["G05"], "mi": [0.1], "exclusion": [0.9]}
            )
            store.add_graph(cell_type, edges, kind="consensus", cell_type=cell_type)
    args = ["integrate", tmp / "counts.h5ad", "--reference", tmp / "counts.h5ad"]
    args += ["--cell-type-key", "cell_type", "--store", tmp / "graphs.zarr", "--k", "5"]
    assert netinfer_cli.main([str(a) for a in args]) == 0  # "integrated" exists from here on
    prepare = ["prepare", tmp / "counts.h5ad", "--cells", tmp / "cells.zarr"]
    prepare += ["--graphs", tmp / "graphs.zarr", "--cell-type-key", "cell_type", *QC, "--quiet"]
    assert gremln_cli.main([str(a) for a in prepare]) == 0
    return tmp


def snapshot(path: Path) -> dict | None:
    """SHA-256 of every file under ``path`` (``None`` when it does not exist)."""
    if not path.exists():
        return None
    if path.is_file():
        return {"": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {
        str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(path.rglob("*"))
        if f.is_file()
    }


def refused(main, argv, capsys, *, watch, says) -> str:
    """Run a CLI in-process; assert exit code 2, one error line naming ``says`` (all of them),
    no traceback, and the paths in ``watch`` byte for byte unchanged (or still absent)."""
    before = {path: snapshot(path) for path in watch}
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    message = " ".join(err.split())
    assert code == 2, err
    assert "Traceback" not in err and "error:" in err, err
    for text in says:
        assert text in message, message
    for path, hashes in before.items():
        assert snapshot(path) == hashes, f"{path} changed"
    return message


# ------------------------------------------------------------------ celltype-networks
def _celltype_cases():
    """(id, counts file, more arguments, what the message must say)."""
    return [
        ("missing file", "nope.h5ad", [], ["nope.h5ad: no such file"]),
        ("directory", "a_directory", [], ["a_directory: is a directory"]),
        ("not anndata", "not_anndata.h5ad", [], ["not a readable .h5ad file"]),
        ("zero bytes", "zero_bytes.h5ad", [], ["zero_bytes.h5ad: not a readable .h5ad"]),
        ("inf in the last cell", "inf.h5ad", [], ["inf.h5ad: X holds 1 non-finite", "cell59"]),
        ("nan", "nan.h5ad", [], ["nan.h5ad: X holds 1 non-finite", "'cell41'", "'G03'"]),
        ("negative", "negative.h5ad", [], ["negative values", "'cell55'", "raw UMI counts"]),
        ("log-normalized late cells", "lognorm_late.h5ad", [], ["non-integer", "'cell50'"]),
        ("no cells", "no_cells.h5ad", [], ["no_cells.h5ad: the X matrix is empty (0 cells"]),
        ("no genes", "no_genes.h5ad", [], ["no_genes.h5ad: the X matrix is empty", "0 genes"]),
        ("duplicated genes", "dup_genes.h5ad", [], ["1 duplicated gene id", "'G00'"]),
        ("duplicated cells", "dup_cells.h5ad", [], ["1 duplicated cell id", "'cell0'"]),
        ("empty gene id", "empty_gene_id.h5ad", [], ["1 empty gene id", "position 0"]),
        ("no labels", "no_labels.h5ad", ["--cell-type-key", "cell_type"], ["no cell has a label"]),
        (
            "missing label column",
            "counts.h5ad",
            ["--cell-type-key", "celltype"],
            ["counts.h5ad: no obs column 'celltype'", "--cell-type-key"],
        ),
        ("missing layer", "counts.h5ad", ["--layer", "raw"], ["no layer 'raw'"]),
        ("qc removes all", "counts.h5ad", ["--min-counts", "1000000"], ["no cell left"]),
    ]


@pytest.mark.parametrize("case", _celltype_cases(), ids=lambda c: c[0])
def test_celltype_networks_refuses(files, capsys, case):
    _, counts, more, says = case
    argv = ["celltype-networks", files / counts, "--regulators", files / "tfs.txt"]
    argv += ["--store", files / "graphs.zarr", *QC, *more, "--quiet", "--workers", "1"]
    refused(netinfer_cli.main, argv, capsys, watch=_celltype_outputs(files), says=says)


def _celltype_outputs(files):
    return [files / "graphs.zarr", files / "graphs.zarr.report.json", files / "graphs.zarr.work"]


@pytest.mark.parametrize(
    "case",
    [
        ("regulators missing", ["--regulators", "nope.txt"], ["nope.txt: no such file"]),
        ("regulators a directory", ["--regulators", "a_directory"], ["is a directory"]),
        ("mouse regulators", ["--regulators", "mouse_tfs.txt"], ["none of the 2 regulators"]),
        ("store a file", ["--store", "a_file.zarr"], ["a_file.zarr: is a file"]),
        ("store foreign", ["--store", "foreign"], ["foreign: a directory that is not a graph"]),
        ("report a directory", ["--report", "a_directory"], ["a_directory: is a directory"]),
        ("report under a file", ["--report", "a_file.zarr/r.json"], ["a_file.zarr is a file"]),
        ("work dir a file", ["--work-dir", "tfs.txt"], ["is a file; --work-dir takes the folder"]),
    ],
    ids=lambda c: c[0],
)
def test_celltype_networks_refuses_paths(files, capsys, case):
    _, changed, says = case
    options = {"--regulators": "tfs.txt", "--store": "graphs.zarr"}
    options.update(dict(zip(changed[::2], changed[1::2])))
    argv = ["celltype-networks", files / "counts.h5ad", *QC, "--quiet", "--workers", "1"]
    for flag, value in options.items():
        argv += [flag, files / value]
    watch = [*_celltype_outputs(files), files / "a_file.zarr", files / "foreign"]
    refused(netinfer_cli.main, argv, capsys, watch=watch, says=says)


def test_refused_commands_leave_no_new_store(files, capsys, tmp_path):
    """A store the command created is removed again when the command fails after creating it
    (QC and graph names are checked by the library, once the store is open)."""
    argv = ["celltype-networks", files / "counts.h5ad", "--regulators", files / "tfs.txt"]
    argv += ["--store", tmp_path / "new.zarr", *QC, "--min-counts", "1000000", "--quiet"]
    argv += ["--workers", "1"]
    refused(netinfer_cli.main, argv, capsys, watch=[tmp_path / "new.zarr"], says=["no cell"])
    argv = ["ppi", "hint", PPI / "HomoSapiens_binary_hq.txt", "--store", tmp_path / "new.zarr"]
    argv += ["--name", "a/b"]
    refused(netinfer_cli.main, argv, capsys, watch=[tmp_path / "new.zarr"], says=["'a/b'"])
    assert list(tmp_path.iterdir()) == []


def test_celltype_networks_names_a_cluster_too_small_for_aracne(files, capfd):
    """The error arises in a Dask worker: it names the file and the cluster, and neither the
    command nor its workers (whose output capfd also holds) print a traceback."""
    argv = ["celltype-networks", files / "counts.h5ad", "--regulators", files / "tfs.txt"]
    argv += ["--store", files / "graphs.zarr", "--cell-type-key", "cell_type", *QC]
    argv += ["--min-cells", "5", "--cluster-cells", "5"]  # Leiden clusters under 10 cells
    argv += ["--resamples", "2", "--null-pairs", "1000000", "--quiet", "--workers", "1"]
    message = refused(
        netinfer_cli.main,
        argv,
        capfd,
        watch=[files / "graphs.zarr", files / "graphs.zarr.report.json"],
        says=["samples, but at least 10 are needed"],
    )
    assert f"{files / 'counts.h5ad'}: cell type 'type " in message and ", cluster " in message


def test_celltype_networks_refuses_an_unreachable_scheduler(files, capsys):
    import dask

    argv = ["celltype-networks", files / "counts.h5ad", "--regulators", files / "tfs.txt"]
    argv += ["--store", files / "graphs.zarr", *QC, "--quiet", "--scheduler", "tcp://127.0.0.1:9"]
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        refused(
            netinfer_cli.main,
            argv,
            capsys,
            watch=_celltype_outputs(files),
            says=["tcp://127.0.0.1:9: no Dask scheduler answers there (--scheduler)"],
        )


def test_celltype_networks_refuses_a_store_with_a_live_writer(files, capsys):
    lock = files / "graphs.zarr" / LOCK_NAME
    since = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "since": since}
    lock.write_text(json.dumps(holder))  # this test's own process: alive
    try:
        argv = ["celltype-networks", files / "counts.h5ad", "--regulators", files / "tfs.txt"]
        argv += ["--store", files / "graphs.zarr", *QC, "--quiet", "--workers", "1"]
        message = refused(netinfer_cli.main, argv, capsys, watch=_celltype_outputs(files), says=[])
        assert "another writer holds the store" in message and str(os.getpid()) in message
    finally:
        lock.unlink()


# ------------------------------------------------------------------ integrate
def _integrate_cases():
    """(id, query, reference, more arguments, what the message must say)."""
    good = "counts.h5ad"
    return [
        ("query missing", "nope.h5ad", good, [], ["nope.h5ad: no such file"]),
        ("query a directory", "a_directory", good, [], ["a_directory: is a directory"]),
        ("reference missing", good, "nope.h5ad", [], ["nope.h5ad: no such file (--reference)"]),
        ("reference not anndata", good, "not_anndata.h5ad", [], ["not a readable .h5ad"]),
        ("query nan", "nan.h5ad", good, [], ["nan.h5ad: X holds 1 non-finite", "'cell41'"]),
        ("query negative", "negative.h5ad", good, [], ["negative.h5ad: X holds negative"]),
        ("reference inf", good, "inf.h5ad", [], ["inf.h5ad: X holds 1 non-finite", "'cell59'"]),
        ("query no cells", "no_cells.h5ad", good, [], ["no_cells.h5ad: the X matrix is empty"]),
        ("reference no genes", good, "no_genes.h5ad", [], ["no_genes.h5ad: the X matrix is"]),
        ("query duplicated genes", "dup_genes.h5ad", good, [], ["duplicated gene id", "'G00'"]),
        ("reference duplicated cells", good, "dup_cells.h5ad", [], ["duplicated cell id"]),
        ("reference no labels", good, "no_labels.h5ad", [], ["no cell has a label"]),
        (
            "label column missing",
            good,
            good,
            ["--cell-type-key", "celltype"],
            ["counts.h5ad: no obs column 'celltype' (--cell-type-key)"],
        ),
        ("genes do not overlap", "other_genes.h5ad", good, [], ["only 0 of the reference's 30"]),
        ("k too large", good, good, ["--k", "500"], ["k=500 neighbours need more reference"]),
        ("alpha out of range", good, good, ["--alpha", "0"], ["alpha must be in (0, 1)"]),
        ("no PCA component", good, good, ["--n-pcs", "0"], ["n_pcs must be at least 1"]),
        ("assignment exists", good, good, ["--name", "integrated"], ["'integrated' exists"]),
        ("layer missing", good, good, ["--layer", "raw"], ["no layer 'raw'"]),
    ]


@pytest.mark.parametrize("case", _integrate_cases(), ids=lambda c: c[0])
def test_integrate_refuses(files, capsys, case):
    _, query, reference, more, says = case
    argv = ["integrate", files / query, "--reference", files / reference, "--k", "5"]
    argv += ["--cell-type-key", "cell_type", "--store", files / "graphs.zarr", *more]
    refused(netinfer_cli.main, argv, capsys, watch=[files / "graphs.zarr"], says=says)


@pytest.mark.parametrize(
    "case",
    [
        ("store missing", "nope.zarr", ["nope.zarr: no such graph store"]),
        ("store a file", "a_file.zarr", ["a_file.zarr: is a file"]),
        ("store is a cell store", "cells.zarr", ["not a netinfer graph store"]),
    ],
    ids=lambda c: c[0],
)
def test_integrate_refuses_stores(files, capsys, case):
    _, store, says = case
    argv = ["integrate", files / "counts.h5ad", "--reference", files / "counts.h5ad"]
    argv += ["--cell-type-key", "cell_type", "--store", files / store, "--k", "5"]
    watch = [files / store]
    refused(netinfer_cli.main, argv, capsys, watch=watch, says=says)


def test_integrate_empty_result_is_an_error_unless_allowed(files, capsys):
    argv = ["integrate", files / "counts.h5ad", "--reference", files / "counts.h5ad", "--k", "5"]
    argv += ["--cell-type-key", "cell_type", "--store", files / "weak.zarr", "--name", "weak"]
    message = refused(
        netinfer_cli.main,
        argv,
        capsys,
        watch=[files / "weak.zarr"],
        says=["every one of its 60 cells would get an empty graph", "--allow-empty"],
    )
    assert str(files / "counts.h5ad") in message  # <query> named as the file
    assert netinfer_cli.main([str(a) for a in [*argv, "--allow-empty"]]) == 0
    with GraphStore.open(files / "weak.zarr") as store:
        stored = store.get_assignment("weak")
    assert len(stored.cells) == 60 and stored.graph_edges.size == 0


def test_integrate_leaves_out_reference_cells_without_a_label(files, capsys, tmp_path):
    reference = _counts()
    labels = reference.obs["cell_type"].astype(object)
    labels.iloc[[3, 40]] = [np.nan, "  "]
    reference.obs["cell_type"] = labels
    reference.write_h5ad(tmp_path / "some_unlabelled.h5ad")
    argv = ["integrate", files / "counts.h5ad", "--reference", tmp_path / "some_unlabelled.h5ad"]
    argv += ["--cell-type-key", "cell_type", "--store", files / "graphs.zarr", "--k", "5"]
    argv += ["--name", "partly_labelled"]
    assert netinfer_cli.main([str(a) for a in argv]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "some_unlabelled.h5ad: 2 of 60 cells have no label in obs column 'cell_type'" in err
    assert "'cell3', 'cell40'" in err and "left out" in err
    with GraphStore.open(files / "graphs.zarr") as store:
        assert store.get_assignment("partly_labelled").meta["params"]["reference_cells"] == 58


# ------------------------------------------------------------------ store add
def _store_add_cases():
    """(id, network file, more arguments, what the message must say)."""
    return [
        ("missing file", "nope.tsv", [], ["nope.tsv: no such file"]),
        ("directory", "a_directory", [], ["a_directory: is a directory"]),
        ("empty file", "empty.tsv", [], ["empty.tsv: line 1: unknown network header"]),
        ("bad header", "bad_header.tsv", [], ["bad_header.tsv: line 1: unknown network header"]),
        ("short line", "short_line.tsv", [], ["short_line.tsv: line 3: expected 4"]),
        ("text MI", "text_mi.tsv", [], ["text_mi.tsv: line 3, column 'mi': 'high' is not"]),
        ("infinite MI", "inf_mi.tsv", [], ["inf_mi.tsv: line 4: mi is inf"]),
        ("NaN MI", "nan_mi.tsv", [], ["nan_mi.tsv: line 2, column 'mi'", "not a number"]),
        (
            "duplicated edge",
            "duplicated.tsv",
            [],
            ["duplicated.tsv: line 4: duplicated edge G00 -> G05, first at line 2"],
        ),
        ("empty id", "empty_id.tsv", [], ["empty_id.tsv: line 3: empty gene id"]),
        ("corrupt gzip", "corrupt.tsv.gz", [], ["corrupt.tsv.gz"]),
        ("not text", "binary.tsv", [], ["binary.tsv"]),
        ("no edge", "header_only.tsv", [], ["header_only.tsv: no edge", "--allow-empty"]),
        ("name exists", "good.tsv", [], ["a graph named 'type A' exists", "overwrite"]),
        ("bad kind", "good.tsv", ["--kind", "coexpression"], ["kind must be one of"]),
    ]


@pytest.mark.parametrize("case", _store_add_cases(), ids=lambda c: c[0])
def test_store_add_refuses(files, capsys, case):
    _, network, more, says = case
    name = "type A" if case[0] == "name exists" else "new"
    argv = ["store", "add", files / "graphs.zarr", name, files / network, *more]
    refused(netinfer_cli.main, argv, capsys, watch=[files / "graphs.zarr"], says=says)


@pytest.mark.parametrize(
    "case",
    [
        ("store missing", "nope.zarr", "new", ["nope.zarr: no such graph store"]),
        ("store a file", "a_file.zarr", "new", ["a_file.zarr: is a file"]),
        ("store a cell store", "cells.zarr", "new", ["not a netinfer graph store"]),
        ("name with a slash", "graphs.zarr", "a/b", ["graph names must be non-empty without"]),
    ],
    ids=lambda c: c[0],
)
def test_store_add_refuses_stores_and_names(files, capsys, case):
    _, store, name, says = case
    argv = ["store", "add", files / store, name, files / "good.tsv"]
    refused(netinfer_cli.main, argv, capsys, watch=[files / store], says=says)


def test_store_add_duplicated_edge_leaves_the_vocabulary_alone(files, capsys):
    """The reported bug: ZZ1 is a new gene, and the vocabulary was rewritten before refusing."""
    with GraphStore.open(files / "graphs.zarr") as store:
        assert "ZZ1" not in set(store.genes)
    argv = ["store", "add", files / "graphs.zarr", "dup", files / "duplicated.tsv"]
    refused(netinfer_cli.main, argv, capsys, watch=[files / "graphs.zarr"], says=["duplicated"])
    with GraphStore.open(files / "graphs.zarr") as store:
        assert "ZZ1" not in set(store.genes) and "dup" not in store


# ------------------------------------------------------------------ ppi
def _ppi_cases():
    """(id, arguments after ``ppi``, what the message must say)."""
    hint = str(PPI / "HomoSapiens_binary_hq.txt")
    string = str(PPI / "9606.protein.links.v12.0.txt")
    info = ["--info", str(PPI / "9606.protein.info.v12.0.txt")]
    return [
        ("hint missing", ["hint", "nope.txt"], ["nope.txt: no such file"]),
        ("hint a directory", ["hint", "a_directory"], ["a_directory: is a directory"]),
        ("hint empty", ["hint", "empty.tsv"], ["empty.tsv"]),
        ("hint bad header", ["hint", "hint_bad_header.txt"], ["hint_bad_header.txt"]),
        ("hint short line", ["hint", "hint_short_line.txt"], ["line 4: expected"]),
        ("hint spaces", ["hint", "hint_spaces.txt"], ["hint_spaces.txt"]),
        ("hint not text", ["hint", "binary.tsv"], ["binary.tsv"]),
        ("string missing", ["string", "nope.txt", *info], ["nope.txt: no such file"]),
        ("string bad header", ["string", "string_bad_header.txt", *info], ["string_bad_header"]),
        ("string text score", ["string", "string_text_score.txt", *info], ["line 3"]),
        ("string info missing", ["string", string, "--info", "nope.txt"], ["nope.txt"]),
        ("genes missing", ["hint", hint, "--genes", "nope.txt"], ["nope.txt: no such file"]),
        ("genes a directory", ["hint", hint, "--genes", "a_directory"], ["is a directory"]),
        ("genes h5ad unreadable", ["hint", hint, "--genes", "not_anndata.h5ad"], ["--genes"]),
        ("name exists", ["hint", hint, "--name", "hint"], ["'hint' exists", "overwrite"]),
        (
            "genes leave no edge",
            ["hint", hint, "--genes", "tfs.txt"],
            ["HomoSapiens_binary_hq.txt: no edge to store", "--allow-empty"],
        ),
    ]


@pytest.mark.parametrize("case", _ppi_cases(), ids=lambda c: c[0])
def test_ppi_refuses(files, capsys, case):
    _, arguments, says = case
    # relative names are this module's files; the bundled PPI files are given whole
    argv = [
        "ppi",
        *(
            a if "/" in a or a.startswith("-") or a in ("hint", "string") else files / a
            for a in arguments
        ),
    ]
    argv += ["--store", files / "graphs.zarr"]
    refused(netinfer_cli.main, argv, capsys, watch=[files / "graphs.zarr"], says=says)


@pytest.mark.parametrize(
    "case",
    [
        ("store a file", "a_file.zarr", ["a_file.zarr: is a file"]),
        ("store foreign", "foreign", ["foreign: a directory that is not a graph store"]),
        ("store a cell store", "cells.zarr", ["not a netinfer graph store"]),
    ],
    ids=lambda c: c[0],
)
def test_ppi_refuses_stores(files, capsys, case):
    _, store, says = case
    argv = ["ppi", "hint", PPI / "HomoSapiens_binary_hq.txt", "--store", files / store]
    refused(netinfer_cli.main, argv, capsys, watch=[files / store], says=says)


# ------------------------------------------------------------------ gremln prepare
def _prepare_cases():
    """(id, counts file, more arguments, what the message must say)."""
    return [
        ("missing file", "nope.h5ad", [], ["nope.h5ad: no such file"]),
        ("directory", "a_directory", [], ["a_directory: is a directory"]),
        ("not anndata", "not_anndata.h5ad", [], ["not a readable .h5ad file"]),
        ("inf", "inf.h5ad", [], ["inf.h5ad: X holds 1 non-finite", "'cell59'", "'G07'"]),
        ("nan", "nan.h5ad", [], ["nan.h5ad: X holds 1 non-finite", "'cell41'"]),
        ("negative", "negative.h5ad", [], ["negative values", "'cell55'", "gremln prepare"]),
        ("log-normalized late cells", "lognorm_late.h5ad", [], ["non-integer", "'cell50'"]),
        ("no cells", "no_cells.h5ad", [], ["no_cells.h5ad: the X matrix is empty"]),
        ("no genes", "no_genes.h5ad", [], ["no_genes.h5ad: the X matrix is empty"]),
        ("duplicated genes", "dup_genes.h5ad", [], ["duplicated gene id", "'G00'"]),
        ("duplicated cells", "dup_cells.h5ad", [], ["duplicated cell id", "'cell0'"]),
        ("no labels", "no_labels.h5ad", [], ["no cell has a label in obs column 'cell_type'"]),
        (
            "label column missing",
            "counts.h5ad",
            ["--cell-type-key", "celltype"],
            ["counts.h5ad: no obs column 'celltype' (--cell-type-key)"],
        ),
        (
            "qc removes all",
            "fresh.h5ad",
            ["--min-counts", "1000000"],
            ["no cell left", "below_min_counts 60", "--allow-empty"],
        ),
        (
            "type without network, refusal asked for",
            "unknown_type.h5ad",
            ["--require-type-networks"],
            ["no consensus network", "type C"],
        ),
        ("ppi graph missing", "fresh.h5ad", ["--graph-mode", "ppi:nope"], ["no graph 'nope'"]),
    ]


@pytest.mark.parametrize("case", _prepare_cases(), ids=lambda c: c[0])
@pytest.mark.parametrize("target", ["new", "append"])
def test_prepare_refuses(files, capsys, case, target):
    _, counts, more, says = case
    cells = files / ("new_cells.zarr" if target == "new" else "cells.zarr")
    argv = ["prepare", files / counts, "--cells", cells, "--graphs", files / "graphs.zarr"]
    argv += ["--cell-type-key", "cell_type", *QC, *more, "--quiet"]
    if target == "append":
        argv.append("--append")
    refused(gremln_cli.main, argv, capsys, watch=[cells, files / "graphs.zarr"], says=says)


@pytest.mark.parametrize(
    "case",
    [
        ("cells a file", "a_file.zarr", [], ["a_file.zarr: exists and is not a cell store"]),
        ("cells foreign", "foreign", [], ["foreign: exists and is not a cell store"]),
        ("cells exist", "cells.zarr", [], ["cells.zarr: exists; pass append (--append)"]),
        ("append to nothing", "new_cells.zarr", ["--append"], ["no cell store to append to"]),
        ("data set there", "cells.zarr", ["--append"], ["already holds a data set named 'counts'"]),
        ("graphs missing", "new_cells.zarr", ["--graphs", "nope.zarr"], ["no such graph store"]),
    ],
    ids=lambda c: c[0],
)
def test_prepare_refuses_paths(files, capsys, case):
    _, cells, more, says = case
    more = [files / m if m.endswith(".zarr") else m for m in more]
    argv = ["prepare", files / "counts.h5ad", "--cells", files / cells]
    argv += ["--graphs", files / "graphs.zarr", "--cell-type-key", "cell_type", *QC, "--quiet"]
    argv += more
    refused(gremln_cli.main, argv, capsys, watch=[files / cells], says=says)


def test_prepare_refuses_data_outside_the_vocabulary(files, capsys):
    argv = ["prepare", files / "other_genes.h5ad", "--cells", files / "cells.zarr", "--append"]
    argv += ["--graphs", files / "graphs.zarr", "--cell-type-key", "cell_type", *QC, "--quiet"]
    says = ["other_genes.h5ad: none of its 30 genes (e.g. X00", "every cell would be empty"]
    refused(gremln_cli.main, argv, capsys, watch=[files / "cells.zarr"], says=says)


def test_prepare_empty_result_needs_allow_empty(files, capsys, tmp_path):
    argv = ["prepare", files / "counts.h5ad", "--cells", tmp_path / "cells.zarr"]
    argv += ["--graphs", files / "graphs.zarr", "--cell-type-key", "cell_type"]
    argv += ["--min-counts", "1000000", "--quiet"]
    refused(gremln_cli.main, argv, capsys, watch=[tmp_path / "cells.zarr"], says=["no cell"])
    assert gremln_cli.main([str(a) for a in [*argv, "--allow-empty"]]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["qc"]["kept"] == 0 and report["cells_in_store"] == 0


def test_prepare_leaves_out_unlabelled_cells(files, capsys, tmp_path):
    adata = _counts()
    labels = adata.obs["cell_type"].astype(object)
    labels.iloc[[0, 31, 32]] = ["", np.nan, None]
    adata.obs["cell_type"] = labels
    adata.write_h5ad(tmp_path / "partly.h5ad")
    argv = ["prepare", tmp_path / "partly.h5ad", "--cells", tmp_path / "cells.zarr"]
    argv += ["--graphs", files / "graphs.zarr", "--cell-type-key", "cell_type", *QC, "--quiet"]
    assert gremln_cli.main([str(a) for a in argv]) == 0
    captured = capsys.readouterr()
    err = " ".join(captured.err.split())
    assert "3 of 60 cells have no label" in err and "'cell0', 'cell31', 'cell32'" in err
    report = json.loads(captured.out)
    assert report["qc"]["without_label"] == 3 and report["cells_in_store"] == 57


# ------------------------------------------------------------------ the library's checks
def test_matrix_check_reads_every_block(tmp_path):
    """A backed file is streamed: a bad value in the last block (rows 48-59 with 16-row
    blocks) is found and named, not only problems in the first block."""
    adata = _with(_lognorm_late)
    adata.write_h5ad(tmp_path / "late.h5ad")
    backed = ad.read_h5ad(tmp_path / "late.h5ad", backed="r")
    check_matrix(backed.X[:48], "late.h5ad")  # finite: fine without counts_for
    with pytest.raises(InputError, match=r"non-integer values .* at cell 'cell50' \(row 50\)"):
        check_matrix(
            backed.X,
            "late.h5ad",
            cells=backed.obs_names,
            genes=backed.var_names,
            counts_for="test",
            chunk=16,
        )
    dense = np.zeros((40, 3))
    dense[37, 2] = np.inf
    with pytest.raises(
        InputError,
        match=r"1 non-finite value\(s\) in rows 32-39, e.g. inf at row"
        r" 37, column 2",
    ):
        check_matrix(dense, "<array>", chunk=8)
    for matrix in (dense[:30], sp.csr_matrix(dense[:30] + 1)):
        check_matrix(matrix, "<array>", counts_for="test", chunk=8)  # counts: accepted


def test_unlabelled_cells_rule():
    adata = _counts(n_cells=8)
    labels = ["a", np.nan, "", " ", "b", None, "nan", " N/A"]
    adata.obs["cell_type"] = pd.Series(labels, dtype=object).values
    with pytest.warns(
        UserWarning,
        match=r"6 of 8 cells have no label .*'cell1', 'cell2', 'cell3' and 3 more; they are left",
    ):
        labelled = labelled_cells(adata, "cell_type", "<x>")
    assert labelled.tolist() == [True, False, False, False, True, False, False, False]
    adata.obs["cell_type"] = pd.Categorical(["a"] * 8)
    assert labelled_cells(adata, "cell_type", "<x>").all()


def test_library_functions_check_as_the_commands_do(files):
    from netinfer.integrate import integrate
    from netinfer.pipeline import celltype_networks

    with pytest.raises(InputError, match=r"<AnnData>: X holds 1 non-finite .*'cell59'"):
        celltype_networks(ad.read_h5ad(files / "inf.h5ad"), ["G00"])
    query = ad.read_h5ad(files / "negative.h5ad")
    reference = ad.read_h5ad(files / "counts.h5ad")
    with GraphStore.open(files / "graphs.zarr", mode="a") as store:
        with pytest.raises(InputError, match="<query>: X holds negative values"):
            integrate(query, reference, store, cell_type_key="cell_type", name="lib")
        query.obs["cell_type"] = np.nan  # the query's labels are never read
        with pytest.raises(InputError, match="<reference>: no cell has a label"):
            integrate(
                reference,
                ad.read_h5ad(files / "no_labels.h5ad"),
                store,
                cell_type_key="cell_type",
                name="lib",
            )
    with GraphStore.open(files / "graphs.zarr", mode="a") as store:
        edges = pd.DataFrame({"regulator": ["G00", "G05"], "target": ["G05", "G00"], "score": 1.0})
        with pytest.raises(InputError, match="undirected: either order"):
            store.add_graph("undirected", edges, kind="ppi", directed=False)
        edges["score"] = [1.0, -np.inf]
        with pytest.raises(InputError, match=r"row 1: score is -inf"):
            store.add_graph("directed", edges, kind="ppi")


# ------------------------------------------------------------------ a few through a real process
@pytest.mark.parametrize(
    "argv, says",
    [
        (["netinfer", "store", "add", "{d}/graphs.zarr", "x", "{d}/inf_mi.tsv"], "mi is inf"),
        (
            [
                "gremln",
                "prepare",
                "{d}/nan.h5ad",
                "--cells",
                "{d}/new.zarr",
                "--graphs",
                "{d}/graphs.zarr",
                "--cell-type-key",
                "cell_type",
            ],
            "non-finite",
        ),
    ],
)
def test_through_a_process(files, argv, says):
    command = "from cli.{0} import main; import sys; sys.exit(main(sys.argv[1:]))"
    argv = [a.format(d=files) for a in argv]
    done = subprocess.run(
        [sys.executable, "-c", command.format(argv[0]), *argv[1:]],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and says in done.stderr and "Traceback" not in done.stderr


def test_empty_networks_are_stored_only_when_asked(files, tmp_path):
    store = tmp_path / "graphs.zarr"
    GraphStore.create(store).close()
    add = ["store", "add", store, "empty", files / "header_only.tsv", "--allow-empty"]
    assert netinfer_cli.main([str(a) for a in add]) == 0
    hint = ["ppi", "hint", PPI / "HomoSapiens_binary_hq.txt", "--genes", files / "tfs.txt"]
    hint += ["--store", store, "--allow-empty"]
    assert netinfer_cli.main([str(a) for a in hint]) == 0
    with GraphStore.open(store) as reader:
        listing = reader.list().set_index("name")
    assert listing.loc["empty", "edges"] == 0 and listing.loc["HomoSapiens_binary_hq", "edges"] == 0


DASK_INPUT_ERROR = """
from netinfer import distributed
from netinfer.io import InputError

def refuse(x):
    raise InputError(f"<cluster {x}>: not enough cells")

def fail(x):
    raise RuntimeError("a bug, not an input error")

if __name__ == "__main__":
    client, close = distributed.prepare_client(workers=1)
    try:
        for function in (refuse, fail):
            try:
                client.submit(function, 1).result()
            except Exception as error:
                print("caught:", type(error).__name__, error)
    finally:
        close()
"""


def test_input_errors_inside_dask_workers_print_no_traceback(tmp_path):
    """A task's InputError reaches the command, which prints its message; the worker's own
    "Compute Failed" log, with a traceback, is left out for input errors only."""
    (tmp_path / "job.py").write_text(DASK_INPUT_ERROR)
    done = subprocess.run(
        [sys.executable, str(tmp_path / "job.py")], capture_output=True, text=True, timeout=120
    )
    assert "caught: InputError <cluster 1>: not enough cells" in done.stdout
    assert "caught: RuntimeError a bug" in done.stdout
    assert "InputError(" not in done.stderr  # no worker log of the input error
    assert "RuntimeError(" in done.stderr and "Traceback" in done.stderr  # bugs are still logged
