"""optex.analysis: the paper's speedup, the effective (uncapped) speedup, plateaus, intervals."""
import math

import numpy as np
import pandas as pd
import pytest

from optex import analysis
from optex.experiments import synthetic


def _runs(**curves):
    """A tidy table from {method: [values per iteration]} (or {method: {seed: [...]}})."""
    rows = []
    for method, values in curves.items():
        per_seed = values if isinstance(values, dict) else {0: values}
        for seed, series in per_seed.items():
            rows += [dict(function="f", method=method, seed=seed, iteration=i, gap=float(v))
                     for i, v in enumerate(series)]
    return pd.DataFrame(rows)


def _by_definition(method_gaps, reference_gaps):
    """The effective speedup straight from its definition, one t at a time (the independent reference)."""
    out = []
    for t in range(1, len(method_gaps)):
        best = min(method_gaps[: t + 1])
        hits = [k for k in range(len(reference_gaps)) if min(reference_gaps[: k + 1]) <= best]
        k = hits[0] if hits else len(reference_gaps) - 1
        out.append((k, k / t, not hits))
    return out


def test_effective_speedup_follows_its_definition():
    reference = [8, 4, 4, 2, 1, 1, 0.5, 0.5, 0.25]
    method = [8, 2, 0.7, 3, 0.1]
    table = analysis.effective_speedup(_runs(fast=method, vanilla_long=reference))
    expected = _by_definition(method, reference)
    assert list(table["iteration"]) == [1, 2, 3, 4]
    assert list(zip(table["vanilla_equivalent"], table["speedup"], table["censored"])) == expected
    assert expected[-1] == (8, 2.0, True)  # 0.1 is below anything the reference reached: a lower bound
    assert (table["reference_length"] == 8).all() and list(table["best"]) == [2, 0.7, 0.7, 0.1]


def test_effective_speedup_interpolates_in_log_metric_on_a_grid():
    grid = pd.DataFrame(dict(method="vanilla_long", seed=0, iteration=[0, 10, 20, 30],
                             train_loss=[100.0, 10.0, 1.0, 0.5]))
    runs = pd.DataFrame(dict(method="optex", seed=0, iteration=[0, 5, 10], train_loss=[100.0, 10 ** 0.5, 2.0]))
    table = analysis.effective_speedup(pd.concat([runs, grid]), metric="train_loss", interpolate=True)
    # 10^0.5 lies halfway between 10 and 1 in log: Vanilla iteration 15; 2.0 lies log(5)/log(10) past 10.
    assert table["vanilla_equivalent"].tolist() == pytest.approx([15.0, 10 + 10 * math.log(5) / math.log(10)])
    assert table["speedup"].tolist() == pytest.approx([3.0, (10 + 10 * math.log(5) / math.log(10)) / 10])
    assert not table["censored"].any()


def test_target_with_select_last_is_exactly_n_times_faster():
    # The built-in check: on a deterministic objective Target takes N plain steps per iteration.
    config = synthetic.Config(function="sphere", dim=50, iterations=8, seeds=2, history=10,
                              methods=("vanilla", "target"), parallelism=4)
    frame = synthetic.run(config, results_dir=None, progress=False)
    table = analysis.effective_speedup(frame)
    target = table[table.method == "target"]
    assert (target["speedup"] == 4.0).all() and not target["censored"].any()
    assert (table[table.method == "vanilla"]["speedup"] == 1.0).all()
    summary = analysis.effective_speedup_table(frame).set_index(["method", "iteration"])
    assert summary.loc[("target", 8), "effective_speedup"] == 4.0
    assert summary.loc[("target", 4), "effective_speedup"] == 4.0
    assert summary.loc[("target", 8), "effective_low"] == summary.loc[("target", 8), "effective_high"] == 4.0


def test_effective_speedup_table_summarises_seeds_with_a_t_interval():
    reference = list(2.0 ** -np.arange(41))
    fast = {0: reference[::4][:11], 1: reference[::3][:11], 2: reference[::2][:11]}
    frame = _runs(fast=fast, vanilla={s: reference[:11] for s in fast}, vanilla_long={s: reference for s in fast})
    table = analysis.effective_speedup_table(frame).set_index(["method", "iteration"])
    mean, low, high = analysis.mean_ci(np.array([4.0, 3.0, 2.0]))
    row = table.loc[("fast", 10)]
    # the reference's 40 iterations over t = 10: no seed's speedup can exceed 4, so the interval stops there
    assert high > 4.0
    assert (row.effective_speedup, row.effective_low, row.effective_high) == pytest.approx((mean, low, 4.0))
    assert (row.seeds, row.censored, row.plateau) == (3, 0, False)
    assert sorted(table.index.get_level_values("iteration").unique()) == [5, 10]  # T // 2 and T


def test_censored_seeds_are_counted_and_marked():
    frame = _runs(fast={0: [1, 0.5, 1e-9], 1: [1, 0.5, 0.25]}, vanilla={0: [1, 0.9, 0.8], 1: [1, 0.9, 0.8]},
                  vanilla_long={0: [1, 0.9, 0.8, 0.5, 0.25], 1: [1, 0.9, 0.8, 0.5, 0.25]})
    row = analysis.effective_speedup_table(frame, at=(2,)).set_index("method").loc["fast"]
    assert row.censored == 1 and row.effective_speedup == pytest.approx((4 / 2 + 4 / 2) / 2)


