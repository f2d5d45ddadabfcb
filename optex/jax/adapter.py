"""What a backend-neutral runner needs from JAX: arrays, devices and optimizers by name."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import _validation as check

xp = jnp


def _sgd(lr: float, momentum: float) -> optax.GradientTransformation:
    return optax.sgd(lr, momentum=momentum or None)


def _rmsprop(lr: float, momentum: float) -> optax.GradientTransformation:
    # torch.optim.RMSprop: alpha 0.99, eps added outside the square root.
    return optax.rmsprop(lr, decay=0.99, eps=1e-8, eps_in_sqrt=False, momentum=momentum or None)


# optax factories with torch.optim's default hyper-parameters where the two libraries' defaults differ
# (adamw's weight decay, rmsprop's decay and eps, adagrad's initial accumulator and eps). With these,
# sgd (with momentum), adam, adamw, radam, adamax, rmsprop and adadelta take the same steps as torch.optim
# up to rounding; adagrad adds eps inside the square root (a relative difference of order eps / |g|);
# nadam differs (torch's NAdam applies a momentum-decay schedule that optax.nadam has not).
OPTIMIZERS = {
    "sgd": _sgd,
    "adam": lambda lr, momentum: optax.adam(lr),
    "adamw": lambda lr, momentum: optax.adamw(lr, weight_decay=1e-2),
    "nadam": lambda lr, momentum: optax.nadam(lr),
    "radam": lambda lr, momentum: optax.radam(lr),
    "adamax": lambda lr, momentum: optax.adamax(lr),
    "rmsprop": _rmsprop,
    "adagrad": lambda lr, momentum: optax.adagrad(lr, initial_accumulator_value=0.0, eps=1e-10),
    "adadelta": lambda lr, momentum: optax.adadelta(lr),
}


def resolve_device(device: str, dtype: str = "float32") -> jax.Device:
    """``cpu|cuda|auto`` -> a JAX device, with a clear error when it is unavailable (no MPS in JAX)."""
    check.choice("device", device, check.DEVICES)
    if device == "mps":
        raise ValueError("device 'mps' is not supported by the JAX backend; use 'cpu', 'cuda' or 'auto'")
    if device in ("cuda", "auto"):
        try:
            return jax.devices("gpu")[0]
        except RuntimeError:
            if device == "cuda":
                raise ValueError("device 'cuda' was requested but JAX sees no GPU "
                                 "(install jax[cuda12] and check jax.devices())") from None
    return jax.devices("cpu")[0]


def asarray(values: np.ndarray, dtype: str, device: str) -> jax.Array:
    """``values`` as a JAX array. ``dtype="float64"`` switches on ``jax_enable_x64`` (a global JAX setting,
    left on afterwards); float32 leaves it as it is."""
    if dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    return jax.device_put(jnp.asarray(values, dtype=dtype), resolve_device(device, dtype))


def to_numpy(values: Any) -> np.ndarray:
    return np.asarray(values)


def optimizer_args(name: str, lr: float, momentum: float = 0.0) -> dict[str, Any]:
    """``OptEx`` keyword arguments for a base optimizer given by name: ``{"optimizer": optax.<name>(lr, ...)}``."""
    check.choice("optimizer", name, OPTIMIZERS)
    lr = check.positive_float("lr", lr)
    if momentum and name not in ("sgd", "rmsprop"):
        raise ValueError(f"momentum applies to sgd and rmsprop only, not {name!r}")
    return {"optimizer": OPTIMIZERS[name](lr, momentum)}
