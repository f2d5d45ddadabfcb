"""Tables of the book: human column names with units, numbers to the precision they carry, intervals
as ``4.86 [4.81, 4.90]``, rows in numeric order, published as numbered MyST tables.

A table is a list of :class:`Column` (a title and a formatter that turns the whole data column into
text, so a column can share one number of decimals) over a tidy frame::

    table = tables.Table(speedups, [
        tables.Column("Function", tables.text("function", str.capitalize)),
        tables.Column("Method", tables.text("method", method_label)),
        tables.Column("Speedup over Vanilla (95% interval)", tables.interval("speedup", unit="×")),
    ], order={"method": METHODS})
    tables.publish(table, "synthetic-demo-speedups", "Caption, with $math$ and {numref}`refs`.")

:func:`publish` displays the table as a MyST ``{table}`` directive with a ``:name:``, so Sphinx numbers
it as a table ("Table 3") and ``{numref}`` can point at it.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from .analysis import UNBOUNDED, Bounds, value_bounds

Formatter = Callable[[pd.DataFrame], list[str]]
MISSING = "—"
CUT = "†"  # an interval end cut at the range its quantity can take
CUT_NOTE = (f"{CUT} The 95% interval reached beyond the values the quantity can take (with few seeds a "
            "Student-t interval can) and is cut at that bound.")
_DIGITS = re.compile(r"(\d+(?:\.\d+)?)")
# the bracket of an interval: published with no-break spaces, so that a narrow column breaks a cell between
# its mean and its interval ("2.005×" over "[1.991, 2.019]"), never inside the interval
_INTERVAL = re.compile(r"\[[^\]|]*\]")
# a text cell that reads as a number: "4.2× [3.9, 4.5]", "≥ 7×", "> 100", "−0.03", "—"
_NUMERIC_CELL = re.compile(r"^(?:[≥≤<>]\s?)?[−-]?(?:\d|—$|n/a)")
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


# ------------------------------------------------------------------------------------------ numbers
def _finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def significant(value: Any, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits: ``0.0123``, ``14.4``, ``1 230``, ``3.4 × 10⁻⁵``
    (powers of ten below 10⁻³ and from 10⁶ on); integers are shown whole; missing values as a dash."""
    if not _finite(value):
        return MISSING
    value = float(value)
    if value == 0:
        return "0"
    exponent = math.floor(math.log10(abs(value)))
    if exponent < -3 or exponent >= 6:
        mantissa = f"{value / 10 ** exponent:.{max(digits - 1, 0)}f}"
        if float(mantissa) >= 10:  # rounding carried into the next power
            exponent += 1
            mantissa = f"{value / 10 ** exponent:.{max(digits - 1, 0)}f}"
        return f"{mantissa} × 10{str(exponent).translate(_SUPERSCRIPT)}"
    if float(value).is_integer() and exponent >= digits - 1:
        return _grouped(f"{value:.0f}")
    return _grouped(f"{value:.{max(digits - 1 - exponent, 0)}f}")


def fixed(value: Any, decimals: int) -> str:
    """``value`` with ``decimals`` decimals (thousands grouped with a thin space); a dash if missing."""
    return _grouped(f"{float(value):.{decimals}f}") if _finite(value) else MISSING


def signed(value: Any, decimals: int) -> str:
    """:func:`fixed` with a plus sign on a positive value (a difference: ``+12.3``, ``−4.0``, ``0.0``)."""
    text = fixed(value, decimals)
    return f"+{text}" if _finite(value) and float(f"{float(value):.{decimals}f}") > 0 else text


def compact(value: Any) -> str:
    """``value`` as short as it reads exactly (Python's ``:g``: ``-200`` as ``−200``, ``0.001``), with the
    minus sign and grouping of :func:`fixed`; beyond ``:g``'s fixed-point range as a power of ten
    (``1 × 10⁻⁵``, as :func:`significant` writes it)."""
    if not _finite(value):
        return MISSING
    mantissa, _, exponent = f"{float(value):g}".partition("e")
    if not exponent:
        return _grouped(mantissa)
    return f"{_grouped(mantissa)} × 10{str(int(exponent)).translate(_SUPERSCRIPT)}"


