"""The errors a new user meets: wrong paths, missing columns, normalized data, stores that are not
stores. Each must exit with code 2 and one short message (no traceback) that names the file,
column or gene and says what to do. docs/troubleshooting.md shows these messages."""

from __future__ import annotations

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
from netinfer.store import GraphStore

ROOT = Path(__file__).resolve().parent.parent
TYPES = ("type A", "type B")
QC = ["--min-counts", "10", "--min-genes", "5", "--trim", "1"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Small inputs, good and bad, shared by every case (nothing here runs a model)."""
    tmp = tmp_path_factory.mktemp("new_user")
    rng = np.random.default_rng(0)
    genes = [f"G{i:02d}" for i in range(30)]
    counts = rng.poisson(3.0, size=(60, 30)).astype(np.float32)
    obs = pd.DataFrame({"cell_type": np.repeat(TYPES, 30)}, index=[f"cell{i}" for i in range(60)])
    good = ad.AnnData(sp.csr_matrix(counts), obs=obs, var=pd.DataFrame(index=genes))
    good.write_h5ad(tmp / "counts.h5ad")
    logged = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)
    lognorm = ad.AnnData(sp.csr_matrix(logged), obs=obs, var=pd.DataFrame(index=genes))
    lognorm.write_h5ad(tmp / "lognorm.h5ad")
    lognorm.layers["counts"] = sp.csr_matrix(counts)
    lognorm.write_h5ad(tmp / "lognorm_with_counts_layer.h5ad")
    (tmp / "not_anndata.h5ad").write_text("gene,cell1\nG00,1\n")
    (tmp / "tfs.txt").write_text("G00\nG01\nG02\n")
    (tmp / "mouse_tfs.txt").write_text("Sox2\nPou5f1\n")
    (tmp / "a_directory").mkdir()
    (tmp / "run").mkdir()  # a model directory for the checks that come before loading it
    with GraphStore.create(tmp / "graphs.zarr") as store:
        for cell_type in TYPES:
            edges = pd.DataFrame({"regulator": ["G00"], "target": ["G05"], "mi": [0.5]})
            store.add_graph(cell_type, edges, kind="consensus", cell_type=cell_type)
    from gremln.cellstore import prepare

    prepare(
        tmp / "counts.h5ad",
        tmp / "cells.zarr",
        graphs_path=tmp / "graphs.zarr",
        cell_type_key="cell_type",
        min_counts=10,
        min_genes=5,
        trim=None,
        n_bins=5,
    )
    return tmp


def _run(main, argv, capsys) -> str:
    """Run a CLI's main; assert exit code 2 and no traceback; return stderr on one line."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert err.startswith("error:") or "\nerror:" in err
    return " ".join(err.split())


def netinfer(argv, capsys) -> str:
    return _run(netinfer_cli.main, argv, capsys)


def gremln(argv, capsys) -> str:
    return _run(gremln_cli.main, argv, capsys)


# ------------------------------------------------------------------ netinfer


def test_aracne_input_paths(files, capsys):
    tfs = files / "tfs.txt"
    out = files / "network.tsv"
    err = netinfer(["aracne", files / "nope.h5ad", "--regulators", tfs, "--output", out], capsys)
    assert "nope.h5ad: no such file" in err
    err = netinfer(["aracne", files / "a_directory", "--regulators", tfs, "--output", out], capsys)
    assert "a_directory: is a directory, not a file" in err
    err = netinfer(
        ["aracne", files / "not_anndata.h5ad", "--regulators", tfs, "--output", out], capsys
    )
    assert "not_anndata.h5ad: not a readable .h5ad file" in err and "write_h5ad" in err
    args = ["aracne", files / "counts.h5ad", "--regulators", files / "a_directory"]
    err = netinfer([*args, "--output", out], capsys)
    assert "a_directory: is a directory, not a file" in err
    args = ["aracne", files / "counts.h5ad", "--regulators", tfs, "--output", files / "a_directory"]
    err = netinfer(args, capsys)  # refused before the work, not after it
    assert "a_directory: is a directory" in err and "--output takes the network file" in err
    assert not out.exists()


def test_regulators_not_in_the_data(files, capsys):
    args = ["aracne", files / "counts.h5ad", "--regulators", files / "mouse_tfs.txt"]
    err = netinfer([*args, "--output", files / "network.tsv"], capsys)
    assert "mouse_tfs.txt: none of the 2 regulators is in the expression matrix" in err
    assert "Sox2" in err and "G00" in err and "same kind of gene id" in err


def test_celltype_networks_inputs(files, capsys):
    common = ["--regulators", files / "tfs.txt", "--store", files / "new.zarr", "--quiet"]
    err = netinfer(["celltype-networks", files / "nope.h5ad", *common], capsys)
    assert "nope.h5ad: no such file" in err
    err = netinfer(["celltype-networks", files / "a_directory", *common], capsys)
    assert "a_directory: is a directory, not an .h5ad file" in err
    err = netinfer(["celltype-networks", files / "not_anndata.h5ad", *common], capsys)
    assert "not a readable .h5ad file" in err
    args = ["celltype-networks", files / "counts.h5ad", "--cell-type-key", "celltype", *common]
    err = netinfer(args, capsys)
    assert "counts.h5ad: no obs column 'celltype'" in err
    assert "cell_type" in err and "--cell-type-key" in err
    assert not (files / "new.zarr").exists()


def test_celltype_networks_needs_counts(files, capsys):
    common = ["--regulators", files / "tfs.txt", "--store", files / "new.zarr", "--quiet"]
    err = netinfer(["celltype-networks", files / "lognorm.h5ad", *common], capsys)
    assert "lognorm.h5ad: X holds non-integer values" in err and "log-normalized" in err
    assert "needs raw UMI counts" in err and "no layers and no adata.raw" in err
    err = netinfer(["celltype-networks", files / "lognorm_with_counts_layer.h5ad", *common], capsys)
    assert "non-integer values" in err and "--layer (layers here: counts)" in err


def test_a_directory_that_is_not_a_store_is_left_alone(files, capsys):
    folder = files / "my_results"
    folder.mkdir()
    (folder / "keep.txt").write_text("important")
    err = netinfer(["store", "create", folder], capsys)
    assert "my_results: a directory that is not a graph store" in err and "keep.txt" in err
    args = ["celltype-networks", files / "counts.h5ad", "--regulators", files / "tfs.txt"]
    err = netinfer([*args, "--store", folder, "--quiet"], capsys)
    assert "a directory that is not a graph store" in err
    err = netinfer(["store", "create", files / "cells.zarr", "--overwrite"], capsys)
    assert "cells.zarr: a Zarr group that is not a graph store" in err
    assert (folder / "keep.txt").read_text() == "important"
    assert (files / "cells.zarr" / "zarr.json").exists()


def test_store_paths(files, capsys):
    err = netinfer(["store", "ls", files / "nope.zarr"], capsys)
    assert "nope.zarr: no such graph store" in err and "netinfer store create" in err
    err = netinfer(["store", "ls", files / "tfs.txt"], capsys)
    assert "tfs.txt: is a file, not a graph store" in err
    err = netinfer(["store", "ls", files / "cells.zarr"], capsys)
    assert "cells.zarr: a Zarr group, but not a netinfer graph store" in err
    args = ["store", "export", files / "graphs.zarr", "type A", files / "a_directory"]
    err = netinfer(args, capsys)
    assert "a_directory: is a directory; give the path of a file" in err


def test_integrate_and_cellspecific_columns(files, capsys):
    counts, store = files / "counts.h5ad", files / "graphs.zarr"
    args = ["integrate", counts, "--reference", counts, "--cell-type-key", "celltype"]
    err = netinfer([*args, "--store", store], capsys)
    assert "counts.h5ad: no obs column 'celltype' (--cell-type-key)" in err
    args = ["cellspecific", counts, "--cell-type-key", "celltype", "--store", store]
    err = netinfer(args, capsys)
    assert "counts.h5ad: no obs column 'celltype'" in err and "<adata>" not in err


# ------------------------------------------------------------------ gremln


def _prepare(files, counts, cells="new_cells.zarr", graphs="graphs.zarr", key="cell_type"):
    return [
        "prepare",
        counts,
        "--cells",
        files / cells,
        "--graphs",
        files / graphs,
        "--cell-type-key",
        key,
        *QC,
        "--quiet",
    ]


def test_prepare_inputs(files, capsys):
    err = gremln(_prepare(files, files / "nope.h5ad"), capsys)
    assert "nope.h5ad: no such file" in err
    err = gremln(_prepare(files, files / "a_directory"), capsys)
    assert "a_directory: is a directory, not an .h5ad file" in err
    err = gremln(_prepare(files, files / "not_anndata.h5ad"), capsys)
    assert "not_anndata.h5ad: not a readable .h5ad file" in err
    err = gremln(_prepare(files, files / "counts.h5ad", key="celltype"), capsys)
    assert "counts.h5ad: no obs column 'celltype'" in err and "cell_type" in err
    err = gremln(_prepare(files, files / "counts.h5ad", graphs="nope.zarr"), capsys)
    assert "nope.zarr: no such graph store" in err
    err = gremln(_prepare(files, files / "counts.h5ad", cells="tfs.txt"), capsys)
    assert "tfs.txt: exists and is not a cell store" in err
    assert not (files / "new_cells.zarr").exists()


def test_prepare_needs_counts(files, capsys):
    err = gremln(_prepare(files, files / "lognorm.h5ad"), capsys)
    assert "lognorm.h5ad: X holds non-integer values" in err and "gremln prepare" in err
    err = gremln(_prepare(files, files / "lognorm_with_counts_layer.h5ad"), capsys)
    assert "adata.X = adata.layers['counts']" in err
    assert not (files / "new_cells.zarr").exists()


def test_train_store_paths(files, capsys):
    run = files / "new_run"
    args = ["train", "--out", run, "--max-steps", "1", "--workers", "0", "--device", "cpu"]
    err = gremln([*args, "--cells", files / "nope.zarr", "--graphs", files / "graphs.zarr"], capsys)
    assert "nope.zarr: no such cell store" in err and "gremln prepare" in err
    err = gremln(
        [*args, "--cells", files / "graphs.zarr", "--graphs", files / "graphs.zarr"], capsys
    )
    assert "graphs.zarr: a Zarr group, but not a gremln cell store" in err
    err = gremln([*args, "--cells", files / "cells.zarr", "--graphs", files / "cells.zarr"], capsys)
    assert "cells.zarr: a Zarr group, but not a netinfer graph store" in err
    assert not run.exists()
    err = gremln(
        ["train", "--cells", files / "cells.zarr", "--graphs", files / "graphs.zarr"], capsys
    )
    assert "missing settings: out" in err and "--out RUN_DIR" in err
    err = gremln(["train", "--config", files / "nope.toml"], capsys)
    assert "nope.toml: no such file (--config)" in err


def test_embed_inputs(files, capsys):
    counts = files / "counts.h5ad"
    common = ["--model", files / "run", "--store", files / "graphs.zarr", "--device", "cpu"]
    out = ["--out", files / "embeddings.h5ad"]
    err = gremln(["embed", files / "nope.h5ad", *common, *out], capsys)
    assert "nope.h5ad: no such file (DATA)" in err
    err = gremln(["embed", files / "a_directory", *common, *out], capsys)
    assert "a_directory: is a directory, not an .h5ad file" in err
    err = gremln(["embed", counts, *common, "--out", files / "a_directory"], capsys)
    assert "a_directory: is a directory; --out takes the .h5ad file" in err
    args = ["embed", counts, "--model", files / "nope", "--store", files / "graphs.zarr", *out]
    err = gremln(args, capsys)
    assert "nope: no such directory (--model)" in err and "gremln train" in err
    args = ["--reference", counts, "--cell-type-key", "celltype"]
    err = gremln(["embed", counts, *common, *out, *args], capsys)
    assert "counts.h5ad: no obs column 'celltype' (--cell-type-key)" in err
    err = gremln(["embed", counts, *common, *out, "--layer", "raw"], capsys)
    assert "counts.h5ad: no layer 'raw' (--layer)" in err
    assert not (files / "embeddings.h5ad").exists()


def test_evaluate_inputs(files, capsys):
    counts = files / "counts.h5ad"
    common = ["--model", files / "run", "--store", files / "graphs.zarr", "--device", "cpu"]
    out = ["--out", files / "evaluation"]
    args = ["evaluate", "celltype", files / "nope.h5ad", *common, "--cell-type-key", "cell_type"]
    err = gremln([*args, *out], capsys)
    assert "nope.h5ad: no such file (DATA)" in err
    args = ["evaluate", "all", counts, *common, "--cell-type-key", "celltype", *out]
    err = gremln(args, capsys)
    assert "counts.h5ad: no obs column 'celltype' (--cell-type-key)" in err
    args = ["evaluate", "edges", counts, *common, "--cell-type-key", "cell_type"]
    args += ["--held-out", files / "held_out.tsv"]
    err = gremln([*args, "--out", files / "tfs.txt"], capsys)
    assert "tfs.txt: is a file; --out takes the directory" in err
    args = ["evaluate", "expression", counts, *common, *out, "--vanilla", files / "nope"]
    err = gremln(args, capsys)
    assert "nope: no such directory (--vanilla)" in err
    args = ["finetune", "perturbation", counts, *common, *out, "--perturbation-key", "guide"]
    err = gremln(args, capsys)
    assert "counts.h5ad: no obs column 'guide' (--perturbation-key)" in err
    assert not (files / "evaluation").exists()


@pytest.mark.parametrize("command", ["netinfer", "gremln"])
def test_the_installed_commands_exit_2_without_traceback(files, command):
    """The same through a real process, as a user's shell sees it."""
    argv = {
        "netinfer": ["aracne", files / "nope.h5ad", "--regulators", files / "tfs.txt"],
        "gremln": _prepare(files, files / "nope.h5ad"),
    }[command]
    done = subprocess.run(
        [sys.executable, "-m", f"cli.{command}", *map(str, argv), "--output", "x"]
        if command == "netinfer"
        else [sys.executable, "-m", f"cli.{command}", *map(str, argv)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "nope.h5ad: no such file" in done.stderr
