"""Protein-protein interaction (PPI) networks from HINT and STRING v12, keyed by gene symbol.

Both readers return a :class:`PPITable`: one row per unordered gene pair (``gene_a < gene_b``
lexicographically), a ``score`` column and source-specific columns, plus a ``report`` of what was
read, dropped and merged, for the user. Malformed files raise :class:`~netinfer.io.InputError`
with a message that starts with the file path and names the line and the problem.
"""

from __future__ import annotations

import csv
import gzip
import os
import re
import warnings
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from netinfer.io import InputError, _open_text, _require_file, header_matches

__all__ = [
    "HINT_HEADERS",
    "STRING_ALIAS_SOURCES",
    "PPITable",
    "read_hint",
    "read_string",
    "restrict_to_genes",
]

# The 10-character UniProt accession format (e.g. A0A087WVQ6). Unlike the 6-character one it
# collides with no gene symbol (P2RY12 and H2BC12 are valid 6-character accessions).
LONG_UNIPROT_ACCESSION = re.compile(r"[A-NR-Z][0-9](?:[A-Z][A-Z0-9]{2}[0-9]){2}")

# The two generations of HINT download headers, by the label reported as ``generation``.
HINT_HEADERS: dict[str, tuple[str, ...]] = {
    "2017": (
        "Uniprot_A",
        "Uniprot_B",
        "Gene_A",
        "Gene_B",
        "ORF_A",
        "ORF_B",
        "Alias_A",
        "Alias_B",
        "pmid:method:quality",
    ),
    "2024": (
        "Uniprot_A",
        "Uniprot_B",
        "Gene_A",
        "Gene_B",
        "pmid:method:quality:type",
        "taxid",
        "high_quality",
        "in_pdb_source",
        "PDB_IDs",
    ),
}

# STRING alias sources that hold gene symbols, most preferred first. A protein gets the alias of
# the first source in this list that it has; among several aliases of that source, the first in
# file order. Other sources (UniProt_AC, Ensembl_HGNC_entrez_id, KEGG_NAME, ...) hold accessions,
# numbers or non-HGNC names and are never used.
STRING_ALIAS_SOURCES: tuple[str, ...] = (
    "Ensembl_HGNC_symbol",
    "Ensembl_HGNC",
    "BioMart_HUGO",
    "Ensembl_gene",
    "UniProt_GN_Name",
)

_STRING_CHANNELS = (
    "neighborhood",
    "fusion",
    "cooccurence",  # sic: STRING's own spelling
    "coexpression",
    "experimental",
    "database",
    "textmining",
)
_STRING_LINKS_HEADERS: dict[str, tuple[str, ...]] = {
    "links": ("protein1", "protein2", "combined_score"),
    "detailed": ("protein1", "protein2", *_STRING_CHANNELS, "combined_score"),
}
_STRING_INFO_HEADER = ("#string_protein_id", "preferred_name", "protein_size", "annotation")
_STRING_ALIASES_HEADER = ("#string_protein_id", "alias", "source")
_MAX_STRING_SCORE = 1000
_N_EXAMPLES = 3
_MAX_SHOWN = 200
_READ_ERRORS = (UnicodeDecodeError, EOFError, gzip.BadGzipFile, zlib.error)
_INT_TEXT = re.compile(r"[+-]?[0-9]+")


@dataclass(frozen=True, eq=False)
class PPITable:
    """A protein-protein interaction network between gene symbols.

    Attributes
    ----------
    edges
        One row per unordered gene pair, never a self-loop: columns ``gene_a`` and ``gene_b``
        (str, ``gene_a < gene_b`` lexicographically), ``score`` (float64) and source-specific
        columns (see :func:`read_hint` and :func:`read_string`). Sorted by ``gene_a``, ``gene_b``.
    report
        Counts for the user, JSON-serializable (int, float or str values), with a one-paragraph
        human-readable ``summary``.
    sources
        The input file paths, as given.
    """

    edges: pd.DataFrame
    report: dict
    sources: list[str]


# --------------------------------------------------------------------------------------------
# HINT