def _grouped(text: str) -> str:
    sign, text = ("-", text[1:]) if text.startswith("-") else ("", text)
    whole, dot, fraction = text.partition(".")
    if len(whole) > 4:
        whole = f"{int(whole):,}".replace(",", "\u2009")
    return ("−" if sign else "") + whole + dot + fraction


def interval_decimals(low: float, high: float, fallback: int = 2) -> int:
    """Decimals that show an interval to its first significant digit of half-width, or its first two
    when that digit is 1 or 2 (two decimals for a half-width of 0.045, one for 2.5, none for 12): the
    precision a mean with that interval carries, without rounding 1.5 ± 2.5 to "2"."""
    half = (high - low) / 2
    if not (_finite(half) and half > 1e-9 * max(abs(low), abs(high))):  # zero width, up to rounding noise
        return fallback
    exponent = math.floor(math.log10(half))
    extra = 1 if half / 10 ** exponent < 3 else 0
    return int(min(max(extra - exponent, 0), 6))


def format_interval(mean: float, low: float, high: float, unit: str = "", decimals: int | None = None,
                    bounds: Bounds = UNBOUNDED) -> str:
    """``4.86× [4.81, 4.90]``; just the mean when there is no interval (one seed); a dash if no mean.

    ``bounds`` is the range the quantity can take: an end beyond it is cut there and marked
    :data:`CUT` (``1.2× [0†, 3.1]``: over three seeds a t-interval of a speedup can reach below 0);
    :func:`publish` then explains the mark under the table."""
    if not _finite(mean):
        return MISSING
    if not (_finite(low) and _finite(high)):
        return (fixed(mean, decimals) if decimals is not None else significant(mean)) + unit
    places = decimals
    if places is None:  # the precision the interval carries, but never beyond four significant digits
        four_digits = max(0, 3 - math.floor(math.log10(abs(mean)))) if mean else 6
        places = min(interval_decimals(low, high), four_digits)
    floor, ceiling = (-math.inf if bounds[0] is None else bounds[0]), (math.inf if bounds[1] is None else bounds[1])
    # an end at the bound (where the estimate itself is not) was cut there, by mean_ci or here
    low_text = fixed(max(low, floor), places) + (CUT if low <= floor < mean else "")
    high_text = fixed(min(high, ceiling), places) + (CUT if mean < ceiling <= high else "")
    return f"{fixed(mean, places)}{unit} [{low_text}, {high_text}]"


def format_range(low: float, high: float, decimals: int = 2, unit: str = "", equal: str = "in every case") -> str:
    """The spread of a quantity over cases (seeds, functions) for prose: ``between 1.90 and 2.40``, or
    ``4.00 in every case`` (``equal``) when both ends print the same (never a range whose ends read alike)."""
    if not (_finite(low) and _finite(high)):
        return MISSING
    low_text, high_text = (fixed(v, decimals) + unit for v in sorted((float(low), float(high))))
    return f"{low_text} {equal}" if low_text == high_text else f"between {low_text} and {high_text}"


def format_duration(seconds: float) -> str:
    """A duration in the unit that suits it: ``12 s``, ``3.5 min``, ``1.2 h`` (two significant digits,
    whole numbers from 10 on), never a zero count of a larger unit; a dash when unknown."""
    if not _finite(seconds):
        return MISSING
    seconds = float(seconds)
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {seconds!r} s")
    seconds = float(f"{seconds:.2g}")  # rounded first, so that 59.9 s is "1.0 min", not "60 s"
    for size, unit in ((3600.0, "h"), (60.0, "min")):
        if seconds >= size:
            return f"{_duration_number(seconds / size)} {unit}"
    return f"{_duration_number(seconds)} s"


