"""The text chapter's pieces (optex.experiments.fig4b, the fig4b section of optex.plotting,
optex.analysis.time_to_reach and the text-autoregression claim) against hand-computed answers."""
import matplotlib

matplotlib.use("Agg")

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from optex import plotting, report
from optex.analysis import time_to_reach
from optex.experiments import fig4b, training
from optex.models.transformer import transformer_dim

T, N = 8, 4


# ------------------------------------------------------------------------------ sizes and configs
def _text_config(**kwargs):
    settings = dict(optimizer="adam", lr=1e-3, methods=("vanilla", "vanilla_long", "optex", "target"), seeds=3)
    return training.Config(dataset="shakespeare", model="transformer", **{**settings, **kwargs})


def test_size_configs_change_only_the_shape_and_count_parameters_by_the_formula():
    base = _text_config(batch_size=12, iterations=120)
    configs = fig4b.size_configs(base)
    assert [(c.depth, c.heads, c.width) for c in configs] == [(s["depth"], s["heads"], s["width"])
                                                              for s in fig4b.COSINE_SIZES]
    for config in configs:
        assert (config.batch_size, config.iterations, config.block_size, config.lr) == (12, 120, 64, 1e-3)
    # 65 characters in tiny Shakespeare; the formula is checked against a hand count in test_models
    expected = [transformer_dim(65, c.width, c.depth, c.block_size) for c in configs]
    assert expected[2] == 809_856  # the chapter's CPU-sized model
    assert expected == sorted(expected) and len(set(expected)) == len(expected)
    assert fig4b.size_label(configs[0]) == "1 block × width 32"
    assert fig4b.size_label(configs[2]) == "4 blocks × width 128"


def test_cosine_configs_keep_the_surrogates_only_at_every_size():
    bases = [_text_config(), _text_config(optimizer="sgd", lr=0.01)]
    configs = fig4b.cosine_configs(bases, iterations=30, seeds=1, sizes=fig4b.COSINE_SIZES[:2])
    assert len(configs) == 4
    assert {c.methods for c in configs} == {("optex", "last_gradient")}
    assert [(c.optimizer, c.width) for c in configs] == [("adam", 32), ("adam", 64), ("sgd", 32), ("sgd", 64)]
    assert all(c.iterations == 30 and c.seed_list == [0] for c in configs)


@pytest.mark.parametrize("sizes, match", [((), "at least one"), (({"width": 64, "layers": 2},), "layers")])
def test_bad_sizes_fail_with_their_name(sizes, match):
    with pytest.raises(ValueError, match=match):
        fig4b.size_configs(_text_config(), sizes)


def test_size_configs_refuse_a_model_that_is_not_the_transformer():
    with pytest.raises(ValueError, match="model"):
        fig4b.size_configs(training.Config(dataset="mnist", model="mlp"))


# ------------------------------------------------------------------------------ cosine against d
def _cosine_rows():
    """Two model sizes on one panel: OptEx's cosine at step s is 0.9 - 0.1 s (d = 100) or 0.5 - 0.1 s
    (d = 1000) plus a spread of -0.1, 0, +0.1, +0.2 over four proxy iterations; last gradient 0.1 lower."""
    rows = []
    for d, base in ((100, 0.9), (1000, 0.5)):
        for method, shift in (("optex", 0.0), ("last_gradient", -0.1), ("vanilla", np.nan)):
            for t, spread in enumerate((np.nan, -0.1, 0.0, 0.1, 0.2)):  # iteration 0: no proxy step
                row = dict(panel="A", d=d, size=f"size {d}", method=method, seed=0, iteration=t)
                for s in range(1, N):
                    row[f"proxy_cosine_{s}"] = base - 0.1 * s + shift + spread
                rows.append(row)
    return pd.DataFrame(rows)


