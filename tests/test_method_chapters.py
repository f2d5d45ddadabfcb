"""The chapter layer of the method, theory and scaling chapters (fig1, estimator, thm1, scaling): their
configs by profile (and that the paper profile still finds the committed results), and the figures, tables
and glued numbers of optex.method_chapters on the committed results, against the tidy data read directly."""
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from optex import book, method_chapters, report, tables
from optex.experiments import estimator, fig1, scaling, thm1
from optex.results import config_hash

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = {"thm1": thm1, "estimator": estimator, "fig1": fig1, "scaling": scaling}
KNOBS = {"thm1": ("dim", "gp_lengthscale", "grad_noise", "delta", "fit_from"),
         "estimator": ("function", "field_histories", "kernel", "lengthscale", "noise"),
         "fig1": ("functions", "parallelism", "lr", "shown_iteration", "animate"), "scaling": ("parallelism", "worlds")}


def _page(**kwargs):
    return report.Page(root=ROOT, overrides={}, **kwargs)


def _chapter_configs(name):
    """The chapter's configs by profile, from its parameters cell as the notebook builds them."""
    p = book.chapter_defaults(ROOT, name)
    page = _page(profile=p["profile"], device=p["device"], backend=p["backend"], seeds=p["seeds"])
    return p, EXPERIMENTS[name].chapter_configs(page, **{k: p[k] for k in KNOBS[name]})


# ------------------------------------------------------------------------------------------------ configs
def test_thm1_configs_carry_the_chapters_settings_and_the_profiles_sizes():
    configs = thm1.chapter_configs(_page(seeds=[4, 6], backend="torch"), dim=3, gp_lengthscale=0.25, grad_noise=0.2,
                                   delta=0.1)
    for profile in report.PROFILES:
        (config,) = configs(profile)
        assert (config.dim, config.gp_lengthscale, config.grad_noise, config.delta) == (3, 0.25, 0.2, 0.1)
        assert config.histories == thm1.PROFILES[profile]["histories"] and config.seed_list == [4, 6]
        assert config.sources == thm1.SOURCES and config.backend == "torch"
    assert len(thm1.chapter_configs(_page())("paper")[0].seed_list) == thm1.PROFILES["paper"]["seeds"]
    with pytest.raises(ValueError, match="delta"):
        thm1.chapter_configs(_page(), delta=1.5)


def test_estimator_configs_take_the_field_histories_as_a_tuple_and_check_them_first():
    configs = estimator.chapter_configs(_page(), "levy", [5, 50], kernel="rbf", lengthscale=0.3, noise=1e-2)
    for profile in report.PROFILES:
        (config,) = configs(profile)
        assert (config.function, config.field_histories, config.kernel) == ("levy", (5, 50), "rbf")
        assert (config.lengthscale, config.noise, config.grid) == (0.3, 1e-2, estimator.PROFILES[profile]["grid"])
    with pytest.raises(ValueError, match="field_histories must be a non-empty list"):
        estimator.chapter_configs(_page(), field_histories=[])
    with pytest.raises(ValueError, match="kernel"):
        estimator.chapter_configs(_page(), kernel="no-such-kernel")


def test_fig1_and_scaling_configs_follow_the_profile_with_the_chapters_knobs():
    traces = fig1.chapter_configs(_page(), ["ackley"], parallelism=3, lr=0.1)
    assert [(c.functions, c.parallelism, c.lr, c.iterations) for c in traces("paper") + traces("quick")] == [
        (("ackley",), 3, 0.1, 30), (("ackley",), 3, 0.1, 12)]
    with pytest.raises(ValueError, match="functions must be a non-empty list"):
        fig1.chapter_configs(_page(), "rosenbrock")
    with pytest.raises(ValueError, match="parallelism"):
        fig1.chapter_configs(_page(), parallelism=1)
    timed = scaling.chapter_configs(_page(), parallelism=8, worlds=[1, 2, 4])
    assert [(c.parallelism, c.worlds, c.width) for c in timed("paper") + timed("quick")] == [
        (8, (1, 2, 4), 512), (8, (1, 2, 4), 64)]


def _never_run(*args, **kwargs):
    raise AssertionError("the runner was called: a bad parameter must fail before any result is read or computed")


@pytest.mark.parametrize("name, change, match", [
    ("thm1", dict(fit_from=0), "fit_from must be a positive integer"),
    ("thm1", dict(fit_from=True), "fit_from must be a positive integer"),
    ("thm1", dict(fit_from=2048), "fit_from must leave at least two history sizes"),
    ("fig1", dict(animate="yes"), "animate must be True or False"),
    ("fig1", dict(shown_iteration=2), "shown_iteration must be an integer from 3"),
    ("fig1", dict(shown_iteration=10_000), "shown_iteration must be an integer from 3 to 30")])
