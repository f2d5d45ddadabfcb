"""What a backend-neutral runner needs from PyTorch: arrays, devices and optimizers by name."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .. import _validation as check

xp = torch

OPTIMIZERS = {
    "sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "nadam": torch.optim.NAdam,
    "radam": torch.optim.RAdam, "adamax": torch.optim.Adamax, "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad, "adadelta": torch.optim.Adadelta,
}


def resolve_device(device: str, dtype: str = "float32") -> torch.device:
    """``cpu|cuda|mps|auto`` -> a torch device, with a clear error when it is unavailable."""
    check.choice("device", device, check.DEVICES)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but torch sees no CUDA device")
    if device == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError("device 'mps' was requested but torch sees no MPS device")
        if dtype == "float64":
            raise ValueError("dtype float64 is not supported on device 'mps' (float32 only)")
    return torch.device(device)


def asarray(values: np.ndarray, dtype: str, device: str) -> torch.Tensor:
    return torch.as_tensor(values, dtype=getattr(torch, dtype), device=resolve_device(device, dtype))


def to_numpy(values: Any) -> np.ndarray:
    return values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)


def optimizer_args(name: str, lr: float, momentum: float = 0.0) -> dict[str, Any]:
    """``OptEx`` keyword arguments for a base optimizer given by name."""
    check.choice("optimizer", name, OPTIMIZERS)
    kwargs: dict[str, Any] = {"optimizer": OPTIMIZERS[name], "lr": check.positive_float("lr", lr)}
    if momentum:
        if name not in ("sgd", "rmsprop"):
            raise ValueError(f"momentum applies to sgd and rmsprop only, not {name!r}")
        kwargs["momentum"] = momentum
    return kwargs

