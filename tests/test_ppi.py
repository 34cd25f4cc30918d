"""HINT and STRING v12 readers: exact counts on small real-format fixtures, and bad input."""

from __future__ import annotations

import gzip
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from netinfer.io import InputError
from netinfer.ppi import (
    STRING_ALIAS_SOURCES,
    PPITable,
    read_hint,
    read_string,
    restrict_to_genes,
)

DATA = Path(__file__).parent / "data" / "ppi"
HINT_OLD = DATA / "HomoSapiens_binary_hq.txt"
HINT_NEW = DATA / "HomoSapiens_cocomp_hq_2024.txt"
LINKS = DATA / "9606.protein.links.v12.0.txt"
DETAILED = DATA / "9606.protein.links.detailed.v12.0.txt"
INFO = DATA / "9606.protein.info.v12.0.txt"
ALIASES = DATA / "9606.protein.aliases.v12.0.txt"

OLD_HEADER = (
    "Uniprot_A\tUniprot_B\tGene_A\tGene_B\tORF_A\tORF_B\tAlias_A\tAlias_B\tpmid:method:quality"
)
NEW_HEADER = (
    "Uniprot_A\tUniprot_B\tGene_A\tGene_B\tpmid:method:quality:type\ttaxid\thigh_quality"
    "\tin_pdb_source\tPDB_IDs"
)
LINKS_HEADER = "protein1 protein2 combined_score"
DETAILED_HEADER = (
    "protein1 protein2 neighborhood fusion cooccurence coexpression experimental database "
    "textmining combined_score"
)
INFO_HEADER = "#string_protein_id\tpreferred_name\tprotein_size\tannotation"
ALIASES_HEADER = "#string_protein_id\talias\tsource"


def edge_dict(table: PPITable, column: str = "score") -> dict[tuple[str, str], object]:
    return {
        (a, b): v
        for a, b, v in zip(table.edges["gene_a"], table.edges["gene_b"], table.edges[column])
    }


def check_invariants(table: PPITable) -> None:
    edges = table.edges
    assert list(edges.columns[:3]) == ["gene_a", "gene_b", "score"]
    assert edges["score"].dtype == np.float64
    assert all(isinstance(g, str) for g in [*edges["gene_a"], *edges["gene_b"]])
    assert (edges["gene_a"] < edges["gene_b"]).all()  # also excludes self-loops
    pairs = {frozenset(p) for p in zip(edges["gene_a"], edges["gene_b"])}
    assert len(pairs) == len(edges)
    assert list(zip(edges["gene_a"], edges["gene_b"])) == sorted(
        zip(edges["gene_a"], edges["gene_b"])
    )
    assert edges.index.equals(pd.RangeIndex(len(edges)))
    assert json.loads(json.dumps(table.report)) == table.report
    assert table.report["edges"] == len(edges)
    assert table.report["genes"] == len(set(edges["gene_a"]) | set(edges["gene_b"]))
    assert isinstance(table.report["summary"], str)


def gzip_to(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / (src.name + ".gz")
    with open(src, "rb") as fin, gzip.open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout)
    return dst


def write(tmp_path: Path, name: str, lines: list[str], *, end: str = "\n") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + end)
    return path


# --------------------------------------------------------------------------------------------
# HINT


