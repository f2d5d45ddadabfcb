"""Backend-neutral summaries of tidy result tables (iterations to a target, speedups, intervals)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats


def mean_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t confidence interval over independent seeds (NaN when fewer than 2)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(values.mean())
    if values.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + level / 2, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size))
    return mean, mean - half, mean + half


def iterations_to_reach(frame: pd.DataFrame, reference: str = "vanilla", metric: str = "gap") -> pd.DataFrame:
    """Per (function, method, seed): the first iteration whose ``metric`` is at or below the reference
    method's final value on the same seed, and the speedup over the reference: ``speedup`` divides
    the iterations the reference itself first needed to get there (it can plateau early), while
    ``speedup_vs_budget`` divides the reference's whole budget T.

    A run that never reaches the target is censored: ``reached`` is False and its iterations are NaN.
    """
    frame = frame.reset_index(drop=True)
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
    """Mean iterations and speedup over ``reference`` with 95% t-intervals over seeds, per method."""
    reach = iterations_to_reach(frame, reference, metric)
    keys = [c for c in ("panel", "function", "method") if c in reach.columns]
    rows = []
    for key, group in reach.groupby(keys):
        mean_it, _, _ = mean_ci(group["iterations"].to_numpy())
        mean, low, high = mean_ci(group["speedup"].to_numpy())
        rows.append(dict(zip(keys, key if isinstance(key, tuple) else (key,)), iterations=mean_it, speedup=mean,
                         speedup_low=low, speedup_high=high,
                         speedup_vs_budget=mean_ci(group["speedup_vs_budget"].to_numpy())[0],
                         seeds=len(group), censored=int((~group["reached"]).sum())))
    return pd.DataFrame(rows)
