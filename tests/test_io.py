from __future__ import annotations

import gzip
import os
import re
import stat

import anndata
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from netinfer.io import (
    Expression,
    InputError,
    atomic_write,
    read_expression,
    read_regulators,
    validate_expression,
    write_aracne3,
    write_aracne_ap,
)

GENES = ["TP53", "MYC", "GATA1"]
SAMPLES = ["S1", "S2", "S3", "S4"]
# genes x samples, as in the file
VALUES = np.array(
    [
        [1.5, 2.25, -3.0, 4e-3],
        [0.0, 10.0, 7.125, 1e6],
        [2.0, 1.0, 0.5, 0.25],
    ]
)


def matrix_text(sep="\t", genes=GENES, samples=SAMPLES, values=VALUES, corner="gene"):
    lines = [sep.join([corner, *samples] if corner is not None else samples)]
    for g, row in zip(genes, values, strict=True):
        lines.append(sep.join([g, *(repr(float(v)) for v in row)]))
    return "\n".join(lines) + "\n"


def write(tmp_path, name, text):
    path = tmp_path / name
    if name.lower().endswith(".gz"):
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def write_lines(tmp_path, lines, name="expr.tsv"):
    return write(tmp_path, name, "\n".join(lines) + "\n")


def good_rows(n_genes=3, n_samples=4):
    rng = np.random.default_rng(0)
    header = "\t".join(["gene", *(f"S{j}" for j in range(n_samples))])
    rows = [
        "\t".join([f"G{i}", *(f"{v:.3f}" for v in rng.random(n_samples))]) for i in range(n_genes)
    ]
    return [header, *rows]


def write_h5ad(tmp_path, X, *, layers=None, genes=GENES, cells=None, name="cells.h5ad"):
    cells = cells if cells is not None else [f"c{i}" for i in range(X.shape[0])]
    adata = anndata.AnnData(
        X=X,
        obs=pd.DataFrame(index=pd.Index(cells, dtype=str)),
        var=pd.DataFrame(index=pd.Index(genes, dtype=str)),
        layers=layers,
    )
    path = tmp_path / name
    adata.write_h5ad(path)
    return path


# --- text expression files -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "sep"),
    [
        ("expr.tsv", "\t"),
        ("expr.txt", "\t"),
        ("expr.csv", ","),
        ("expr.tsv.gz", "\t"),
        ("expr.csv.gz", ","),
        ("EXPR.TSV", "\t"),
        ("EXPR.TSV.GZ", "\t"),
    ],
)
def test_read_text_roundtrip(tmp_path, name, sep):
    path = write(tmp_path, name, matrix_text(sep))
    expr = read_expression(path)
    assert isinstance(expr, Expression)
    np.testing.assert_array_equal(expr.X, VALUES.T)
    assert expr.X.dtype == np.float64
    assert expr.X.flags.c_contiguous
    assert expr.genes.dtype == object and list(expr.genes) == GENES
    assert expr.samples.dtype == object and list(expr.samples) == SAMPLES
    assert expr.source == str(path)
    assert expr.orientation == (
        f"read {path} as genes x samples (ARACNe layout): 3 genes (rows), 4 samples (columns)"
    )


def test_read_text_keeps_ids_verbatim(tmp_path):
    # Numeric-looking and NA-looking ids must stay text, not become numbers or missing values.
    genes = ["007", "NA", "1e5"]
    path = write(tmp_path, "expr.tsv", matrix_text(genes=genes, samples=["01", "NaN", "3", "4"]))
    expr = read_expression(path)
    assert list(expr.genes) == genes
    assert list(expr.samples) == ["01", "NaN", "3", "4"]


def test_read_text_crlf_bom_and_blank_lines(tmp_path):
    text = "\ufeff" + matrix_text().replace("\n", "\r\n") + "\r\n\r\n"
    path = tmp_path / "expr.tsv"
    path.write_bytes(text.encode())
    expr = read_expression(path)
    np.testing.assert_array_equal(expr.X, VALUES.T)
    assert list(expr.samples) == SAMPLES


