"""Figures of the book: one look per method, seed-averaged curves with 95% bands, one function per kind
of figure, saved under a stable id.

Every figure has one id (``"synthetic-demo"``) that is its file stem, its glue key and its ``:name:``
in the page, so a reader can go from a figure in the book to the files behind it and back.

- :data:`METHOD_STYLE` is the one table of display name, colour, marker and line style per method
  (colours from the Okabe-Ito palette, safe for the common colour-vision deficiencies; marker and line
  style tell methods apart where colour cannot, and where curves lie on top of each other).
- Figures are at most :data:`TEXT_WIDTH_IN` wide (the book's text width) with text of at least
  :data:`MIN_FONT_PT`; :func:`save_figure` refuses one that is wider, has smaller text, whose legend
  names a method that is not in its data, or whose legends or panel notes lie over drawn data (they go
  outside the axes: a figure legend below, :func:`legend_below`, :class:`PanelNote` under the title).
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

from . import tables
from .analysis import (RETURN_BOUNDS, UNBOUNDED, VALUE_BOUNDS, Bounds, clip_to_bounds, mean_ci, return_bounds,
                       value_bounds)


def _style(label: str, color: str, marker: str, linestyle: str) -> Mapping[str, str]:
    return MappingProxyType(dict(label=label, color=color, marker=marker, linestyle=linestyle))


# Every method of optex.experiments.synthetic.METHODS and optex.experiments.training.METHODS.
METHOD_STYLE: Mapping[str, Mapping[str, str]] = MappingProxyType({
    "vanilla": _style("Vanilla", "#666666", "x", "-"),
    "vanilla_long": _style("Vanilla (N·T iterations)", "#222222", "+", ":"),  # dark: seen under the bands
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


# ------------------------------------------------------------------------------------------ value ranges
def _resolve_bounds(bounds: Bounds | None, y: str) -> Bounds:
    if bounds is None:
        return value_bounds(y)
    if len(bounds) != 2 or (None not in bounds and bounds[0] > bounds[1]):
        raise ValueError(f"bounds must be (low, high) with low <= high (None: open), got {bounds!r}")
    return tuple(bounds)


def fill_band(ax, x: Any, low: Any, high: Any, bounds: Bounds = UNBOUNDED, **kwargs: Any):
    """``ax.fill_between`` of a band clipped to the quantity's range ``bounds``: the one way the book
    shades an interval, so that a normal-approximation band never shows an error rate below 0 or a
    cosine above 1."""
    return ax.fill_between(x, clip_to_bounds(low, bounds), clip_to_bounds(high, bounds), **kwargs)


# ------------------------------------------------------------------------------------------ summaries
def band(frame: pd.DataFrame, x: str = "iteration", y: str = "gap", by: Iterable[str] = ("method",),
         log: bool = True, level: float = 0.95, bounds: Bounds | None = None) -> pd.DataFrame:
    """Centre and ``level`` t-interval of ``y`` over seeds, per group ``by`` and value of ``x``.

    With ``log=True`` the statistics are taken of log10(y) and mapped back, i.e. the centre is the
    geometric mean and the band is multiplicative. On a log axis this is the honest summary: an
    arithmetic band over values that span decades is dominated by the largest seed and can dip below
    zero. Non-positive values are dropped under ``log`` (they cannot be drawn there).

    The interval is clipped to ``bounds`` = (low, high), the range ``y`` can take (``None`` on a side:
    open; default: :func:`value_bounds` of the column name): with few seeds a t-interval of a mean
    near 0 % error reaches below it.
    """
    limits = _resolve_bounds(bounds, y)
    keys = list(by) + [x]
    rows = []
    for key, group in frame.groupby(keys, sort=True):
        values = group[y].to_numpy(dtype=float)
        if log:
            values = np.log10(values[values > 0])
        centre, low, high = mean_ci(values, level)
        if log:
            centre, low, high = (10.0 ** v for v in (centre, low, high))
        low, high = (float(v) for v in clip_to_bounds([low, high], limits))
        rows.append(dict(zip(keys, key), center=centre, low=low, high=high, seeds=int(np.isfinite(values).sum())))
    return pd.DataFrame(rows)


def best_so_far_on_grid(frame: pd.DataFrame, x: str = "wall_time", y: str = "gap", by: Sequence[str] = ("method",),
                        points: int = 80, log: bool = False) -> pd.DataFrame:
    """Each seed's best-so-far ``y`` (running minimum) on a grid of ``x`` shared by all seeds of a group.

    Seeds of a run take different times, so their rows never share an ``x`` value: grouping by exact
    time interleaves them. Per group ``by``, the grid runs from the latest first ``x`` to the earliest
    last ``x`` over the seeds (where every seed has data), and each seed contributes the best ``y`` it had
    reached by each grid point (the last value recorded at or before it). :func:`band` of the result
    averages over seeds at each grid point. With ``log`` (a logarithmic ``x`` axis) the grid is spaced
    evenly in log ``x`` and starts at the first positive ``x`` (the row at time 0 has no place there).
    """
    keys = list(by)
    rows = []
    for key, group in frame.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        runs = [run.sort_values(x) for _, run in group.groupby("seed")]
        firsts = [run.loc[run[x] > 0, x].iloc[0] if log and (run[x] > 0).any() else run[x].iloc[0] for run in runs]
        start = max(float(v) for v in firsts)
        stop = min(float(run[x].iloc[-1]) for run in runs)
        space = np.geomspace if log and start > 0 else np.linspace
        grid = space(start, stop, points) if stop > start else np.array([stop])
        for run in runs:
            times = run[x].to_numpy(dtype=float)
            best = np.minimum.accumulate(run[y].to_numpy(dtype=float))
            at = np.searchsorted(times, grid, side="right") - 1
            rows.append(pd.DataFrame({**dict(zip(keys, key)), "seed": run["seed"].iloc[0], x: grid, y: best[at]}))
    return pd.concat(rows, ignore_index=True)


def coinciding(summary: pd.DataFrame, hue: str, x: str, share: float = 0.02, most: float = 0.6,
               log: bool = True) -> list[list[Any]]:
    """Groups of ``hue`` values whose centre lines lie on top of each other: drawn, only the last of them
    would show. Distances are taken as the axis draws them (in log10 on a log axis, ``log=True``) against
    the span of all the centre lines: two lines coincide when, at ``most`` of the ``x`` values they share
    (at least half of the shorter line's), they are within ``share`` of that span. So a curve 4 units off
    on a 50-unit axis is seen, however small 4 is against the values themselves, and two curves that part
    only near their ends are noted, since one hides the other along the rest. A line that is hidden so
    at ``most`` of its points by several lines drawn after it (later in ``summary``), each along a part,
    joins the one that hides most of it. A group holds every line that coincides with another of it, in
    the order of ``summary``."""
    def drawn(part: pd.DataFrame) -> pd.Series:
        values = part.set_index(x)["center"].astype(float)
        return np.log10(values.where(values > 0)) if log else values

    lines = {name: drawn(part) for name, part in summary.groupby(hue, sort=False)}
    values = np.concatenate([line.to_numpy() for line in lines.values()]) if lines else np.empty(0)
    values = values[np.isfinite(values)]
    tolerance = share * float(values.max() - values.min()) if values.size else 0.0
    names = list(lines)
    linked = {name: frozenset([name]) for name in names}

    def link(name: Any, other: Any) -> None:
        joined = linked[name] | linked[other]
        linked.update(dict.fromkeys(joined, joined))

    for index, name in enumerate(names):
        for other in names[index + 1:]:
            gaps = (lines[name] - lines[other]).abs().dropna()
            if len(gaps) >= max(2, min(len(lines[name]), len(lines[other])) // 2) and (gaps <= tolerance).mean() >= most:
                link(name, other)
    for index, name in enumerate(names[:-1]):  # hidden not under one line but under several in turn
        own = lines[name].dropna()
        near = pd.DataFrame({other: (own - lines[other].reindex(own.index)).abs() <= tolerance
                             for other in names[index + 1:]})
        if len(linked[name]) == 1 and len(own) >= 2 and near.any(axis=1).mean() >= most:
            link(name, near.sum().idxmax())
    groups = dict.fromkeys(linked[name] for name in names if len(linked[name]) > 1)
    return [sorted(group, key=names.index) for group in groups]


# ------------------------------------------------------------------------------------------ drawing
def band_plot(ax, frame: pd.DataFrame, x: str = "iteration", y: str = "gap", hue: str = "method",
              log: bool = True, level: float = 0.95, methods: Iterable[str] | None = None,
              styles: Mapping[Any, Mapping[str, str]] | None = None, note_overlap: bool | str = True,
              bounds: Bounds | None = None) -> pd.DataFrame:
    """Draw one line (centre over seeds) and one shaded ``level`` band per ``hue`` value on ``ax``.

    ``methods`` fixes the drawing order and the subset; ``styles`` maps each ``hue`` value to its look
    (default: :data:`METHOD_STYLE`). Markers are staggered along each line so that lines lying on top of
    each other still show every marker. Coinciding lines are named in a note on the panel
    (``note_overlap=True``) or marked ``≡`` in their legend labels (``"legend"``; the legend title then
    says what the mark means). Returns the plotted summary (see :func:`band`).
    """
    limits = _resolve_bounds(bounds, y)
    summary = band(frame, x, y, (hue,), log, level, limits)
    order = [m for m in (list(methods) if methods is not None else list(dict.fromkeys(frame[hue])))
             if m in set(summary[hue])]
    look = (lambda v: styles[v]) if styles is not None else method_style
    drawn = pd.concat([summary[summary[hue] == name] for name in order]) if order else summary
    groups = coinciding(drawn, hue, x, log=log) if note_overlap else []
    marks = {v: " ≡" + ("₁₂₃₄₅₆₇₈₉"[i] if len(groups) > 1 else "") for i, g in enumerate(groups) for v in g}
    for index, name in enumerate(order):
        part = summary[summary[hue] == name].sort_values(x)
        style = look(name)
        step = max(1, len(part) // 6)
        text = style["label"] + (marks.get(name, "") if note_overlap == "legend" else "")
        ax.plot(part[x], part["center"], label=text, color=style["color"], ls=style["linestyle"],
                marker=style["marker"], markevery=(index * step // max(len(order), 1), step), ms=4.5)
        fill_band(ax, part[x], part["low"], part["high"], limits, color=style["color"], alpha=0.15, lw=0)
    if log:
        ax.set_yscale("log")
        _readable_log_axis(ax)
    ax.grid(True, which="major", alpha=0.3)
    if groups and note_overlap is True:
        if len(groups) == 1 and len(groups[0]) == len(order) > 2:  # the legend already lists them all
            PanelNote(ax, "", [["all curves coincide"]])
        else:
            counts = " and ".join(str(len(g)) for g in groups)
            short = f"{counts} curves coincide" if len(groups) == 1 else f"coincide: {counts} curves"
            PanelNote(ax, "coincide:", [[look(v)["label"] for v in g] for g in groups], short=short)
    return summary


class PanelNote(matplotlib.text.Text):
    """A note between a panel's title and its axes, where it cannot cover a curve: it lives on a strip
    (a child axes without axis) just above ``ax``, which the title then clears and constrained layout
    makes room for. At every layout and draw its ``groups`` (lists of names, separated by ``;`` after
    the ``header``) are wrapped at their separators to the axes' width then; where they would still be
    wider than the axes or taller than ``max_height`` of them, the note says only how many curves
    coincide (``short``; the staggered markers show which)."""

    def __init__(self, ax, header: str, groups: Sequence[Sequence[str]], fontsize: float = MIN_FONT_PT,
                 short: str | None = None, max_height: float = 0.35, gap_pt: float = 2.0) -> None:
        self._header, self._groups, self._short, self._max_height = header, [list(g) for g in groups], short, max_height
        self._note_axes, self._gap_pt = ax, gap_pt
        super().__init__(0.5, 0.5, self._lines(None), fontsize=fontsize, ha="center", va="center", color="0.25")
        strip = ax.inset_axes([0.0, 1.0, 1.0, 0.0])
        strip.set_axes_locator(self._strip)
        strip.set_axis_off()
        strip.add_artist(self)
        self.set_transform(strip.transAxes)

    def _pieces(self, short: bool = False) -> list[str]:
        if short:
            return self._short.split()
        pieces = [self._header] if self._header else []
        for number, group in enumerate(self._groups):
            last = number == len(self._groups) - 1
            pieces += [name + ("" if index == len(group) - 1 and last else ";" if index == len(group) - 1 else ",")
                       for index, name in enumerate(group)]
        return pieces

    def _lines(self, width: float | None, renderer: Any = None, short: bool = False) -> str:
        """The note's pieces (or the ``short`` text's words) wrapped to ``width`` pixels (None: one line)."""
        lines, line = [], ""
        for piece in self._pieces(short):
            candidate = f"{line} {piece}" if line else piece
            if line and width is not None and self._extent(candidate, renderer)[0] > width:
                lines.append(line)
                candidate = piece
            line = candidate
        return "\n".join(lines + [line])

    def _extent(self, text: str, renderer: Any) -> tuple[float, float]:
        """Width and height in pixels of ``text`` in this note's font."""
        kept, self._text = self._text, text
        try:
            extent = super().get_window_extent(renderer)
            return extent.width, extent.height
        finally:
            self._text = kept

    def _settle(self, renderer: Any) -> float:
        """Wrap (or shorten) the text to the axes as laid out now; returns its height in pixels."""
        box = self._note_axes.get_window_extent(renderer)
        width = 0.98 * box.width
        text = self._lines(width, renderer)
        wide, high = self._extent(text, renderer)
        if self._short is not None and (wide > width or high > self._max_height * box.height):
            text = self._lines(width, renderer, short=True)
            high = self._extent(text, renderer)[1]
        self._text = text  # not set_text: a layout or draw must not mark the figure stale
        return high

    def _strip(self, _axes: Any, renderer: Any):
        """The strip's place (figure coordinates): the axes' width, the note's height, ``gap_pt`` above.
        (Called with the parent axes or, when drawn, with the strip itself: it always follows ``ax``.)"""
        from matplotlib.transforms import Bbox

        ax = self._note_axes
        high = self._settle(renderer)
        box = ax.get_window_extent(renderer)
        gap = self._gap_pt * ax.get_figure(root=True).dpi / 72
        corners = [[box.x0, box.y1 + gap], [box.x1, box.y1 + 2 * gap + high]]
        return Bbox(ax.get_figure(root=False).transSubfigure.inverted().transform(corners))


