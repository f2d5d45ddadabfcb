"""The training-curve figures and tables of optex.plotting against direct computations on small tidy tables."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from optex import plotting, tables
from optex.analysis import effective_speedup

T, N = 8, 4


def _runs(rate, seeds=3, grid=2, panel="A"):
    """Tidy rows like the training runner's: loss exp(-rate t) evaluated every ``grid`` iterations and at T
    (vanilla_long runs N*T iterations at rate 1), proxy cosines every iteration, 0.1 s per iteration."""
    rows = []
    for method, r in {**rate, "vanilla_long": 1.0}.items():
        length = N * T if method == "vanilla_long" else T
        for seed in range(seeds):
            for t in range(length + 1):
                on_grid = t % grid == 0 or t == length
                loss = np.exp(-r * (1 + 0.01 * seed) * t)
                row = dict(panel=panel, method=method, seed=seed, iteration=t, wall_time=0.1 * t * (1 + seed),
                           train_loss=loss if on_grid else np.nan, val_error=loss / 2 if on_grid else np.nan)
                for s in range(1, N):
                    cosine = np.nan if method not in plotting.SURROGATES or t < 2 else 1.0 - 0.1 * s - 0.01 * (t % 3)
                    row[f"proxy_cosine_{s}"] = cosine
                rows.append(row)
    return pd.DataFrame(rows)


RATES = {"vanilla": 1.0, "target": 4.0, "optex": 3.0, "large_batch": 1.5, "large_batch_scaled": 2.0,
         "last_gradient": 2.5}


def test_new_methods_have_a_style_and_the_old_ones_keep_theirs():
    for method in ("vanilla_long", "large_batch_scaled", "last_gradient", "optex", "vanilla"):
        assert plotting.METHOD_STYLE[method]["color"].startswith("#")
    assert plotting.method_label("optex") == "OptEx"
    assert len({s["color"] for s in plotting.METHOD_STYLE.values()}) == len(plotting.METHOD_STYLE)


def test_curve_plot_is_the_seed_mean_and_t_band_on_the_grid_only():
    frame = _runs(RATES)
    fig, ax = plt.subplots()
    summary = plotting.curve_plot(ax, frame, "val_error", methods=["optex"]).set_index(["method", "iteration"])
    plt.close(fig)
    assert sorted(summary.loc["optex"].index) == [0, 2, 4, 6, 8]
    values = np.array([np.exp(-3.0 * (1 + 0.01 * s) * 4) / 2 for s in range(3)])
    half = stats.t.ppf(0.975, 2) * values.std(ddof=1) / np.sqrt(3)
    assert summary.loc[("optex", 4), "center"] == pytest.approx(values.mean())
    assert summary.loc[("optex", 4), "high"] == pytest.approx(values.mean() + half)
    with pytest.raises(ValueError, match="metric"):
        plotting.curve_plot(ax, frame, "test_error")


def test_time_grid_interpolates_each_run_and_never_extrapolates():
    frame = _runs({"vanilla": 1.0, "optex": 3.0})
    longest = 0.1 * N * T * 3  # vanilla_long, seed 2
    gridded = plotting.time_grid(frame, "train_loss", points=97)  # a grid point every 0.1 s
    assert np.allclose(sorted(gridded["time"].unique()), np.linspace(0, longest, 97))
    run = gridded[(gridded.method == "optex") & (gridded.seed == 1)].set_index("time")["train_loss"]
    assert run.index.max() == pytest.approx(0.1 * T * 2)  # seed 1's own end, 0.2 s per iteration
    # Linear between evaluation rows: at 0.3 s, iteration 1.5 of seed 1, between grid points 0 (0 s) and 2 (0.4 s).
    assert run.iloc[3] == pytest.approx(np.interp(0.3, [0.0, 0.4], [1.0, np.exp(-3.0 * 1.01 * 2)]))
    with pytest.raises(ValueError, match="points"):
        plotting.time_grid(frame, "train_loss", points=1)


def test_time_plot_draws_only_where_every_seed_still_runs():
    frame = _runs({"vanilla": 1.0, "optex": 3.0})
    fig, ax = plt.subplots()
    summary = plotting.time_plot(ax, frame, "train_loss", methods=["optex"], points=25)
    plt.close(fig)
    drawn = summary[summary.method == "optex"]
    assert drawn["time"].max() <= 0.1 * T + 1e-12 and (drawn["seeds"] == 3).all()


def test_effective_speedup_plot_draws_the_slope_n_line():
    frame = _runs(RATES)
    speedups = effective_speedup(frame, "train_loss", interpolate=True, by=["panel"])
    fig, ax = plt.subplots()
    summary = plotting.effective_speedup_plot(ax, speedups, N, methods=["target", "optex"]).set_index(
        ["method", "iteration"])
    lines = {line.get_label(): line for line in ax.get_lines()}
    plt.close(fig)
    assert np.allclose(lines[f"slope $N$ = {N}"].get_ydata(), [0, N * T])
    # Target's loss decays 4x faster than vanilla_long's: N Vanilla iterations per iteration (seed-wise rates
    # differ by 1%, the reference shares them).
    assert summary.loc[("target", T), "center"] == pytest.approx(N * T, rel=1e-6)
    with pytest.raises(ValueError, match="parallelism"):
        plotting.effective_speedup_plot(ax, speedups, 0)


def test_proxy_cosines_are_medians_and_quartiles_per_step():
    frame = _runs(RATES)
    cosines = plotting.proxy_cosines(frame).set_index(["method", "step"])
    for s in range(1, N):
        values = np.array([1.0 - 0.1 * s - 0.01 * (t % 3) for t in range(2, T + 1)] * 3)
        row = cosines.loc[("optex", s)]
        assert row["median"] == pytest.approx(np.median(values))
        assert row["q25"] == pytest.approx(np.quantile(values, 0.25)) and row["count"] == values.size
    assert set(cosines.index.get_level_values("method")) == {"optex", "last_gradient"}
    fig, ax = plt.subplots()
    plotting.proxy_cosine_plot(ax, cosines.reset_index())
    plt.close(fig)
    with pytest.raises(ValueError, match="proxy_cosine"):
        plotting.proxy_cosines(frame.drop(columns=[f"proxy_cosine_{s}" for s in range(1, N)]))


def test_training_table_has_both_metrics_the_better_large_batch_and_the_ratio():
    frame = pd.concat([_runs(RATES, panel="A"), _runs({**RATES, "large_batch": 2.2}, panel="B")], ignore_index=True)
    table = plotting.training_speedup_table(frame).set_index(["panel", "method"])
    assert "vanilla" not in table.index.get_level_values("method")
    # Target with N steps per iteration: effective speedup N at T (exactly, up to the 1% seed spread: none).
    assert table.loc[("A", "target"), "effective_end"] == pytest.approx(N, rel=1e-6)
    assert (table.loc[("A", "target"), "t_half"], table.loc[("A", "target"), "t_end"]) == (T // 2, T)
    # Paper metric: Vanilla's loss at T is exp(-T); OptEx at rate 3 first reaches it on the grid at t = 4 (> 8/3).
    assert table.loc[("A", "optex"), "train_loss_iterations"] == 4
    assert table.loc[("A", "optex"), "train_loss_speedup"] == pytest.approx(T / 4)
    assert table.loc[("A", "optex"), "cosine_1"] == pytest.approx(0.89)
    assert np.isnan(table.loc[("A", "target"), "cosine_1"])
    assert table.loc[("A", "optex"), "effective_end_seeds"] == table.loc[("A", "optex"), "train_loss_seeds"] > 1
    best = plotting.best_large_batch(table.reset_index())
    assert best.to_dict() == {"A": "large_batch_scaled", "B": "large_batch"}
    speedups = effective_speedup(frame, "train_loss", interpolate=True, by=["panel"])
    ratio = plotting.versus(speedups, "optex", best).set_index("panel")
    assert ratio.loc["A", "ratio"] == pytest.approx(3.0 / 2.0, rel=1e-6)
    assert ratio.loc["B", "ratio"] == pytest.approx(3.0 / 2.2, rel=1e-6) and ratio.loc["B", "rival"] == "large_batch"


def test_training_figure_draws_each_panel_and_column_from_its_own_rows():
    frame = pd.concat([_runs(RATES, panel="A"), _runs({**RATES, "optex": 2.0}, panel="B")], ignore_index=True)
    methods = ["vanilla", "optex"]
    fig, summary = plotting.training_figure(frame, ["A", "B"], [("val_error", "iteration"), ("train_loss", "time")],
                                            methods, points=17)
    axes = fig.axes
    assert len([ax for ax in axes if ax.get_lines()]) == 4
    optex_b = axes[2].get_lines()[1]  # panel B, per iteration, second method
    expected = plotting.band(frame[frame.panel == "B"].dropna(subset=["val_error"]), y="val_error", log=False)
    expected = expected[expected.method == "optex"]
    np.testing.assert_allclose(optex_b.get_ydata(), expected["center"])
    # Per second, Vanilla is drawn from its N·T-iteration run.
    assert set(summary[summary.axis == "time"]["method"]) == {"vanilla_long", "optex"}
    plt.close(fig)
    with pytest.raises(ValueError, match="x must be"):
        plotting.training_figure(frame, ["A"], [("val_error", "seconds")], methods)
    speedups = effective_speedup(frame, "train_loss", interpolate=True, by=["panel"])
    fig, _ = plotting.effective_speedup_figure(speedups, ["A", "B"], N, ["optex"])
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 2
    plt.close(fig)
    fig = plotting.proxy_cosine_figure(plotting.proxy_cosines(frame), ["A", "B"])
    assert len(fig.axes) == 2
    plt.close(fig)


def test_the_display_tables_and_the_reading_quote_the_table():
    # Panel B's rows come first: the table keeps the panels in that order.
    frame = pd.concat([_runs({**RATES, "optex": 1.2}, panel="B"), _runs(RATES, panel="A")], ignore_index=True)
    table = plotting.training_speedup_table(frame)
    assert list(dict.fromkeys(table["panel"])) == ["B", "A"]
    paper = tables.training_paper_table(table, [("train_loss", "training loss"), ("val_error", "validation error")])
    titles = [c.title for c in paper.columns]
    assert titles[:4] == ["Panel", "Method", "Training loss: speedup (95% interval)", "Training loss: censored seeds"]
    rows = {(r[0], r[1]): r for r in paper.cells()}
    assert len(rows) == len(table) and paper.cells()[0][:2] == ["B", "Target"]
    # OptEx in A first reaches Vanilla's final loss at t = 4 on every seed: T / 4, a zero-width interval
    assert rows[("A", "OptEx")][2] == f"{T / 4:.2f}× [{T / 4:.2f}, {T / 4:.2f}]" and rows[("A", "OptEx")][3].startswith("0 of ")
    effective = tables.training_effective_table(table, T // 2, T)
    assert [c.title for c in effective.columns][2:4] == [f"Effective speedup at $t = {T // 2}$ (95% interval)",
                                                         f"Effective speedup at $t = {T}$ (95% interval)"]
    cells = {(r[0], r[1]): r for r in effective.cells()}
    assert cells[("A", "OptEx")][3].startswith("3.00×") and cells[("A", "OptEx")][4] == "0.89, 0.79, 0.69"
    assert cells[("A", "Target")][4] == tables.MISSING
    assert [c.align for c in effective.columns] == ["left", "left", "right", "right", "right"]
    speedups = effective_speedup(frame, "train_loss", interpolate=True, by=["panel"])
    versus = plotting.versus(speedups, "optex", plotting.best_large_batch(table)).set_index("panel")
    shown = tables.versus_table(versus, table).cells()
    assert [r[1] for r in shown] == [plotting.method_label("large_batch_scaled")] * 2
    assert shown[1][0] == "A" and shown[1][3].startswith("3.00×") and shown[1][4].startswith("1.50×")
    summary = plotting.training_summary(table, versus).set_index("panel")
    assert summary.loc["A", "optex_of_target"] == pytest.approx(3.0 / 4.0, rel=1e-6)
    assert summary.loc["B", "ratio"] == pytest.approx(1.2 / 2.0, rel=1e-6)
    text = plotting.reading_text(summary.reset_index(), N)
    assert "in 1 of 2 panels (A)" in text and "behind in B" in text and "75% of Target's 4.00×" in text
    assert "≥" not in text
    # a censored seed makes the mean a lower bound: the reading marks it as the tables do
    censored = plotting.reading_text(summary.reset_index().assign(large_batch_censored=[0.0, 1.0]), N)
    assert censored.count("≥ ") == 1 and f"{plotting.method_label('large_batch_scaled')}, ≥ " in censored
    # every seed censored: the bound alone, as the tables show it
    rows = summary.reset_index()
    everywhere = plotting.reading_text(rows.assign(large_batch_censored=rows["large_batch_seeds"]), N)
    assert f"{plotting.method_label('large_batch_scaled')}, ≥ {tables.significant(rows['large_batch'].iloc[1])}×, " \
        in everywhere


def test_time_split_is_the_median_milliseconds_after_the_first_iterations():
    rows = [dict(panel="A", method="optex", seed=s, iteration=t, time_proxy=0.001 * t, time_eval=0.002, time_update=0.0)
            for s in range(2) for t in range(0, 12)]
    split = plotting.time_split(pd.DataFrame(rows), ["optex"], skip=5).set_index("method")
    assert split.loc["optex", "proxy"] == pytest.approx(np.median(np.arange(6, 12)))
    assert split.loc["optex", "total"] == pytest.approx(np.median(np.arange(6, 12)) + 2.0)


def test_panel_notes_in_narrow_training_panels_push_no_title_into_the_row_above():
    """Fig. 4a's shape: two rows of four narrow panels, every panel with a two-line note under its title
    (Vanilla and LargeBatch coincide). The layout makes room for the notes: no title, note, axis label or
    legend overlaps another, and none lies over a curve."""
    rates = {"vanilla": 0.1, "large_batch": 0.1, "large_batch_scaled": 0.2, "target": 0.4, "optex": 0.3}
    frame = pd.concat([_runs(rates, panel=p) for p in ("CIFAR-10, SGD 0.01", "CIFAR-10, Adam 0.001")])
    columns = [("train_loss", "iteration"), ("val_error", "iteration"), ("train_loss", "time"), ("val_error", "time")]
    fig, _ = plotting.training_figure(frame, ["CIFAR-10, SGD 0.01", "CIFAR-10, Adam 0.001"], columns,
                                      ("vanilla", "large_batch", "large_batch_scaled", "target", "optex"))
    assert plotting.overlapping_text(fig) == [] and plotting.covered_data(fig) == []
    notes = [plotting.panel_notes(ax) for ax in fig.axes[:2]]
    assert all(n and "Vanilla" in n[0] and "LargeBatch" in n[0] for n in notes), notes
    # What the check finds: with the layout frozen, a title grown by five lines reaches into the row above.
    fig.set_layout_engine("none")
    fig.axes[4].set_title("\n".join(["a title of six lines"] * 6))
    assert "the x label of panel 1 overlaps the title of panel 5" in plotting.overlapping_text(fig)
    plt.close(fig)