def test_hint_old_generation_counts_and_edges():
    table = read_hint(HINT_OLD)
    check_invariants(table)
    report = dict(table.report)
    summary = report.pop("summary")
    assert report == {
        "generation": "2017",
        "rows": 13,
        "uniprot_only_rows": 3,  # gene == own accession (x2), gene is another accession (x1)
        "self_loops": 1,
        "duplicate_rows": 1,
        "edges": 8,
        "genes": 15,
    }
    assert "UniProt accession" in summary and "3 rows" in summary
    assert table.sources == [str(HINT_OLD)]
    assert edge_dict(table) == {
        ("AKT1", "PDPK1"): 1.0,
        ("BARD1", "BRCA1"): 2.0,
        ("EGFR", "ERBB2"): 1.0,
        ("EGFR", "GRB2"): 1.0,
        ("EP300", "SIRT1"): 1.0,
        ("HDAC1", "HDAC2"): 1.0,
        ("MDM2", "TP53"): 3.0,
        ("SMAD2", "SMAD4"): 1.0,
    }
    assert list(table.edges.columns) == [
        "gene_a",
        "gene_b",
        "score",
        "n_evidence",
        "n_pmids",
        "methods",
    ]
    edges = table.edges.set_index(["gene_a", "gene_b"])
    # TP53-MDM2 on two rows in opposite orders; evidence unioned: 8875929 twice (two methods),
    # 10722742 on both rows (counted once), 15053880.
    assert edges.loc[("MDM2", "TP53")].to_dict() == {
        "score": 3.0,
        "n_evidence": 4,
        "n_pmids": 3,
        "methods": "0007,0018,0096",
    }
    # The same entry twice in one cell counts once.
    assert edges.loc[("EGFR", "ERBB2"), "n_evidence"] == 1
    # Two entries sharing one PubMed id (different quality / method).
    assert edges.loc[("AKT1", "PDPK1")].to_dict() == {
        "score": 1.0,
        "n_evidence": 2,
        "n_pmids": 1,
        "methods": "0018",
    }
    assert edges.loc[("EP300", "SIRT1"), "methods"] == "0007,0019"
    assert edges["n_evidence"].dtype == np.int64 and edges["n_pmids"].dtype == np.int64
    for dropped in ("EWSR1", "DDX39B", "UBC", "A0A024QYV7", "A0A087WVQ6"):
        assert dropped not in set(table.edges["gene_a"]) | set(table.edges["gene_b"])


def test_hint_2024_generation_counts_and_edges():
    table = read_hint(HINT_NEW)
    check_invariants(table)
    report = dict(table.report)
    report.pop("summary")
    assert report == {
        "generation": "2024",
        "rows": 11,
        "uniprot_only_rows": 2,
        "self_loops": 1,
        "duplicate_rows": 2,
        "edges": 6,
        "genes": 12,
    }
    edges = table.edges.set_index(["gene_a", "gene_b"])
    assert sorted(edges.index) == [
        ("CREBBP", "EP300"),
        ("CTNNB1", "JUP"),
        ("HBA1", "HBB"),
        ("IKBKB", "IKBKG"),
        ("MDM2", "TP53"),
        ("YWHAB", "YWHAE"),
    ]
    # 8875929 with methods 0006 and 0007, plus 15053880 from the reversed row.
    assert edges.loc[("MDM2", "TP53")].to_dict() == {
        "score": 2.0,
        "n_evidence": 3,
        "n_pmids": 2,
        "methods": "0006,0007",
    }
    # The reversed IKBKB-IKBKG row adds nothing new.
    assert edges.loc[("IKBKB", "IKBKG"), "n_evidence"] == 2
    assert edges.loc[("YWHAB", "YWHAE"), "n_pmids"] == 2
    assert edges.loc[("HBA1", "HBB"), "methods"] == "0114"


@pytest.mark.parametrize("fixture", [HINT_OLD, HINT_NEW])
def test_hint_gzip_matches_plain(fixture, tmp_path):
    plain = read_hint(fixture)
    gz = read_hint(gzip_to(fixture, tmp_path))
    pd.testing.assert_frame_equal(gz.edges, plain.edges)
    assert {k: v for k, v in gz.report.items() if k != "summary"} == {
        k: v for k, v in plain.report.items() if k != "summary"
    }


def test_hint_restricted_to_genes():
    genes = ["TP53", "MDM2", "EGFR", "GRB2", "XIST", "NOTAGENE", "TP53"]
    table = read_hint(HINT_OLD, genes=genes)
    check_invariants(table)
    assert edge_dict(table) == {("EGFR", "GRB2"): 1.0, ("MDM2", "TP53"): 3.0}
    report = table.report
    assert report["genes_given"] == 6
    assert report["ppi_genes"] == 15
    assert report["genes_overlap"] == 4
    assert report["edges_before_restriction"] == 8
    assert report["edges_kept"] == 2
    assert report["edges"] == 2 and report["genes"] == 4
    assert report["rows"] == 13  # reading counts are kept
    assert "kept 2 of 8 edges" in report["summary"]


