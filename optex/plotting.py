"""Figures of the book: one look per method, seed-averaged curves with 95% bands, one function per kind
of figure, saved under a stable id.

Every figure has one id (``"synthetic-demo"``) that is its file stem, its glue key and its ``:name:``
in the page, so a reader can go from a figure in the book to the files behind it and back.

- :data:`METHOD_STYLE` is the one table of display name, colour, marker and line style per method
  (colours from the Okabe-Ito palette, safe for the common colour-vision deficiencies; marker and line
  style tell methods apart where colour cannot, and where curves lie on top of each other).
- Figures are at most :data:`TEXT_WIDTH_IN` wide (the book's text width) with text of at least
  :data:`MIN_FONT_PT`; :func:`save_figure` refuses one that is wider, has smaller text, or whose legend
  names a method that is not in its data.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .analysis import mean_ci


def _style(label: str, color: str, marker: str, linestyle: str) -> Mapping[str, str]:
    return MappingProxyType(dict(label=label, color=color, marker=marker, linestyle=linestyle))


# Every method of optex.experiments.synthetic.METHODS and optex.experiments.training.METHODS.
METHOD_STYLE: Mapping[str, Mapping[str, str]] = MappingProxyType({
    "vanilla": _style("Vanilla", "#666666", "x", "-"),
    "vanilla_long": _style("Vanilla (N·T iterations)", "#999999", "+", ":"),
    "linesearch": _style("LineSearch", "#e69f00", "^", "-."),
    "target": _style("Target", "#009e73", "s", "--"),
    "optex": _style("OptEx", "#0072b2", "o", "-"),
    "large_batch": _style("LargeBatch", "#cc79a7", "D", ":"),
    "large_batch_scaled": _style("LargeBatch (scaled lr)", "#882255", "d", "-."),
    "last_gradient": _style("Last gradient", "#d55e00", "v", "--"),
    "picard": _style("Picard", "#000000", "P", "-."),
})
FIGURE_FORMATS = ("svg", "png")
TEXT_WIDTH_IN = 7.0  # the book's text width at the inline backend's 100 dpi: a figure shown unscaled
MAX_HEIGHT_IN = 9.0
MIN_FONT_PT = 7.5
PANEL_HEIGHT_IN = 2.5
RC = {"font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8,
      "legend.fontsize": 8, "figure.titlesize": 10, "lines.linewidth": 1.5, "lines.markersize": 4.5}
GAP_LABEL = r"gap $F(\theta_t) - F^\star$"
ITERATION_LABEL = "sequential iteration $t$"
SWEEP_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
SWEEP_LINESTYLES = ("-", "--", "-.", ":")
_FIGURE_ID = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_MATH = re.compile(r"(\$[^$]*\$)")


def check_figure_id(figure_id: str) -> str:
    """A figure id is lower-case words joined by hyphens: usable as file stem, glue key and label."""
    if not isinstance(figure_id, str) or not _FIGURE_ID.match(figure_id):
        raise ValueError(f"figure_id must be lower-case words joined by '-', got {figure_id!r}")
    return figure_id


def method_style(method: str) -> Mapping[str, str]:
    """The style of ``method``; one that :data:`METHOD_STYLE` does not know is an error naming it."""
    if method not in METHOD_STYLE:
        raise ValueError(f"method {method!r} has no style in optex.plotting.METHOD_STYLE "
                         f"(known: {', '.join(METHOD_STYLE)})")
    return METHOD_STYLE[method]


def method_label(method: str) -> str:
    return method_style(method)["label"]


def sweep_styles(values: Sequence[Any], label: Callable[[Any], str] = str) -> dict[Any, Mapping[str, str]]:
    """Styles for the ordered values of a swept setting (N, T0, a learning rate): a sequential colour
    map from dark to light, and a marker and line style of their own for each value."""
    cmap = matplotlib.colormaps["viridis"]
    count = max(len(values) - 1, 1)
    return {value: _style(label(value), matplotlib.colors.to_hex(cmap(0.85 * i / count)),
                          SWEEP_MARKERS[i % len(SWEEP_MARKERS)], SWEEP_LINESTYLES[i % len(SWEEP_LINESTYLES)])
            for i, value in enumerate(values)}


def thin_space_in_math(text: str) -> str:
    r"""Thousands separators as thin spaces (``\,``) inside ``$...$`` only: ``$d = 100,000$`` becomes
    ``$d = 100\,000$`` while a comma in plain text stays a comma."""
    return "".join(re.sub(r"(?<=\d),(?=\d{3})", r"\\,", part) if part.startswith("$") else part
                   for part in _MATH.split(text))


# ------------------------------------------------------------------------------------------ summaries
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


def best_so_far_on_grid(frame: pd.DataFrame, x: str = "wall_time", y: str = "gap", by: Sequence[str] = ("method",),
                        points: int = 80) -> pd.DataFrame:
    """Each seed's best-so-far ``y`` (running minimum) on a grid of ``x`` shared by all seeds of a group.

    Seeds of a run take different times, so their rows never share an ``x`` value: grouping by exact
    time interleaves them. Per group ``by``, the grid runs from the latest first ``x`` to the earliest
    last ``x`` over the seeds (where every seed has data), and each seed contributes the best ``y`` it had
    reached by each grid point (the last value recorded at or before it). :func:`band` of the result
    averages over seeds at each grid point.
    """
    keys = list(by)
    rows = []
    for key, group in frame.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        runs = [run.sort_values(x) for _, run in group.groupby("seed")]
        start = max(float(run[x].iloc[0]) for run in runs)
        stop = min(float(run[x].iloc[-1]) for run in runs)
        grid = np.linspace(start, stop, points) if stop > start else np.array([stop])
        for run in runs:
            times = run[x].to_numpy(dtype=float)
            best = np.minimum.accumulate(run[y].to_numpy(dtype=float))
            at = np.searchsorted(times, grid, side="right") - 1
            rows.append(pd.DataFrame({**dict(zip(keys, key)), "seed": run["seed"].iloc[0], x: grid, y: best[at]}))
    return pd.concat(rows, ignore_index=True)


def coinciding(summary: pd.DataFrame, hue: str, x: str, rtol: float = 0.02) -> list[list[Any]]:
    """Groups of ``hue`` values whose centre lines agree within ``rtol`` (relative) at every shared ``x``:
    drawn, only the last of them would show."""
    lines = {name: part.set_index(x)["center"] for name, part in summary.groupby(hue, sort=False)}
    groups: list[list[Any]] = []
    for name, line in lines.items():
        for group in groups:
            other = lines[group[0]]
            shared = line.index.intersection(other.index)
            if len(shared) >= max(2, min(len(line), len(other)) // 2) and np.allclose(line[shared], other[shared], rtol=rtol, atol=0, equal_nan=True):
                group.append(name)
                break
        else:
            groups.append([name])
    return [g for g in groups if len(g) > 1]


# ------------------------------------------------------------------------------------------ drawing
def band_plot(ax, frame: pd.DataFrame, x: str = "iteration", y: str = "gap", hue: str = "method",
              log: bool = True, level: float = 0.95, methods: Iterable[str] | None = None,
              styles: Mapping[Any, Mapping[str, str]] | None = None, note_overlap: bool | str = True) -> pd.DataFrame:
    """Draw one line (centre over seeds) and one shaded ``level`` band per ``hue`` value on ``ax``.

    ``methods`` fixes the drawing order and the subset; ``styles`` maps each ``hue`` value to its look
    (default: :data:`METHOD_STYLE`). Markers are staggered along each line so that lines lying on top of
    each other still show every marker. Coinciding lines are named in a note on the panel
    (``note_overlap=True``) or marked ``≡`` in their legend labels (``"legend"``; the legend title then
    says what the mark means). Returns the plotted summary (see :func:`band`).
    """
    summary = band(frame, x, y, (hue,), log, level)
    order = [m for m in (list(methods) if methods is not None else list(dict.fromkeys(frame[hue])))
             if m in set(summary[hue])]
    look = (lambda v: styles[v]) if styles is not None else method_style
    drawn = pd.concat([summary[summary[hue] == name] for name in order]) if order else summary
    groups = coinciding(drawn, hue, x) if note_overlap else []
    marks = {v: " ≡" + ("₁₂₃₄₅₆₇₈₉"[i] if len(groups) > 1 else "") for i, g in enumerate(groups) for v in g}
    for index, name in enumerate(order):
        part = summary[summary[hue] == name].sort_values(x)
        style = look(name)
        step = max(1, len(part) // 6)
        text = style["label"] + (marks.get(name, "") if note_overlap == "legend" else "")
        ax.plot(part[x], part["center"], label=text, color=style["color"], ls=style["linestyle"],
                marker=style["marker"], markevery=(index * step // max(len(order), 1), step), ms=4.5)
        ax.fill_between(part[x], part["low"], part["high"], color=style["color"], alpha=0.15, lw=0)
    if log:
        ax.set_yscale("log")
        _readable_log_axis(ax)
    ax.grid(True, which="major", alpha=0.3)
    if groups and note_overlap is True:
        text = "coincide:\n" + "\n".join(", ".join(look(v)["label"] for v in g) for g in groups)
        (x0, y0), ha, va = _emptiest_corner(ax)
        note = ax.text(x0, y0, text, transform=ax.transAxes, fontsize=7.5, ha=ha, va=va,
                       bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="0.7", alpha=0.9))
        note.set_in_layout(False)
    return summary


def _emptiest_corner(ax) -> tuple[tuple[float, float], str, str]:
    """The corner of ``ax`` (axes coordinates, alignment) with the fewest drawn points near it."""
    ax.autoscale_view()
    points = [ax.transAxes.inverted().transform(ax.transData.transform(line.get_xydata()))
              for line in ax.get_lines() if len(line.get_xydata())]
    points = np.concatenate(points) if points else np.empty((0, 2))
    corners = [((0.03, 0.04), "left", "bottom"), ((0.97, 0.96), "right", "top"),
               ((0.03, 0.96), "left", "top"), ((0.97, 0.04), "right", "bottom")]

    def crowd(corner):
        (x, y), _, _ = corner
        return int(((np.abs(points[:, 0] - x) < 0.45) & (np.abs(points[:, 1] - y) < 0.3)).sum())

    return min(corners, key=crowd)


def _readable_log_axis(ax) -> None:
    """On a log axis spanning less than two decades, a few ticks labelled as plain numbers (``60``,
    ``5×10⁴``) instead of one or none, so that every panel can be read."""
    from matplotlib import ticker

    low, high = ax.get_ylim()
    if not (low > 0 and high / low < 100):
        return
    locator = ticker.MaxNLocator(nbins=4) if high / low < 10 else ticker.LogLocator(subs=(1.0, 2.0, 5.0))
    ax.yaxis.set_major_locator(locator)
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(_tick_label))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())


def _tick_label(value: float, _position: Any = None) -> str:
    if 1e3 <= value < 1e4:
        return f"{value:.0f}"
    if value <= 0 or 1e-3 <= value < 1e3:
        return f"{value:.3g}"
    exponent = math.floor(math.log10(value))
    mantissa = value / 10 ** exponent
    return f"$10^{{{exponent}}}$" if round(mantissa, 2) == 1 else rf"${mantissa:.3g}\times10^{{{exponent}}}$"


def panel_grid(count: int, ncols: int | None = None, height: float = PANEL_HEIGHT_IN, width: float = TEXT_WIDTH_IN,
               **kwargs: Any):
    """A figure at the text width with ``count`` panels in rows of ``ncols`` (default: up to 3), the
    unused cells hidden. Returns the figure and the ``count`` axes in reading order."""
    import matplotlib.pyplot as plt

    ncols = ncols or min(count, 3)
    nrows = math.ceil(count / ncols)
    with matplotlib.rc_context(RC):
        fig, axes = plt.subplots(nrows, ncols, figsize=(width, min(height * nrows + 0.6, MAX_HEIGHT_IN)),
                                 squeeze=False, layout="constrained", **kwargs)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:count])


def _figure_legend(fig, axes: Sequence[Any], ncols: int | None = None) -> None:
    handles, labels = {}, []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in handles:
                handles[label] = handle
                labels.append(label)
    if labels:
        fig.legend([handles[name] for name in labels], labels, loc="outside lower center",
                   ncols=ncols or min(len(labels), 4), frameon=False)


def curve_grid(frame: pd.DataFrame, panels: Sequence[Any], by: str | Sequence[str] = "panel",
               title: Callable[[Any, pd.DataFrame], str] | None = None, x: str = "iteration", y: str = "gap",
               methods: Sequence[str] | None = None, xlabel: str = ITERATION_LABEL, ylabel: str = GAP_LABEL,
               ncols: int | None = None, log: bool = True, xscale: str = "linear", height: float = PANEL_HEIGHT_IN,
               best_so_far: bool = False) -> Figure:
    """One panel per value of ``by`` (a column, or several: then ``panels`` holds tuples) with a band
    per method, titled ``title(value, rows)``, and one legend for the figure naming the methods drawn.

    With ``best_so_far`` each seed's best ``y`` is first put on a grid of ``x`` shared by the seeds
    (:func:`best_so_far_on_grid`): the way to summarise curves against wall-clock time.
    """
    columns = [by] if isinstance(by, str) else list(by)
    fig, axes = panel_grid(len(panels), ncols, height)
    with matplotlib.rc_context(RC):
        for ax, value in zip(axes, panels):
            key = value if isinstance(value, tuple) else (value,)
            rows = frame[np.logical_and.reduce([frame[c] == k for c, k in zip(columns, key)])]
            if methods is not None:
                rows = rows[rows["method"].isin(methods)]
            shown = best_so_far_on_grid(rows, x, y) if best_so_far else rows
            band_plot(ax, shown, x=x, y=y, methods=methods, log=log)
            ax.set_xscale(xscale)
            ax.set_title(thin_space_in_math(title(value, rows) if title else str(value)))
            ax.set_xlabel(xlabel)
        for ax in axes[:: ncols or min(len(panels), 3)]:
            ax.set_ylabel(ylabel)
        _figure_legend(fig, axes)
    return fig


def sweep_grid(frame: pd.DataFrame, panels: Sequence[str], titles: Mapping[str, str],
               styles: Callable[[str, Sequence[str]], Mapping[str, Mapping[str, str]]], x: str = "iteration",
               y: str = "gap", ncols: int = 3, height: float = 2.6) -> Figure:
    """One panel per ablation (rows ``panel == name``) with a band per ``setting``, a legend per panel;
    ``styles(panel, settings)`` gives each setting its look (methods keep theirs from METHOD_STYLE)."""
    fig, axes = panel_grid(len(panels), ncols, height)
    with matplotlib.rc_context(RC):
        for ax, panel in zip(axes, panels):
            rows = frame[frame["panel"] == panel]
            settings = list(dict.fromkeys(rows["setting"]))
            band_plot(ax, rows, x=x, y=y, hue="setting", methods=settings, styles=styles(panel, settings),
                      note_overlap="legend")
            ax.set_title(titles.get(panel, panel))
            ax.set_xlabel(ITERATION_LABEL)
            marked = any("≡" in text for text in ax.get_legend_handles_labels()[1])
            ax.legend(frameon=False, fontsize=7.5, title="≡: curves coincide" if marked else None,
                      title_fontsize=7.5)
        for ax in axes[::ncols]:
            ax.set_ylabel(GAP_LABEL)
    return fig


def steps_figure(frame: pd.DataFrame, methods: Sequence[str], rounds: int) -> Figure:
    """Left: the gap per sequential round; right: base-optimizer steps reached per round (Vanilla: one)."""
    fig, (left, right) = panel_grid(2, 2, 2.9)
    with matplotlib.rc_context(RC):
        band_plot(left, frame, methods=methods)
        left.set_xlabel("sequential round $t$")
        left.set_ylabel(GAP_LABEL)
        steps = frame[frame["method"].isin(methods) & (frame["method"] != "vanilla")]
        right.plot([0, rounds], [0, rounds], **_line_kwargs(method_style("vanilla")))
        for method in [m for m in methods if m in set(steps["method"])]:
            mean = steps[steps["method"] == method].groupby("iteration")["steps"].mean()
            right.plot(mean.index, mean.to_numpy(), markevery=max(1, len(mean) // 6), **_line_kwargs(method_style(method)))
        right.set_xlabel("sequential round $t$")
        right.set_ylabel("base-optimizer steps reached")
        right.grid(True, alpha=0.3)
        _figure_legend(fig, [left])
    return fig


def _line_kwargs(style: Mapping[str, str]) -> dict[str, Any]:
    return dict(label=style["label"], color=style["color"], ls=style["linestyle"], marker=style["marker"])


def speedup_against_n(scaling: pd.DataFrame, panels: Sequence[str], methods: Sequence[str],
                      title: Callable[[str], str] = str) -> Figure:
    """Speedup over Vanilla against N per panel (log-log), with the reference rates N and √N."""
    ns = np.array(sorted(scaling["parallelism"].unique()), dtype=float)
    fig, axes = panel_grid(len(panels), 3, 2.4, sharey=True)
    with matplotlib.rc_context(RC):
        for ax, panel in zip(axes, panels):
            rows = scaling[(scaling["panel"] == panel) & scaling["reached"]]
            ax.plot(ns, ns, color="0.55", ls=(0, (4, 2)), lw=1, label="rate $N$")
            ax.plot(ns, np.sqrt(ns), color="0.55", ls=(0, (1, 1.5)), lw=1.2, label=r"rate $\sqrt{N}$")
            band_plot(ax, rows, x="parallelism", y="speedup", methods=methods)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log", base=2)
            ax.set_xticks(ns, [f"{int(n)}" for n in ns])
            ax.set_yticks(ns, [f"{int(n)}" for n in ns])
            ax.minorticks_off()
            ax.set_title(title(panel))
            ax.set_xlabel("parallelism $N$")
            ax.yaxis.set_tick_params(labelleft=True)
        for ax in axes[::3]:
            ax.set_ylabel("speedup over Vanilla")
        _figure_legend(fig, axes, ncols=5)
    return fig


def stability_figure(share: pd.DataFrame, final: pd.DataFrame, largest: pd.DataFrame) -> Figure:
    """Left: share of seeds that converge per (learning rate, N), the largest converging N outlined;
    right: the gap after the budget against N, one line per learning rate."""
    import matplotlib.pyplot as plt

    fig, (left, right) = panel_grid(2, 2, 3.0)
    with matplotlib.rc_context(RC):
        image = left.imshow(share.to_numpy(), cmap="Blues", vmin=0, vmax=1, aspect="auto", origin="lower")
        left.set_xticks(range(share.shape[1]), [str(int(n)) for n in share.columns])
        left.set_yticks(range(share.shape[0]), [f"{lr:g}" for lr in share.index])
        for i, row in enumerate(largest.itertuples()):
            if np.isfinite(row.largest_n):
                j = list(share.columns).index(row.largest_n)
                left.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="#d55e00", lw=2))
        left.set_xlabel("parallelism $N$")
        left.set_ylabel(r"SGD learning rate $\eta$")
        left.set_title("share of seeds that converge")
        fig.colorbar(image, ax=left, shrink=0.85)
        styles = sweep_styles(list(final.index), lambda lr: rf"$\eta$ = {lr:g}")
        for lr_value, row in final.iterrows():
            right.plot(row.index, row.to_numpy(), **_line_kwargs(styles[lr_value]))
        right.set_xscale("log", base=2)
        right.set_yscale("log")
        right.set_xticks(final.columns, [str(int(n)) for n in final.columns])
        right.minorticks_off()
        right.set_xlabel("parallelism $N$")
        right.set_ylabel("gap after the budget")
        right.set_title("geometric mean over the seeds that stay finite")
        right.grid(True, which="major", alpha=0.3)
        right.legend(frameon=False)
    return fig


def gradient_fields(field: pd.DataFrame, history: pd.DataFrame, sizes: Sequence[int]) -> Figure:
    """The true gradient field (white arrows with a dark edge, readable on any shading) and the
    estimator's posterior mean (blue) after T' points (orange), over the posterior std (grey), per T'."""
    fig, axes = panel_grid(len(sizes), len(sizes), 2.6)
    # One arrow scale for the whole figure: the 95th percentile of |grad F| spans about one grid cell.
    scale = float(np.percentile(np.hypot(field["true_x"], field["true_y"]), 95)) * np.sqrt(len(field) / len(sizes))
    with matplotlib.rc_context(RC):
        for ax, size in zip(axes, sizes):
            rows = field[field["history"] == size]
            n = int(round(np.sqrt(len(rows))))
            xs, ys = rows["x"].to_numpy().reshape(n, n), rows["y"].to_numpy().reshape(n, n)
            image = ax.pcolormesh(xs, ys, rows["std"].to_numpy().reshape(n, n), cmap="Greys", vmin=0, vmax=1.6,
                                  shading="nearest")
            ax.quiver(rows["x"], rows["y"], rows["true_x"], rows["true_y"], color="white", edgecolor="black",
                      linewidth=0.6, scale=scale, width=0.009, label=r"true $\nabla F$")
            ax.quiver(rows["x"], rows["y"], rows["est_x"], rows["est_y"], color=method_style("optex")["color"],
                      scale=scale, width=0.006, label=r"estimate $\mu(\theta)$")
            points = history[history["index"] < size]
            ax.plot(points["x"], points["y"], "o", ms=4, mfc="#e69f00", mec="black", mew=0.5, ls="none",
                    label="evaluated points")
            ax.set_title(f"$T'$ = {int(size)}")
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
        fig.colorbar(image, ax=axes[-1], label=r"posterior std $\Sigma(\theta)$", shrink=0.85)
        _figure_legend(fig, axes[:1])
    return fig


