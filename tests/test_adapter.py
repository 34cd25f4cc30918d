"""The GRNFormer-style structure adapter: neighbour sampling, GraphSAGE, shapes and gradients."""

from __future__ import annotations

import torch

from gremln.adapter import GraphSAGE, sample_neighbours
from gremln.data import IGNORE, collate_packed, collate_padded
from gremln.model import GremlnConfig, GremlnModel


def _examples(n_cells=3, seed=0) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for cell in range(n_cells):
        n = 6 + 3 * cell
        pairs = torch.randint(1, n + 1, (2, 2 * n), generator=generator)
        pairs = torch.unique(torch.cat([pairs, pairs.flip(0)], dim=1), dim=1)
        pairs = pairs[:, pairs[0] != pairs[1]].to(torch.int32)
        bins = torch.randint(1, 10, (n,), generator=generator)
        targets = torch.full((n + 1,), IGNORE)
        targets[1::3] = bins[::3]
        examples.append(
            {
                "cell": cell,
                "gene_ids": torch.cat([torch.tensor([2]), torch.randperm(40)[:n] + 3]),
                "bins": torch.cat([torch.tensor([12]), torch.where(targets[1:] >= 0, 11, bins)]),
                "targets": targets,
                "edge_index": pairs,
                "cellspecific_edge_index": pairs[:, ::2].contiguous(),
            }
        )
    return examples


def test_neighbour_sampling_keeps_at_most_k_incoming_edges():
    edges = torch.tensor([[1, 2, 3, 4, 5, 0, 0], [0, 0, 0, 0, 0, 1, 2]])
    kept = sample_neighbours(edges, 6, 2, generator=torch.Generator().manual_seed(0))
    assert (torch.bincount(kept[1], minlength=6) <= 2).all()
    assert torch.bincount(kept[1], minlength=6)[[0, 1, 2]].tolist() == [2, 1, 1]
    everything = {tuple(e) for e in edges.T.tolist()}
    assert {tuple(e) for e in kept.T.tolist()} <= everything
    choices = {
        tuple(sorted(tuple(e) for e in sample_neighbours(edges, 6, 2).T.tolist()))
        for _ in range(20)
    }
    assert len(choices) > 1  # random, not the first k


def test_graphsage_is_a_mean_over_neighbours():
    torch.manual_seed(0)
    sage = GraphSAGE(4, 3, n_layers=1, samples=0).eval()
    x = torch.randn(5, 4)
    edges = torch.tensor([[1, 2, 0, 4], [0, 0, 1, 1]])
    out = sage(x, edges)
    layer_self, layer_neighbour = sage.self_linear[0], sage.neighbour_linear[0]
    mean = torch.stack([(x[1] + x[2]) / 2, (x[0] + x[4]) / 2, torch.zeros(4), torch.zeros(4)])
    expected = torch.nn.functional.gelu(layer_self(x[:4]) + layer_neighbour(mean))
    torch.testing.assert_close(out[:4], expected)


def test_adapter_shapes_gradients_and_layouts():
    config = GremlnConfig(n_genes=43, n_bins=10, d_model=16, n_heads=2, adapter=True, dropout=0)
    torch.manual_seed(0)
    model = GremlnModel(config)
    examples = _examples()
    padded, packed = collate_padded(examples, pad_bin=10), collate_packed(examples)
    out = model(padded)
    assert out["hidden"].shape == (3, 13, 16)
    out["loss"].backward()
    for name, p in model.adapter.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    model.eval()
    with torch.no_grad():  # no sampling at evaluation: both layouts agree
        a, b = model(packed)["hidden"], model(padded)["hidden"]
    torch.testing.assert_close(a, b[~padded["padding_mask"]])
    without = GremlnModel(GremlnConfig(**{**vars(config), "adapter": False}))
    assert model.n_parameters() > without.n_parameters()
    # the cell-specific graph takes part when present
    padded_without = {k: v for k, v in padded.items() if k != "cellspecific_edge_index"}
    with torch.no_grad():
        assert not torch.equal(model(padded_without)["hidden"], b)
