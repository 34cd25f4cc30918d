"""The GRNFormer-style structure adapter: graph structure fused into the expression model.

One GraphSAGE encoder (mean aggregation, neighbour sampling in training) runs over each of the
cell's graphs — the one the cell store assigns it (``edge_index``, e.g. its cell type's network)
and, when the batch has it, its cell-specific network (``cellspecific_edge_index``, see
``netinfer cellspecific``) — from the gene identity embeddings; the encodings are summed into a
structure embedding per token. Multi-head cross-attention within each cell, with the expression
model's hidden states as queries and the structure embeddings as keys and values, gives
h_fusion; the model adds ``fusion_beta * h_fusion`` before its decoder.

Graphs arrive as (2, E) indices into the batch's flattened token axis (block-diagonal over
cells), as the diffusion operator takes them; no loop over cells.
"""

from __future__ import annotations

import torch
from torch import nn

from gremln.model import Attention, GremlnConfig, Layout


def sample_neighbours(edges: torch.Tensor, n_nodes: int, k: int, generator=None) -> torch.Tensor:
    """At most ``k`` incoming edges per node, chosen uniformly at random (all when fewer).

    Parameters
    ----------
    edges
        (2, E) source, target node indices.
    n_nodes
        Number of nodes.
    k
        Neighbours kept per target node.
    generator
        Torch generator of the choice.

    Returns
    -------
    (2, E') the kept edges.
    """
    if edges.shape[1] == 0:
        return edges
    noise = torch.rand(edges.shape[1], generator=generator).to(edges.device)
    # sort by target, then at random within a target: the first k of each target are kept
    order = torch.argsort(edges[1].double() + noise.double() * 0.5)
    targets = edges[1, order]
    first = torch.searchsorted(targets, torch.arange(n_nodes, device=edges.device))
    rank = torch.arange(order.numel(), device=edges.device) - first[targets]
    return edges[:, order[rank < k]]


class GraphSAGE(nn.Module):
    """Mean-aggregation GraphSAGE: h' = GELU(W_self h + W_neigh mean of the neighbours' h)."""

    def __init__(self, d_in: int, d: int, n_layers: int, samples: int):
        super().__init__()
        self.samples = samples
        dims = [d_in] + [d] * n_layers
        self.self_linear = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:]))
        self.neighbour_linear = nn.ModuleList(
            nn.Linear(a, b, bias=False) for a, b in zip(dims, dims[1:])
        )

    def forward(self, x: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
        """Encode the (N, d_in) node features over the (2, E) edges (source -> target)."""
        n = x.shape[0]
        for self_linear, neighbour_linear in zip(self.self_linear, self.neighbour_linear):
            used = edges
            if self.training and self.samples:
                used = sample_neighbours(edges, n, self.samples)
            total = x.new_zeros(n, x.shape[1]).index_add_(0, used[1], x[used[0]])
            degree = torch.bincount(used[1], minlength=n).clamp(min=1).to(x.dtype)
            x = nn.functional.gelu(self_linear(x) + neighbour_linear(total / degree[:, None]))
        return x


class StructureAdapter(nn.Module):
    """GraphSAGE encodings of the cell's graphs, fused by cross-attention (module docstring)."""

    graph_keys = ("edge_index", "cellspecific_edge_index")

    def __init__(self, config: GremlnConfig):
        super().__init__()
        gene_width = config.d_model // 2
        # one encoder for every graph: its parameters are used whichever graphs a batch has
        self.encoder = GraphSAGE(
            gene_width, config.d_model, config.sage_layers, config.sage_samples
        )
        self.norm = nn.LayerNorm(config.d_model)
        self.cross_attention = Attention(config)

    def forward(
        self, hidden: torch.Tensor, genes: torch.Tensor, layout: Layout, graphs: dict
    ) -> torch.Tensor:
        """h_fusion for every token (the shape of ``hidden``).

        Parameters
        ----------
        hidden
            The expression model's hidden states, (B, L, d) or packed (N, d).
        genes
            The tokens' gene identity embeddings, (B, L, d/2) or (N, d/2).
        layout
            The batch's layout.
        graphs
            ``{key: (2, E) flattened edges}`` for the keys in ``graph_keys`` the batch has.
        """
        flat = genes.reshape(-1, genes.shape[-1])
        structure = sum(self.encoder(flat, edges) for edges in graphs.values())
        structure = structure.reshape(*hidden.shape[:-1], -1)
        return self.cross_attention(self.norm(hidden), layout, context=structure)