def test_fast_reader_parses_every_notation_exactly(tmp_path):
    """Well-formed files take numpy's parser: every value is Python's float() of its text, the
    correctly rounded one, in every notation a file may use (pandas' default parser, used before,
    was off by up to 3e-13 relative on 17-digit values)."""
    rng = np.random.default_rng(0)
    values = rng.lognormal(size=(40, 25)) * 10.0 ** rng.integers(-12, 12, size=(40, 25))
    formats = ("{:.17g}", "{:.6g}", "{:.3e}", "{:.2f}", "{:.0f}", "{:.4E}")
    text = [
        [formats[(i + j) % 6].format(v) for j, v in enumerate(row)] for i, row in enumerate(values)
    ]
    lines = ["gene\t" + "\t".join(f"S{j}" for j in range(25))]
    lines += [f"G{i}\t" + "\t".join(row) for i, row in enumerate(text)]
    expected = np.array([[float(cell) for cell in row] for row in text]).T
    np.testing.assert_array_equal(read_expression(write_lines(tmp_path, lines)).X, expected)


def test_read_text_integer_values(tmp_path):
    path = write_lines(tmp_path, ["gene\ta\tb\tc", "G1\t1\t2\t3", "G2\t4\t5\t7"])
    expr = read_expression(path)
    assert expr.X.dtype == np.float64
    np.testing.assert_array_equal(expr.X, [[1, 4], [2, 5], [3, 7]])


def test_short_header_warns_and_parses(tmp_path):
    path = write(tmp_path, "expr.tsv", matrix_text(corner=None))
    with pytest.warns(UserWarning, match=re.escape(str(path)) + ".*one field fewer.*gene ids"):
        expr = read_expression(path)
    assert list(expr.samples) == SAMPLES
    assert list(expr.genes) == GENES
    np.testing.assert_array_equal(expr.X, VALUES.T)


def test_short_header_then_bad_row(tmp_path):
    lines = matrix_text(corner=None).splitlines()
    lines[2] += "\t9"
    path = write_lines(tmp_path, lines)
    with (
        pytest.warns(UserWarning, match="one field fewer"),
        pytest.raises(InputError, match=r"line 3, gene 'MYC': expected 5 fields.*found 6"),
    ):
        read_expression(path)


@pytest.mark.parametrize(
    "text",
    ["", "gene\tS1\tS2\n", "gene\tS1\tS2\n\n\n", "gene\nG1\nG2\n"],
    ids=["empty-file", "header-only", "header-blank-lines", "no-sample-columns"],
)
def test_empty_matrix(tmp_path, text):
    path = write(tmp_path, "expr.tsv", text)
    with pytest.raises(InputError, match="^" + re.escape(f"{path}: empty matrix")):
        read_expression(path)


def test_row_with_too_many_fields(tmp_path):
    lines = good_rows()
    lines[3] += "\t1.0"
    path = write_lines(tmp_path, lines)
    msg = f"{path}: line 4, gene 'G2': expected 5 fields (gene id + 4 samples), found 6"
    with pytest.raises(InputError, match="^" + re.escape(msg) + "$"):
        read_expression(path)


def test_row_with_too_few_fields(tmp_path):
    lines = good_rows()
    lines[2] = lines[2].rsplit("\t", 1)[0]
    path = write_lines(tmp_path, lines)
    with pytest.raises(
        InputError, match=re.escape(f"{path}: line 3, gene 'G1': expected 5") + ".*found 4"
    ):
        read_expression(path)


def test_first_row_wrong_width(tmp_path):
    lines = good_rows()
    lines[1] += "\t1\t2"
    path = write_lines(tmp_path, lines)
    with pytest.raises(InputError, match=r"line 2, gene 'G0': expected 5 .*found 7"):
        read_expression(path)


