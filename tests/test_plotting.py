"""optex.plotting: seed bands against a direct computation, figure files under a stable id."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from optex import plotting


def _frame(values):
    """Tidy rows: one method, seeds 0..k-1, iterations 0..T-1, gap = values[seed][t]."""
    rows = [dict(method="optex", seed=s, iteration=t, gap=v) for s, row in enumerate(values) for t, v in enumerate(row)]
    return pd.DataFrame(rows)


def test_band_is_a_t_interval_on_the_log_scale():
    values = np.array([[1.0, 0.1], [2.0, 0.4], [4.0, 0.2]])
    summary = plotting.band(_frame(values)).set_index("iteration")
    for t in range(2):
        logs = np.log10(values[:, t])
        half = stats.t.ppf(0.975, 2) * logs.std(ddof=1) / np.sqrt(3)
        assert summary.loc[t, "center"] == pytest.approx(10 ** logs.mean())
        assert summary.loc[t, "low"] == pytest.approx(10 ** (logs.mean() - half))
        assert summary.loc[t, "high"] == pytest.approx(10 ** (logs.mean() + half))
        assert summary.loc[t, "seeds"] == 3


def test_band_on_a_linear_scale_is_the_arithmetic_mean():
    values = np.array([[1.0, -1.0], [3.0, 1.0]])
    summary = plotting.band(_frame(values), log=False).set_index("iteration")
    assert summary.loc[0, "center"] == pytest.approx(2.0)
    assert summary.loc[1, "center"] == pytest.approx(0.0)


def test_band_drops_non_positive_values_under_log():
    summary = plotting.band(_frame([[1.0], [0.0], [100.0]]))
    assert summary.loc[0, "center"] == pytest.approx(10.0)
    assert summary.loc[0, "seeds"] == 2


def test_band_plot_draws_one_line_per_method_in_order():
    frame = pd.concat([_frame([[1.0, 0.5], [1.0, 0.4]]).assign(method=m) for m in ("optex", "vanilla")])
    fig, ax = plt.subplots()
    plotting.band_plot(ax, frame, methods=("vanilla", "optex"))
    assert [line.get_label() for line in ax.get_lines()] == ["Vanilla", "OptEx"]
    assert ax.get_yscale() == "log"
    plt.close(fig)


def test_save_figure_writes_svg_png_and_csv(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    data = pd.DataFrame({"x": [0, 1], "y": [1, 0]})
    paths = plotting.save_figure(fig, "tiny-figure", data, tmp_path / "figures")
    plt.close(fig)
    assert {p.name for p in paths.values()} == {"tiny-figure.svg", "tiny-figure.png", "tiny-figure.csv"}
    assert paths["png"].read_bytes().startswith(b"\x89PNG")
    assert "<svg" in paths["svg"].read_text()
    pd.testing.assert_frame_equal(pd.read_csv(paths["csv"]), data)


def test_saving_the_same_figure_twice_gives_the_same_svg(tmp_path):
    texts = []
    for folder in ("a", "b"):
        fig, ax = plt.subplots()
        ax.plot([0, 1], [1, 0])
        texts.append(plotting.save_figure(fig, "same", pd.DataFrame(), tmp_path / folder)["svg"].read_text())
        plt.close(fig)
    assert texts[0] == texts[1]


@pytest.mark.parametrize("figure_id", ["Synthetic", "a_b", "-a", "a--b", "", "a b"])
def test_figure_ids_must_be_lower_case_words_joined_by_hyphens(figure_id):
    with pytest.raises(ValueError, match="figure_id"):
        plotting.check_figure_id(figure_id)


# ------------------------------------------------------------------------------------ method styles
def test_every_runner_method_has_one_distinct_style():
    from optex.experiments import synthetic, training

    methods = set(synthetic.METHODS) | set(training.METHODS)
    assert methods <= set(plotting.METHOD_STYLE)
    styles = list(plotting.METHOD_STYLE.values())
    for key in ("label", "color"):
        assert len({s[key] for s in styles}) == len(styles), f"two methods share a {key}"
    assert len({(s["marker"], s["linestyle"]) for s in styles}) == len(styles)
    # Display names are the runner's where it has one.
    for name, method in training.METHODS.items():
        assert plotting.method_label(name) == method.label


def test_optex_and_picard_are_far_apart_in_colour():
    def rgb(name):
        return np.array(matplotlib.colors.to_rgb(plotting.METHOD_STYLE[name]["color"]))

    assert np.abs(rgb("optex") - rgb("picard")).sum() > 0.8


def test_an_unknown_method_is_an_error_naming_it():
    with pytest.raises(ValueError, match="'adamw'"):
        plotting.method_label("adamw")


def test_thin_spaces_only_inside_math():
    assert plotting.thin_space_in_math("Sphere, $d = 100,000$") == r"Sphere, $d = 100\,000$"
    assert plotting.thin_space_in_math("1,000 points, $N = 5$") == "1,000 points, $N = 5$"


# ------------------------------------------------------------------------------------ time grids
def test_best_so_far_on_a_common_grid_matches_a_direct_computation():
    # Two seeds sampled at different times; the grid spans [max first time, min last time] = [0.5, 3].
    frame = pd.DataFrame(dict(method="optex", seed=[0, 0, 0, 0, 1, 1, 1],
                              wall_time=[0.0, 1.0, 2.0, 4.0, 0.5, 1.5, 3.0],
                              gap=[10.0, 4.0, 5.0, 1.0, 8.0, 2.0, 3.0]))
    grid = plotting.best_so_far_on_grid(frame, points=6)
    times = np.linspace(0.5, 3.0, 6)
    assert set(grid["wall_time"]) == set(times)
    for seed, (t, g) in {0: ([0.0, 1.0, 2.0, 4.0], [10.0, 4.0, 4.0, 1.0]), 1: ([0.5, 1.5, 3.0], [8.0, 2.0, 2.0])}.items():
        expected = [g[np.searchsorted(t, x, side="right") - 1] for x in times]
        np.testing.assert_array_equal(grid[grid.seed == seed].sort_values("wall_time")["gap"], expected)
    # Every grid point has both seeds, so the band's x never interleaves seeds.
    assert plotting.band(grid, x="wall_time").seeds.eq(2).all()


def test_coinciding_curves_are_found_and_noted_on_the_panel():
    base = _frame([[1.0, 0.5, 0.2], [1.1, 0.6, 0.3]])
    frame = pd.concat([base.assign(method="target"), base.assign(method="optex"),
                       base.assign(method="vanilla", gap=base.gap * 3)])
    summary = plotting.band(frame)
    assert plotting.coinciding(summary, "method", "iteration") == [["optex", "target"]]
    fig, ax = plt.subplots()
    plotting.band_plot(ax, frame, methods=("vanilla", "target", "optex"))
    assert plotting.panel_notes(ax) == ["coincide: Target, OptEx"]
    # Each line carries its method's marker and line style.
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert lines["Target"].get_marker() == plotting.METHOD_STYLE["target"]["marker"]
    assert lines["OptEx"].get_linestyle() == plotting.METHOD_STYLE["optex"]["linestyle"]
    plt.close(fig)


def _lines(**centres):
    """A band summary (as band() returns it) of one line per method with the given centres."""
    return pd.concat([pd.DataFrame(dict(method=m, iteration=range(len(c)), center=c)) for m, c in centres.items()])


def test_on_a_linear_axis_curves_coincide_only_within_a_share_of_the_plotted_span():
    # Returns of -200 and -197 on an axis from -200 to -150 are 6% of its height apart: both show.
    base = _frame([[-200.0, -200.0, -200.0], [-200.0, -200.0, -200.0]]).rename(columns={"gap": "ret"})
    frame = pd.concat([base.assign(method="vanilla"), base.assign(method="target", ret=base.ret + 50.0),
                       base.assign(method="optex", ret=base.ret + 3.0), base.assign(method="picard", ret=base.ret + 0.2)])
    summary = plotting.band(frame, y="ret", log=False)
    groups = [sorted(g) for g in plotting.coinciding(summary, "method", "iteration", log=False)]
    assert groups == [["picard", "vanilla"]]
    # On a log axis the distance is in decades against the span: 100 and 103 on an axis of four decades
    # are 0.3% of its height apart (one line), 100 and 130 are 2.8% apart (two lines).
    vanilla = np.array([1e4, 1e3, 1e2, 1.0])
    summary = _lines(vanilla=vanilla, optex=vanilla * 1.03, target=vanilla * 1.3)
    groups = plotting.coinciding(summary, "method", "iteration", log=True)
    assert groups == [["vanilla", "optex"]]


def test_curves_that_coincide_along_most_of_their_length_are_noted_even_where_their_ends_part():
    # On a 0..1 axis, LargeBatch lies within 1% of Vanilla for 8 of 10 points and parts by 20% at the end:
    # along the rest it is hidden, so it is noted; Target shares only the first 3 points: it is seen.
    vanilla = np.linspace(1.0, 0.0, 10)
    parting = np.where(np.arange(10) < 8, vanilla + 0.005, vanilla + 0.2)
    early = np.where(np.arange(10) < 3, vanilla, vanilla * 0.5)
    summary = _lines(vanilla=vanilla, large_batch=parting, target=early)
    assert plotting.coinciding(summary, "method", "iteration", log=False) == [["vanilla", "large_batch"]]
    # A chain of lines each hiding the next is one group, in drawing order.
    chain = _lines(optex=vanilla, target=vanilla + 0.015, large_batch=vanilla + 0.03, picard=vanilla - 0.5)
    assert plotting.coinciding(chain, "method", "iteration", log=False) == [["optex", "target", "large_batch"]]
    # Drawn: the partly coinciding pair is named in the panel's note, and every method the legend names is
    # either apart from the others or in that note.
    frame = pd.concat([pd.DataFrame(dict(method=m, seed=s, iteration=range(10), gap=c + 0.001 * s))
                       for m, c in (("vanilla", vanilla), ("large_batch", parting), ("target", early)) for s in (0, 1)])
    fig = plotting.curve_grid(frame.assign(panel="a"), ["a"], y="gap", methods=("vanilla", "large_batch", "target"),
                              log=False)
    fig.canvas.draw()
    (note,) = plotting.panel_notes(fig.axes[0])
    assert note.replace("\n", " ") == "coincide: Vanilla, LargeBatch"
    assert plotting.covered_data(fig) == []
    plt.close(fig)


# ------------------------------------------------------------------------------------ figure checks
def test_figure_problems_catch_width_small_text_and_foreign_legends(tmp_path):
    data = _frame([[1.0, 0.5]])
    fig = plotting.curve_grid(data.assign(panel="a"), ["a"], methods=("optex",))
    assert plotting.figure_problems(fig, data) == []
    fig.axes[0].plot([0, 1], [1, 0.5], label="Vanilla")
    fig.axes[0].legend()
    assert any("Vanilla" in p for p in plotting.figure_problems(fig, data))
    fig.set_size_inches(10, 3)
    fig.axes[0].set_title("tiny", fontsize=5)
    problems = plotting.figure_problems(fig, data)
    assert any("text width" in p for p in problems) and any("5.0 pt" in p for p in problems)
    with pytest.raises(ValueError, match="text width"):
        plotting.save_figure(fig, "too-wide", data, tmp_path)
    plt.close("all")


def test_curve_grid_draws_every_panel_and_one_legend_of_the_methods_drawn():
    frames = [_frame([[1.0, 0.5], [1.2, 0.4]]).assign(method=m, panel=p, dim=1000)
              for m in ("vanilla", "optex") for p in ("sphere", "levy", "ackley")]
    data = pd.concat(frames)
    fig = plotting.curve_grid(data, ["sphere", "levy", "ackley"], methods=("vanilla", "optex", "target"),
                              title=lambda panel, rows: f"{panel}, $d = {rows['dim'].iloc[0]:,}$")
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == [r"sphere, $d = 1\,000$", r"levy, $d = 1\,000$",
                                                  r"ackley, $d = 1\,000$"]
    assert plotting.legend_labels(fig) == ["Vanilla", "OptEx"]
    assert plotting.figure_problems(fig, data) == []
    plt.close(fig)


def test_sweep_styles_are_distinct_and_ordered_dark_to_light():
    styles = plotting.sweep_styles([1, 2, 5, 10], lambda n: f"N = {n}")
    assert [s["label"] for s in styles.values()] == ["N = 1", "N = 2", "N = 5", "N = 10"]
    lightness = [np.mean(matplotlib.colors.to_rgb(s["color"])) for s in styles.values()]
    assert lightness == sorted(lightness)
    assert len({s["marker"] for s in styles.values()}) == 4


# ------------------------------------------------------------------------------------ value ranges
def test_bounds_follow_the_column_name_where_it_is_unambiguous():
    assert plotting.value_bounds("test_error") == (0.0, 1.0)
    assert plotting.value_bounds("val_error") == (0.0, 1.0)
    assert plotting.value_bounds("rel_error") == (0.0, None)
    assert plotting.value_bounds("cosine") == (-1.0, 1.0)
    assert plotting.value_bounds("proxy_cosine_2") == (-1.0, 1.0)
    assert plotting.value_bounds("train_loss") == (0.0, None)
    assert plotting.value_bounds("gap") == (0.0, None)
    assert plotting.value_bounds("cum_avg_return") == plotting.UNBOUNDED  # depends on the task
    assert plotting.return_bounds("cartpole") == (0.0, 500.0)
    assert plotting.return_bounds("mountaincar") == (-200.0, 0.0)
    with pytest.raises(ValueError, match="low <= high"):
        plotting.band(_frame([[1.0]]), bounds=(1.0, 0.0))


def _band_extent(ax):
    """Lowest and highest y of the shaded bands drawn on ``ax``."""
    ys = np.concatenate([path.vertices[:, 1] for band in ax.collections for path in band.get_paths()])
    return ys.min(), ys.max()


def test_a_band_that_would_leave_the_quantity_range_is_clipped_to_it():
    """Three seeds near 0 % error and near a cosine of 1: the t-interval of the mean crosses the bound
    (checked), the drawn band and the summary stop at it."""
    errors = np.array([[0.0, 0.02, 0.0], [0.0, 0.0, 0.03]]).T  # seeds x iterations
    rows = [dict(method="optex", seed=s, iteration=t, test_error=v) for s, row in enumerate(errors) for t, v in
            enumerate(row)]
    frame = pd.DataFrame(rows)
    assert (plotting.band(frame, y="test_error", log=False, bounds=plotting.UNBOUNDED)["low"] < 0).all()
    fig, ax = plt.subplots()
    summary = plotting.band_plot(ax, frame, y="test_error", log=False)
    assert summary["low"].min() == 0.0 and _band_extent(ax)[0] >= 0.0
    cosines = frame.rename(columns={"test_error": "cosine"}).assign(cosine=lambda f: 1 - f["cosine"])
    assert (plotting.band(cosines, y="cosine", log=False, bounds=plotting.UNBOUNDED)["high"] > 1).all()
    ax.clear()
    plotting.band_plot(ax, cosines, y="cosine", log=False)
    assert _band_extent(ax)[1] <= 1.0
    plt.close(fig)


def test_rl_curves_keep_the_return_band_within_the_task_range():
    """CartPole pays at most 500 per episode: seeds at 500, 500 and 470 give a t-band above 500."""
    rows = [dict(panel="CartPole", task="cartpole", method=m, seed=s, episode=e, training_episode=e,
                 cum_avg_return=v, **{"return": v}) for m in ("vanilla", "optex")
            for s, v in enumerate((500.0, 500.0, 470.0)) for e in (1, 2, 3)]
    fig, _ = plotting.rl_curves(pd.DataFrame(rows), {"CartPole": "CartPole"}, ["vanilla", "optex"])
    assert _band_extent(fig.axes[0])[1] <= 500.0
    plt.close(fig)


def test_every_band_in_the_library_and_notebooks_is_shaded_through_the_clipping_helper():
    import ast
    from pathlib import Path

    root = Path(plotting.__file__).resolve().parents[1]
    callers = []
    for path in [*sorted((root / "optex").rglob("*.py")), *sorted((root / "notebooks").glob("*.py"))]:
        tree = ast.parse(path.read_text(), filename=str(path))
        for function in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.Module))]:
            body = function.body if isinstance(function, ast.FunctionDef) else [
                n for n in function.body if not isinstance(n, (ast.FunctionDef, ast.ClassDef))]
            for node in (n for stmt in body for n in ast.walk(stmt)):
                if isinstance(node, ast.Attribute) and node.attr in ("fill_between", "fill_betweenx"):
                    callers.append((path.relative_to(root).as_posix(), getattr(function, "name", "<module>")))
    assert sorted(set(callers)) == [("optex/plotting.py", "fill_band")]


# ------------------------------------------------------------------------------------ overlap notes
def _coinciding_frame(methods):
    return pd.concat([_frame([[1.0, 0.5, 0.2, 0.1], [1.1, 0.6, 0.3, 0.1]]).assign(method=m) for m in methods]
                     + [_frame([[3.0, 2.0, 1.5, 1.2], [3.1, 2.1, 1.6, 1.3]]).assign(method="vanilla")])


@pytest.mark.parametrize("ncols, height, methods, named", [
    (3, plotting.PANEL_HEIGHT_IN, ("target", "optex", "linesearch", "large_batch", "last_gradient"), True),
    (3, plotting.PANEL_HEIGHT_IN, ("target", "optex"), True),
    (2, plotting.PANEL_HEIGHT_IN, ("large_batch_scaled", "vanilla_long"), True),
    (4, 1.5, ("large_batch", "large_batch_scaled", "target", "optex"), False)])  # Fig. 4a's panels: too small
def test_the_overlap_note_lies_between_title_and_axes_and_covers_no_curve(ncols, height, methods, named):
    """Long lists of coinciding methods in panels a third or a quarter of the text width: after
    constrained layout has placed the figure legend, every note lies above its axes and below its title,
    within the axes' width, so that it covers no drawn point; where the names cannot fit, the note
    counts the curves instead."""
    frame = _coinciding_frame(methods)
    fig = plotting.curve_grid(frame.assign(panel="a"), ["a"] * ncols, ncols=ncols, height=height,
                              methods=("vanilla",) + tuple(methods))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        (note,) = [t for child in ax.child_axes for t in child.texts]
        text = note.get_text().replace("\n", " ")
        if named:
            assert all(plotting.method_label(m) in text for m in methods), text
        else:
            assert text == f"{len(methods)} curves coincide"
        box, axes, title = (a.get_window_extent(renderer) for a in (note, ax, ax.title))
        assert axes.y1 < box.y0 and box.y1 <= title.y0 and axes.x0 <= box.x0 and box.x1 <= axes.x1
    assert plotting.covered_data(fig) == []
    plt.close(fig)


def test_when_every_curve_coincides_the_note_says_so_briefly():
    frame = pd.concat([_frame([[1.0, 0.5], [1.1, 0.6]]).assign(method=m) for m in ("vanilla", "target", "optex")])
    fig, ax = plt.subplots()
    plotting.band_plot(ax, frame)
    assert plotting.panel_notes(ax) == ["all curves coincide"]
    plt.close(fig)


def test_panel_titles_are_broken_to_the_panel_width_and_never_overlap():
    assert plotting.fit_title("Sphere", 1.7) == "Sphere"
    assert plotting.fit_title("Acrobot-v1 (d = 4,803)", 1.7) == "Acrobot-v1\n(d = 4,803)"
    assert plotting.fit_title("Fashion-MNIST, SGD 0.01 and more", 1.7) == "Fashion-MNIST, SGD\n0.01 and more"
    cosines = pd.DataFrame(dict(panel=["Acrobot-v1 (d = 4,803)", "MountainCar-v0 (d = 4,547)", "CartPole-v1 (d = 4,610)",
                                       "LunarLander-v3 (d = 5,252)"], step=1, method="optex", median=0.9, q25=0.8, q75=1.0))
    panels = list(cosines["panel"])
    fig = plotting.proxy_cosine_figure(cosines, panels, ("optex",))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [ax.title.get_window_extent(renderer) for ax in fig.axes[:len(panels)]]
    assert all(left.x1 <= right.x0 for left, right in zip(boxes, boxes[1:]))
    plt.close(fig)


# ------------------------------------------------------------------------------- legends and data
def _sweep_frame():
    """Rosenbrock-like ablation rows: six settings whose curves fill the whole panel, as Fig. 6 (d)'s."""
    t = np.arange(41)
    rows = [pd.DataFrame(dict(panel="parallelism", setting=f"n{n}", seed=s, iteration=t,
                              gap=5e6 * np.maximum(np.exp(-n * t / 40.0), 0.02) * (1 + 0.01 * s)))
            for n in (1, 2, 3, 5, 8, 10) for s in (0, 1)]
    return pd.concat(rows, ignore_index=True)


