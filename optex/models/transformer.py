"""A small decoder-only character transformer (GPT layout, in the spirit of nanoGPT's model.py).

Token and position embeddings, ``depth`` pre-norm blocks (causal self-attention, then an MLP, each
added to the residual stream), a final LayerNorm and a head tied to the token embedding.

Attention is written as masked matrix products rather than ``F.scaled_dot_product_attention``: the
fused kernel has no ``vmap`` batching rule on CPU, so vmapping over OptEx's N points would fall back to a
Python loop (torch warns "There is a performance drop ..."); the matmul form is batched natively.
No dropout: every evaluation is deterministic.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# Sizes of the book's two configurations: one for this 2-core CPU, one like nanoGPT's shakespeare-char.
SIZES = {"cpu": {"depth": 4, "heads": 4, "width": 128, "block_size": 64},
         "gpu": {"depth": 6, "heads": 6, "width": 384, "block_size": 256}}


def transformer_dim(vocab_size: int, width: int, depth: int, block_size: int) -> int:
    """d of :class:`CharTransformer` (the tied head adds no parameters)."""
    block = 2 * (2 * width) + (width * 3 * width + 3 * width) + (width * width + width) \
        + (width * 4 * width + 4 * width) + (4 * width * width + width)
    return vocab_size * width + block_size * width + depth * block + 2 * width


class CausalSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width ({width}) must be a multiple of heads ({heads})")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (z.reshape(b, t, self.heads, c // self.heads).transpose(1, 2)
                   for z in self.qkv(x).split(c, dim=-1))  # each (b, heads, t, c / heads)
        scores = q @ k.transpose(-2, -1) / math.sqrt(c // self.heads)
        future = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        attention = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
        return self.proj((attention @ v).transpose(1, 2).reshape(b, t, c))


class Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attention = CausalSelfAttention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CharTransformer(nn.Module):
    """Next-character logits (b, t, vocab_size) for token indices (b, t), t <= ``block_size``.

    Initialisation as in GPT-2: normal(0, 0.02) weights and embeddings, zero biases, and the two
    projections that write into the residual stream scaled by 1/sqrt(2 depth). d for the 65-character
    Shakespeare vocabulary: 809,856 at the "cpu" size, 10,770,816 at the "gpu" size (``SIZES``).
    """

    def __init__(self, vocab_size: int = 65, width: int = 128, depth: int = 4, heads: int = 4,
                 block_size: int = 64) -> None:
        super().__init__()
        self.block_size = block_size
        self.token = nn.Embedding(vocab_size, width)
        self.position = nn.Embedding(block_size, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() == 2:
                residual = name.endswith("attention.proj.weight") or name.endswith("mlp.2.weight")
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * depth) if residual else 0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[-1]
        if t > self.block_size:
            raise ValueError(f"sequence length {t} exceeds block_size {self.block_size}")
        x = self.token(tokens) + self.position(torch.arange(t, device=tokens.device))
        for block in self.blocks:
            x = block(x)
        return F.linear(self.norm(x), self.token.weight)  # head tied to the token embedding

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, length: int, generator: torch.Generator,
                 temperature: float = 1.0) -> torch.Tensor:
        """``prompt`` (1-D token indices) followed by ``length`` sampled tokens (reproducible via ``generator``)."""
        tokens = prompt.reshape(1, -1)
        for _ in range(length):
            logits = self(tokens[:, -self.block_size:])[0, -1] / temperature
            following = torch.multinomial(logits.softmax(-1), 1, generator=generator)
            tokens = torch.cat([tokens, following.reshape(1, 1)], dim=1)
        return tokens[0]