def test_a_chapters_bad_value_fails_where_its_configs_are_built_before_any_run(name, change, match, monkeypatch):
    """As the notebook runs: the parameters cell's values into chapter_configs, then Page.results. The
    runner is replaced by one that fails, so the error must come from chapter_configs, naming the value."""
    experiment = EXPERIMENTS[name]
    monkeypatch.setattr(experiment, "run", _never_run)
    p = {**book.chapter_defaults(ROOT, name), **change}
    page = _page(profile="quick", device=p["device"], backend=p["backend"], seeds=p["seeds"])
    with pytest.raises(ValueError, match=match):
        configs = experiment.chapter_configs(page, **{k: p[k] for k in KNOBS[name]})
        page.results(experiment.FIGURE_ID, experiment.run, configs)
    source = (ROOT / "notebooks" / f"{name}.py").read_text()
    call = next(line for line in source.splitlines() if f"{name}.chapter_configs(" in line)
    assert all(knob in call for knob in KNOBS[name]), call  # the notebook passes every knob to chapter_configs
    assert source.index(call) < source.index("page.results(")


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_the_paper_profile_of_each_chapter_is_the_committed_results(name):
    _, configs = _chapter_configs(name)
    committed = {p.name for p in (ROOT / "results" / EXPERIMENTS[name].FIGURE_ID).iterdir() if p.is_dir()}
    assert {config_hash(c) for c in configs("paper")} == committed


# ------------------------------------------------------------------------------- the committed results
@pytest.fixture(scope="module")
def committed():
    """Per chapter: its parameters, its paper configs and the committed results they read."""
    out = {}
    for name, experiment in EXPERIMENTS.items():
        p, configs = _chapter_configs(name)
        results = _page(profile="paper", seeds=p["seeds"]).results(experiment.FIGURE_ID, experiment.run, configs)
        assert results.profile == "paper", results.missing  # never the quick fallback
        out[name] = (p, configs("paper"), results)
    return out


@pytest.fixture
def published(monkeypatch):
    """The tables a chapter publishes: name -> (table, caption)."""
    seen = {}
    monkeypatch.setattr(tables, "publish", lambda table, name, caption: seen.setdefault(name, (table, caption)))
    return seen


def _titles(table):
    return [c.title for c in table.columns]


# ------------------------------------------------------------------------------------------------ Thm. 1
@pytest.fixture
def thm1_chapter(committed, tmp_path):
    p, configs, results = committed["thm1"]
    return method_chapters.Thm1Chapter(results, configs, p["fit_from"], figures_dir=tmp_path)


def test_thm1_findings_are_the_tidy_datas_numbers(thm1_chapter, committed):
    p, _, results = committed["thm1"]
    gp = results.frame[results.frame["kind"] == "gp"]
    values = thm1_chapter.findings()
    d, delta = p["dim"], p["delta"]
    assert values["thm1-beta"] == pytest.approx(d + 2 * math.sqrt(d * math.log(1 / delta)) + 2 * math.log(1 / delta))
    assert values["thm1-confidence"] == pytest.approx(1 - delta)
    lowest = gp.groupby("source")["coverage"].min().min()
    assert values["thm1-gp-coverage-min"] == pytest.approx(lowest)
    assert values["thm1-bound-verdict"] == ("so the bound holds" if lowest >= 1 - delta else
                                            "so on some fields the bound fails more often than the theorem allows")
    largest = gp["history"].max()
    assert values["thm1-largest-history"] == largest
    at_largest = gp[gp["history"] == largest]
    ratios = [g["error"].mean() / (g["std"] * np.sqrt(g["dim"])).mean() for _, g in at_largest.groupby("source")]
    calibration = (values["thm1-calibration-low"], values["thm1-calibration-high"])
    assert calibration == pytest.approx((min(ratios), max(ratios)))
    tail = gp[(gp["source"] == "gp-rbf") & (gp["history"] >= largest / 2)]
    slopes = [-np.polyfit(np.log(g["history"]), np.log(g["error"]), 1)[0] for _, g in tail.groupby("seed")]
    assert values["thm1-rbf-tail-exponent"] == pytest.approx(np.mean(slopes))
    assert {f"thm1-{k}-tail-exponent" for k in thm1.GP_KERNELS} <= set(values)