def test_cosine_by_dimension_gives_median_and_quartiles_per_size_method_and_step():
    table = plotting.cosine_by_dimension(_cosine_rows()).set_index(["d", "method", "step"])
    # values base - 0.1 s + shift + {-0.1, 0, 0.1, 0.2}: median +0.05, quartiles -0.025 and +0.125
    for d, base in ((100, 0.9), (1000, 0.5)):
        for method, shift in (("optex", 0.0), ("last_gradient", -0.1)):
            for s in range(1, N):
                row = table.loc[(d, method, s)]
                center = base - 0.1 * s + shift
                assert row["median"] == pytest.approx(center + 0.05)
                assert row["q25"] == pytest.approx(center - 0.025)
                assert row["q75"] == pytest.approx(center + 0.125)
                assert row["count"] == 4 and row["size"] == f"size {d}"
    assert "vanilla" not in table.index.get_level_values("method")


def test_cosine_by_dimension_needs_the_size_column():
    with pytest.raises(ValueError, match="run_sized"):
        plotting.cosine_by_dimension(_cosine_rows().drop(columns="d"))


def test_cosine_dimension_figure_draws_one_line_per_estimator_and_step_on_a_log_axis():
    cosines = plotting.cosine_by_dimension(_cosine_rows())
    fig = plotting.cosine_dimension_figure(cosines, ["A"])
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    lines = [container.lines[0] for container in ax.containers]  # each errorbar's data line
    assert len(lines) == 2 * (N - 1)
    optex_step1 = [line for line in lines if np.allclose(line.get_ydata(), [0.85, 0.45])]
    assert len(optex_step1) == 1 and list(optex_step1[0].get_xdata()) == [100, 1000]
    plt.close(fig)
    shown = plotting.cosine_dimension_display(cosines).set_index(["$d$", "Estimator"])
    assert shown.loc[("1,000", "OptEx"), "Median cosine, $s = 1$"] == "0.45"
    assert shown.loc[("100", "Last gradient"), "Median cosine, $s = 3$"] == "0.55"


# ------------------------------------------------------------------------------ samples and timing
def _sample_rows():
    rows = []
    for method in ("vanilla", "optex", "target"):
        for seed in (0, 1):
            rows.append(dict(panel="A", method=method, seed=seed, iteration=T - 1, sample=np.nan))
            rows.append(dict(panel="A", method=method, seed=seed, iteration=T,
                             sample=f"{method} {seed} one\n\n  \ntwo\nthree\nfour"))
    return pd.DataFrame(rows)


def test_text_samples_keep_the_seed_the_order_and_the_first_non_empty_lines():
    samples = plotting.text_samples(_sample_rows(), ["optex", "vanilla"], seed=1, lines=2)
    assert list(samples["method"]) == ["optex", "vanilla"]
    assert list(samples["text"]) == ["optex 1 one\ntwo", "vanilla 1 one\ntwo"]
    assert set(samples["iteration"]) == {T}
    text = plotting.samples_markdown(samples)
    assert "**A, OptEx** (after $T =$ 8 iterations)" in text and "```text\nvanilla 1 one\ntwo\n```" in text


@pytest.mark.parametrize("kwargs, match", [(dict(seed=5), "seed 5"), (dict(seed=0, lines=0), "lines")])
def test_text_samples_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        plotting.text_samples(_sample_rows(), ["optex"], **kwargs)


def test_iteration_seconds_is_the_mean_split_over_iterations_and_seeds():
    rows = [dict(panel="A", method="optex", seed=seed, iteration=t, time_proxy=0.1 * t if t else np.nan,
                 time_eval=0.4 + seed, time_update=0.05) for seed in (0, 1) for t in range(3)]
    table = plotting.iteration_seconds(pd.DataFrame(rows)).set_index("method")
    # proxy over t = 1, 2: 0.15; eval over seeds: 0.9; update 0.05 (iteration 0 is not a step)
    assert table.loc["optex", "proxy"] == pytest.approx(0.15)
    assert table.loc["optex", "eval"] == pytest.approx(0.9)
    assert table.loc["optex", "seconds"] == pytest.approx(0.15 + 0.9 + 0.05)


