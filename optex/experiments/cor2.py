"""Cor. 2 and Thm. 2: how the number of sequential iterations falls with the parallelism N.

Two parts, both made of synthetic-runner runs (``optex.experiments.synthetic``):

- ``scaling``: on a noisy quadratic (SGD, Gaussian gradient noise of Assumption 1) and on the
  synthetic suite of Sec. 6.1 (Adam, exact gradients), the sequential iterations OptEx, Target and
  LineSearch need to reach the optimality gap Vanilla has after its T iterations, for each N. The
  speedup over Vanilla is fitted as speedup ~ N^a (Cor. 2 states a = 1/2 for SGD-based OptEx in the
  worst case; Target, N exact steps per iteration, has a = 1 by construction).
- ``stability``: SGD-based OptEx on the noisy quadratic for a grid of learning rates and N: whether
  the run reaches a fixed fraction of its initial gap. Thm. 2 says that for a fixed learning rate
  convergence is only guaranteed below some N; this measures where it stops in practice.

Runs with N >= 8 get a shorter budget (``budget``) because an N-fold parallel method that is not
even 2x faster than Vanilla is censored there anyway, and Target's cost grows like N^2.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import pandas as pd

from .. import _validation as check
from ..analysis import mean_ci
from . import synthetic

FIGURE_ID = "cor2"
PARTS = ("scaling", "stability")
PANELS = ("quadratic", "sphere", "ackley", "rosenbrock", "levy")
METHODS = ("optex", "target", "linesearch")
PROFILES = {
    "paper": dict(parallelisms=(1, 2, 4, 8, 16), dim=1_000, iterations=80, quadratic_iterations=80,
                  stability_lrs=(0.05, 0.1, 0.2, 0.4), stability_parallelisms=(1, 2, 4, 8, 16, 32),
                  stability_iterations=120, seeds=5),
    "quick": dict(parallelisms=(1, 2, 4, 8), dim=200, iterations=32, quadratic_iterations=60,
                  stability_lrs=(0.1, 0.2, 0.4), stability_parallelisms=(1, 2, 4, 8, 16), stability_iterations=60,
                  seeds=2),
}
ROSENBROCK_CLIP = 100.0  # as in Fig. 2 (the official example)


def budget(iterations: int, parallelism: int) -> int:
    """Sequential iterations given to a run with parallelism N: T for N <= 4, T * sqrt(4 / N) above."""
    return math.ceil(iterations * min(1.0, math.sqrt(4.0 / parallelism)))


class Unit(NamedTuple):
    """One synthetic-runner configuration of the figure and where it belongs."""

    part: str
    panel: str
    parallelism: int
    lr: float
    config: synthetic.Config


def _parallelisms(name: str, values: Any) -> tuple[int, ...]:
    if len(check.positive_ints(name, values)) < 2 or 1 not in values:
        raise ValueError(f"{name} must be a tuple of at least 2 values of N including 1 (Vanilla), got {values!r}")
    return tuple(values)


@dataclass(frozen=True)
class Config:
    """Settings of the Cor. 2 experiment. Fields left at None take the profile's value (``PROFILES``)."""

    profile: str = "paper"
    parts: tuple[str, ...] = PARTS
    panels: tuple[str, ...] = PANELS
    methods: tuple[str, ...] = METHODS
    parallelisms: tuple[int, ...] | None = None  # N values of the scaling part (1 = Vanilla)
    dim: int | None = None  # d of the synthetic panels
    iterations: int | None = None  # Vanilla's budget T on the synthetic panels (Adam)
    lr: float = 0.01  # Adam's learning rate on the synthetic panels
    quadratic_dim: int = 100
    quadratic_condition: float = 10.0
    quadratic_noise: float = 0.1  # sigma of the gradient noise on the quadratic
    quadratic_lr: float = 0.05  # SGD's learning rate on the quadratic (scaling part)
    quadratic_iterations: int | None = None
    history: int = 50  # T0
    gp_noise: float = 1e-3  # sigma^2 of OptEx's GP
    stability_lrs: tuple[float, ...] | None = None
    stability_parallelisms: tuple[int, ...] | None = None
    stability_iterations: int | None = None
    target_ratio: float = 0.05  # stability: converged = gap <= target_ratio * initial gap within the budget
    seeds: int | tuple[int, ...] | None = None
    device: str = "cpu"
    backend: str = "torch"

    def __post_init__(self) -> None:
        check.fill_from_profile(self, PROFILES)
        for name, values, choices in (("parts", self.parts, PARTS), ("panels", self.panels, PANELS),
                                      ("methods", self.methods, METHODS)):
            check.choices(name, values, choices)
        _parallelisms("parallelisms", self.parallelisms)
        _parallelisms("stability_parallelisms", self.stability_parallelisms)
        check.positive_floats("stability_lrs", self.stability_lrs)
        for name in ("dim", "iterations", "quadratic_dim", "quadratic_iterations", "history", "stability_iterations"):
            check.positive_int(name, getattr(self, name))
        for name in ("lr", "quadratic_condition", "quadratic_noise", "quadratic_lr", "gp_noise"):
            check.positive_float(name, getattr(self, name))
        if not 0.0 < check.positive_float("target_ratio", self.target_ratio) < 1.0:
            raise ValueError(f"target_ratio must lie in (0, 1), got {self.target_ratio}")
        check.seed_list(self.seeds)
        self.units()  # every synthetic configuration validates the remaining fields

    def _panel(self, panel: str, method: str, parallelism: int, lr: float | None = None,
               iterations: int | None = None) -> synthetic.Config:
        common = dict(parallelism=parallelism, history=self.history, noise=self.gp_noise, seeds=self.seeds,
                      methods=(method,), device=self.device, backend=self.backend)
        if panel == "quadratic":
            return synthetic.Config(function="quadratic", dim=self.quadratic_dim, condition=self.quadratic_condition,
                                    grad_noise=self.quadratic_noise, optimizer="sgd",
                                    lr=self.quadratic_lr if lr is None else lr,
                                    iterations=budget(iterations or self.quadratic_iterations, parallelism), **common)
        return synthetic.Config(function=panel, dim=self.dim, optimizer="adam", lr=self.lr,
                                iterations=budget(self.iterations, parallelism),
                                clip=ROSENBROCK_CLIP if panel == "rosenbrock" else None, **common)

    def units(self) -> list[Unit]:
        """Every synthetic configuration of the figure, tagged with its part, panel, N and learning rate."""
        out = []
        if "scaling" in self.parts:
            for panel in self.panels:
                lr = self.quadratic_lr if panel == "quadratic" else self.lr
                for n in self.parallelisms:
                    for method in (("vanilla",) if n == 1 else self.methods):
                        out.append(Unit("scaling", panel, n, lr, self._panel(panel, method, n)))
        if "stability" in self.parts:
            for lr in self.stability_lrs:
                for n in self.stability_parallelisms:
                    method = "vanilla" if n == 1 else "optex"
                    out.append(Unit("stability", "quadratic", n, lr,
                                    self._panel("quadratic", method, n, lr, self.stability_iterations)))
        return out

    def unit_configs(self) -> list[synthetic.Config]:
        """The synthetic configurations whose cached results make up this figure."""
        return [unit.config for unit in self.units()]


