"""The chapter layer of the synthetic-suite chapters (synthetic, fig2, fig6, cor2): their configs by profile
(and that the paper profile still finds the committed results), and the figures, tables and readings of
optex.chapters on small runs of the synthetic runner, checked against the tidy rows directly."""
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from optex import book, chapters, report, tables
from optex.analysis import speedup_table
from optex.experiments import cor2, fig2, fig6, synthetic
from optex.results import config_hash

ROOT = Path(__file__).resolve().parents[1]


def _page(**kwargs):
    return report.Page(profile="quick", root=ROOT, overrides={}, **kwargs)


@pytest.fixture
def published(monkeypatch):
    """The tables a chapter publishes: name -> (table, caption)."""
    seen = {}
    monkeypatch.setattr(tables, "publish", lambda table, name, caption: seen.setdefault(name, (table, caption)))
    return seen


# ------------------------------------------------------------------------------------------------ configs
def test_synthetic_chapter_configs_are_one_per_function_at_the_profiles_size():
    configs = synthetic.chapter_configs(_page(), ["sphere", "rosenbrock"], 5, 0.01, 100.0)
    paper, quick = configs("paper"), configs("quick")
    assert [(c.function, c.clip) for c in paper] == [("sphere", None), ("rosenbrock", 100.0)]
    assert {(c.dim, c.iterations, len(c.seed_list)) for c in paper} == {(10_000, 60, 5)}
    assert {(c.dim, c.iterations, len(c.seed_list)) for c in quick} == {(1_000, 20, 3)}
    assert all(c.methods == synthetic.CHAPTER_METHODS and (c.parallelism, c.lr) == (5, 0.01) for c in paper + quick)
    knobs = synthetic.chapter_configs(_page(seeds=[4]), ["levy"], 3, 0.1, None, dim=30, iterations=7)
    assert {(c.dim, c.iterations, c.parallelism, tuple(c.seed_list)) for p in report.PROFILES for c in knobs(p)} == {
        (30, 7, 3, (4,))}


def test_fig2_chapter_configs_leave_the_10x_panel_out_of_the_noisy_suite():
    panels = ["sphere", "ackley-10x"]
    deterministic, noisy = fig2.chapter_configs(_page(), panels, 4, 0.02, [1.0, 0.1])
    (config,) = deterministic("paper")
    assert (config.panels, config.methods, config.parallelism, config.lr, config.noise_ratio) == (
        ("sphere", "ackley-10x"), fig2.CHAPTER_METHODS, 4, 0.02, 0.0)
    assert config.synthetic_configs()["ackley-10x"].dim == 10 * fig2.PROFILES["paper"]["dim"]
    assert [(c.panels, c.methods, c.noise_ratio) for c in noisy("quick")] == [
        (("sphere",), fig2.NOISY_METHODS, 1.0), (("sphere",), fig2.NOISY_METHODS, 0.1)]
    assert noisy("quick")[0].seeds == 2 and noisy("paper")[0].seeds == 5