# ------------------------------------------------------------------------------ time to reach
def _timed(speeds, seconds_per_iteration, seeds=2, panel="A"):
    """Loss 1 / (1 + r t) on the grid t = 0, 2, ..., T, wall_time = c t; vanilla_long as Vanilla."""
    rows = []
    for method, rate in {**speeds, "vanilla_long": speeds["vanilla"]}.items():
        for seed in range(seeds):
            for t in range(0, T + 1):
                loss = 1.0 / (1.0 + rate * t) if t % 2 == 0 else np.nan
                rows.append(dict(panel=panel, method=method, seed=seed, iteration=t, train_loss=loss,
                                 wall_time=seconds_per_iteration[method] * t * (1 + 0.1 * seed)))
    return pd.DataFrame(rows)


def test_time_to_reach_reads_the_clock_at_the_first_grid_point_below_vanilla_final():
    frame = _timed({"vanilla": 1.0, "optex": 4.0, "target": 8.0, "slow": 0.5},
                   {"vanilla": 1.0, "vanilla_long": 1.0, "optex": 3.0, "target": 1.0, "slow": 1.0})
    table = time_to_reach(frame).set_index(["method", "seed"])
    # Vanilla's final loss 1/9: OptEx gets there at t = 2 (1/9), Target at t = 2 (1/17); Vanilla itself at T
    for seed in (0, 1):
        scale = 1 + 0.1 * seed
        assert table.loc[("optex", seed), "seconds"] == pytest.approx(3.0 * 2 * scale)
        assert table.loc[("target", seed), "seconds"] == pytest.approx(2 * scale)
        assert table.loc[("vanilla", seed), "speedup"] == pytest.approx(1.0)
        assert table.loc[("optex", seed), "speedup"] == pytest.approx(8 / 6)
        assert table.loc[("target", seed), "speedup"] == pytest.approx(4.0)
        assert not table.loc[("slow", seed), "reached"] and math.isnan(table.loc[("slow", seed), "speedup"])
    assert "vanilla_long" not in table.index.get_level_values("method")


def test_time_to_reach_needs_the_clock_and_the_reference():
    frame = _timed({"vanilla": 1.0, "optex": 2.0}, {"vanilla": 1.0, "vanilla_long": 1.0, "optex": 1.0})
    with pytest.raises(ValueError, match="wall_time"):
        time_to_reach(frame.drop(columns="wall_time"))
    with pytest.raises(ValueError, match="reference method 'target'"):
        time_to_reach(frame, reference="target")


# ------------------------------------------------------------------------------ the claim
CLAIM = next(c for c in report.CLAIMS if c.key == "text-autoregression")


def _claim_rows(optex_cost, optex_rate=2.0, target_rate=3.5, panels=("SGD 0.01", "SGD 0.01 again"),
                seed_costs=(1.0, 1.0, 1.0)):
    """Loss 1 / (1 + r t) on the grid t = 0, 2, ...; Vanilla r = 1 (its N T-iteration run too, so Target's
    3.5 T stays inside it), Target costs N seconds per iteration, OptEx ``optex_cost``."""
    frames = []
    for panel in panels:
        rows = []
        for method, rate in {"vanilla": 1.0, "vanilla_long": 1.0, "optex": optex_rate, "target": target_rate}.items():
            length = N * T if method == "vanilla_long" else T
            cost = optex_cost if method == "optex" else (N if method == "target" else 1.0)
            for seed in range(3):
                for t in range(length + 1):
                    loss = 1.0 / (1.0 + rate * (1 + 0.02 * seed) * t) if t % 2 == 0 else np.nan
                    scale = seed_costs[seed] if method == "optex" else 1.0
                    rows.append(dict(panel=panel, method=method, seed=seed, iteration=t, train_loss=loss,
                                     wall_time=cost * scale * t))
        frames.append(pd.DataFrame(rows))
    return pd.concat(frames, ignore_index=True)


