"""Backend-neutral summaries of tidy result tables: the paper's speedup metric, the effective
(uncapped) speedup, plateaus and intervals over seeds.

Two speedups are kept side by side:

- the **paper's metric** (:func:`iterations_to_reach`, :func:`speedup_table`): the sequential
  iterations a method needs to reach the value Vanilla has at its last iteration T. It is capped: a
  method cannot do better than 1 iteration, and cold-start iterations cap it further;
- the **effective speedup** (:func:`effective_speedup`, :func:`effective_speedup_table`): at each
  sequential iteration t, how many iterations Vanilla needs to reach the method's best-so-far value,
  divided by t. It is read from a long Vanilla run in the same result (method ``"vanilla_long"``,
  N*T iterations or more); where even that run never gets there, the value is a lower bound and marked
  ``censored``. On a deterministic objective, Target with ``select="last"`` takes N plain steps per
  iteration, so its effective speedup is exactly N: a built-in check of the whole pipeline.

Both are computed per seed and summarised by the mean and a 95% Student-t interval over seeds.
Only deterministic metrics are used: the optimality gap on synthetic functions, or for stochastic
training a loss on a fixed evaluation set recorded on a fixed iteration grid (never the noisy
minibatch loss, whose running minimum favours the longer Vanilla run).
"""
from __future__ import annotations

import math
import re
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

# The long Vanilla run every runner adds where Vanilla competes with another method (unit and method
# name): N*T iterations on the methods' evaluation grid, continued to 2NT and 4NT while some method's
# best value is below the reference's best (beyond 4NT the effective speedup is a censored lower bound).
REFERENCE = "vanilla_long"
REFERENCE_GROWTH = (1, 2, 4)
PANEL_KEYS = ("panel", "function")  # the columns that tell the panels of a figure apart, where present
PLATEAU_DROP = 0.01  # a flat last quarter: the log of the best-so-far value falls by less than this


# ------------------------------------------------------------------------------------------ value ranges
Bounds = tuple[float | None, float | None]
UNBOUNDED: Bounds = (None, None)
# The range a quantity can take, by the name of its column (exact names first, then the patterns
# below): a 95% interval of a mean, drawn or tabled, never leaves it. Error rates are fractions in 0..1.
VALUE_BOUNDS: Mapping[str, Bounds] = MappingProxyType({
    "gap": (0.0, None), "speedup": (0.0, None), "effective_speedup": (0.0, None), "vanilla_equivalent": (0.0, None),
    "ratio": (0.0, None), "iterations": (0.0, None), "episodes": (0.0, None), "steps": (0.0, None),
    "error": (0.0, None), "rel_error": (0.0, None), "scaled_std": (0.0, None), "std": (0.0, None),
    "cosine": (-1.0, 1.0), "accuracy": (0.0, 1.0),
})
_BOUND_PATTERNS: tuple[tuple[re.Pattern, Bounds], ...] = (
    (re.compile(r"^(?:train|val|test)_error$"), (0.0, 1.0)),  # a misclassification rate
    (re.compile(r"(?:^|_)accuracy$"), (0.0, 1.0)),
    (re.compile(r"(?:^|_)cosine(?:_\w+)?$"), (-1.0, 1.0)),
    (re.compile(r"(?:^|_)loss$"), (0.0, None)),
    (re.compile(r"(?:^|_)rel_error(?:_\d+)?$"), (0.0, None)),
)
# Episode returns by gymnasium environment: CartPole-v1 pays 1 per step for at most 500 steps, Acrobot-v1
# -1 per step for at most 500, MountainCar-v0 -1 per step for at most 200; LunarLander has no fixed range.
RETURN_BOUNDS: Mapping[str, Bounds] = MappingProxyType({
    "CartPole-v1": (0.0, 500.0), "Acrobot-v1": (-500.0, 0.0), "MountainCar-v0": (-200.0, 0.0),
})


def value_bounds(column: str) -> Bounds:
    """The range of the quantity in ``column`` (:data:`VALUE_BOUNDS`, then the name patterns), or
    :data:`UNBOUNDED` where the name does not say (a return depends on the task: :func:`return_bounds`)."""
    if column in VALUE_BOUNDS:
        return VALUE_BOUNDS[column]
    return next((bounds for pattern, bounds in _BOUND_PATTERNS if pattern.search(column)), UNBOUNDED)


