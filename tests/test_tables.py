"""optex.tables: numbers to their precision, intervals, numeric order, numbered MyST tables."""
import math

import pandas as pd
import pytest

from optex import tables


@pytest.mark.parametrize("value, text", [(14.4, "14.4"), (1.0, "1.00"), (0.012345, "0.0123"), (1234.0, "1234"),
                                         (123456.0, "123\u2009456"), (3.4e-5, "3.40 × 10⁻⁵"), (2.5e7, "2.50 × 10⁷"),
                                         (-0.5, "−0.500"), (math.nan, "—"), (None, "—"), (0, "0")])
def test_significant_digits(value, text):
    assert tables.significant(value) == text


def test_intervals_carry_the_precision_of_their_half_width():
    assert tables.format_interval(4.8612, 4.8133, 4.9034) == "4.86 [4.81, 4.90]"
    assert tables.format_interval(14.4, 12.1, 16.7, "×") == "14.4× [12.1, 16.7]"
    assert tables.format_interval(2.0, math.nan, math.nan) == "2.00"
    assert tables.format_interval(math.nan, 1, 2) == "—"
    assert tables.interval_decimals(3.0, 3.0) == 2  # zero width: the default


@pytest.mark.parametrize("value, text", [(-200, "−200"), (-110.5, "−110.5"), (0.001, "0.001"), (123456, "123\u2009456"),
                                         (1e-5, "1 × 10⁻⁵"), (-2.5e7, "−2.5 × 10⁷"), (math.nan, "—")])
def test_compact_is_the_shortest_exact_form_with_a_minus_sign(value, text):
    assert tables.compact(value) == text


def test_signed_differences_carry_their_sign():
    assert [tables.signed(v, 1) for v in (12.34, -4.0, 0.0, 0.04, math.nan)] == ["+12.3", "−4.0", "0.0", "0.0", "—"]


def test_rows_sort_numerically_and_by_a_given_order():
    frame = pd.DataFrame({"T0": ["T0=10", "T0=100", "T0=20", "T0=5"], "N": [10, 2, 5, 1],
                          "method": ["optex", "vanilla", "target", "optex"]})
    assert list(tables.ordered(frame, ["T0"])["T0"]) == ["T0=5", "T0=10", "T0=20", "T0=100"]
    assert list(tables.ordered(frame, ["N"])["N"]) == [1, 2, 5, 10]
    by_method = tables.ordered(frame, ["method", "N"], {"method": ["vanilla", "target", "optex"]})
    assert list(by_method["method"]) == ["vanilla", "target", "optex", "optex"]
    assert list(by_method["N"]) == [2, 5, 1, 10]


def test_a_table_is_a_numbered_myst_table_with_human_columns():
    frame = pd.DataFrame(dict(method=["optex", "vanilla"], iterations=[14.4, 40.0], speedup=[2.78, 1.0],
                              speedup_low=[2.70, 1.0], speedup_high=[2.86, 1.0], censored=[0, 0], seeds=[5, 5]))
    table = tables.Table(frame, [tables.label("Method", "method", str.capitalize),
                                 tables.Column("Iterations to reach Vanilla's final gap", tables.decimals("iterations", 1)),
                                 tables.Column("Speedup (95% interval)", tables.interval("speedup", unit="×")),
                                 tables.Column("Censored seeds", tables.count_of("censored", "seeds"))],
                         by=["iterations"])
    text = table.myst("demo-table", "Speedups, with $N = 5$.")
    lines = text.splitlines()
    assert lines[0] == "::::{table} Speedups, with $N = 5$." and lines[1] == ":name: demo-table"
    assert "| Method | Iterations to reach Vanilla's final gap | Speedup (95% interval) | Censored seeds |" in lines
    assert "|:---|---:|---:|---:|" in lines
    # inside an interval the space is a no-break one: a narrow column breaks before "[", never after ","
    assert "| Optex | 14.4 | 2.78× [2.70,\u00a02.86] | 0 of 5 |" in lines
    assert "| Vanilla | 40.0 | 1.00× [1.00,\u00a01.00] | 0 of 5 |" in lines
    assert lines[-1] == "::::"


def test_code_names_as_titles_and_bad_names_are_refused():
    with pytest.raises(ValueError, match="speedup_low"):
        tables.Column("speedup_low", tables.number("speedup_low"))
    table = tables.Table(pd.DataFrame({"a": [1]}), [tables.Column("A", tables.number("a"))])
    with pytest.raises(ValueError, match="name"):
        table.myst("Bad Name", "caption")
    with pytest.raises(ValueError, match="caption"):
        table.myst("good-name", " ")


def test_effective_speedups_mark_lower_bounds_and_leave_out_vanilla():
    frame = pd.DataFrame(dict(function=["sphere"] * 3, method=["vanilla", "optex", "optex"], iteration=[40, 20, 40],
                              effective_speedup=[1.0, 4.8, 7.0], effective_low=[1.0, 4.8, -2.0],
                              effective_high=[1.0, 4.8, 16.0], seeds=[5, 5, 5], censored=[0, 0, 1],
                              plateau=[False, False, True]))
    lines = tables.effective_speedups(frame, [("function", "Function", ["sphere"])], ["vanilla", "optex"]).markdown()
    rows = lines.splitlines()[2:]
    assert rows == ["| Sphere | OptEx | 20 | 4.80× [4.80, 4.80] | 0 of 5 | no |",
                    "| Sphere | OptEx | 40 | ≥ 7× [0†, 16] | 1 of 5 | yes |"]
    # a plateau column of "no" only is left out, and the caption says it once
    flat = tables.effective_speedups(frame.assign(plateau=False), [("function", "Function", ["sphere"])],
                                     ["vanilla", "optex"])
    assert [c.title for c in flat.columns][-1] == "Censored seeds"
    assert flat.notes and "On no panel is Vanilla's curve flat" in flat.notes[0]