def read_hint(path: str | os.PathLike[str], *, genes: Iterable[str] | None = None) -> PPITable:
    """Read a HINT (High-quality INTeractomes) file, e.g. ``HomoSapiens_binary_hq.txt``.

    Both header generations are recognised (see :data:`HINT_HEADERS`): the older one with
    ``ORF_A``/``Alias_A`` columns and ``pmid:method:quality`` evidence (reported as generation
    ``"2017"``) and the 2024 one with ``pmid:method:quality:type`` evidence and ``taxid``/PDB
    columns (``"2024"``). Evidence entries are separated by ``|``, their fields by ``:``.

    Rows are dropped when a gene field holds no symbol: empty, equal to the row's UniProt
    accession (HINT's placeholder where no symbol is known), or a 10-character accession such as
    A0A087WVQ6. The 6-character accession format is not tested: real symbols such as P2RY12 or
    H2BC12 match it. Then self-loops. Rows of the same unordered gene pair (in either order,
    e.g. from two isoforms) are merged, their evidence unioned.

    Parameters
    ----------
    path
        Tab-separated HINT file with its header line, optionally gzipped (``.gz``).
    genes
        If given, keep only pairs with both genes in it (see :func:`restrict_to_genes`).

    Returns
    -------
    PPITable
        Edge columns ``gene_a``, ``gene_b``, ``score``, ``n_evidence`` (distinct evidence
        entries), ``n_pmids`` (distinct PubMed ids) and ``methods`` (sorted distinct PSI-MI
        method codes, comma-joined). ``score`` is ``n_pmids`` as float: the number of
        independent publications reporting the pair. Report keys: ``generation``, ``rows``
        (non-blank data lines), ``uniprot_only_rows``, ``self_loops``, ``duplicate_rows`` (rows
        merged into an earlier row of the same pair), ``edges``, ``genes``, ``summary``.

    Raises
    ------
    InputError
        If the file is missing, empty, not UTF-8 text, space- rather than tab-separated, has a
        header of neither generation, a line with the wrong number of fields or a malformed
        evidence entry. The message starts with ``path``.
    """
    source = os.fspath(path)
    _require_file(source)
    try:
        generation, counts, pairs = _parse_hint(source)
    except _READ_ERRORS as exc:
        raise InputError(f"{source}: cannot read as UTF-8 text ({exc})") from None

    keys = sorted(pairs)
    evidence = [pairs[k] for k in keys]
    n_pmids = np.array([len({e[0] for e in ev}) for ev in evidence], dtype=np.int64)
    edges = pd.DataFrame(
        {
            "gene_a": pd.Series([k[0] for k in keys], dtype=object),
            "gene_b": pd.Series([k[1] for k in keys], dtype=object),
            "score": n_pmids.astype(np.float64),
            "n_evidence": np.array([len(ev) for ev in evidence], dtype=np.int64),
            "n_pmids": n_pmids,
            "methods": pd.Series(
                [",".join(sorted({e[1] for e in ev if e[1]})) for ev in evidence], dtype=object
            ),
        }
    )
    n_genes = _n_genes(edges)
    report: dict = {"generation": generation, **counts, "edges": len(edges), "genes": n_genes}
    dropped = []
    if counts["uniprot_only_rows"]:
        dropped.append(
            f"{_plural(counts['uniprot_only_rows'], 'row')} whose Gene_A or Gene_B is a UniProt "
            "accession (no gene symbol known)"
        )
    if counts["self_loops"]:
        dropped.append(_plural(counts["self_loops"], "self-loop"))
    summary = (
        f"HINT {generation} file {Path(source).name}: {_plural(counts['rows'], 'row')} -> "
        f"{_plural(len(edges), 'edge')} between {_plural(n_genes, 'gene')}; "
        "score = number of distinct PubMed ids"
    )
    if dropped:
        summary += "; dropped " + " and ".join(dropped)
    if counts["duplicate_rows"]:
        summary += (
            f"; merged {_plural(counts['duplicate_rows'], 'duplicate row')} "
            "(same gene pair, evidence unioned)"
        )
    report["summary"] = summary + "."
    table = PPITable(edges=edges, report=report, sources=[source])
    return table if genes is None else restrict_to_genes(table, genes)


