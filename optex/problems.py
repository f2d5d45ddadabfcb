"""Synthetic objectives of Sec. 6.1, written once for every backend.

Each problem evaluates F on the last axis of an array from any namespace ``xp`` (``torch`` or
``jax.numpy``), knows its minimiser and minimum, and works in any dimension d. Gradient noise
(Assumption 1) is added through the batch: with ``xi ~ N(0, I_d)`` the stochastic loss
``f(theta, xi) = F(theta) + sigma * <xi, theta>`` has gradient ``grad F(theta) + sigma * xi``, so the
noise is exactly Gaussian with covariance sigma^2 I_d and every backend's autodiff sees it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import _validation as check


@dataclass(frozen=True)
class Problem:
    """A test function F: R^d -> R with known minimiser (``argmin``) and minimum ``minimum``."""

    name: str
    dim: int
    value: Callable  # value(x, xp) -> F(x) over the last axis
    argmin_value: float
    minimum: float = 0.0
    grad_noise: float = 0.0

    def __call__(self, x, xp):
        return self.value(x, xp)

    def argmin(self) -> np.ndarray:
        return np.full(self.dim, self.argmin_value)

    def gap(self, x, xp):
        """Optimality gap F(x) - F*."""
        return self.value(x, xp) - self.minimum

    def loss(self, x, noise, xp):
        """f(x, xi): F plus the linear noise term whose gradient is sigma * xi (xi=None: F alone)."""
        value = self.value(x, xp)
        if noise is None or self.grad_noise == 0.0:
            return value
        return value + self.grad_noise * (noise * x).sum(-1)


def _sphere(x, xp):
    return (x * x).sum(-1)


def _ackley(x, xp):
    d = x.shape[-1]
    return (-20.0 * xp.exp(-0.2 * xp.sqrt((x * x).sum(-1) / d + 1e-30))
            - xp.exp(xp.cos(2.0 * math.pi * x).sum(-1) / d) + 20.0 + math.e)


def _rosenbrock(x, xp):
    head, tail = x[..., :-1], x[..., 1:]
    return (100.0 * (tail - head * head) ** 2 + (1.0 - head) ** 2).sum(-1)


def _levy(x, xp):
    w = 1.0 + (x - 1.0) / 4.0
    head = w[..., :-1]
    last = w[..., -1]
    return (xp.sin(math.pi * w[..., 0]) ** 2
            + ((head - 1.0) ** 2 * (1.0 + 10.0 * xp.sin(math.pi * head + 1.0) ** 2)).sum(-1)
            + (last - 1.0) ** 2 * (1.0 + xp.sin(2.0 * math.pi * last) ** 2))


def _quadratic(condition: float, dim: int):
    # F(x) = 1/2 sum_i h_i x_i^2 with h log-spaced in [1/condition, 1]: condition number `condition`.
    h = np.geomspace(1.0 / condition, 1.0, dim) if dim > 1 else np.ones(1)

    def value(x, xp):
        return 0.5 * (_like(h, x, xp) * x * x).sum(-1)

    return value


def _like(array: np.ndarray, x, xp):
    """``array`` as an array of ``x``'s namespace, dtype and device."""
    if hasattr(xp, "as_tensor"):  # torch
        return xp.as_tensor(array, dtype=x.dtype, device=x.device)
    return xp.asarray(array, dtype=x.dtype)


FUNCTIONS = ("sphere", "ackley", "rosenbrock", "levy", "quadratic")
_ARGMIN = {"sphere": 0.0, "ackley": 0.0, "rosenbrock": 1.0, "levy": 1.0, "quadratic": 0.0}
_VALUES = {"sphere": _sphere, "ackley": _ackley, "rosenbrock": _rosenbrock, "levy": _levy}


def make(name: str, dim: int, grad_noise: float = 0.0, condition: float = 100.0) -> Problem:
    """The synthetic problem ``name`` in dimension ``dim``; ``grad_noise`` is sigma of Assumption 1.

    ``condition`` applies to ``"quadratic"`` only: the ratio of its largest to smallest curvature.
    """
    check.choice("function", name, FUNCTIONS)
    dim = check.positive_int("dim", dim)
    if name == "rosenbrock" and dim < 2:
        raise ValueError("dim must be >= 2 for rosenbrock")
    grad_noise = check.nonnegative_float("grad_noise", grad_noise)
    if name == "quadratic":
        condition = check.positive_float("condition", condition)
        if condition < 1:
            raise ValueError(f"condition must be >= 1, got {condition}")
        return Problem(name, dim, _quadratic(condition, dim), 0.0, grad_noise=grad_noise)
    return Problem(name, dim, _VALUES[name], _ARGMIN[name], grad_noise=grad_noise)
