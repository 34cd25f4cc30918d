"""The ``netinfer`` command as a user runs it: real files in, network files out."""

from __future__ import annotations

import io
import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import planted_network

from cli import gremln as gremln_cli
from cli import netinfer as cli
from netinfer.store import GraphStore

FAST = ["--resamples", "6", "--seed", "1", "--quiet"]
# celltype-networks options for the small simulated types of test_pipeline
PIPELINE_OPTIONS = [
    "--min-counts",
    "500",
    "--min-genes",
    "10",
    "--trim",
    "1",
    "--min-cells",
    "50",
    "--resolution",
    "0.5",
    "--resamples",
    "10",
    "--workers",
    "1",
    "--seed",
    "1",
]


@pytest.fixture
def files(tmp_path):
    X, genes, regulators, truth = planted_network()
    table = pd.DataFrame(X.T, index=pd.Index(genes, name="gene"))
    table.columns = [f"S{i:04d}" for i in range(X.shape[0])]
    tsv = tmp_path / "expr.tsv.gz"
    table.to_csv(tsv, sep="\t")
    regs = tmp_path / "tfs.txt"
    regs.write_text("# regulators\n" + "\n".join(regulators) + "\n")
    return tmp_path, tsv, regs, truth


def test_aracne_tsv_to_both_formats(files):
    tmp, tsv, regs, truth = files
    ap = tmp / "out" / "network.txt"
    assert (
        cli.main(["aracne", str(tsv), "--regulators", str(regs), "--output", str(ap), *FAST]) == 0
    )
    network = pd.read_csv(ap, sep="\t")
    assert list(network.columns) == ["Regulator", "Target", "MI", "pvalue"]
    found = set(zip(network["Regulator"], network["Target"]))
    assert len({e for e in found if e in truth or e[::-1] in truth}) >= 0.95 * len(found)

    a3 = tmp / "network3.tsv"
    args = [
        "aracne",
        str(tsv),
        "--regulators",
        str(regs),
        "--output",
        str(a3),
        "--format",
        "aracne3",
        "--fdr",
        "0.05",
        "--pruning",
        "maxent",
        "--consolidation",
        "binomial",
        "--subsample",
        "0.5",
        *FAST,
    ]
    assert cli.main(args) == 0
    header = a3.read_text().splitlines()[0].split("\t")
    assert header == [
        "regulator.values",
        "target.values",
        "mi.values",
        "scc.values",
        "count.values",
        "log.p.values",
    ]


def test_aracne_h5ad_layer_full_output_and_summary(files, capsys):
    tmp, _, regs, _ = files
    X, genes, _, _ = planted_network()
    adata = ad.AnnData(np.zeros_like(X), var=pd.DataFrame(index=genes))
    adata.layers["expr"] = X
    h5ad = tmp / "cells.h5ad"
    adata.write_h5ad(h5ad)
    out = tmp / "full.tsv"
    args = [
        "aracne",
        str(h5ad),
        "--layer",
        "expr",
        "--regulators",
        str(regs),
        "--output",
        str(out),
        "--full-output",
        "--resamples",
        "4",
        "--threads",
        "1",
    ]
    assert cli.main(args) == 0
    assert len(pd.read_csv(out, sep="\t")) == 8 * 59
    err = capsys.readouterr().err
    for text in (
        "cells x genes",
        "genes",
        "regulators",
        "threshold",
        "edges per resample",
        "final edges",
        "time",
    ):
        assert text in err


def test_aracne_with_the_gcmi_estimator(files, capsys):
    tmp, tsv, regs, truth = files
    out = tmp / "gcmi.txt"
    common = ["aracne", str(tsv), "--regulators", str(regs), "--output", str(out)]
    assert cli.main([*common, "--estimator", "gcmi", "--bias-correction", "--resamples", "6"]) == 0
    network = pd.read_csv(out, sep="\t")
    found = set(zip(network["Regulator"], network["Target"]))
    assert len(found) >= 20
    assert len({e for e in found if e in truth or e[::-1] in truth}) >= 0.95 * len(found)
    assert "Gaussian copula" in capsys.readouterr().err
    assert cli.main([*common, "--bias-correction", *FAST]) == 2  # apmi has no bias correction
    assert "bias_correction applies to estimator='gcmi'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main([*common, "--estimator", "pearson"])
    assert "invalid choice: 'pearson'" in capsys.readouterr().err
    celltype = cli._parser().parse_args(
        ["celltype-networks", "c.h5ad", "--regulators", "r", "--store", "s", "--estimator", "gcmi"]
    )
    assert celltype.estimator == "gcmi"


