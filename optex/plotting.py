"""Figures of the book: seed-averaged curves with 95% bands, one look per method, saved under a stable id.

Every figure has one id (``"synthetic-demo"``) that is its file stem, its glue key and its ``:name:``
in the page, so a reader can go from a figure in the book to the files behind it and back.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd

from .analysis import mean_ci

# Baselines of Sec. 6 and OptEx: label and colour (colour-blind safe, the same in every chapter).
METHOD_STYLE: Mapping[str, Mapping[str, str]] = {
    "vanilla": {"label": "Vanilla", "color": "#7f7f7f"},
    "linesearch": {"label": "LineSearch", "color": "#e69f00"},
    "target": {"label": "Target", "color": "#009e73"},
    "optex": {"label": "OptEx", "color": "#0072b2"},
    "large_batch": {"label": "Large batch", "color": "#cc79a7"},
}
FIGURE_FORMATS = ("svg", "png")
_FIGURE_ID = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


def check_figure_id(figure_id: str) -> str:
    """A figure id is lower-case words joined by hyphens: usable as file stem, glue key and label."""
    if not isinstance(figure_id, str) or not _FIGURE_ID.match(figure_id):
        raise ValueError(f"figure_id must be lower-case words joined by '-', got {figure_id!r}")
    return figure_id


def method_label(method: str) -> str:
    return METHOD_STYLE.get(method, {}).get("label", method)


def band(frame: pd.DataFrame, x: str = "iteration", y: str = "gap", by: Iterable[str] = ("method",),
         log: bool = True, level: float = 0.95) -> pd.DataFrame:
    """Centre and ``level`` t-interval of ``y`` over seeds, per group ``by`` and value of ``x``.

    With ``log=True`` the statistics are taken of log10(y) and mapped back, i.e. the centre is the
    geometric mean and the band is multiplicative. On a log axis this is the honest summary: an
    arithmetic band over values that span decades is dominated by the largest seed and can dip below
    zero. Non-positive values are dropped under ``log`` (they cannot be drawn there).
    """
    keys = list(by) + [x]
    rows = []
    for key, group in frame.groupby(keys, sort=True):
        values = group[y].to_numpy(dtype=float)
        if log:
            values = np.log10(values[values > 0])
        centre, low, high = mean_ci(values, level)
        if log:
            centre, low, high = (10.0 ** v for v in (centre, low, high))
        rows.append(dict(zip(keys, key), center=centre, low=low, high=high, seeds=int(np.isfinite(values).sum())))
    return pd.DataFrame(rows)


def band_plot(ax, frame: pd.DataFrame, x: str = "iteration", y: str = "gap", hue: str = "method",
              log: bool = True, level: float = 0.95, methods: Iterable[str] | None = None) -> pd.DataFrame:
    """Draw one line (centre over seeds) and one shaded ``level`` band per ``hue`` value on ``ax``.

    Returns the plotted summary (see :func:`band`). ``methods`` fixes the drawing order and the subset.
    """
    summary = band(frame, x, y, (hue,), log, level)
    order = list(methods) if methods is not None else list(dict.fromkeys(frame[hue]))
    for name in order:
        part = summary[summary[hue] == name].sort_values(x)
        if part.empty:
            continue
        style = METHOD_STYLE.get(name, {})
        line, = ax.plot(part[x], part["center"], label=method_label(name), color=style.get("color"), lw=1.6)
        ax.fill_between(part[x], part["low"], part["high"], color=line.get_color(), alpha=0.2, lw=0)
    if log:
        ax.set_yscale("log")
    ax.grid(True, which="major", alpha=0.3)
    return summary


def save_figure(fig, figure_id: str, data: pd.DataFrame, directory: str | Path) -> dict[str, Path]:
    """Write ``<id>.svg``, ``<id>.png`` and the plotted data ``<id>.csv`` into ``directory``."""
    check_figure_id(figure_id)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {fmt: directory / f"{figure_id}.{fmt}" for fmt in FIGURE_FORMATS}
    # A fixed salt for the SVG's element ids and no date: the same figure gives the same files.
    with matplotlib.rc_context({"svg.hashsalt": figure_id}):
        for fmt, path in paths.items():
            fig.savefig(path, format=fmt, dpi=150, bbox_inches="tight", metadata=_stable_metadata(fmt))
    paths["csv"] = directory / f"{figure_id}.csv"
    data.to_csv(paths["csv"], index=False)
    return paths


def _stable_metadata(fmt: str) -> dict[str, str | None]:
    return {"Date": None} if fmt == "svg" else {}


__all__ = ["METHOD_STYLE", "band", "band_plot", "check_figure_id", "method_label", "save_figure"]


# ================================================================================ training curves
# Figures and tables of the neural-network chapters (tidy tables of optex.experiments.training:
# ``panel``, ``method``, ``seed``, ``iteration``, ``wall_time``, the metrics on the evaluation grid
# and ``proxy_cosine_<s>`` per iteration). Methods the synthetic chapters do not have get a style here.
TRAINING_STYLE: Mapping[str, Mapping[str, str]] = {
    "vanilla_long": {"label": "Vanilla (N·T iterations)", "color": "#404040"},
    "large_batch_scaled": {"label": "Large batch (scaled lr)", "color": "#882255"},
    "last_gradient": {"label": "Last gradient", "color": "#56b4e9"},
}
METHOD_STYLE = {**METHOD_STYLE, **{k: v for k, v in TRAINING_STYLE.items() if k not in METHOD_STYLE}}
LARGE_BATCH = ("large_batch", "large_batch_scaled")  # LargeBatch at the base and the scaled learning rate
SURROGATES = ("optex", "last_gradient")  # the methods whose proxy steps follow an estimated gradient


def evaluation_rows(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The rows of ``frame`` where ``metric`` was evaluated (the runner's grid: every k iterations, 0 and T)."""
    if metric not in frame.columns:
        raise ValueError(f"metric {metric!r} is not a column of the results")
    return frame.dropna(subset=[metric])


