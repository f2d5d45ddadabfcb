"""JAX backend: ``GradientEstimator`` and ``OptEx`` (same public names as ``optex.torch``), plus the
functional core as an optax transformation, ``optex_transform``.

Float64 needs ``jax.config.update("jax_enable_x64", True)`` before any array is created (the
synthetic runner's adapter does it when ``dtype="float64"`` is requested).
"""
from .._types import StepInfo
from .core import IterationInfo, OptExState, iterate, optex_transform
from .estimator import GradientEstimator, History
from .optex import OptEx

__all__ = ["GradientEstimator", "OptEx", "StepInfo", "optex_transform", "OptExState", "IterationInfo", "History",
           "iterate"]