def test_restrict_to_genes_direct_and_no_overlap():
    full = read_hint(HINT_NEW)
    none = restrict_to_genes(full, ["ENSG00000141510", "ENSG00000135679"])
    check_invariants(none)
    assert len(none.edges) == 0
    assert list(none.edges.columns) == list(full.edges.columns)
    assert none.report["genes_overlap"] == 0 and none.report["edges_kept"] == 0
    assert "do both use gene symbols?" in none.report["summary"]
    assert len(full.edges) == 6  # the input table is not modified
    assert "genes_given" not in full.report
    some = restrict_to_genes(full, {"YWHAB", "YWHAE", "HBB"})
    assert edge_dict(some) == {("YWHAB", "YWHAE"): 2.0}
    assert some.report["genes_overlap"] == 3
    with pytest.raises(TypeError, match="single string"):
        restrict_to_genes(full, "TP53")


def test_hint_keeps_symbols_that_look_like_accessions(tmp_path):
    header = (
        "Uniprot_A\tUniprot_B\tGene_A\tGene_B\tORF_A\tORF_B\tAlias_A\tAlias_B\tpmid:method:quality"
    )
    rows = [
        "Q9H244\tP08172\tP2RY12\tCHRM2\t\t\t\t\t111:0018:LC",  # P2RY12 is a real symbol
        "Q99880\tP62805\tH2BC12\tH4C1\t\t\t\t\t222:0018:LC",
        "A0A024QYV7\tQ01844\tA0A024QYV7\tEWSR1\t\t\t\t\t333:0018:HT",  # no symbol known
    ]
    path = tmp_path / "HomoSapiens_binary_hq.txt"
    path.write_text("\n".join([header, *rows]) + "\n")
    table = read_hint(path)
    assert set(zip(table.edges["gene_a"], table.edges["gene_b"])) == {
        ("CHRM2", "P2RY12"),
        ("H2BC12", "H4C1"),
    }
    assert table.report["uniprot_only_rows"] == 1


def test_hint_windows_line_endings_and_blank_lines(tmp_path):
    lines = [
        OLD_HEADER,
        "P04637\tQ00987\tTP53\tMDM2\t\t\t\t\t8875929:0018:HT",
        "",
        "Q15796\tQ13485\tSMAD2\tSMAD4\t\t\t\t\t9311995:0018:HT",
        "",
    ]
    path = tmp_path / "crlf.txt"
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    table = read_hint(path)
    assert table.report["rows"] == 2
    assert edge_dict(table) == {("MDM2", "TP53"): 1.0, ("SMAD2", "SMAD4"): 1.0}


def hint_error(tmp_path, lines, match, name="hint.txt", end="\n"):
    path = write(tmp_path, name, lines, end=end)
    with pytest.raises(InputError, match=match) as info:
        read_hint(path)
    assert str(info.value).startswith(str(path) + ":")
    return str(info.value)


def test_hint_error_empty(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(InputError, match=r"empty\.txt: empty file"):
        read_hint(tmp_path / "empty.txt")
    hint_error(tmp_path, ["", ""], r"empty file", name="blank.txt")
    hint_error(tmp_path, ["", OLD_HEADER], r"line 1 is blank", name="blank_first.txt")


def test_hint_error_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"nope\.txt: no such file"):
        read_hint(tmp_path / "nope.txt")


def test_hint_error_unknown_header(tmp_path):
    message = hint_error(
        tmp_path,
        ["protein_a\tprotein_b\tscore", "P04637\tQ00987\t5"],
        r"hint\.txt: line 1: not a HINT header",
    )
    assert "['protein_a', 'protein_b', 'score']" in message
    assert "pmid:method:quality'" in message and "pmid:method:quality:type" in message


def test_hint_error_space_separated(tmp_path):
    lines = [OLD_HEADER.replace("\t", " "), "P04637 Q00987 TP53 MDM2 - - - - 8875929:0018:HT"]
    hint_error(tmp_path, lines, r"hint\.txt: line 1: HINT files are tab-separated")