def _parse_hint(source: str) -> tuple[str, dict[str, int], dict[tuple[str, str], set[tuple]]]:
    """Parse a HINT file line by line; return (generation, counts, pair -> evidence set)."""
    with _open_text(source) as fh:
        header_line = fh.readline()
        generation = _hint_generation(source, header_line, fh)
        columns = HINT_HEADERS[generation]
        n_fields = len(columns)
        ev_col = next(i for i, c in enumerate(columns) if c.startswith("pmid:"))
        n_ev_fields = columns[ev_col].count(":") + 1
        counts = {"rows": 0, "uniprot_only_rows": 0, "self_loops": 0, "duplicate_rows": 0}
        pairs: dict[tuple[str, str], set[tuple]] = {}
        for lineno, raw in enumerate(fh, 2):
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            counts["rows"] += 1
            fields = line.split("\t")
            if len(fields) != n_fields:
                hint = (
                    "; HINT files are tab-separated, this line has none"
                    if "\t" not in line and " " in line
                    else ""
                )
                raise InputError(
                    f"{source}: line {lineno}: expected {n_fields} tab-separated fields "
                    f"({' '.join(columns)}), found {len(fields)}{hint}: {_show(line)}"
                )
            evidence = _hint_evidence(
                source, lineno, line, fields[ev_col], n_ev_fields, columns[ev_col]
            )
            acc_a, acc_b, gene_a, gene_b = (f.strip() for f in fields[:4])
            if _no_symbol(gene_a, acc_a) or _no_symbol(gene_b, acc_b):
                counts["uniprot_only_rows"] += 1
                continue
            if gene_a == gene_b:
                counts["self_loops"] += 1
                continue
            key = (gene_a, gene_b) if gene_a < gene_b else (gene_b, gene_a)
            known = pairs.get(key)
            if known is None:
                pairs[key] = evidence
            else:
                counts["duplicate_rows"] += 1
                known |= evidence
    return generation, counts, pairs


def _hint_generation(source: str, header_line: str, fh) -> str:
    header = header_line.rstrip("\r\n")
    expected = "; ".join(
        f"{gen} style: {' '.join(cols)!r} (tab-separated)" for gen, cols in HINT_HEADERS.items()
    )
    if not header.strip():
        if not header_line or not any(line.strip() for line in fh):
            raise InputError(f"{source}: empty file; expected a HINT header line ({expected})")
        raise InputError(f"{source}: line 1 is blank; expected a HINT header line ({expected})")
    fields = tuple(f.strip() for f in header.split("\t"))
    for generation, columns in HINT_HEADERS.items():
        if header_matches(fields, columns):
            return generation
    if "\t" not in header and tuple(header.split()) in HINT_HEADERS.values():
        raise InputError(
            f"{source}: line 1: HINT files are tab-separated, but the header is separated by "
            f"spaces: {_show(header)}"
        )
    raise InputError(
        f"{source}: line 1: not a HINT header; found {len(fields)} columns {list(fields)!r}, "
        f"expected one of: {expected}"
    )


def _hint_evidence(
    source: str, lineno: int, line: str, text: str, n_fields: int, column: str
) -> set[tuple]:
    """Parse one evidence cell into a set of (pmid as int, method, quality[, type]) tuples."""
    evidence = set()
    for entry in text.split("|"):
        parts: list = entry.strip().split(":")
        pmid = parts[0]
        if len(parts) != n_fields or not (pmid.isdigit() and pmid.isascii()):
            problem = (
                f"{len(parts)} ':'-separated fields instead of {n_fields}"
                if len(parts) != n_fields
                else f"PubMed id {pmid!r} is not a number"
            )
            raise InputError(
                f"{source}: line {lineno}: malformed evidence entry {entry!r} in column "
                f"{column!r} ({problem}): {_show(line)}"
            )
        parts[0] = int(pmid)
        evidence.add(tuple(parts))
    return evidence