def curve_plot(ax, frame: pd.DataFrame, metric: str, x: str = "iteration", methods: Iterable[str] | None = None,
               log: bool = False, level: float = 0.95) -> pd.DataFrame:
    """``metric`` (e.g. ``test_error``) against ``x`` on the evaluation grid: the mean over seeds and its
    ``level`` t-band per method (geometric with ``log``); returns the plotted summary (:func:`band`)."""
    rows = evaluation_rows(frame, metric)
    if methods is not None:
        methods = list(methods)
        rows = rows[rows["method"].isin(methods)]
    return band_plot(ax, rows, x=x, y=metric, log=log, level=level, methods=methods)


def time_grid(frame: pd.DataFrame, metric: str, points: int = 60) -> pd.DataFrame:
    """``metric`` of every (method, seed) run on one common wall-clock grid, for curves against time.

    The grid is ``points`` times from 0 to the longest run's last ``wall_time``; each run is linearly
    interpolated between its evaluation rows and has no value after its own last one (a run cannot be
    extrapolated). Columns: the panel columns present, ``method``, ``seed``, ``time``, ``metric``.
    """
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise ValueError(f"points must be an integer of at least 2, got {points!r}")
    rows = evaluation_rows(frame, metric)
    grid = np.linspace(0.0, float(rows["wall_time"].max()), points)
    keys = [c for c in ("panel", "dataset") if c in rows.columns][:1] + ["method", "seed"]
    out = []
    for key, run in rows.groupby(keys, sort=False):
        run = run.sort_values("wall_time")
        inside = grid <= run["wall_time"].max() * (1 + 1e-9)  # the run's end itself, despite rounding
        values = np.interp(grid[inside], run["wall_time"].to_numpy(float), run[metric].to_numpy(float))
        out.append(pd.DataFrame({**dict(zip(keys, key)), "time": grid[inside], metric: values}))
    return pd.concat(out, ignore_index=True)


def time_plot(ax, frame: pd.DataFrame, metric: str, methods: Iterable[str] | None = None, points: int = 60,
              log: bool = False, level: float = 0.95) -> pd.DataFrame:
    """``metric`` against wall-clock seconds (:func:`time_grid`), mean over seeds and its band per method;
    a grid point is drawn where every seed of the method still runs."""
    if methods is not None:
        methods = list(methods)
        frame = frame[frame["method"].isin(methods)]
    gridded = time_grid(frame, metric, points)
    seeds = gridded.groupby("method")["seed"].transform("nunique")
    complete = gridded.groupby(["method", "time"])["seed"].transform("count") == seeds
    summary = band_plot(ax, gridded[complete], x="time", y=metric, log=log, level=level, methods=methods)
    ax.set_xlabel("wall-clock time inside OptEx.step (s)")
    return summary


def effective_speedup_plot(ax, speedups: pd.DataFrame, parallelism: int, methods: Iterable[str] | None = None,
                           level: float = 0.95) -> pd.DataFrame:
    """Vanilla-equivalent iterations against sequential iterations t (``speedups``: the per-seed rows of
    :func:`optex.analysis.effective_speedup`), mean and band over seeds per method, with the line of
    slope ``parallelism`` (Target's N plain steps per iteration) and Vanilla's own line of slope 1."""
    if isinstance(parallelism, bool) or not isinstance(parallelism, int) or parallelism < 1:
        raise ValueError(f"parallelism must be a positive integer, got {parallelism!r}")
    summary = band_plot(ax, speedups, x="iteration", y="vanilla_equivalent", log=False, level=level, methods=methods)
    t = np.array([0.0, float(speedups["iteration"].max())])
    ax.plot(t, parallelism * t, color="black", ls="--", lw=1, label=f"slope N = {parallelism}")
    ax.plot(t, t, color="black", ls=":", lw=1, label="slope 1 (Vanilla)")
    ax.set_xlabel("sequential iteration $t$")
    ax.set_ylabel("Vanilla-equivalent iterations")
    return summary


