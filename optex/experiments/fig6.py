"""Fig. 6 (App. B.3 of the NeurIPS version): ablations of OptEx on Rosenbrock.

(a) ``parallel``: OptEx vs the same run with its N evaluations done one after another, each counted
    as a sequential iteration (derived from the same runs: x = cumulative gradient evaluations);
(b) ``select``: theta_t = last process / lowest loss / lowest gradient norm;
(c) ``history``: T0 in {5, 10, 20, 50, 100};
(d) ``parallelism``: N in {1, 2, 3, 5, 8, 10} (N = 1 is Vanilla);
(e) ``proxy``: the GP mean vs the last true gradient as the surrogate of the N-1 proxy steps (the
    trivial-surrogate ablation, ``last_gradient``): same evaluations, same selection.
Panel ``reference`` holds the long Vanilla run (N*T iterations or more) that the effective speedup of
every panel reads (``optex.analysis.effective_speedup``); it is not a figure panel.
The paper's values for these sweeps are UNCONFIRMED (spec Sec. 5.2); these are our choices. Settings
otherwise as Fig. 2's Rosenbrock panel.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import pandas as pd

from .. import _validation as check
from . import fig2, synthetic

FIGURE_ID = "fig6"
PANELS = ("parallel", "select", "history", "parallelism", "proxy")
PROXY_SETTINGS = {"optex": "kernel", "last_gradient": "last_gradient"}  # method -> the setting shown


@dataclass(frozen=True)
class Config:
    profile: str = "paper"
    function: str = "rosenbrock"
    selects: tuple[str, ...] = ("last", "min_loss", "min_grad_norm")
    histories: tuple[int, ...] = (5, 10, 20, 50, 100)
    parallelisms: tuple[int, ...] = (1, 2, 3, 5, 8, 10)
    seeds: int | tuple[int, ...] = 5
    device: str = "cpu"
    backend: str = "torch"

    def __post_init__(self) -> None:
        check.choices("selects", self.selects, check.SELECT)
        check.positive_ints("histories", self.histories)
        check.positive_ints("parallelisms", self.parallelisms)
        self.base()

    def base(self) -> synthetic.Config:
        """The Fig. 2 panel of ``function`` in this profile, OptEx only (N = 5, T0 = 50, last)."""
        panel = fig2.Config(profile=self.profile, panels=(self.function,), methods=("optex",), seeds=self.seeds,
                            device=self.device, backend=self.backend)
        return panel.synthetic_configs()[self.function]


    def unit_configs(self) -> list[synthetic.Config]:
        """The synthetic configurations whose cached results make up this figure."""
        base = self.base()
        configs = [replace(base, methods=("vanilla", *PROXY_SETTINGS))]
        configs += [replace(base, select=select) for select in self.selects]
        configs += [replace(base, history=history) for history in self.histories]
        configs += [replace(base, parallelism=n, methods=("vanilla" if n == 1 else "optex",)) for n in self.parallelisms]
        return configs


def _sequential(frame: pd.DataFrame, budget: int) -> pd.DataFrame:
    """The same OptEx run with its evaluations made one after another: x = cumulative evaluations."""
    seq = frame[frame["evaluations"] <= budget].copy()
    seq["iteration"] = seq["evaluations"]
    return seq


def run(config: Config, results_dir: str | None = "results", figure_id: str = FIGURE_ID, progress: bool = True,
        commit: str | None = None, compute: bool = True) -> pd.DataFrame:
    """Tidy table with ``panel`` and ``setting`` columns (one curve per setting)."""
    kwargs = dict(results_dir=results_dir, figure_id=figure_id, progress=progress, commit=commit, compute=compute)
    reference, *rest = config.unit_configs()
    frames = []

    def add(panel: str, setting: str, frame: pd.DataFrame) -> None:
        frame = frame.copy()
        frame.insert(0, "setting", setting)
        frame.insert(0, "panel", panel)
        frames.append(frame)

    both = synthetic.run(reference, **kwargs)
    optex = both[both.method == "optex"]
    n = reference.parallelism
    add("parallel", "vanilla", both[both.method == "vanilla"])
    add("parallel", f"parallel (N={n})", optex)
    add("parallel", f"sequential (N={n})", _sequential(optex, reference.iterations))
    for method, setting in PROXY_SETTINGS.items():
        add("proxy", setting, both[both.method == method])
    add("reference", synthetic.REFERENCE, both[both.method == synthetic.REFERENCE])
    selects, rest = rest[: len(config.selects)], rest[len(config.selects):]
    histories, sizes = rest[: len(config.histories)], rest[len(config.histories):]
    for sub in selects:
        add("select", sub.select, synthetic.run(sub, **kwargs))
    for sub in histories:
        add("history", f"T0={sub.history}", synthetic.run(sub, **kwargs))
    for sub in sizes:
        add("parallelism", f"N={sub.parallelism}", synthetic.run(sub, **kwargs))
    return pd.concat(frames, ignore_index=True)


CHAPTER_SEEDS = {"paper": {"seeds": 5}, "quick": {"seeds": 2}}
PICARD_METHODS = ("vanilla", "target", "optex", "picard")  # the exact parallel competitor and its references


def chapter_configs(page: Any, selects: Sequence[str], histories: Sequence[int], parallelisms: Sequence[int],
                    picard_tol: float) -> tuple[Callable[[str], list[Config]], Callable[[str], list[synthetic.Config]]]:
    """The configs of the Fig. 6 chapter by profile, for :meth:`optex.report.Page.results`: the ablations
    (``fig6``) over ``selects``, ``histories`` (T0) and ``parallelisms`` (N), and the Picard comparison
    (``fig6-picard``: the Rosenbrock panel with N = 5, T0 = 50, always on torch, Picard accepting an
    iterate below the relative change ``picard_tol``), with the ``page``'s seeds and device. Both profiles
    are built here, so that a bad knob fails before any work starts."""

    def ablations(profile: str) -> list[Config]:
        return [Config(profile=profile, selects=tuple(selects), histories=tuple(histories),
                       parallelisms=tuple(parallelisms), device=page.device, backend=page.backend,
                       **page.scale(profile, CHAPTER_SEEDS))]

    def picard(profile: str) -> list[synthetic.Config]:
        base = Config(profile=profile, selects=("last",), histories=(50,), parallelisms=(5,), device=page.device,
                      backend="torch", **page.scale(profile, CHAPTER_SEEDS)).base()
        return [replace(base, methods=PICARD_METHODS, picard_tol=picard_tol)]

    for profile in fig2.PROFILES:
        ablations(profile)
        picard(profile)
    return ablations, picard


__all__ = ["CHAPTER_SEEDS", "Config", "FIGURE_ID", "PANELS", "PICARD_METHODS", "chapter_configs", "run"]