def _no_symbol(gene: str, accession: str) -> bool:
    return not gene or gene == accession or LONG_UNIPROT_ACCESSION.fullmatch(gene) is not None


# --------------------------------------------------------------------------------------------
# STRING


def read_string(
    links: str | os.PathLike[str],
    *,
    info: str | os.PathLike[str] | None = None,
    aliases: str | os.PathLike[str] | None = None,
    min_score: int = 700,
    genes: Iterable[str] | None = None,
) -> PPITable:
    """Read a STRING v12 links file and map its protein ids to gene symbols.

    A *link* below is an unordered protein pair. STRING lists most links in both orders; the
    two rows are merged, keeping the higher ``combined_score`` (and that row's channel scores)
    if they disagree. Then, in this order: links with ``combined_score < min_score`` are
    dropped; links with a protein that has no symbol are dropped; links whose two proteins map
    to the same gene are dropped (self-loops); links that map to the same gene pair are merged,
    keeping the one with the highest ``combined_score``.

    Symbols come from ``info`` (``preferred_name``, unless it is empty or just the protein id)
    and, for proteins still without one, from ``aliases`` (the first source of
    :data:`STRING_ALIAS_SOURCES` the protein has).

    Parameters
    ----------
    links
        ``9606.protein.links.v12.0.txt`` (``protein1 protein2 combined_score``) or
        ``9606.protein.links.detailed.v12.0.txt`` (with the seven channel scores),
        space-separated with a header line, optionally gzipped.
    info
        ``9606.protein.info.v12.0.txt``, tab-separated, optionally gzipped.
    aliases
        ``9606.protein.aliases.v12.0.txt``, tab-separated, optionally gzipped.
    min_score
        Smallest ``combined_score`` kept, 0..1000 (STRING: 400 medium, 700 high, 900 highest
        confidence).
    genes
        If given, keep only pairs with both genes in it (see :func:`restrict_to_genes`).

    Returns
    -------
    PPITable
        Edge columns ``gene_a``, ``gene_b``, ``score`` (``combined_score / 1000``),
        ``combined_score`` (int64) and, for the detailed file, the seven channel columns
        (int64, STRING's names). Report keys: ``format`` (``"links"`` or ``"detailed"``),
        ``rows`` (data lines), ``links`` (distinct unordered protein pairs),
        ``asymmetric_pairs`` (links whose two rows disagree on ``combined_score``),
        ``min_score``, ``below_min_score`` (links dropped), ``proteins`` (distinct protein ids
        in the links file), ``mapped_by_info``, ``mapped_by_aliases`` (of those proteins),
        ``unmapped_proteins`` and ``unmapped_links`` (among links passing ``min_score``),
        ``self_loops``, ``merged_after_mapping``, ``edges``, ``genes``, ``summary``.

    Raises
    ------
    ValueError
        If neither ``info`` nor ``aliases`` is given, or ``min_score`` is not in 0..1000.
    InputError
        If a file is missing, not UTF-8 text, has the wrong separator or header, a line with the
        wrong number of fields, or a score that is not an integer in 0..1000. The message
        starts with the file's path and names the line.
    """
    if info is None and aliases is None:
        raise ValueError(
            "read_string needs info (protein.info) or aliases (protein.aliases) to map STRING "
            "protein ids to gene symbols"
        )
    if isinstance(min_score, bool) or not isinstance(min_score, (int, np.integer)):
        raise ValueError(f"min_score must be an integer in 0..1000, got {min_score!r}")
    if not 0 <= min_score <= _MAX_STRING_SCORE:
        raise ValueError(f"min_score must be in 0..1000, got {min_score}")
    min_score = int(min_score)
    links_source = os.fspath(links)
    info_source = os.fspath(info) if info is not None else None
    aliases_source = os.fspath(aliases) if aliases is not None else None
    sources = [s for s in (links_source, info_source, aliases_source) if s is not None]
    for s in sources:
        _require_file(s)

    fmt, df = _read_string_links(links_source)
    score_cols = [c for c in _STRING_LINKS_HEADERS[fmt] if c not in ("protein1", "protein2")]
    n_rows = len(df)

    # One shared integer code per protein id, for both columns.
    p1, p2 = df.pop("protein1"), df.pop("protein2")
    proteins = pd.Index(p1.cat.categories).union(pd.Index(p2.cat.categories))
    c1 = proteins.get_indexer(p1.cat.categories)[p1.cat.codes.to_numpy()]
    c2 = proteins.get_indexer(p2.cat.categories)[p2.cat.codes.to_numpy()]
    del p1, p2
    combined = df["combined_score"].to_numpy()

    # Merge the two orders of each link, keeping the row with the higher combined_score.
    lo, hi = np.minimum(c1, c2).astype(np.int64), np.maximum(c1, c2).astype(np.int64)
    rows, group_min = _best_per_key(lo * len(proteins) + hi, combined)
    asymmetric = int(np.count_nonzero(combined[rows] != group_min))
    n_links = len(rows)
    passing = combined[rows] >= min_score
    below = int(n_links - np.count_nonzero(passing))
    rows = rows[passing]

    # Protein id -> symbol.
    symbols = np.full(len(proteins), None, dtype=object)
    has_symbol = np.zeros(len(proteins), dtype=bool)
    mapped_by = {}
    for key, src, reader in (
        ("mapped_by_info", info_source, _read_string_info),
        ("mapped_by_aliases", aliases_source, _read_string_aliases),
    ):
        fill = np.zeros(len(proteins), dtype=bool)
        if src is not None:
            found = pd.Series(proteins, dtype=object).map(reader(src)).to_numpy(dtype=object)
            fill = ~has_symbol & pd.notna(found)
            symbols[fill] = found[fill]
            has_symbol |= fill
        mapped_by[key] = int(np.count_nonzero(fill))
    # sort=True: symbol codes order like the symbols themselves, so min/max give gene_a/gene_b.
    sym_codes, sym_names = pd.factorize(symbols[has_symbol], sort=True)
    code_of = np.full(len(proteins), -1, dtype=np.int64)
    code_of[has_symbol] = sym_codes

    sa, sb = code_of[lo[rows]], code_of[hi[rows]]
    unmapped = (sa < 0) | (sb < 0)
    unmapped_ids = np.unique(np.concatenate([lo[rows][sa < 0], hi[rows][sb < 0]]))
    keep = ~unmapped & (sa != sb)
    n_self = int(np.count_nonzero(~unmapped & (sa == sb)))
    rows, sa, sb = rows[keep], sa[keep], sb[keep]
    ga, gb = np.minimum(sa, sb), np.maximum(sa, sb)
    best, _ = _best_per_key(ga * max(len(sym_names), 1) + gb, combined[rows])
    merged = len(rows) - len(best)
    rows, ga, gb = rows[best], ga[best], gb[best]

    names = np.asarray(sym_names, dtype=object)
    edges = pd.DataFrame(
        {
            "gene_a": pd.Series(names[ga], dtype=object),
            "gene_b": pd.Series(names[gb], dtype=object),
            "score": combined[rows].astype(np.float64) / _MAX_STRING_SCORE,
            "combined_score": combined[rows].astype(np.int64),
        }
    )
    for c in score_cols[:-1]:
        edges[c] = df[c].to_numpy()[rows].astype(np.int64)
    n_genes = _n_genes(edges)
    report: dict = {
        "format": fmt,
        "rows": n_rows,
        "links": n_links,
        "asymmetric_pairs": asymmetric,
        "min_score": min_score,
        "below_min_score": below,
        "proteins": len(proteins),
        **mapped_by,
        "unmapped_proteins": len(unmapped_ids),
        "unmapped_links": int(np.count_nonzero(unmapped)),
        "self_loops": n_self,
        "merged_after_mapping": int(merged),
        "edges": len(edges),
        "genes": n_genes,
    }
    summary = (
        f"STRING v12 {fmt} file {Path(links_source).name}: {_plural(n_rows, 'row')}, "
        f"{_plural(n_links, 'protein pair')}; {below} with combined_score < {min_score} dropped"
    )
    if asymmetric:
        summary += (
            f"; {_plural(asymmetric, 'pair')} listed with different scores in the two orders "
            "(kept the higher)"
        )
    if len(unmapped_ids):
        summary += (
            f"; {_plural(len(unmapped_ids), 'protein id')} without a gene symbol in "
            f"{' or '.join(Path(s).name for s in sources[1:])} (e.g. "
            f"{_examples(proteins[unmapped_ids])}): {_plural(report['unmapped_links'], 'link')} "
            "dropped"
        )
    if n_self:
        summary += f"; {_plural(n_self, 'self-loop')} after mapping to genes dropped"
    if merged:
        summary += (
            f"; {_plural(int(merged), 'link')} merged into another with the same gene pair "
            "(kept the highest score)"
        )
    summary += (
        f" -> {_plural(len(edges), 'edge')} between {_plural(n_genes, 'gene')}; "
        "score = combined_score / 1000."
    )
    report["summary"] = summary
    table = PPITable(edges=edges, report=report, sources=sources)
    return table if genes is None else restrict_to_genes(table, genes)


