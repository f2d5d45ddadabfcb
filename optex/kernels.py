"""Stationary kernels written once for every backend, as functions of squared distances.

``xp`` is the array namespace (``torch`` or ``jax.numpy``): both provide ``exp``, ``sqrt`` and
``clamp``-free arithmetic used here. Evaluating a kernel from squared distances is what lets the
estimator keep its T0 x T0 statistics up to date incrementally instead of re-reading d-dimensional
vectors (Sec. 4.1 of the paper; Prop. 4.1 makes all d output dimensions share one such matrix).
The formulas match gpytorch's ``RBFKernel`` and ``MaternKernel`` (unit output scale).
"""
from __future__ import annotations

import math

SQRT3 = math.sqrt(3.0)
SQRT5 = math.sqrt(5.0)


def from_sqdist(sqdist, lengthscale, name: str, xp):
    """k(r) for r^2 = ``sqdist`` / lengthscale^2, with k(0) = 1."""
    r2 = xp.maximum(sqdist, 0.0 * sqdist) / (lengthscale * lengthscale)
    if name == "rbf":
        return xp.exp(-0.5 * r2)
    # The +1e-30 keeps the gradient of sqrt finite at r = 0 for autodiff backends; it changes r by
    # at most 1e-15 and the kernel value not at all in float32/float64.
    r = xp.sqrt(r2 + 1e-30)
    if name == "matern12":
        return xp.exp(-r)
    if name == "matern32":
        return (1.0 + SQRT3 * r) * xp.exp(-SQRT3 * r)
    if name == "matern52":
        return (1.0 + SQRT5 * r + (5.0 / 3.0) * r2) * xp.exp(-SQRT5 * r)
    raise ValueError(f"kernel must be one of 'rbf', 'matern12', 'matern32', 'matern52'; got {name!r}")
