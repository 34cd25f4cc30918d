"""Consensus cell-type networks against ARACNe on all of a type's cells, on data with real signal.

Three cell types, each simulated from its own random network (``bench/celltype_scale.py``'s
``synthetic_counts``: log-normal expression, shifted regulator levels per type, Poisson UMI
counts of 2,000-10,000 per cell), 1,500 cells x 600 genes x 40 regulators per type. Scored against
each type's own truth with ``bench/simulate.py``'s rule (regulator pairs undirected).

Usage: python bench/celltype_synthetic.py [--out FILE.md]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from celltype_scale import synthetic_counts  # noqa: E402
from simulate import edge_keys, precision_recall, synthetic_grn, truth_keys  # noqa: E402

from netinfer.aracne import aracne  # noqa: E402
from netinfer.pipeline import celltype_networks, normalize  # noqa: E402

TYPES, CELLS, GENES, REGULATORS = 3, 1500, 600, 40


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="append the markdown table to this file")
    args = parser.parse_args()
    warnings.simplefilter("ignore", UserWarning)
    adata, regulators = synthetic_counts(TYPES, CELLS, GENES, REGULATORS, seed=0)
    result = celltype_networks(
        adata, regulators, cell_type_key="cell_type", min_genes=100, resamples=20, seed=0
    )
    lines = [
        f"### Synthetic cell types ({TYPES} x {CELLS} cells x {GENES} genes x {REGULATORS} "
        "regulators, each type its own network)",
        "",
        "| type | clusters | method | edges | P | R | F1 |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for t in range(TYPES):
        name = f"type{t:02d}"
        truth = truth_keys(
            synthetic_grn(GENES, CELLS, REGULATORS, seed=t, cache=False)[3], regulators
        )
        cells = adata[adata.obs["cell_type"] == name]
        whole = aracne(
            normalize(cells.X).toarray(), list(adata.var_names), regulators, resamples=20, seed=0
        ).edges
        union = pd.concat([e for (ct, _), e in result.clusters.items() if ct == name])
        n_clusters = len(result.report["cell_types"][name]["clusters"])
        for label, edges in (
            ("consensus of cluster networks", result.networks[name]),
            ("union of cluster networks", union),
            ("ARACNe on all cells of the type", whole),
        ):
            keys = edge_keys(edges, regulators)
            score = precision_recall(keys, truth)
            lines.append(
                f"| {name} | {n_clusters} | {label} | {len(keys)} | {score['precision']:.3f} | "
                f"{score['recall']:.3f} | {score['f1']:.3f} |"
            )
    report = "\n".join(lines)
    print(report)
    if args.out:
        with open(args.out, "a") as handle:
            handle.write(report + "\n")


if __name__ == "__main__":
    main()
