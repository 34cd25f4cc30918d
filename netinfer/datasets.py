"""Real example data that ships with the installed packages (nothing is downloaded).

- ``pbmc68k_counts()``: scanpy's bundled ``pbmc68k_reduced`` (700 PBMCs x 765 genes, 10 cell types
  in ``obs["bulk_labels"]``) with its integer UMI counts recovered from the log-normalized
  ``raw.X`` (counts = expm1(raw.X) * n_counts / 1e4, rounded; the rounding error is below 0.01).
- ``human_tfs()``: 1,639 human transcription factors (Lambert et al., Cell 2018), the list shipped
  by the MIT-licensed ``grnndata`` package, bundled here as ``netinfer/data/tfs_lambert2018.txt``.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import numpy as np

HUMAN_TFS = "tfs_lambert2018.txt"


def human_tfs() -> list[str]:
    """The bundled human transcription factor symbols (Lambert et al. 2018)."""
    text = (importlib.resources.files("netinfer") / "data" / HUMAN_TFS).read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def pbmc68k_counts():
    """scanpy's ``pbmc68k_reduced`` with integer UMI counts in ``X`` (and ``layers["counts"]``).

    Returns
    -------
    AnnData, 700 cells x 765 genes, ``obs["bulk_labels"]`` the cell types.
    """
    import anndata as ad
    import scanpy as sc
    import scipy.sparse as sp

    source = sc.datasets.pbmc68k_reduced()
    if "counts" in source.layers:  # newer scanpy ships the counts
        counts = source.layers["counts"]
        counts = counts.toarray() if sp.issparse(counts) else np.asarray(counts)
    else:
        lognorm = source.raw.X.toarray().astype(np.float64)
        scale = source.obs["n_counts"].to_numpy()[:, None] / 1e4
        counts = np.rint(np.expm1(lognorm) * scale)
        source = source.raw.to_adata()
    counts = counts.astype(np.float32)
    adata = ad.AnnData(
        X=sp.csr_matrix(counts),
        obs=source.obs[["bulk_labels", "n_counts"]].copy(),
        var=source.var[[]].copy(),
    )
    adata.layers["counts"] = adata.X.copy()
    return adata


def write_example(directory: str | Path) -> tuple[Path, Path]:
    """Write ``pbmc68k_counts.h5ad`` and ``human_tfs.txt`` into ``directory``; return both paths."""
    from netinfer.io import atomic_write

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    h5ad = directory / "pbmc68k_counts.h5ad"
    tmp = h5ad.with_name(f".{h5ad.name}.tmp")
    pbmc68k_counts().write_h5ad(tmp)
    tmp.replace(h5ad)
    tfs = directory / "human_tfs.txt"
    with atomic_write(tfs) as handle:
        handle.write("\n".join(human_tfs()) + "\n")
    return h5ad, tfs
