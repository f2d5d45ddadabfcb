"""Backend-neutral result types."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StepInfo:
    """What one sequential iteration of OptEx (Algorithm 1) did and cost.

    ``loss`` and ``grad_norm`` are those of the selected process, measured at the point where its true
    gradient was evaluated (before its optimizer step). ``losses`` holds all N such losses.
    ``proxy_cosine`` / ``proxy_rel_error`` compare the estimator's mean mu(theta^(s-1)) with the true
    gradient at each of the N-1 points where a proxy step used it (free: the truth is evaluated there
    anyway); they are empty for iterations without kernel proxy steps.
    """

    loss: float
    grad_norm: float
    selected: int
    evaluations: int
    losses: tuple[float, ...]
    proxy_cosine: tuple[float, ...]
    proxy_rel_error: tuple[float, ...]
    lengthscale: float | None
    time_proxy: float
    time_eval: float
    time_update: float
    advanced: int = 0  # Picard only: exact base-optimizer steps accepted in this round

    @property
    def time_total(self) -> float:
        return self.time_proxy + self.time_eval + self.time_update