def return_bounds(task: str) -> Bounds:
    """The range of an episode's return (and of any average of returns) on an RL ``task`` of
    :data:`optex.experiments.rl.TASKS`: :data:`RETURN_BOUNDS` of its environment, else unbounded."""
    from .experiments.rl import TASKS

    return RETURN_BOUNDS.get(TASKS[task].env_id, UNBOUNDED) if task in TASKS else UNBOUNDED


def clip_to_bounds(values: Any, bounds: Bounds) -> np.ndarray:
    """``values`` limited to ``bounds`` (``None``: open on that side); NaN stays NaN."""
    low, high = bounds
    return np.clip(np.asarray(values, dtype=float), -np.inf if low is None else low, np.inf if high is None else high)


def mean_ci(values: np.ndarray, level: float = 0.95, bounds: Bounds = UNBOUNDED) -> tuple[float, float, float]:
    """Mean and Student-t confidence interval over independent seeds (NaN when fewer than 2), the
    interval cut at ``bounds``, the range the quantity can take (:func:`value_bounds`): over three
    seeds a t-interval of a positive speedup can reach below 0, or one of CartPole returns below 0,
    values no run can have. Tables mark a cut end (:func:`optex.tables.format_interval`)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(values.mean())
    if values.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + level / 2, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size))
    low, high = clip_to_bounds([mean - half, mean + half], bounds)
    return mean, float(low), float(high)


def _keys(frame: pd.DataFrame, by: Sequence[str] | None) -> list[str]:
    return [c for c in PANEL_KEYS if c in frame.columns] if by is None else list(by)


def _groups(frame: pd.DataFrame, keys: Sequence[str]):
    """(key tuple, rows) per group of ``keys`` (one group of everything when there are none)."""
    if not keys:
        yield (), frame
        return
    for key, group in frame.groupby(list(keys), sort=False):
        yield (key if isinstance(key, tuple) else (key,)), group


def iterations_to_reach(frame: pd.DataFrame, reference: str = "vanilla", metric: str = "gap") -> pd.DataFrame:
    """Per (function, method, seed): the first iteration whose ``metric`` is at or below the reference
    method's final value on the same seed, and the speedup over the reference: ``speedup`` divides
    the iterations the reference itself first needed to get there (it can plateau early), while
    ``speedup_vs_budget`` divides the reference's whole budget T.

    A run that never reaches the target is censored: ``reached`` is False and its iterations are NaN.
    The long reference run (``REFERENCE``) is not a method here.
    """
    frame = frame[frame["method"] != REFERENCE].reset_index(drop=True)
    keys = [c for c in ("panel", "function", "seed") if c in frame.columns]
    ref = frame[frame["method"] == reference]
    if ref.empty:
        raise ValueError(f"reference method {reference!r} is not in the results")
    last = ref.loc[ref.groupby(keys)["iteration"].idxmax()].set_index(keys)[metric].rename("target")
    rows = []
    for group_key, group in frame.groupby(keys + ["method"]):
        target = last.loc[group_key[:-1] if len(keys) > 1 else group_key[0]]
        hit = group[(group[metric] <= target) & (group["iteration"] > 0)].sort_values("iteration")
        ref_group = ref.set_index(keys).loc[group_key[:-1] if len(keys) > 1 else group_key[0]]
        ref_hit = ref_group[(ref_group[metric] <= target) & (ref_group["iteration"] > 0)]["iteration"].min()
        iters = float(hit["iteration"].iloc[0]) if len(hit) else math.nan
        budget = float(ref_group["iteration"].max())
        rows.append(dict(zip(keys + ["method"], group_key), target=target, iterations=iters,
                         reached=bool(len(hit)), speedup=float(ref_hit) / iters if len(hit) else math.nan,
                         speedup_vs_budget=budget / iters if len(hit) else math.nan))
    return pd.DataFrame(rows)


def speedup_table(frame: pd.DataFrame, reference: str = "vanilla", metric: str = "gap") -> pd.DataFrame:
    """The paper's metric: mean iterations and speedup over ``reference`` with 95% t-intervals over
    seeds, per panel and method; ``plateau`` flags panels where the reference's curve is flat at its
    end (:func:`plateau`), where this metric is ill-conditioned."""
    reach = iterations_to_reach(frame, reference, metric)
    keys = [c for c in ("panel", "function", "method") if c in reach.columns]
    rows = []
    for key, group in reach.groupby(keys):
        mean_it, _, _ = mean_ci(group["iterations"].to_numpy())
        mean, low, high = mean_ci(group["speedup"].to_numpy(), bounds=value_bounds("speedup"))
        rows.append(dict(zip(keys, key if isinstance(key, tuple) else (key,)), iterations=mean_it, speedup=mean,
                         speedup_low=low, speedup_high=high,
                         speedup_vs_budget=mean_ci(group["speedup_vs_budget"].to_numpy())[0],
                         seeds=len(group), censored=int((~group["reached"]).sum())))
    return _with_plateau(pd.DataFrame(rows), frame, reference, metric, None)


def _best_so_far(group: pd.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(iterations, running minimum of ``metric``) of one run, in iteration order, on the iterations
    where the metric was recorded (rows without it, e.g. between evaluations, are skipped); an infinite
    value (a diverged step) does not improve the minimum."""
    group = group.dropna(subset=[metric]).sort_values("iteration")
    values = group[metric].to_numpy(dtype=float)
    return group["iteration"].to_numpy(dtype=float), np.fmin.accumulate(np.where(np.isfinite(values), values, np.inf))