def proxy_cosines(frame: pd.DataFrame, methods: Sequence[str] = SURROGATES) -> pd.DataFrame:
    """The estimator's cosine with the true gradient at each proxy step s = 1..N-1: median, quartiles and
    count over every proxy iteration and seed, per panel and method (NaN cells, where no surrogate drove
    the step, are left out). Columns: the panel columns present, ``method``, ``step``, ``median``,
    ``q25``, ``q75``, ``count``."""
    columns = sorted((c for c in frame.columns if c.startswith("proxy_cosine_")), key=lambda c: int(c.rsplit("_", 1)[1]))
    if not columns:
        raise ValueError("the results have no proxy_cosine_<s> columns (N = 1?)")
    keys = [c for c in ("panel", "dataset") if c in frame.columns][:1]
    rows = []
    for key, group in frame[frame["method"].isin(methods)].groupby(keys + ["method"], sort=False):
        for column in columns:
            values = group[column].dropna().to_numpy(float)
            quartiles = np.quantile(values, [0.25, 0.5, 0.75]) if values.size else [np.nan] * 3
            rows.append(dict(zip(keys + ["method"], key if isinstance(key, tuple) else (key,)),
                             step=int(column.rsplit("_", 1)[1]), median=float(quartiles[1]), q25=float(quartiles[0]),
                             q75=float(quartiles[2]), count=int(values.size)))
    return pd.DataFrame(rows, columns=[*keys, "method", "step", "median", "q25", "q75", "count"])


def proxy_cosine_plot(ax, cosines: pd.DataFrame, methods: Iterable[str] = SURROGATES) -> None:
    """Median cosine by proxy step (lines) with the interquartile range (bars), one colour per method
    (``cosines``: one panel of :func:`proxy_cosines`)."""
    for name in methods:
        part = cosines[cosines["method"] == name].sort_values("step")
        if part.empty:
            continue
        color = METHOD_STYLE.get(name, {}).get("color")
        ax.errorbar(part["step"], part["median"], yerr=[part["median"] - part["q25"], part["q75"] - part["median"]],
                    color=color, marker="o", capsize=3, lw=1.6, label=method_label(name))
    ax.set_xticks(sorted(cosines["step"].unique()))
    ax.set_xlabel("proxy step $s$")
    ax.set_ylabel("cosine with the true gradient")
    ax.grid(True, alpha=0.3)


AXIS_LABELS = {"train_error": "training error", "test_error": "test error", "val_error": "validation error",
               "train_loss": "training loss", "test_loss": "test loss", "val_loss": "validation loss"}


def _legend(fig, axes) -> None:
    entries = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    fig.legend(entries.values(), entries.keys(), loc="outside lower center", ncols=min(len(entries), 4), frameon=False)


def training_figure(frame: pd.DataFrame, panels: Sequence[str], columns: Sequence[tuple[str, str]],
                    methods: Sequence[str], log: bool = False, points: int = 60):
    """One row per panel, one column per (metric, x) with x ``"iteration"`` (:func:`curve_plot`) or
    ``"time"`` (:func:`time_plot`; Vanilla is drawn from its N·T-iteration run there, so that its curve
    lasts as long as the others'). Returns the figure and the plotted summaries (``panel``, ``metric``,
    ``x`` and :func:`band`'s columns)."""
    import matplotlib.pyplot as plt

    for metric, x in columns:
        if x not in ("iteration", "time"):
            raise ValueError(f"columns: x must be 'iteration' or 'time', got {x!r} for {metric}")
    fig, axes = plt.subplots(len(panels), len(columns), figsize=(3.1 * len(columns), 2.6 * len(panels) + 0.8),
                             squeeze=False, layout="constrained")
    summaries = []
    for row, panel in zip(axes, panels):
        part = frame[frame["panel"] == panel]
        for ax, (metric, x) in zip(row, columns):
            if x == "time":
                shown = [("vanilla_long" if m == "vanilla" else m) for m in methods]
                summary = time_plot(ax, part, metric, shown, points, log).rename(columns={"time": "x"})
            else:
                summary = curve_plot(ax, part, metric, methods=methods, log=log).rename(columns={"iteration": "x"})
                ax.set_xlabel("sequential iteration $t$")
            summaries.append(summary.assign(panel=panel, metric=metric, axis=x))
            ax.set_title(f"{panel}", fontsize=9)
            ax.set_ylabel(AXIS_LABELS.get(metric, metric))
    _legend(fig, axes.flat)
    return fig, pd.concat(summaries, ignore_index=True)


def effective_speedup_figure(speedups: pd.DataFrame, panels: Sequence[str], parallelism: int,
                             methods: Sequence[str]):
    """:func:`effective_speedup_plot` for each panel, side by side (two per row)."""
    import matplotlib.pyplot as plt

    cols = min(2, len(panels))
    fig, axes = plt.subplots((len(panels) + cols - 1) // cols, cols, figsize=(4.2 * cols, 3.2 * ((len(panels) + 1) // 2)
                             + 0.8), squeeze=False, layout="constrained")
    summaries = []
    for ax, panel in zip(axes.flat, panels):
        summary = effective_speedup_plot(ax, speedups[speedups["panel"] == panel], parallelism, methods)
        summaries.append(summary.assign(panel=panel))
        ax.set_title(panel, fontsize=9)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    _legend(fig, axes.flat)
    return fig, pd.concat(summaries, ignore_index=True)