def test_many_bad_rows_counted(tmp_path):
    lines = good_rows(n_genes=8)
    for i in (2, 4, 6, 8):
        lines[i] = lines[i].rsplit("\t", 1)[0]
    path = write_lines(tmp_path, lines)
    with pytest.raises(InputError) as info:
        read_expression(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: 4 rows have the wrong number of fields (expected 5")
    assert "line 3, gene 'G1': 4 fields; line 5, gene 'G3': 4 fields" in msg
    assert msg.endswith("; ...")


def test_non_numeric_cell(tmp_path):
    genes = ["A", "B", "C", "TP53"]
    samples = ["S0001", "S0002", "S0003"]
    values = np.arange(12.0).reshape(4, 3)
    lines = matrix_text(genes=genes, samples=samples, values=values).splitlines()
    lines.insert(1, "")  # a blank line must not shift the reported line numbers
    lines[5] = lines[5].replace("10.0", "abc")
    path = write_lines(tmp_path, lines)
    msg = f"{path}: line 6, gene 'TP53', sample 'S0002': 'abc' is not a number"
    with pytest.raises(InputError, match="^" + re.escape(msg) + "$"):
        read_expression(path)


def test_many_non_numeric_cells_counted_in_line_order(tmp_path):
    lines = good_rows(n_genes=5)
    for i, sample in ((4, 3), (2, 1), (2, 4), (5, 2)):
        cells = lines[i].split("\t")
        cells[sample] = f"x{i}{sample}"
        lines[i] = "\t".join(cells)
    path = write_lines(tmp_path, lines)
    with pytest.raises(InputError) as info:
        read_expression(path)
    assert str(info.value) == (
        f"{path}: 4 cells are not numbers, e.g. line 3, gene 'G1', sample 'S0': 'x21'; "
        "line 3, gene 'G1', sample 'S3': 'x24'; line 5, gene 'G3', sample 'S2': 'x43'; ..."
    )


def test_quoted_number_is_not_a_number(tmp_path):
    # No quoting in this format: a quoted value is text.
    lines = good_rows()
    lines[1] = 'G0\t"1.0"\t2\t3\t4'
    path = write_lines(tmp_path, lines)
    with pytest.raises(InputError, match=r"line 2, gene 'G0', sample 'S0': '\"1.0\"'"):
        read_expression(path)


@pytest.mark.parametrize("cell", ["NA", "NaN", "nan", "", "inf", "-Inf", " NA "])
def test_non_finite_cell(tmp_path, cell):
    lines = good_rows()
    cells = lines[2].split("\t")
    cells[3] = cell
    lines[2] = "\t".join(cells)
    path = write_lines(tmp_path, lines)
    with pytest.raises(InputError) as info:
        read_expression(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: 1 non-finite values")
    assert "gene 'G1', sample 'S2'" in msg
    assert "ARACNe-AP would silently read NA as 0" in msg


def test_non_finite_cells_counted(tmp_path):
    lines = good_rows(n_genes=4, n_samples=5)
    for i in (1, 3, 4):
        lines[i] = lines[i].rsplit("\t", 2)[0] + "\tNA\tNA"
    path = write_lines(tmp_path, lines)
    with pytest.raises(
        InputError, match=re.escape(f"{path}: 6 non-finite values") + ".* in 3 genes and 2 samples"
    ):
        read_expression(path)


def test_duplicate_gene_ids(tmp_path):
    genes = ["A", "B", "A", "C", "B"]
    path = write(
        tmp_path, "expr.tsv", matrix_text(genes=genes, values=np.arange(20.0).reshape(5, 4))
    )
    with pytest.raises(
        InputError,
        match="^" + re.escape(f"{path}: 2 gene ids occur more than once (e.g. 'A', 'B')"),
    ):
        read_expression(path)


def test_duplicate_sample_ids_warn(tmp_path):
    path = write(tmp_path, "expr.tsv", matrix_text(samples=["S1", "S2", "S1", "S3"]))
    with pytest.warns(
        UserWarning, match=re.escape(f"{path}: 1 sample ids occur more than once (e.g. 'S1')")
    ):
        expr = read_expression(path)
    assert list(expr.samples) == ["S1", "S2", "S1", "S3"]


def test_min_samples(tmp_path):
    path = write(tmp_path, "expr.tsv", matrix_text(samples=["S1", "S2"], values=VALUES[:, :2]))
    with pytest.raises(
        InputError, match=re.escape(f"{path}: 2 samples, but at least 3 are needed")
    ):
        read_expression(path)
    assert read_expression(path, min_samples=2).X.shape == (2, 3)


def test_constant_gene_warns(tmp_path):
    values = VALUES.copy()
    values[1] = 7.0
    path = write(tmp_path, "expr.tsv", matrix_text(values=values))
    with pytest.warns(
        UserWarning,
        match=re.escape(f"{path}: 1 of 3 genes are constant across samples (e.g. 'MYC')")
        + ".*carry no information and will be ignored by ARACNe",
    ):
        expr = read_expression(path)
    np.testing.assert_array_equal(expr.X[:, 1], 7.0)


@pytest.mark.parametrize("name", ["expr.xlsx", "expr.tsv.bz2", "expr"])
def test_unsupported_suffix(tmp_path, name):
    path = write(tmp_path, name, matrix_text())
    with pytest.raises(InputError, match="^" + re.escape(f"{path}: unsupported file type")):
        read_expression(path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.tsv"
    with pytest.raises(InputError, match="^" + re.escape(f"{path}: no such file")):
        read_expression(path)


def test_layer_for_text_file(tmp_path):
    path = write(tmp_path, "expr.tsv", matrix_text())
    with pytest.raises(InputError, match=re.escape(f"{path}: layer='counts'")):
        read_expression(path, layer="counts")


def test_not_gzip(tmp_path):
    path = tmp_path / "expr.tsv.gz"
    path.write_text(matrix_text())
    with pytest.raises(InputError, match="^" + re.escape(f"{path}: cannot read")):
        read_expression(path)


def test_not_utf8(tmp_path):
    path = tmp_path / "expr.tsv"
    path.write_bytes(matrix_text().encode().replace(b"GATA1", b"GAT\xff1"))
    with pytest.raises(InputError, match="^" + re.escape(f"{path}: cannot read as UTF-8")):
        read_expression(path)


# --- h5ad ------------------------------------------------------------------------------------


def test_read_h5ad_X(tmp_path):
    X = VALUES.T.astype(np.float32)
    path = write_h5ad(tmp_path, X)
    expr = read_expression(path)
    np.testing.assert_array_equal(expr.X, X.astype(np.float64))
    assert expr.X.dtype == np.float64 and expr.X.flags.c_contiguous
    assert list(expr.genes) == GENES
    assert list(expr.samples) == ["c0", "c1", "c2", "c3"]
    assert expr.orientation == (
        f"read {path} X as cells x genes (AnnData layout): 4 cells (rows), 3 genes (columns)"
    )


def test_read_h5ad_layer_and_sparse(tmp_path):
    counts = np.array([[0, 1, 2], [3, 0, 0], [0, 0, 5], [1, 1, 0]], dtype=np.float32)
    path = write_h5ad(tmp_path, sp.csr_matrix(VALUES.T), layers={"counts": sp.csr_matrix(counts)})
    expr = read_expression(path)
    assert isinstance(expr.X, np.ndarray)
    np.testing.assert_array_equal(expr.X, VALUES.T)
    layer = read_expression(path, layer="counts")
    np.testing.assert_array_equal(layer.X, counts)
    assert layer.X.dtype == np.float64 and layer.X.flags.c_contiguous
    assert "layer 'counts' as cells x genes (AnnData layout)" in layer.orientation


def test_read_h5ad_unknown_layer(tmp_path):
    path = write_h5ad(tmp_path, VALUES.T, layers={"counts": VALUES.T, "raw": VALUES.T})
    with pytest.raises(
        InputError,
        match="^" + re.escape(f"{path}: no layer 'logcounts'; available layers: 'counts', 'raw'"),
    ):
        read_expression(path, layer="logcounts")


def test_read_h5ad_unknown_layer_none_available(tmp_path):
    path = write_h5ad(tmp_path, VALUES.T)
    with pytest.raises(InputError, match="available layers: none"):
        read_expression(path, layer="counts")


def test_read_h5ad_duplicate_genes(tmp_path):
    with pytest.warns(UserWarning, match="Variable names are not unique"):  # from anndata
        path = write_h5ad(tmp_path, VALUES.T, genes=["A", "B", "A"])
    with pytest.raises(
        InputError, match=re.escape(f"{path}: 1 gene ids occur more than once (e.g. 'A')")
    ):
        read_expression(path)


def test_read_h5ad_non_finite(tmp_path):
    X = VALUES.T.copy()
    X[2, 1] = np.nan
    path = write_h5ad(tmp_path, X)
    with pytest.raises(
        InputError, match=re.escape(f"{path}: 1 non-finite") + r".*gene 'MYC', sample 'c2'"
    ):
        read_expression(path)


def test_read_h5ad_min_samples(tmp_path):
    path = write_h5ad(tmp_path, VALUES.T[:2])
    with pytest.raises(InputError, match=r"2 samples, but at least 3 are needed"):
        read_expression(path)


def test_read_h5ad_not_hdf5(tmp_path):
    path = write(tmp_path, "cells.h5ad", "not hdf5")
    with pytest.raises(InputError, match="^" + re.escape(f"{path}: not a readable .h5ad file")):
        read_expression(path)


# --- validate_expression ---------------------------------------------------------------------


def test_validate_array_defaults():
    expr = validate_expression(VALUES.T.astype(np.int64), GENES)
    assert expr.source == "<array>"
    assert expr.X.dtype == np.float64 and expr.X.flags.c_contiguous
    assert list(expr.samples) == ["0", "1", "2", "3"]
    assert expr.orientation == "<array> as samples x genes: 4 samples (rows), 3 genes (columns)"


def test_validate_array_sparse_and_fortran():
    expr = validate_expression(sp.csc_matrix(VALUES.T), GENES, samples=SAMPLES)
    np.testing.assert_array_equal(expr.X, VALUES.T)
    expr = validate_expression(np.asfortranarray(VALUES.T), np.array(GENES))
    assert expr.X.flags.c_contiguous
    np.testing.assert_array_equal(expr.X, VALUES.T)


def test_validate_array_non_finite_names_gene_and_sample():
    X = VALUES.T.copy()
    X[1, 2] = np.inf
    X[3, 0] = np.nan
    with pytest.raises(InputError) as info:
        validate_expression(X, GENES, samples=SAMPLES)
    msg = str(info.value)
    assert msg.startswith(
        "<array>: 2 non-finite values (NA, NaN, empty or inf) in 2 genes and 2 samples"
    )
    assert "gene 'GATA1', sample 'S2': inf" in msg
    assert "gene 'TP53', sample 'S4': nan" in msg


@pytest.mark.parametrize(
    ("X", "genes", "match"),
    [
        (np.ones(3), GENES, "expected a 2-D samples x genes matrix, got 1-D"),
        (np.ones((0, 3)), GENES, "empty matrix"),
        (np.ones((4, 0)), [], "empty matrix"),
        (np.array([["1", "2", "3"]] * 4), GENES, "must be real numbers, got dtype <U1"),
        (np.array([[1, "a", 2]] * 4, dtype=object), GENES, "must be real numbers"),
        (np.ones((4, 3), dtype=complex), GENES, "must be real numbers, got dtype complex128"),
        (np.ones((4, 2)), GENES, "3 gene ids for 2 matrix columns"),
    ],
)
def test_validate_array_errors(X, genes, match):
    with pytest.raises(InputError, match="^<array>: .*" + re.escape(match)):
        validate_expression(X, genes)


def test_validate_array_sample_count_mismatch():
    with pytest.raises(InputError, match=re.escape("<array>: 2 sample ids for 4 matrix rows")):
        validate_expression(VALUES.T, GENES, samples=["a", "b"])


def test_validate_custom_source_and_min_samples():
    with pytest.raises(
        InputError, match=re.escape("data.npy: 4 samples, but at least 5 are needed")
    ):
        validate_expression(VALUES.T, GENES, source="data.npy", min_samples=5)


# --- regulators ------------------------------------------------------------------------------


def test_read_regulators_comments_blank_whitespace(tmp_path):
    path = write(tmp_path, "tfs.txt", "# TFs\n\nTP53\n  MYC \t\n#GATA1\r\nE2F1\n")
    assert read_regulators(path) == ["TP53", "MYC", "E2F1"]


def test_read_regulators_gz(tmp_path):
    path = write(tmp_path, "tfs.txt.gz", "TP53\nMYC\n")
    assert read_regulators(path) == ["TP53", "MYC"]


def test_read_regulators_duplicates(tmp_path):
    path = write(tmp_path, "tfs.txt", "MYC\nTP53\nMYC\nE2F1\nTP53\nMYC\n")
    with pytest.warns(UserWarning, match=re.escape(f"{path}: 3 duplicate regulator ids ignored")):
        regs = read_regulators(path)
    assert regs == ["MYC", "TP53", "E2F1"]


def test_read_regulators_absent_warns(tmp_path):
    path = write(tmp_path, "tfs.txt", "A\nTP53\nB\nC\nMYC\nD\n")
    msg = (
        f"{path}: 4 of 6 regulators are absent from the expression matrix (e.g. A, B, C, ...); "
        "they are ignored"
    )
    with pytest.warns(UserWarning, match="^" + re.escape(msg) + "$"):
        regs = read_regulators(path, genes=np.array(GENES, dtype=object))
    assert regs == ["TP53", "MYC"]


def test_read_regulators_all_present_no_warning(tmp_path):
    path = write(tmp_path, "tfs.txt", "MYC\nTP53\n")
    assert read_regulators(path, genes=GENES) == ["MYC", "TP53"]


def test_read_regulators_none_present(tmp_path):
    path = write(tmp_path, "tfs.txt", "ENSG1\nENSG2\n")
    with pytest.raises(
        InputError,
        match="^" + re.escape(f"{path}: none of the 2 regulators is in the expression matrix"),
    ):
        read_regulators(path, genes=GENES)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_read_regulators_empty(tmp_path, text):
    path = write(tmp_path, "tfs.txt", text)
    with pytest.raises(InputError, match="^" + re.escape(f"{path}: no regulator ids")):
        read_regulators(path)


@pytest.mark.parametrize("line", ["TP53\t0.5", "TP53,MYC"])
def test_read_regulators_multi_column(tmp_path, line):
    path = write(tmp_path, "tfs.txt", f"MYC\n{line}\n")
    with pytest.raises(
        InputError, match="^" + re.escape(f"{path}: line 2: {line!r} has more than one field")
    ):
        read_regulators(path)


def test_read_regulators_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_regulators(tmp_path / "tfs.txt")


# --- writers ---------------------------------------------------------------------------------


@pytest.fixture
def edges():
    return pd.DataFrame(
        {
            "regulator": ["TP53", "MYC", "TP53"],
            "target": ["MYC", "GATA1", "GATA1"],
            "mi": [0.1, 2 / 3, 1e-300],
            "pvalue": [1e-12, 0.049999999999999996, 1.0],
            "count": np.array([100, 7, 1], dtype=np.int64),
            "scc": [0.5, -0.123456789012345, 0.0],
            "log_p": np.log([1e-12, 0.049999999999999996, 1.0]),
        }
    )


def test_write_aracne_ap(tmp_path, edges):
    path = tmp_path / "network.txt"
    write_aracne_ap(edges, path)
    lines = path.read_text().split("\n")
    assert lines[0] == "Regulator\tTarget\tMI\tpvalue"
    assert lines[1] == "TP53\tMYC\t0.1\t1e-12"
    assert lines[-1] == "" and len(lines) == 5
    back = pd.read_csv(path, sep="\t", float_precision="round_trip")
    assert list(back["Regulator"]) == list(edges["regulator"])
    assert list(back["Target"]) == list(edges["target"])
    # repr precision: values come back bit for bit
    assert back["MI"].tolist() == edges["mi"].tolist()
    assert back["pvalue"].tolist() == edges["pvalue"].tolist()


def test_write_aracne3(tmp_path, edges):
    path = tmp_path / "network.tsv"
    write_aracne3(edges, path)
    header = path.read_text().split("\n")[0]
    assert (
        header
        == "regulator.values\ttarget.values\tmi.values\tscc.values\tcount.values\tlog.p.values"
    )
    back = pd.read_csv(path, sep="\t", float_precision="round_trip")
    assert back["regulator.values"].tolist() == edges["regulator"].tolist()
    assert back["target.values"].tolist() == edges["target"].tolist()
    assert back["count.values"].dtype == np.int64
    assert back["count.values"].tolist() == [100, 7, 1]
    for ours, theirs in [("mi", "mi.values"), ("scc", "scc.values"), ("log_p", "log.p.values")]:
        assert back[theirs].tolist() == edges[ours].tolist()


@pytest.mark.parametrize("writer", [write_aracne_ap, write_aracne3])
def test_write_gzip(tmp_path, edges, writer):
    path = tmp_path / "out" / "nested" / "network.tsv.gz"  # parent directories are created
    writer(edges, path)
    with gzip.open(path, "rt") as fh:
        text = fh.read()
    plain = tmp_path / "network.tsv"
    writer(edges, plain)
    assert text == plain.read_text()
    first = path.read_bytes()
    writer(edges, path)
    assert path.read_bytes() == first  # reproducible: no timestamp in the gzip header


def test_write_missing_columns(tmp_path, edges):
    path = tmp_path / "network.txt"
    with pytest.raises(ValueError, match="missing required columns: mi, pvalue"):
        write_aracne_ap(edges.drop(columns=["mi", "pvalue"]), path)
    with pytest.raises(ValueError, match="missing required columns: scc, log_p"):
        write_aracne3(edges.drop(columns=["scc", "log_p"]), path)
    assert not path.exists()


def test_write_extra_columns_ignored_and_order_kept(tmp_path, edges):
    edges = edges.iloc[::-1].assign(extra=1)
    path = tmp_path / "network.txt"
    write_aracne_ap(edges, path)
    back = pd.read_csv(path, sep="\t")
    assert list(back.columns) == ["Regulator", "Target", "MI", "pvalue"]
    assert back["Target"].tolist() == ["GATA1", "GATA1", "MYC"]


# --- atomicity -------------------------------------------------------------------------------


class _Unprintable:
    def __str__(self):
        raise RuntimeError("cannot format")


def _dir_listing(path):
    return sorted(p.name for p in path.iterdir())


@pytest.mark.parametrize("name", ["network.txt", "network.txt.gz"])
def test_atomic_write_exception_keeps_old_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"old content\n")
    with pytest.raises(RuntimeError, match="mid-write"):
        with atomic_write(path) as fh:
            fh.write("new content\n" * 10_000)
            raise RuntimeError("mid-write")
    assert path.read_bytes() == b"old content\n"
    assert _dir_listing(tmp_path) == [name]


@pytest.mark.parametrize("writer", [write_aracne_ap, write_aracne3])
def test_writer_failure_mid_write_keeps_old_file(tmp_path, edges, writer):
    path = tmp_path / "network.txt"
    path.write_text("old content\n")
    edges = pd.concat([edges] * 1000, ignore_index=True)
    edges["regulator"] = edges["regulator"].astype(object)
    edges.loc[len(edges) - 1, "regulator"] = _Unprintable()
    with pytest.raises(RuntimeError, match="cannot format"):
        writer(edges, path)
    assert path.read_text() == "old content\n"
    assert _dir_listing(tmp_path) == ["network.txt"]


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old\n")
    with atomic_write(path) as fh:
        fh.write("new\n")
        assert path.read_text() == "old\n"  # not visible until the block ends
    assert path.read_text() == "new\n"
    assert _dir_listing(tmp_path) == ["out.txt"]


def test_atomic_write_honours_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = tmp_path / "out.txt"
        with atomic_write(path) as fh:
            fh.write("x\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