def _equivalent(value: float, iterations: np.ndarray, best: np.ndarray, interpolate: bool) -> tuple[float, bool]:
    """The first reference iteration whose best-so-far value reaches ``value`` (linearly interpolated
    in log(value) between grid points with ``interpolate``), and whether the reference never does (then
    its last iteration, a lower bound)."""
    reached = np.flatnonzero(best <= value)
    if reached.size == 0:
        return float(iterations[-1]), True
    i = int(reached[0])
    if not interpolate or i == 0:
        return float(iterations[i]), False
    hi, lo = best[i - 1], best[i]  # hi > value >= lo
    if hi > 0 and lo > 0 and value > 0:
        fraction = (math.log(hi) - math.log(value)) / (math.log(hi) - math.log(lo))
    else:  # a metric that reaches 0 (e.g. an error rate): linear in the value on that segment
        fraction = (hi - value) / (hi - lo)
    return float(iterations[i - 1] + fraction * (iterations[i] - iterations[i - 1])), False


def _reference_rows(frame: pd.DataFrame, reference: str | pd.DataFrame) -> pd.DataFrame:
    if isinstance(reference, pd.DataFrame):
        return reference
    rows = frame[frame["method"] == reference]
    if rows.empty:
        raise ValueError(f"reference run {reference!r} is not in the results (runners add it where Vanilla "
                         "competes with another method); pass reference= a method name or the reference rows")
    return rows


def effective_speedup(frame: pd.DataFrame, metric: str = "gap", reference: str | pd.DataFrame = REFERENCE,
                      by: Sequence[str] | None = None, interpolate: bool = False) -> pd.DataFrame:
    """The effective (uncapped) speedup of every method at every sequential iteration t >= 1.

    ``frame`` is a tidy table (``method``, ``seed``, ``iteration``, ``metric``, and the panel columns
    ``by``; default: those of ``PANEL_KEYS`` present). ``reference`` names the long Vanilla run in it, or
    is a table of reference rows (``seed``, ``iteration``, ``metric`` and any of the ``by`` columns;
    missing ones are shared by all panels, e.g. Fig. 6's ablation panels against one reference).
    ``interpolate=True`` (runs evaluated on an iteration grid: rows between evaluations hold NaN or are
    absent) interpolates the reference's best-so-far curve linearly in log(metric) between grid points;
    otherwise the answer is the first recorded reference iteration that reaches the value.

    Returns one row per (``by``..., method, seed, iteration) with ``best`` (the method's best-so-far
    value), ``vanilla_equivalent`` (the first reference iteration whose best-so-far value is at or below
    ``best``), ``speedup`` (= vanilla_equivalent / iteration), ``censored`` (the reference never gets
    there: both numbers are lower bounds, vanilla_equivalent being the reference's length) and
    ``reference_length``.
    """
    keys = _keys(frame, by)
    ref_rows = _reference_rows(frame, reference)
    shared = [k for k in keys if k in ref_rows.columns]
    curves = {}
    for key, group in _groups(ref_rows, shared + ["seed"]):
        curves[key] = _best_so_far(group, metric)
    methods = frame if isinstance(reference, pd.DataFrame) else frame[frame["method"] != reference]
    out = []
    for key, group in _groups(methods, keys + ["method", "seed"]):
        named = dict(zip(keys + ["method", "seed"], key))
        curve = curves.get(tuple(named[k] for k in shared) + (named["seed"],))
        if curve is None:
            raise ValueError(f"no reference run for {named}")
        ref_it, ref_best = curve
        iterations, best = _best_so_far(group, metric)
        for t, value in zip(iterations, best):
            if t <= 0:
                continue
            equivalent, censored = _equivalent(value, ref_it, ref_best, interpolate)
            out.append(dict(named, iteration=int(t), best=value,
                            vanilla_equivalent=equivalent, speedup=equivalent / t, censored=censored,
                            reference_length=float(ref_it[-1])))
    return pd.DataFrame(out)


