"""The synthetic runner: tidy tables against plain optimizer loops, the long Vanilla reference, settings."""
import numpy as np
import pandas as pd
import pytest
import torch

from optex import problems
from optex.experiments import synthetic

SMALL = dict(dim=30, iterations=6, seeds=2, history=10)


def _plain_adam_gaps(config, seed, steps):
    """The gaps of a plain torch.optim.Adam loop from the runner's initial point (the reference)."""
    x = torch.tensor(synthetic.initial_point(config, seed), dtype=torch.float32, requires_grad=True)
    opt = torch.optim.Adam([x], lr=config.lr)
    problem = problems.make(config.function, config.dim)
    gaps = [float(problem.gap(x.detach(), torch))]
    for _ in range(steps):
        opt.zero_grad()
        problem(x, torch).backward()
        opt.step()
        gaps.append(float(problem.gap(x.detach(), torch)))
    return np.asarray(gaps)


def test_tidy_table_and_reference_loop(tmp_path):
    config = synthetic.Config(function="sphere", methods=("vanilla", "optex"), **SMALL)
    frame = synthetic.run(config, results_dir=tmp_path, progress=False)
    assert set(frame.columns) >= {"function", "method", "seed", "iteration", "gap", "evaluations", "wall_time"}
    assert frame[frame.method != synthetic.REFERENCE].groupby(["method", "seed"]).size().eq(6 + 1).all()
    # Vanilla equals a plain torch.optim loop from the same initial point.
    ours = frame[(frame.method == "vanilla") & (frame.seed == 1)].sort_values("iteration")
    np.testing.assert_allclose(ours["gap"].to_numpy(), _plain_adam_gaps(config, 1, 6), rtol=1e-6)


@pytest.mark.parametrize("warmup_pairs, expected", [(1, [0, 1, 6, 11, 16, 21, 26]), (2, [0, 1, 2, 7, 12, 17, 22])])
def test_warmup_pairs_sets_the_cold_start(warmup_pairs, expected):
    # Cumulative gradient evaluations: one per cold (Vanilla) iteration, then N = 5 per iteration.
    config = synthetic.Config(function="sphere", methods=("optex",), warmup_pairs=warmup_pairs, **SMALL)
    frame = synthetic.run(config, results_dir=None, progress=False)
    np.testing.assert_array_equal(frame[frame.seed == 0]["evaluations"], expected)


def test_long_reference_is_vanilla_run_n_times_longer(tmp_path):
    config = synthetic.Config(function="sphere", methods=("vanilla", "target"), **SMALL)
    frame = synthetic.run(config, results_dir=tmp_path, progress=False)
    long = frame[(frame.method == synthetic.REFERENCE) & (frame.seed == 0)].sort_values("iteration")
    # Target's best gap at T is Vanilla's at N*T, so N*T iterations are enough.
    assert long["iteration"].max() == config.parallelism * config.iterations
    np.testing.assert_allclose(long["gap"], _plain_adam_gaps(config, 0, 30), rtol=1e-6)
    assert (long["evaluations"].diff().dropna() == 1).all()


def test_long_reference_grows_where_a_method_beats_it():
    config = synthetic.Config(function="sphere", **SMALL)
    nt = config.parallelism * config.iterations
    gaps = _plain_adam_gaps(config, 0, 4 * nt)
    grown = synthetic.run_unit(config, synthetic.REFERENCE, 0, beat=float(gaps[nt + 3]))
    assert grown["iteration"].max() == 2 * nt  # doubled: N*T was not enough, 2NT is
    censored = synthetic.run_unit(config, synthetic.REFERENCE, 0, beat=0.0)
    assert censored["iteration"].max() == 4 * nt  # never reached: the longest run, a lower bound
    np.testing.assert_allclose(censored["gap"], gaps, rtol=1e-5)


def test_no_long_reference_without_a_rival():
    config = synthetic.Config(function="sphere", methods=("vanilla",), **SMALL)
    frame = synthetic.run(config, results_dir=None, progress=False)
    assert set(frame.method) == {"vanilla"} and not config.has_reference


def test_same_initial_point_for_every_method():
    config = synthetic.Config(function="levy", methods=("vanilla", "target"), **SMALL)
    frame = synthetic.run(config, results_dir=None, progress=False)
    first = frame[frame.iteration == 0].groupby("seed")["gap"].nunique()
    assert (first == 1).all()


def test_gradient_noise_runs_are_reproducible_and_large_batch_helps():
    config = synthetic.Config(function="sphere", dim=200, iterations=30, seeds=(3,), grad_noise=5.0,
                              methods=("vanilla", "large_batch"), optimizer="sgd", lr=0.05)
    a = synthetic.run(config, results_dir=None, progress=False)
    b = synthetic.run(config, results_dir=None, progress=False)
    pd.testing.assert_frame_equal(a.drop(columns="wall_time"), b.drop(columns="wall_time"))
    final = a[a.iteration == 30].set_index("method")["gap"]
    # Averaging N = 5 noisy gradients cuts the stationary noise floor of SGD (about 5x in variance).
    assert final["large_batch"] < 0.5 * final["vanilla"]


@pytest.mark.parametrize("field, value", [
    ("parallelism", 0), ("history", 0), ("lr", 0.0), ("kernel", "cosine"), ("optimizer", "lbfgs"),
    ("methods", ("vanilla", "magic")), ("dtype", "float16"), ("device", "tpu"), ("seeds", (1, 1)),
    ("select", "best"), ("function", "himmelblau"), ("clip", -1.0), ("backend", "numpy"), ("warmup_pairs", 3),
    ("warmup_pairs", True), ("momentum", 0.9),
])
def test_bad_config_names_the_field_before_any_work(field, value):
    # Every field is checked by the Config itself, so a notebook or the CLI fails before any unit runs.
    with pytest.raises(ValueError, match=field):
        synthetic.Config(**{**SMALL, field: value})


def test_large_batch_on_deterministic_objective_is_refused():
    with pytest.raises(ValueError, match="large_batch"):
        synthetic.Config(methods=("vanilla", "large_batch"))


