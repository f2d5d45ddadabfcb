"""optex.report: page parameters, result resolution by profile, provenance notes, claim verdicts."""
import json
import os
import subprocess
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from optex import report, tables
from optex.results import ResultStore, provenance


@dataclass(frozen=True)
class Toy:
    size: int = 3
    device: str = "cpu"
    backend: str = "torch"


class ToyRunner:
    """A runner with the signature of the experiment runners; it records what it computed."""

    def __init__(self):
        self.computed = []

    def __call__(self, config, results_dir, figure_id, progress, commit, compute):
        store = ResultStore(results_dir, figure_id, config)
        frame = store.load("unit")
        if frame is None:
            if not compute:
                raise FileNotFoundError(f"{figure_id}/{store.key} is missing")
            frame = pd.DataFrame({"iteration": range(config.size), "gap": np.arange(config.size, 0, -1.0)})
            store.save("unit", frame, dict(provenance("cpu", "torch", commit), wall_time_s=1.5))
            self.computed.append((str(results_dir), config.size))
        return frame


def configs(profile):
    return [Toy(size=8 if profile == "paper" else 2)]


@pytest.fixture
def page(tmp_path):
    return report.Page(profile="paper", root=tmp_path, commit="abc1234", overrides={}, out=None, refresh=False)


@pytest.mark.parametrize("name, value", [("profile", "fast"), ("device", "tpu"), ("backend", "numpy"),
                                         ("seeds", 0), ("seeds", [1, 1]), ("seeds", "5"), ("recompute", "yes"),
                                         ("commit", "")])
def test_a_bad_parameter_fails_with_its_name(tmp_path, name, value):
    with pytest.raises(ValueError, match=name):
        report.Page(root=tmp_path, **{name: value})


def test_scale_applies_overrides_and_the_pages_seeds(tmp_path):
    scales = {"paper": dict(dim=100, seeds=5), "quick": dict(dim=10, seeds=2)}
    page = report.Page(root=tmp_path, seeds=[3, 4])
    assert page.scale("quick", scales, dim=None) == dict(dim=10, seeds=(3, 4))
    assert page.scale("paper", scales, dim=7) == dict(dim=7, seeds=(3, 4))
    with pytest.raises(ValueError, match="quick"):
        page.scale("paper", {"paper": {}})


def test_paper_profile_reads_committed_results_without_computing(page):
    runner = ToyRunner()
    runner(Toy(size=8), page.results_dir("paper"), "toy", False, None, True)
    runner.computed.clear()
    results = page.results("toy", runner, configs)
    assert (results.profile, results.fallback, runner.computed) == ("paper", False, [])
    assert len(results.frame) == 8


def test_missing_paper_results_fall_back_to_quick_with_a_reason(page):
    runner = ToyRunner()
    results = page.results("toy", runner, configs)
    assert results.fallback and results.profile == "quick" and results.requested == "paper"
    assert "missing" in results.missing
    assert runner.computed == [(str(page.results_dir("quick")), 2)]
    assert not (page.results_dir("paper") / "toy").exists()
    note = report.provenance_note(results, page.root)
    assert "Paper-scale results are missing" in note and "--recompute" in note


def test_recompute_computes_missing_paper_results_into_a_git_ignored_folder(tmp_path):
    runner = ToyRunner()
    page = report.Page(profile="paper", root=tmp_path, recompute=True, overrides={}, out=None, refresh=False)
    results = page.results("toy", runner, configs)
    local = tmp_path / "results" / "_local"
    assert (results.profile, runner.computed) == ("paper", [(str(local), 8)])
    assert results.location == "results/_local/" and not (tmp_path / "results" / "toy").exists()
    # Read back from there next time, without computing.
    runner.computed.clear()
    again = report.Page(profile="paper", root=tmp_path, overrides={}, out=None, refresh=False).results("toy", runner, configs)
    assert (again.profile, again.fallback, runner.computed) == ("paper", False, [])


def test_refresh_recomputes_into_the_committed_results(tmp_path):
    runner = ToyRunner()
    page = report.Page(profile="paper", root=tmp_path, recompute=True, overrides={}, out=None, refresh=True)
    page.results("toy", runner, configs)
    assert runner.computed == [(str(tmp_path / "results"), 8)]


def test_changed_parameters_without_results_stop_and_name_the_command(tmp_path):
    page = report.Page(profile="paper", root=tmp_path, overrides={"size": 8}, out=None, refresh=False)
    with pytest.raises(ValueError, match=r"size = 8.*--recompute --out DIR"):
        page.results("toy", ToyRunner(), configs)