def panel_notes(ax) -> list[str]:
    """The texts of the notes (:class:`PanelNote`) of ``ax`` as last drawn."""
    return [text.get_text() for child in ax.child_axes for text in child.texts if isinstance(text, PanelNote)]


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
            shown = best_so_far_on_grid(rows, x, y, log=xscale == "log") if best_so_far else rows
            band_plot(ax, shown, x=x, y=y, methods=methods, log=log)
            ax.set_xscale(xscale)
            ax.set_title(thin_space_in_math(title(value, rows) if title else str(value)))
            ax.set_xlabel(xlabel)
        for ax in axes[:: ncols or min(len(panels), 3)]:
            ax.set_ylabel(ylabel)
        _figure_legend(fig, axes)
    return fig


def legend_below(ax, **kwargs: Any):
    """``ax``'s legend under its x label, outside the axes, where it cannot cover a curve (constrained
    layout makes room for it); ``kwargs`` go to ``ax.legend``."""
    from matplotlib.transforms import ScaledTranslation

    # Below the tick labels (8 pt), the x label (9 pt, taller with math) and their pads: 36 points.
    below = ax.transAxes + ScaledTranslation(0, -36 / 72, ax.get_figure(root=True).dpi_scale_trans)
    return ax.legend(loc="upper center", bbox_to_anchor=(0.5, 0.0), bbox_transform=below, frameon=False,
                     borderaxespad=0.0, **kwargs)