def _best_per_key(keys: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per distinct key, the index of its highest-scoring element (earliest on ties) and the
    key's lowest score; both in increasing key order. Scores must be in 0..1000."""
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=scores.dtype)
    # One stable int64 sort by (key, -score): about twice as fast as np.lexsort.
    order = np.argsort(keys * 1024 + (_MAX_STRING_SCORE - scores), kind="stable")
    sorted_keys = keys[order]
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    return order[starts], np.minimum.reduceat(scores[order], starts)


def _read_string_links(source: str) -> tuple[str, pd.DataFrame]:
    """Read a links file; return its format and the table (categorical protein columns)."""
    try:
        with _open_text(source) as fh:
            header = fh.readline().rstrip("\r\n")
        if not header.strip():
            raise InputError(
                f"{source}: empty file or blank line 1; expected a STRING links header "
                f"({_expected_links()})"
            )
        if "\t" in header:
            raise InputError(
                f"{source}: STRING links files are space-separated; line 1 contains tabs: "
                f"{_show(header)}"
            )
        fields = tuple(header.rstrip().split(" "))
        fmt = next(
            (f for f, cols in _STRING_LINKS_HEADERS.items() if header_matches(fields, cols)), None
        )
        if fmt is None:
            raise InputError(
                f"{source}: line 1: not a STRING v12 links header; found {list(fields)!r}, "
                f"expected {_expected_links()}"
            )
        columns = _STRING_LINKS_HEADERS[fmt]
        # read_csv keeps categories as text ('9606.10' stays a string), and categories save
        # memory: ~20k distinct ids in 13M lines.
        dtype = {c: "category" if c.startswith("protein") else np.int64 for c in columns}
        df = _read_table(source, " ", columns, dtype)
        if df is not None:
            scores = df[list(columns[2:])].to_numpy()
            if ((scores < 0) | (scores > _MAX_STRING_SCORE)).any():
                df = None
        if df is None:
            _scan_links(source, columns)  # raises for the first bad line
            raise InputError(f"{source}: cannot parse as a space-separated STRING links table")
    except _READ_ERRORS as exc:
        raise InputError(f"{source}: cannot read as UTF-8 text ({exc})") from None
    return fmt, df