def run(config: Config, results_dir: str | Path | None = "results", figure_id: str = FIGURE_ID,
        progress: bool = True, commit: str | None = None, compute: bool = True) -> pd.DataFrame:
    """All runs as one tidy table (one row per part x panel x method x N x lr x seed x iteration),
    each synthetic configuration cached by ``synthetic.run`` under ``figure_id``."""
    frames = []
    for unit in config.units():
        frame = synthetic.run(unit.config, results_dir=results_dir, figure_id=figure_id, progress=progress,
                              commit=commit, compute=compute)
        frame.insert(0, "lr", unit.lr)
        frame.insert(0, "parallelism", unit.parallelism)
        frame.insert(0, "panel", unit.panel)
        frame.insert(0, "part", unit.part)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _first_hit(group: pd.DataFrame, target: float) -> float:
    hit = group.loc[(group["iteration"] > 0) & (group["gap"] <= target), "iteration"]
    return float(hit.min()) if len(hit) else math.nan


def iterations_to_target(frame: pd.DataFrame, target_ratio: float = 0.05) -> pd.DataFrame:
    """One row per part x panel x method x N x lr x seed: the target gap, the first sequential
    iteration at or below it (NaN: never, censored) and, for the scaling part, the speedup over Vanilla.

    Scaling: the target is Vanilla's gap after its T iterations on the same seed, and the speedup divides
    the iterations Vanilla itself first needed to get there. Stability: the target is ``target_ratio``
    times the initial gap.
    """
    rows = []
    scaling = frame[frame["part"] == "scaling"]
    for (panel, seed), runs in scaling.groupby(["panel", "seed"], sort=False):
        vanilla = runs[runs["method"] == "vanilla"]
        if vanilla.empty:
            raise ValueError(f"scaling panel {panel!r} has no Vanilla run (N = 1) for seed {seed}")
        target = float(vanilla.loc[vanilla["iteration"].idxmax(), "gap"])
        reference = _first_hit(vanilla, target)
        for (method, n), group in runs.groupby(["method", "parallelism"], sort=False):
            hit = _first_hit(group, target)
            rows.append(dict(part="scaling", panel=panel, method=method, parallelism=n, lr=group["lr"].iloc[0],
                             seed=seed, target=target, iterations=hit, reached=not math.isnan(hit),
                             speedup=reference / hit))
    stability = frame[frame["part"] == "stability"]
    for (lr, n, seed), group in stability.groupby(["lr", "parallelism", "seed"], sort=False):
        target = target_ratio * float(group.loc[group["iteration"] == 0, "gap"].iloc[0])
        hit = _first_hit(group, target)
        rows.append(dict(part="stability", panel="quadratic", method=group["method"].iloc[0], parallelism=n, lr=lr,
                         seed=seed, target=target, iterations=hit, reached=not math.isnan(hit), speedup=math.nan,
                         final_gap=float(group["gap"].iloc[-1])))
    return pd.DataFrame(rows)


