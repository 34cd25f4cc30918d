"""One prepared check of GREmLN's GPU path, in under 5 minutes on one H100: prints a table.

Rows: training cells/s of the default model (``gremln.model.Architecture``) at 2,048 tokens per
cell in bf16 autocast (target >= 1,000); diffusion vs vanilla attention, the time of a training
step of the same model (target <= 1.3x); PyTorch SDPA (padded) vs flash-attn's variable-length
kernel (packed) where flash-attn is importable; DDP with NCCL as a one-process group on the one
GPU; the Chebyshev operator's error against the exact heat kernel (float64 eigendecomposition)
with bf16 input under autocast. The data are synthetic cells (random genes, bins and graphs of
``--edges`` edges per cell): the check is of speed and numerics, not of learning.

It needs only torch, numpy, scipy and the project's model code (``gremln.model`` imports neither
anndata, zarr nor scanpy), so it runs in the device image as is: ``PYTHONPATH=. python
bench/gpu_check.py``. Without CUDA (``--device cpu --small``, as the tests run it) the CUDA-only
rows say "not measured: no CUDA", and DDP runs over gloo instead of NCCL.

Usage: python bench/gpu_check.py [--device auto|cpu|cuda] [--small] [--cells B] [--tokens L]
       [--edges E] [--steps N]
"""

from __future__ import annotations

import argparse
import os
import socket
import time
from collections.abc import Sequence

import numpy as np
import torch

from gremln.data import IGNORE, collate_packed, collate_padded
from gremln.diffusion import GraphDiffusion, exact_diffusion
from gremln.model import Architecture, GremlnConfig, GremlnModel, flash_attn_varlen_func

N_GENES, N_BINS = 20_000, 100  # a human-sized vocabulary, the default bins
NO_CUDA = "not measured: no CUDA"


def synthetic_cells(n_cells: int, length: int, n_edges: int, seed: int = 0) -> list[dict]:
    """Cells of ``length`` tokens (CLS first), 30% of the genes masked, ``n_edges`` random
    undirected edges among the genes."""
    rng = np.random.default_rng(seed)
    cells = []
    for cell in range(n_cells):
        genes = np.concatenate([[2], rng.choice(np.arange(3, N_GENES), length - 1, replace=False)])
        bins = np.concatenate([[N_BINS + 2], rng.integers(1, N_BINS, length - 1)])
        targets = np.full(length, IGNORE)
        masked = 1 + rng.choice(length - 1, int(0.3 * (length - 1)), replace=False)
        targets[masked], bins[masked] = bins[masked], N_BINS + 1
        pairs = 1 + rng.integers(0, length - 1, size=(2, n_edges))
        cells.append(
            {
                "cell": cell,
                "gene_ids": torch.from_numpy(genes),
                "bins": torch.from_numpy(bins),
                "targets": torch.from_numpy(targets),
                "edge_index": torch.from_numpy(pairs[:, pairs[0] != pairs[1]]).to(torch.int32),
            }
        )
    return cells


def model_config(small: bool, attention: str) -> GremlnConfig:
    """The default architecture (or a small one), without dropout so steps are comparable."""
    sizes = dict(d_model=64, n_layers=2, n_heads=4) if small else {}
    return GremlnConfig(n_genes=N_GENES, n_bins=N_BINS, attention=attention, dropout=0.0, **sizes)