def _data_lines(source: str):
    """(line number, text) of the non-blank lines after the header (for locating errors)."""
    with _open_text(source) as fh:
        next(fh)
        for lineno, raw in enumerate(fh, 2):
            line = raw.rstrip("\r\n")
            if line:
                yield lineno, line


def _scan_links(source: str, columns: tuple[str, ...]) -> None:
    """Raise for the first malformed data line of a links file (only called on failure)."""
    n = len(columns)
    for lineno, line in _data_lines(source):
        fields = line.rstrip(" ").split(" ")
        if len(fields) != n:
            hint = "; STRING links files are space-separated" if "\t" in line else ""
            raise InputError(
                f"{source}: line {lineno}: expected {n} space-separated fields "
                f"({' '.join(columns)}), found {len(fields)}{hint}: {_show(line)}"
            )
        if not all(fields[:2]):
            raise InputError(f"{source}: line {lineno}: empty protein id: {_show(line)}")
        for name, value in zip(columns[2:], fields[2:]):
            if not _INT_TEXT.fullmatch(value):
                raise InputError(
                    f"{source}: line {lineno}: {name} {value!r} is not an integer: {_show(line)}"
                )
            if not 0 <= int(value) <= _MAX_STRING_SCORE:
                raise InputError(
                    f"{source}: line {lineno}: {name} {value} is outside 0..1000: {_show(line)}"
                )


