"""Heat-kernel diffusion of attention queries over each cell's gene regulatory subgraph (GREmLN).

For a cell's subgraph with symmetric adjacency ``A`` (nonnegative weights, default 1) and degrees
``D``, the normalized Laplacian is ``L = I - D^-1/2 A D^-1/2`` on the nodes with edges; nodes
without edges (genes outside the graph, the CLS token, padding) get a zero row and column, so the
heat kernel ``exp(-beta L)`` is the identity on them. Diffusion attention replaces the queries
``Q`` (after their projection, all heads alike) by ``exp(-beta L) Q``: the operator acts on the
token axis and every feature is just a column.

Two implementations:

* :func:`exact_diffusion`: eigendecomposition in float64, dense, the reference for tests.
* :class:`GraphDiffusion`: the Chebyshev expansion used in training. The spectrum of ``L`` lies
  in ``[0, 2]``; the shifted operator ``M = L - I`` maps it onto ``[-1, 1]``, where
  ``exp(-beta (x + 1)) = c_0 / 2 + sum_k c_k T_k(x)`` with ``c_k = 2 (-1)^k I_k(beta) e^-beta``
  (scaled modified Bessel functions; the sign comes from the shift, since
  ``exp(-beta x) = I_0(-beta) + 2 sum_k I_k(-beta) T_k(x)`` and ``I_k(-beta) = (-1)^k I_k(beta)``).
  The order K is the smallest with ``sum_{k > K} |c_k| < tol``, a bound on the error over the
  whole spectrum since ``|T_k| <= 1``; it is tight at ``lambda = 0``, where every ``T_k(-1) c_k``
  is positive. The paper's Gauss-Chebyshev quadrature for the coefficients is
  :func:`quadrature_coefficients`; it agrees with the Bessel form.

A batch's graphs form one block-diagonal sparse operator over the flattened token axis, built
once per batch and applied by every layer. A learnable diffusion time (one per head) uses the same
operator with coefficients that are differentiable in beta (:func:`heat_coefficients`, the
quadrature in torch) and :meth:`GraphDiffusion.per_head`, whose order K is set by the largest
beta allowed.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from scipy.special import ive

__all__ = [
    "GraphDiffusion",
    "chebyshev_coefficients",
    "chebyshev_order",
    "exact_diffusion",
    "heat_coefficients",
    "normalized_laplacian",
    "quadrature_coefficients",
    "truncation_bound",
]


def _check_beta(beta: float) -> float:
    beta = float(beta)
    if not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta (the diffusion time) must be a finite number > 0, not {beta}")
    return beta


def _check_order(order: int) -> int:
    if int(order) != order or order < 0:
        raise ValueError(f"the Chebyshev order must be an integer >= 0, not {order}")
    return int(order)


def chebyshev_coefficients(beta: float, order: int) -> np.ndarray:
    """Chebyshev coefficients of the heat kernel on the shifted spectrum, from Bessel functions.

    ``exp(-beta lambda) = c_0 / 2 + sum_{k >= 1} c_k T_k(lambda - 1)`` for ``lambda`` in
    ``[0, 2]``, with ``c_k = 2 (-1)^k I_k(beta) e^-beta``.

    Parameters
    ----------
    beta
        Diffusion time, > 0.
    order
        Highest degree K kept.

    Returns
    -------
    numpy.ndarray
        ``c_0 ... c_K`` (float64, ``c_0`` not halved: the series weighs it by 1/2).
    """
    beta, order = _check_beta(beta), _check_order(order)
    k = np.arange(order + 1)
    return 2.0 * (-1.0) ** k * ive(k, beta)


def quadrature_coefficients(beta: float, order: int, *, n_nodes: int = 100) -> np.ndarray:
    """The same coefficients by Gauss-Chebyshev quadrature, as the GREmLN paper computes them.

    ``c_k = (2 / N) sum_j f(cos theta_j) cos(k theta_j)`` with ``theta_j = pi (j + 1/2) / N`` and
    ``f(x) = exp(-beta (x + 1))``. Exact up to aliasing of degrees ``2N - k`` and beyond, which
    the Bessel coefficients make negligible for ``N`` well above K.

    Parameters
    ----------
    beta
        Diffusion time, > 0.
    order
        Highest degree K kept.
    n_nodes
        Quadrature nodes N, more than ``order``.

    Returns
    -------
    numpy.ndarray
        ``c_0 ... c_K`` (float64, ``c_0`` not halved), as :func:`chebyshev_coefficients`.
    """
    beta, order = _check_beta(beta), _check_order(order)
    if n_nodes <= order:
        raise ValueError(f"n_nodes ({n_nodes}) must exceed the order ({order})")
    theta = np.pi * (np.arange(n_nodes) + 0.5) / n_nodes
    values = np.exp(-beta * (np.cos(theta) + 1.0))
    return (2.0 / n_nodes) * np.cos(np.outer(np.arange(order + 1), theta)) @ values


def heat_coefficients(beta: torch.Tensor, order: int) -> torch.Tensor:
    """Series weights of ``exp(-beta lambda)``, differentiable in ``beta`` (one column per beta).

    The quadrature of :func:`quadrature_coefficients` in torch, with enough nodes (4 (K + 1) +
    32) that aliasing is far below any useful tolerance; ``c_0`` comes halved, so the series is
    ``sum_k w_k T_k(lambda - 1)``.

    Parameters
    ----------
    beta
        (H,) diffusion times, > 0 (float64 advised: the weights are differences of exponentials).
    order
        Highest degree K kept.

    Returns
    -------
    torch.Tensor
        (K + 1, H) weights, in ``beta``'s dtype and device.
    """
    order = _check_order(order)
    n_nodes = 4 * (order + 1) + 32
    theta = torch.pi * (torch.arange(n_nodes, dtype=beta.dtype, device=beta.device) + 0.5)
    theta = theta / n_nodes
    values = torch.exp(-beta[None, :] * (torch.cos(theta)[:, None] + 1.0))  # (N, H)
    degrees = torch.arange(order + 1, dtype=beta.dtype, device=beta.device)
    weights = (2.0 / n_nodes) * torch.cos(degrees[:, None] * theta[None, :]) @ values
    return torch.cat([weights[:1] / 2.0, weights[1:]])


def truncation_bound(beta: float, order: int) -> float:
    """``sum_{k > order} |c_k|``: the largest error of the order-K series over ``[0, 2]``.

    Parameters
    ----------
    beta
        Diffusion time, > 0.
    order
        Highest degree K kept.

    Returns
    -------
    float
        The bound (reached at ``lambda = 0``).
    """
    beta, order = _check_beta(beta), _check_order(order)
    total, start = 0.0, order + 1
    while True:  # I_k(beta) decreases in k: stop once a block adds nothing
        block = 2.0 * ive(np.arange(start, start + 64), beta)
        total += float(block.sum())
        if block[-1] <= 1e-17 * total or block[-1] == 0.0:
            return total
        start += 64


def chebyshev_order(beta: float, tol: float = 1e-6) -> int:
    """The smallest order K whose truncation bound is below ``tol``.

    Parameters
    ----------
    beta
        Diffusion time, > 0.
    tol
        Largest error of the heat kernel over the spectrum, in (0, 1).

    Returns
    -------
    int
        K (3 at beta = 0.1, 7 at beta = 1, 12 at beta = 5, for tol = 1e-6).
    """
    beta = _check_beta(beta)
    if not 0.0 < tol < 1.0:
        raise ValueError(f"tol must be in (0, 1), not {tol}")
    order = 0
    while truncation_bound(beta, order) >= tol:
        order += 1
    return order


def _symmetric_edges(
    edge_index, n_nodes: int, weights=None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Checked edges as a symmetric adjacency: sorted (row, col) pairs, no duplicates or loops.

    Each unordered pair gets the largest weight given to either direction, so an edge list that
    holds both directions is not counted twice. Self-loops and zero weights are dropped.
    """
    edge_index = torch.as_tensor(edge_index)
    if edge_index.ndim != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index must have shape (2, E), not {tuple(edge_index.shape)}")
    if edge_index.dtype.is_floating_point or edge_index.dtype == torch.bool:
        raise ValueError(f"edge_index must hold integers, not {edge_index.dtype}")
    if n_nodes < 1:
        raise ValueError(f"n_nodes must be >= 1, not {n_nodes}")
    edge_index = edge_index.to(torch.int64)
    if edge_index.numel() and (edge_index.min() < 0 or edge_index.max() >= n_nodes):
        raise ValueError(
            f"edge_index must lie in [0, {n_nodes}), found "
            f"[{int(edge_index.min())}, {int(edge_index.max())}]"
        )
    if weights is None:
        weights = torch.ones(edge_index.shape[1], dtype=torch.float64, device=edge_index.device)
    else:
        weights = torch.as_tensor(weights, device=edge_index.device).to(torch.float64)
        if weights.shape != (edge_index.shape[1],):
            raise ValueError(
                f"weights must have shape ({edge_index.shape[1]},), one per edge, "
                f"not {tuple(weights.shape)}"
            )
        if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
            raise ValueError("edge weights must be finite and nonnegative")
    source, target = edge_index
    keep = (source != target) & (weights > 0)
    source, target, weights = source[keep], target[keep], weights[keep]
    keys = torch.cat([source * n_nodes + target, target * n_nodes + source])
    keys, slot = torch.unique(keys, sorted=True, return_inverse=True)
    merged = torch.zeros(keys.numel(), dtype=torch.float64, device=keys.device)
    merged.scatter_reduce_(0, slot, torch.cat([weights, weights]), reduce="amax")
    return keys // n_nodes, keys % n_nodes, merged