def test_thm1_exponent_table_names_every_field_and_glues_its_exponents(thm1_chapter, committed, published):
    p, _, results = committed["thm1"]
    values = thm1_chapter.exponent_table()
    table, caption = published["thm1-exponents"]
    assert _titles(table) == ["Field", "Error exponent (95% interval)", "Std exponent (95% interval)",
                              "Cor. 1 (reconstructed)", "Lowest coverage of the bound"]
    assert list(table.frame["field"]) == [method_chapters.THM1_LABELS[s] for s in thm1.SOURCES]
    assert f"$T \\ge$ {p['fit_from']}" in caption and f"{1 - p['delta']:.2f}" in caption
    fitted = thm1.decay_exponents(results.frame, "error", p["fit_from"]).set_index("source")
    assert values["thm1-matern52-error-exponent"] == pytest.approx(fitted.loc["gp-matern52", "exponent"])
    coverage = results.frame.groupby("source")["coverage"].min()
    assert values["thm1-rosenbrock-coverage"] == pytest.approx(coverage["rosenbrock"])
    assert values["thm1-fit-from"] == p["fit_from"]


def test_thm1_figures_are_saved_with_their_rows(thm1_chapter, committed, tmp_path):
    _, _, results = committed["thm1"]
    (name, fig), = thm1_chapter.error_figure().items()
    assert name == "thm1" and isinstance(fig, Figure)
    assert len(pd.read_csv(tmp_path / "thm1.csv")) == (results.frame["kind"] == "gp").sum()
    glued = thm1_chapter.synthetic_figure()
    assert len(pd.read_csv(tmp_path / "thm1-synthetic.csv")) == (results.frame["kind"] == "synthetic").sum()
    rosenbrock = results.frame.loc[results.frame["source"] == "rosenbrock", "coverage"].min()
    assert glued["thm1-rosenbrock-coverage-pct"] == pytest.approx(100 * rosenbrock)


@pytest.mark.parametrize("fit_from", [0, True, 2.5])
def test_thm1_chapter_refuses_a_bad_fit_from(committed, fit_from):
    _, configs, results = committed["thm1"]
    with pytest.raises(ValueError, match="fit_from must be a positive integer"):
        method_chapters.Thm1Chapter(results, configs, fit_from)


# -------------------------------------------------------------------------------------------- estimator
@pytest.fixture
def estimator_chapter(committed, tmp_path):
    _, configs, results = committed["estimator"]
    return method_chapters.EstimatorChapter(results, configs, figures_dir=tmp_path)


def test_estimator_field_numbers_are_the_relative_errors_of_the_smallest_and_largest_history(estimator_chapter,
                                                                                           committed, tmp_path):
    p, _, results = committed["estimator"]
    values = estimator_chapter.field_figure()
    assert values["estimator-function"] == p["function"].capitalize()
    sizes = sorted(p["field_histories"])
    assert (values["estimator-size-first"], values["estimator-size-last"]) == (sizes[0], sizes[-1])
    field = results.frame[(results.frame["part"] == "field") & (results.frame["history"] == sizes[0])]
    errors = []
    for _, g in field.groupby("seed"):
        squared = (g["est_x"] - g["true_x"]) ** 2 + (g["est_y"] - g["true_y"]) ** 2
        errors.append(math.sqrt(squared.mean() / (g["true_x"] ** 2 + g["true_y"] ** 2).mean()))
    assert values["estimator-error-first"] == pytest.approx(np.mean(errors))
    assert values["estimator-error-last"] < values["estimator-error-first"]  # the surrogate learns
    first_seed = field["seed"].min()
    shown = results.frame[(results.frame["part"] == "field") & (results.frame["seed"] == first_seed)]
    assert len(pd.read_csv(tmp_path / "estimator.csv")) == len(shown)


def test_estimator_prop41_table_holds_one_row_per_kernel_at_rounding_level(estimator_chapter, committed, published):
    _, _, results = committed["estimator"]
    values = estimator_chapter.prop41_table()
    prop = results.frame[results.frame["part"] == "prop41"]
    table, _ = published["estimator-prop41"]
    assert _titles(table) == ["Kernel", *method_chapters.PROP41_COLUMNS.values()]
    assert sorted(table.frame["kernel"]) == sorted(prop["kernel"].unique())
    assert {row[0] for row in table.cells()} <= set(method_chapters.KERNEL_LABELS.values())  # readers' names
    assert values["estimator-prop41-max-text"] == tables.significant(values["estimator-prop41-max"], 2)
    assert values["estimator-prop41-cases"] == len(prop)
    assert values["estimator-prop41-max"] == prop[list(method_chapters.PROP41_COLUMNS)].abs().to_numpy().max() < 1e-8
    assert (values["estimator-prop41-dim"], values["estimator-prop41-history"]) == (prop["dim"].max(),
                                                                                    prop["history"].max())
    assert values["estimator-prop41-speed"] > 1  # the dense solve is the slower one


