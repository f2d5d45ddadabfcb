"""Figures of the book: seed-averaged curves with 95% bands, one look per method, saved under a stable id.

Every figure has one id (``"synthetic-demo"``) that is its file stem, its glue key and its ``:name:``
in the page, so a reader can go from a figure in the book to the files behind it and back.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Mapping

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


# ------------------------------------------------------------------------------------------ scale-out
SPLIT_STYLE: Mapping[str, Mapping[str, str]] = {
    "time_proxy": {"label": "proxy steps (every rank)", "color": "#0072b2"},
    "time_eval": {"label": "N evaluations (+ all-gather)", "color": "#e69f00"},
    "time_update": {"label": "update (every rank)", "color": "#009e73"},
}


def scaling_plot(ax, summary: pd.DataFrame, model: pd.DataFrame | None = None) -> None:
    """Seconds per iteration of each setup of :func:`optex.experiments.scaling.summary` as stacked bars
    (proxy / evaluation / update), with the cost model's prediction for the distributed setups as
    black markers."""
    labels = [f"{s}\nW={w}, {t} thr." if s == "distributed" else f"{s}\n{t} thread{'s' * (t > 1)}"
              for s, w, t in zip(summary["setup"], summary["world"], summary["threads"])]
    x = np.arange(len(summary))
    bottom = np.zeros(len(summary))
    for column, style in SPLIT_STYLE.items():
        values = summary[column].to_numpy() * 1e3
        ax.bar(x, values, bottom=bottom, color=style["color"], label=style["label"], width=0.6)
        bottom += values
    if model is not None:
        where = {int(w): i for i, (s, w) in enumerate(zip(summary["setup"], summary["world"])) if s == "distributed"}
        hits = [(where[int(w)], p * 1e3) for w, p in zip(model["world"], model["predicted_s"]) if int(w) in where]
        if hits:
            ax.plot(*zip(*hits), "kD", label="cost model", markersize=6)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("milliseconds per iteration")
    ax.legend(frameon=False, fontsize=8)
