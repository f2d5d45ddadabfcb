"""The chapter layer of the neural-network and RL chapters: their configs by profile (and that the paper
profile still finds the committed results), the settings their prose glues, and each figure, table and
reading of optex.chapters on small tidy tables computed by hand."""
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from optex import book, chapters, plotting, report, tables
from optex.experiments import fig4b, rl, training

ROOT = Path(__file__).resolve().parents[1]
STAGED = Path(os.environ.get("OPTEX_DATA_DIR", ROOT / "../shared/data")).resolve()
needs_data = pytest.mark.skipif(not (STAGED / "MNIST").is_dir(), reason=f"no staged datasets in {STAGED}")
OPTIMIZERS = {"sgd": 0.01, "adam": 1e-3}


def _page(**kwargs):
    return report.Page(profile="quick", root=ROOT, overrides={}, **kwargs)


# ------------------------------------------------------------------------------------------------ configs
def test_chapter_configs_are_datasets_by_optimizers_at_the_profiles_size_and_seeds():
    configs = training.chapter_configs("mnist", _page(), OPTIMIZERS, 4)
    paper = configs("paper")
    assert [(c.dataset, c.optimizer, c.lr) for c in paper] == [
        ("mnist", "sgd", 0.01), ("mnist", "adam", 1e-3), ("fashion_mnist", "sgd", 0.01), ("fashion_mnist", "adam", 1e-3)]
    assert [len(c.seed_list) for c in paper] == [5, 3, 5, 3]
    assert {(c.width, c.depth, c.batch_size, c.iterations, c.eval_every) for c in paper} == {(128, 5, 64, 300, 20)}
    quick = configs("quick")
    assert {(c.width, c.iterations, c.train_subset, len(c.seed_list)) for c in quick} == {(32, 12, 1000, 2)}
    assert all(c.methods == training.CHAPTER_METHODS and c.parallelism == 4 for c in paper + quick)


def test_chapter_configs_apply_knobs_and_page_seeds_to_both_profiles():
    configs = training.chapter_configs("fig4a", _page(seeds=[7, 9]), {"adam": 3e-4}, 3, width=6, iterations=5,
                                       parallel="loop")
    for profile in report.PROFILES:
        (config,) = configs(profile)
        assert (config.dataset, config.model, config.optimizer, config.lr) == ("cifar10", "cnn", "adam", 3e-4)
        assert (config.width, config.iterations, config.parallelism, config.parallel) == (6, 5, 3, "loop")
        assert config.seed_list == [7, 9]


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="mnist", datasets=[]), "datasets must be a non-empty list"),
    (dict(name="mnist", optimizers={}), "optimizers must map"),
    (dict(name="mnist", width=-3), "width"),
    (dict(name="no-such-chapter"), "chapter"),
])
def test_a_bad_chapter_parameter_fails_when_the_configs_are_made(kwargs, match):
    arguments = dict(dict(name="mnist", optimizers=OPTIMIZERS), **kwargs)
    with pytest.raises(ValueError, match=match):
        training.chapter_configs(arguments.pop("name"), _page(), arguments.pop("optimizers"), 4, **arguments)


def test_text_and_rl_chapter_configs_check_their_own_parameters():
    with pytest.raises(ValueError, match="sample_seed"):
        fig4b.chapter_configs(_page(), OPTIMIZERS, 4, sample_seed=3)  # the paper profile has seeds 0, 1, 2
    configs, sweep = fig4b.chapter_configs(_page(), OPTIMIZERS, 4, sample_seed=2)
    assert len(sweep("paper")) == len(fig4b.COSINE_SIZES) * len(OPTIMIZERS)
    assert {c.methods for c in sweep("quick")} == {fig4b.SURROGATE_METHODS}
    tasks = rl.chapter_configs(_page(), ["acrobot", "cartpole"], 3, episodes=7)
    assert [(c.task, c.episodes, c.parallelism) for c in tasks("paper")] == [("acrobot", 7, 3), ("cartpole", 7, 3)]
    assert [c.task for c in tasks("quick")] == ["acrobot"]  # the quick profile runs the first task only
    assert tasks("paper")[0].train_every == 10 and tasks("quick")[0].train_every == 4
    with pytest.raises(ValueError, match="tasks"):
        rl.chapter_configs(_page(), "cartpole", 4)