def test_provenance_note_names_changed_parameters_and_folds_many_settings(tmp_path):
    runner = ToyRunner()
    page = report.Page(profile="quick", root=tmp_path, overrides={"parallelism": 10}, out=None, refresh=False)
    results = page.results("toy", runner, lambda profile: [Toy(size=2), Toy(size=3)])
    note = report.provenance_note(results, tmp_path)
    assert "`parallelism = 10`" in note
    assert "2 settings, listed below" in note and ":class: dropdown" in note
    assert all(f"`{store.key}`" in note for store in results.stores)


def test_book_execute_passes_its_context_through_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(report.ENV_OVERRIDES, '{"parallelism": 10}')
    monkeypatch.setenv(report.ENV_OUT, str(tmp_path / "mine"))
    monkeypatch.setenv(report.ENV_REFRESH, "0")
    page = report.Page(root=tmp_path)
    assert (page.overrides, page.local_dir, page.refresh) == ({"parallelism": 10}, tmp_path / "mine", False)


def test_quick_profile_recomputes_even_when_results_exist(tmp_path):
    runner = ToyRunner()
    page = report.Page(profile="quick", root=tmp_path)
    page.results("toy", runner, configs)
    page.results("toy", runner, configs)
    assert runner.computed == [(str(tmp_path / "results" / "_quick"), 2)] * 2


def test_provenance_note_names_profile_files_device_and_commit(page):
    results = page.results("toy", ToyRunner(), configs)
    info = report.summary(results)
    assert info["units"] == 1 and info["wall_time_s"] == 1.5 and info["commits"] == ["abc1234"]
    note = report.provenance_note(results, page.root)
    assert "**quick** profile" in note and "results/_quick/toy/" in note and info["hashes"][0] in note
    assert "`abc1234`" in note and "cpu" in note


def _git(cwd, *args):
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


