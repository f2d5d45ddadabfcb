"""Fig. 2 (Sec. 6.1): optimality gap vs sequential iterations on the synthetic suite, N = 5.

Paper profile (spec Sec. 9, from the official example; d, T and the optimizer are UNCONFIRMED in the
paper's surviving text): d = 1e5, T = 40, Adam lr 0.01, theta_0 ~ U(-1, 1)^d, T0 = 50, Matern-5/2,
gradient clipping at 100 for Rosenbrock, 5 seeds, plus Ackley at 10x the dimension. With
``noise_ratio > 0`` the same suite runs with Gaussian gradient noise (Assumption 1) whose per-coordinate
sigma is ``noise_ratio`` times the RMS gradient coordinate at seed 0's theta_0 (so the noise means the
same thing on every function); that is the stochastic variant (figure id ``fig2-noisy``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import pandas as pd
import torch

from .. import _validation as check
from .. import problems
from . import synthetic

FIGURE_ID = "fig2"
PANELS = ("sphere", "ackley", "rosenbrock", "levy", "ackley-10x")
PROFILES = {"paper": {"dim": 100_000, "iterations": 40}, "quick": {"dim": 1_000, "iterations": 20}}
ROSENBROCK_CLIP = 100.0  # as in the official example (examples/test_optex.py)


@dataclass(frozen=True)
class Config:
    profile: str = "paper"
    panels: tuple[str, ...] = PANELS
    methods: tuple[str, ...] = ("vanilla", "linesearch", "target", "optex")
    parallelism: int = 5
    history: int = 50
    optimizer: str = "adam"
    lr: float = 0.01
    noise_ratio: float = 0.0
    warmup_pairs: int = 1  # Vanilla iterations of OptEx until its history holds this many pairs (2: the old rule)
    seeds: int | tuple[int, ...] = 5
    device: str = "cpu"
    backend: str = "torch"

    def __post_init__(self) -> None:
        check.choice("profile", self.profile, PROFILES)
        check.choices("panels", self.panels, PANELS)
        check.nonnegative_float("noise_ratio", self.noise_ratio)
        self.synthetic_configs()  # validates every other field through synthetic.Config

    def synthetic_configs(self) -> dict[str, synthetic.Config]:
        """One synthetic.Config per panel."""
        size = PROFILES[self.profile]
        out = {}
        for panel in self.panels:
            function = panel.removesuffix("-10x")
            dim = size["dim"] * (10 if panel.endswith("-10x") else 1)
            base = synthetic.Config(
                function=function, dim=dim, iterations=size["iterations"], parallelism=self.parallelism,
                history=self.history, optimizer=self.optimizer, lr=self.lr, seeds=self.seeds,
                warmup_pairs=self.warmup_pairs,
                methods=tuple(m for m in self.methods if m != "large_batch") or ("vanilla",),
                clip=ROSENBROCK_CLIP if function == "rosenbrock" else None, device=self.device, backend=self.backend)
            sigma = self.noise_ratio * rms_gradient(base) if self.noise_ratio else 0.0
            out[panel] = replace(base, grad_noise=sigma, methods=self.methods)
        return out


    def unit_configs(self) -> list[synthetic.Config]:
        """The synthetic configurations whose cached results make up this figure."""
        return list(self.synthetic_configs().values())


def rms_gradient(config: synthetic.Config) -> float:
    """RMS coordinate of grad F at seed 0's initial point (float64), rounded to 3 significant digits."""
    problem = problems.make(config.function, config.dim)
    x = torch.tensor(synthetic.initial_point(config, config.seed_list[0]), dtype=torch.float64, requires_grad=True)
    problem(x, torch).backward()
    rms = float(x.grad.pow(2).mean().sqrt())
    return float(f"{rms:.3g}") if rms > 0 and math.isfinite(rms) else 0.0


def run(config: Config, results_dir: str | None = "results", figure_id: str | None = None, progress: bool = True,
        commit: str | None = None, compute: bool = True) -> pd.DataFrame:
    """All panels as one tidy table with a ``panel`` column (and ``grad_noise``)."""
    figure_id = figure_id or (FIGURE_ID if config.noise_ratio == 0 else f"{FIGURE_ID}-noisy")
    frames = []
    for panel, sub in config.synthetic_configs().items():
        frame = synthetic.run(sub, results_dir=results_dir, figure_id=figure_id, progress=progress, commit=commit,
                              compute=compute)
        frame.insert(0, "panel", panel)
        frame["dim"] = sub.dim
        frame["grad_noise"] = sub.grad_noise
        frame["noise_ratio"] = config.noise_ratio
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


CHAPTER_METHODS = ("vanilla", "linesearch", "target", "optex")  # the deterministic runs of the chapter
NOISY_METHODS = ("vanilla", "optex", "large_batch")  # with noisy gradients the rival is a larger batch
CHAPTER_SEEDS = {"paper": {"seeds": 5}, "quick": {"seeds": 2}}


def chapter_configs(page: Any, panels: Sequence[str], parallelism: int, lr: float, noise_ratios: Sequence[float]
                    ) -> tuple[Callable[[str], list[Config]], Callable[[str], list[Config]]]:
    """The configs of the Fig. 2 chapter by profile, for :meth:`optex.report.Page.results`: the
    deterministic suite on ``panels`` (``fig2``) and one noisy suite per ratio of ``noise_ratios``
    (``fig2-noisy``, without the 10x-dimension panel), Adam at ``lr`` with N = ``parallelism``, the
    ``page``'s seeds, device and backend. Both profiles are built here, so that a bad knob fails before
    any work starts."""
    if not isinstance(noise_ratios, (list, tuple)) or not noise_ratios or min(noise_ratios) <= 0:
        raise ValueError(f"noise_ratios must be a non-empty list of positive numbers, got {noise_ratios!r}")

    def figure(profile: str, noise_ratio: float = 0.0) -> Config:
        chosen = tuple(panels) if noise_ratio == 0 else tuple(p for p in panels if p != "ackley-10x")
        return Config(profile=profile, panels=chosen, methods=CHAPTER_METHODS if noise_ratio == 0 else NOISY_METHODS,
                      parallelism=parallelism, lr=lr, noise_ratio=noise_ratio, device=page.device,
                      backend=page.backend, **page.scale(profile, CHAPTER_SEEDS))

    def deterministic(profile: str) -> list[Config]:
        return [figure(profile)]

    def noisy(profile: str) -> list[Config]:
        return [figure(profile, ratio) for ratio in noise_ratios]

    for profile in PROFILES:
        deterministic(profile)
        noisy(profile)
    return deterministic, noisy


__all__ = ["CHAPTER_METHODS", "CHAPTER_SEEDS", "Config", "FIGURE_ID", "NOISY_METHODS", "PANELS", "PROFILES",
           "chapter_configs", "rms_gradient", "run"]
