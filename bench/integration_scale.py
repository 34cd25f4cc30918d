"""Integration at scale: 100,000 query cells against 50 cell-type networks of 100,000 edges each.

A store gets 50 consensus networks over a 20,000-gene vocabulary (random edges, exclusion
probabilities from a mix of near-0 and intermediate values, as the recurrence posterior gives).
Reference (20,000 cells) and query (100,000 cells) counts come from 50 types that differ in the
means of 300 panel genes, with overlapping types so that many cells have mixed neighbourhoods.
``netinfer.integrate.integrate`` is timed end to end (normalization, PCA, kNN, posteriors, graphs,
storing the distinct graphs and the assignment), with the process's peak RSS. Targets: under 2
minutes and 4 GB.

Usage: python bench/integration_scale.py [--cells 100000] [--types 50] [--edges 100000] [--out F]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from netinfer.integrate import integrate
from netinfer.store import GraphStore

VOCABULARY = 20_000
PANEL = 300


def counts(rng, means: np.ndarray, labels: np.ndarray) -> sp.csr_matrix:
    """Poisson counts around each type's mean profile (cells of ~2,000-5,000 UMI)."""
    profile = np.exp(means[labels] + rng.normal(0.0, 0.5, size=(labels.size, means.shape[1])))
    profile /= profile.sum(axis=1, keepdims=True)
    depth = rng.uniform(2000, 5000, size=(labels.size, 1))
    return sp.csr_matrix(rng.poisson(profile * depth).astype(np.float32))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--reference", type=int, default=20_000)
    parser.add_argument("--types", type=int, default=50)
    parser.add_argument("--edges", type=int, default=100_000)
    parser.add_argument("--out", help="append the markdown report to this file")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    work = Path(tempfile.mkdtemp(prefix="netinfer-integration-"))
    try:
        genes = np.array([f"G{i:05d}" for i in range(VOCABULARY)])
        started = time.perf_counter()
        with GraphStore.create(work / "graphs.zarr") as store:
            shared = rng.choice(VOCABULARY, size=(args.edges // 2, 2))  # edges common to types
            for t in range(args.types):
                own = rng.choice(VOCABULARY, size=(args.edges - len(shared), 2))
                pairs = np.unique(np.vstack([shared, own]), axis=0)
                pairs = pairs[pairs[:, 0] != pairs[:, 1]]
                exclusion = np.where(
                    rng.random(len(pairs)) < 0.7,
                    rng.random(len(pairs)) * 1e-3,
                    rng.random(len(pairs)) * 0.5,
                )
                store.add_graph(
                    f"type{t:02d}",
                    pd.DataFrame(
                        {
                            "regulator": genes[pairs[:, 0]],
                            "target": genes[pairs[:, 1]],
                            "exclusion": exclusion,
                        }
                    ),
                    kind="consensus",
                    cell_type=f"type{t:02d}",
                )
        build_s = time.perf_counter() - started
        # 50 types in 10 families of close types: many kNN neighbourhoods mix types
        family = rng.normal(0, 1.0, size=(args.types // 5 + 1, PANEL))
        means = family[np.arange(args.types) // 5] + rng.normal(0, 0.25, size=(args.types, PANEL))
        ref_labels = rng.integers(0, args.types, size=args.reference)
        query_labels = rng.integers(0, args.types, size=args.cells)
        panel = pd.DataFrame(index=genes[:PANEL])
        reference = ad.AnnData(counts(rng, means, ref_labels), var=panel)
        reference.obs["cell_type"] = [f"type{t:02d}" for t in ref_labels]
        query = ad.AnnData(counts(rng, means, query_labels), var=panel)
        with GraphStore.open(work / "graphs.zarr", mode="a") as store:
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            started = time.perf_counter()
            result = integrate(query, reference, store, cell_type_key="cell_type", n_pcs=30)
            seconds = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        summary = result.summary
        accuracy = float(
            np.mean(
                np.asarray(result.types)[result.weights.argmax(axis=1)]
                == np.array([f"type{t:02d}" for t in query_labels])
            )
        )
        lines = [
            f"## Integration: {args.cells:,} query cells, {args.types} cell-type networks of "
            f"~{args.edges:,} edges ({VOCABULARY:,}-gene vocabulary), 1 process",
            "",
            "| step | value |",
            "|---|---:|",
            f"| integrate() wall time | {seconds:.1f} s (target < 120 s: "
            f"{'PASS' if seconds < 120 else 'FAIL'}) |",
            f"| peak RSS of the process | {peak:,.0f} MB (target < 4,096 MB: "
            f"{'PASS' if peak < 4096 else 'FAIL'}; {rss_before:,.0f} MB before the call) |",
            f"| distinct posteriors w | {summary['distinct_weights']:,} |",
            f"| distinct graphs stored | {summary['distinct_graphs']:,} |",
            f"| mean edges per cell | {summary['mean_edges_per_cell']:,.0f} |",
            f"| kNN accuracy: held-out reference / query | "
            f"{summary['knn_heldout_accuracy']:.3f} / {accuracy:.3f} |",
            f"| (building the 50 type networks, not timed above) | {build_s:.1f} s |",
        ]
        report = "\n".join(lines)
        print(report)
        if args.out:
            with open(args.out, "a") as handle:
                handle.write(report + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