def normalized_laplacian(edge_index, n_nodes: int, weights=None) -> np.ndarray:
    """Dense normalized Laplacian, zero on nodes without edges (for tests and small graphs).

    Parameters
    ----------
    edge_index
        (2, E) integer node indices; symmetrized (see :class:`GraphDiffusion`).
    n_nodes
        Number of nodes.
    weights
        (E,) nonnegative edge weights; default 1.

    Returns
    -------
    numpy.ndarray
        (n_nodes, n_nodes) float64 ``I - D^-1/2 A D^-1/2`` with zero rows and columns where the
        degree is 0.
    """
    rows, cols, values = (t.cpu().numpy() for t in _symmetric_edges(edge_index, n_nodes, weights))
    degree = np.bincount(rows, weights=values, minlength=n_nodes)
    laplacian = np.diag((degree > 0).astype(np.float64))
    laplacian[rows, cols] -= values / np.sqrt(degree[rows] * degree[cols])
    return laplacian


def exact_diffusion(x, edge_index, n_nodes: int, beta: float, weights=None) -> np.ndarray:
    """``exp(-beta L) x`` by eigendecomposition in float64: the reference for the Chebyshev form.

    Dense and cubic in ``n_nodes``: meant for one cell, or a few small ones, in tests.

    Parameters
    ----------
    x
        (n_nodes, ...) array or tensor; the first axis is the node axis.
    edge_index
        (2, E) integer node indices.
    n_nodes
        Number of nodes.
    beta
        Diffusion time, > 0.
    weights
        (E,) nonnegative edge weights; default 1.

    Returns
    -------
    numpy.ndarray
        float64, the shape of ``x``.
    """
    beta = _check_beta(beta)
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().to(torch.float64).numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.shape[:1] != (n_nodes,):
        raise ValueError(f"x must have {n_nodes} rows (one per node), not shape {x.shape}")
    eigenvalues, eigenvectors = np.linalg.eigh(normalized_laplacian(edge_index, n_nodes, weights))
    flat = x.reshape(n_nodes, -1)
    diffused = eigenvectors @ (np.exp(-beta * eigenvalues)[:, None] * (eigenvectors.T @ flat))
    return diffused.reshape(x.shape)


