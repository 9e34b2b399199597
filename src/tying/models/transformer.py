"""Small transformers for hard-sharing experiments: a GPT with tied embeddings, and an encoder
whose layers share weights (ALBERT; Takase & Kiyono's sequence / cycle / cycle_rev orders).

>>> import tying
>>> lm = TinyGPT(vocab=100, d_model=32, n_layers=2, n_heads=4, context=16, tie_embeddings=True)
>>> lm.head.weight is lm.embed.weight
True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..hard import tie, tie_layers

__all__ = ["Block", "GPTConfig", "SharedEncoder", "TinyGPT"]


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, d_model: int, n_heads: int, causal: bool, device=None, dtype=None):
        super().__init__()
        f = {"device": device, "dtype": dtype}
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.n_heads, self.causal = n_heads, causal
        self.ln1 = nn.LayerNorm(d_model, **f)
        self.qkv = nn.Linear(d_model, 3 * d_model, **f)
        self.proj = nn.Linear(d_model, d_model, **f)
        self.ln2 = nn.LayerNorm(d_model, **f)
        self.fc = nn.Linear(d_model, 4 * d_model, **f)
        self.out = nn.Linear(4 * d_model, d_model, **f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C)
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)
                   for t in (q, k, v))  # (B, H, T, C/H)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


@dataclass
class GPTConfig:
    vocab: int = 1000
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    context: int = 64
    # Press & Wolf 2017: the output projection reuses the input embedding (one matrix, not two)
    tie_embeddings: bool = True


class TinyGPT(nn.Module):
    """A GPT-style causal language model; ``tie_embeddings`` ties ``head.weight`` to
    ``embed.weight`` with `tying.tie` (so the tie is recorded and verifiable)."""

    def __init__(self, vocab: int = 1000, d_model: int = 128, n_layers: int = 4, n_heads: int = 4,
                 context: int = 64, tie_embeddings: bool = True, device=None, dtype=None):
        super().__init__()
        f = {"device": device, "dtype": dtype}
        self.config = GPTConfig(vocab, d_model, n_layers, n_heads, context, tie_embeddings)
        self.embed = nn.Embedding(vocab, d_model, **f)
        self.pos = nn.Embedding(context, d_model, **f)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, True, **f) for _ in range(n_layers))
        self.ln = nn.LayerNorm(d_model, **f)
        self.head = nn.Linear(d_model, vocab, bias=False, **f)
        if tie_embeddings:
            tie(self, {"head.weight": "embed.weight"})
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # GPT-2's N(0, 0.02) embeddings. nn.Embedding's N(0, 1), read by the tied output
        # head, gives logits of ~±50: the softmax saturates, its gradients go denormal and a
        # CPU training step runs 3x slower (measured in the `memory` experiment).
        with torch.no_grad():
            nn.init.normal_(self.embed.weight, std=0.02)
            nn.init.normal_(self.pos.weight, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, vocab)
        if idx.shape[1] > self.config.context:
            raise ValueError(f"sequence length {idx.shape[1]} exceeds context "
                             f"{self.config.context}")
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.embed(idx) + self.pos(pos)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


class SharedEncoder(nn.Module):
    """A transformer encoder of ``n_layers`` blocks of which ``n_unique`` hold weights.

    ``order`` says which unique block each layer uses: ``"all"`` (ALBERT: one block for every
    layer), ``"sequence"``, ``"cycle"`` or ``"cycle_rev"`` (Takase & Kiyono 2021).
    ``n_unique == n_layers`` is the unshared baseline.
    """

    def __init__(self, d_model: int = 128, n_layers: int = 12, n_unique: int = 1,
                 order: str = "all", n_heads: int = 4, n_classes: int = 2, vocab: int = 1000,
                 device=None, dtype=None):
        super().__init__()
        f = {"device": device, "dtype": dtype}
        self.embed = nn.Embedding(vocab, d_model, **f)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, False, **f)
                                    for _ in range(n_layers))
        self.head = nn.Linear(d_model, n_classes, **f)
        if n_unique < n_layers:
            tie_layers(self, "blocks", n_unique=n_unique,
                       order="all" if n_unique == 1 else order)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, n_classes)
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean(dim=1))
