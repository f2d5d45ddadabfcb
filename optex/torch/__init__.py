"""PyTorch backend: ``GradientEstimator`` and ``OptEx`` (same public names as ``optex.jax``)."""
from .._types import StepInfo
from .estimator import GradientEstimator
from .optex import OptEx

__all__ = ["GradientEstimator", "OptEx", "StepInfo"]