@pytest.mark.parametrize("seconds, text", [(0.04, "0.040 s"), (3.44, "3.4 s"), (12.4, "12 s"), (59.9, "1.0 min"),
                                           (210, "3.5 min"), (599, "10 min"), (3599, "1.0 h"), (4320, "1.2 h"),
                                           (90000, "25 h"), (math.nan, "—")])
def test_durations_pick_a_unit_and_never_print_zero_of_it(seconds, text):
    assert tables.format_duration(seconds) == text


def test_no_duration_from_a_tenth_of_a_second_to_a_day_reads_zero():
    for seconds in (0.1, 0.7, 1, 29, 30, 89, 1799, 5399, 7199, 86400):
        number = tables.format_duration(seconds).split()[0]
        assert float(number) > 0, seconds
    with pytest.raises(ValueError, match="negative"):
        tables.format_duration(-1)


def test_ranges_with_equal_ends_say_so_instead_of_between():
    assert tables.format_range(1.9, 2.4) == "between 1.90 and 2.40"
    assert tables.format_range(2.4, 1.9, unit="×") == "between 1.90× and 2.40×"
    assert tables.format_range(4.0, 4.0) == "4.00 in every case"
    assert tables.format_range(3.999, 4.001, equal="on every seed") == "4.00 on every seed"
    assert tables.format_range(math.nan, 1.0) == "—"


def test_a_display_frame_shows_integer_columns_whole_and_others_to_three_digits():
    frame = pd.DataFrame({"Hidden width": [64, 128], "$k$ (steps per update)": [4, 10], "Rate": [0.01234, 2.0],
                          "Task": ["CartPole-v1", "Acrobot-v1"], "Return (95% interval)": ["≥ 7×", "−3.1 [−4.0, −2.2]"],
                          "Reached": ["never", "—"]})
    table = tables.frame_table(frame)
    assert table.cells() == [["64", "4", "0.0123", "CartPole-v1", "≥ 7×", "never"],
                             ["128", "10", "2.00", "Acrobot-v1", "−3.1 [−4.0, −2.2]", "—"]]
    # text that reads as numbers (intervals, bounds, dashes) is right-aligned as numbers are; words are not
    assert [c.align for c in table.columns] == ["right", "right", "right", "left", "right", "left"]


def test_a_very_narrow_interval_is_written_to_four_significant_digits_at_most():
    assert tables.format_interval(4.00817, 4.00792, 4.00842, "×") == "4.008× [4.008, 4.008]"
    assert tables.format_interval(4.00817, 3.99, 4.02, "×") == "4.008× [3.990, 4.020]"
    assert tables.format_interval(4.0, 3.6, 4.4, "×") == "4.0× [3.6, 4.4]"


def test_a_column_title_is_a_capitalised_human_name():
    for title in ("hidden width", "speedup_low"):
        with pytest.raises(ValueError, match="column title"):
            tables.Column(title, tables.text("x"))
    assert tables.Column("$d$", tables.text("x")).title == "$d$"


def test_an_effective_speedup_every_seed_censored_is_shown_as_its_bound_alone():
    frame = pd.DataFrame(dict(s=[20.0, 7.0, 3.0], lo=[20.0, -1.0, 2.5], hi=[20.0, 16.0, 3.5], cut=[5, 1, 0],
                              n=[5, 5, 5]))
    assert tables.effective_cells(frame, "s", "lo", "hi", "cut", "n") == ["≥ 20.0×", "≥ 7× [0†, 16]",
                                                                          "3.0× [2.5, 3.5]"]


def test_an_interval_cut_at_its_bound_is_marked_and_the_caption_says_why(monkeypatch):
    assert tables.format_interval(1.23, -0.62, 3.08, "×", bounds=(0.0, None)) == "1.2× [0.0†, 3.1]"
    assert tables.format_interval(480.0, 430.0, 512.0, bounds=(0.0, 500.0)) == "480 [430, 500†]"
    # every seed at the bound is no cut: the estimate itself is there
    assert tables.format_interval(0.0, 0.0, 0.0, bounds=(0.0, None)) == "0.00 [0.00, 0.00]"
    frame = pd.DataFrame(dict(method=["a", "b"], speedup=[1.23, 2.0], speedup_low=[-0.62, 1.9],
                              speedup_high=[3.08, 2.1]))
    assert tables.interval("speedup", unit="×")(frame) == ["1.2× [0.0†, 3.1]", "2.00× [1.90, 2.10]"]
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda item: shown.append(item.data))
    table = tables.Table(frame, [tables.Column("Speedup (95% interval)", tables.interval("speedup", unit="×"))])
    tables.publish(table, "cut-demo", "Speedups.")
    assert tables.CUT_NOTE in shown[0]
    tables.publish(tables.Table(frame.iloc[1:], table.columns), "uncut-demo", "Speedups.")
    assert tables.CUT not in shown[1]