class _SymmetricOperator(torch.autograd.Function):
    """Applies a symmetric operator; its gradient is the same operator on the incoming gradient.

    Nothing of the recursion is kept for backward (K intermediate (N, F) tensors otherwise), and
    no backward through sparse products is needed.
    """

    @staticmethod
    def forward(ctx, x, diffusion):
        ctx.diffusion = diffusion
        return diffusion._apply(x)

    @staticmethod
    def backward(ctx, grad):
        return ctx.diffusion._apply(grad), None


class _PerHeadPolynomial(torch.autograd.Function):
    """``y_h = sum_k w_kh T_k(M) x_h`` for each head h; differentiable in x and in the weights.

    Backward recomputes the basis ``T_k(M) x`` alongside the recursion on the incoming gradient
    (one sparse product per degree for both), rather than keeping K (N, F) tensors.
    """

    @staticmethod
    def forward(ctx, x, weights, diffusion):
        ctx.diffusion = diffusion
        ctx.save_for_backward(x, weights)
        return diffusion._per_head(x, weights)

    @staticmethod
    def backward(ctx, grad):
        x, weights = ctx.saved_tensors
        diffusion = ctx.diffusion
        grad_x = diffusion._per_head(grad, weights)  # each head's operator is symmetric
        grad_weights = diffusion._basis_products(x, grad, weights.shape[1]).to(weights.dtype)
        return grad_x, grad_weights, None