def test_covered_data_finds_a_legend_or_note_over_the_curves_and_save_figure_refuses_it(tmp_path):
    frame = _sweep_frame()
    fig = plotting.sweep_grid(frame, ["parallelism"], {"parallelism": "(d) parallelism"}, plotting.fig6_styles)
    assert plotting.covered_data(fig) == []
    fig.axes[0].legend(loc="center")  # inside, over the curves: what the screenshot review found
    (problem,) = plotting.covered_data(fig)
    assert problem.startswith("the legend of panel 1 covers ") and int(problem.split()[6]) > 0
    with pytest.raises(ValueError, match="legend of panel 1 covers"):
        plotting.save_figure(fig, "covered", frame, tmp_path)
    plt.close(fig)


def test_a_sweep_legend_lies_under_its_panel_clear_of_curves_labels_and_the_next_row():
    frame = pd.concat([_sweep_frame().assign(panel=p) for p in ("a", "b", "c", "d")])
    fig = plotting.sweep_grid(frame, ["a", "b", "c", "d"], {}, plotting.fig6_styles)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    assert plotting.covered_data(fig) == []
    below = fig.axes[3]  # the first panel of the second row
    for ax in fig.axes[:3]:
        legend = ax.get_legend().get_window_extent(renderer)
        label = ax.xaxis.label.get_window_extent(renderer)
        assert legend.y1 <= label.y0 and legend.y0 >= below.title.get_window_extent(renderer).y1
    plt.close(fig)