def test_estimator_cost_numbers_are_the_fitted_model_in_the_proses_units(estimator_chapter, committed, tmp_path):
    _, configs, results = committed["estimator"]
    figure = estimator_chapter.cost_figure()
    assert figure["estimator-cost-n"] == configs[0].cost_parallelism
    assert (tmp_path / "estimator-cost.csv").is_file()
    values = estimator_chapter.cost_fit()
    coefficients, _ = estimator.cost_model(results.frame)
    coef = coefficients.set_index(["operation", "term"])["coefficient"]
    assert values["estimator-cost-t3-ns"] == pytest.approx(coef["update", "T0^3"] * 1e9)
    assert values["estimator-cost-overhead-us"] == pytest.approx(coef["estimate", "constant"] * 1e6)
    cost = results.frame[results.frame["part"] == "cost"]
    big = cost[cost["dim"] == cost["dim"].max()]
    big = big[big["history"] == big["history"].max()]
    assert (values["estimator-cost-big-dim"], values["estimator-cost-big-history"]) == (cost["dim"].max(),
                                                                                        big["history"].iloc[0])
    assert values["estimator-cost-big-ms"] == pytest.approx(big["estimate_s"].iloc[0] * 1e3)


# ------------------------------------------------------------------------------------------------ Fig. 1
def test_fig1_drift_table_and_gaps_are_the_traces_numbers(committed, tmp_path, published):
    p, configs, results = committed["fig1"]
    chapter = method_chapters.Fig1Chapter(results, configs, p["shown_iteration"], animate=False, figures_dir=tmp_path)
    values = chapter.drift_table()
    trace = results.frame
    last = configs[0].iterations
    assert values["fig1-iterations"] == last == trace["iteration"].max()
    final = trace[(trace["kind"] == "iterate") & (trace["iteration"] == last)]
    for row in final.itertuples():
        assert values[f"fig1-{row.function}-{row.method}-gap"] == pytest.approx(row.gap)
    drift = report.proxy_drift(trace, method_chapters.FIRST_DRAWN)
    optex = drift[(drift["function"] == "ackley") & (drift["method"] == "optex")]["drift"]
    assert values["fig1-ackley-optex-drift"] == pytest.approx(optex.median())
    table, _ = published["fig1-drift-table"]
    assert _titles(table) == ["Function", "Method", "Median relative drift", f"Gap after {last} iterations"]
    target = table.frame[table.frame["method"] == "target"]["drift"]
    assert len(target) == len(p["functions"]) and (target.abs() < 1e-9).all()  # Target follows the exact path
    glued = chapter.iteration_figure()
    assert (glued["fig1-iteration"], glued["fig1-n"]) == (p["shown_iteration"], p["parallelism"])
    shown = trace[trace["iteration"] == p["shown_iteration"]]
    assert len(pd.read_csv(tmp_path / "fig1.csv")) == len(shown)
    assert chapter.animation() == []


@pytest.mark.parametrize("shown_iteration, animate, match", [
    (2, True, "shown_iteration must be an integer from 3"), (10_000, True, "shown_iteration"),
    (True, True, "shown_iteration"), (8, "yes", "animate must be True or False")])
def test_fig1_chapter_refuses_an_iteration_outside_the_trace(committed, shown_iteration, animate, match):
    _, configs, results = committed["fig1"]
    with pytest.raises(ValueError, match=match):
        method_chapters.Fig1Chapter(results, configs, shown_iteration, animate)


# ---------------------------------------------------------------------------------------------- scaling
def test_scaling_numbers_are_the_timings_read_directly(committed, tmp_path, published):
    p, configs, results = committed["scaling"]
    chapter = method_chapters.ScalingChapter(results, configs, figures_dir=tmp_path)
    frame = results.frame
    dim = int(frame["dim"].iloc[0])
    assert chapter.settings() == {"scaling-d": f"{dim:,}", "scaling-n": p["parallelism"],
                                  "scaling-megabytes": f"{p['parallelism'] * dim * 4 / 1e6:.1f}",
                                  "scaling-load": f"{frame['load_average'].max():.1f}"}
    one = frame[(frame["setup"] == "distributed") & (frame["world"] == 1)]
    proxy, evaluation, update = (one[c].median() for c in scaling.TIMES)
    assert chapter.model_table() == {"scaling-serial": f"{100 * (proxy + update) / (proxy + evaluation + update):.0f}"}
    chapter.times_table()
    times, _ = published["scaling-times"]
    assert len(times.frame) == len(configs[0].units())
    assert _titles(times)[:2] == ["Setup", "Proxy steps (ms)"]
    model, _ = published["scaling-model"]
    assert "Measured (ms)" in _titles(model)
    assert list(chapter.figure()) == ["scaling"] and (tmp_path / "scaling.csv").is_file()
    assert chapter.model_reading().data == scaling.model_reading(scaling.cost_model(frame))


def test_a_chapter_runs_from_exactly_one_config(committed):
    _, configs, results = committed["scaling"]
    with pytest.raises(ValueError, match="exactly one config"):
        method_chapters.ScalingChapter(results, configs * 2)