def test_aracne_on_dask_workers_and_scheduler_address(files):
    from distributed import LocalCluster

    tmp, tsv, regs, _ = files
    local, workers, remote = tmp / "local.txt", tmp / "workers.txt", tmp / "remote.txt"
    common = ["aracne", str(tsv), "--regulators", str(regs), *FAST]
    assert cli.main([*common, "--output", str(local)]) == 0
    assert cli.main([*common, "--output", str(workers), "--workers", "2"]) == 0
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        assert cli.main([*common, "--output", str(remote), "--scheduler", address]) == 0
        assert len(cluster.workers) == 2  # the command left the cluster it was given running
    assert local.read_text() == workers.read_text() == remote.read_text()


def test_bad_input_exits_2_and_names_the_problem(files, capsys):
    tmp, tsv, regs, _ = files
    bad = tmp / "bad.tsv"
    bad.write_text("gene\tS1\tS2\tS3\nA\t1\t2\t3\nB\t1\tx\t3\n")
    out = tmp / "never.txt"
    assert cli.main(["aracne", str(bad), "--regulators", str(regs), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "bad.tsv" in err and "line 3" in err and "'x'" in err
    assert not out.exists()
    none = tmp / "none.txt"
    none.write_text("NOT_A_GENE\n")
    assert cli.main(["aracne", str(tsv), "--regulators", str(none), "--output", str(out)]) == 2
    assert "none.txt" in capsys.readouterr().err


def test_help_explains_defaults(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["aracne", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for default in (
        "default: 100",
        "default: 0.05",
        "default: 0.632",
        "default: dpi",
        "default: poisson",
        "default: 0",
    ):
        assert default in text


def test_example_data_is_real_pbmc_counts(tmp_path):
    assert cli.main(["example-data", str(tmp_path)]) == 0
    adata = ad.read_h5ad(tmp_path / "pbmc68k_counts.h5ad")
    assert adata.shape == (700, 765)
    counts = adata.X.toarray()
    assert np.array_equal(counts, np.rint(counts)) and counts.max() > 50
    assert adata.obs["bulk_labels"].nunique() == 10
    tfs = (tmp_path / "human_tfs.txt").read_text().split()
    assert len(tfs) == 1639 and "SPI1" in tfs


def test_gremln_prepare_command(tmp_path, capsys):
    from test_cellstore import QC, _graph_store

    from gremln.cellstore import CellStore
    from netinfer.datasets import pbmc68k_counts

    adata = pbmc68k_counts()
    adata.write_h5ad(tmp_path / "pbmc.h5ad")
    graphs = _graph_store(tmp_path / "graphs.zarr", set(adata.obs["bulk_labels"]))
    args = [
        "prepare",
        str(tmp_path / "pbmc.h5ad"),
        "--cells",
        str(tmp_path / "cells.zarr"),
        "--graphs",
        str(graphs),
        "--cell-type-key",
        "bulk_labels",
        "--bins",
        "21",
        "--min-counts",
        str(QC["min_counts"]),
        "--min-genes",
        str(QC["min_genes"]),
        "--trim",
        "1",
    ]
    assert gremln_cli.main(args) == 0
    report = json.loads(capsys.readouterr().out)  # the report on stdout, progress on stderr
    assert report["cells_in_store"] == 700 and report["qc"]["kept"] == 700
    store = CellStore.open(tmp_path / "cells.zarr")
    assert len(store) == 700 and store.vocabulary.n_bins == 21
    assert gremln_cli.main(args) == 2  # exists, no --append
    assert "pass append" in capsys.readouterr().err


PPI = Path(__file__).parent / "data" / "ppi"


def test_store_and_ppi_commands(files, capsys):
    tmp, tsv, regs, _ = files
    store = str(tmp / "graphs.zarr")
    assert cli.main(["store", "create", store]) == 0
    assert cli.main(["ppi", "hint", str(PPI / "HomoSapiens_binary_hq.txt"), "--store", store]) == 0
    string = [
        "ppi",
        "string",
        str(PPI / "9606.protein.links.v12.0.txt"),
        "--info",
        str(PPI / "9606.protein.info.v12.0.txt"),
        "--store",
        store,
        "--name",
        "string",
    ]
    assert cli.main(string) == 0
    assert cli.main(string) == 2  # exists: needs --overwrite
    assert "overwrite" in capsys.readouterr().err
    assert cli.main([*string, "--overwrite"]) == 0
    run = [
        "aracne",
        str(tsv),
        "--regulators",
        str(regs),
        "--store",
        store,
        "--name",
        "net",
        "--cell-type",
        "planted",
        *FAST,
    ]
    assert cli.main(run) == 0
    capsys.readouterr()
    assert cli.main(["store", "ls", store]) == 0
    listing = pd.read_csv(io.StringIO(capsys.readouterr().out), sep="\t")  # piped: TSV
    assert set(listing["name"]) == {"HomoSapiens_binary_hq", "string", "net"}
    assert listing.set_index("name").loc["string", "kind"] == "ppi"
    assert cli.main(["store", "show", store, "net"]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["kind"] == "grn" and meta["cell_type"] == "planted"
    assert [s["path"] for s in meta["sources"]] == [str(tsv), str(regs)]
    assert cli.main(["store", "validate", store]) == 0
    out = tmp / "exported.tsv"
    assert cli.main(["store", "export", store, "net", str(out), "--format", "aracne3"]) == 0
    assert len(pd.read_csv(out, sep="\t")) == meta["n_edges"]
    assert cli.main(["store", "rm", store, "string"]) == 0
    assert cli.main(["store", "add", store, "again", str(out)]) == 0
    assert cli.main(["store", "show", store, "string"]) == 2
    assert "no graph named 'string'" in capsys.readouterr().err


def test_store_validate_reports_corruption_with_exit_1(files, capsys):
    tmp, tsv, regs, _ = files
    store = tmp / "graphs.zarr"
    assert (
        cli.main(
            [
                "aracne",
                str(tsv),
                "--regulators",
                str(regs),
                "--store",
                str(store),
                "--name",
                "net",
                *FAST,
            ]
        )
        == 0
    )
    chunk = next(p for p in store.rglob("*") if p.parent.name == "c" and "data" in p.parts)
    chunk.write_bytes(b"garbage")
    assert cli.main(["store", "validate", str(store)]) == 1
    assert "adjacency/data" in capsys.readouterr().err


def test_aracne_needs_an_output(files, capsys):
    _, tsv, regs, _ = files
    assert cli.main(["aracne", str(tsv), "--regulators", str(regs)]) == 2
    assert "--output" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:skipped .* min_cells:UserWarning")
def test_celltype_networks_command(tmp_path, capsys):
    from test_pipeline import _typed_counts

    adata, regulators, _ = _typed_counts()
    counts = tmp_path / "counts.h5ad"
    adata.write_h5ad(counts)
    regs = tmp_path / "tfs.txt"
    regs.write_text("\n".join(regulators) + "\n")
    store = tmp_path / "graphs.zarr"
    args = [
        "celltype-networks",
        str(counts),
        "--cell-type-key",
        "cell_type",
        "--regulators",
        str(regs),
        "--store",
        str(store),
        *PIPELINE_OPTIONS,
        "--null-pairs",
        "1000000",
    ]
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*args[:-1], "0"])
    assert exit_info.value.code == 2
    assert "--null-pairs: must be a positive integer, not '0'" in capsys.readouterr().err
    assert cli.main(args) == 0
    err = capsys.readouterr().err
    assert "QC: 480 cells -> 480 kept" in err and "consensus" in err
    report = json.loads((tmp_path / "graphs.zarr.report.json").read_text())
    assert set(report["cell_types"]) == {"type A", "type B"}
    finished = list((tmp_path / "graphs.zarr.work").glob("*[0-9a-f].tsv.gz"))
    assert len(finished) == 2  # the finished cluster networks: one per type of 240 cells
    with GraphStore.open(store) as reader:
        listing = reader.list().set_index("name")
    assert set(listing.index) == {"type A", "type B"} and (listing["edges"] > 0).all()
    with GraphStore.open(store) as reader:
        assert reader.info("type A")["params"]["aracne_options"] == {"null_pairs": 1_000_000}
    missing = [*args[:3], "celltype", *args[4:]]
    assert cli.main(missing) == 2
    assert "no obs column 'celltype'" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:skipped .* min_cells:UserWarning")
def test_integrate_command(tmp_path, capsys):
    from test_pipeline import _typed_counts

    adata, regulators, _ = _typed_counts(shift=6.0)
    is_query = np.random.default_rng(0).random(adata.n_obs) < 0.25
    adata[~is_query].copy().write_h5ad(tmp_path / "train.h5ad")
    query = adata[is_query].copy()
    del query.obs["cell_type"]
    query.write_h5ad(tmp_path / "query.h5ad")
    (tmp_path / "tfs.txt").write_text("\n".join(regulators) + "\n")
    store = str(tmp_path / "graphs.zarr")
    build = [
        "celltype-networks",
        str(tmp_path / "train.h5ad"),
        "--cell-type-key",
        "cell_type",
        "--regulators",
        str(tmp_path / "tfs.txt"),
        "--store",
        store,
        *PIPELINE_OPTIONS,
        "--quiet",
    ]
    assert cli.main(build) == 0
    run = [
        "integrate",
        str(tmp_path / "query.h5ad"),
        "--reference",
        str(tmp_path / "train.h5ad"),
        "--cell-type-key",
        "cell_type",
        "--store",
        store,
    ]
    assert cli.main(run) == 0
    err = " ".join(capsys.readouterr().err.split())
    for text in ("kNN accuracy", "distinct graphs", "mean edges per cell"):
        assert text in err
    with GraphStore.open(store) as reader:
        assignment = reader.get_assignment("integrated")
        assert len(assignment.cells) == is_query.sum()
        assert assignment.n_graphs >= 1 and assignment.graph_index.max() < assignment.n_graphs
    assert cli.main([*run, "--alpha", "1.5"]) == 2
    assert "alpha must be in (0, 1)" in capsys.readouterr().err