class GraphDiffusion:
    """Heat-kernel diffusion ``exp(-beta L)`` over a batch's block-diagonal graph, by Chebyshev.

    Build once per batch (:meth:`from_padded`, :meth:`from_packed`) and call it in every layer.
    Edges are symmetrized and deduplicated (each unordered pair keeps the largest weight of its
    two directions), self-loops dropped. The recursion runs in float32 (float64 for float64
    input) with autocast off, whatever the input dtype; the result has the input's dtype. Nodes
    without edges are returned unchanged, exactly.

    Parameters
    ----------
    edge_index
        (2, E) integer global node indices; on the device the operator is used on.
    n_nodes
        Number of nodes (the flattened token axis).
    beta
        Diffusion time, > 0.
    tol
        Largest error of the kernel over the spectrum, in (0, 1); sets :attr:`order`.
    weights
        (E,) nonnegative edge weights; default 1.

    Attributes
    ----------
    order
        The Chebyshev order K (:func:`chebyshev_order`).
    n_edges
        Undirected edges in the operator.
    active
        Indices of the nodes with edges (the others are left unchanged).
    """

    def __init__(
        self,
        edge_index: torch.Tensor,
        n_nodes: int,
        *,
        beta: float,
        tol: float = 1e-6,
        weights: torch.Tensor | None = None,
    ):
        self.n_nodes, self.beta, self.tol = int(n_nodes), _check_beta(beta), tol
        self.order = chebyshev_order(self.beta, tol)
        series = chebyshev_coefficients(self.beta, self.order)
        series[0] /= 2.0
        self._series = [float(c) for c in series]
        rows, cols, values = _symmetric_edges(edge_index, self.n_nodes, weights)
        self.n_edges = rows.numel() // 2
        degree = torch.zeros(self.n_nodes, dtype=torch.float64, device=rows.device)
        degree.index_add_(0, rows, values)
        has_edges = degree > 0
        self.active = torch.nonzero(has_edges).flatten()
        # Only nodes with edges enter the recursion; the map to their compact index keeps the
        # (row, col) order, so the sorted pairs stay a valid CSR layout.
        compact = torch.cumsum(has_edges, 0) - 1
        inv_sqrt_degree = degree.rsqrt()
        self._values = -values * inv_sqrt_degree[rows] * inv_sqrt_degree[cols]  # M = L - I
        self._columns = compact[cols]
        n_active = self.active.numel()
        self._row_offsets = torch.zeros(n_active + 1, dtype=torch.int64, device=rows.device)
        self._row_offsets[1:] = torch.cumsum(torch.bincount(compact[rows], minlength=n_active), 0)
        self._operators: dict[torch.dtype, torch.Tensor] = {}

    @classmethod
    def from_padded(
        cls, edge_index: torch.Tensor, batch_size: int, length: int, **kwargs
    ) -> GraphDiffusion:
        """From a padded batch's (3, E) edges (batch row, source, target positions).

        Parameters
        ----------
        edge_index
            (3, E) as :func:`gremln.data.collate_padded` gives it.
        batch_size, length
            The batch's (B, L); node ``row * length + position``.
        **kwargs
            ``beta``, ``tol``, ``weights`` as for :class:`GraphDiffusion`.

        Returns
        -------
        GraphDiffusion
            Over ``batch_size * length`` nodes.
        """
        edge_index = torch.as_tensor(edge_index)
        if edge_index.ndim != 2 or edge_index.shape[0] != 3:
            raise ValueError(f"edge_index must have shape (3, E), not {tuple(edge_index.shape)}")
        edge_index = edge_index.to(torch.int64)
        row, positions = edge_index[0], edge_index[1:]
        if edge_index.numel() and not (
            0 <= int(row.min()) <= int(row.max()) < batch_size
            and 0 <= int(positions.min()) <= int(positions.max()) < length
        ):
            raise ValueError(
                f"padded edges must have rows in [0, {batch_size}) and positions in [0, {length})"
            )
        return cls(row * length + positions, batch_size * length, **kwargs)

    @classmethod
    def from_packed(cls, edge_index: torch.Tensor, n_tokens: int, **kwargs) -> GraphDiffusion:
        """From a packed batch's (2, E) edges into the packed token axis.

        Parameters
        ----------
        edge_index
            (2, E) as :func:`gremln.data.collate_packed` gives it.
        n_tokens
            Tokens in the batch.
        **kwargs
            ``beta``, ``tol``, ``weights`` as for :class:`GraphDiffusion`.

        Returns
        -------
        GraphDiffusion
            Over ``n_tokens`` nodes.
        """
        return cls(edge_index, n_tokens, **kwargs)

    def _operator(self, dtype: torch.dtype) -> torch.Tensor:
        # CSR, because it measured fastest on CPU (32 cells x 2,048 tokens x 20,000 edges,
        # F = 512, 2 cores: addmm with CSR 0.065 s, CSR @ 0.10 s, COO 0.13 s, gather +
        # index_add_ 0.90 s and an (E, F) temporary), and cuSPARSE SpMM takes it on CUDA.
        if dtype not in self._operators:
            n_active = self.active.numel()
            with warnings.catch_warnings():  # torch warns that CSR support is "beta"
                warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support")
                self._operators[dtype] = torch.sparse_csr_tensor(
                    self._row_offsets,
                    self._columns,
                    self._values.to(dtype),
                    (n_active, n_active),
                    check_invariants=False,
                )
        return self._operators[dtype]

    def _polynomial(self, x: torch.Tensor) -> torch.Tensor:
        """``sum_k c_k T_k(M) x`` (c_0 halved) by the three-term recursion."""
        operator = self._operator(x.dtype)
        diffused = x * self._series[0]
        if self.order == 0:
            return diffused
        previous, current = x, operator @ x
        diffused.add_(current, alpha=self._series[1])
        for coefficient in self._series[2:]:
            # T_{k+1} = 2 M T_k - T_{k-1}, one fused sparse product
            previous, current = current, torch.addmm(previous, operator, current, beta=-1, alpha=2)
            diffused.add_(current, alpha=coefficient)
        return diffused

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        compute_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        with torch.autocast(device_type=x.device.type, enabled=False):
            flat = x.reshape(self.n_nodes, -1).to(compute_dtype)
            if self.active.numel() == self.n_nodes:
                diffused = self._polynomial(flat)
            else:
                diffused = flat.clone()  # no edges: exp(-beta * 0) = identity, exactly
                if self.active.numel():
                    diffused.index_copy_(
                        0, self.active, self._polynomial(flat.index_select(0, self.active))
                    )
        return diffused.to(x.dtype).reshape(x.shape)

    def _active_columns(self, x: torch.Tensor) -> torch.Tensor:
        """The rows of the nodes with edges, as (n_active, columns) in the compute dtype."""
        compute_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        flat = x.reshape(self.n_nodes, -1).to(compute_dtype)
        if self.active.numel() == self.n_nodes:
            return flat
        return flat.index_select(0, self.active)

    def _basis(self, x: torch.Tensor):
        """``T_0(M) x, T_1(M) x, ..., T_K(M) x`` on the active rows, one at a time."""
        operator = self._operator(x.dtype)
        previous, current = x, operator @ x
        yield previous
        if self.order >= 1:
            yield current
        for _ in range(self.order - 1):
            previous, current = current, torch.addmm(previous, operator, current, beta=-1, alpha=2)
            yield current

    def _per_head(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Forward of :meth:`per_head`, without autograd."""
        n_heads = weights.shape[1]
        with torch.autocast(device_type=x.device.type, enabled=False):
            active = self._active_columns(x)
            heads = weights.to(active.dtype).T[:, :, None]  # (H, K + 1, 1)
            diffused = torch.zeros_like(active).unflatten(1, (n_heads, -1))
            for k, term in enumerate(self._basis(active)):
                diffused.add_(term.unflatten(1, (n_heads, -1)) * heads[:, k])
            diffused = diffused.flatten(1)
            if self.active.numel() != self.n_nodes:  # no edges: the identity, exactly
                result = x.reshape(self.n_nodes, -1).to(active.dtype).clone()
                result.index_copy_(0, self.active, diffused)
                diffused = result
        return diffused.to(x.dtype).reshape(x.shape)

    def _basis_products(self, x: torch.Tensor, grad: torch.Tensor, n_heads: int) -> torch.Tensor:
        """(K + 1, H): the sum over rows and head features of ``grad_h * T_k(M) x_h``."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            active_x, active_grad = self._active_columns(x), self._active_columns(grad)
            products = [
                (term * active_grad).unflatten(1, (n_heads, -1)).sum(dim=(0, 2))
                for term in self._basis(active_x)
            ]
        return torch.stack(products)

    def per_head(self, x: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """``exp(-beta_h L) x_h`` for each head h, differentiable in ``x`` and ``beta``.

        Parameters
        ----------
        x
            As for :meth:`__call__`; the trailing features split into ``len(beta)`` equal heads.
        beta
            (H,) diffusion times in (0, :attr:`beta`]: the operator's order was chosen for its
            ``beta``, so larger times would exceed the tolerance.

        Returns
        -------
        torch.Tensor
            The diffused ``x``, in its shape and dtype.
        """
        self._check_input(x)
        if beta.ndim != 1 or (x.numel() // self.n_nodes) % beta.numel():
            raise ValueError(
                f"beta must have shape (H,) with H dividing the {x.numel() // self.n_nodes} "
                f"features, not {tuple(beta.shape)}"
            )
        weights = heat_coefficients(beta.to(torch.float64), self.order)
        return _PerHeadPolynomial.apply(x, weights, self)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim == 0 or (
            x.shape[0] != self.n_nodes and (x.ndim < 2 or x.shape[0] * x.shape[1] != self.n_nodes)
        ):
            raise ValueError(
                f"x must have shape ({self.n_nodes}, ...) or (B, L, ...) with B * L = "
                f"{self.n_nodes}, not {tuple(x.shape)}"
            )
        if x.device != self._values.device:
            raise ValueError(f"x is on {x.device}, the graph on {self._values.device}")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Diffuse ``x`` along its token axis.

        Parameters
        ----------
        x
            (n_nodes, ...) for packed tokens, or (B, L, ...) with ``B * L == n_nodes``; the
            trailing axes (features, or heads and head dimension) are columns.

        Returns
        -------
        torch.Tensor
            ``exp(-beta L) x`` in the shape and dtype of ``x``; differentiable in ``x``.
        """
        self._check_input(x)
        return _SymmetricOperator.apply(x, self)
