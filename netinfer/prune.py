"""Data-processing-inequality pruning of a thresholded regulator x gene MI network.

The rules only compare MI values, so they apply to either estimator (adaptive partitioning or
Gaussian copula).

In a triangle of regulator i, regulator j and target t whose three edges all passed the threshold,
the weakest edge is taken to be indirect:

- ``"dpi"`` (ARACNe-AP): remove whichever of (i, t), (j, t) is weaker than both other edges;
  the regulator-regulator edge (i, j) is never removed from the point of view of target t.
- ``"maxent"`` (ARACNe3): the same, and (i, j) is also removed when it is the weakest.

An edge x is "weaker" than y and z when x < (1 - tolerance) min(y, z) (strict; tolerance 0 by
default). All removals are decided on the unpruned network and applied together, so the result
does not depend on the order triangles are visited in. When t is itself a regulator, the triangle
is visited once from each corner, so all-regulator triangles lose their weakest edge in both
directions under either rule.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

PRUNING_RULES = ("dpi", "maxent", "none")


@njit(cache=True, parallel=True)
def _prune(mi, edges, reg_cols, keep_factor, maxent):
    n_regs, n_genes = mi.shape
    keep = edges.copy()
    for g in prange(n_genes):  # each iteration writes only column g
        linked = np.nonzero(edges[:, g])[0]
        for a_pos in range(linked.shape[0]):
            a = linked[a_pos]
            for b_pos in range(a_pos + 1, linked.shape[0]):
                b = linked[b_pos]
                if not edges[a, reg_cols[b]]:
                    continue
                x = mi[a, g]
                y = mi[b, g]
                z = mi[a, reg_cols[b]]
                if x < keep_factor * min(y, z):
                    keep[a, g] = False
                if y < keep_factor * min(x, z):
                    keep[b, g] = False
    if maxent:
        rr_keep = np.ones((n_regs, n_regs), dtype=np.bool_)
        for a in prange(n_regs):  # each iteration writes only row a
            for b in range(n_regs):
                if b == a or not edges[a, reg_cols[b]]:
                    continue
                z = mi[a, reg_cols[b]]
                for g in range(n_genes):
                    if g == reg_cols[a] or g == reg_cols[b] or not (edges[a, g] and edges[b, g]):
                        continue
                    if z < keep_factor * min(mi[a, g], mi[b, g]):
                        rr_keep[a, b] = False
                        break
        for a in range(n_regs):
            for b in range(n_regs):
                if not rr_keep[a, b]:
                    keep[a, reg_cols[b]] = False
    return keep


def prune(
    mi: np.ndarray,
    edges: np.ndarray,
    reg_cols: np.ndarray,
    *,
    rule: str = "dpi",
    tolerance: float = 0.0,
) -> np.ndarray:
    """Prune indirect edges by the data processing inequality.

    Parameters
    ----------
    mi
        Regulators x genes MI matrix; regulator pairs must be symmetric
        (``mi[i, reg_cols[j]] == mi[j, reg_cols[i]]``).
    edges
        Boolean matrix of the same shape: the edges that passed the MI threshold.
    reg_cols
        Gene column of each regulator.
    rule
        ``"dpi"``, ``"maxent"`` or ``"none"`` (see the module docstring).
    tolerance
        Relative DPI tolerance in [0, 1): an edge is removed only if it is weaker than the other
        two by more than this fraction.

    Returns
    -------
    Boolean matrix of the edges that remain.
    """
    if rule not in PRUNING_RULES:
        raise ValueError(f"pruning must be one of {PRUNING_RULES}, not {rule!r}")
    if not 0.0 <= tolerance < 1.0:
        raise ValueError(f"DPI tolerance must be in [0, 1), not {tolerance}")
    if rule == "none":
        return edges.copy()
    return _prune(
        np.ascontiguousarray(mi, dtype=np.float64),
        np.ascontiguousarray(edges, dtype=np.bool_),
        np.asarray(reg_cols, dtype=np.int64),
        1.0 - tolerance,
        rule == "maxent",
    )
