"""Heat-kernel diffusion: the Chebyshev operator against the exact eigendecomposition, and the
batch-level properties the model relies on (identity without edges, padding, packing, bf16)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.polynomial import chebyshev
from scipy.special import ive

from gremln.data import collate_packed, collate_padded
from gremln.diffusion import (
    GraphDiffusion,
    chebyshev_coefficients,
    chebyshev_order,
    exact_diffusion,
    heat_coefficients,
    normalized_laplacian,
    quadrature_coefficients,
    truncation_bound,
)

TOL = 1e-6


def random_edges(n_nodes, n_pairs, rng, *, first=0):
    """Both directions of distinct random pairs among nodes ``first .. n_nodes - 1``."""
    pairs = np.sort(rng.integers(first, n_nodes, size=(n_pairs, 2)), axis=1)
    pairs = np.unique(pairs[pairs[:, 0] != pairs[:, 1]], axis=0).T
    return torch.from_numpy(np.concatenate([pairs, pairs[::-1]], axis=1))


def column_errors(approx, exact, x):
    """Per column: ||approx - exact|| / ||x||, which the truncation bound keeps below tol."""
    approx, x = np.asarray(approx, dtype=np.float64), np.asarray(x, dtype=np.float64)
    return np.linalg.norm(approx - exact, axis=0) / np.linalg.norm(x, axis=0)


def published_module():
    path = Path(__file__).parents[1] / "bench" / "published_diffusion.py"
    spec = importlib.util.spec_from_file_location("published_diffusion", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("beta", [0.1, 1.0, 5.0])
@pytest.mark.parametrize("n_nodes, n_pairs", [(12, 20), (60, 40), (150, 1500)])
def test_chebyshev_matches_exact(beta, n_nodes, n_pairs):
    rng = np.random.default_rng(n_nodes)
    edges = random_edges(n_nodes, n_pairs, rng)
    x = rng.normal(size=(n_nodes, 6))
    exact = exact_diffusion(x, edges, n_nodes, beta)
    diffusion = GraphDiffusion(edges, n_nodes, beta=beta, tol=TOL)
    assert column_errors(diffusion(torch.from_numpy(x)), exact, x).max() < TOL
    in_float32 = diffusion(torch.from_numpy(x).float())
    assert in_float32.dtype == torch.float32
    assert np.linalg.norm(in_float32.numpy() - exact) / np.linalg.norm(exact) < 1e-5


def test_chebyshev_matches_exact_on_scale_free_graph():
    networkx = pytest.importorskip("networkx")
    graph = networkx.barabasi_albert_graph(300, 3, seed=1)
    pairs = np.array(graph.edges).T + 1  # position 0 for a CLS token, without edges
    edges = torch.from_numpy(np.concatenate([pairs, pairs[::-1]], axis=1))
    x = np.random.default_rng(1).normal(size=(301, 4, 3))  # (tokens, heads, head dim)
    for beta in (0.1, 1.0):
        exact = exact_diffusion(x, edges, 301, beta)
        diffused = GraphDiffusion(edges, 301, beta=beta)(torch.from_numpy(x)).numpy()
        assert diffused.shape == x.shape
        flat = (a.reshape(301, -1) for a in (diffused, exact, x))
        assert column_errors(*flat).max() < TOL
        assert np.array_equal(diffused[0], x[0])


def test_weighted_edges_match_exact():
    rng = np.random.default_rng(2)
    edges = random_edges(80, 300, rng)
    half = edges.shape[1] // 2
    weights = torch.from_numpy(np.tile(rng.uniform(0.1, 5.0, half), 2))
    x = rng.normal(size=(80, 5))
    exact = exact_diffusion(x, edges, 80, 1.0, weights=weights)
    diffused = GraphDiffusion(edges, 80, beta=1.0, weights=weights)(torch.from_numpy(x))
    assert column_errors(diffused, exact, x).max() < TOL
    assert not np.allclose(exact, exact_diffusion(x, edges, 80, 1.0), atol=1e-3)


def test_laplacian_spectrum_and_isolated_nodes():
    rng = np.random.default_rng(3)
    edges = random_edges(40, 60, rng, first=5)  # nodes 0-4 without edges
    laplacian = normalized_laplacian(edges, 40)
    assert np.allclose(laplacian, laplacian.T)
    eigenvalues = np.linalg.eigvalsh(laplacian)
    assert eigenvalues.min() > -1e-12 and eigenvalues.max() < 2 + 1e-12
    assert not laplacian[:5].any() and not laplacian[:, :5].any()


def test_one_direction_and_duplicates_give_the_symmetric_graph():
    rng = np.random.default_rng(4)
    edges = random_edges(30, 50, rng)
    one_direction = edges[:, : edges.shape[1] // 2]
    repeated = torch.cat([edges, edges[:, :7], torch.tensor([[3], [3]])], dim=1)  # + self-loop
    x = torch.from_numpy(rng.normal(size=(30, 3)))
    expected = GraphDiffusion(edges, 30, beta=1.0)(x)
    assert GraphDiffusion(edges, 30, beta=1.0).n_edges == one_direction.shape[1]
    for variant in (one_direction, repeated):
        assert torch.allclose(GraphDiffusion(variant, 30, beta=1.0)(x), expected, atol=1e-15)
    assert np.array_equal(normalized_laplacian(one_direction, 30), normalized_laplacian(edges, 30))


@pytest.mark.parametrize("beta", [0.1, 0.5, 1.0, 5.0, 20.0])
def test_bessel_coefficients_match_quadrature(beta):
    order = chebyshev_order(beta) + 5
    bessel = chebyshev_coefficients(beta, order)
    assert np.abs(bessel - quadrature_coefficients(beta, order, n_nodes=100)).max() < 1e-12


@pytest.mark.parametrize("beta", [0.1, 0.5, 1.0, 5.0])
@pytest.mark.parametrize("tol", [1e-3, 1e-6, 1e-9])
def test_order_is_the_smallest_within_tolerance(beta, tol):
    eigenvalues = np.linspace(0.0, 2.0, 4001)
    exact = np.exp(-beta * eigenvalues)

    def max_error(order):
        coefficients = chebyshev_coefficients(beta, order)
        coefficients[0] /= 2
        return np.abs(chebyshev.chebval(eigenvalues - 1.0, coefficients) - exact).max()

    order = chebyshev_order(beta, tol)
    assert max_error(order) <= truncation_bound(beta, order) + 1e-15
    assert truncation_bound(beta, order) < tol
    assert max_error(order) < tol
    if order > 0:  # the bound is reached at lambda = 0, so K - 1 really fails
        assert truncation_bound(beta, order - 1) >= tol
        assert max_error(order - 1) > tol


def test_orders_at_the_default_tolerance():
    assert [chebyshev_order(beta) for beta in (0.1, 0.5, 1.0, 5.0)] == [3, 5, 7, 12]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_graph_without_edges_is_the_identity_and_vanilla_attention(dtype):
    q, k, v = torch.randn(3, 2, 4, 9, 8).to(dtype)  # (B, heads, L, head dim)
    empty = torch.zeros((3, 0), dtype=torch.int32)
    diffusion = GraphDiffusion.from_padded(empty, 2, 9, beta=0.1)
    tokens_first = q.transpose(1, 2)  # (B, L, heads, head dim)
    diffused = diffusion(tokens_first)
    assert diffused.dtype == dtype and torch.equal(diffused, tokens_first)
    attention = torch.nn.functional.scaled_dot_product_attention
    assert torch.equal(attention(diffused.transpose(1, 2), k, v), attention(q, k, v))


def test_permutation_equivariance():
    rng = np.random.default_rng(5)
    edges = random_edges(50, 120, rng, first=3)
    x = torch.from_numpy(rng.normal(size=(50, 4)))
    permutation = torch.from_numpy(rng.permutation(50))
    inverse = torch.argsort(permutation)  # new position of each old node
    order = torch.from_numpy(rng.permutation(edges.shape[1]))
    permuted = GraphDiffusion(inverse[edges][:, order], 50, beta=1.0)(x[permutation])
    assert torch.allclose(permuted, GraphDiffusion(edges, 50, beta=1.0)(x)[permutation])


def test_padding_does_not_change_real_rows():
    rng = np.random.default_rng(6)
    cells = [random_edges(n, 3 * n, rng, first=1) for n in (20, 35, 28)]
    padded_edges = torch.cat(
        [torch.cat([torch.full((1, e.shape[1]), row), e]) for row, e in enumerate(cells)], dim=1
    )
    x = torch.randn(3, 35, 6)
    longer = torch.cat([x, torch.randn(3, 10, 6)], dim=1)
    short = GraphDiffusion.from_padded(padded_edges, 3, 35, beta=1.0)(x)
    long = GraphDiffusion.from_padded(padded_edges, 3, 45, beta=1.0)(longer)
    assert torch.allclose(long[:, :35], short, atol=1e-6)
    assert torch.equal(long[:, 35:], longer[:, 35:])


def test_packed_and_padded_batches_agree():
    rng = np.random.default_rng(7)
    lengths = (41, 17, 30)
    batch = []
    for cell, length in enumerate(lengths):
        local = random_edges(length - 1, 4 * length, rng)  # gene positions before CLS
        batch.append(
            {
                "cell": cell,
                "gene_ids": torch.arange(length),
                "bins": torch.ones(length, dtype=torch.long),
                "targets": torch.zeros(length, dtype=torch.long),
                "edge_index": local.to(torch.int32) + 1,
            }
        )
    padded, packed = collate_padded(batch, pad_bin=0), collate_packed(batch)
    batch_size, length = padded["padding_mask"].shape
    x = torch.randn(batch_size, length, 2, 4)
    real = ~padded["padding_mask"]
    by_padding = GraphDiffusion.from_padded(padded["edge_index"], batch_size, length, beta=0.5)
    by_packing = GraphDiffusion.from_packed(packed["edge_index"], int(real.sum()), beta=0.5)
    assert by_padding.order == by_packing.order
    assert torch.allclose(by_padding(x)[real], by_packing(x[real]), atol=1e-6)
    for row, n in enumerate(lengths):  # each cell's block against its own exact operator
        cell_edges = batch[row]["edge_index"]
        exact = exact_diffusion(x[row, :n], cell_edges, n, 0.5)
        assert np.abs(by_padding(x)[row, :n].numpy() - exact).max() < 1e-5


def test_bf16_autocast_runs_the_recursion_in_float32():
    rng = np.random.default_rng(8)
    edges = random_edges(64, 300, rng)
    diffusion = GraphDiffusion(edges, 64, beta=1.0)
    x = torch.randn(64, 16)
    low = x.to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        from_bf16, from_float32 = diffusion(low), diffusion(x)
    assert from_bf16.dtype == torch.bfloat16 and from_float32.dtype == torch.float32
    assert torch.equal(from_bf16, diffusion(low.float()).to(torch.bfloat16))
    assert torch.equal(from_float32, diffusion(x))


def test_gradient_is_the_operator_on_the_gradient():
    rng = np.random.default_rng(9)
    edges = random_edges(15, 25, rng, first=2)
    diffusion = GraphDiffusion(edges, 15, beta=1.0)
    x = torch.randn(15, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(diffusion, (x,))
    low = torch.randn(15, 3, dtype=torch.bfloat16, requires_grad=True)
    diffusion(low).sum().backward()
    assert low.grad.dtype == torch.bfloat16


def test_published_operator_adds_c0_half_times_the_queries():
    """The published code does not halve c_0: its operator is exp(-beta L) + 0.907 I at 0.1."""
    published = published_module()
    rng = np.random.default_rng(10)
    edges = random_edges(40, 120, rng)
    assert np.bincount(edges[0].numpy(), minlength=40).min() > 0  # no isolated node
    q = torch.randn(1, 40, 2, 3)
    exact = exact_diffusion(q[0], edges, 40, 0.1)
    result = published.published_diffusion(q, [edges], beta=0.1, K=64)[0].numpy()
    c0_half = ive(0, 0.1)
    assert c0_half == pytest.approx(0.9071, abs=1e-4)
    assert np.abs(result - exact - c0_half * q[0].numpy()).max() < 1e-5
    ours = GraphDiffusion(edges, 40, beta=0.1)(q[0]).numpy()
    assert np.abs(ours - exact).max() < 1e-5


def test_invalid_inputs_are_rejected():
    edges = torch.tensor([[0, 1], [1, 0]])
    with pytest.raises(ValueError, match="beta"):
        GraphDiffusion(edges, 2, beta=0.0)
    with pytest.raises(ValueError, match="beta"):
        chebyshev_order(float("nan"))
    with pytest.raises(ValueError, match="tol"):
        GraphDiffusion(edges, 2, beta=1.0, tol=1.0)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        GraphDiffusion(torch.tensor([[0], [2]]), 2, beta=1.0)
    with pytest.raises(ValueError, match="nonnegative"):
        GraphDiffusion(edges, 2, beta=1.0, weights=torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="one per edge"):
        GraphDiffusion(edges, 2, beta=1.0, weights=torch.ones(3))
    with pytest.raises(ValueError, match=r"\(2, E\)"):
        GraphDiffusion(edges.T.reshape(1, 4), 4, beta=1.0)
    with pytest.raises(ValueError, match="positions"):
        GraphDiffusion.from_padded(torch.tensor([[0], [0], [5]]), 1, 5, beta=1.0)
    with pytest.raises(ValueError, match="shape"):
        GraphDiffusion(edges, 2, beta=1.0)(torch.randn(3, 4))
    with pytest.raises(ValueError, match="n_nodes"):
        quadrature_coefficients(1.0, 10, n_nodes=10)


def test_differentiable_coefficients_match_bessel():
    betas = torch.tensor([0.1, 1.0, 5.0], dtype=torch.float64)
    weights = heat_coefficients(betas, 14).numpy()
    for column, beta in enumerate(betas.tolist()):
        expected = chebyshev_coefficients(beta, 14)
        expected[0] /= 2.0  # the weights come with c_0 halved
        assert np.abs(weights[:, column] - expected).max() < 1e-13


def test_per_head_times_match_exact_and_their_gradients():
    rng = np.random.default_rng(10)
    edges = random_edges(14, 30, rng, first=1)  # node 0 has no edges: left unchanged
    diffusion = GraphDiffusion(edges, 14, beta=5.0, tol=1e-10)
    x = torch.randn(14, 6, dtype=torch.float64, requires_grad=True)
    betas = torch.tensor([0.3, 1.5, 4.9], dtype=torch.float64, requires_grad=True)
    diffused = diffusion.per_head(x, betas)
    for head, beta in enumerate(betas.tolist()):
        columns = slice(2 * head, 2 * head + 2)
        exact = exact_diffusion(x[:, columns], edges, 14, beta)
        assert np.abs(diffused[:, columns].detach().numpy() - exact).max() < 1e-9
    assert torch.equal(diffused[0], x[0])
    assert torch.autograd.gradcheck(diffusion.per_head, (x, betas))
    with pytest.raises(ValueError, match="beta must have shape"):
        diffusion.per_head(x, torch.ones(4, dtype=torch.float64))


def _tiny_batch(rng, n_cells=3, length=40, n_genes=60):
    cells = []
    for cell in range(n_cells):
        local = random_edges(length - 1, 3 * length, rng)
        cells.append(
            {
                "cell": cell,
                "gene_ids": torch.from_numpy(rng.integers(3, n_genes, size=length)),
                "bins": torch.from_numpy(rng.integers(0, 10, size=length)),
                "targets": torch.full((length,), -100, dtype=torch.long),
                "edge_index": local.to(torch.int32) + 1,  # CLS at 0 has no edges
            }
        )
    return collate_padded(cells, pad_bin=10)


def _model(**settings):
    from gremln.model import GremlnConfig, GremlnModel

    torch.manual_seed(0)
    settings = {"d_model": 32, "n_heads": 4, "n_layers": 2, **settings}
    config = GremlnConfig(n_genes=60, n_bins=10, **settings)
    return GremlnModel(config).eval()


def _output_change(model, batch):
    """||h(graph) - h(no edges)|| / ||h(no edges)||: how much the output depends on the graph."""
    without = dict(batch, edge_index=batch["edge_index"][:, :0])
    with torch.no_grad():
        graph, empty = model(batch)["hidden"], model(without)["hidden"]
    real = ~batch["padding_mask"]
    return float((graph - empty)[real].norm() / empty[real].norm())


def test_the_output_depends_on_the_graph_at_init_more_with_larger_beta():
    batch = _tiny_batch(np.random.default_rng(11))
    changes = [_output_change(_model(beta=beta), batch) for beta in (0.1, 1.0, 5.0)]
    assert 0 < changes[0] < changes[1] < changes[2], changes
    assert _output_change(_model(attention="vanilla"), batch) == 0.0
    for diffuse in ("query_key_value", "input"):  # the variants move the output more
        assert _output_change(_model(beta=1.0, diffuse=diffuse), batch) > changes[1]


def test_query_change_is_the_relative_move_of_the_queries():
    from gremln.model import Layout

    batch = _tiny_batch(np.random.default_rng(12))
    model = _model(beta=1.0, n_layers=1)
    with torch.no_grad():
        reported = float(model(batch)["query_change"])
        x = torch.cat(
            [
                model.gene_embedding(batch["gene_ids"].long()),
                model.bin_embedding(batch["bins"].long()),
            ],
            -1,
        )
        block = model.blocks[0]
        q = block.attention.query(block.norm1(x))
    real = ~batch["padding_mask"]
    moved, total = 0.0, 0.0
    for row in range(q.shape[0]):
        n = int(real[row].sum())
        edges = batch["edge_index"][1:, batch["edge_index"][0] == row]
        exact = exact_diffusion(q[row, :n], edges, n, 1.0)
        moved += float(((exact - q[row, :n].double().numpy()) ** 2).sum())
        total += float((q[row, :n].double() ** 2).sum())
    assert abs(reported - (moved / total) ** 0.5) < 1e-5
    assert Layout(batch, torch.device("cpu")).packed is False
    model.train()
    assert "query_change" not in model(batch)


@pytest.mark.parametrize("diffuse", ["query", "input"])
def test_learned_beta_starts_at_beta_and_gets_a_gradient(diffuse):
    batch = _tiny_batch(np.random.default_rng(13))
    batch["targets"][:, 5:15] = 3
    learned = _model(beta=1.0, learn_beta=True, beta_max=5.0, diffuse=diffuse)
    fixed = _model(beta=1.0, diffuse=diffuse)
    with torch.no_grad():  # same weights, same start: the same output as the fixed time
        same = learned(batch)["hidden"], fixed(batch)["hidden"]
    assert torch.allclose(*same, atol=1e-5)
    learned.train()
    learned(batch)["loss"].backward()
    times = [block.diffusion_time for block in learned.blocks]
    assert [t.logit.numel() for t in times] == [1 if diffuse == "input" else 4] * 2
    assert all(float(t.logit.grad.abs().sum()) > 0 for t in times)
    assert torch.allclose(times[0](), torch.tensor(1.0))
    with pytest.raises(ValueError, match="inside"):
        _model(beta=5.0, learn_beta=True, beta_max=5.0)