def plateau(frame: pd.DataFrame, metric: str = "gap", method: str = "vanilla", by: Sequence[str] | None = None,
            drop: float = PLATEAU_DROP) -> pd.DataFrame:
    """Per panel: whether ``method``'s curve is flat over the last quarter of its run, where both
    speedup metrics are ill-conditioned (a gap of 50.41 vs 50.42 can move them by 20%).

    Per seed, ``log_drop`` = log(best-so-far at 3T/4) - log(best-so-far at T) (the grid point at or
    below 3T/4); the panel plateaus when its mean over seeds is below ``drop`` (0.01: Vanilla's value at
    T is at least 0.99 times its value at 3T/4). Columns: ``by``..., ``log_drop``, ``plateau_seeds``
    (seeds that plateau on their own), ``seeds``, ``plateau``.
    """
    keys = _keys(frame, by)
    runs = frame[frame["method"] == method]
    if runs.empty:
        raise ValueError(f"method {method!r} is not in the results")
    rows = []
    for key, group in _groups(runs, keys):
        drops = []
        for _, seed in group.groupby("seed"):
            iterations, best = _best_so_far(seed, metric)
            last = iterations[-1]
            at = best[np.flatnonzero(iterations <= 0.75 * last)[-1]]
            end = best[-1]
            drops.append(math.log(at / end) if at > 0 and end > 0 else (0.0 if at == end else math.inf))
        drops = np.asarray(drops)
        rows.append(dict(zip(keys, key), log_drop=float(drops.mean()), plateau_seeds=int((drops < drop).sum()),
                         seeds=len(drops), plateau=bool(drops.mean() < drop)))
    return pd.DataFrame(rows, columns=[*keys, "log_drop", "plateau_seeds", "seeds", "plateau"])


def _with_plateau(table: pd.DataFrame, frame: pd.DataFrame, method: str, metric: str,
                  by: Sequence[str] | None) -> pd.DataFrame:
    flags = plateau(frame, metric, method, by)
    keys = [k for k in flags.columns if k not in ("log_drop", "plateau_seeds", "seeds", "plateau")]
    if not keys:
        return table.assign(plateau=bool(flags["plateau"].iloc[0]))
    return table.merge(flags[[*keys, "plateau"]], on=keys, how="left")


