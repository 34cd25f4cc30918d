"""netinfer: ARACNe gene regulatory network inference (adaptive-partitioning MI in Numba)."""

from netinfer.aracne import AracneResult, aracne, aracne_adata
from netinfer.io import (
    InputError,
    read_expression,
    read_regulators,
    write_aracne3,
    write_aracne_ap,
)

__all__ = [
    "AracneResult",
    "InputError",
    "aracne",
    "aracne_adata",
    "read_expression",
    "read_regulators",
    "write_aracne3",
    "write_aracne_ap",
]
__version__ = "0.1.0"