def _duration_number(value: float) -> str:
    if value >= 10 or value == 0:
        return _grouped(f"{value:.0f}")
    return significant(value, 2)


# ------------------------------------------------------------------------------------------ columns
def text(key: str, label: Callable[[Any], str] = str) -> Formatter:
    """The column ``key`` through ``label`` (a display name)."""
    return lambda frame: [label(v) for v in frame[key]]


def number(key: str, digits: int = 3) -> Formatter:
    """The column ``key`` to ``digits`` significant digits."""
    return lambda frame: [significant(v, digits) for v in frame[key]]


def decimals(key: str, places: int, unit: str = "") -> Formatter:
    """The column ``key`` with a fixed number of decimals (a mean over seeds of integer counts: 1)."""
    return lambda frame: [fixed(v, places) + (unit if _finite(v) else "") for v in frame[key]]


def interval(key: str, low: str | None = None, high: str | None = None, unit: str = "",
             bounds: Bounds | Callable[[pd.Series], Bounds] | None = None) -> Formatter:
    """``mean [low, high]`` from the columns ``key``, ``key_low`` and ``key_high`` (or those named), each
    row to the precision of its own interval, ends cut at ``bounds`` (a range, a function of the row, or
    by default :func:`optex.analysis.value_bounds` of ``key``) and marked (:func:`format_interval`)."""
    low, high = low or f"{key}_low", high or f"{key}_high"
    limits = value_bounds(key) if bounds is None else bounds

    def cells(frame: pd.DataFrame) -> list[str]:
        return [format_interval(row[key], row[low], row[high], unit,
                                bounds=limits(row) if callable(limits) else limits) for _, row in frame.iterrows()]

    return cells


def count_of(key: str, total: str) -> Formatter:
    """``2 of 5`` from a count column and a total column."""
    return lambda frame: [f"{int(c)} of {int(n)}" for c, n in zip(frame[key], frame[total])]


@dataclass(frozen=True)
class Column:
    """A column of a table: its ``title`` (a human name, with the unit) and how to write its cells."""

    title: str
    cells: Formatter
    align: str = "right"  # "left" for text

    def __post_init__(self) -> None:
        if self.align not in ("left", "right", "center"):
            raise ValueError(f"align must be 'left', 'right' or 'center', got {self.align!r}")
        if "_" in self.title.replace(r"\_", "") and "$" not in self.title:
            raise ValueError(f"column title {self.title!r} looks like a code name: give it a human name")
        if self.title[:1].islower():
            raise ValueError(f"column title {self.title!r} starts in lower case: a title is capitalised "
                             "(a symbol goes in math, \"$d$\")")


def label(title: str, key: str, name: Callable[[Any], str] = str) -> Column:
    """A left-aligned text column (a name: a method, a function)."""
    return Column(title, text(key, name), align="left")


# ------------------------------------------------------------------------------------------ ordering
def natural_key(value: Any) -> tuple:
    """Sort key that orders numbers inside strings numerically: ``T0=5 < T0=10 < T0=100``."""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return (0, float(value), "")
    parts = _DIGITS.split(str(value))
    return (1, 0.0, tuple((0, float(p), "") if i % 2 else (1, 0.0, p) for i, p in enumerate(parts)))


def ordered(frame: pd.DataFrame, by: Sequence[str], order: Mapping[str, Sequence[Any]] | None = None) -> pd.DataFrame:
    """``frame`` sorted by the columns ``by``: in the listed ``order`` for the columns it names (values
    it does not list last), numerically (:func:`natural_key`) for the others."""
    order = order or {}

    def key(column: pd.Series) -> pd.Series:
        if column.name in order:
            rank = {v: i for i, v in enumerate(order[column.name])}
            return column.map(lambda v: (rank.get(v, len(rank)), natural_key(v)))
        return column.map(natural_key)

    return frame.sort_values(list(by), key=key, kind="stable").reset_index(drop=True) if by else frame