def test_the_scaling_legend_lies_beside_the_bars():
    summary = pd.DataFrame(dict(setup=["vmap", "distributed", "distributed"], world=[1, 1, 2], threads=1,
                                time_proxy=[0.1, 0.1, 0.1], time_eval=[0.05, 0.1, 0.2], time_update=[0.3, 0.3, 0.3]))
    model = pd.DataFrame(dict(world=[1, 2], predicted_s=[0.5, 0.58]))
    fig, ax = plt.subplots(figsize=(7, 3.8), layout="constrained")
    plotting.scaling_plot(ax, summary, model)
    assert plotting.covered_data(fig) == []
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    assert ax.get_legend().get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1
    plt.close(fig)


def test_best_so_far_on_a_log_grid_starts_at_the_first_positive_time_and_is_even_in_log_time():
    frame = pd.DataFrame(dict(method="m", seed=np.repeat([0, 1], 4), wall_time=[0.0, 0.1, 1.0, 10.0, 0.0, 0.2, 2.0, 8.0],
                              gap=[5.0, 4.0, 2.0, 1.0, 5.0, 3.0, 2.5, 0.5]))
    grid = plotting.best_so_far_on_grid(frame, points=5, log=True)
    times = np.sort(grid["wall_time"].unique())
    assert times[0] == pytest.approx(0.2) and times[-1] == pytest.approx(8.0)
    assert np.allclose(np.diff(np.log(times)), np.log(8.0 / 0.2) / 4)
    # seed 0 at t = 8 has reached 2.0 (its value at 1.0; the 1.0 comes at 10): the best so far, not the next
    assert grid.query("seed == 0 and wall_time == wall_time.max()")["gap"].item() == 2.0
