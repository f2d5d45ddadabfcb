"""PyTorch backend: ``GradientEstimator`` and ``OptEx`` (same public names as ``optex.jax``)."""
from .._types import StepInfo
from .estimator import GradientEstimator
from .optex import OptEx
from .picard import Picard

__all__ = ["GradientEstimator", "OptEx", "Picard", "StepInfo"]