@dataclass
class Table:
    """Rows of ``frame`` (sorted by ``by``, see :func:`ordered`) written through ``columns``."""

    frame: pd.DataFrame
    columns: Sequence[Column]
    by: Sequence[str] = ()
    order: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    notes: Sequence[str] = ()  # sentences :func:`publish` adds to the caption (what a column left out said)

    def __post_init__(self) -> None:
        if not self.columns:
            raise ValueError("columns must name at least one Column")
        self.frame = ordered(self.frame, self.by, self.order)

    def cells(self) -> list[list[str]]:
        columns = [column.cells(self.frame) for column in self.columns]
        return [list(row) for row in zip(*columns)] if len(self.frame) else []

    def markdown(self) -> str:
        """The table as a Markdown pipe table, with a header row and per-column alignment."""
        rule = {"left": ":---", "right": "---:", "center": ":---:"}
        lines = ["| " + " | ".join(_cell(c.title) for c in self.columns) + " |",
                 "|" + "|".join(rule[c.align] for c in self.columns) + "|"]
        lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in self.cells()]
        return "\n".join(lines)

    def myst(self, name: str, caption: str) -> str:
        """A numbered MyST ``{table}`` with ``caption`` and the label ``name``."""
        if not re.match(r"^[a-z0-9]+(?:-[a-z0-9]+)*$", name):
            raise ValueError(f"table name must be lower-case words joined by '-', got {name!r}")
        if not caption.strip():
            raise ValueError(f"table {name} needs a caption")
        body = _INTERVAL.sub(lambda m: m.group(0).replace(" ", "\u00a0"), self.markdown())
        return f"::::{{table}} {' '.join(caption.split())}\n:name: {name}\n:align: center\n\n{body}\n::::"


def frame_table(frame: pd.DataFrame) -> Table:
    """A display frame whose columns already carry readers' names (cells mostly text, as the chapters'
    display helpers make them) as a :class:`Table`: integers whole, other numbers to three significant
    digits, text left-aligned unless every cell reads as a number (an interval, a count, a bound or a
    dash), which is right-aligned as numbers are."""
    columns = []
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_integer_dtype(column):  # a count or a setting: whole, never "64.0"
            columns.append(Column(str(name), decimals(name, 0)))
        elif pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            columns.append(Column(str(name), number(name)))
        else:
            numeric = all(_NUMERIC_CELL.match(str(v)) for v in column)
            columns.append(Column(str(name), text(name), align="right" if numeric and len(column) else "left"))
    return Table(frame.reset_index(drop=True), columns)


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def publish(table: Table, name: str, caption: str) -> None:
    """Show ``table`` in the page as numbered table ``name`` (refer to it with ``{numref}`name```)."""
    from IPython.display import Markdown, display

    caption = " ".join([caption, *table.notes])
    if any(CUT in cell for row in table.cells() for cell in row):
        caption = f"{caption} {CUT_NOTE}"
    display(Markdown(table.myst(name, caption)))


# ------------------------------------------------------------------------------------------ the book's tables
def speedups(frame: pd.DataFrame, groups: Sequence[tuple[str, str, Sequence[Any]]], methods: Sequence[str],
             reference: str = "Vanilla") -> Table:
    """The speedup table of a figure (rows of ``optex.analysis.speedup_table``): per group and method,
    the mean iterations to reach the reference's final value, the speedup with its interval, and the
    censored seeds. ``groups`` lists ``(column, title, order)`` of the columns that tell panels apart,
    e.g. ``[("function", "Function", functions)]``, or ``(column, title, order, name)`` with ``name``
    writing a value for the reader (default: capitalised); rows follow those orders, then ``methods``."""
    from .plotting import method_label

    return Table(frame[frame["method"].isin(methods)],
                 [*_group_labels(groups), label("Method", "method", method_label),
                  Column(f"Iterations to reach {reference}'s final value (mean)", decimals("iterations", 1)),
                  Column(f"Speedup over {reference} (95% interval)", interval("speedup", unit="×")),
                  Column("Censored seeds", count_of("censored", "seeds"))],
                 by=[group[0] for group in groups] + ["method"],
                 order={**{group[0]: list(group[2]) for group in groups}, "method": list(methods)})