def test_hint_error_space_separated_data_line(tmp_path):
    lines = [NEW_HEADER, "P04637 Q00987 TP53 MDM2 8875929:0006:HT:cocomp 9606 True True 1YCR"]
    message = hint_error(
        tmp_path, lines, r"hint\.txt: line 2: expected 9 tab-separated fields .*found 1"
    )
    assert "HINT files are tab-separated" in message and "P04637 Q00987" in message


def test_hint_error_wrong_field_count(tmp_path):
    good = "P04637\tQ00987\tTP53\tMDM2\t\t\t\t\t8875929:0018:HT"
    bad = "Q15796\tQ13485\tSMAD2\tSMAD4\t\t\t9311995:0018:HT"
    message = hint_error(
        tmp_path, [OLD_HEADER, good, "", bad], r"hint\.txt: line 4: expected 9 .*found 7"
    )
    assert repr(bad) in message


def test_hint_error_long_line_is_truncated(tmp_path):
    bad = "P04637\tQ00987\tTP53\tMDM2\t" + "x" * 500
    message = hint_error(tmp_path, [OLD_HEADER, bad], r"line 2: expected 9 .*found 5")
    assert "x" * 150 in message and "x" * 300 not in message and "..." in message


@pytest.mark.parametrize(
    ("header", "evidence", "match"),
    [
        (OLD_HEADER, "8875929:0018", r"'8875929:0018'.*2 ':'-separated fields instead of 3"),
        (OLD_HEADER, "8875929:0018:HT|abc:0018:HT", r"'abc:0018:HT'.*PubMed id 'abc'"),
        (OLD_HEADER, "8875929:0018:HT:binary", r"4 ':'-separated fields instead of 3"),
        (OLD_HEADER, "", r"entry ''"),
        (NEW_HEADER, "8875929:0018:HT", r"'pmid:method:quality:type'.*3 ':'-separated"),
    ],
)
def test_hint_error_malformed_evidence(tmp_path, header, evidence, match):
    if header == OLD_HEADER:
        good = "P38398\tQ99728\tBRCA1\tBARD1\t\t\t\t\t8944023:0018:HT"
        bad = f"P04637\tQ00987\tTP53\tMDM2\t\t\t\t\t{evidence}"
    else:
        good = "P38398\tQ99728\tBRCA1\tBARD1\t8944023:0018:HT:binary\t9606\tTrue\tFalse\t"
        bad = f"P04637\tQ00987\tTP53\tMDM2\t{evidence}\t9606\tTrue\tFalse\t"
    message = hint_error(tmp_path, [header, good, bad], r"hint\.txt: line 3: malformed evidence")
    assert re.search(match, message)
    assert repr(bad) in message


def test_hint_error_not_text(tmp_path):
    path = tmp_path / "bad.txt.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(InputError, match=r"bad\.txt\.gz: cannot read"):
        read_hint(path)


# --------------------------------------------------------------------------------------------
# STRING

INFO_ONLY = {
    "format": "links",
    "rows": 26,
    "links": 14,
    "asymmetric_pairs": 2,  # BRCA1-BARD1 999/950, MDM2-BRCA1 699/701
    "min_score": 700,
    "below_min_score": 3,  # ARF5-RALGPS2 173, TP53-EGFR 650, unmapped pair 400
    "proteins": 14,
    "mapped_by_info": 12,  # ENSP00000360532 is absent, ENSP00000478632 named by its own id
    "mapped_by_aliases": 0,
    "unmapped_proteins": 2,
    "unmapped_links": 2,
    "self_loops": 1,  # ENSP00000263253-ENSP00000482345, both EP300
    "merged_after_mapping": 1,  # EP300(b)-CREBBP 720 into EP300-CREBBP 985
    "edges": 7,
    "genes": 9,
}
EDGES_INFO_ONLY = {
    ("BARD1", "BRCA1"): 999,
    ("BRCA1", "MDM2"): 701,
    ("CREBBP", "EP300"): 985,
    ("EGFR", "ERBB2"): 998,
    ("EGFR", "GRB2"): 999,
    ("ERBB2", "GRB2"): 700,
    ("MDM2", "TP53"): 999,
}


def without_summary(report):
    return {k: v for k, v in report.items() if k != "summary"}