def test_plateau_flags_a_flat_last_quarter():
    flat = [10, 5, 3, 2.31, 2.305, 2.30, 2.30, 2.299, 2.299]  # Ackley-like: the gap stalls near 2.3
    falling = list(2.0 ** -np.arange(9))
    frame = pd.concat([_runs(vanilla=flat).assign(panel="ackley"), _runs(vanilla=falling).assign(panel="sphere")])
    flags = analysis.plateau(frame).set_index("panel")
    assert flags.loc["ackley", "plateau"] and not flags.loc["sphere", "plateau"]
    assert flags.loc["ackley", "log_drop"] == pytest.approx(math.log(2.30 / 2.299))  # 3T/4 = 6 -> 8
    assert flags.loc["sphere", "log_drop"] == pytest.approx(2 * math.log(2))
    paper = analysis.speedup_table(frame).set_index("panel")
    assert paper.loc["ackley", "plateau"] and not paper.loc["sphere", "plateau"]


def test_one_reference_table_serves_several_panels():
    # Fig. 6's ablation panels have no Vanilla of their own: they share the reference run.
    reference = pd.DataFrame(dict(seed=0, iteration=range(9), gap=2.0 ** -np.arange(9)))
    runs = pd.concat([_runs(optex=[1, 0.25, 2 ** -6]).assign(panel="history", setting="T0=5"),
                      _runs(optex=[1, 0.5, 0.25]).assign(panel="history", setting="T0=10")])
    table = analysis.effective_speedup(runs, reference=reference, by=("panel", "setting"))
    assert table.set_index(["setting", "iteration"])["speedup"].to_dict() == {
        ("T0=5", 1): 2.0, ("T0=5", 2): 3.0, ("T0=10", 1): 1.0, ("T0=10", 2): 1.0}


def test_missing_reference_is_a_clear_error():
    with pytest.raises(ValueError, match="vanilla_long"):
        analysis.effective_speedup(_runs(optex=[1, 0.5], vanilla=[1, 0.9]))


def test_paper_metric_ignores_the_long_reference_and_counts_censored_seeds():
    rows = []
    for seed in range(3):
        for it, gap in enumerate([8, 4, 2, 1]):
            rows.append(dict(function="f", method="vanilla", seed=seed, iteration=it, gap=gap))
        for it, gap in enumerate([8, 1, 1, 1] if seed < 2 else [8, 8, 8, 8]):
            rows.append(dict(function="f", method="fast", seed=seed, iteration=it, gap=gap))
        for it, gap in enumerate([8, 4, 2, 1, 0.5, 0.25]):
            rows.append(dict(function="f", method="vanilla_long", seed=seed, iteration=it, gap=gap))
    table = analysis.speedup_table(pd.DataFrame(rows)).set_index("method")
    assert table.loc["fast", "speedup"] == pytest.approx(3.0)
    assert table.loc["fast", "censored"] == 1
    assert table.loc["vanilla", "speedup"] == pytest.approx(1.0)
    assert "vanilla_long" not in table.index


def test_mean_ci_matches_t_interval():
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    mean, low, high = analysis.mean_ci(values)
    half = 2.7764451051977987 * values.std(ddof=1) / math.sqrt(5)
    assert (mean, low, high) == pytest.approx((3.0, 3.0 - half, 3.0 + half))


def test_rows_between_evaluations_are_skipped_and_the_grid_interpolated():
    # A training runner's table: one row per iteration, the fixed-set loss recorded every 2 iterations.
    loss = {0: 8.0, 2: 4.0, 4: 2.0, 6: 1.0, 8: 0.5}
    long = pd.DataFrame(dict(method="vanilla_long", seed=0, iteration=range(9),
                             train_loss=[loss.get(i, np.nan) for i in range(9)]))
    runs = pd.DataFrame(dict(method="optex", seed=0, iteration=range(5),
                             train_loss=[8.0, np.nan, 2 ** 0.5, np.nan, 1.0]))
    table = analysis.effective_speedup(pd.concat([runs, long]), metric="train_loss", interpolate=True)
    assert table["iteration"].tolist() == [2, 4]
    # 2^0.5 lies halfway between 2 (iteration 4) and 1 (iteration 6) in log: Vanilla iteration 5.
    assert table["vanilla_equivalent"].tolist() == pytest.approx([5.0, 6.0])
    summary = analysis.effective_speedup_table(pd.concat([runs, long]), at=(3,), metric="train_loss",
                                               interpolate=True, plateau_method=None)
    assert summary["effective_speedup"].tolist() == pytest.approx([2.5])  # the grid point at or below t = 3
    assert summary["evaluated_at"].tolist() == [2]


def test_mean_ci_cuts_the_interval_at_the_range_of_the_quantity():
    values = np.array([0.2, 1.0, 3.5])  # three positive speedups: the t-interval reaches below 0
    mean, low, high = analysis.mean_ci(values)
    assert low < 0
    cut = analysis.mean_ci(values, bounds=analysis.value_bounds("speedup"))
    assert cut == pytest.approx((mean, 0.0, high))
    returns = np.array([498.0, 500.0, 470.0])  # CartPole returns: at most 500 per episode
    _, _, top = analysis.mean_ci(returns, bounds=analysis.return_bounds("cartpole"))
    assert analysis.mean_ci(returns)[2] > 500 and top == 500.0


def test_effective_speedup_intervals_stay_within_what_the_reference_can_measure():
    # The reference runs 8 iterations; one seed's method matches it at t=1, the others only late.
    rows = []
    for seed, gaps in enumerate([[8.0, 0.1], [8.0, 7.0], [8.0, 6.0]]):
        rows += [dict(function="f", method="fast", seed=seed, iteration=i, gap=g) for i, g in enumerate(gaps)]
        rows += [dict(function="f", method="vanilla_long", seed=seed, iteration=i, gap=8.0 - i) for i in range(9)]
    table = analysis.effective_speedup_table(pd.DataFrame(rows), at=[1], plateau_method=None)
    assert table["effective_low"].iloc[0] == 0.0
    assert table["effective_high"].iloc[0] <= 8.0