def effective_speedups(frame: pd.DataFrame, groups: Sequence[tuple[str, str, Sequence[Any]]],
                       methods: Sequence[str], reference: str = "Vanilla") -> Table:
    """The effective (uncapped) speedup table (rows of ``optex.analysis.effective_speedup_table``): per
    group, method and sequential iteration t (T/2 and T), the Vanilla-equivalent iterations over t with
    its 95% interval; "≥" where some seed is censored (a lower bound), and the plateau flag of the
    panel (where the reference's curve is flat at its end both metrics are ill-conditioned)."""
    from .plotting import method_label

    def speedup(table: pd.DataFrame) -> list[str]:
        return effective_cells(table, "effective_speedup", "effective_low", "effective_high", "censored", "seeds")

    columns = [*_group_labels(groups), label("Method", "method", method_label),
               Column("Sequential iteration $t$", decimals("iteration", 0)),
               Column(f"Effective speedup over {reference} (95% interval)", speedup),
               Column("Censored seeds", count_of("censored", "seeds"))]
    shown = [m for m in methods if m != "vanilla"]  # Vanilla's own is 1 by definition
    rows = frame[frame["method"].isin(shown)]
    notes = []
    if "plateau" in rows and rows["plateau"].any():
        columns.append(Column("Reference on a plateau", lambda t: ["yes" if p else "no" for p in t["plateau"]],
                              align="left"))
    elif "plateau" in rows:  # a column of "no" only: said once in the caption instead
        notes.append(f"On no panel is {reference}'s curve flat over the last quarter of its run (a plateau, where "
                     "both speedup metrics are ill-conditioned).")
    return Table(rows, columns, by=[group[0] for group in groups] + ["method", "iteration"],
                 order={**{group[0]: list(group[2]) for group in groups}, "method": shown}, notes=notes)


def _group_labels(groups: Sequence[tuple]) -> list[Column]:
    return [label(group[1], group[0], group[3] if len(group) > 3 else _title_case) for group in groups]


def effective_text(mean: float, low: float, high: float, censored: int, seeds: int) -> str:
    """An effective speedup with its interval; ``≥`` before a mean that some censored seed makes a lower
    bound, and the bound alone (``≥ 20×``, no interval) where every seed is censored: all of them then sit
    at the reference run's length over t, so an interval would only repeat that number."""
    if censored and censored == seeds:
        return f"≥ {significant(mean)}×"
    return ("≥ " if censored else "") + format_interval(mean, low, high, "×", bounds=value_bounds("speedup"))


def effective_cells(frame: pd.DataFrame, key: str, low: str, high: str, censored: str, seeds: str) -> list[str]:
    """:func:`effective_text` of every row of ``frame``, from the columns named."""
    return [effective_text(*row) for row in frame[[key, low, high, censored, seeds]].itertuples(index=False)]


def effective_column(title: str, key: str, low: str, high: str, censored: str, seeds: str) -> Column:
    """A column of effective speedups (:func:`effective_cells` of the named columns)."""
    return Column(title, lambda frame: effective_cells(frame, key, low, high, censored, seeds))


def training_paper_table(table: pd.DataFrame, metrics: Sequence[tuple[str, str]]) -> Table:
    """The paper's metric of a training chapter (rows of :func:`optex.plotting.training_speedup_table`):
    per panel and method, for each ``(metric, name)`` of ``metrics``, the speedup over Vanilla in
    reaching Vanilla's value at T (mean over the seeds that reach it, 95% interval; a dash where none
    does) and the seeds that never reach it."""
    from .plotting import method_label

    columns = [label("Panel", "panel"), label("Method", "method", method_label)]
    for metric, name in metrics:
        speedup = interval(f"{metric}_speedup", unit="×", bounds=value_bounds("speedup"))
        columns += [Column(f"{_title_case(name)}: speedup (95% interval)", speedup),
                    Column(f"{_title_case(name)}: censored seeds", count_of(f"{metric}_censored", f"{metric}_seeds"))]
    return Table(table, columns)