def test_string_links_with_info():
    table = read_string(LINKS, info=INFO)
    check_invariants(table)
    assert without_summary(table.report) == INFO_ONLY
    assert list(table.edges.columns) == ["gene_a", "gene_b", "score", "combined_score"]
    assert edge_dict(table, "combined_score") == EDGES_INFO_ONLY
    assert edge_dict(table) == {k: v / 1000 for k, v in EDGES_INFO_ONLY.items()}
    assert table.edges["combined_score"].dtype == np.int64
    assert table.sources == [str(LINKS), str(INFO)]
    summary = table.report["summary"]
    assert "9606.ENSP00000360532" in summary and "9606.ENSP00000478632" in summary


def test_string_links_with_info_and_aliases():
    table = read_string(LINKS, info=INFO, aliases=ALIASES)
    check_invariants(table)
    assert without_summary(table.report) == {
        **INFO_ONLY,
        "mapped_by_aliases": 1,  # ENSP00000360532 -> SIRT1
        "unmapped_proteins": 1,  # ENSP00000478632 has UniProt accessions only
        "unmapped_links": 1,
        "edges": 8,
        "genes": 10,
    }
    assert edge_dict(table, "combined_score") == {**EDGES_INFO_ONLY, ("SIRT1", "TP53"): 965}
    assert table.sources == [str(LINKS), str(INFO), str(ALIASES)]


def test_string_links_with_aliases_only():
    table = read_string(LINKS, aliases=ALIASES)
    check_invariants(table)
    assert without_summary(table.report) == {
        **INFO_ONLY,
        "mapped_by_info": 0,
        "mapped_by_aliases": 13,  # RALGPS2 through UniProt_GN_Name
        "unmapped_proteins": 1,
        "unmapped_links": 1,
        "edges": 8,
        "genes": 10,
    }
    genes = set(table.edges["gene_a"]) | set(table.edges["gene_b"])
    # No UniProt accession (listed before the symbol for every protein) became a symbol.
    accession = re.compile(r"[OPQ][0-9][A-Z0-9]{3}[0-9]|[A-NR-Z][0-9]([A-Z][A-Z0-9]{2}[0-9]){1,2}")
    assert not any(accession.fullmatch(g) for g in genes)
    assert genes == {
        "BARD1",
        "BRCA1",
        "CREBBP",
        "EGFR",
        "EP300",
        "ERBB2",
        "GRB2",
        "MDM2",
        "SIRT1",
        "TP53",
    }


def test_string_detailed_keeps_channels_of_the_higher_row():
    table = read_string(DETAILED, info=INFO)
    check_invariants(table)
    assert without_summary(table.report) == {**INFO_ONLY, "format": "detailed"}
    assert list(table.edges.columns) == [
        "gene_a",
        "gene_b",
        "score",
        "combined_score",
        "neighborhood",
        "fusion",
        "cooccurence",
        "coexpression",
        "experimental",
        "database",
        "textmining",
    ]
    edges = table.edges.set_index(["gene_a", "gene_b"])
    # Asymmetric pair: the 999 row (experimental 990, database 900) wins over the 950 row.
    assert edges.loc[("BARD1", "BRCA1")].to_dict() == {
        "score": 0.999,
        "combined_score": 999,
        "neighborhood": 0,
        "fusion": 0,
        "cooccurence": 0,
        "coexpression": 81,
        "experimental": 990,
        "database": 900,
        "textmining": 995,
    }
    # 699 one way, 701 the other: kept, with the 701 row's channels.
    assert edges.loc[("BRCA1", "MDM2"), "experimental"] == 305
    # Merged after mapping: the 985 link's channels, not the 720 one's.
    assert edges.loc[("CREBBP", "EP300"), "coexpression"] == 102
    assert all(edges[c].dtype == np.int64 for c in edges.columns if c != "score")
    plain = read_string(LINKS, info=INFO)
    pd.testing.assert_frame_equal(table.edges[plain.edges.columns], plain.edges)