def train_steps(model, batch: dict, device, steps: int) -> float:
    """Seconds per training step (forward, backward, AdamW) in bf16 autocast, after a warm-up."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = model(batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    for _ in range(2):
        step()
    _synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        loss = step()
    _synchronize(device)
    if not torch.isfinite(loss):
        raise RuntimeError(f"the loss is {float(loss)}")
    return (time.perf_counter() - started) / steps


def _synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free_port() -> int:
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


def ddp_step(config: GremlnConfig, batch: dict, device, steps: int) -> float:
    """Seconds per training step of a one-process DDP group (NCCL on CUDA, gloo otherwise)."""
    import torch.distributed as dist

    backend = "nccl" if device.type == "cuda" else "gloo"
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    dist.init_process_group(backend, rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model = GremlnModel(config).to(device)
        ids = [device.index or 0] if device.type == "cuda" else None
        network = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        seconds = train_steps(network, batch, device, steps)
        check = torch.ones(1, device=device)
        dist.all_reduce(check)  # the collective itself
        if float(check) != 1.0:
            raise RuntimeError(f"all_reduce over one process gave {float(check)}")
        return seconds
    finally:
        dist.destroy_process_group()


def chebyshev_error(device, length: int, n_edges: int, beta: float) -> float:
    """Largest column error of the Chebyshev operator on bf16 input under autocast, against the
    exact kernel in float64 applied to the same (bf16-rounded) input, relative to its norm."""
    cell = synthetic_cells(1, length, n_edges, seed=1)[0]
    edges = cell["edge_index"].long()
    x = torch.randn(length, 64).to(torch.bfloat16)
    operator = GraphDiffusion(edges.to(device), length, beta=beta)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        diffused = operator(x.to(device)).double().cpu().numpy()
    exact = exact_diffusion(x.double(), edges, length, beta)
    return float((np.linalg.norm(diffused - exact, axis=0) / np.linalg.norm(exact, axis=0)).max())


def check(
    device: torch.device, *, small: bool, cells: int, tokens: int, edges: int, steps: int
) -> list[tuple[str, str, str]]:
    """The table's rows: (what, measured, target or note)."""
    cuda = device.type == "cuda"
    examples = synthetic_cells(cells, tokens, edges)
    padded = collate_padded(examples, pad_bin=N_BINS)
    rows = [("device", torch.cuda.get_device_name(device) if cuda else "cpu", "")]
    rows.append(("torch", torch.__version__, f"{cells} cells x {tokens} tokens, {edges} edges"))
    seconds = {}
    for attention in ("diffusion", "vanilla"):
        torch.manual_seed(0)
        model = GremlnModel(model_config(small, attention)).to(device)
        seconds[attention] = train_steps(model, padded, device, steps)
    rate = cells / seconds["diffusion"]
    name = "training cells/s, default model, bf16" if not small else "training cells/s (small)"
    rows.append((name, f"{rate:,.0f}", ">= 1,000" if cuda and not small else "CPU: no target"))
    ratio = seconds["diffusion"] / seconds["vanilla"]
    rows.append(("diffusion / vanilla step time", f"{ratio:.2f}x", "<= 1.3x"))
    if not cuda:
        rows.append(("SDPA vs flash-attn (packed)", NO_CUDA, ""))
    elif flash_attn_varlen_func is None:
        rows.append(("SDPA vs flash-attn (packed)", "not measured: flash-attn not importable", ""))
    else:
        torch.manual_seed(0)
        model = GremlnModel(model_config(small, "diffusion")).to(device)
        flash = train_steps(model, collate_packed(examples), device, steps)
        rows.append(
            ("SDPA (padded) / flash-attn (packed) step", f"{seconds['diffusion'] / flash:.2f}x", "")
        )
    backend = "NCCL" if cuda else "gloo (NCCL: no CUDA)"
    ddp = ddp_step(model_config(small, "diffusion"), padded, device, steps)
    rows.append((f"DDP one process, {backend}: cells/s", f"{cells / ddp:,.0f}", "runs"))
    for beta in (0.1, 1.0, 5.0):
        error = chebyshev_error(device, tokens, edges, beta)
        rows.append((f"Chebyshev vs exact, bf16 input, beta {beta}", f"{error:.1e}", "< 1e-2"))
    return rows


def main(argv: Sequence[str] | None = None) -> list[tuple[str, str, str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--small", action="store_true", help="a small model and batch (CPU)")
    parser.add_argument("--cells", type=int, help="cells per batch (default 32; small 4)")
    parser.add_argument("--tokens", type=int, help="tokens per cell (default 2048; small 128)")
    parser.add_argument("--edges", type=int, help="edges per cell (default 20000; small 400)")
    parser.add_argument("--steps", type=int, help="timed steps (default 10; small 2)")
    args = parser.parse_args(argv)
    name = args.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available")
    device = torch.device(name, 0) if name == "cuda" else torch.device("cpu")
    defaults = (4, 128, 400, 2) if args.small else (32, 2048, 20_000, 10)
    cells, tokens, edges, steps = (
        given if given is not None else default
        for given, default in zip(
            (args.cells, args.tokens, args.edges, args.steps), defaults, strict=True
        )
    )
    started = time.perf_counter()
    rows = check(device, small=args.small, cells=cells, tokens=tokens, edges=edges, steps=steps)
    if device.type != "cuda":
        rows.append(("CUDA rows (bf16 speed, flash-attn, NCCL)", NO_CUDA, ""))
    rows.append(("wall time", f"{time.perf_counter() - started:.0f} s", "< 5 min on one H100"))
    width = max(len(r[0]) for r in rows)
    for what, value, note in rows:
        print(f"{what:<{width}}  {value:<24} {note}")
    default = Architecture()
    print(
        f"(model: d {default.d_model}, {default.n_layers} blocks, {default.n_heads} heads, "
        f"beta {default.beta}{', small: d 64, 2 blocks, 4 heads' if args.small else ''})"
    )
    return rows


if __name__ == "__main__":
    main()