def _paper_configs(name):
    p = book.chapter_defaults(ROOT, name)
    page = report.Page(profile="paper", root=ROOT, overrides={}, seeds=p["seeds"])
    if name == "fig3":
        return {"rl-dqn": rl.chapter_configs(page, p["tasks"], p["parallelism"], p["episodes"], p["workers"])("paper")}
    if name == "fig4b":
        configs, sweep = fig4b.chapter_configs(page, p["optimizers"], p["parallelism"], p["iterations"],
                                               sample_seed=p["sample_seed"], threads=p["threads"])
        return {"text-autoregression": configs("paper"), "text-cosine-dimension": sweep("paper")}
    knobs = {k: p[k] for k in ("datasets", "width", "iterations", "parallel") if k in p}
    configs = training.chapter_configs(name, page, p["optimizers"], p["parallelism"], **knobs)
    return {training.CHAPTERS[name].figure_id: configs("paper")}


@pytest.mark.parametrize("name", ["mnist", "fig4a", "fig4b", "fig3"])
def test_the_paper_profile_of_each_chapter_is_the_committed_results(name):
    from optex.results import config_hash

    for figure_id, configs in _paper_configs(name).items():
        committed = {p.name for p in (ROOT / "results" / figure_id).iterdir() if p.is_dir()}
        assert {config_hash(c) for c in configs} == committed, figure_id


# ------------------------------------------------------------------------------------------ settings glued
@needs_data
def test_glue_settings_are_the_first_configs_numbers_as_the_prose_quotes_them():
    page = _page()
    quick = training.chapter_configs("mnist", page, OPTIMIZERS, 3, data_dir=str(STAGED), width=16)("quick")
    values = training.glue_settings(quick, "m", "quick")
    first = quick[0]
    assert values["m-d"] == f"{training.dimension(first):,}" and values["m-width"] == 16 and values["m-N"] == 3
    assert (values["m-T"], values["m-NT"], values["m-k"], values["m-batch"]) == (12, 36, 4, 32)
    assert (values["m-train-size"], values["m-val-share"], values["m-train-share"]) == ("1,000", "10", "90")
    assert values["m-seeds"] == "2" and values["m-methods"] == len(training.CHAPTER_METHODS)
    assert values["m-profile"] == "quick" and values["m-staged"] == "60,000"
    assert "m-heads" not in values and "m-vocab" not in values  # the MLP has no heads, images no vocabulary
    paper = training.chapter_configs("mnist", page, OPTIMIZERS, 4, data_dir=str(STAGED))("paper")
    assert training.seeds_text(paper) == "5 (SGD 0.01), 3 (Adam 0.001)"


# ------------------------------------------------------------------------------------ training chapter
T, N = 8, 4
RATES = {"vanilla": 1.0, "linesearch": 1.2, "target": 4.0, "optex": 3.0, "large_batch": 1.5,
         "large_batch_scaled": 2.0, "last_gradient": 2.5}


def _panel_configs():
    return [training.Config(dataset="mnist", model="mlp", optimizer=o, lr=lr, parallelism=N, iterations=T,
                            eval_every=2) for o, lr in OPTIMIZERS.items()]


def _training_frame(configs, seeds=3):
    """Rows like the runner's: loss exp(-rate t) on the grid (vanilla_long: N T iterations at rate 1),
    proxy cosines, 0.1 s per iteration of Vanilla and 0.1 N s of every other method."""
    rows = []
    for config in configs:
        for method, rate in {**RATES, "vanilla_long": 1.0}.items():
            length = N * T if method == "vanilla_long" else T
            cost = 0.1 if method.startswith("vanilla") else 0.1 * N
            for seed in range(seeds):
                for t in range(length + 1):
                    on_grid = t % 2 == 0 or t == length
                    loss = np.exp(-rate * (1 + 0.01 * seed) * t)
                    row = dict(panel=training.panel_name(config), method=method, seed=seed, iteration=t,
                               wall_time=cost * t, time_proxy=cost / 4, time_eval=cost / 2, time_update=cost / 4,
                               train_loss=loss if on_grid else np.nan, val_error=loss / 2 if on_grid else np.nan,
                               train_error=loss / 3 if on_grid else np.nan)
                    for s in range(1, N):
                        surrogate = method in plotting.SURROGATES and t >= 2
                        row[f"proxy_cosine_{s}"] = 1.0 - 0.1 * s if surrogate else np.nan
                    rows.append(row)
    return pd.DataFrame(rows)