def _read_string_info(source: str) -> dict[str, str]:
    """Protein id -> preferred_name, skipping names that are empty or just the protein id."""
    df = _read_string_tsv(source, _STRING_INFO_HEADER, "info")
    ids, names = df.iloc[:, 0].str.strip(), df["preferred_name"].str.strip()
    bare_ids = ids.str.split(".", n=1).str[-1]
    usable = (names != "") & (names != ids) & (names != bare_ids)
    found = pd.Series(names[usable].to_numpy(), index=ids[usable].to_numpy())
    return found[~found.index.duplicated()].to_dict()


def _read_string_aliases(source: str) -> dict[str, str]:
    """Protein id -> symbol from the most preferred of :data:`STRING_ALIAS_SOURCES`."""
    df = _read_string_tsv(source, _STRING_ALIASES_HEADER, "aliases")
    rank = df["source"].str.strip().map({s: i for i, s in enumerate(STRING_ALIAS_SOURCES)})
    alias = df["alias"].str.strip()
    df = pd.DataFrame({"id": df.iloc[:, 0].str.strip(), "alias": alias, "rank": rank})
    df = df[df["rank"].notna() & (alias != "")]
    # A stable sort keeps file order among aliases of the same source.
    df = df.sort_values("rank", kind="stable").drop_duplicates("id")
    return dict(zip(df["id"], df["alias"]))


def _read_string_tsv(source: str, columns: tuple[str, ...], what: str) -> pd.DataFrame:
    try:
        with _open_text(source) as fh:
            header = fh.readline().rstrip("\r\n")
        expected = "\t".join(columns)
        if not header.strip():
            raise InputError(
                f"{source}: empty file or blank line 1; expected the STRING {what} header "
                f"{expected!r}"
            )
        fields = tuple(f.strip() for f in header.split("\t"))
        if not header_matches(fields, columns):
            if "\t" not in header and tuple(header.split()) == columns:
                raise InputError(
                    f"{source}: STRING {what} files are tab-separated, but line 1 is separated "
                    f"by spaces: {_show(header)}"
                )
            raise InputError(
                f"{source}: line 1: not a STRING v12 {what} header; found {list(fields)!r}, "
                f"expected {expected!r} (tab-separated)"
            )
        df = _read_table(source, "\t", columns, dict.fromkeys(columns, str))
        # pandas pads short rows with '': empty cells may hide a line with too few fields.
        if df is None or (df == "").to_numpy().any():
            _scan_tsv(source, columns, what)  # raises for lines with the wrong number of fields
            if df is None:
                raise InputError(f"{source}: cannot parse as a tab-separated STRING {what} table")
    except _READ_ERRORS as exc:
        raise InputError(f"{source}: cannot read as UTF-8 text ({exc})") from None
    return df


def _scan_tsv(source: str, columns: tuple[str, ...], what: str) -> None:
    """Raise for the first line of a tab-separated STRING file with the wrong field count."""
    n = len(columns)
    for lineno, line in _data_lines(source):
        found = line.count("\t") + 1
        if found != n:
            hint = (
                f"; STRING {what} files are tab-separated, this line has spaces instead"
                if "\t" not in line and " " in line
                else ""
            )
            raise InputError(
                f"{source}: line {lineno}: expected {n} tab-separated fields "
                f"({' '.join(columns)}), found {found}{hint}: {_show(line)}"
            )


