"""bench/gpu_check.py runs on the CPU at a small size and says which rows need CUDA."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch


def test_gpu_check_runs_small_on_the_cpu(capsys):
    path = Path(__file__).parents[1] / "bench" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = ["--device", "cpu", "--small", "--cells", "2", "--tokens", "48", "--edges", "80"]
    rows = {what: value for what, value, _ in module.main([*argv, "--steps", "1"])}
    assert rows["SDPA vs flash-attn (packed)"] == "not measured: no CUDA"
    assert rows["CUDA rows (bf16 speed, flash-attn, NCCL)"] == "not measured: no CUDA"
    assert float(rows["diffusion / vanilla step time"].rstrip("x")) > 0
    assert float(rows["DDP one process, gloo (NCCL: no CUDA): cells/s"].replace(",", "")) > 0
    for beta in (0.1, 1.0, 5.0):  # bf16 input and output: within a few bf16 roundings
        assert float(rows[f"Chebyshev vs exact, bf16 input, beta {beta}"]) < 1e-2
    assert "not measured: no CUDA" in capsys.readouterr().out
    assert not torch.distributed.is_initialized()  # the one-process group is torn down
