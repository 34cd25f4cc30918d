"""Graph store speed: per-cell subgraph extraction, and writing/opening a store of many graphs.

Extraction: cells of ~2,000 genes drawn from a 20,000-gene graph with 1,000,000 edges, on one
core, through ``GraphStore.subgraph`` (directed, and the symmetrized view). The reference, timed in
the same run on the same cells, is the obvious SciPy way: ``A[cell][:, cell].tocoo()``. Target:
at least 5,000 cells per second (the trainer needs about 1,000 per second per GPU).

Store: time to write N such graphs (default 100) into a new store, to open it, to list it, and to
read one graph back; the size on disk.

Usage: python bench/store_speed.py [--graphs N] [--cells N] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
import pandas as pd
import scipy.sparse as sp

from netinfer.store import GraphStore

N_GENES = 20_000
N_EDGES = 1_000_000
CELL_GENES = 2_000


def random_graph(rng: np.random.Generator) -> tuple[sp.csr_matrix, list[str]]:
    """A random directed graph: 1M edges among 20k genes, weights in (0, 1)."""
    pairs = np.unique(rng.integers(0, N_GENES, size=(int(N_EDGES * 1.01), 2)), axis=0)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]][:N_EDGES]
    matrix = sp.csr_matrix(
        (rng.random(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(N_GENES, N_GENES)
    )
    return matrix, [f"GENE{i:05d}" for i in range(N_GENES)]


def cells_per_second(extract, cells) -> float:
    extract(cells[0])  # compile / warm caches
    started = time.perf_counter()
    for cell in cells:
        extract(cell)
    return len(cells) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graphs", type=int, default=100)
    parser.add_argument("--cells", type=int, default=5_000)
    parser.add_argument("--out", help="append the markdown report to this file")
    args = parser.parse_args()
    numba.set_num_threads(1)
    rng = np.random.default_rng(0)
    matrix, genes = random_graph(rng)
    cells = [
        np.sort(rng.choice(N_GENES, size=CELL_GENES, replace=False)) for _ in range(args.cells)
    ]
    workdir = Path(tempfile.mkdtemp(prefix="netinfer-store-bench-"))
    lines = [
        f"## Graph store: {N_GENES:,} genes, {matrix.nnz:,} edges per graph, cells of "
        f"{CELL_GENES:,} genes, 1 core",
        "",
    ]
    try:
        started = time.perf_counter()
        with GraphStore.create(workdir / "graphs.zarr") as store:
            store.add_graph("g0", matrix, genes=genes, kind="grn")
            first_write = time.perf_counter() - started
            store.get("g0")  # load once, as a trainer does
            store.get("g0", symmetrize=True)
            dense_ref = matrix
            sym_ref = matrix.maximum(matrix.T).tocsr()
            rows = []
            for label, ours, ref in (
                ("directed, weights", lambda c: store.subgraph("g0", c), dense_ref),
                (
                    "directed, structure",
                    lambda c: store.subgraph("g0", c, weights=False),
                    dense_ref,
                ),
                (
                    "symmetrized, structure",
                    lambda c: store.subgraph("g0", c, symmetrize=True, weights=False),
                    sym_ref,
                ),
            ):
                ours_rate = cells_per_second(ours, cells)
                ref_rate = cells_per_second(lambda c, m=ref: m[c][:, c].tocoo(), cells[:500])
                edges = np.mean([ours(c)[0].size for c in cells[:200]])
                rows.append(
                    f"| {label} | {edges:,.0f} | {ours_rate:,.0f} | {ref_rate:,.0f} | "
                    f"{ours_rate / ref_rate:.1f}x | {'PASS' if ours_rate >= 5000 else 'FAIL'} |"
                )
            lines += [
                "| view | edges per cell | netinfer cells/s | SciPy A[c][:, c] cells/s | ratio |"
                " target 5,000/s |",
                "|---|---:|---:|---:|---:|---|",
                *rows,
                "",
            ]
            started = time.perf_counter()
            for i in range(1, args.graphs):
                store.add_graph(f"g{i}", matrix, genes=genes, kind="grn", cell_type=f"type{i}")
            write_all = first_write + time.perf_counter() - started
        started = time.perf_counter()
        reader = GraphStore.open(workdir / "graphs.zarr")
        open_s = time.perf_counter() - started
        started = time.perf_counter()
        listing = reader.list()
        list_s = time.perf_counter() - started
        started = time.perf_counter()
        reader.get(f"g{args.graphs - 1}")
        read_s = time.perf_counter() - started
        size = subprocess.run(
            ["du", "-sb", str(workdir / "graphs.zarr")], capture_output=True, text=True
        ).stdout.split()[0]
        lines += [
            f"| store of {len(listing)} graphs | seconds |",
            "|---|---:|",
            f"| write all, with checksums | {write_all:.1f} ({write_all / args.graphs:.2f} each) |",
            f"| open | {open_s:.3f} |",
            f"| list | {list_s:.2f} |",
            f"| read one graph (CSR + attributes) | {read_s:.2f} |",
            f"| size on disk | {int(size) / 1e9:.2f} GB |",
        ]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report = "\n".join(lines)
    print(report)
    if args.out:
        with open(args.out, "a") as handle:
            handle.write(report + "\n")


if __name__ == "__main__":
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    pd.options.mode.copy_on_write = True
    main()
