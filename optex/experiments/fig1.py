"""Fig. 1 (and the appendix comparison, Fig. 5 of the NeurIPS version): one iteration of OptEx and of
each baseline, traced on 2-D functions.

For every sequential iteration t the trace holds, per method:

- ``proxy``: the N points theta_{t-1}^{(s-1)} at which a true gradient is evaluated (for OptEx they
  come from N-1 proxy steps driven by the estimate mu_{t-1}; for Target from true gradients; for
  LineSearch from steps of growing length along the last true gradient; Vanilla has one);
- ``step``: theta_t^{(s)}, the point each process reaches with one step of the base optimizer along
  the true gradient at its proxy point (Algorithm 1, line 7);
- ``exact``: the path of N plain base-optimizer steps from theta_{t-1} with the optimizer state held
  there, i.e. what the N proxy steps try to anticipate;
- ``iterate``: theta_t, the process kept by the selection rule (line 9).

The runner reads the points from ``OptEx.step(..., trace=True)``, which reports them (and takes every
process's real step, which Fig. 1 draws) without changing the algorithm.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch

from .. import _validation as check
from .. import problems
from ..results import ResultStore, Unit, run_units
from ..verify import Prefix
from ..torch import OptEx
from ..torch.adapter import OPTIMIZERS, optimizer_args, resolve_device

FIGURE_ID = "fig1"
FUNCTIONS = ("rosenbrock", "ackley")
METHODS = ("vanilla", "target", "linesearch", "optex")
PROXY = {"vanilla": "none", "target": "target", "linesearch": "linesearch", "optex": "kernel"}
FIRST_DRAWN = 3  # the first iteration the chapter draws: OptEx's first ones are a cold start
# Starting points from which Adam's first iterations cross the interesting part of each landscape:
# down into Rosenbrock's curved valley and along it, and into Ackley's ripples beside the central well.
STARTS = {"rosenbrock": (-0.5, 1.5), "ackley": (1.6, -1.2)}
PROFILES = {"paper": {"iterations": 30}, "quick": {"iterations": 12}}
KINDS = ("iterate", "proxy", "step", "exact")


@dataclass(frozen=True)
class Config:
    """Settings of the Fig. 1 traces (2-D, deterministic, from ``STARTS``). ``iterations=None`` takes the
    profile's. ``device`` is where the runs happen (not part of the result's identity)."""

    profile: str = "paper"
    functions: tuple[str, ...] = FUNCTIONS
    methods: tuple[str, ...] = METHODS
    parallelism: int = 5  # N
    history: int = 50  # T0
    kernel: str = "matern52"
    optimizer: str = "adam"
    lr: float = 0.15
    iterations: int | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        check.choice("profile", self.profile, PROFILES)
        check.choices("functions", self.functions, tuple(STARTS))
        check.choices("methods", self.methods, METHODS)
        if check.positive_int("parallelism", self.parallelism) < 2:
            raise ValueError(f"parallelism must be >= 2 for a trace with proxy points, got {self.parallelism}")
        check.positive_int("history", self.history)
        check.choice("kernel", self.kernel, check.KERNELS)
        check.choice("optimizer", self.optimizer, OPTIMIZERS)
        check.positive_float("lr", self.lr)
        if self.iterations is None:
            object.__setattr__(self, "iterations", PROFILES[self.profile]["iterations"])
        check.positive_int("iterations", self.iterations)
        check.choice("device", self.device, check.DEVICES)


def exact_path(optimizer: OptEx, loss_fn, steps: int) -> torch.Tensor:
    """theta_{t-1} and ``steps`` plain steps of the base optimizer from it, starting from the state
    of the current iterate (process 0, the first parameter group) -> (steps + 1) x d."""
    base = optimizer.optimizer
    # A deep copy: load_state_dict may keep the very tensors, which the plain steps then update in place.
    state = copy.deepcopy(base.state_dict())
    theta = optimizer.theta.requires_grad_(True)
    group = dict(state["param_groups"][0], params=[0])
    plain = type(base)([theta], **base.defaults)
    plain.load_state_dict({"state": {0: state["state"][0]} if 0 in state["state"] else {}, "param_groups": [group]})
    path = [theta.detach().clone()]
    for _ in range(steps):
        plain.zero_grad()
        loss_fn(theta, None).backward()
        plain.step()
        path.append(theta.detach().clone())
    return torch.stack(path)


def _rows(function: str, method: str, iteration: int, kind: str, points: np.ndarray, values: np.ndarray,
          selected: int, processes: range | None = None) -> list[dict[str, Any]]:
    processes = range(len(points)) if processes is None else processes
    return [dict(function=function, method=method, iteration=iteration, kind=kind, process=s, x=float(p[0]),
                 y=float(p[1]), value=float(v), selected=s == selected) for s, p, v in zip(processes, points, values)]


def run_unit(config: Config, function: str, method: str) -> pd.DataFrame:
    """The trace of one method on one function: T iterations, tidy rows (one per point)."""
    problem = problems.make(function, 2)
    device = resolve_device(config.device, "float64")
    start = torch.tensor(STARTS[function], dtype=torch.float64, device=device)
    n = 1 if method == "vanilla" else config.parallelism
    # warmup_pairs=2: the committed traces were made with the two-pair cold start of earlier versions.
    optimizer = OptEx(start.clone(), parallelism=n, history=config.history, kernel=config.kernel,
                      proxy=PROXY[method], warmup_pairs=2, **optimizer_args(config.optimizer, config.lr))

    def loss_fn(params, batch):
        return problem(params, torch)

    def values(points: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return problem(points, torch).cpu().numpy()

    theta0 = start.unsqueeze(0)
    rows = _rows(function, method, 0, "iterate", theta0.cpu().numpy(), values(theta0), selected=0)
    for t in range(1, config.iterations + 1):
        exact = exact_path(optimizer, loss_fn, config.parallelism)
        info = optimizer.step(loss_fn, trace=True)
        theta = optimizer.theta.unsqueeze(0)
        chosen = info.selected
        rows += _rows(function, method, t, "exact", exact.cpu().numpy(), values(exact), selected=-1)
        rows += _rows(function, method, t, "proxy", info.points.cpu().numpy(), values(info.points), chosen)
        rows += _rows(function, method, t, "step", info.stepped.cpu().numpy(), values(info.stepped), chosen)
        rows += _rows(function, method, t, "iterate", theta.cpu().numpy(), values(theta), chosen,
                      range(chosen, chosen + 1))
    frame = pd.DataFrame(rows)
    frame["gap"] = frame["value"] - problem.minimum
    return frame


def run(config: Config, results_dir: str | Path | None = "results", figure_id: str = FIGURE_ID,
        progress: bool = True, commit: str | None = None, compute: bool = True) -> pd.DataFrame:
    """The traces of every function x method (cached per pair)."""
    store = None if results_dir is None else ResultStore(results_dir, figure_id, config)
    units = [Unit(f"{function}-{method}", lambda f=function, m=method: run_unit(config, f, m),
                  {"function": function, "method": method})
             for function in config.functions for method in config.methods]
    frames = run_units(store, units, device=config.device, backend="torch", commit=commit, compute=compute,
                       progress=progress, label=figure_id)
    return pd.concat(frames, ignore_index=True)


def verification(config: Config) -> list[Prefix]:
    """What ``book verify`` recomputes: the first 3 iterations of every trace (the cold start and two
    proxy iterations of OptEx)."""
    short = replace(config, iterations=min(config.iterations, 3))
    return [Prefix(f"{f}-{m}", lambda f=f, m=m: run_unit(short, f, m))
            for f in config.functions for m in config.methods]


def check_shown_iteration(shown_iteration: Any, last: int) -> int:
    """The iteration Fig. 1 draws: an integer from :data:`FIRST_DRAWN` to ``last`` (the trace's)."""
    if (isinstance(shown_iteration, bool) or not isinstance(shown_iteration, int)
            or not FIRST_DRAWN <= shown_iteration <= last):
        raise ValueError(f"shown_iteration must be an integer from {FIRST_DRAWN} to {last} (the trace's length), got "
                         f"{shown_iteration!r}")
    return shown_iteration


def chapter_configs(page: Any, functions: Sequence[str] = FUNCTIONS, parallelism: int = 5,
                    lr: float = 0.15, shown_iteration: int = 8, animate: bool = True) -> Callable[[str], list[Config]]:
    """The configs of the Fig. 1 chapter by profile, for :meth:`optex.report.Page.results`: one
    :class:`Config` with the traced ``functions`` (a non-empty list), N and Adam's learning rate, on the
    ``page``'s device (the traces are deterministic: the page's seeds are not used). Both profiles are
    built here, and the chapter's ``shown_iteration`` (within the longer profile's trace; the chapter
    checks it against the trace it shows) and ``animate`` checked, so that a bad value fails before any
    work starts."""
    if not isinstance(functions, (list, tuple)) or not functions:
        raise ValueError(f"functions must be a non-empty list of function names, got {functions!r}")
    check.flag("animate", animate)

    def configs(profile: str) -> list[Config]:
        return [Config(profile=profile, functions=tuple(functions), parallelism=parallelism, lr=lr,
                       device=page.device)]

    longest = max(configs(profile)[0].iterations for profile in PROFILES)
    check_shown_iteration(shown_iteration, longest)
    return configs


__all__ = ["Config", "FIGURE_ID", "FIRST_DRAWN", "FUNCTIONS", "KINDS", "METHODS", "chapter_configs",
           "check_shown_iteration", "exact_path", "run",
           "run_unit", "verification"]
