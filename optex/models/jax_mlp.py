"""The MLP of :mod:`optex.models.vision` as plain JAX functions (no flax), for ``backend="jax"``.

Parameters are a dict with the torch module's names (``layers.<i>.weight`` of shape (out, in) and
``layers.<i>.bias``), so the same initial weights drive both backends and the forward pass
``x @ W.T + b`` matches ``torch.nn.Linear``.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def params_from_torch(model: Any, dtype: str = "float32") -> dict[str, jax.Array]:
    """The parameters of a torch :class:`~optex.models.vision.MLP` as a dict of JAX arrays (copies)."""
    return {name: jnp.asarray(p.detach().cpu().numpy(), dtype=dtype) for name, p in model.named_parameters()}


def depth(params: dict[str, jax.Array]) -> int:
    return sum(1 for name in params if name.endswith(".weight"))


def apply(params: dict[str, jax.Array], images: jax.Array) -> jax.Array:
    """Class logits (b, classes) for images (b, ...): linear layers with ReLU between them."""
    x = images.reshape(images.shape[0], -1)
    layers = depth(params)
    for i in range(layers):
        x = x @ params[f"layers.{i}.weight"].T + params[f"layers.{i}.bias"]
        if i < layers - 1:
            x = jax.nn.relu(x)
    return x


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean negative log-likelihood of integer ``labels``, as ``torch.nn.functional.cross_entropy``."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=-1).mean()


def to_numpy(params: dict[str, jax.Array]) -> dict[str, np.ndarray]:
    return {name: np.asarray(value) for name, value in params.items()}


def loss(params: dict[str, jax.Array], batch: tuple[jax.Array, jax.Array]) -> jax.Array:
    """The training loss ``loss(params, (images, labels))``: one module-level function, so JAX compiles an
    OptEx iteration once for every run with the same settings."""
    images, labels = batch
    return cross_entropy(apply(params, images), labels)
