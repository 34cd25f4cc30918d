"""Masked-rank pre-training of GREmLN: the loop, its schedule, precision, checkpoints, DDP.

One function, :func:`train`, runs on one CPU, one GPU, or many through ``torchrun`` (DDP; NCCL on
GPUs, gloo on CPUs; only rank 0 writes). Per step: a batch per rank from the cell store, the
masked positions' cross-entropy, AdamW with linear warm-up then cosine annealing (paper A.5),
gradient clipping, bf16 autocast on GPU. Every ``log_every`` steps a ``train`` row, every
``eval_every`` steps ``val_seen`` and ``val_unseen`` rows go to ``RUN/metrics.csv`` (the loss
beside two references: the unigram entropy of the masked bins, and the per-gene entropy, the loss
of a model that knows each masked gene but not the cell; and on validation rows how far the
diffusion moves the queries); every
``checkpoint_every`` steps ``RUN/checkpoint.pt`` (model, optimizer, scheduler, RNG states, step,
each rank's data position) is replaced atomically, so ``resume`` continues exactly. The trained
model is saved to ``RUN/model`` (``GremlnModel.from_pretrained``).
"""

from __future__ import annotations

import csv
import math
import os
import random
import time
import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from gremln.cellstore import CellStore
from gremln.data import IGNORE, CellDataset, ShardSpec
from gremln.model import Architecture, GremlnConfig, GremlnModel, flash_attn_varlen_func
from netinfer.io import atomic_write