def effective_speedup_table(frame: pd.DataFrame, at: Sequence[int] | None = None, metric: str = "gap",
                            reference: str | pd.DataFrame = REFERENCE, by: Sequence[str] | None = None,
                            interpolate: bool = False, level: float = 0.95,
                            plateau_method: str | None = "vanilla") -> pd.DataFrame:
    """The effective speedup at sequential iterations ``at`` (default: T and T // 2, T the last
    iteration of each panel's methods), summarised over seeds, per (``by``..., method, iteration).

    ``iteration`` is the requested t; each seed contributes its value at its last grid point at or
    below t (``evaluated_at``: that grid point; t itself when every iteration is recorded). Columns:
    ``effective_speedup`` (mean over seeds), ``effective_low`` / ``effective_high``
    (the ``level`` Student-t interval; NaN with one seed), ``vanilla_equivalent`` (mean), ``seeds``,
    ``censored`` (seeds whose value is only a lower bound: then the mean is one too) and ``plateau``
    (:func:`plateau` of ``plateau_method`` in the panel; omitted when ``plateau_method`` is None).
    """
    keys = _keys(frame, by)
    per_seed = effective_speedup(frame, metric, reference, keys, interpolate)
    rows = []
    for key, group in _groups(per_seed, keys):
        last = int(group["iteration"].max())
        times = sorted({int(t) for t in ((last, last // 2) if at is None else at)})
        for method, runs in group.groupby("method", sort=False):
            for t in times:
                picked = runs[runs["iteration"] <= t].sort_values("iteration").groupby("seed").tail(1)
                # no seed's speedup can exceed its reference run's length over its iteration
                most = float((picked["reference_length"] / picked["iteration"]).max()) if len(picked) else None
                mean, low, high = mean_ci(picked["speedup"].to_numpy(), level, (0.0, most))
                rows.append(dict(zip(keys, key), method=method, iteration=t,
                                 evaluated_at=int(picked["iteration"].max()) if len(picked) else -1,
                                 effective_speedup=mean,
                                 effective_low=low, effective_high=high,
                                 vanilla_equivalent=float(picked["vanilla_equivalent"].mean()),
                                 seeds=len(picked), censored=int(picked["censored"].sum())))
    table = pd.DataFrame(rows)
    if plateau_method is None:
        return table
    return _with_plateau(table, frame, plateau_method, metric, keys)


__all__ = ["PANEL_KEYS", "PLATEAU_DROP", "REFERENCE", "REFERENCE_GROWTH", "RETURN_BOUNDS", "UNBOUNDED", "VALUE_BOUNDS",
           "Bounds", "clip_to_bounds", "effective_speedup", "effective_speedup_table", "iterations_to_reach",
           "mean_ci", "plateau", "return_bounds", "speedup_table", "value_bounds"]


def time_to_reach(frame: pd.DataFrame, reference: str = "vanilla", metric: str = "train_loss",
                  clock: str = "wall_time") -> pd.DataFrame:
    """The paper's metric in seconds: per (panel, method, seed), the ``clock`` reading (cumulative
    seconds) at the first recorded row whose ``metric`` is at or below the reference method's final value
    on the same seed, and ``speedup`` = the reference's own seconds to get there / the method's.

    Rows where ``metric`` was not evaluated (NaN) are skipped, so the answer is on the evaluation grid.
    A run that never gets there is censored (``reached`` False, ``seconds`` and ``speedup`` NaN). The
    long reference run (``REFERENCE``) is not a method here.
    """
    missing = [c for c in (metric, clock) if c not in frame.columns]
    if missing:
        raise ValueError(f"the results have no {' or '.join(missing)} column")
    frame = frame[(frame["method"] != REFERENCE) & frame[metric].notna()]
    keys = [c for c in ("panel", "function", "seed") if c in frame.columns]
    ref = frame[frame["method"] == reference]
    if ref.empty:
        raise ValueError(f"reference method {reference!r} is not in the results")
    targets = {key: float(group.loc[group["iteration"].idxmax(), metric]) for key, group in _groups(ref, keys)}

    def first_seconds(rows: pd.DataFrame, target: float) -> float:
        hit = rows[(rows[metric] <= target) & (rows["iteration"] > 0)].sort_values("iteration")
        return float(hit[clock].iloc[0]) if len(hit) else math.nan

    reference_seconds = {key: first_seconds(group, targets[key]) for key, group in _groups(ref, keys)}
    out = []
    for key, group in frame.groupby(keys + ["method"]):
        own = tuple(key[:-1])
        seconds = first_seconds(group, targets[own])
        out.append(dict(zip(keys + ["method"], key), target=targets[own], seconds=seconds,
                        reference_seconds=reference_seconds[own], reached=math.isfinite(seconds),
                        speedup=reference_seconds[own] / seconds if math.isfinite(seconds) else math.nan))
    return pd.DataFrame(out)


__all__ += ["time_to_reach"]
