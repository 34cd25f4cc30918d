"""The published GREmLN diffusion, re-implemented for comparison with ``gremln.diffusion``.

Follows the per-sample variant of ``scGraphLLM/graph_op.py`` (``_chebyshev_diffusion`` calling
``_chebyshev_diffusion_per_sample``; read in a stored public copy of the GREmLN code, not
copied). Its algorithm, kept here step for step:

* a Python loop over the cells of the batch;
* per cell, ``M = -D^-1/2 A D^-1/2`` as a sparse COO tensor from the cell's edge list as given,
  self-loops removed, degrees summed over the source row only: a directed list gives a
  non-symmetric operator; nodes without out-edges get a zero row (not the -1 of ``L - I``);
* Chebyshev coefficients of ``exp(-beta (x + 1))`` by Gauss-Chebyshev quadrature with 100 nodes
  in float32, and the series ``sum_{k=0}^{K} c_k T_k(M)`` with ``c_0`` NOT halved: the operator
  is ``exp(-beta L) + (c_0 / 2) I``, with ``c_0 / 2 = e^-beta I_0(beta)`` = 0.907 at beta = 0.1;
* K = 64 by default, whatever beta, and the recursion in float32 by ``torch.sparse.mm``;
* no masking: every position of the padded cell (CLS and padding included) is a node.

Two departures, both for comparing values: the result keeps the input's dtype (the published
code rounds it to bfloat16), and the cell length is the padded length (the published function
takes per-cell lengths; padding positions have no edges, so real rows are unaffected). A graph
without edges gets self-loops on every node, as the published code does to avoid an empty one.

Used by ``bench/gremln_speed.py`` and ``tests/test_diffusion.py``.
"""

from __future__ import annotations

import numpy as np
import torch

QUADRATURE_NODES = 100


def published_coefficients(beta: float, K: int) -> torch.Tensor:
    """The published quadrature coefficients c_0 ... c_K (float32, c_0 not halved)."""
    theta = torch.pi * (torch.arange(1, QUADRATURE_NODES + 1, dtype=torch.float32) - 0.5)
    theta = theta / QUADRATURE_NODES
    values = torch.exp(-beta * (torch.cos(theta) + 1))
    chebyshev = torch.cos(torch.arange(K + 1, dtype=torch.float32)[:, None] * theta)
    return (2 / torch.pi) * chebyshev @ (values * torch.pi / QUADRATURE_NODES)


def published_operator(edge_index: torch.Tensor, n_nodes: int) -> torch.Tensor:
    """The published ``-D^-1/2 A D^-1/2`` of one cell, degrees over source rows (COO)."""
    edge_index = edge_index.to(torch.int64)
    edge_index = edge_index[:, edge_index[0] != edge_index[1]]
    if edge_index.shape[1] == 0:
        edge_index = torch.arange(n_nodes).repeat(2, 1)
    weights = torch.ones(edge_index.shape[1])
    source, target = edge_index
    degree = torch.zeros(n_nodes).index_add_(0, source, weights).clamp(min=1e-8)
    inv_sqrt_degree = degree.pow(-0.5)
    values = -(inv_sqrt_degree[source] * weights * inv_sqrt_degree[target])
    return torch.sparse_coo_tensor(edge_index, values, (n_nodes, n_nodes), check_invariants=False)


def published_diffusion(
    q: torch.Tensor, edge_index_per_cell: list, beta: float = 0.1, K: int = 64
) -> torch.Tensor:
    """Diffuse queries as the published GREmLN code does (its bugs included, see the module).

    Parameters
    ----------
    q
        (B, L, ...) padded queries.
    edge_index_per_cell
        B (2, E_b) edge lists in each cell's positions 0..L-1, taken as directed.
    beta
        Diffusion time.
    K
        Chebyshev order (the published default 64).

    Returns
    -------
    torch.Tensor
        (B, L, ...) in the dtype of ``q``.
    """
    coefficients = published_coefficients(beta, K)
    batch_size, length = q.shape[:2]
    out = []
    for cell in range(batch_size):
        operator = published_operator(edge_index_per_cell[cell], length)
        x = q[cell].reshape(length, -1).to(torch.float32)
        previous, current = x, torch.sparse.mm(operator, x)
        diffused = coefficients[0] * previous + coefficients[1] * current
        for k in range(2, K + 1):
            previous, current = current, 2 * torch.sparse.mm(operator, current) - previous
            diffused = diffused + coefficients[k] * current
        out.append(diffused.reshape(q.shape[1:]))
    return torch.stack(out).to(q.dtype)


def random_batch(cells: int, length: int, edges: int, seed: int = 0) -> list[torch.Tensor]:
    """Per cell, about ``edges`` directed edges: both directions of distinct random gene pairs."""
    rng = np.random.default_rng(seed)
    batch = []
    for _ in range(cells):
        pairs = np.sort(rng.integers(1, length, size=(edges // 2, 2)), axis=1)  # 0 is CLS
        pairs = np.unique(pairs[pairs[:, 0] != pairs[:, 1]], axis=0).T
        batch.append(torch.from_numpy(np.concatenate([pairs, pairs[::-1]], axis=1)))
    return batch
