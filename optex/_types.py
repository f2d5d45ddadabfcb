"""Backend-neutral result types."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StepInfo:
    """What one sequential iteration of OptEx (Algorithm 1) did and cost.

    ``loss`` and ``grad_norm`` are those of the selected process, measured at the point where its true
    gradient was evaluated (before its optimizer step). ``losses`` holds all N such losses.
    ``proxy_cosine`` / ``proxy_rel_error`` compare the estimator's mean mu(theta^(s-1)) with the true
    gradient at each of the N-1 points where a proxy step used it (free: the truth is evaluated there
    anyway); they are empty for iterations without kernel proxy steps (``proxy="last_gradient"`` reports
    the same comparison for its constant proxy gradient).

    ``nonfinite`` lists the processes whose loss or gradient was non-finite: they took no real step, were
    not selected and did not enter the history. ``skipped`` is True when every process was non-finite:
    the iterate and the optimizer state were then left exactly as they were.

    ``points``, ``mus`` and ``stepped`` are filled only by ``step(..., trace=True)``: the N evaluated points
    theta^(0..N-1), the N-1 gradients that drove the proxy steps, and the N points the processes reach with
    their real step theta_t^(s) (backend arrays, N x d).
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
    nonfinite: tuple[int, ...] = ()
    skipped: bool = False
    points: Any = None
    mus: Any = None
    stepped: Any = None

    @property
    def time_total(self) -> float:
        return self.time_proxy + self.time_eval + self.time_update


def report_nonfinite(info: StepInfo, iteration: int, on_nonfinite: str) -> None:
    """The one RuntimeWarning (or, with ``on_nonfinite="raise"``, FloatingPointError) naming ``iteration``
    and its non-finite processes; nothing when every process was finite. Shared by both backends."""
    if not info.nonfinite:
        return
    what = (f"OptEx iteration {iteration}: process(es) {list(info.nonfinite)} evaluated to a non-finite "
            "loss or gradient; they took no step, were not selected and did not enter the history")
    if info.skipped:
        what += "; every process was non-finite, so the iterate and the optimizer state were left unchanged"
    if on_nonfinite == "raise":
        raise FloatingPointError(what)
    warnings.warn(what, RuntimeWarning, stacklevel=4)  # the caller of step()