def sweep_grid(frame: pd.DataFrame, panels: Sequence[str], titles: Mapping[str, str],
               styles: Callable[[str, Sequence[str]], Mapping[str, Mapping[str, str]]], x: str = "iteration",
               y: str = "gap", ncols: int = 3, height: float = 3.3) -> Figure:
    """One panel per ablation (rows ``panel == name``) with a band per ``setting`` and a legend under each
    panel (:func:`legend_below`); ``styles(panel, settings)`` gives each setting its look (methods keep
    theirs from METHOD_STYLE)."""
    fig, axes = panel_grid(len(panels), ncols, height)
    with matplotlib.rc_context(RC):
        for ax, panel in zip(axes, panels):
            rows = frame[frame["panel"] == panel]
            settings = list(dict.fromkeys(rows["setting"]))
            band_plot(ax, rows, x=x, y=y, hue="setting", methods=settings, styles=styles(panel, settings),
                      note_overlap="legend")
            ax.set_title(titles.get(panel, panel))
            ax.set_xlabel(ITERATION_LABEL)
            labels = ax.get_legend_handles_labels()[1]
            legend_below(ax, ncols=1 if len(labels) <= 3 else 2, fontsize=7.5, title_fontsize=7.5,
                         title="≡: curves coincide" if any("≡" in text for text in labels) else None)
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
    styles = sweep_styles(dims, lambda d: f"$d$ = {int(d):,}")
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
            fill_band(axes[0], error["history"], error["low"], error["high"], value_bounds("error"), color=style["color"],
                      alpha=0.2, lw=0)
            axes[0].plot(spread["history"], spread["center"], color=style["color"], ls="--", lw=1)
            local = band(local_exponents(rows), x="history", y="slope", by=("source",), log=False)
            axes[1].plot(local["history"], local["center"], **_line_kwargs(style))
            fill_band(axes[1], local["history"], local["low"], local["high"], color=style["color"], alpha=0.2, lw=0)
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
    return re.sub(r"^T0=", "$T_0$ = ", setting).replace("N=", "$N$ = ").replace("(N = ", "($N$ = ")