def test_string_min_score():
    low = read_string(LINKS, info=INFO, aliases=ALIASES, min_score=0)
    check_invariants(low)
    assert low.report["below_min_score"] == 0
    assert low.report["unmapped_proteins"] == 1
    assert low.report["unmapped_links"] == 2  # the 750 and the 400 link of ENSP00000478632
    assert low.report["self_loops"] == 1 and low.report["merged_after_mapping"] == 1
    assert low.report["edges"] == 10 and low.report["genes"] == 12
    assert edge_dict(low, "combined_score")[("ARF5", "RALGPS2")] == 173
    assert edge_dict(low, "combined_score")[("EGFR", "TP53")] == 650

    high = read_string(LINKS, info=INFO, min_score=900)
    check_invariants(high)
    assert high.report["below_min_score"] == 8
    assert high.report["unmapped_proteins"] == 1 and high.report["unmapped_links"] == 1
    assert high.report["self_loops"] == 0  # the EP300-EP300 link scores 800
    assert high.report["merged_after_mapping"] == 0  # the second EP300-CREBBP link scores 720
    assert edge_dict(high, "combined_score") == {
        k: v for k, v in EDGES_INFO_ONLY.items() if v >= 900
    }

    boundary = read_string(LINKS, info=INFO, min_score=701)
    assert ("ERBB2", "GRB2") not in edge_dict(boundary)
    assert ("BRCA1", "MDM2") in edge_dict(boundary)


def test_string_gzip_matches_plain(tmp_path):
    plain = read_string(DETAILED, info=INFO, aliases=ALIASES)
    gz = read_string(
        gzip_to(DETAILED, tmp_path),
        info=gzip_to(INFO, tmp_path),
        aliases=gzip_to(ALIASES, tmp_path),
    )
    pd.testing.assert_frame_equal(gz.edges, plain.edges)
    assert without_summary(gz.report) == without_summary(plain.report)
    assert gz.sources[0].endswith(".txt.gz")


def test_string_restricted_to_genes():
    genes = ["TP53", "MDM2", "BRCA1", "SIRT1", "GAPDH"]
    table = read_string(LINKS, info=INFO, aliases=ALIASES, genes=genes)
    check_invariants(table)
    assert edge_dict(table, "combined_score") == {
        ("BRCA1", "MDM2"): 701,
        ("MDM2", "TP53"): 999,
        ("SIRT1", "TP53"): 965,
    }
    report = table.report
    assert report["genes_given"] == 5
    assert report["ppi_genes"] == 10
    assert report["genes_overlap"] == 4
    assert report["edges_before_restriction"] == 8
    assert report["edges_kept"] == 3
    assert report["below_min_score"] == 3  # reading counts are kept


def test_string_alias_preference_and_file_order(tmp_path):
    assert STRING_ALIAS_SOURCES[:4] == (
        "Ensembl_HGNC_symbol",
        "Ensembl_HGNC",
        "BioMart_HUGO",
        "Ensembl_gene",
    )
    links = write(
        tmp_path, "links.txt", [LINKS_HEADER, "9606.P1 9606.P2 900", "9606.P3 9606.P1 900"]
    )
    aliases = write(
        tmp_path,
        "aliases.txt",
        [
            ALIASES_HEADER,
            "9606.P1\tQ99999\tUniProt_AC",
            "9606.P1\tLOWER\tUniProt_GN_Name",
            "9606.P1\tFIRST\tEnsembl_HGNC_symbol",
            "9606.P1\tSECOND\tEnsembl_HGNC_symbol",
            "9606.P2\tHUGO\tBioMart_HUGO",
            "9606.P2\tHGNC\tEnsembl_HGNC",
            "9606.P3\tP12345\tUniProt_AC",
        ],
    )
    info = write(
        tmp_path,
        "info.txt",
        [INFO_HEADER, "9606.P2\tINFO2\t100\tsomething; else", "9606.P3\tP3\t100\tno name"],
    )
    by_aliases = read_string(links, aliases=aliases)
    assert edge_dict(by_aliases, "combined_score") == {("FIRST", "HGNC"): 900}
    assert by_aliases.report["unmapped_proteins"] == 1  # 9606.P3: UniProt_AC only
    both = read_string(links, info=info, aliases=aliases)
    # info wins (INFO2); its 'P3' is the bare protein id, so not a symbol.
    assert edge_dict(both, "combined_score") == {("FIRST", "INFO2"): 900}
    assert both.report["mapped_by_info"] == 1 and both.report["mapped_by_aliases"] == 1