def test_changed_since_lists_files_under_optex_changed_after_a_commit(tmp_path):
    (tmp_path / "optex").mkdir()
    (tmp_path / "optex" / "a.py").write_text("x = 1\n")
    (tmp_path / "notes.md").write_text("a\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "one")
    sha = _git(tmp_path, "rev-parse", "HEAD")
    assert report.changed_since(sha, tmp_path) == []
    (tmp_path / "optex" / "a.py").write_text("x = 2\n")
    (tmp_path / "optex" / "b.py").write_text("")
    (tmp_path / "notes.md").write_text("b\n")
    assert report.changed_since(sha, tmp_path) == ["optex/a.py", "optex/b.py"]
    assert report.changed_since("0" * 40, tmp_path) is None


def test_provenance_note_warns_when_optex_changed_since_the_results(tmp_path):
    (tmp_path / "optex").mkdir()
    (tmp_path / "optex" / "a.py").write_text("x = 1\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "one")
    page = report.Page(profile="quick", root=tmp_path, commit=_git(tmp_path, "rev-parse", "HEAD"))
    results = page.results("toy", ToyRunner(), configs)
    assert "changed since" not in report.provenance_note(results, tmp_path)
    (tmp_path / "optex" / "a.py").write_text("x = 2\n")
    assert "`optex/a.py`" in report.provenance_note(results, tmp_path)


# ------------------------------------------------------------------------------------ claim verdicts
def _curves(reach, final=10, seeds=3):
    """Tidy runs: every method's gap falls from 100; Vanilla hits its final value 50 at ``final``;
    method m first reaches 50 at iteration ``reach[m][seed]`` (None: never)."""
    rows = []
    for (function, method), hits in reach.items():
        for seed in range(seeds):
            hit = hits[seed] if isinstance(hits, list) else hits
            for t in range(final + 1):
                gap = 100.0 if hit is None or t < hit else 50.0
                rows.append(dict(function=function, method=method, seed=seed, iteration=t, gap=gap))
    return pd.DataFrame(rows)


def test_speedup_claim_reproduced_when_every_interval_clears_the_threshold():
    frame = _curves({("f", "vanilla"): 10, ("f", "optex"): 4, ("g", "vanilla"): 10, ("g", "optex"): 5})
    finding = report.speedup_at_least("optex", 2.0)(frame)
    assert finding.verdict == "reproduced"
    assert "F 2.50× [2.50, 2.50]" in finding.ours


def test_speedup_claim_partly_when_only_some_functions_clear_it():
    frame = _curves({("f", "vanilla"): 10, ("f", "optex"): 4, ("g", "vanilla"): 10, ("g", "optex"): 8})
    assert report.speedup_at_least("optex", 2.0)(frame).verdict == "partly"


def test_speedup_claim_not_reproduced_below_the_threshold():
    frame = _curves({("f", "vanilla"): 10, ("f", "optex"): 8})
    assert report.speedup_at_least("optex", 2.0)(frame).verdict == "not reproduced"


def test_censored_seeds_are_reported_and_block_a_full_reproduction():
    frame = _curves({("f", "vanilla"): 10, ("f", "optex"): [2, 2, None]})
    finding = report.speedup_at_least("optex", 2.0)(frame)
    assert "1 of 3 seeds censored" in finding.ours
    assert finding.verdict == "partly"


def test_trails_ideal_checks_direction_and_distance():
    close = _curves({("f", "vanilla"): 10, ("f", "target"): 2, ("f", "optex"): 3})
    assert report.trails_ideal("optex", "target", within=2.0)(close).verdict == "reproduced"
    far = _curves({("f", "vanilla"): 10, ("f", "target"): 1, ("f", "optex"): 5})
    assert report.trails_ideal("optex", "target", within=2.0)(far).verdict == "not reproduced"
    ahead = _curves({("f", "vanilla"): 10, ("f", "target"): 4, ("f", "optex"): 2})
    assert report.trails_ideal("optex", "target", within=2.0)(ahead).verdict == "not reproduced"


def test_report_has_one_row_per_claim_and_links_the_evidence(tmp_path):
    frame = _curves({(f, m): h for f in ("sphere", "levy") for m, h in (("vanilla", 10), ("target", 2), ("optex", 3))})
    frame.to_csv(tmp_path / "fig2.csv", index=False)
    (tmp_path / "fig2.json").write_text(json.dumps(
        {"profile": "quick", "requested": "paper", "commits": ["0123456789abcdef"]}))
    table = report.evaluate_claims(tmp_path)
    assert list(table["key"]) == [c.key for c in report.CLAIMS]
    evaluated = table[table["figure_id"] == "fig2"]
    assert set(evaluated["verdict"]) == {"reproduced"}
    assert set(table.loc[table["figure_id"] != "fig2", "verdict"]) == {"not yet run"}  # no data for the others
    text = report.write_report(tmp_path, tmp_path / "out" / "report.md").read_text()
    assert text.count("\n| ") == len(report.CLAIMS) + 1  # the header and one row per claim
    assert ":name: report-claims" in text and "$\\Theta(\\sqrt{N})$" in text
    assert "{numref}`fig2`, quick profile (paper results missing), commit 0123456789" in text
    assert "{doc}`/book/_executed/fig3`" in text
    assert f"In all: {len(report.CLAIMS)} claims; 2 reproduced" in text


def test_every_claim_names_a_figure_id_and_an_existing_chapter():
    root = report.project_root()
    for claim in report.CLAIMS:
        report.check_figure_id(claim.figure_id)
        source = claim.chapter.replace("book/_executed/", "notebooks/")
        assert (root / f"{source}.md").is_file() or (root / f"{source}.py").is_file(), claim.chapter


def test_claims_are_judged_per_panel_where_a_figure_has_panels():
    frame = _curves({("ackley", "vanilla"): 10, ("ackley", "optex"): 4})
    frame = pd.concat([frame.assign(panel="ackley"), frame.assign(panel="ackley-10x")], ignore_index=True)
    finding = report.speedup_at_least("optex", 2.0)(frame)
    assert "Ackley 2.50×" in finding.ours and "Ackley (10× d) 2.50×" in finding.ours


def test_a_single_seed_gives_no_interval_and_at_most_partly():
    frame = _curves({("f", "vanilla"): 10, ("f", "optex"): 2}, seeds=1)
    finding = report.speedup_at_least("optex", 2.0)(frame)
    assert "one seed: no interval" in finding.ours and finding.verdict == "partly"


def test_parallel_is_the_gain_reads_fig6_panel_a():
    rows = []
    for seed in range(3):
        for setting, hit in (("vanilla", 10), ("parallel (N=5)", 3), ("sequential (N=5)", 10)):
            for it in range(11):
                rows.append(dict(panel="parallel", setting=setting, function="rosenbrock", seed=seed,
                                 method="vanilla" if setting == "vanilla" else "optex", iteration=it,
                                 gap=max(10.0 - it * 10.0 / hit, 0.0)))
    frame = pd.DataFrame(rows)
    finding = report.parallel_is_the_gain()(frame)
    assert finding.verdict == "reproduced", finding
    assert "parallel 3.33×" in finding.ours and "sequential 1.00×" in finding.ours


def _training(rates, panel, seeds=3, T=8, N=4, grid=2):
    """Training-runner rows on the evaluation grid: loss exp(-rate t), errors 0.5 exp(-rate t) (+ a 1% seed
    spread); vanilla_long runs N*T iterations at rate 1."""
    rows = []
    for method, rate in {**rates, "vanilla_long": 1.0}.items():
        length = N * T if method == "vanilla_long" else T
        for seed in range(seeds):
            for t in [*range(0, length + 1, grid)]:
                value = np.exp(-rate * (1 + 0.01 * seed) * t)
                rows.append(dict(panel=panel, method=method, seed=seed, iteration=t, wall_time=0.1 * t,
                                 train_loss=value, train_error=value / 2, val_error=value / 2, test_error=value / 2,
                                 proxy_cosine_1=0.5 if method == "optex" else np.nan))
    return pd.DataFrame(rows)


def test_image_classification_claim_is_judged_on_the_paper_optimizer_panels_only():
    good = {"vanilla": 1.0, "target": 4.0, "optex": 3.0, "large_batch": 1.5, "large_batch_scaled": 2.0}
    frame = pd.concat([_training(good, "MNIST, SGD 0.01"), _training({**good, "optex": 0.5}, "MNIST, Adam 0.001")],
                      ignore_index=True)
    finding = report.trains_faster()(frame)
    assert finding.verdict == "reproduced", finding.ours
    assert "MNIST, SGD 0.01: OptEx 2.00×" in finding.ours and "Adam" not in finding.ours
    assert "effective at T: OptEx 3.00×, Target 4.00×" in finding.ours
    assert "(the better LargeBatch, LargeBatch (scaled lr): 2.00× effective)" in finding.ours
    slow = _training({**good, "optex": 1.0}, "Fashion-MNIST, SGD 0.01")
    assert report.trains_faster()(pd.concat([frame, slow], ignore_index=True)).verdict == "partly"
    assert report.trains_faster()(slow).verdict == "not reproduced"
    assert report.trains_faster()(frame[frame.panel.str.contains("Adam")]).verdict == "not yet run"


def test_cifar10_claim_is_at_most_partly_without_parallel_evaluations():
    frame = _training({"vanilla": 1.0, "target": 4.0, "optex": 3.0}, "CIFAR-10, SGD 0.01")
    finding = report.reaches_error_sooner()(frame)
    assert finding.verdict == "partly" and "not yet run on a GPU" in finding.ours
    assert "CIFAR-10, SGD 0.01: 2.00× [2.00, 2.00] fewer iterations to Vanilla's final validation error" in finding.ours
    slow = _training({"vanilla": 1.0, "target": 4.0, "optex": 0.9}, "CIFAR-10, SGD 0.01")
    assert report.reaches_error_sooner()(slow).verdict == "not reproduced"


def test_estimator_table_takes_medians_per_proxy_step_of_both_surrogates(tmp_path):
    """Two seeds of OptEx and of the last-gradient ablation with known cosines: the table's medians equal
    numpy's over the pooled rows (NaN rows, e.g. cold starts, left out); a configuration without the
    ablation is not listed."""
    from optex.experiments import synthetic

    rng = np.random.default_rng(0)
    config = synthetic.Config(dim=10, iterations=3, seeds=2, methods=("optex", "last_gradient"))
    store = ResultStore(tmp_path / "results", "fig6", config)
    pooled = {}
    for method in ("optex", "last_gradient"):
        for seed in range(2):
            cosine = np.r_[np.nan, rng.uniform(-1, 1, 3)]
            frame = pd.DataFrame({"method": method, "seed": seed, "iteration": range(4), "proxy_cosine": cosine})
            store.save(f"{method}-seed{seed}", frame, {"commit": "x"})
            pooled.setdefault(method, []).extend(cosine[1:])
    alone = ResultStore(tmp_path / "results", "fig6", synthetic.Config(dim=11, seeds=1, methods=("optex",)))
    alone.save("optex-seed0", pd.DataFrame({"method": "optex", "seed": 0, "iteration": [0], "proxy_cosine": [0.5]}),
               {"commit": "x"})
    table = report.estimator_table(tmp_path / "results", figures=("fig6",)).set_index("method")
    assert len(table) == 2 and set(table["setting"]) == {"Rosenbrock, d = 10, Adam 0.01"}
    for method, values in pooled.items():
        assert table.loc[method, "cosine_all"] == pytest.approx(float(np.median(values)))
    text = report.estimator_markdown(table.reset_index())
    gp, last = (tables.fixed(table.loc[m, "cosine_all"], 2) for m in ("optex", "last_gradient"))
    assert ":name: estimator-surrogates" in text
    assert f"| Rosenbrock, d = 10, Adam 0.01 | cosine | {gp}\u00a0/\u00a0{last} |" in text


def test_the_committed_experiments_are_named_as_their_chapters_name_them():
    """The estimator table's RL rows are the chapter's panels (the environments), not the runner's task keys."""
    from optex.experiments import rl, training

    table = report.estimator_table(report.project_root() / "results")
    settings = table.groupby("figure")["setting"].unique()
    assert set(settings["rl-dqn"]) <= {t.env_id for t in rl.TASKS.values()} and len(settings["rl-dqn"]) >= 1
    for figure in ("image-classification", "cifar10", "text-autoregression"):
        datasets = {s.split(",")[0] for s in settings[figure]}
        assert datasets <= set(training.DATASET_TITLES.values()), figure
    assert all(s[:1].isupper() and "_" not in s for s in table["setting"])


@pytest.mark.parametrize("panel, title", [("sphere", "Sphere"), ("ackley-10x", "Ackley (10× d)"),
                                          ("gp-matern32", "GP, Matérn-3/2"), ("CartPole-v1", "CartPole-v1"),
                                          ("MNIST, SGD 0.01", "MNIST, SGD 0.01")])
def test_panels_are_named_as_the_chapters_name_them(panel, title):
    assert report.panel_title(panel) == title


def test_estimator_table_fits_the_text_column_one_cell_per_step_for_both_surrogates():
    """Per-step cosines and relative errors of three proxy steps: rows per experiment and measure, each
    cell "GP / last gradient", six columns at most (nine before)."""
    rows = [dict(figure="cifar10", setting="CIFAR-10, SGD 0.01", method=method, seeds=3,
                 **{f"cosine_{s}": base + s / 10 for s in (1, 2, 3)}, **{f"rel_error_{s}": 1 + base for s in (1, 2, 3)})
            for method, base in (("optex", 0.5), ("last_gradient", -0.25))]
    rows.append(dict(figure="fig6", setting="Rosenbrock", method="optex", seeds=1, cosine_all=0.9))
    rows.append(dict(figure="fig6", setting="Rosenbrock", method="last_gradient", seeds=1, cosine_all=0.8))
    text = report.estimator_markdown(pd.DataFrame(rows)).replace("\u00a0/\u00a0", " / ")  # one line per cell
    header = next(line for line in text.splitlines() if line.startswith("| Experiment"))
    assert header.count("|") - 1 <= 6
    assert "| CIFAR-10, SGD 0.01 | cosine | 0.60 / −0.15 | 0.70 / −0.05 | 0.80 / 0.05 | — |" in text
    assert "| CIFAR-10, SGD 0.01 | relative error | 1.50 / 0.75 | 1.50 / 0.75 | 1.50 / 0.75 | — |" in text
    assert "| Rosenbrock | cosine | — | — | — | 0.90 / 0.80 |" in text
    assert "Rosenbrock | relative error" not in text  # nothing recorded: no row


def test_speedup_claim_quotes_the_effective_speedup_beside_the_paper_metric():
    """OptEx's gap at t is Vanilla's at 2t on every seed: the effective speedup at T is 2 exactly."""
    rows = []
    for seed in range(3):
        for t in range(41):
            rows.append(dict(panel="sphere", method="optex", seed=seed, iteration=t, gap=1.0 / (1 + 2 * t)))
        for method, horizon in (("vanilla", 40), ("vanilla_long", 200)):
            rows += [dict(panel="sphere", method=method, seed=seed, iteration=t, gap=1.0 / (1 + t))
                     for t in range(horizon + 1)]
    finding = report.speedup_at_least("optex", 1.5)(pd.DataFrame(rows))
    assert "(effective, uncapped, at $T$: Sphere 2.00× [2.00, 2.00])" in finding.ours