@pytest.mark.parametrize("make, match", [
    (lambda: fig2.chapter_configs(_page(), ["sphere"], 5, 0.01, []), "noise_ratios"),
    (lambda: fig2.chapter_configs(_page(), ["sphere"], 5, 0.01, [0.0]), "noise_ratios"),
    (lambda: fig2.chapter_configs(_page(), ["cube"], 5, 0.01, [0.1]), "panels"),
    (lambda: synthetic.chapter_configs(_page(), [], 5, 0.01, None), "functions"),
    (lambda: fig6.chapter_configs(_page(), ["best"], [5], [1, 2], 1e-6), "select"),
    (lambda: cor2.chapter_configs(_page(), [], 0.1, 0.05, 0.01, 0.05), "panels"),
    (lambda: cor2.chapter_configs(_page(), ["quadratic"], 0.1, 0.05, 0.01, 1.5), "target_ratio"),
])
def test_a_bad_chapter_parameter_fails_when_the_configs_are_made(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_fig6_picard_config_is_the_rosenbrock_panel_on_torch_with_the_picard_methods():
    ablations, picard = fig6.chapter_configs(_page(), ["last"], [5, 50], [1, 5], 1e-4)
    (config,) = picard("paper")
    assert (config.function, config.parallelism, config.history, config.backend) == ("rosenbrock", 5, 50, "torch")
    assert (config.methods, config.picard_tol, config.clip) == (fig6.PICARD_METHODS, 1e-4, fig2.ROSENBROCK_CLIP)
    (sweep,) = ablations("quick")
    assert (sweep.selects, sweep.histories, sweep.parallelisms, sweep.seeds) == (("last",), (5, 50), (1, 5), 2)


def test_cor2_chapter_config_takes_the_profiles_seeds_unless_the_page_sets_them():
    (paper,) = cor2.chapter_configs(_page(), ["quadratic"], 0.2, 0.03, 0.02, 0.1)("paper")
    assert (paper.panels, paper.quadratic_noise, paper.quadratic_lr, paper.lr, paper.target_ratio) == (
        ("quadratic",), 0.2, 0.03, 0.02, 0.1)
    assert paper.seeds == cor2.PROFILES["paper"]["seeds"]
    (quick,) = cor2.chapter_configs(_page(seeds=[3, 4]), ["quadratic"], 0.2, 0.03, 0.02, 0.1)("quick")
    assert quick.seeds == (3, 4) and quick.unit_configs()[0].seed_list == [3, 4]


def _paper_configs(name):
    p = book.chapter_defaults(ROOT, name)
    page = report.Page(profile="paper", root=ROOT, overrides={}, seeds=p["seeds"])
    if name == "synthetic":
        configs = synthetic.chapter_configs(page, p["functions"], p["parallelism"], p["lr"], p["rosenbrock_clip"],
                                            dim=p["dim"], iterations=p["iterations"])
        return {synthetic.CHAPTER_ID: configs("paper")}
    if name == "fig2":
        configs, noisy = fig2.chapter_configs(page, p["panels"], p["parallelism"], p["lr"], p["noise_ratios"])
        return {"fig2": configs("paper"), "fig2-noisy": noisy("paper")}
    if name == "fig6":
        configs, picard = fig6.chapter_configs(page, p["selects"], p["histories"], p["parallelisms"], p["picard_tol"])
        return {"fig6": configs("paper"), "fig6-picard": picard("paper")}
    configs = cor2.chapter_configs(page, p["panels"], p["quadratic_noise"], p["quadratic_lr"], p["lr"],
                                   p["target_ratio"])
    return {cor2.FIGURE_ID: configs("paper")}


@pytest.mark.parametrize("name", ["synthetic", "fig2", "fig6", "cor2"])
def test_the_paper_profile_of_each_chapter_is_the_committed_results(name):
    for figure_id, configs in _paper_configs(name).items():
        units = [u for c in configs for u in (c.unit_configs() if hasattr(c, "unit_configs") else [c])]
        committed = {p.name for p in (ROOT / "results" / figure_id).iterdir() if p.is_dir()}
        assert {config_hash(u) for u in units} == committed, figure_id


# ------------------------------------------------------------------------------- chapters on small runs
FUNCTIONS = ["sphere", "rosenbrock"]
N, T = 3, 8


def _run(function, **settings):
    config = synthetic.Config(function=function, dim=40, iterations=T, seeds=2, parallelism=N, history=10,
                              clip=100.0 if function == "rosenbrock" else None, **settings)
    return synthetic.run(config, results_dir=None, progress=False)


@pytest.fixture(scope="module")
def demo():
    return pd.concat([_run(f) for f in FUNCTIONS], ignore_index=True)


def test_synthetic_chapter_glues_the_speedups_of_its_rows(demo, published, tmp_path):
    results = report.Results("synthetic-demo", demo, "quick", "quick", stores=[])
    chapter = chapters.SyntheticChapter(results, FUNCTIONS, N, figures_dir=tmp_path)
    assert chapter.settings() == {"synthetic-n": N, "synthetic-sqrt-n": math.sqrt(N)}
    glued = chapter.speedup_tables()
    speed = speedup_table(demo)
    optex = speed.loc[speed["method"] == "optex", "speedup"]
    assert glued["synthetic-demo-optex-range"] == tables.format_range(optex.min(), optex.max(), 1, "×",
                                                                      equal="on every function")
    assert glued["synthetic-demo-target-min"] == speed.loc[speed["method"] == "target", "speedup"].min()
    assert glued["synthetic-demo-profile"] == "quick"
    assert list(published) == ["synthetic-demo-speedups", "synthetic-demo-effective"]
    titles = [c.title for c in published["synthetic-demo-speedups"][0].columns]
    assert titles[0] == "Function" and not any("_" in t for t in titles)  # human names, not column keys
    (name, fig), = chapter.curves().items()
    assert name == "synthetic-demo" and isinstance(fig, Figure) and len(fig.axes) >= len(FUNCTIONS)
    assert len(pd.read_csv(tmp_path / "synthetic-demo.csv")) == len(demo)


@pytest.fixture(scope="module")
def fig2_rows(demo):
    return demo.assign(panel=demo["function"], noise_ratio=0.0, dim=40)  # the columns fig2.run adds


@pytest.fixture
def fig2_chapter(fig2_rows, tmp_path):
    results = report.Results("fig2", fig2_rows, "quick", "quick", stores=[])
    return chapters.Fig2Chapter(results, FUNCTIONS, N, figures_dir=tmp_path)


def test_fig2_chapter_glues_the_ceiling_speedups_and_wall_time_of_its_rows(fig2_chapter, fig2_rows, published,
                                                                         tmp_path):
    glued = fig2_chapter.speedup_tables()
    ceiling = 1 + math.ceil((T - 1) / N)
    assert (glued["fig2-ceiling-iterations"], glued["fig2-ceiling"]) == (ceiling, T / ceiling)
    speed = speedup_table(fig2_rows)
    mean = speed.groupby(["panel", "method"])["speedup"].mean().unstack()
    assert glued["fig2-linesearch-ahead"] == int((mean["linesearch"] >= mean["optex"]).sum())
    assert glued["fig2-panels"] == len(FUNCTIONS)
    assert glued["fig2-target-min"] == speed.loc[speed["method"] == "target", "speedup"].min()
    assert glued["fig2-verdict-2x"] in report.VERDICTS and glued["fig2-verdict-target"] in report.VERDICTS
    assert list(published) == ["fig2-speedups", "fig2-effective"]
    # a panel is named as the report names it (never a code name such as "ackley-10x")
    assert [row[0] for row in published["fig2-speedups"][0].cells()][:1] == [report.panel_title(FUNCTIONS[0])]
    wall = fig2_chapter.wallclock()
    # time on a log axis, so that the short Vanilla runs are not squeezed against its left edge
    assert {ax.get_xscale() for ax in wall["fig2-wallclock"].axes if ax.get_visible() and ax.lines} == {"log"}
    last = fig2_rows[fig2_rows["iteration"] == T].groupby(["panel", "method"])["wall_time"].mean().unstack()
    assert wall["fig2-wall-ratio"] == pytest.approx(float((last["optex"] / last["vanilla"]).median()))
    assert isinstance(wall["fig2-wallclock"], Figure)
    assert {p.name for p in tmp_path.glob("fig2-wallclock.*")} == {f"fig2-wallclock.{s}" for s in ("svg", "png", "csv",
                                                                                                 "json")}
    # The record names the results' own figure id, under which `book verify` checks the committed files.
    assert json.loads((tmp_path / "fig2-wallclock.json").read_text())["figure_id"] == "fig2"


def test_fig2_chapter_counts_the_noisy_cases_where_optex_beats_the_large_batch(fig2_chapter, published):
    rows = pd.concat([_run("sphere", grad_noise=sigma, methods=fig2.NOISY_METHODS).assign(panel="sphere", noise_ratio=r)
                      for r, sigma in ((0.1, 0.05), (1.0, 0.5))], ignore_index=True)
    noisy = report.Results("fig2-noisy", rows, "quick", "quick", stores=[])
    glued = fig2_chapter.noisy(noisy, [1.0, 0.1])
    final = rows[rows["iteration"] == T].groupby(["noise_ratio", "method"])["gap"].mean().unstack()
    assert glued["fig2-noisy-cases"] == 2
    assert glued["fig2-noisy-optex-wins"] == int((final["optex"] < final["large_batch"]).sum())
    shown = published["fig2-noisy-table"][0]
    assert shown.columns[0].title == "Noise level (× RMS gradient)"
    assert list(shown.frame["noise_ratio"].drop_duplicates()) == [0.1, 1.0]  # the levels in increasing order
    effective = published["fig2-noisy-effective"][0]
    assert [c.title for c in effective.columns][:4] == ["Noise level (× RMS gradient)", "Function", "Method",
                                                        "Sequential iteration $t$"]
    assert {row[0] for row in effective.cells()} == {"0.1", "1"} and {row[2] for row in effective.cells()} == {
        "OptEx", "LargeBatch"}
    assert isinstance(glued["fig2-noisy"], Figure)


def test_fig6_chapter_reads_picards_steps_per_round_from_its_rows(tmp_path):
    config = synthetic.Config(function="rosenbrock", dim=40, iterations=6, seeds=2, parallelism=N, history=10,
                              clip=100.0, methods=fig6.PICARD_METHODS)
    rows = synthetic.run(config, results_dir=None, progress=False)
    chapter = chapters.Fig6Chapter(report.Results("fig6", pd.DataFrame(), "quick", "quick", []), figures_dir=tmp_path)
    glued = chapter.picard(report.Results("fig6-picard", rows, "quick", "quick", stores=[]))
    steps = rows[(rows["method"] == "picard") & (rows["iteration"] == 6)]["steps"].mean()
    assert glued["fig6-picard-rounds"] == 6 and glued["fig6-picard-steps"] == pytest.approx(steps)
    assert glued["fig6-picard-vs-vanilla"] == pytest.approx(steps / 6)
    assert 1.0 <= glued["fig6-picard-vs-vanilla"] <= N  # at least the exact first iterate, at most the window
    assert glued["fig6-picard-error"] == pytest.approx(rows["trajectory_error"].max())
    assert glued["fig6-picard-error-text"] == tables.significant(rows["trajectory_error"].max(), 2)
    pace = glued["fig6-picard-vs-vanilla"]
    assert glued["fig6-picard-pace"] == ("exactly Vanilla's one step per round: on this problem its parallel "
                                         "evaluations bought nothing" if pace == pytest.approx(1.0, abs=1e-9)
                                         else f"{tables.fixed(pace, 2)} times Vanilla's one step per round")
    assert (tmp_path / "fig6-picard.csv").is_file()


def test_cor2_largest_n_is_said_in_words_with_none_where_no_n_converges():
    assert chapters._n_text(np.inf) == chapters._n_text(np.nan) == "none"
    assert chapters._n_text(8.0) == "8"


def test_fig6_effective_speedup_of_panel_d_reads_the_long_vanilla_run():
    # Vanilla halves its log-gap every 10 iterations, N = 2 twice as fast and N = 4 so until it plateaus at
    # t = 5: the effective speedup is 2 at every t for N = 2, and Vanilla's iterations to the plateau over t
    # for N = 4 (4 at t = 5, 2 at t = 10): a plateau, not the parallelism, then sets it.
    t = np.arange(21)
    rows = []
    for seed in (0, 1):
        rows.append(pd.DataFrame(dict(panel="parallelism", setting="N=1", seed=seed, iteration=t, gap=np.exp(-0.1 * t))))
        rows.append(pd.DataFrame(dict(panel="parallelism", setting="N=2", seed=seed, iteration=t, gap=np.exp(-0.2 * t))))
        rows.append(pd.DataFrame(dict(panel="parallelism", setting="N=4", seed=seed, iteration=t,
                                      gap=np.exp(-0.4 * np.minimum(t, 5)))))
        long = np.arange(41)
        rows.append(pd.DataFrame(dict(panel="reference", setting="vanilla_long", seed=seed, iteration=long,
                                      gap=np.exp(-0.1 * long))))
    frame = pd.concat(rows, ignore_index=True)
    chapter = chapters.Fig6Chapter(report.Results("fig6", frame, "quick", "quick", []))
    assert chapter.reference_factor == 2
    table = chapter.parallelism_effective().set_index(["N", "iteration"])
    assert sorted(table.index) == [(2, 10), (2, 20), (4, 10), (4, 20)]
    assert table.loc[(2, 20), "effective_speedup"] == pytest.approx(2.0)
    assert table.loc[(4, 10), "effective_speedup"] == pytest.approx(2.0)
    assert table.loc[(4, 20), "effective_speedup"] == pytest.approx(1.0)
    assert (table["censored"] == 0).all()