def proxy_cosine_figure(cosines: pd.DataFrame, panels: Sequence[str], methods: Sequence[str] = SURROGATES):
    """:func:`proxy_cosine_plot` for each panel in one row, sharing the y axis."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(2.8 * len(panels), 3.2), sharey=True, squeeze=False,
                             layout="constrained")
    for ax, panel in zip(axes.flat, panels):
        proxy_cosine_plot(ax, cosines[cosines["panel"] == panel], methods)
        ax.set_title(panel, fontsize=9)
    for ax in axes.flat[1:]:
        ax.set_ylabel("")
    _legend(fig, axes.flat)
    return fig


def _interval_text(mean: float, low: float, high: float) -> str:
    if not np.isfinite(mean):
        return "n/a"
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{mean:.2f}×"
    return f"{mean:.2f}× [{low:.2f}, {high:.2f}]"


def best_large_batch(table: pd.DataFrame) -> pd.Series:
    """Per panel, the LargeBatch variant (base or scaled learning rate) with the higher mean effective
    speedup at T (``table``: :func:`training_speedup_table`, its ``effective_end`` column)."""
    keys = [c for c in ("panel", "dataset") if c in table.columns][:1]
    rows = table[table["method"].isin(LARGE_BATCH)].dropna(subset=["effective_end"])
    if rows.empty:
        raise ValueError("the results have neither large_batch nor large_batch_scaled")
    if not keys:
        return pd.Series({"": rows.loc[rows["effective_end"].idxmax(), "method"]})
    return rows.loc[rows.groupby(keys)["effective_end"].idxmax()].set_index(keys)["method"]


def versus(speedups: pd.DataFrame, method: str, rival: pd.Series, at: int | None = None) -> pd.DataFrame:
    """Per panel: ``method``'s effective speedup divided by the ``rival`` method's (``rival``: panel ->
    method, e.g. :func:`best_large_batch`), seed by seed at sequential iteration ``at`` (default each
    panel's last), with the mean and 95% t-interval of the per-seed ratios. ``speedups``: per-seed
    rows of :func:`optex.analysis.effective_speedup`."""
    keys = [c for c in ("panel", "dataset") if c in speedups.columns][:1]
    rows = []
    for key, group in (speedups.groupby(keys, sort=False) if keys else [((), speedups)]):
        key = key if isinstance(key, tuple) else (key,)
        other = rival.loc[key[0]] if keys else rival.iloc[0]
        t = int(group["iteration"].max()) if at is None else at
        picked = group[group["iteration"] <= t].sort_values("iteration").groupby(["method", "seed"]).tail(1)
        ours = picked[picked["method"] == method].set_index("seed")["speedup"]
        theirs = picked[picked["method"] == other].set_index("seed")["speedup"]
        ratio = (ours / theirs).dropna()
        mean, low, high = mean_ci(ratio.to_numpy())
        rows.append(dict(zip(keys, key), method=method, rival=other, iteration=t, ratio=mean, low=low, high=high,
                         seeds=len(ratio)))
    return pd.DataFrame(rows)


def training_speedup_table(frame: pd.DataFrame, loss: str = "train_loss", error: str = "val_error",
                           methods: Sequence[str] | None = None) -> pd.DataFrame:
    """The chapter table of one training figure, one row per panel and method (Vanilla excluded):

    - the paper's metric on ``loss`` and on ``error``: mean sequential iterations to reach Vanilla's
      value at T and the speedup with its 95% interval (:func:`optex.analysis.speedup_table`;
      ``censored``: seeds that never get there);
    - the effective speedup on ``loss`` (a fixed evaluation set, interpolated in log-loss between grid
      points, read from the long Vanilla run) at T/2 and T, with its 95% interval, and the seeds on
      which it is only a lower bound;
    - for the surrogate methods, the estimator's median cosine at each proxy step.

    Numeric columns (``*_iterations``, ``*_speedup``, ``*_low``, ``*_high``, ``*_censored``,
    ``effective_T``..., ``cosine_<s>``) and ``text`` columns for display (``paper_<metric>``,
    ``effective_at_<t>``).
    """
    from .analysis import REFERENCE, effective_speedup_table, speedup_table

    keys = [c for c in ("panel", "dataset") if c in frame.columns][:1]
    order = list(methods) if methods is not None else [m for m in dict.fromkeys(frame["method"])
                                                        if m not in ("vanilla", REFERENCE)]
    table = None
    for metric in (loss, error):
        paper = speedup_table(frame, "vanilla", metric)
        paper = paper[paper["method"].isin(order)][[*keys, "method", "iterations", "speedup", "speedup_low",
                                                    "speedup_high", "censored", "plateau"]]
        paper = paper.rename(columns={c: f"{metric}_{c}" for c in paper.columns if c not in (*keys, "method")})
        table = paper if table is None else table.merge(paper, on=[*keys, "method"], how="outer")
    effective = effective_speedup_table(frame, metric=loss, interpolate=True, by=keys)
    effective = effective[effective["method"].isin(order)]
    for position, (t, part) in enumerate(sorted(effective.groupby("iteration"), key=lambda item: item[0])):
        name = "half" if position == 0 else "end"
        part = part[[*keys, "method", "iteration", "effective_speedup", "effective_low", "effective_high", "censored"]]
        part = part.rename(columns={"iteration": f"t_{name}", "effective_speedup": f"effective_{name}",
                                    "effective_low": f"effective_{name}_low", "effective_high": f"effective_{name}_high",
                                    "censored": f"effective_{name}_censored"})
        table = table.merge(part, on=[*keys, "method"], how="left")
    if any(c.startswith("proxy_cosine_") for c in frame.columns):
        cosines = proxy_cosines(frame, order)
        wide = cosines.pivot_table(index=[*keys, "method"], columns="step", values="median")
        wide.columns = [f"cosine_{s}" for s in wide.columns]
        table = table.merge(wide.reset_index(), on=[*keys, "method"], how="left")
    rank = {m: i for i, m in enumerate(order)}
    table = table.sort_values([*keys, "method"], key=lambda c: c.map(rank) if c.name == "method" else c,
                              ignore_index=True)
    for metric in (loss, error):
        table[f"paper_{metric}"] = [_interval_text(m, lo, hi) for m, lo, hi in zip(
            table[f"{metric}_speedup"], table[f"{metric}_speedup_low"], table[f"{metric}_speedup_high"])]
    for name in ("half", "end"):
        if f"effective_{name}" in table:
            table[f"effective_text_{name}"] = [
                _interval_text(m, lo, hi) + (f" (≥, {int(c)} censored)" if c else "")
                for m, lo, hi, c in zip(table[f"effective_{name}"], table[f"effective_{name}_low"],
                                        table[f"effective_{name}_high"], table[f"effective_{name}_censored"])]
    return table


def training_table_display(table: pd.DataFrame, loss: str = "train_loss", error: str = "val_error") -> pd.DataFrame:
    """:func:`training_speedup_table` as the chapter shows it: labels, intervals and cosines as text."""
    out = pd.DataFrame({"panel": table["panel"], "method": table["method"].map(method_label)})
    for metric in (loss, error):
        name = AXIS_LABELS.get(metric, metric)
        out[f"iterations to Vanilla's {name}"] = [f"{v:.0f}" if np.isfinite(v) else "never" for v in
                                                  table[f"{metric}_iterations"]]
        out[f"speedup ({name}, paper metric)"] = [
            text + (f" ({int(c)} censored)" if c else "") for text, c in
            zip(table[f"paper_{metric}"], table[f"{metric}_censored"])]
    for name, title in (("half", "T/2"), ("end", "T")):
        if f"effective_text_{name}" in table:
            out[f"effective speedup at {title}"] = table[f"effective_text_{name}"]
    cosines = sorted((c for c in table.columns if c.startswith("cosine_")), key=lambda c: int(c.split("_")[1]))
    if cosines:
        out["median cosine, s = 1..N-1"] = [
            "—" if all(np.isnan(v) for v in values) else ", ".join(f"{v:.2f}" for v in values)
            for values in table[cosines].to_numpy(float)]
    return out


def versus_display(versus: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """:func:`versus` (OptEx against the better LargeBatch, indexed by panel) as the chapter shows it."""
    effective = table.set_index(["panel", "method"])["effective_text_end"]
    rows = []
    for panel, row in versus.iterrows():
        rows.append({"panel": panel, "better LargeBatch": method_label(row["rival"]),
                     "its effective speedup at T": effective.get((panel, row["rival"]), "n/a"),
                     "OptEx's": effective.get((panel, row["method"]), "n/a"),
                     "OptEx / LargeBatch (per seed)": _interval_text(row["ratio"], row["low"], row["high"])})
    return pd.DataFrame(rows)


def training_summary(table: pd.DataFrame, versus: pd.DataFrame, loss: str = "train_loss") -> pd.DataFrame:
    """One row per panel with the numbers a chapter's conclusion quotes: effective speedups at T of OptEx,
    Target, LineSearch, last_gradient and the better LargeBatch (``*_end`` and intervals), OptEx's share of
    Target's, the OptEx / LargeBatch ratio and its interval (``versus``, indexed by panel), OptEx's paper
    metric on ``loss``, and the median cosine over proxy steps of the GP mean and of the last gradient."""
    by = table.set_index(["panel", "method"])
    cosines = [c for c in table.columns if c.startswith("cosine_")]
    rows = []
    for panel, row in versus.iterrows():
        def get(method, column, default=np.nan):
            return float(by[column].get((panel, method), default)) if column in by else default

        entry = dict(panel=panel, rival=row["rival"], ratio=row["ratio"], ratio_low=row["low"], ratio_high=row["high"],
                     paper_optex=get("optex", f"{loss}_speedup"))
        for name, method in (("optex", "optex"), ("target", "target"), ("linesearch", "linesearch"),
                             ("last_gradient", "last_gradient"), ("large_batch", row["rival"])):
            entry[name] = get(method, "effective_end")
            entry[f"{name}_low"] = get(method, "effective_end_low")
            entry[f"{name}_high"] = get(method, "effective_end_high")
            entry[f"{name}_censored"] = get(method, "effective_end_censored", 0.0)
        entry["optex_of_target"] = entry["optex"] / entry["target"]
        entry["cosine_gp"] = float(np.nanmedian([get("optex", c) for c in cosines])) if cosines else np.nan
        entry["cosine_last"] = float(np.nanmedian([get("last_gradient", c) for c in cosines])) if cosines else np.nan
        rows.append(entry)
    return pd.DataFrame(rows)


def reading_text(summary: pd.DataFrame, parallelism: int, why: bool = True) -> str:
    """The chapter's conclusion from :func:`training_summary`: per panel, OptEx's effective speedup at T
    against Target's (the ceiling N) and the better LargeBatch's, and the estimators' cosines; then
    where OptEx beats LargeBatch (interval above 1) and where it does not (with ``why``, and the cosine
    as the reason)."""
    lines = []
    for row in summary.itertuples():
        lines.append(
            f"- **{row.panel}**: OptEx {_interval_text(row.optex, row.optex_low, row.optex_high)} effective speedup "
            f"at $T$ (paper metric {row.paper_optex:.2f}×), {100 * row.optex_of_target:.0f}% of Target's "
            f"{row.target:.2f}× (ceiling {parallelism}); the better LargeBatch "
            f"({method_label(row.rival)}) {_interval_text(row.large_batch, row.large_batch_low, row.large_batch_high)}, "
            f"so OptEx / LargeBatch = {_interval_text(row.ratio, row.ratio_low, row.ratio_high)}; LineSearch "
            f"{row.linesearch:.2f}×, last gradient {row.last_gradient:.2f}×. Median cosine of the estimate with the "
            f"true gradient: GP {row.cosine_gp:.2f}, last gradient {row.cosine_last:.2f}.")
    ahead = summary[summary["ratio_low"] > 1]
    behind = summary[summary["ratio_high"] < 1]
    level = summary[~summary.index.isin(ahead.index) & ~summary.index.isin(behind.index)]
    text = ["\n".join(lines), ""]
    verdict = (f"OptEx beats the better LargeBatch, with the 95% interval of the ratio above 1, in {len(ahead)} of "
               f"{len(summary)} panels")
    verdict += f" ({', '.join(ahead['panel'])})" if len(ahead) else ""
    if len(behind):
        verdict += f"; it is behind in {', '.join(behind['panel'])}"
    if len(level):
        verdict += f"; the two cannot be told apart in {', '.join(level['panel'])}"
    text.append(verdict + ".")
    losing = summary[summary["ratio"] <= 1]
    if why and len(losing):
        text += ["", "Where OptEx does not beat LargeBatch (" + ", ".join(losing["panel"]) + "), the cosine tells why: "
                 "its proxy steps follow an estimate whose median cosine with the true gradient is "
                 + ", ".join(f"{c:.2f}" for c in losing["cosine_gp"]) + ", so the N - 1 proxy steps move the "
                 "iterate only part of the way a true step would, while LargeBatch spends the same N evaluations "
                 "on a less noisy gradient at one point."]
    return "\n".join(text)


__all__ += ["AXIS_LABELS", "LARGE_BATCH", "SURROGATES", "TRAINING_STYLE", "best_large_batch", "curve_plot",
            "effective_speedup_figure", "effective_speedup_plot", "evaluation_rows", "proxy_cosine_figure",
            "proxy_cosine_plot", "proxy_cosines", "reading_text", "time_grid", "time_plot", "training_figure",
            "training_speedup_table", "training_summary", "training_table_display", "versus", "versus_display"]


# ------------------------------------------------------------------------------ the text chapter (fig4b)
def cosine_by_dimension(frame: pd.DataFrame, methods: Sequence[str] = SURROGATES) -> pd.DataFrame:
    """The estimator's cosine with the true gradient by proxy step, per model size: :func:`proxy_cosines`
    of each (``panel``, ``d``) group of ``frame`` (rows of :func:`optex.experiments.fig4b.run_sized`).
    Columns: ``panel``, ``d``, ``size`` (where present), then :func:`proxy_cosines`' own."""
    missing = [c for c in ("panel", "d") if c not in frame.columns]
    if missing:
        raise ValueError(f"the results have no {' or '.join(missing)} column (run them with fig4b.run_sized)")
    parts = []
    panels = list(dict.fromkeys(frame["panel"]))  # in the results' order, each panel's sizes by d
    for (panel, d), group in sorted(frame.groupby(["panel", "d"]), key=lambda item: (panels.index(item[0][0]),
                                                                                  item[0][1])):
        cosines = proxy_cosines(group, methods).assign(d=int(d))
        if "size" in group.columns:
            cosines["size"] = group["size"].iloc[0]
        parts.append(cosines)
    table = pd.concat(parts, ignore_index=True)
    first = ["panel", "d"] + (["size"] if "size" in table.columns else [])
    return table[first + [c for c in table.columns if c not in first]]


def cosine_dimension_figure(cosines: pd.DataFrame, panels: Sequence[str], methods: Sequence[str] = SURROGATES):
    """Median cosine (points, interquartile bars) against d (log axis), one panel per base optimizer,
    one colour per estimator (``methods``) and one marker and line style per proxy step s
    (``cosines``: :func:`cosine_by_dimension`)."""
    import matplotlib.pyplot as plt

    styles = ("-", "--", ":", "-.")
    markers = ("o", "s", "^", "D")
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.3), sharey=True, squeeze=False,
                             layout="constrained")
    steps = sorted(int(s) for s in cosines["step"].unique())
    for ax, panel in zip(axes.flat, panels):
        part = cosines[cosines["panel"] == panel]
        for name in methods:
            color = METHOD_STYLE.get(name, {}).get("color")
            for i, step in enumerate(steps):
                line = part[(part["method"] == name) & (part["step"] == step)].sort_values("d")
                if line.empty:
                    continue
                spread = [line["median"] - line["q25"], line["q75"] - line["median"]]
                ax.errorbar(line["d"], line["median"], yerr=spread, color=color, ls=styles[i % len(styles)],
                            marker=markers[i % len(markers)], capsize=2, lw=1.4,
                            label=f"{method_label(name)}, s = {step}")
        ax.set_xscale("log")
        ax.set_xlabel("parameters $d$")
        ax.set_title(panel, fontsize=9)
        ax.grid(True, alpha=0.3)
    axes.flat[0].set_ylabel("cosine with the true gradient")
    _legend(fig, axes.flat)
    return fig