def test_text_claim_is_evaluated_from_the_chapter_figure():
    assert CLAIM.evaluate is not None and CLAIM.figure_id == "text-autoregression"
    assert CLAIM.chapter == "book/_executed/fig4b"


def test_text_claim_reproduced_when_faster_per_iteration_and_second_and_behind_target():
    finding = CLAIM.evaluate(_claim_rows(optex_cost=1.5))
    assert finding.verdict == "reproduced"
    # OptEx reaches Vanilla's final 1/9 at t = 4 on every seed; Vanilla needs T = 8: 2x per iteration,
    # and 8 s / (1.5 x 4 s) per second; effective speedups at T: 2 and Target's 3.5
    assert "SGD 0.01: per iteration 2.00×" in finding.ours and "per second 1.33×" in finding.ours
    assert "effective at T 2.00× vs Target 3.50×" in finding.ours


def test_text_claim_partly_when_slower_per_second_on_shared_cores():
    finding = CLAIM.evaluate(_claim_rows(optex_cost=6.0))
    assert finding.verdict == "partly"
    assert "per second 0.33×" in finding.ours


def test_text_claim_per_second_needs_its_interval_above_one():
    # per-seed ratios 8 / 4 = 2, 8 / 16 = 0.5, 2: mean 1.5, but the interval reaches below 1 (its t-interval
    # [-0.7, 3.7] is cut at 0, the least a ratio of rates can be, and the cut end is marked)
    finding = CLAIM.evaluate(_claim_rows(optex_cost=1.0, seed_costs=(1.0, 4.0, 1.0)))
    assert "per second 1.5× [0.0†, 3.7]" in finding.ours and finding.verdict == "partly"


def test_text_claim_not_reproduced_when_optex_beats_target_or_trails_vanilla():
    assert CLAIM.evaluate(_claim_rows(optex_cost=1.0, optex_rate=3.5, target_rate=2.0)).verdict == "not reproduced"
    assert CLAIM.evaluate(_claim_rows(optex_cost=1.0, optex_rate=0.5)).verdict == "not reproduced"


def test_text_claim_not_yet_run_without_target():
    frame = _claim_rows(optex_cost=1.0)
    assert CLAIM.evaluate(frame[frame["method"] != "target"]).verdict == "not yet run"


def test_use_threads_sets_torch_and_refuses_a_bad_count():
    import torch

    before = torch.get_num_threads()
    try:
        assert fig4b.use_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="threads"):
            fig4b.use_threads(bad)


def test_cosine_dimension_text_quotes_the_medians_at_the_smallest_and_largest_model():
    text = plotting.cosine_dimension_text(plotting.cosine_by_dimension(_cosine_rows()))
    # OptEx per-step medians at d = 100: 0.85, 0.75, 0.65 (median 0.75); at d = 1000: 0.45, 0.35, 0.25
    assert "OptEx 0.75 at $d$ = 100 and 0.35 at $d$ = 1,000" in text
    assert "Last gradient 0.65 at $d$ = 100 and 0.25 at $d$ = 1,000" in text
    assert "at proxy step 1 the OptEx estimate's cosine is 0.85 and 0.45, at step 3 0.65 and 0.25" in text


def test_text_samples_keep_the_panels_in_the_order_of_the_results():
    rows = pd.concat([_sample_rows().assign(panel="SGD"), _sample_rows().assign(panel="Adam")], ignore_index=True)
    samples = plotting.text_samples(rows, ["vanilla", "optex"], seed=0)
    assert list(zip(samples["panel"], samples["method"])) == [("SGD", "vanilla"), ("SGD", "optex"),
                                                              ("Adam", "vanilla"), ("Adam", "optex")]