def test_string_requires_a_mapping_and_valid_min_score():
    with pytest.raises(ValueError, match="needs info .* or aliases"):
        read_string(LINKS)
    for bad in (-1, 1001):
        with pytest.raises(ValueError, match="min_score"):
            read_string(LINKS, info=INFO, min_score=bad)
    with pytest.raises(ValueError, match="min_score"):
        read_string(LINKS, info=INFO, min_score=0.7)


def string_error(path, match, **kwargs):
    kwargs.setdefault("info", INFO)
    with pytest.raises(InputError, match=match) as info:
        read_string(path, **kwargs)
    assert str(info.value).startswith(str(path) + ":")
    return str(info.value)


def test_string_error_missing_files(tmp_path):
    string_error(tmp_path / "links.txt", r"links\.txt: no such file")
    with pytest.raises(InputError, match=r"info\.txt: no such file"):
        read_string(LINKS, info=tmp_path / "info.txt")


def test_string_error_links_with_tabs(tmp_path):
    path = write(tmp_path, "links.txt", [LINKS_HEADER.replace(" ", "\t"), "9606.A\t9606.B\t900"])
    string_error(path, r"links\.txt: STRING links files are space-separated; line 1 contains tabs")


def test_string_error_links_header(tmp_path):
    path = write(tmp_path, "links.txt", ["protein1 protein2 score", "9606.A 9606.B 900"])
    message = string_error(path, r"links\.txt: line 1: not a STRING v12 links header")
    assert "'protein1 protein2 combined_score'" in message and "cooccurence" in message
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    string_error(empty, r"empty\.txt: empty file")


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ("9606.C 9606.D 900 12", r"line 4: expected 3 space-separated fields .*found 4"),
        ("9606.C 9606.D", r"line 4: expected 3 .*found 2"),
        ("9606.C  9606.D 900", r"line 4: expected 3 .*found 4"),
        ("9606.C\t9606.D 900", r"line 4: expected 3 .*found 2; STRING links files are space"),
        ("9606.C 9606.D high", r"line 4: combined_score 'high' is not an integer"),
        ("9606.C 9606.D 0.9", r"line 4: combined_score '0\.9' is not an integer"),
        ("9606.C 9606.D 1200", r"line 4: combined_score 1200 is outside 0\.\.1000"),
        ("9606.C 9606.D -5", r"line 4: combined_score -5 is outside 0\.\.1000"),
        ("9606.C 9606.D 99999999999999999999", r"line 4: .* is outside 0\.\.1000"),
    ],
)
def test_string_error_links_lines(tmp_path, bad, match):
    lines = [LINKS_HEADER, "9606.A 9606.B 900", "", bad, "9606.B 9606.A 900"]
    path = write(tmp_path, "links.txt", lines)
    message = string_error(path, r"links\.txt: " + match)
    assert repr(bad) in message


def test_string_error_first_data_line_too_long(tmp_path):
    # pandas only warns (ParserWarning) for a too-long first row; it must still be an error.
    path = write(tmp_path, "links.txt", [LINKS_HEADER, "9606.A 9606.B 900 7", "9606.B 9606.A 900"])
    string_error(path, r"links\.txt: line 2: expected 3 .*found 4")


def test_string_error_detailed_channel(tmp_path):
    lines = [
        DETAILED_HEADER,
        "9606.A 9606.B 0 0 0 0 900 0 0 900",
        "9606.B 9606.A 0 0 x 0 900 0 0 900",
    ]
    path = write(tmp_path, "links.detailed.txt", lines)
    string_error(path, r"detailed\.txt: line 3: cooccurence 'x' is not an integer")
    lines[2] = "9606.B 9606.A 0 0 0 0 900 0 0"
    path = write(tmp_path, "links.detailed.txt", lines)
    string_error(path, r"detailed\.txt: line 3: expected 10 .*found 9")


def test_string_error_gzip_links_line(tmp_path):
    lines = [LINKS_HEADER, "9606.A 9606.B 900", "9606.B 9606.A nine"]
    path = tmp_path / "links.txt.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    string_error(path, r"links\.txt\.gz: line 3: combined_score 'nine' is not an integer")