def cosine_dimension_display(cosines: pd.DataFrame) -> pd.DataFrame:
    """:func:`cosine_by_dimension` as a table: one row per panel, model size and estimator, the median
    cosine at each proxy step."""
    index = ["panel", "d", "size", "method"] if "size" in cosines else ["panel", "d", "method"]
    wide = cosines.pivot_table(index=index, columns="step", values="median").reset_index()
    out = pd.DataFrame({"panel": wide["panel"], "d": [f"{int(d):,}" for d in wide["d"]]})
    if "size" in wide:
        out["model"] = wide["size"]
    out["estimator"] = wide["method"].map(method_label)
    for step in sorted(c for c in wide.columns if isinstance(c, (int, np.integer))):
        out[f"s = {step}"] = [f"{v:.2f}" if np.isfinite(v) else "—" for v in wide[step]]
    return out


def text_samples(frame: pd.DataFrame, methods: Sequence[str], seed: int, lines: int = 6) -> pd.DataFrame:
    """The seeded text each ``method`` generated at the end of its run on ``seed`` (the runner's
    ``sample`` column), cut to its first ``lines`` non-empty lines. Columns: ``panel``, ``method``,
    ``iteration`` (when the model was sampled), ``text``."""
    if "sample" not in frame.columns:
        raise ValueError("the results have no sample column (a language-model run records one in its last row)")
    if isinstance(lines, bool) or not isinstance(lines, int) or lines < 1:
        raise ValueError(f"lines must be a positive integer, got {lines!r}")
    rows = frame[frame["method"].isin(methods) & (frame["seed"] == seed)].dropna(subset=["sample"])
    if rows.empty:
        raise ValueError(f"no sample of {', '.join(methods)} on seed {seed} in the results")
    keys = [c for c in ("panel", "dataset") if c in rows.columns][:1]
    out = []
    for _, row in rows.iterrows():
        kept = [line for line in str(row["sample"]).splitlines() if line.strip()][:lines]
        out.append({**{k: row[k] for k in keys}, "method": row["method"], "iteration": int(row["iteration"]),
                    "text": "\n".join(kept)})
    rank = {"method": {m: i for i, m in enumerate(methods)}}
    if keys:
        rank[keys[0]] = {p: i for i, p in enumerate(dict.fromkeys(frame[keys[0]]))}  # panels in the results' order
    table = pd.DataFrame(out)
    return table.sort_values([*keys, "method"], key=lambda c: c.map(rank[c.name]), ignore_index=True)