METRIC_COLUMNS = (
    "step",
    "split",
    "loss",
    "masked_acc",
    "lr",
    "cells_per_s",
    "unigram_entropy",
    "gene_entropy",
    "query_change",
)
#: ``--graph-integration``: how the graphs enter the model, as (attention, adapter)
GRAPH_INTEGRATIONS = {
    "diffusion": ("diffusion", False),  # GREmLN
    "adapter": ("vanilla", True),  # GRNFormer's structure adapter
    "both": ("diffusion", True),
    "none": ("vanilla", False),
}


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the run stopped without writing a checkpoint."""


@dataclass(kw_only=True)
class TrainConfig(Architecture):
    """Everything a run needs; a TOML file holds any of these keys (flat), flags override it.

    Model: the :class:`gremln.model.Architecture` fields (``d_model``, ``n_layers``, ``n_heads``,
    ``attention``, ``beta``, ``adapter``, ...). ``cellspecific``: an assignment of per-cell
    graphs (``netinfer cellspecific``) the structure adapter also encodes;
    :data:`GRAPH_INTEGRATIONS` names the four combinations of diffusion and adapter.
    Data: ``max_length`` genes per cell (highest bins kept), ``mask_fraction``, ``batch_size``
    cells per rank and step, ``num_workers`` loader processes, ``layout`` (``packed``,
    ``padded`` or ``auto``: packed with flash-attn on CUDA, else padded),
    ``coexpression_fraction`` of each training cell's edges replaced by co-expression pairs.
    Optimization: ``max_steps``, peak ``lr``, ``weight_decay``, ``warmup_fraction`` of the steps
    warming up linearly from ``warmup_start`` x lr, ``grad_clip`` (max gradient norm).
    Bookkeeping: ``seed``, ``log_every``, ``eval_every``, ``eval_cells`` (per split, at most),
    ``checkpoint_every``, ``device`` (``auto``, ``cpu``, ``cuda``), ``tensorboard``.
    """

    cells: str
    graphs: str
    out: str
    cellspecific: str | None = None
    coexpression_fraction: float = 0.0
    max_length: int = 2048
    mask_fraction: float = 0.3
    batch_size: int = 32
    num_workers: int = 2
    layout: str = "auto"
    max_steps: int = 10_000
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    warmup_start: float = 1e-5
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 50
    eval_every: int = 500
    eval_cells: int = 2_000
    checkpoint_every: int = 500
    device: str = "auto"
    tensorboard: bool = False

    @classmethod
    def from_sources(cls, file=None, **overrides) -> TrainConfig:
        """A config from a TOML file (optional) and overrides (``None`` values are ignored).

        Unknown keys in the file are errors, naming the file and the keys.
        """
        values = {}
        if file is not None:
            with open(file, "rb") as handle:
                try:
                    values = tomllib.load(handle)
                except tomllib.TOMLDecodeError as error:
                    raise ValueError(f"{file}: not valid TOML ({error})") from None
            unknown = sorted(set(values) - {f.name for f in fields(cls)})
            if unknown:
                raise ValueError(f"{file}: unknown keys {', '.join(unknown)}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        missing = [k for k in ("cells", "graphs", "out") if k not in values]
        if missing:
            raise ValueError(f"missing settings: {', '.join(missing)}")
        return cls(**values)

    def model_config(self, n_genes: int, n_bins: int) -> GremlnConfig:
        return GremlnConfig(n_genes=n_genes, n_bins=n_bins, **self.architecture())


def lr_factor(step: int, *, total: int, warmup_fraction: float, start: float) -> float:
    """Learning-rate multiplier at ``step``: linear warm-up from ``start`` over the first
    ``warmup_fraction`` of ``total`` steps, then cosine annealing to 0 (paper A.5)."""
    warmup = max(1, int(warmup_fraction * total))
    if step < warmup:
        return start + (1.0 - start) * step / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class _Context:
    """Process group, device and precision of this process."""

    def __init__(self, device: str):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' asked for, but CUDA is not available")
        self.device = torch.device(f"cuda:{local_rank}" if device == "cuda" else "cpu")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if self.world_size > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.main = self.rank == 0
        self.autocast = torch.autocast(
            device_type=self.device.type,
            dtype=torch.bfloat16,
            enabled=self.device.type == "cuda",
        )

    def sum(self, values: list[float]) -> list[float]:
        """Sum ``values`` over ranks (float64)."""
        tensor = torch.tensor(values, dtype=torch.float64)
        if self.world_size > 1:
            backend_device = self.device if dist.get_backend() == "nccl" else "cpu"
            tensor = tensor.to(backend_device)
            dist.all_reduce(tensor)
        return tensor.cpu().tolist()


def gene_entropy(genes: np.ndarray, bins: np.ndarray, reference: np.ndarray) -> float:
    """Loss of a model that knows each masked gene but not the cell: the cross-entropy of the
    masked positions' bins under each gene's bin distribution in the training cells.

    ``reference[g, b]`` counts gene g's tokens in bin b over the training cells, cut to
    ``max_length`` as the model sees them (:meth:`gremln.cellstore.CellStore.gene_bin_counts`).
    A gene's distribution is shrunk toward the training unigram with ``n_bins`` pseudo-tokens:
    ``p(b | g) = (C_gb + n_bins u_b) / (C_g + n_bins)``, ``u_b = (C_b + 1) / (C + n_bins)`` (one
    pseudo-count per bin), so a gene absent from the training cells is predicted by the unigram
    and every bin has a finite loss.
    Fitted on other cells than those it scores, it is a loss such a model reaches.

    Parameters
    ----------
    genes, bins
        Gene token id and target bin of every masked position.
    reference
        Training token counts, vocabulary x bins.

    Returns
    -------
    float
        Nats per position; 0 for no positions.
    """
    if genes.size == 0:
        return 0.0
    n_bins = reference.shape[1]
    per_bin = reference.sum(axis=0)
    unigram = (per_bin + 1.0) / (per_bin.sum() + n_bins)
    per_gene = reference.sum(axis=1)
    probability = (reference[genes, bins] + n_bins * unigram[bins]) / (per_gene[genes] + n_bins)
    return float(-np.log(probability).mean())


class _Stats:
    """Running sums of loss, masked counts, target bins (with their genes) and the diffusion's
    query change, summed over ranks on ``result``."""

    def __init__(self, reference: np.ndarray):
        self.reference = reference  # training token counts, vocabulary x bins (gene_entropy)
        self.n_bins = reference.shape[1]
        self.reset()

    def reset(self):
        self.loss = self.masked = self.correct = self.cells = 0.0
        self.change = self.change_batches = 0.0
        self.counts = np.zeros(self.n_bins)
        self.masked_pairs: list[np.ndarray] = []
        self.started = time.perf_counter()

    def add(self, out: dict, batch: dict):
        masked = float(out["n_masked"])
        self.loss += float(out["loss"].detach()) * masked
        self.masked += masked
        self.correct += float(out["n_correct"])
        self.cells += len(batch["cells"])
        positions = batch["targets"] != IGNORE
        targets = batch["targets"][positions].numpy()
        self.counts += np.bincount(targets, minlength=self.n_bins)[: self.n_bins]
        genes = batch["gene_ids"][positions].numpy()
        self.masked_pairs.append(np.stack([genes, targets]).astype(np.int64))
        if "query_change" in out:
            self.change += float(out["query_change"])
            self.change_batches += 1

    def result(self, context: _Context) -> dict:
        elapsed = time.perf_counter() - self.started
        totals = context.sum(
            [self.loss, self.masked, self.correct, self.cells, self.change, self.change_batches]
            + list(self.counts)
        )
        loss, masked, correct, cells, change, change_batches = totals[:6]
        freq = np.asarray(totals[6:]) / max(masked, 1.0)
        entropy = float(-(freq[freq > 0] * np.log(freq[freq > 0])).sum())
        pairs = np.concatenate(
            [np.empty((2, 0), np.int64)]
            + [p for rank in _gather(self.masked_pairs, context) for p in rank],
            axis=1,
        )
        return {
            "loss": loss / max(masked, 1.0),
            "masked_acc": correct / max(masked, 1.0),
            "cells_per_s": cells / elapsed if elapsed > 0 else float("nan"),
            "unigram_entropy": entropy,
            "gene_entropy": gene_entropy(pairs[0], pairs[1], self.reference),
            "query_change": change / change_batches if change_batches else None,
            "cells": cells,
        }


def train(config: TrainConfig, *, resume: bool = False, until_step: int | None = None) -> dict:
    """Pre-train (or continue) a GREmLN model; see the module docstring.

    Parameters
    ----------
    config
        The run.
    resume
        Continue from ``RUN/checkpoint.pt`` (model, optimizer, schedule, RNG, data position).
    until_step
        Stop (with a checkpoint) after this step, although the schedule runs to ``max_steps``:
        splits a run into jobs that ``resume`` joins, with the same result as one job.

    Returns
    -------
    dict
        The last metrics of each split, the step reached, the Chebyshev order and the number of
        parameters.
    """
    context = _Context(config.device)
    out = Path(config.out)
    checkpoint_path = out / "checkpoint.pt"
    if context.main:
        if checkpoint_path.exists() and not resume:
            raise FileExistsError(f"{out}: holds a run (checkpoint.pt); pass resume to continue")
        if resume and not checkpoint_path.exists():
            raise FileNotFoundError(f"{checkpoint_path}: no checkpoint to resume from")
        out.mkdir(parents=True, exist_ok=True)
    cells = CellStore.open(config.cells)
    vocabulary = cells.vocabulary
    layout = config.layout
    if layout == "auto":
        use_flash = flash_attn_varlen_func is not None and context.device.type == "cuda"
        layout = "packed" if use_flash else "padded"
    torch.manual_seed(config.seed)
    model = GremlnModel(config.model_config(len(vocabulary), vocabulary.n_bins), vocabulary)
    model.to(context.device)
    network = model
    if context.world_size > 1:
        ids = [context.device.index] if context.device.type == "cuda" else None
        network = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.lr,
        betas=(0.9, 0.95),
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(
            step,
            total=config.max_steps,
            warmup_fraction=config.warmup_fraction,
            start=config.warmup_start,
        ),
    )
    step, positions = 0, [(0, 0)] * context.world_size
    if resume:
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, positions = state["step"], state["positions"]
        if len(positions) != context.world_size:
            raise ValueError(
                f"{checkpoint_path}: written by {len(positions)} processes, resumed with "
                f"{context.world_size}; resume with the same number"
            )
        _set_rng_state(state["rng"][context.rank])
    metrics = _MetricsFile(out / "metrics.csv", context.main, resume_step=step if resume else 0)
    writer = _tensorboard(out, context.main and config.tensorboard)
    data = _TrainStream(config, layout, context, *positions[context.rank])
    reference = cells.gene_bin_counts("train", max_length=config.max_length, seed=config.seed)
    stats = _Stats(reference)
    last = min(config.max_steps, until_step or config.max_steps)
    summary = {
        "chebyshev_order": model.config.chebyshev_order,
        "parameters": model.n_parameters(),
    }
    with tqdm(
        total=last,
        initial=step,
        disable=not context.main,
        desc="gremln train",
        unit="step",
        dynamic_ncols=True,
    ) as bar:
        while step < last:
            batch = next(data)
            network.train()
            with context.autocast:
                result = network(batch)
            finite = context.sum([float(torch.isfinite(result["loss"]))])[0] == context.world_size
            if not finite:
                raise NonFiniteLoss(
                    f"step {step + 1}: the loss is {float(result['loss'].detach())}; the run "
                    f"stopped, and {checkpoint_path} (if any) holds the last good state. Try a "
                    "lower --lr."
                )
            result["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            stats.add(result, batch)
            bar.update()
            if step % config.log_every == 0 or step == last:
                row = stats.result(context)
                row["lr"] = optimizer.param_groups[0]["lr"]
                summary["train"] = metrics.write(step, "train", row, writer)
                bar.set_postfix(
                    loss=f"{row['loss']:.3f}",
                    acc=f"{row['masked_acc']:.3f}",
                    cells_s=f"{row['cells_per_s']:.0f}",
                )
                stats.reset()
            if step % config.eval_every == 0 or step == last:
                for split in ("val_seen", "val_unseen"):
                    row = evaluate(network, config, split, layout, context, reference)
                    if row is not None:
                        row["lr"] = optimizer.param_groups[0]["lr"]
                        summary[split] = metrics.write(step, split, row, writer)
            if step % config.checkpoint_every == 0 or step == last:
                rng = _gather(_rng_state(), context)
                positions = _gather(data.position, context)
                if context.main:
                    _save_checkpoint(
                        checkpoint_path, model, optimizer, scheduler, step, positions, rng
                    )
    if context.main and step == config.max_steps:
        model.save_pretrained(out / "model")
    summary["step"] = step
    return summary


class _TrainStream:
    """Training batches of this rank, epoch after epoch, with the position to resume from."""

    def __init__(self, config: TrainConfig, layout: str, context: _Context, epoch: int, at: int):
        self.config, self.layout, self.context = config, layout, context
        self.position = (epoch, at)
        self._batches = self._stream(epoch, at)

    def _stream(self, epoch: int, at: int):
        config = self.config
        while True:
            dataset = CellDataset(
                config.cells,
                config.graphs,
                split="train",
                max_length=config.max_length,
                mask_fraction=config.mask_fraction,
                seed=config.seed,
                epoch=epoch,
                shard=ShardSpec(self.context.rank, self.context.world_size),
                position=at,
                batch_size=config.batch_size,
                layout=self.layout,
                cellspecific=config.cellspecific,
                coexpression_fraction=config.coexpression_fraction,
            )
            if len(dataset.indices) < self.context.world_size:
                raise ValueError(f"{config.cells}: too few training cells for the processes")
            loader = torch.utils.data.DataLoader(
                dataset,
                batch_size=None,
                num_workers=config.num_workers,
                pin_memory=self.context.device.type == "cuda",
                # its own generator: creating loaders leaves the global RNG (dropout) untouched
                generator=torch.Generator().manual_seed(config.seed),
            )
            for batch in loader:
                at += 1
                self.position = (epoch, at)
                yield batch
            epoch, at = epoch + 1, 0
            self.position = (epoch, at)

    def __next__(self) -> dict:
        return next(self._batches)


@torch.no_grad()
def evaluate(
    network, config: TrainConfig, split: str, layout: str, context: _Context, reference: np.ndarray
):
    """Masked-rank loss and accuracy on (at most ``eval_cells`` of) a validation split, with fixed
    masks (epoch 0), beside the entropies (``reference``: :func:`gene_entropy`'s); ``None``
    when the split is empty."""
    dataset = CellDataset(
        config.cells,
        config.graphs,
        split=split,
        max_length=config.max_length,
        mask_fraction=config.mask_fraction,
        seed=config.seed,
        shard=ShardSpec(context.rank, context.world_size),
        batch_size=config.batch_size,
        layout=layout,
        cellspecific=config.cellspecific,
    )
    if len(dataset.indices) == 0:
        return None
    network.eval()
    stats = _Stats(reference)
    limit = max(1, config.eval_cells // context.world_size)
    for batch in dataset:
        with context.autocast:
            stats.add(network(batch), batch)
        if stats.cells >= limit:
            break
    return stats.result(context)


class _MetricsFile:
    """``metrics.csv``, appended by rank 0; on resume, rows after the checkpoint are dropped."""

    def __init__(self, path: Path, main: bool, resume_step: int):
        self.path, self.main = path, main
        if not main:
            return
        kept = []
        if resume_step and path.exists():
            with open(path, newline="") as handle:
                kept = [r for r in csv.DictReader(handle) if int(r["step"]) <= resume_step]
        with atomic_write(path) as handle:
            writer = csv.DictWriter(handle, fieldnames=METRIC_COLUMNS)
            writer.writeheader()
            writer.writerows(kept)

    def write(self, step: int, split: str, row: dict, writer=None) -> dict:
        row = {"step": step, "split": split, **{k: row[k] for k in METRIC_COLUMNS[2:]}}
        if self.main:
            with open(self.path, "a", newline="") as handle:
                csv.DictWriter(handle, fieldnames=METRIC_COLUMNS).writerow(row)
            if writer is not None:
                scalars = ("loss", "masked_acc", "unigram_entropy", "gene_entropy", "query_change")
                for name in (*scalars, "cells_per_s"):
                    if row[name] is not None:
                        writer.add_scalar(f"{split}/{name}", row[name], step)
        return row


def _tensorboard(out: Path, enabled: bool):
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        raise ValueError(
            "tensorboard logging needs the tensorboard package: pip install tensorboard"
        ) from error
    return SummaryWriter(str(out / "tensorboard"))


def _rng_state() -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _gather(value, context: _Context) -> list:
    """``value`` of every rank, in rank order."""
    if context.world_size == 1:
        return [value]
    values = [None] * context.world_size
    dist.all_gather_object(values, value)
    return values


def _save_checkpoint(path: Path, model, optimizer, scheduler, step, positions, rng) -> None:
    """Write the checkpoint to a temporary file and rename it over the old one."""
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": step,
        "positions": positions,
        "rng": rng,
        "config": asdict(model.config),
    }
    staging = path.with_name(f".{path.name}.tmp")
    torch.save(state, staging)
    os.replace(staging, path)
