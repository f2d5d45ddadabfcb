"""Backend-neutral checks of user parameters.

Every public constructor and runner funnels its arguments through these helpers so that a bad value
fails at once with one message that names the parameter, whichever backend is in use.
"""
from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Iterable

KERNELS = ("rbf", "matern12", "matern32", "matern52")
SELECT = ("last", "min_loss", "min_grad_norm")
PROXY = ("kernel", "none", "target", "linesearch", "large_batch", "last_gradient")
ON_NONFINITE = ("skip", "raise")
WARMUP_PAIRS = (1, 2)
PARALLEL = ("vmap", "loop")
TORCH_PARALLEL = (*PARALLEL, "distributed")  # torch.distributed ranks (optex.torch.distributed)
JAX_PARALLEL = (*PARALLEL, "shard_map")  # the N axis over a device mesh (optex.jax)
LENGTHSCALE_RULES = ("auto", "median")
DEVICES = ("cpu", "cuda", "mps", "auto")
BACKENDS = ("torch", "jax")

# Lengthscale candidates for lengthscale="auto", as multiples of the median pairwise distance of the
# history: a log-grid of 13 points spanning 1/8x ... 8x (factor sqrt(2) apart).
AUTO_GRID_FACTORS = tuple(2.0 ** (k / 2.0) for k in range(-6, 7))

# Jitter tried, in order, when K + sigma^2 I has no Cholesky factor: multiples of its mean diagonal
# (1e-10, 1e-9, ..., 1e-2), the same values in every backend.
JITTER_LEVELS = tuple(10.0 ** k for k in range(-10, -1))


def positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def nonnegative_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def positive_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def nonnegative_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def choice(name: str, value: Any, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def lengthscale(value: Any) -> float | str:
    """A positive float, or one of the data-driven rules in ``LENGTHSCALE_RULES``."""
    if isinstance(value, str):
        return choice("lengthscale", value, LENGTHSCALE_RULES)
    return positive_float("lengthscale", value)


def parallel_settings(parallelism: Any, history: Any, noise: Any, select: Any, proxy: Any,
                      parallel: Any, modes: tuple[str, ...] = PARALLEL) -> tuple[int, int, float, str, str, str]:
    """Validate the backend-independent OptEx settings (N, T0, sigma^2, selection, proxy, mode)."""
    n = positive_int("parallelism", parallelism)
    t0 = positive_int("history", history)
    noise = nonnegative_float("noise", noise)
    select = choice("select", select, SELECT)
    proxy = choice("proxy", proxy, PROXY)
    parallel = choice("parallel", parallel, modes)
    if proxy == "none" and n != 1:
        raise ValueError(f"parallelism must be 1 with proxy='none' (Vanilla is the base optimizer alone); got {n}")
    return n, t0, noise, select, proxy, parallel


def warmup_pairs(value: Any, proxy: str, history: int) -> int:
    """``warmup_pairs`` (one of ``WARMUP_PAIRS``), which proxy="kernel" needs ``history`` to be able to hold."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value not in WARMUP_PAIRS:
        raise ValueError(f"warmup_pairs must be one of {WARMUP_PAIRS}, got {value!r}")
    if proxy == "kernel" and value > history:
        raise ValueError(f"warmup_pairs ({value}) must not exceed history ({history}): the history could never "
                         "hold enough pairs to leave the warm-up")
    return int(value)


def batches(value: Any, expected: int) -> None:
    """``batches`` is None (deterministic objective) or a sequence with one batch per process."""
    if value is None:
        return
    try:
        count = len(value)
    except TypeError:
        raise ValueError(f"batches must be None or a sequence of {expected} batches, got {type(value).__name__}") from None
    if count != expected:
        raise ValueError(f"batches must hold one batch per parallel process ({expected}), got {count}")


def fill_from_profile(config: Any, profiles: dict[str, dict[str, Any]]) -> None:
    """Check ``config.profile`` and give every field left at None the profile's value (frozen dataclasses)."""
    choice("profile", config.profile, profiles)
    for name, value in profiles[config.profile].items():
        if getattr(config, name) is None:
            object.__setattr__(config, name, value)


def choices(name: str, values: Any, allowed: Iterable[str]) -> tuple[str, ...]:
    """A non-empty tuple/list whose every entry is one of ``allowed``."""
    if isinstance(values, str) or not isinstance(values, (tuple, list)) or not values:
        raise ValueError(f"{name} must be a non-empty list of names, got {values!r}")
    return tuple(choice(name, v, allowed) for v in values)


def positive_ints(name: str, values: Any) -> tuple[int, ...]:
    if not isinstance(values, (tuple, list)) or not values:
        raise ValueError(f"{name} must be a non-empty tuple of positive integers, got {values!r}")
    return tuple(positive_int(name, v) for v in values)


def positive_floats(name: str, values: Any) -> tuple[float, ...]:
    if not isinstance(values, (tuple, list)) or not values:
        raise ValueError(f"{name} must be a non-empty tuple of positive numbers, got {values!r}")
    return tuple(positive_float(name, v) for v in values)


def seed_list(seeds: Any) -> list[int]:
    """A count n means seeds 0..n-1; a tuple lists distinct non-negative seeds."""
    if isinstance(seeds, (tuple, list)):
        values = [nonnegative_int("seeds", s) for s in seeds]
        if not values or len(set(values)) != len(values):
            raise ValueError(f"seeds must be a positive count or distinct non-negative integers, got {seeds!r}")
        return values
    return list(range(positive_int("seeds", seeds)))