def samples_markdown(samples: pd.DataFrame) -> str:
    """:func:`text_samples` as MyST markdown: a heading line per panel and method, the text in a fenced block."""
    blocks = []
    for row in samples.itertuples():
        panel = f"{row.panel}, " if hasattr(row, "panel") else ""
        blocks.append(f"**{panel}{method_label(row.method)}** (after $T =$ {row.iteration} iterations):\n\n"
                      f"```text\n{row.text}\n```")
    return "\n\n".join(blocks)


def cosine_dimension_text(cosines: pd.DataFrame, methods: Sequence[str] = SURROGATES) -> str:
    """What :func:`cosine_by_dimension` says, per panel: each estimator's median cosine (the median over
    proxy steps of the per-step medians) at the smallest and the largest d, and at proxy step 1 and the
    last step for the GP mean (the first method of ``methods``)."""
    lines = []
    for panel, part in cosines.groupby("panel", sort=False):
        sizes = sorted(part["d"].unique())
        small, large = sizes[0], sizes[-1]

        def median(method: str, d: int, step: int | None = None) -> float:
            rows = part[(part["method"] == method) & (part["d"] == d)]
            rows = rows if step is None else rows[rows["step"] == step]
            return float(np.nanmedian(rows["median"])) if len(rows) else np.nan

        last_step = int(part["step"].max())
        gp = methods[0]
        parts = [f"{method_label(m)} {median(m, small):.2f} at $d$ = {small:,} and {median(m, large):.2f} at "
                 f"$d$ = {large:,}" for m in methods]
        steps = (f"; at proxy step 1 the {method_label(gp)} estimate's cosine is {median(gp, small, 1):.2f} and "
                 f"{median(gp, large, 1):.2f}, at step {last_step} {median(gp, small, last_step):.2f} and "
                 f"{median(gp, large, last_step):.2f}")
        lines.append(f"- **{panel}**: median cosine {', '.join(parts)}{steps}.")
    return "\n".join(lines)