def cost_figure(predictions: pd.DataFrame, parallelism: int) -> Figure:
    """Measured (markers) and modelled (dashed) time of one estimate and one history update against T0,
    one line per d."""
    fig, axes = panel_grid(2, 2, 2.9)
    dims = sorted(predictions["dim"].unique())
    styles = sweep_styles(dims, lambda d: f"d = {int(d):,}")
    with matplotlib.rc_context(RC):
        for ax, op in zip(axes, ("estimate", "update")):
            part = predictions[predictions["operation"] == op]
            for dim in dims:
                rows = part[part["dim"] == dim].sort_values("history")
                style = styles[dim]
                ax.plot(rows["history"], rows["measured_s"] * 1e3, marker=style["marker"], ls="-",
                        color=style["color"], label=style["label"])
                ax.plot(rows["history"], rows["predicted_s"] * 1e3, "--", color=style["color"], lw=1)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("history size $T_0$")
            ax.set_ylabel("milliseconds")
            ax.set_title("one estimate" if op == "estimate" else f"one history update ($N$ = {parallelism})")
            ax.grid(True, which="major", alpha=0.3)
        axes[0].legend(frameon=False)
    return fig


def error_decay_figure(gp: pd.DataFrame, sources: Sequence[str], labels: Mapping[str, str],
                       reference: Callable[[str], float]) -> Figure:
    """Left: error (solid) and sqrt(d) Sigma_T (dashed) against T per sampled field; right: the local
    decay exponent of the error between consecutive T, with the ``reference(source)`` rate dotted."""
    styles = {s: _style(labels[s], c, m, "-") for s, c, m in zip(sources, ("#0072b2", "#d55e00", "#009e73"), "os^")}
    fig, axes = panel_grid(2, 2, 3.2)
    with matplotlib.rc_context(RC):
        for source in sources:
            rows, style = gp[gp["source"] == source], styles[source]
            error = band(rows, x="history", y="error", by=("source",))
            spread = band(rows, x="history", y="scaled_std", by=("source",))
            axes[0].plot(error["history"], error["center"], **_line_kwargs(style), markevery=3)
            axes[0].fill_between(error["history"], error["low"], error["high"], color=style["color"], alpha=0.2, lw=0)
            axes[0].plot(spread["history"], spread["center"], color=style["color"], ls="--", lw=1)
            local = band(local_exponents(rows), x="history", y="slope", by=("source",), log=False)
            axes[1].plot(local["history"], local["center"], **_line_kwargs(style))
            axes[1].fill_between(local["history"], local["low"], local["high"], color=style["color"], alpha=0.2, lw=0)
            axes[1].axhline(reference(source), color=style["color"], ls=":", lw=1.2)
        axes[0].set_xscale("log")
        axes[0].set_yscale("log")
        axes[0].set_ylabel(r"RMS $\|\nabla F - \mu_T\|$ (solid), $\sqrt{d}\,\Sigma_T$ (dashed)")
        axes[1].set_xscale("log")
        axes[1].set_ylabel("local decay exponent of the error")
        axes[1].set_ylim(bottom=0)
        for ax in axes:
            ax.set_xlabel("history size $T$")
            ax.grid(True, which="major", alpha=0.3)
        _figure_legend(fig, axes[:1])
    return fig