def test_plain_log_ticks_label_a_narrow_log_axis_with_plain_numbers_and_leave_linear_axes():
    fig, (log_ax, linear_ax) = plt.subplots(1, 2)
    log_ax.plot([0, 1], [3.9, 4.2])
    log_ax.set_yscale("log")
    linear_ax.plot([0, 1], [3.9, 4.2])
    before = type(linear_ax.yaxis.get_major_locator())
    plotting.plain_log_ticks(fig)
    fig.canvas.draw()
    labels = [t.get_text() for t in log_ax.get_yticklabels() if t.get_text()]
    values = [float(text.replace("\N{MINUS SIGN}", "-")) for text in labels]  # plain numbers, no 10^k
    assert len([v for v in values if 3.85 <= v <= 4.25]) >= 3  # several labels inside the data's range
    assert np.allclose(np.diff(values), values[1] - values[0])  # evenly spaced
    assert type(linear_ax.yaxis.get_major_locator()) is before
    plt.close(fig)


def _surrogate_rows():
    rows = []
    for panel, (gp_cos, last_cos) in {"A": (0.6, 0.4), "B": (0.3, 0.5)}.items():
        for method, cosine, error in (("optex", gp_cos, 0.8), ("last_gradient", last_cos, 1.2), ("vanilla", np.nan, np.nan)):
            for t, spread in enumerate((np.nan, -0.1, 0.0, 0.1)):
                row = dict(panel=panel, method=method, seed=0, iteration=t)
                for s in range(1, N):
                    row[f"proxy_cosine_{s}"] = cosine + spread
                    row[f"proxy_rel_error_{s}"] = error + spread
                rows.append(row)
    return pd.DataFrame(rows)


def test_surrogate_text_sets_speedups_beside_median_cosine_and_error_and_flags_disagreement():
    summary = pd.DataFrame({"panel": ["A", "B"], "optex": [3.0, 3.5], "last_gradient": [2.0, 2.5]})
    text = plotting.surrogate_text(_surrogate_rows(), summary)
    assert ("**A**: effective speedup at $T$ OptEx 3.00×, last gradient 2.00×; median cosine 0.60 and 0.40, "
            "median relative error 0.80 and 1.20.") in text
    assert "median cosine 0.30 and 0.50" in text
    assert text.endswith("as a vector.") and "In B the cosine ranks" in text
    agreeing = plotting.surrogate_text(_surrogate_rows(), summary.iloc[:1])
    assert agreeing.endswith("In every panel the estimate with the higher cosine also gave the higher speedup.")


def test_text_claim_judges_the_papers_setting_and_reports_the_other_optimizer_beside_it():
    good = _claim_rows(optex_cost=1.5, panels=("Shakespeare, SGD 0.01",))
    bad = _claim_rows(optex_cost=1.5, optex_rate=0.5, panels=("Shakespeare, Adam 0.001",))
    finding = CLAIM.evaluate(pd.concat([good, bad], ignore_index=True))
    assert finding.verdict == "reproduced"
    assert "Shakespeare, Adam 0.001 (beyond the paper, not judged): per iteration n/a, 3 of 3 seeds censored" \
        in finding.ours
    assert CLAIM.evaluate(bad).verdict == "not yet run"


def test_optimizer_contrast_text_says_when_the_cosine_does_not_rank_the_panels():
    summary = pd.DataFrame({"panel": ["SGD", "Adam"], "optex_of_target": [0.9, 0.05], "cosine_gp": [0.08, 0.43]})
    text = plotting.optimizer_contrast_text(summary)
    assert text.startswith("SGD: 90% of Target's effective speedup with a median cosine of 0.08; Adam: 5%")
    assert "does not explain" in text and "18.0 times the share at 0.08 against 0.43" in text
    consistent = plotting.optimizer_contrast_text(summary.assign(cosine_gp=[0.5, 0.2]))
    assert consistent.endswith("The closer OptEx comes to Target, the better its estimate points.")
    with pytest.raises(ValueError, match="two panels"):
        plotting.optimizer_contrast_text(summary.iloc[:1])
