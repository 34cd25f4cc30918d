"""The GREmLN model: gene and rank embeddings, transformer blocks whose queries are diffused over
each cell's regulatory subgraph, and a decoder to rank bins (paper sections 3.1-3.4, A.5).

Input is a batch from :mod:`gremln.data`, padded (``padding_mask``) or packed (``cu_seqlens``).
Each token is a gene id and its rank bin; the two embeddings (d/2 each) are concatenated. The
first token of every cell is CLS, which has no edges and so is left unchanged by the diffusion.
In ``diffusion`` attention the queries, after their projection, are replaced by
``exp(-beta L) Q`` with L the normalized Laplacian of the cell's graph (the same operator for every
head; keys and values are not diffused); ``vanilla`` attention skips that step (the ablation).
Beside the paper's form (``diffuse="query"``) two variants: ``query_key_value`` diffuses keys and
values too, ``input`` diffuses the block's normalized input before the projections. ``learn_beta``
gives every block its own diffusion times (one per head; one per block for ``input``), learned in
(0, ``beta_max``) and starting at ``beta``. In evaluation each block records how far the diffusion
moved what it diffused, ``||Phi(Q) - Q|| / ||Q||`` over the batch's tokens (``query_change``).

Attention kernels: PyTorch's ``scaled_dot_product_attention`` with a key-padding mask; for packed
batches on CUDA, flash-attn's variable-length kernel when it is importable (otherwise packed
batches are scattered into a padded layout for the same kernel, and back).
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gremln.data import IGNORE
from gremln.diffusion import GraphDiffusion, chebyshev_order
from gremln.tokenize import GeneVocabulary

try:  # optional: the CUDA-only variable-length kernel for packed batches
    from flash_attn import flash_attn_varlen_func
except ImportError:
    flash_attn_varlen_func = None

ATTENTION_MODES = ("diffusion", "vanilla")
#: what diffusion attention diffuses: the paper's queries, queries keys and values, or the input
DIFFUSED = ("query", "query_key_value", "input")


@dataclass(kw_only=True)
class Architecture:
    """The model's hyperparameters, apart from the vocabulary sizes (also the trainer's options).

    Parameters
    ----------
    d_model, n_layers, n_heads
        Width, transformer blocks, attention heads.
    mlp_ratio
        Hidden width of the feed-forward layer, in multiples of ``d_model``.
    dropout
        Dropout of the residual branches (training only).
    attention_dropout
        Dropout of the attention weights (training only; above 0 it rules out PyTorch's fused
        CPU kernels, about 5x slower there).
    attention
        ``diffusion`` (the GREmLN layer) or ``vanilla`` (no graph: the ablation).
    beta
        Diffusion time of exp(-beta L) (the starting value when it is learned).
    learn_beta
        Learn the diffusion time of every head of every block, in (0, ``beta_max``).
    beta_max
        Largest learnable diffusion time; sets the Chebyshev order when ``learn_beta``.
    diffuse
        What diffusion attention diffuses (:data:`DIFFUSED`): ``query`` (the paper),
        ``query_key_value``, or ``input`` (the block's normalized input).
    tol
        Largest error of the Chebyshev approximation of the kernel; sets its order.
    adapter
        Add the GRNFormer-style structure adapter (:mod:`gremln.adapter`): GraphSAGE over the
        cell's graphs, fused by cross-attention before the decoder.
    fusion_beta
        Weight of the adapter's output: h = h_expr + fusion_beta h_fusion.
    sage_layers, sage_samples
        GraphSAGE layers, and neighbours sampled per node in training (0: all).
    """

    d_model: int = 512
    n_layers: int = 3
    n_heads: int = 8
    mlp_ratio: int = 4
    dropout: float = 0.1
    attention_dropout: float = 0.0
    attention: str = "diffusion"
    beta: float = 0.1
    learn_beta: bool = False
    beta_max: float = 5.0
    diffuse: str = "query"
    tol: float = 1e-6
    adapter: bool = False
    fusion_beta: float = 1.0
    sage_layers: int = 2
    sage_samples: int = 10

    def architecture(self) -> dict:
        """The :class:`Architecture` fields and their values."""
        return {f.name: getattr(self, f.name) for f in fields(Architecture)}


@dataclass(kw_only=True)
class GremlnConfig(Architecture):
    """Architecture and vocabulary sizes; saved with every checkpoint (``config.json``).

    Parameters
    ----------
    n_genes
        Gene vocabulary size, special tokens included.
    n_bins
        Rank bins 0..n_bins-1 (the decoder's classes); the bin vocabulary adds PAD, MASK, CLS.
    **architecture
        The :class:`Architecture` fields.
    """

    n_genes: int
    n_bins: int = 100

    def __post_init__(self):
        if self.attention not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {ATTENTION_MODES}, not {self.attention!r}")
        if self.diffuse not in DIFFUSED:
            raise ValueError(f"diffuse must be one of {DIFFUSED}, not {self.diffuse!r}")
        if self.learn_beta and not 0 < self.beta < self.beta_max:
            raise ValueError(
                f"a learned beta starts inside (0, beta_max): beta {self.beta}, "
                f"beta_max {self.beta_max}"
            )
        if self.d_model % self.n_heads or self.d_model % 2:
            raise ValueError(
                f"d_model ({self.d_model}) must be even and divisible by n_heads ({self.n_heads})"
            )
        if self.n_genes < 4 or self.n_bins < 2:
            raise ValueError(f"n_genes ({self.n_genes}) and n_bins ({self.n_bins}) are too small")

    @property
    def chebyshev_order(self) -> int:
        """The Chebyshev order K that ``beta`` (``beta_max`` when learned) and ``tol`` give."""
        return chebyshev_order(self.operator_beta, self.tol)

    @property
    def operator_beta(self) -> float:
        """The diffusion time the batch operator is built for (its order covers it)."""
        return self.beta_max if self.learn_beta else self.beta

    @classmethod
    def from_dict(cls, values: dict) -> GremlnConfig:
        """A config from a mapping; unknown keys are errors."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(unknown)}")
        return cls(**values)


class Layout:
    """How a batch's tokens are laid out: padded (B, L) with a key-padding mask, or packed (N,)
    with cumulative sequence lengths. Built once per batch, shared by every layer."""

    def __init__(self, batch: dict, device: torch.device):
        self.packed = "cu_seqlens" in batch
        if self.packed:
            self.cu_seqlens = batch["cu_seqlens"].to(device, torch.int32)
            self.max_seqlen = int(batch["max_seqlen"])
            lengths = self.cu_seqlens.diff().long()
            self.n_tokens = int(self.cu_seqlens[-1])
            # packed token -> (cell, position): used to fall back to the padded kernel
            self.cell = torch.repeat_interleave(
                torch.arange(lengths.numel(), device=device), lengths
            )
            self.position = (
                torch.arange(self.n_tokens, device=device) - self.cu_seqlens[self.cell].long()
            )
            self.padding_mask = torch.ones(
                lengths.numel(), self.max_seqlen, dtype=torch.bool, device=device
            )
            self.padding_mask[self.cell, self.position] = False
        else:
            self.padding_mask = batch["padding_mask"].to(device)
        # for scaled_dot_product_attention: True = this key takes part
        self.attend = ~self.padding_mask[:, None, None, :]

    def diffusion(self, batch: dict, config: GremlnConfig, device) -> GraphDiffusion:
        edges = batch["edge_index"].to(device)
        if self.packed:
            return GraphDiffusion.from_packed(
                edges, self.n_tokens, beta=config.operator_beta, tol=config.tol
            )
        size, length = self.padding_mask.shape
        return GraphDiffusion.from_padded(
            edges, size, length, beta=config.operator_beta, tol=config.tol
        )

    def relative_change(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """``||after - before|| / ||before||`` over the batch's tokens (padding left out)."""
        if not self.packed:
            before, after = before[~self.padding_mask], after[~self.padding_mask]
        before, after = before.detach().float(), after.detach().float()
        return (after - before).norm() / before.norm().clamp(min=1e-30)

    def flat_edges(self, edge_index: torch.Tensor) -> torch.Tensor:
        """A batch's edges as (2, E) indices into the flattened token axis."""
        edge_index = edge_index.to(self.padding_mask.device, torch.int64)
        if self.packed:
            return edge_index
        return edge_index[0] * self.padding_mask.shape[1] + edge_index[1:]

    def to_padded(self, x: torch.Tensor) -> torch.Tensor:
        padded = x.new_zeros(self.padding_mask.shape + x.shape[1:])
        padded[self.cell, self.position] = x
        return padded


class DiffusionTime(nn.Module):
    """Learnable diffusion times ``beta_max * sigmoid(a)``, ``a`` starting where beta = ``beta``.

    Parameters
    ----------
    n
        How many times (one per head, or one).
    config
        Gives ``beta`` and ``beta_max``.
    """

    def __init__(self, n: int, config: GremlnConfig):
        super().__init__()
        self.beta_max = config.beta_max
        start = math.log(config.beta / (config.beta_max - config.beta))  # sigmoid^-1
        self.logit = nn.Parameter(torch.full((n,), start))

    def forward(self) -> torch.Tensor:
        return self.beta_max * torch.sigmoid(self.logit)


class Attention(nn.Module):
    """Multi-head attention within each cell: self-attention, or cross-attention to a
    ``context`` (keys and values); queries (and with ``diffuse="query_key_value"`` keys and
    values) diffused over the cell graph when a diffusion is given."""

    def __init__(self, config: GremlnConfig):
        super().__init__()
        self.n_heads, self.dropout = config.n_heads, config.attention_dropout
        self.diffuse_key_value = config.diffuse == "query_key_value"
        self.query_change = None
        self.query = nn.Linear(config.d_model, config.d_model)
        self.key_value = nn.Linear(config.d_model, 2 * config.d_model)
        self.out = nn.Linear(config.d_model, config.d_model)

    def forward(
        self,
        x,
        layout: Layout,
        diffusion: Callable[[torch.Tensor], torch.Tensor] | None = None,
        context: torch.Tensor | None = None,
    ) -> torch.Tensor:
        q = self.query(x)
        k, v = self.key_value(x if context is None else context).chunk(2, dim=-1)
        if diffusion is not None:
            diffused = diffusion(q)  # Phi_L(Q): the queries, after their projection
            if not self.training:
                self.query_change = layout.relative_change(q, diffused)
            q = diffused
            if self.diffuse_key_value:
                k, v = diffusion(k), diffusion(v)
        dropout = self.dropout if self.training else 0.0
        if layout.packed and flash_attn_varlen_func is not None and x.is_cuda:
            heads = [t.unflatten(-1, (self.n_heads, -1)) for t in (q, k, v)]
            args = (layout.cu_seqlens, layout.cu_seqlens, layout.max_seqlen, layout.max_seqlen)
            return self.out(flash_attn_varlen_func(*heads, *args, dropout_p=dropout).flatten(-2))
        if layout.packed:
            q, k, v = (layout.to_padded(t) for t in (q, k, v))
        q, k, v = (t.unflatten(-1, (self.n_heads, -1)).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=layout.attend, dropout_p=dropout)
        y = y.transpose(1, 2).flatten(-2)
        if layout.packed:
            y = y[layout.cell, layout.position]
        return self.out(y)


class Block(nn.Module):
    """Pre-norm transformer block: attention and a GELU feed-forward layer, each residual."""

    def __init__(self, config: GremlnConfig):
        super().__init__()
        self.diffuse_input = config.diffuse == "input"
        self.diffusion_time = None
        if config.attention == "diffusion" and config.learn_beta:
            self.diffusion_time = DiffusionTime(1 if self.diffuse_input else config.n_heads, config)
        self.input_change = None
        self.norm1 = nn.LayerNorm(config.d_model)
        self.attention = Attention(config)
        self.norm2 = nn.LayerNorm(config.d_model)
        hidden = config.mlp_ratio * config.d_model
        self.mlp = nn.Sequential(
            nn.Linear(config.d_model, hidden), nn.GELU(), nn.Linear(hidden, config.d_model)
        )
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x, layout: Layout, diffusion: GraphDiffusion | None) -> torch.Tensor:
        if diffusion is not None and self.diffusion_time is not None:
            diffusion = partial(diffusion.per_head, beta=self.diffusion_time())
        h = self.norm1(x)
        if diffusion is not None and self.diffuse_input:
            diffused = diffusion(h)
            if not self.training:
                self.input_change = layout.relative_change(h, diffused)
            h, diffusion = diffused, None
        x = x + self.drop(self.attention(h, layout, diffusion))
        return x + self.drop(self.mlp(self.norm2(x)))

    @property
    def diffusion_change(self) -> torch.Tensor | None:
        """``||Phi(Q) - Q|| / ||Q||`` of the last evaluation batch (of the input with
        ``diffuse="input"``); ``None`` before one, or without diffusion."""
        return self.input_change if self.diffuse_input else self.attention.query_change


class GremlnModel(nn.Module):
    """GREmLN: embeddings, ``n_layers`` blocks, and a decoder from hidden states to rank bins.

    Parameters
    ----------
    config
        The architecture.
    vocabulary
        The gene vocabulary the model was trained with (saved alongside the weights).
    """

    def __init__(self, config: GremlnConfig, vocabulary: GeneVocabulary | None = None):
        super().__init__()
        if vocabulary is not None and (len(vocabulary), vocabulary.n_bins) != (
            config.n_genes,
            config.n_bins,
        ):
            raise ValueError(
                f"vocabulary has {len(vocabulary)} tokens and {vocabulary.n_bins} bins; the "
                f"config has n_genes={config.n_genes}, n_bins={config.n_bins}"
            )
        self.config, self.vocabulary = config, vocabulary
        half = config.d_model // 2
        self.gene_embedding = nn.Embedding(config.n_genes, half)
        self.bin_embedding = nn.Embedding(config.n_bins + 3, half)  # + PAD, MASK, CLS bins
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.adapter = None
        if config.adapter:
            from gremln.adapter import StructureAdapter  # it builds on this module's attention

            self.adapter = StructureAdapter(config)
        self.norm = nn.LayerNorm(config.d_model)
        self.decoder = nn.Linear(config.d_model, config.n_bins)
        self.apply(_init_weights)

    def forward(self, batch: dict) -> dict:
        """Hidden states of every token, and the masked-rank objective when the batch has targets.

        Returns
        -------
        dict
            ``hidden``: (B, L, d) for a padded batch, (N, d) for a packed one. In evaluation
            with diffusion, ``query_change``: the mean over blocks of ``||Phi(Q) - Q|| / ||Q||``
            (of the block input with ``diffuse="input"``). With ``targets``
            in the batch also ``loss`` (mean cross-entropy over masked positions; the decoder
            runs on those positions only), ``n_masked`` and ``n_correct`` (tensors).
        """
        device = self.gene_embedding.weight.device
        layout = Layout(batch, device)
        genes = self.gene_embedding(batch["gene_ids"].to(device, torch.long))
        x = torch.cat([genes, self.bin_embedding(batch["bins"].to(device, torch.long))], dim=-1)
        diffusion = None
        if self.config.attention == "diffusion":
            diffusion = layout.diffusion(batch, self.config, device)
        for block in self.blocks:
            x = block(x, layout, diffusion)
        if diffusion is not None and not self.training:
            changes = [block.diffusion_change for block in self.blocks]
            out_change = torch.stack(changes).mean()
        else:
            out_change = None
        if self.adapter is not None:
            graphs = {k: layout.flat_edges(batch[k]) for k in self.adapter.graph_keys if k in batch}
            x = x + self.config.fusion_beta * self.adapter(x, genes, layout, graphs)
        out = {"hidden": self.norm(x)}
        if out_change is not None:
            out["query_change"] = out_change
        if "targets" in batch:
            targets = batch["targets"].to(device, torch.long)
            masked = targets != IGNORE
            logits = self.decoder(out["hidden"][masked]).float()
            out["n_masked"] = masked.sum()
            # a sum over a clamped count: a batch without masked positions gives 0, not NaN
            total = F.cross_entropy(logits, targets[masked], reduction="sum")
            out["loss"] = total / out["n_masked"].clamp(min=1)
            out["n_correct"] = (logits.argmax(-1) == targets[masked]).sum()
        return out

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, directory) -> None:
        """Write ``config.json``, ``model.safetensors`` and ``vocabulary.json`` (atomically: into
        a temporary folder renamed into place)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        staging = directory.with_name(f".{directory.name}.tmp")
        staging.mkdir(parents=True, exist_ok=True)
        (staging / "config.json").write_text(json.dumps(asdict(self.config), indent=2))
        weights = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(weights, str(staging / "model.safetensors"))
        if self.vocabulary is not None:
            self.vocabulary.save(staging / "vocabulary.json")
        _replace_directory(staging, directory)

    @classmethod
    def from_pretrained(cls, directory, *, map_location="cpu") -> GremlnModel:
        """Load a model written by :meth:`save_pretrained`."""
        from safetensors.torch import load_file

        directory = Path(directory)
        config_path = directory / "config.json"
        if not config_path.exists():
            raise FileNotFoundError(f"{directory}: no config.json (not a saved GREmLN model)")
        config = GremlnConfig.from_dict(json.loads(config_path.read_text()))
        vocab_path = directory / "vocabulary.json"
        vocabulary = GeneVocabulary.load(vocab_path) if vocab_path.exists() else None
        model = cls(config, vocabulary)
        model.load_state_dict(load_file(str(directory / "model.safetensors"), device=map_location))
        return model.to(map_location)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)


def _replace_directory(staging: Path, target: Path) -> None:
    """Move ``staging`` to ``target``, replacing an existing directory (old one removed last)."""
    old = target.with_name(f".{target.name}.old")
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)