def local_exponents(rows: pd.DataFrame, x: str = "history", y: str = "error") -> pd.DataFrame:
    """Per seed: -Δlog(y)/Δlog(x) between consecutive ``x``, placed at their geometric mean."""
    frames = []
    for (source, seed), run in rows.sort_values(x).groupby(["source", "seed"]):
        logs_x, logs_y = np.log(run[x].to_numpy(float)), np.log(run[y].to_numpy(float))
        frames.append(pd.DataFrame({"source": source, "seed": seed, x: np.exp((logs_x[1:] + logs_x[:-1]) / 2),
                                    "slope": -np.diff(logs_y) / np.diff(logs_x)}))
    return pd.concat(frames, ignore_index=True)


def relative_error_figure(frame: pd.DataFrame, sources: Sequence[str], labels: Mapping[str, str]) -> Figure:
    """Relative estimation error against T, one band per source."""
    styles = {s: _style(labels[s], c, m, ls) for s, c, m, ls in
              zip(sources, ("#666666", "#e69f00", "#cc79a7", "#56b4e9"), "xs^D", ("-", "--", "-.", ":"))}
    fig, (ax,) = panel_grid(1, 1, 3.2, width=5.0)
    with matplotlib.rc_context(RC):
        band_plot(ax, frame, x="history", y="rel_error", hue="source", methods=sources, styles=styles)
        ax.set_xscale("log")
        ax.set_xlabel("history size $T$")
        ax.set_ylabel(r"RMS $\|\nabla F - \mu_T\|$ / RMS $\|\nabla F\|$")
        ax.legend(frameon=False)
    return fig