def plain_log_ticks(fig, ticks: int = 6) -> None:
    """Label the log-scaled y axes of ``fig`` with about ``ticks`` plain, evenly spaced numbers (3.9, 4.0,
    4.1) instead of powers of ten: a loss that changes by a few percent spans less than a decade."""
    from matplotlib.ticker import MaxNLocator, NullLocator, ScalarFormatter

    for ax in fig.axes:
        if ax.get_yscale() != "log":
            continue
        ax.yaxis.set_major_locator(MaxNLocator(ticks))
        ax.yaxis.set_minor_locator(NullLocator())
        formatter = ScalarFormatter()
        formatter.set_scientific(False)
        ax.yaxis.set_major_formatter(formatter)


def surrogate_text(frame: pd.DataFrame, summary: pd.DataFrame) -> str:
    """GP mean against the last gradient, per panel: their effective speedups at T (``summary``:
    :func:`training_summary`) beside the median cosine and the median relative error
    ||estimate - g|| / ||g|| (the median over proxy steps s of the median over iterations and seeds, as
    in :func:`training_summary`; ``frame``: the tidy results); then whether the higher cosine went with
    the higher speedup in every panel."""
    keys = [c for c in ("panel", "dataset") if c in frame.columns][:1]
    if not keys:
        raise ValueError("the results have no panel column")
    columns = {kind: [c for c in frame.columns if c.startswith(f"proxy_{kind}_")] for kind in ("cosine", "rel_error")}
    if not columns["cosine"] or not columns["rel_error"]:
        raise ValueError("the results have no proxy_cosine_<s> / proxy_rel_error_<s> columns")

    def median(panel: str, method: str, kind: str) -> float:
        rows = frame[(frame[keys[0]] == panel) & (frame["method"] == method)][columns[kind]].to_numpy(float)
        steps = [np.nanmedian(column) for column in rows.T if np.isfinite(column).any()]
        return float(np.median(steps)) if steps else np.nan

    lines, agree, disagree = [], [], []
    for row in summary.itertuples():
        gp = (median(row.panel, "optex", "cosine"), median(row.panel, "optex", "rel_error"))
        last = (median(row.panel, "last_gradient", "cosine"), median(row.panel, "last_gradient", "rel_error"))
        lines.append(f"- **{row.panel}**: effective speedup at $T$ OptEx {row.optex:.2f}×, last gradient "
                     f"{row.last_gradient:.2f}×; median cosine {gp[0]:.2f} and {last[0]:.2f}, median relative "
                     f"error {gp[1]:.2f} and {last[1]:.2f}.")
        (agree if (row.optex > row.last_gradient) == (gp[0] > last[0]) else disagree).append(row.panel)
    if not disagree:
        verdict = "In every panel the estimate with the higher cosine also gave the higher speedup."
    else:
        verdict = (f"In {', '.join(disagree)} the cosine ranks the two estimates the other way round from the "
                   "speedup: a cosine with one noisy minibatch gradient measures the direction of a proxy step, "
                   "not its length, and the relative error shows how far each estimate is from that gradient "
                   "as a vector.")
    return "\n".join(lines) + "\n\n" + verdict