@pytest.fixture
def chapter(tmp_path):
    configs = _panel_configs()
    results = report.Results("image-classification", _training_frame(configs), "quick", "quick", stores=[])
    return chapters.TrainingChapter(results, configs, "m", figures_dir=tmp_path)


@pytest.fixture
def published(monkeypatch):
    """The tables a chapter publishes: name -> (table, caption)."""
    seen = {}
    monkeypatch.setattr(tables, "publish", lambda table, name, caption: seen.setdefault(name, (table, caption)))
    return seen


def test_curves_publish_the_main_figure_with_its_evaluation_rows(chapter, tmp_path):
    glued = chapter.curves([("train_error", "iteration"), ("val_error", "iteration")])
    assert list(glued) == ["image-classification"] and isinstance(glued["image-classification"], Figure)
    assert len(glued["image-classification"].axes) == 2 * 2  # one row per panel, one column per metric
    saved = pd.read_csv(tmp_path / "image-classification.csv")
    assert len(saved) == chapter.frame["train_loss"].notna().sum()
    assert {"svg", "png", "json"} <= {p.suffix[1:] for p in tmp_path.iterdir()}


def test_speedup_and_cosine_figures_are_saved_under_their_ids(chapter, tmp_path):
    (name, fig), = chapter.speedup_figure().items()
    assert name == "image-classification-speedup" and (tmp_path / f"{name}.csv").is_file()
    labels = {plotting.method_label(m) for m in chapters.SPEEDUP_SHOWN}
    assert labels <= set(plotting.legend_labels(fig)) and "Vanilla" not in plotting.legend_labels(fig)
    assert list(chapter.cosine_figure()) == ["image-classification-cosine"]
    cosines = pd.read_csv(tmp_path / "image-classification-cosine.csv")
    assert set(cosines["method"]) == set(plotting.SURROGATES)
    optex = cosines[cosines["method"] == "optex"]
    assert optex.groupby("step")["median"].agg(["min", "max"]).round(6).values.tolist() == [[0.9, 0.9], [0.8, 0.8], [0.7, 0.7]]
    assert set(optex["panel"]) == set(chapter.panels)