FIG6_TITLES = {"parallel": "(a) parallel vs sequential", "select": r"(b) selection of $\theta_t$",
               "history": "(c) history size $T_0$", "parallelism": "(d) parallelism $N$",
               "proxy": "(e) surrogate of the proxy steps"}
FIG6_SETTINGS = {"vanilla": "Vanilla", "kernel": "OptEx (GP mean)", "last_gradient": "Last gradient",
                 "last": "last process", "min_loss": "lowest loss", "min_grad_norm": "smallest gradient norm"}
_FIG6_METHODS = {"vanilla": "vanilla", "kernel": "optex", "last_gradient": "last_gradient", "N=1": "vanilla"}


def fig6_label(setting: str) -> str:
    """The reader's name of a Fig. 6 setting (``T0=10`` becomes ``T0 = 10``)."""
    if setting in FIG6_SETTINGS:
        return FIG6_SETTINGS[setting]
    return re.sub(r"^T0=", "$T_0$ = ", setting).replace("N=", "N = ").replace("(N = ", "($N$ = ")


def fig6_styles(panel: str, settings: Sequence[str]) -> dict[str, Mapping[str, str]]:
    """Looks of a Fig. 6 panel's settings: methods keep theirs (Vanilla, OptEx, last gradient; N = 1 is
    Vanilla), swept values get :func:`sweep_styles`."""
    swept = [s for s in settings if s not in _FIG6_METHODS]
    styles = dict(sweep_styles(swept, fig6_label))
    for setting in settings:
        if setting in _FIG6_METHODS:
            style = method_style(_FIG6_METHODS[setting])
            styles[setting] = _style(fig6_label(setting) if setting != "N=1" else "N = 1 (Vanilla)", style["color"],
                                     style["marker"], style["linestyle"])
    return styles