@pytest.mark.parametrize("kind", ["info", "aliases"])
def test_string_error_mapping_file_headers(tmp_path, kind):
    header = INFO_HEADER if kind == "info" else ALIASES_HEADER
    row = "9606.A\tGENEA\t100\tsome protein" if kind == "info" else "9606.A\tGENEA\tEnsembl_gene"
    name = f"{kind}.txt"

    def fails(lines, match):
        path = write(tmp_path, name, lines)
        with pytest.raises(InputError, match=match) as info:
            read_string(LINKS, **{kind: path})
        assert str(info.value).startswith(str(path) + ":")
        return str(info.value)

    fails(
        [header.replace("\t", " "), row.replace("\t", " ")],
        rf"{kind}\.txt: STRING {kind} files are tab-separated, but line 1 is separated by spaces",
    )
    message = fails(["id\tname", row], rf"{kind}\.txt: line 1: not a STRING v12 {kind} header")
    assert repr(header) in message
    fails([], rf"{kind}\.txt: empty file")
    message = fails(
        [header, row, "9606.B GENEB 100 other protein"],
        rf"{kind}\.txt: line 3: expected {header.count(chr(9)) + 1} tab-separated fields .*"
        rf"found 1; STRING {kind} files are tab-separated",
    )
    assert "'9606.B GENEB 100 other protein'" in message
    fails([header, row, row + "\textra"], rf"{kind}\.txt: line 3: expected .* found")


def test_string_info_with_quotes_and_hashes_is_read_verbatim(tmp_path):
    info = write(
        tmp_path,
        "info.txt",
        [
            INFO_HEADER,
            '9606.A\tGENEA\t100\t"Quoted" name; with #hash and, commas',
            "9606.B\tGENEB\t200\t'single' quotes [...]",
        ],
    )
    links = write(tmp_path, "links.txt", [LINKS_HEADER, "9606.A 9606.B 900"])
    assert edge_dict(read_string(links, info=info)) == {("GENEA", "GENEB"): 0.9}


def test_string_empty_result(tmp_path):
    links = write(tmp_path, "links.txt", [LINKS_HEADER])
    table = read_string(links, info=INFO)
    check_invariants(table)
    assert table.report["rows"] == 0 and table.report["edges"] == 0
    assert list(table.edges.columns) == ["gene_a", "gene_b", "score", "combined_score"]


def test_string_numeric_looking_ids_stay_text(tmp_path):
    links = write(tmp_path, "links.txt", [LINKS_HEADER, "9606.10 9606.2 900", "9606.2 9606.10 900"])
    info = write(tmp_path, "info.txt", [INFO_HEADER, "9606.10\tTEN\t1\tten", "9606.2\tTWO\t1\ttwo"])
    table = read_string(links, info=info)
    assert edge_dict(table, "combined_score") == {("TEN", "TWO"): 900}
    assert table.report["unmapped_proteins"] == 0 and table.report["links"] == 1


def test_string_info_empty_cells(tmp_path):
    # An empty annotation is fine; an empty preferred_name leaves the protein unmapped.
    info = write(
        tmp_path,
        "info.txt",
        [INFO_HEADER, "9606.A\tGENEA\t100\t", "9606.B\t\t200\tno name", "9606.C\tGENEC\t1\tc"],
    )
    links = write(tmp_path, "links.txt", [LINKS_HEADER, "9606.A 9606.B 900", "9606.A 9606.C 800"])
    table = read_string(links, info=info)
    assert edge_dict(table, "combined_score") == {("GENEA", "GENEC"): 800}
    assert table.report["unmapped_proteins"] == 1 and table.report["unmapped_links"] == 1
    assert "9606.B" in table.report["summary"]


def test_hint_header_only(tmp_path):
    for header in (OLD_HEADER, NEW_HEADER):
        table = read_hint(write(tmp_path, "hint.txt", [header, ""]))
        check_invariants(table)
        assert table.report["rows"] == 0 and table.report["edges"] == 0
        assert list(table.edges.columns) == [
            "gene_a",
            "gene_b",
            "score",
            "n_evidence",
            "n_pmids",
            "methods",
        ]