def training_effective_table(table: pd.DataFrame, halfway: int, end: int) -> Table:
    """The effective speedup of a training chapter (rows of :func:`optex.plotting.training_speedup_table`)
    at t = ``halfway`` and ``end`` (:func:`effective_cells`), and for the surrogate methods the median
    cosine of the gradient estimate with the true gradient at each proxy step (a dash for the others)."""
    from .plotting import method_label

    columns = [label("Panel", "panel"), label("Method", "method", method_label)]
    for name, t in (("half", halfway), ("end", end)):
        columns.append(effective_column(f"Effective speedup at $t = {t}$ (95% interval)", f"effective_{name}",
                                        *(f"effective_{name}_{part}" for part in ("low", "high", "censored", "seeds"))))
    cosines = sorted((c for c in table.columns if c.startswith("cosine_")), key=lambda c: int(c.split("_")[1]))
    if cosines:
        steps = ", ".join(c.split("_")[1] for c in cosines)

        def median_cosines(frame: pd.DataFrame) -> list[str]:
            return [MISSING if all(np.isnan(v) for v in values) else ", ".join(fixed(v, 2) for v in values)
                    for values in frame[cosines].to_numpy(float)]
        columns.append(Column(f"Median cosine at proxy steps $s = {steps}$", median_cosines))
    return Table(table, columns)


def versus_table(versus: pd.DataFrame, table: pd.DataFrame) -> Table:
    """OptEx against the better LargeBatch per panel (:func:`optex.plotting.versus`, indexed by panel),
    with both effective speedups at T from ``table`` (:func:`optex.plotting.training_speedup_table`)."""
    from .plotting import method_label

    rows = versus.reset_index()
    by = table.set_index(["panel", "method"])
    for prefix, method in (("rival", rows["rival"]), ("ours", rows["method"])):
        for column in ("effective_end", "effective_end_low", "effective_end_high", "effective_end_censored",
                       "effective_end_seeds"):
            rows[f"{prefix}_{column}"] = [by[column].get((p, m), np.nan) for p, m in zip(rows["panel"], method)]

    def effective(title: str, prefix: str) -> Column:
        return effective_column(title, *(f"{prefix}_effective_end{s}" for s in ("", "_low", "_high", "_censored",
                                                                                 "_seeds")))
    return Table(rows, [label("Panel", "panel"), label("Better LargeBatch", "rival", method_label),
                        effective("Its effective speedup at $T$", "rival"),
                        effective("OptEx's effective speedup at $T$", "ours"),
                        Column("OptEx / LargeBatch, per seed (95% interval)",
                               interval("ratio", "low", "high", unit="×", bounds=value_bounds("ratio")))])


def time_split_table(split: pd.DataFrame) -> Table:
    """Milliseconds per sequential iteration (:func:`optex.plotting.time_split`) by panel and method."""
    from .plotting import method_label

    return Table(split, [label("Panel", "panel"), label("Method", "method", method_label),
                         *(Column(title, decimals(key, 1)) for key, title in (
                             ("proxy", "Proxy steps (ms)"), ("eval", "Evaluations (ms)"), ("update", "Update (ms)"),
                             ("total", "Iteration (ms)")))])


def _title_case(value: Any) -> str:
    text = str(value)
    return text[:1].upper() + text[1:]


__all__ = ["CUT", "CUT_NOTE", "Column", "MISSING", "Table", "compact", "count_of", "decimals", "effective_cells",
           "effective_column", "effective_text",
           "fixed", "format_duration", "time_split_table", "training_effective_table", "training_paper_table",
           "versus_table",
           "format_interval", "format_range", "interval", "signed", "speedups",
           "interval_decimals", "label", "natural_key", "number", "ordered", "publish", "significant", "text"]