# ------------------------------------------------------------------------------------------ Fig. 1
def _window(points: np.ndarray, pad: float = 0.35) -> tuple[np.ndarray, np.ndarray]:
    low, high = points.min(0), points.max(0)
    span = np.maximum(high - low, 1e-3)
    centre, half = (low + high) / 2, (1 + pad) * span.max() / 2
    return centre - half, centre + half


def draw_iteration(ax, trace: pd.DataFrame, function: str, method: str, t: int) -> None:
    """One OptEx-style iteration ``t`` of ``method`` on a 2-D ``function``, zoomed on it: contours,
    the path so far (grey), the exact continuation (dashed), the evaluated points, their true steps
    (arrows) and the kept point (star)."""
    from . import problems

    rows = trace[(trace["function"] == function) & (trace["method"] == method)]
    now = rows[rows["iteration"] == t]
    kinds = {kind: now[now["kind"] == kind].sort_values("process") for kind in ("exact", "proxy", "step")}
    path = rows[(rows["kind"] == "iterate") & (rows["iteration"] < t)].sort_values("iteration")
    low, high = _window(pd.concat(kinds.values())[["x", "y"]].to_numpy())
    problem = problems.make(function, 2)
    xs, ys = np.meshgrid(np.linspace(low[0], high[0], 160), np.linspace(low[1], high[1], 160))
    values = problem(np.stack([xs, ys], -1), np)
    ax.contour(xs, ys, np.log1p(values - problem.minimum), levels=18, cmap="Greys", linewidths=0.6, alpha=0.8)
    colour = method_style(method)["color"]
    ax.plot(path["x"], path["y"], color="0.55", lw=0.9, marker=".", ms=3)
    ax.plot(kinds["exact"]["x"], kinds["exact"]["y"], "k--", lw=1.1, marker="o", ms=3, mfc="white")
    ax.plot(kinds["proxy"]["x"], kinds["proxy"]["y"], color=colour, lw=1.0, marker="o", ms=5)
    for (_, start), (_, end) in zip(kinds["proxy"].iterrows(), kinds["step"].iterrows()):
        ax.annotate("", xy=(end["x"], end["y"]), xytext=(start["x"], start["y"]),
                    arrowprops=dict(arrowstyle="->", color=colour, lw=1.0))
    chosen = kinds["step"][kinds["step"]["selected"]]
    ax.plot(chosen["x"], chosen["y"], marker="*", ms=13, color=colour, mec="black", mew=0.7, ls="none")
    ax.set_xlim(low[0], high[0])
    ax.set_ylim(low[1], high[1])
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def iteration_grid(trace: pd.DataFrame, functions: Sequence[str], methods: Sequence[str], t: int,
                   parallelism: int) -> Figure:
    """Fig. 1: iteration ``t`` of every method (columns) on every function (rows)."""
    import matplotlib.pyplot as plt

    fig, axes = panel_grid(len(functions) * len(methods), len(methods), 1.9)
    with matplotlib.rc_context(RC):
        for index, ax in enumerate(axes):
            function, method = functions[index // len(methods)], methods[index % len(methods)]
            draw_iteration(ax, trace, function, method, t)
            ax.set_title(f"{method_label(method)}, {function.capitalize()}")
        legend = [plt.Line2D([], [], color="0.55", marker=".", label=r"iterates up to $\theta_{t-1}$"),
                  plt.Line2D([], [], color="k", ls="--", marker="o", mfc="white", label=f"{parallelism} exact steps"),
                  plt.Line2D([], [], color="0.3", marker="o", label="evaluated points"),
                  plt.Line2D([], [], color="0.3", marker=r"$\rightarrow$", ls="none", ms=10, label="true step"),
                  plt.Line2D([], [], color="0.3", marker="*", ms=10, ls="none", label=r"$\theta_t$ (kept)")]
        fig.legend(handles=legend, loc="outside lower center", ncols=3, frameon=False)
    return fig


def iteration_animation(trace: pd.DataFrame, function: str, methods: Sequence[str], frames: Sequence[int]) -> str:
    """Every iteration in ``frames`` of ``methods`` side by side, as an HTML player (small JPEG frames
    embedded in the page)."""
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation

    with matplotlib.rc_context(RC):
        fig, axes = plt.subplots(1, len(methods), figsize=(6.4, 3.3), dpi=72, layout="constrained", squeeze=False)

        def update(t: int) -> None:
            for ax, method in zip(axes[0], methods):
                ax.clear()
                draw_iteration(ax, trace, function, method, t)
                ax.set_title(f"{method_label(method)}, {function.capitalize()}, t = {t}")

        animation = FuncAnimation(fig, update, frames=list(frames), interval=700)
        with plt.rc_context({"animation.frame_format": "jpeg"}):
            html = animation.to_jshtml(fps=1.5, default_mode="once")
    plt.close(fig)
    return html


# ------------------------------------------------------------------------------------------ checks
def legend_labels(fig) -> list[str]:
    """The texts of every legend of ``fig`` (figure legends and axes legends)."""
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    return [text.get_text() for legend in legends for text in legend.get_texts()]


def figure_problems(fig, data: pd.DataFrame) -> list[str]:
    """Why ``fig`` is not fit for the book (empty: it is): wider than the text, taller than a screen,
    text below MIN_FONT_PT, or a legend naming a method that ``data`` (its ``method`` column) lacks."""
    problems = []
    width, height = fig.get_size_inches()
    if width > TEXT_WIDTH_IN + 1e-6:
        problems.append(f"{width:.1f} in wide, more than the text width {TEXT_WIDTH_IN} in")
    if height > MAX_HEIGHT_IN + 1e-6:
        problems.append(f"{height:.1f} in high, more than {MAX_HEIGHT_IN} in")
    small = sorted({round(t.get_fontsize(), 1) for t in fig.findobj(matplotlib.text.Text)
                    if t.get_visible() and t.get_text().strip() and t.get_fontsize() < MIN_FONT_PT})
    if small:
        problems.append(f"text of {', '.join(map(str, small))} pt, below {MIN_FONT_PT} pt")
    if "method" in data.columns:
        present = {method_style(m)["label"] for m in set(data["method"]) if m in METHOD_STYLE}
        known = {style["label"] for style in METHOD_STYLE.values()}
        absent = [label for label in legend_labels(fig) if label in known and label not in present]
        if absent:
            problems.append(f"the legend names {', '.join(absent)}, which the figure's data does not hold")
    return problems


def save_figure(fig, figure_id: str, data: pd.DataFrame, directory: str | Path) -> dict[str, Path]:
    """Write ``<id>.svg``, ``<id>.png`` and the plotted data ``<id>.csv`` into ``directory``, after
    checking the figure (:func:`figure_problems`)."""
    check_figure_id(figure_id)
    problems = figure_problems(fig, data)
    if problems:
        raise ValueError(f"figure {figure_id}: {'; '.join(problems)}")
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


__all__ = ["FIG6_TITLES", "fig6_label", "fig6_styles", "GAP_LABEL", "ITERATION_LABEL", "METHOD_STYLE", "MIN_FONT_PT", "TEXT_WIDTH_IN", "band", "band_plot",
           "best_so_far_on_grid", "check_figure_id", "coinciding", "cost_figure", "curve_grid", "draw_iteration",
           "error_decay_figure", "figure_problems", "gradient_fields", "iteration_animation", "iteration_grid",
           "legend_labels", "local_exponents", "method_label", "method_style", "panel_grid", "relative_error_figure",
           "save_figure", "scaling_plot", "speedup_against_n", "stability_figure", "steps_figure", "sweep_grid", "sweep_styles",
           "thin_space_in_math"]


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