def with_vanilla_as_n1(reach: pd.DataFrame) -> pd.DataFrame:
    """The scaling rows with Vanilla's row copied to N = 1 of every method (all methods are Vanilla there)."""
    scaling = reach[reach["part"] == "scaling"]
    methods = [m for m in scaling["method"].unique() if m != "vanilla"]
    vanilla = scaling[scaling["method"] == "vanilla"]
    copies = [vanilla.assign(method=m) for m in methods]
    return pd.concat([scaling[scaling["method"] != "vanilla"], *copies], ignore_index=True)


def speedup_exponents(reach: pd.DataFrame) -> pd.DataFrame:
    """Per panel and method: the exponent a of speedup = N^a (a line through speedup 1 at N = 1 on
    log-log axes, least squares per seed), its mean and 95% t-interval over seeds, and how many
    (N, seed) runs were censored (left out of the fit)."""
    rows = []
    for (panel, method), group in with_vanilla_as_n1(reach).groupby(["panel", "method"], sort=False):
        slopes = []
        for _, runs in group.groupby("seed"):
            ok = runs[runs["reached"] & (runs["parallelism"] > 1)]
            if len(ok):
                x, y = np.log(ok["parallelism"].to_numpy(float)), np.log(ok["speedup"].to_numpy(float))
                slopes.append(float((x * y).sum() / (x * x).sum()))
        mean, low, high = mean_ci(np.asarray(slopes))
        rows.append(dict(panel=panel, method=method, exponent=mean, low=low, high=high, seeds=len(slopes),
                         censored=int((~group["reached"]).sum())))
    return pd.DataFrame(rows)


def largest_converging(reach: pd.DataFrame) -> pd.DataFrame:
    """Per learning rate of the stability part: the largest N such that this N and every smaller one
    reached the target on a majority of seeds (NaN if even N = 1 did not)."""
    stability = reach[reach["part"] == "stability"]
    rows = []
    for lr, group in stability.groupby("lr"):
        share = group.groupby("parallelism")["reached"].mean().sort_index()
        largest = math.nan
        for n, fraction in share.items():
            if fraction <= 0.5:
                break
            largest = float(n)
        rows.append(dict(lr=lr, largest_n=largest, tried=int(share.index.max())))
    return pd.DataFrame(rows)


STABILITY_ID = "cor2-stability"  # the figure id of the stability part


def chapter_configs(page: Any, panels: Sequence[str], quadratic_noise: float, quadratic_lr: float, lr: float,
                    target_ratio: float) -> Callable[[str], list[Config]]:
    """The config of the Cor. 2 chapter by profile, for :meth:`optex.report.Page.results`: ``panels``,
    the quadratic's gradient noise sigma ``quadratic_noise`` and SGD learning rate ``quadratic_lr``, Adam's
    ``lr`` on the synthetic functions, the stability part's ``target_ratio``, with the ``page``'s seeds
    (None: the profile's), device and backend. Both profiles are built here, so that a bad knob fails
    before any work starts."""
    if not isinstance(panels, (list, tuple)) or not panels:
        raise ValueError(f"panels must be a non-empty list of panel names, got {panels!r}")

    def configs(profile: str) -> list[Config]:
        return [Config(profile=profile, panels=tuple(panels), quadratic_noise=quadratic_noise,
                       quadratic_lr=quadratic_lr, lr=lr, target_ratio=target_ratio, seeds=page.seeds,
                       device=page.device, backend=page.backend)]

    for profile in PROFILES:
        configs(profile)
    return configs


__all__ = ["Config", "FIGURE_ID", "METHODS", "PANELS", "PARTS", "PROFILES", "STABILITY_ID", "Unit", "budget",
           "chapter_configs", "iterations_to_target", "largest_converging", "run", "speedup_exponents",
           "with_vanilla_as_n1"]