def fig6_styles(panel: str, settings: Sequence[str]) -> dict[str, Mapping[str, str]]:
    """Looks of a Fig. 6 panel's settings: methods keep theirs (Vanilla, OptEx, last gradient; N = 1 is
    Vanilla), swept values get :func:`sweep_styles`."""
    swept = [s for s in settings if s not in _FIG6_METHODS]
    styles = dict(sweep_styles(swept, fig6_label))
    for setting in settings:
        if setting in _FIG6_METHODS:
            style = method_style(_FIG6_METHODS[setting])
            styles[setting] = _style(fig6_label(setting) if setting != "N=1" else "$N$ = 1 (Vanilla)", style["color"],
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
                ax.set_title(f"{method_label(method)}, {function.capitalize()}, $t$ = {t}")

        animation = FuncAnimation(fig, update, frames=list(frames), interval=700)
        with plt.rc_context({"animation.frame_format": "jpeg"}):
            html = animation.to_jshtml(fps=1.5, default_mode="once")
    plt.close(fig)
    return html


# ------------------------------------------------------------------------------------------ checks
def drawn_points(ax, renderer: Any = None, spacing: float = 2.0) -> np.ndarray:
    """The display coordinates of what ``ax`` draws as data: every line sampled along its segments every
    ``spacing`` pixels (its markers included), and the corners and edges of every filled bar, restricted to
    the axes' box (what lies outside it is clipped, not drawn)."""
    box = ax.get_window_extent(renderer)
    pieces = [np.empty((0, 2))]
    for line in ax.get_lines():
        if not line.get_visible() or not len(line.get_xydata()):
            continue
        points = line.get_transform().transform(line.get_xydata())
        points = points[np.isfinite(points).all(axis=1)]
        if line.get_linestyle() not in ("None", "none", "", " ") and len(points) > 1:
            steps = [np.linspace(a, b, max(2, int(np.hypot(*(b - a)) // spacing) + 2)) for a, b in zip(points, points[1:])]
            points = np.concatenate(steps)
        pieces.append(points)
    for patch in ax.patches:
        if isinstance(patch, matplotlib.patches.Rectangle) and patch.get_visible() and patch.get_fill():
            extent = patch.get_window_extent(renderer)
            xs = np.arange(extent.x0, extent.x1 + spacing, spacing).clip(max=extent.x1)
            ys = np.arange(extent.y0, extent.y1 + spacing, spacing).clip(max=extent.y1)
            pieces.append(np.array([(x, y) for x in xs for y in (extent.y0, extent.y1)]
                                   + [(x, y) for y in ys for x in (extent.x0, extent.x1)]))
    points = np.concatenate(pieces)
    inside = (points[:, 0] >= box.x0) & (points[:, 0] <= box.x1) & (points[:, 1] >= box.y0) & (points[:, 1] <= box.y1)
    return points[inside]


def _laid_out(fig):
    """Draw ``fig`` as it is saved and shown, and return the renderer. Twice: a panel note wraps to the
    widths of the layout before, so the first layout of a figure can still be short of room for it;
    :func:`save_figure` draws several times before it writes, and the notebook shows the figure after."""
    for _ in range(2):
        fig.canvas.draw()
    return fig.canvas.get_renderer()


def overlapping_text(fig, renderer: Any = None) -> list[str]:
    """Pairs of texts of ``fig`` (the panels' titles, notes and axis labels, and the legends) whose boxes
    overlap, as laid out and drawn (:func:`_laid_out`, unless ``renderer`` comes from that); empty: each
    can be read."""
    renderer = renderer or _laid_out(fig)
    boxes = []
    for index, ax in enumerate(ax for ax in fig.axes if ax.get_visible()):
        named = [("title", ax.title), ("x label", ax.xaxis.label), ("y label", ax.yaxis.label), ("legend", ax.get_legend())]
        named += [("note", note) for child in ax.child_axes for note in child.texts if isinstance(note, PanelNote)]
        boxes += [(f"the {kind} of panel {index + 1}", artist.get_window_extent(renderer)) for kind, artist in named
                  if artist is not None and artist.get_visible() and (kind == "legend" or artist.get_text())]
    boxes += [("the figure legend", legend.get_window_extent(renderer)) for legend in fig.legends]
    return [f"{a} overlaps {b}" for i, (a, one) in enumerate(boxes) for b, other in boxes[i + 1:]
            if min(one.x1, other.x1) - max(one.x0, other.x0) > 0.5 and min(one.y1, other.y1) - max(one.y0, other.y0) > 0.5]


def covered_data(fig, renderer: Any = None) -> list[str]:
    """The legends and panel notes of ``fig`` that lie over a drawn data point (:func:`drawn_points` of any
    of its axes), as laid out and drawn (:func:`_laid_out`, unless ``renderer`` comes from that); empty:
    none hides a curve or a bar."""
    renderer = renderer or _laid_out(fig)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    boxes = [(f"the legend of panel {index + 1}", ax.get_legend()) for index, ax in enumerate(axes)
             if ax.get_legend() is not None] + [("the figure legend", legend) for legend in fig.legends]
    boxes += [(f"the note of panel {index + 1}", note) for index, ax in enumerate(axes) for child in ax.child_axes
              for note in child.texts if isinstance(note, PanelNote)]
    points = np.concatenate([drawn_points(ax, renderer) for ax in axes]) if axes else np.empty((0, 2))
    problems = []
    for name, artist in boxes:
        extent = artist.get_window_extent(renderer)
        hits = int(((points[:, 0] > extent.x0) & (points[:, 0] < extent.x1)
                    & (points[:, 1] > extent.y0) & (points[:, 1] < extent.y1)).sum())
        if hits:
            problems.append(f"{name} covers {hits} drawn data points")
    return problems


def legend_labels(fig) -> list[str]:
    """The texts of every legend of ``fig`` (figure legends and axes legends)."""
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    return [text.get_text() for legend in legends for text in legend.get_texts()]


def figure_problems(fig, data: pd.DataFrame) -> list[str]:
    """Why ``fig`` is not fit for the book (empty: it is): wider than the text, taller than a screen,
    text below MIN_FONT_PT, a legend naming a method that ``data`` (its ``method`` column) lacks, a legend
    or panel note over the data (:func:`covered_data`), or titles, notes, labels and legends over each
    other (:func:`overlapping_text`)."""
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
    renderer = _laid_out(fig)
    return problems + covered_data(fig, renderer) + overlapping_text(fig, renderer)


def save_figure(fig, figure_id: str, data: pd.DataFrame, directory: str | Path) -> dict[str, Path]:
    """Write ``<id>.svg``, ``<id>.png`` and the plotted data ``<id>.csv`` into ``directory``, after
    checking the figure (:func:`figure_problems`)."""
    check_figure_id(figure_id)
    problems = figure_problems(fig, data)
    if problems:
        raise ValueError(f"figure {figure_id}: {'; '.join(problems)}")
    _fit_text_width(fig)
    renderer = _laid_out(fig)  # again at the width the files get
    covered = covered_data(fig, renderer) + overlapping_text(fig, renderer)
    if covered:
        raise ValueError(f"figure {figure_id}: {'; '.join(covered)}")
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


def _fit_text_width(fig, tries: int = 4) -> None:
    """Narrow ``fig`` until its saved image (150 dpi, tight bounding box) fits the text width: tick labels
    and titles that overhang the outer axes widen it beyond the figure size."""
    import io

    from PIL import Image

    for _ in range(tries):
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=150, bbox_inches="tight")
        width = Image.open(buffer).size[0] / 150
        if width <= TEXT_WIDTH_IN + 0.2:
            return
        fig.set_size_inches(fig.get_figwidth() - (width - TEXT_WIDTH_IN) - 0.05, fig.get_figheight())


def _stable_metadata(fmt: str) -> dict[str, str | None]:
    return {"Date": None} if fmt == "svg" else {}


__all__ = ["FIG6_TITLES", "fig6_label", "fig6_styles", "GAP_LABEL", "ITERATION_LABEL", "METHOD_STYLE", "MIN_FONT_PT", "TEXT_WIDTH_IN",
           "RETURN_BOUNDS", "UNBOUNDED", "VALUE_BOUNDS", "band", "band_plot", "clip_to_bounds", "fill_band",
           "return_bounds", "value_bounds",
           "best_so_far_on_grid", "check_figure_id", "coinciding", "cost_figure", "covered_data", "drawn_points", "curve_grid", "draw_iteration",
           "error_decay_figure", "figure_problems", "gradient_fields", "iteration_animation", "iteration_grid",
           "legend_below", "legend_labels", "local_exponents", "overlapping_text", "panel_notes", "method_label", "method_style", "panel_grid", "relative_error_figure",
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
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars


# ================================================================================ training curves
# Figures and tables of the neural-network chapters (tidy tables of optex.experiments.training:
# ``panel``, ``method``, ``seed``, ``iteration``, ``wall_time``, the metrics on the evaluation grid
# and ``proxy_cosine_<s>`` per iteration). Methods the synthetic chapters do not have get a style here.
TRAINING_STYLE = {k: METHOD_STYLE[k] for k in ("vanilla_long", "large_batch_scaled", "last_gradient")}
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
    most = float(speedups["reference_length"].max()) if "reference_length" in speedups.columns else None
    summary = band_plot(ax, speedups, x="iteration", y="vanilla_equivalent", log=False, level=level, methods=methods,
                        bounds=(0.0, most))  # no run is equivalent to more Vanilla iterations than were run
    t = np.array([0.0, float(speedups["iteration"].max())])
    ax.plot(t, parallelism * t, color="black", ls="--", lw=1, label=f"slope $N$ = {parallelism}")
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
    fig.legend(entries.values(), entries.keys(), loc="outside lower center", ncols=min(len(entries), 3), frameon=False)


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
    note = 0.3  # room per row for a panel note under the titles
    height = min(2.6, (MAX_HEIGHT_IN - 0.8) / len(panels) - note, 0.85 * TEXT_WIDTH_IN / len(columns))
    fig, axes = plt.subplots(len(panels), len(columns), figsize=(TEXT_WIDTH_IN, (height + note) * len(panels) + 0.8),
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
            if len(columns) > 3:  # narrow panels: labels that fit their width, so neighbours never overlap
                ax.set_xlabel("iteration $t$" if x == "iteration" else "seconds in step()", fontsize=8)
                ax.set_ylabel(AXIS_LABELS.get(metric, metric), fontsize=8)
                ax.tick_params(labelsize=7)
                ax.set_title(f"{panel}", fontsize=8)
    _legend(fig, axes.flat)
    return fig, pd.concat(summaries, ignore_index=True)


def effective_speedup_figure(speedups: pd.DataFrame, panels: Sequence[str], parallelism: int,
                             methods: Sequence[str]):
    """:func:`effective_speedup_plot` for each panel, side by side (two per row)."""
    import matplotlib.pyplot as plt

    cols = min(2, len(panels))
    fig, axes = plt.subplots((len(panels) + cols - 1) // cols, cols, figsize=(min(4.2 * cols, TEXT_WIDTH_IN), 3.2 * ((len(panels) + 1) // 2)
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


TITLE_CHARS_PER_INCH = 12  # 9-point characters that fit an inch of panel, with the space between panels


def fit_title(title: str, panel_width_in: float) -> str:
    """``title`` broken into lines that fit a panel ``panel_width_in`` inches wide at 9 points, so that the
    titles of neighbouring panels never run into each other: before a parenthesis (``"Acrobot-v1\n(d =
    4,803)"``) where that suffices, otherwise at spaces."""
    import textwrap

    width = max(8, int(TITLE_CHARS_PER_INCH * panel_width_in))
    if len(title) <= width:
        return title
    head, paren, tail = title.partition(" (")
    if paren and len(head) <= width and len(tail) + 1 <= width:
        return f"{head}\n({tail}"
    return textwrap.fill(title, width=width, break_long_words=False)


def proxy_cosine_figure(cosines: pd.DataFrame, panels: Sequence[str], methods: Sequence[str] = SURROGATES):
    """:func:`proxy_cosine_plot` for each panel in one row, sharing the y axis."""
    import matplotlib.pyplot as plt

    width = min(2.8 * len(panels), TEXT_WIDTH_IN)
    fig, axes = plt.subplots(1, len(panels), figsize=(width, 3.2), sharey=True, squeeze=False,
                             layout="constrained")
    for ax, panel in zip(axes.flat, panels):
        proxy_cosine_plot(ax, cosines[cosines["panel"] == panel], methods)
        ax.set_title(fit_title(panel, width / len(panels)), fontsize=9)
    for ax in axes.flat[1:]:
        ax.set_ylabel("")
    _legend(fig, axes.flat)
    return fig


def _interval_text(mean: float, low: float, high: float) -> str:
    """A speedup or a ratio of speedups with its interval, to two decimals, cut (and marked) at 0."""
    if not np.isfinite(mean):
        return "n/a"
    return tables.format_interval(mean, low, high, "×", decimals=2, bounds=value_bounds("speedup"))


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
        mean, low, high = mean_ci(ratio.to_numpy(), bounds=value_bounds("ratio"))
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

    Columns: the panel, ``method``, per metric ``<metric>_iterations``, ``_speedup``, ``_speedup_low``,
    ``_speedup_high``, ``_censored``, ``_seeds``, ``_plateau``; per t (``half``, ``end``) ``t_<t>``,
    ``effective_<t>`` with ``_low``, ``_high``, ``_censored``, ``_seeds``; and ``cosine_<s>``. The book
    shows it through :func:`optex.tables.training_paper_table` and
    :func:`optex.tables.training_effective_table`.
    """
    from .analysis import REFERENCE, effective_speedup_table, speedup_table

    keys = [c for c in ("panel", "dataset") if c in frame.columns][:1]
    order = list(methods) if methods is not None else [m for m in dict.fromkeys(frame["method"])
                                                        if m not in ("vanilla", REFERENCE)]
    table = None
    for metric in (loss, error):
        paper = speedup_table(frame, "vanilla", metric)
        paper = paper[paper["method"].isin(order)][[*keys, "method", "iterations", "speedup", "speedup_low",
                                                    "speedup_high", "censored", "seeds", "plateau"]]
        paper = paper.rename(columns={c: f"{metric}_{c}" for c in paper.columns if c not in (*keys, "method")})
        table = paper if table is None else table.merge(paper, on=[*keys, "method"], how="outer")
    effective = effective_speedup_table(frame, metric=loss, interpolate=True, by=keys)
    effective = effective[effective["method"].isin(order)]
    for position, (t, part) in enumerate(sorted(effective.groupby("iteration"), key=lambda item: item[0])):
        name = "half" if position == 0 else "end"
        part = part[[*keys, "method", "iteration", "effective_speedup", "effective_low", "effective_high", "censored",
                     "seeds"]]
        part = part.rename(columns={"iteration": f"t_{name}", "effective_speedup": f"effective_{name}",
                                    "effective_low": f"effective_{name}_low", "effective_high": f"effective_{name}_high",
                                    "censored": f"effective_{name}_censored", "seeds": f"effective_{name}_seeds"})
        table = table.merge(part, on=[*keys, "method"], how="left")
    if any(c.startswith("proxy_cosine_") for c in frame.columns):
        cosines = proxy_cosines(frame, order)
        wide = cosines.pivot_table(index=[*keys, "method"], columns="step", values="median")
        wide.columns = [f"cosine_{s}" for s in wide.columns]
        table = table.merge(wide.reset_index(), on=[*keys, "method"], how="left")
    rank = {m: i for i, m in enumerate(order)}
    panels = {p: i for i, p in enumerate(dict.fromkeys(frame[keys[0]]))} if keys else {}
    table = table.sort_values([*keys, "method"], key=lambda c: c.map(rank if c.name == "method" else panels),
                              ignore_index=True)
    return table


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
            entry[f"{name}_seeds"] = get(method, "effective_end_seeds")
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
    def effective(row: Any, name: str) -> str:  # as the tables write it (a lower bound marked "≥")
        return tables.effective_text(*(getattr(row, f"{name}{part}", np.nan)
                                       for part in ("", "_low", "_high", "_censored", "_seeds")))

    lines = []
    for row in summary.itertuples():
        lines.append(
            f"- **{row.panel}**: OptEx {effective(row, 'optex')} effective speedup "
            f"at $T$ (paper metric {_interval_text(row.paper_optex, np.nan, np.nan)}), "
            f"{tables.fixed(100 * row.optex_of_target, 0)}% of Target's {tables.fixed(row.target, 2)}× (ceiling "
            f"{parallelism}); the better LargeBatch, "
            f"{method_label(row.rival)}, {effective(row, 'large_batch')}, "
            f"so OptEx / LargeBatch = {_interval_text(row.ratio, row.ratio_low, row.ratio_high)}; LineSearch "
            f"{tables.fixed(row.linesearch, 2)}×, last gradient {tables.fixed(row.last_gradient, 2)}×. Median cosine "
            f"of the estimate with the true gradient: GP {tables.fixed(row.cosine_gp, 2)}, last gradient "
            f"{tables.fixed(row.cosine_last, 2)}.")
    ahead = summary[summary["ratio_low"] > 1]
    behind = summary[summary["ratio_high"] < 1]
    level = summary[~summary.index.isin(ahead.index) & ~summary.index.isin(behind.index)]
    text = ["\n".join(lines), ""]
    verdict = (f"OptEx beats the better LargeBatch, with the 95% interval of the ratio above 1, in {len(ahead)} of "
               f"{len(summary)} panels")
    verdict += f" ({'; '.join(ahead['panel'])})" if len(ahead) else ""
    if len(behind):
        verdict += f"; it is behind in {'; '.join(behind['panel'])}"
    if len(level):
        verdict += f"; the two cannot be told apart in {'; '.join(level['panel'])}"
    text.append(verdict + ".")
    losing = summary[summary["ratio"] <= 1]
    if why and len(losing):
        text += ["", "Where OptEx does not beat LargeBatch (" + "; ".join(losing["panel"]) + "), the median cosine of its "
                 "estimate with the true gradient at the proxy points is "
                 + ", ".join(f"{tables.fixed(g, 2)} (last gradient: {tables.fixed(c, 2)})"
                             for g, c in zip(losing["cosine_gp"], losing["cosine_last"]))
                 + ". The true gradient there is one minibatch's, so these cosines are low even for a good estimate of "
                 "the expected gradient; what they compare is how much the Gaussian process adds to the last "
                 "gradient. LargeBatch spends the same $N$ evaluations on one averaged, less noisy gradient."]
    if tables.CUT in text[0]:
        text += ["", tables.CUT_NOTE]
    return "\n".join(text)


def time_split(frame: pd.DataFrame, methods: Sequence[str], skip: int = 5) -> pd.DataFrame:
    """Milliseconds per sequential iteration of each method: the median over iterations after the first
    ``skip`` (one-off costs) and seeds of the proxy, evaluation and update parts of ``OptEx.step`` and of
    their sum, per panel. Columns: the panel columns present, ``method``, ``proxy``, ``eval``, ``update``,
    ``total``."""
    keys = [c for c in ("panel", "dataset") if c in frame.columns][:1]
    rows = frame[frame["method"].isin(methods) & (frame["iteration"] > skip)].copy()
    rows["total"] = rows[["time_proxy", "time_eval", "time_update"]].sum(axis=1)
    parts = {"time_proxy": "proxy", "time_eval": "eval", "time_update": "update", "total": "total"}
    table = rows.groupby([*keys, "method"], sort=False)[list(parts)].median().mul(1e3).rename(columns=parts)
    return table.reset_index()


__all__ += ["AXIS_LABELS", "LARGE_BATCH", "SURROGATES", "TRAINING_STYLE", "best_large_batch", "curve_plot",
            "effective_speedup_figure", "effective_speedup_plot", "evaluation_rows", "proxy_cosine_figure",
            "proxy_cosine_plot", "proxy_cosines", "reading_text", "time_grid", "time_plot", "time_split", "training_figure",
            "training_speedup_table", "training_summary", "versus"]


# ================================================================================ reinforcement learning
# Figures and tables of the RL chapter (tidy tables of optex.experiments.rl with a ``panel`` column: one
# row per task x method x seed x episode with ``training_episode``, ``return``, ``cum_avg_return``, the
# estimator's ``proxy_cosine_<s>`` and its stale / current split).
RL_COLUMNS = ("panel", "task", "method", "seed", "episode", "training_episode", "return", "cum_avg_return",
              "env_steps", "updates", "evaluations")


def rl_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The columns of an RL table a figure and the report read (the data saved next to the figure)."""
    return frame[[c for c in RL_COLUMNS if c in frame.columns]]


def rl_curves(frame: pd.DataFrame, titles: Mapping[str, str], methods: Sequence[str], cols: int = 2):
    """The cumulative average return against training episodes, one panel per task (``titles``: panel ->
    panel title, e.g. with d), mean over seeds and 95% t-band per method. Returns the figure and the
    plotted summary (``panel`` and :func:`band`'s columns). Bands stay within the task's range of returns
    (:func:`return_bounds`)."""
    import matplotlib.pyplot as plt

    panels = list(titles)
    cols = min(cols, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(TEXT_WIDTH_IN, TEXT_WIDTH_IN / cols * 0.75 * rows + 0.7),
                             squeeze=False, layout="constrained")
    trained = frame[frame["training_episode"] > 0]
    summaries = []
    for ax, panel in zip(axes.flat, panels):
        part = trained[trained["panel"] == panel]
        tasks = set(part["task"]) if "task" in part else set()
        bounds = return_bounds(tasks.pop()) if len(tasks) == 1 else UNBOUNDED  # a return's range is the task's
        summary = band_plot(ax, part, x="training_episode", y="cum_avg_return", log=False, methods=methods,
                            bounds=bounds)
        summaries.append(summary.assign(panel=panel))
        ax.set_title(fit_title(titles[panel], TEXT_WIDTH_IN / cols), fontsize=9)
        ax.set_xlabel("sequential (training) episode")
        ax.set_ylabel("cumulative average return")
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    _legend(fig, axes.flat)
    return fig, pd.concat(summaries, ignore_index=True)


def _mean_interval(mean: float, low: float, high: float, digits: int | None = 0, bounds: Bounds = UNBOUNDED) -> str:
    """A mean with its interval to ``digits`` decimals (None: the precision the interval carries), cut
    (and marked) at ``bounds``."""
    if not np.isfinite(mean):
        return "n/a"
    return tables.format_interval(mean, low, high, decimals=digits, bounds=bounds)


def rl_threshold_display(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`optex.experiments.rl.threshold_table` as the chapter shows it: per task (with its threshold)
    and method, the training episodes to reach the threshold (mean over the seeds that do, 95% interval;
    "> E" where none does within its E episodes), the censored seeds, the best trailing mean return and
    the final cumulative average return."""
    out = pd.DataFrame({"Task (threshold)": [f"{p} ({tables.compact(t)})" for p, t in zip(table["panel"],
                                                                                        table["threshold"])],
                        "Method": table["method"].map(method_label)})
    out["Training episodes to the threshold (95% interval)"] = [
        f"> {row.training_episodes}" if row.censored == row.seeds else
        _mean_interval(row.episodes, row.episodes_low, row.episodes_high, 0, (0.0, row.training_episodes))
        for row in table.itertuples()]
    out["Censored seeds"] = tables.count_of("censored", "seeds")(table)
    ranges = [return_bounds(task) for task in table["task"]]
    out["Best trailing mean return (95% interval)"] = [_mean_interval(m, lo, hi, None, r) for m, lo, hi, r in
                                         zip(table["best"], table["best_low"], table["best_high"], ranges)]
    out["Final cumulative average return (95% interval)"] = [
        _mean_interval(m, lo, hi, None, r) + (" (every return the same)" if floor else "")
        for m, lo, hi, r, floor in zip(table["final_cum_avg"], table["final_low"], table["final_high"], ranges,
                                       table["floor"])]
    return out


def _weighted_by_seed(group: pd.DataFrame, value: str, weight: str) -> np.ndarray:
    """Per seed, the mean of ``value`` over the episodes' updates (episode means weighted by counts)."""
    rows = group[group[weight] > 0]
    sums = (rows[value] * rows[weight]).groupby(rows["seed"]).sum()
    return (sums / rows.groupby("seed")[weight].sum()).to_numpy(float)


def rl_cosine_table(frame: pd.DataFrame, methods: Sequence[str] = SURROGATES) -> pd.DataFrame:
    """Per task and surrogate method: the estimator's cosine with the true gradient over every proxy
    update, mean over seeds with its 95% interval, with the history *stale* (it still holds gradients
    computed against the previous target network) and *current*, and their difference. Columns:
    ``panel``, ``method``, ``stale``, ``stale_low``, ``stale_high``, ``current``, ``current_low``,
    ``current_high``, ``stale_updates``, ``current_updates``."""
    rows = []
    for (panel, method), group in frame[frame["method"].isin(methods)].groupby(["panel", "method"], sort=False):
        entry = dict(panel=panel, method=method)
        for part in ("stale", "current"):
            mean, low, high = mean_ci(_weighted_by_seed(group, f"proxy_cosine_{part}", f"{part}_updates"),
                                      bounds=value_bounds("cosine"))
            entry.update({part: mean, f"{part}_low": low, f"{part}_high": high,
                          f"{part}_updates": int(group[f"{part}_updates"].sum())})
        rows.append(entry)
    return pd.DataFrame(rows)


def rl_cosine_display(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`rl_cosine_table` as the chapter shows it."""
    return pd.DataFrame({
        "Task": table["panel"], "Estimator": table["method"].map(method_label),
        "Cosine, stale history (95% interval)": [_mean_interval(m, lo, hi, 2, value_bounds("cosine")) for m, lo, hi in
                                  zip(table["stale"], table["stale_low"], table["stale_high"])],
        "Cosine, current history (95% interval)": [_mean_interval(m, lo, hi, 2, value_bounds("cosine")) for m, lo, hi in
                                    zip(table["current"], table["current_low"], table["current_high"])],
        "Proxy updates (stale / current)": [f"{s:,} / {c:,}" for s, c in
                                            zip(table["stale_updates"], table["current_updates"])]})


def rl_cosine_figure(frame: pd.DataFrame, titles: Mapping[str, str], methods: Sequence[str] = SURROGATES,
                     smooth: int = 5):
    """The estimator's cosine with the true gradient (mean over proxy steps and the episode's proxy
    updates, then a centred ``smooth``-episode rolling mean) against training episodes, one panel per
    task, mean and 95% band over seeds per surrogate method."""
    import matplotlib.pyplot as plt

    columns = [c for c in frame.columns if re.fullmatch(r"proxy_cosine_\d+", c)]
    if not columns:
        raise ValueError("the results have no proxy_cosine_<s> columns (N = 1?)")
    panels = list(titles)
    fig, axes = plt.subplots(1, len(panels), figsize=(TEXT_WIDTH_IN, 3.0), sharey=True, squeeze=False,
                             layout="constrained")
    data = frame[frame["method"].isin(methods) & (frame["training_episode"] > 0)].copy()
    data["cosine"] = data[columns].mean(axis=1)
    data["cosine"] = data.groupby(["panel", "method", "seed"])["cosine"].transform(
        lambda c: c.rolling(smooth, center=True, min_periods=1).mean())
    summaries = []
    for ax, panel in zip(axes.flat, panels):
        summary = band_plot(ax, data[data["panel"] == panel].dropna(subset=["cosine"]), x="training_episode",
                            y="cosine", log=False, methods=methods)
        summaries.append(summary.assign(panel=panel))
        ax.set_title(fit_title(titles[panel], TEXT_WIDTH_IN / len(panels)), fontsize=9)
        ax.set_xlabel("training episode")
    axes.flat[0].set_ylabel("cosine with the true gradient")
    _legend(fig, axes.flat)
    return fig, pd.concat(summaries, ignore_index=True)


def rl_anchor_table(frame: pd.DataFrame, anchors: Mapping[str, float | None], window: int = 10,
                    methods: Sequence[str] = ("vanilla", "optex")) -> pd.DataFrame:
    """Per task: CleanRL's DQN return after 500k steps (``anchors``: panel -> return, None: not
    reported), the environment steps of our runs (mean over methods and seeds), and the mean return of
    the last ``window`` episodes of each of ``methods`` (mean over seeds, 95% interval)."""
    rows = []
    for panel, anchor in anchors.items():
        part = frame[frame["panel"] == panel]
        entry = {"Task": panel, "CleanRL DQN, 500k steps (return)": "not reported" if anchor is None
                 else tables.compact(anchor),
                 "Our environment steps per run": f"{part.groupby(['method', 'seed'])['env_steps'].max().mean():,.0f}"}
        for method in methods:
            last = part[part["method"] == method].groupby("seed").tail(window).groupby("seed")["return"].mean()
            returns = return_bounds(part["task"].iloc[0]) if "task" in part.columns and len(part) else UNBOUNDED
            entry[f"{method_label(method)}: mean return, last {window} episodes"] = _mean_interval(
                *mean_ci(last.to_numpy(), bounds=returns), None, returns)
        rows.append(entry)
    return pd.DataFrame(rows)


def rl_settings_table(configs: Sequence, dims: Mapping[str, int], frame: pd.DataFrame) -> pd.DataFrame:
    """Per task of ``configs`` (:class:`optex.experiments.rl.Config`): d (``dims``: panel -> d), hidden width,
    warm-up and training episodes, environment steps per update, the threshold, and the mean environment
    steps and updates of a run (over methods and seeds of ``frame``)."""
    from .experiments import rl

    rows = []
    for config in configs:
        panel = rl.panel_name(config)
        ends = frame[frame["panel"] == panel].groupby(["method", "seed"])[["env_steps", "updates"]].max()
        rows.append({"Task": panel, "$d$": f"{dims[panel]:,}", "Hidden width": config.width,
                     "Episodes: warm-up + training": f"{config.warmup_episodes} + {config.episodes}",
                     "$k$ (environment steps per update)": config.train_every,
                     "Threshold (return)": tables.compact(rl.TASKS[config.task].threshold),
                     "Environment steps / updates per run": f"{ends['env_steps'].mean():,.0f} / "
                                                            f"{ends['updates'].mean():,.0f}"})
    return pd.DataFrame(rows)


def _final_returns(frame: pd.DataFrame) -> pd.Series:
    """The cumulative average return at the last episode, per (panel, method, seed)."""
    return frame.sort_values("episode").groupby(["panel", "method", "seed"])["cum_avg_return"].last()


def rl_reading_text(table: pd.DataFrame, frame: pd.DataFrame) -> str:
    """The chapter's reading of the RL results: per task, each method's final cumulative average return,
    OptEx minus Vanilla seed by seed (mean, 95% interval) and the episodes to the threshold; a task where
    every return of every run is the same is named as uninformative, and one where most episodes return
    the lowest value says how many did better."""
    final = _final_returns(frame)
    lines = []
    for panel, part in table.groupby("panel", sort=False):
        if part["floor"].all():
            value = frame.loc[frame["panel"] == panel, "return"].iloc[-1]
            lines.append(f"- **{panel}**: every episode of every run of every method returned {tables.compact(value)}: no run "
                         "reached the goal within the budget, so this panel cannot tell the methods apart.")
            continue
        by = part.set_index("method")
        finals = ", ".join(f"{method_label(m)} {tables.fixed(r.final_cum_avg, 1)}" for m, r in by.iterrows())
        gain = (final.xs((panel, "optex")) - final.xs((panel, "vanilla"))).dropna()
        mean, low, high = mean_ci(gain.to_numpy())
        reach = []
        for method in ("vanilla", "optex", "target"):
            if method in by.index:
                row = by.loc[method]
                reach.append(f"{method_label(method)} " + ("never" if row.censored == row.seeds else
                             tables.fixed(row.episodes, 0) + (f" ({row.censored} of {row.seeds} censored)" if row.censored else "")))
        line = (f"- **{panel}**: final cumulative average return {finals}. OptEx minus Vanilla, seed by seed: "
                f"{_mean_interval(mean, low, high, 1)}. Training episodes to {tables.compact(by['threshold'].iloc[0])}: "
                + ", ".join(reach) + ".")
        trained = frame[(frame["panel"] == panel) & (frame["training_episode"] > 0)]
        lowest = trained["return"].min()
        if (trained["return"] == lowest).mean() > 0.5:  # mostly at the floor: say how rarely a run left it
            above = trained[trained["return"] > lowest]
            runs = above.groupby(["method", "seed"]).ngroups
            line += (f" Most training episodes return the floor value {tables.compact(lowest)}; {len(above)} of {len(trained)} "
                     f"did better, in {runs} of {trained.groupby(['method', 'seed']).ngroups} runs.")
        lines.append(line)
    return "\n".join(lines)


def rl_cosine_reading(cosines: pd.DataFrame) -> str:
    """One sentence per task on :func:`rl_cosine_table`: the kernel estimate's cosine with a stale and with
    a current history, and the last gradient's."""
    lines = []
    for panel, part in cosines.groupby("panel", sort=False):
        by = part.set_index("method")
        pieces = [f"{method_label(m)} {tables.fixed(r.stale, 2)} stale vs {tables.fixed(r.current, 2)} current"
                  for m, r in by.iterrows()]
        lines.append(f"- **{panel}**: " + "; ".join(pieces) + ".")
    drop = cosines.assign(drop=cosines["current"] - cosines["stale"]).groupby("method", sort=False)["drop"]
    summary = [f"{method_label(m)} {tables.format_range(d.min(), d.max(), 2, equal='on every task')}" for m, d in drop]
    lines += ["", "What the cosine loses from a current to a stale history (current minus stale; below zero it gains), "
              "over the tasks: " + "; ".join(summary) + "."]
    return "\n".join(lines)


__all__ += ["RL_COLUMNS", "rl_anchor_table", "rl_cosine_display", "rl_cosine_figure", "rl_cosine_reading",
            "rl_cosine_table", "rl_curves", "rl_reading_text", "rl_rows", "rl_settings_table", "rl_threshold_display"]


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
    fig, axes = plt.subplots(1, len(panels), figsize=(min(3.6 * len(panels), TEXT_WIDTH_IN), 3.3), sharey=True, squeeze=False,
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
    wide = cosines.pivot_table(index=index, columns="step", values="median", sort=False).reset_index()
    out = pd.DataFrame({"Panel": wide["panel"], "$d$": [f"{int(d):,}" for d in wide["d"]]})
    if "size" in wide:
        out["Model"] = wide["size"]
    out["Estimator"] = wide["method"].map(method_label)
    for step in sorted(c for c in wide.columns if isinstance(c, (int, np.integer))):
        out[f"Median cosine, $s = {step}$"] = [tables.fixed(v, 2) for v in wide[step]]
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
    """:func:`text_samples` as MyST markdown: a bold label line per panel and method, then its text in a
    fenced ``text`` block of its own (fenced with more backticks than any run inside the text), for a
    block-level paste (``display(Markdown(...))`` or the ``{glue:md}`` directive, not the inline role)."""
    blocks = []
    for row in samples.itertuples():
        panel = f"{row.panel}, " if hasattr(row, "panel") else ""
        fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", row.text)), default=0))
        blocks.append(f"**{panel}{method_label(row.method)}** (after $T =$ {row.iteration} iterations):\n\n"
                      f"{fence}text\n{row.text}\n{fence}")
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
        parts = [f"{method_label(m)} {tables.fixed(median(m, small), 2)} at $d$ = {small:,} and "
                 f"{tables.fixed(median(m, large), 2)} at $d$ = {large:,}" for m in methods]
        steps = (f"; at proxy step 1 the {method_label(gp)} estimate's cosine is {tables.fixed(median(gp, small, 1), 2)} "
                 f"and {tables.fixed(median(gp, large, 1), 2)}, at step {last_step} "
                 f"{tables.fixed(median(gp, small, last_step), 2)} and {tables.fixed(median(gp, large, last_step), 2)}")
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
        lines.append(f"- **{row.panel}**: effective speedup at $T$ OptEx {tables.fixed(row.optex, 2)}×, last gradient "
                     f"{tables.fixed(row.last_gradient, 2)}×; median cosine {tables.fixed(gp[0], 2)} and "
                     f"{tables.fixed(last[0], 2)}, median relative error {tables.fixed(gp[1], 2)} and "
                     f"{tables.fixed(last[1], 2)}.")
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
    listing = "; ".join(f"{row.panel}: {tables.fixed(100 * row.optex_of_target, 0)}% of Target's effective speedup "
                        f"with a median cosine of {tables.fixed(row.cosine_gp, 2)}" for row in ranked.itertuples())
    shares, cosines = ranked["optex_of_target"].to_numpy(float), ranked["cosine_gp"].to_numpy(float)
    consistent = bool(np.all(np.diff(cosines) <= 0))  # the higher share goes with the higher cosine
    if consistent:
        return f"{listing}. The closer OptEx comes to Target, the better its estimate points."
    return (f"{listing}. The cosine does not explain the difference: OptEx comes closest to Target in "
            f"{ranked['panel'].iloc[0]}, where its estimate points worst "
            f"({tables.fixed(shares[0] / max(shares[-1], 1e-12), 1)} times the share at "
            f"{tables.fixed(cosines[0], 2)} against {tables.fixed(cosines[-1], 2)}).")


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