def test_speedup_tables_publish_both_tables_and_return_the_reading_of_them(chapter, published):
    glued = chapter.speedup_tables()
    assert list(published) == ["image-classification-table", "image-classification-effective",
                               "image-classification-versus"]
    assert "Vanilla's training loss and validation error at $T$" in published["image-classification-table"][1]
    effective = published["image-classification-effective"][0]
    assert [c.title for c in effective.columns][2:4] == [f"Effective speedup at $t = {t}$ (95% interval)"
                                                         for t in (T // 2, T)]
    summary = plotting.training_summary(chapter.table, chapter.versus)
    assert glued["m-reading"].data == plotting.reading_text(summary, N)
    for panel in ("MNIST, SGD 0.01", "MNIST, Adam 0.001"):
        assert f"**{panel}**" in glued["m-reading"].data
    versus = published["image-classification-versus"][0]
    assert {row[1] for row in versus.cells()} == {"LargeBatch (scaled lr)"}  # rate 2.0 beats 1.5


def test_time_split_publishes_milliseconds_and_returns_optex_cost_in_vanilla_iterations(chapter, published):
    glued = chapter.time_split()
    assert glued["m-optex-cost"] == pytest.approx(N)  # 0.1 N s against 0.1 s per iteration
    shown = published["image-classification-time-split"][0]
    assert [c.title for c in shown.columns][-1] == "Iteration (ms)"
    rows = {(r[0], r[1]): r for r in shown.cells()}
    assert float(rows[("MNIST, SGD 0.01", "OptEx")][-1]) == pytest.approx(1e3 * 0.1 * N)


def _summary(**rows):
    """training_summary-like rows: panel -> effective speedups at T of each method."""
    out = []
    for panel, speed in rows.items():
        out.append(dict(panel=panel, rival="large_batch", optex=speed[0], linesearch=speed[1],
                        last_gradient=speed[2], target=speed[3], large_batch=speed[4],
                        optex_of_target=speed[0] / speed[3]))
    return pd.DataFrame(out)


def test_the_optimizer_story_says_where_every_estimated_proxy_ends_behind_vanilla():
    summary = _summary(**{"Shakespeare, SGD 0.01": (3.5, 1.8, 3.0, 3.9, 3.1),
                          "Shakespeare, Adam 0.001": (0.2, 0.2, 0.21, 4.0, 1.7)})
    story = chapters.optimizer_story(summary)
    assert story.startswith("In Shakespeare, Adam 0.001, OptEx (0.20×), LineSearch (0.20×) and the last gradient (0.21×)")
    assert "while Target (4.00×) and LargeBatch (1.70×) do not" in story and "SGD" not in story
    note = chapters.adaptive_step_note(summary)
    assert note.startswith("Where that happens (Shakespeare, Adam 0.001), our reading")
    level = _summary(**{"Shakespeare, Adam 0.001": (0.9, 1.1, 0.8, 4.0, 1.7)})  # LineSearch ahead of Vanilla
    assert chapters.optimizer_story(level).startswith("In no panel do the three methods")
    assert chapters.adaptive_step_note(level) == ""
    assert chapters.adaptive_step_note(_summary(**{"X, SGD 0.01": (0.2, 0.2, 0.2, 4.0, 1.7)})) == ""


def test_samples_are_one_fenced_block_per_panel_and_method():
    frame = pd.DataFrame([dict(panel=p, method=m, seed=0, iteration=T, sample=f"{m} says\nhi ```x```")
                          for p in ("A", "B") for m in ("vanilla", "optex")])
    text = plotting.samples_markdown(plotting.text_samples(frame, ["vanilla", "optex"], seed=0))
    blocks = text.split("\n\n")
    assert blocks[0::2] == [f"**{p}, {m}** (after $T =$ {T} iterations):" for p in ("A", "B")
                            for m in ("Vanilla", "OptEx")]
    assert blocks[1] == "````text\nvanilla says\nhi ```x```\n````"  # a longer fence than any run inside
    assert len(blocks) == 8


def test_the_text_chapter_size_note_compares_with_nanogpts_cpu_configuration(tmp_path):
    results = report.Results("text-autoregression", pd.DataFrame(), "paper", "paper", stores=[])

    def note(**sizes):
        config = training.Config(dataset="shakespeare", model="transformer", optimizer="sgd", lr=0.01, **sizes)
        return chapters.TextChapter(results, [config], figures_dir=tmp_path).size_note()

    assert note(batch_size=12) == "the size of this page's model and minibatch"
    assert note(batch_size=4) == note(width=16, heads=2, batch_size=12) == "not this page's model and minibatch"


# ------------------------------------------------------------------------------------------------- RL
@pytest.mark.usefixtures("one_torch_thread")
def test_rl_chapter_glues_its_settings_and_durations_from_a_run(tmp_path, published):
    pytest.importorskip("gymnasium")
    config = rl.Config(task="cartpole", episodes=3, warmup_episodes=2, width=16, seeds=3, batch_size=16,
                       buffer_size=2000, train_every=4, target_every=5, epsilon_decay_episodes=2, history=8,
                       methods=chapters.RL_SHOWN)
    results = report.Results("rl-dqn", rl.run_panel(config, results_dir=None, progress=False), "quick", "quick", [])
    chapter = chapters.RLChapter(results, [config], figures_dir=tmp_path)
    values = chapter.settings()
    cost = rl.compute_cost(results.frame)
    assert values["rl-t-quantile"] == "4.30"  # three seeds
    assert values["rl-compute"] == tables.format_duration(cost["seconds"]) and "min" not in values["rl-compute"]
    assert values["rl-history-updates"] == 2 and values["rl-N"] == 4
    assert values["rl-max-steps"] == f"{int(results.frame['env_steps'].max()):,}"
    assert list(chapter.curves()) == ["rl-dqn"] and (tmp_path / "rl-dqn.json").is_file()
    glued = chapter.threshold_tables()
    assert glued["rl-verdict"] in report.VERDICTS and "**CartPole-v1**" in glued["rl-reading"].data
    assert set(chapter.cosine()) == {"rl-dqn-cosine", "rl-cosine-reading"}
    chapter.settings_table()
    assert list(published) == ["rl-threshold", "rl-anchors", "rl-cosine-table", "rl-settings"]


# -------------------------------------------------------------------------------------- shared helpers
def test_glue_all_glues_every_value_and_closes_figures(monkeypatch):
    import matplotlib.pyplot as plt
    import myst_nb

    glued = []
    monkeypatch.setattr(myst_nb, "glue", lambda key, value, display: glued.append((key, value, display)))
    fig = plt.figure()
    report.glue_all({"a-number": 3, "a-figure": fig})
    assert glued == [("a-number", 3, False), ("a-figure", fig, False)]
    assert not plt.fignum_exists(fig.number)
