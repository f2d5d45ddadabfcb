"""Neural networks of the book's training chapters, written to be read (PyTorch; the MLP also in JAX).

* :class:`MLP`: the paper's 5-layer MLP for MNIST / Fashion-MNIST (v1 Sec. 6.3).
* :class:`CNN`: a LeNet-5-style network for CIFAR-10 (v2 Fig. 4a; the paper does not state its model).
* :class:`CharTransformer`: a small decoder-only character transformer for tiny Shakespeare (v1 Fig. 4, v2 Fig. 4b).

:func:`build` constructs one from a seed, so every method of an experiment starts from the same θ_0.
None has buffers or dropout, so ``torch.func.functional_call(model, params, (x,))`` evaluates it
and ``vmap`` batches it over OptEx's N points. ``optex.models.jax_mlp`` holds the JAX MLP.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .transformer import SIZES as TRANSFORMER_SIZES
from .transformer import CharTransformer, transformer_dim
from .vision import CNN, MLP, cnn_dim, mlp_dim

MODELS = {"mlp": MLP, "cnn": CNN, "transformer": CharTransformer}


def build(name: str, seed: int, **sizes: Any) -> nn.Module:
    """Model ``name`` (``MODELS``) with arguments ``sizes``, initialised from ``seed`` on the CPU.

    The global torch generator is left as it was (the construction runs under ``fork_rng``).
    """
    if name not in MODELS:
        raise ValueError(f"model must be one of {', '.join(map(repr, MODELS))}; got {name!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODELS[name](**sizes)


def num_parameters(model: nn.Module) -> int:
    """d, the number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["MLP", "CNN", "CharTransformer", "MODELS", "TRANSFORMER_SIZES", "build", "num_parameters",
           "mlp_dim", "cnn_dim", "transformer_dim"]