def optimizer_contrast_text(summary: pd.DataFrame) -> str:
    """Whether the GP estimate's cosine explains how close OptEx comes to Target across the panels
    (``summary``: :func:`training_summary`): the panels ranked by OptEx's share of Target's effective
    speedup at T, beside the estimate's median cosine."""
    if len(summary) < 2:
        raise ValueError("summary needs at least two panels to contrast")
    ranked = summary.sort_values("optex_of_target", ascending=False)
    listing = "; ".join(f"{row.panel}: {100 * row.optex_of_target:.0f}% of Target's effective speedup with a "
                        f"median cosine of {row.cosine_gp:.2f}" for row in ranked.itertuples())
    shares, cosines = ranked["optex_of_target"].to_numpy(float), ranked["cosine_gp"].to_numpy(float)
    consistent = bool(np.all(np.diff(cosines) <= 0))  # the higher share goes with the higher cosine
    if consistent:
        return f"{listing}. The closer OptEx comes to Target, the better its estimate points."
    return (f"{listing}. The cosine does not explain the difference: OptEx comes closest to Target in "
            f"{ranked['panel'].iloc[0]}, where its estimate points worst "
            f"({shares[0] / max(shares[-1], 1e-12):.1f} times the share at "
            f"{cosines[0]:.2f} against {cosines[-1]:.2f}).")


def iteration_seconds(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean seconds per sequential iteration inside ``OptEx.step`` and its split (proxy steps, the
    gradient evaluations, the update), over every iteration t >= 1 and seed, per panel and method.
    Columns: the panel column present, ``method``, ``seconds``, ``proxy``, ``eval``, ``update``."""
    keys = [c for c in ("panel", "dataset") if c in frame.columns][:1]
    steps = frame[frame["iteration"] > 0]
    table = steps.groupby([*keys, "method"], sort=False)[["time_proxy", "time_eval", "time_update"]].mean()
    table = table.rename(columns={"time_proxy": "proxy", "time_eval": "eval", "time_update": "update"})
    table.insert(0, "seconds", table.sum(axis=1))
    return table.reset_index()


__all__ += ["cosine_by_dimension", "cosine_dimension_display", "cosine_dimension_figure", "cosine_dimension_text",
            "iteration_seconds", "optimizer_contrast_text", "plain_log_ticks", "surrogate_text",
            "samples_markdown", "text_samples"]
