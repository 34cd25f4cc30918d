"""What the whole-matrix input checks cost (``netinfer.sc.validate``, issue 19).

A Poisson count matrix (cells x 2,000 genes, about 5% non-zero) is written as an h5ad; then, each
timed on its own:

- ``read``: the counts read block by block in backed mode (10,000 rows at a time), the way
  ``gremln prepare``'s first pass reads them, with nothing else done;
- ``read + check``: the same reads, each block fed to ``MatrixCheck`` (finite, non-negative,
  integer), as ``prepare`` now does;
- ``check in memory``: ``check_matrix`` over the CSR matrix held in memory, as
  ``celltype-networks`` and ``integrate`` do before their work.

Usage: python bench/validate_speed.py [--cells N] [--repeats R]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp

from netinfer.sc.validate import MatrixCheck, check_matrix


def counts(n_cells: int, n_genes: int = 2000, density: float = 0.05) -> sp.csr_matrix:
    rng = np.random.default_rng(0)
    X = sp.random(n_cells, n_genes, density=density, format="csr", random_state=rng)
    X.data = rng.poisson(2.0, X.data.size).astype(np.float32) + 1
    return X


def best(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    X = counts(args.cells)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "counts.h5ad"
        ad.AnnData(X).write_h5ad(path)
        backed = ad.read_h5ad(path, backed="r")

        def read(check: bool) -> None:
            matrix = MatrixCheck(str(path), counts_for="bench", cells=backed.obs_names)
            for start in range(0, backed.n_obs, 10_000):
                block = sp.csr_matrix(backed.X[start : start + 10_000])
                if check:
                    matrix.update(block, start)
            matrix.finish()

        timings = {
            "read": best(lambda: read(False), args.repeats),
            "read + check": best(lambda: read(True), args.repeats),
            "check in memory": best(
                lambda: check_matrix(X, "<array>", counts_for="bench"), args.repeats
            ),
        }
        backed.file.close()
    print(f"{args.cells:,} cells x 2,000 genes, {X.nnz:,} stored values; best of {args.repeats}")
    print("| step | seconds | stored values per second |")
    print("| --- | --- | --- |")
    for step, seconds in timings.items():
        print(f"| {step} | {seconds:.2f} | {X.nnz / seconds / 1e6:.0f} M |")


if __name__ == "__main__":
    main()