def _read_table(
    source: str, sep: str, columns: tuple[str, ...], dtype: dict
) -> pd.DataFrame | None:
    """Bulk-read a delimited file after its header with pandas' C parser; None if it fails."""
    try:
        with warnings.catch_warnings():
            # A first row with too many fields only warns; treat it as a failure.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(
                source,
                sep=sep,
                header=None,
                skiprows=1,
                names=list(columns),
                index_col=False,
                dtype=dtype,
                na_filter=False,
                quoting=csv.QUOTE_NONE,
                engine="c",
                encoding="utf-8",
                compression="gzip" if source.lower().endswith(".gz") else None,
            )
    except UnicodeDecodeError:
        raise
    except (ValueError, OverflowError, pd.errors.ParserWarning):
        return None  # ParserError is a ValueError


def _expected_links() -> str:
    return " or ".join(repr(" ".join(c)) for c in _STRING_LINKS_HEADERS.values())


# --------------------------------------------------------------------------------------------
# Shared


def restrict_to_genes(table: PPITable, genes: Iterable[str]) -> PPITable:
    """Keep only the edges with both genes in ``genes``.

    Parameters
    ----------
    table
        A table from :func:`read_hint` or :func:`read_string`.
    genes
        Gene symbols, e.g. the genes of an expression data set (converted with ``str``).

    Returns
    -------
    PPITable
        A new table with the kept edges. Its report adds ``genes_given`` (distinct genes in
        ``genes``), ``ppi_genes`` (distinct genes in ``table``), ``genes_overlap`` (how many of
        those are in ``genes``), ``edges_before_restriction`` and ``edges_kept``; ``edges`` and
        ``genes`` are updated to the kept edges, and the ``summary`` gets one more sentence.

    Raises
    ------
    TypeError
        If ``genes`` is a single string.
    """
    if isinstance(genes, (str, bytes)):
        raise TypeError("genes must be an iterable of gene symbols, not a single string")
    given = pd.Index(pd.unique(pd.Series([str(g) for g in genes], dtype=object)))
    edges = table.edges
    ppi_genes = pd.Index(pd.unique(pd.concat([edges["gene_a"], edges["gene_b"]])))
    overlap = int(ppi_genes.isin(given).sum())
    keep = edges["gene_a"].isin(given) & edges["gene_b"].isin(given)
    kept = edges[keep.to_numpy()].reset_index(drop=True)
    n_genes = _n_genes(kept)
    report = dict(table.report)
    report.update(
        genes_given=len(given),
        ppi_genes=len(ppi_genes),
        genes_overlap=overlap,
        edges_before_restriction=len(edges),
        edges_kept=len(kept),
        edges=len(kept),
        genes=n_genes,
    )
    sentence = (
        f"Restricted to the {_plural(len(given), 'given gene')}: {overlap} of the "
        f"{len(ppi_genes)} PPI genes are among them; kept {len(kept)} of {len(edges)} edges "
        f"(between {_plural(n_genes, 'gene')})."
    )
    if overlap == 0 and len(given) and len(ppi_genes):
        sentence += (
            f" No PPI gene is among the given genes (given e.g. {_examples(given)}; PPI e.g. "
            f"{_examples(ppi_genes)}): do both use gene symbols?"
        )
    report["summary"] = f"{report.get('summary', '')} {sentence}".strip()
    return PPITable(edges=kept, report=report, sources=list(table.sources))


def _n_genes(edges: pd.DataFrame) -> int:
    return len(pd.unique(pd.concat([edges["gene_a"], edges["gene_b"]])))


def _show(line: str) -> str:
    return repr(line[:_MAX_SHOWN] + ("..." if len(line) > _MAX_SHOWN else ""))


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _examples(values: Iterable) -> str:
    values = list(values)
    shown = ", ".join(str(v) for v in values[:_N_EXAMPLES])
    return shown + (", ..." if len(values) > _N_EXAMPLES else "")
