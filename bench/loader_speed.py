"""Loader speed: cells per second delivered by the GREmLN loader from an on-disk cell store.

Cells of ~2,000 expressed genes (of a 20,000-gene vocabulary), each with its cell type's graph of
1,000,000 edges, symmetrized subgraphs; torch DataLoader with 2 workers, batches of 32 in both
layouts (padded: the trainer's default; packed: with flash-attn).
Target on 2 cores: at least 2,000 cells per second. The reference in the same run: the same
loader with 0 workers (everything in the main process).

Worker start-up (each worker opens the stores and loads its graphs) is excluded by a warm-up of
4 batches per worker; it is paid once per epoch with persistent workers.

Usage: python bench/loader_speed.py [--cells 20000] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from gremln.cellstore import prepare
from gremln.data import CellDataset
from netinfer.store import GraphStore

N_GENES, N_EDGES, EXPRESSED = 20_000, 1_000_000, 2_000


def make_stores(folder: Path, n_cells: int) -> None:
    rng = np.random.default_rng(0)
    genes = np.array([f"G{i:05d}" for i in range(N_GENES)])
    with GraphStore.create(folder / "graphs.zarr") as store:
        for t in range(2):
            pairs = np.unique(rng.integers(0, N_GENES, size=(int(N_EDGES * 1.01), 2)), axis=0)
            pairs = pairs[pairs[:, 0] != pairs[:, 1]][:N_EDGES]
            store.add_graph(
                f"type{t}",
                pd.DataFrame({"regulator": genes[pairs[:, 0]], "target": genes[pairs[:, 1]]}),
                kind="consensus",
                cell_type=f"type{t}",
            )
    rows = np.repeat(np.arange(n_cells), EXPRESSED)
    cols = np.concatenate([rng.choice(N_GENES, EXPRESSED, replace=False) for _ in range(n_cells)])
    counts = sp.csr_matrix(
        (rng.integers(1, 20, size=rows.size).astype(np.float32), (rows, cols)),
        shape=(n_cells, N_GENES),
    )
    adata = ad.AnnData(counts, var=pd.DataFrame(index=genes))
    adata.obs["cell_type"] = [f"type{i % 2}" for i in range(n_cells)]
    adata.write_h5ad(folder / "cells.h5ad")
    prepare(
        folder / "cells.h5ad",
        folder / "cells.zarr",
        graphs_path=folder / "graphs.zarr",
        cell_type_key="cell_type",
        min_counts=1,
        max_counts=10**9,
        trim=None,
        min_genes=1,
    )


def rate(folder: Path, workers: int, limit: int, layout: str) -> float:
    data = CellDataset(
        folder / "cells.zarr", folder / "graphs.zarr", split=None, batch_size=32, layout=layout
    )
    loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=workers)
    started, seen = None, 0
    for number, batch in enumerate(loader):
        if number < 4 * max(1, workers):  # warm-up: worker start-up and graph loading excluded
            continue
        if started is None:
            started = time.perf_counter()
            continue
        seen += len(batch["cells"])
        if seen >= limit:
            break
    return seen / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=20_000)
    parser.add_argument("--out", help="append the markdown table to this file")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="gremln-loader-"))
    try:
        started = time.perf_counter()
        make_stores(folder, args.cells)
        build = time.perf_counter() - started
        rates = {
            (layout, workers): rate(folder, workers, limit, layout)
            for layout in ("padded", "packed")
            for workers, limit in ((0, min(4000, args.cells - 200)), (2, args.cells - 400))
        }
        lines = [
            f"## Loader: cells of {EXPRESSED:,} genes, a {N_GENES:,}-gene {N_EDGES:,}-edge graph "
            "per type, batches of 32",
            "",
            "| layout | loader | cells/s | vs 0 workers | target 2,000/s |",
            "|---|---|---:|---:|---|",
        ]
        for (layout, workers), value in rates.items():
            ratio = value / rates[(layout, 0)]
            verdict = "" if workers == 0 else "PASS" if value >= 2000 else "FAIL"
            where = "main process" if workers == 0 else f"{workers} workers"
            lines.append(f"| {layout} | {where} | {value:,.0f} | {ratio:.1f}x | {verdict} |")
        lines += [
            "",
            f"(building the stores, {args.cells:,} cells: {build:.0f} s, not timed above)",
        ]
        report = "\n".join(lines)
        print(report)
        if args.out:
            with open(args.out, "a") as handle:
                handle.write(report + "\n")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
