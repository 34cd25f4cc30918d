"""The ``netinfer`` command: argument parsing, progress and summaries; the work is library calls."""

from __future__ import annotations

import argparse
import sys
import time
import warnings

from rich.console import Console
from rich.table import Table

RESAMPLING_HELP = """\
resampling (default: 100 subsamples of 63.2%% of the samples, without replacement):
  subsampling has no duplicated samples, so the null model for the subsample size is exact;
  bootstrap duplicates look like dependence to the adaptive partitioning and need a much
  higher MI threshold for the same p-value (netinfer accounts for this; ARACNe-AP does not).
"""


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
        description="Infer a regulator -> target network with ARACNe: adaptive-partitioning "
        "mutual information on ranks, a threshold from a null model, DPI pruning, and "
        "consolidation of resampled networks.",
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
        required=True,
        metavar="PATH",
        help="network file to write (written atomically; .gz compresses)",
    )
    run.add_argument("--layer", metavar="L", help="AnnData layer to use instead of X")
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
        default=0.632,
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
        default="dpi",
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
        choices=["poisson", "binomial"],
        default="poisson",
        help="test of edge counts over resamples: poisson (ARACNe-AP) or binomial "
        "against the estimated false-positive rate (ARACNe3) (default: poisson)",
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
        default="aracne-ap",
        help="smallest cell tested for a split: 3 points (aracne-ap) or 4 (aracne3) "
        "(default: aracne-ap)",
    )
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
    return parser


def _aracne(args: argparse.Namespace, console: Console) -> None:
    from netinfer import distributed
    from netinfer.aracne import aracne
    from netinfer.io import read_expression, read_regulators, write_aracne3, write_aracne_ap

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
            resamples=args.resamples,
            resampling="bootstrap" if args.bootstrap else "subsample",
            subsample_fraction=args.subsample,
            pvalue=args.pvalue,
            fdr=args.fdr,
            pruning=args.pruning,
            dpi_tolerance=args.dpi_tolerance,
            consolidation=args.consolidation,
            consolidation_pvalue=args.consolidation_pvalue,
            leaf_rule=args.leaf_rule,
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
    write = write_aracne3 if args.format == "aracne3" else write_aracne_ap
    write(result.edges, args.output)
    if not args.quiet:
        console.print(_summary_table(result.summary, args))


def _summary_table(summary: dict, args: argparse.Namespace) -> Table:
    per_resample = summary["edges_per_resample"]
    if len(per_resample) > 1:
        mean = sum(per_resample) / len(per_resample)
        spread = f"{min(per_resample)}-{max(per_resample)} (mean {mean:.0f})"
    else:
        spread = str(per_resample[0])
    threshold = (
        f"FDR {args.fdr or 0.05} (Benjamini-Hochberg, per resample)"
        if summary["threshold"] is None
        else f"MI > {summary['threshold']:.4f} nats (null p = {args.pvalue:g})"
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
        ("threshold", threshold),
        ("edges per resample", spread),
        ("final edges", f"{summary['final_edges']:,}"),
        ("time", f"{summary['seconds']:.1f} s"),
        ("output", str(args.output)),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``netinfer`` console script."""
    args = _parser().parse_args(argv)
    console = Console(stderr=True)
    from netinfer.io import InputError

    started = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = lambda message, *rest: console.print(
                f"[yellow]warning:[/yellow] {message}", highlight=False
            )
            if args.command == "aracne":
                _aracne(args, console)
            else:
                from netinfer.datasets import write_example

                h5ad, tfs = write_example(args.directory)
                console.print(f"wrote {h5ad} and {tfs} in {time.perf_counter() - started:.1f} s")
    except (InputError, FileNotFoundError, ValueError) as error:
        console.print(f"[red]error:[/red] {error}", highlight=False)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
