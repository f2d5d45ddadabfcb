"""The synthetic runner, its result cache (hash, atomic writes, resume), summaries and the CLI."""
import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from optex import analysis, problems, results
from optex.cli import main
from optex.experiments import synthetic

SMALL = dict(dim=30, iterations=6, seeds=2, history=10)


def test_tidy_table_and_reference_loop(tmp_path):
    config = synthetic.Config(function="sphere", methods=("vanilla", "optex"), **SMALL)
    frame = synthetic.run(config, results_dir=tmp_path, progress=False)
    assert set(frame.columns) >= {"function", "method", "seed", "iteration", "gap", "evaluations", "wall_time"}
    assert len(frame) == 2 * 2 * (6 + 1)
    # Vanilla equals a plain torch.optim loop from the same initial point.
    x = torch.tensor(synthetic.initial_point(config, 1), dtype=torch.float32, requires_grad=True)
    opt = torch.optim.Adam([x], lr=config.lr)
    problem = problems.make("sphere", config.dim)
    gaps = [float(problem.gap(x.detach(), torch))]
    for _ in range(config.iterations):
        opt.zero_grad()
        problem(x, torch).backward()
        opt.step()
        gaps.append(float(problem.gap(x.detach(), torch)))
    ours = frame[(frame.method == "vanilla") & (frame.seed == 1)].sort_values("iteration")
    np.testing.assert_allclose(ours["gap"].to_numpy(), gaps, rtol=1e-6)
    # Cumulative gradient evaluations: N per OptEx iteration after the 2 cold-start iterations.
    evals = frame[(frame.method == "optex") & (frame.seed == 0)]["evaluations"].to_numpy()
    np.testing.assert_array_equal(evals, [0, 1, 2, 7, 12, 17, 22])


def test_same_initial_point_for_every_method():
    config = synthetic.Config(function="levy", methods=("vanilla", "target"), **SMALL)
    frame = synthetic.run(config, results_dir=None, progress=False)
    first = frame[frame.iteration == 0].groupby("seed")["gap"].nunique()
    assert (first == 1).all()


def test_cache_key_ignores_execution_options():
    base = synthetic.Config(**SMALL)
    assert results.config_hash(base) == results.config_hash(dataclasses.replace(base, device="auto", backend="jax"))
    assert results.config_hash(base) != results.config_hash(dataclasses.replace(base, lr=0.02))


def test_resume_recomputes_only_missing_units(tmp_path, monkeypatch):
    config = synthetic.Config(function="sphere", methods=("vanilla", "optex"), **SMALL)
    first = synthetic.run(config, results_dir=tmp_path, progress=False)
    store = results.ResultStore(tmp_path, synthetic.FIGURE_ID, config)
    (store.dir / "optex-seed1.csv").unlink()  # as if killed before this unit finished
    calls = []
    original = synthetic.run_unit
    monkeypatch.setattr(synthetic, "run_unit", lambda c, m, s: calls.append((m, s)) or original(c, m, s))
    second = synthetic.run(config, results_dir=tmp_path, progress=False)
    assert calls == [("optex", 1)]
    pd.testing.assert_frame_equal(first.drop(columns="wall_time"), second.drop(columns="wall_time"), check_dtype=False)
    manifest = json.loads((store.dir / "manifest.json").read_text())
    assert manifest["settings"]["lr"] == config.lr
    unit = manifest["units"]["optex-seed1"]
    assert {"commit", "device", "versions", "date", "wall_time_s"} <= set(unit)


def test_compute_false_refuses_to_start_work(tmp_path):
    config = synthetic.Config(**SMALL)
    with pytest.raises(FileNotFoundError, match="missing"):
        synthetic.run(config, results_dir=tmp_path, compute=False, progress=False)


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "a.txt"
    results.atomic_write(path, "old")

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(results.os, "fsync", crash)
    with pytest.raises(OSError):
        results.atomic_write(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


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
    ("select", "best"), ("function", "himmelblau"), ("clip", -1.0), ("backend", "numpy"),
])
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field if field != "optimizer" else "optimizer"):
        config = synthetic.Config(**{**SMALL, field: value})
        synthetic.run_unit(config, "vanilla", 0)


def test_large_batch_on_deterministic_objective_is_refused():
    with pytest.raises(ValueError, match="large_batch"):
        synthetic.Config(methods=("vanilla", "large_batch"))


def test_speedup_table_counts_censored_seeds():
    rows = []
    for seed in range(3):
        for it, gap in enumerate([8, 4, 2, 1]):
            rows.append(dict(function="f", method="vanilla", seed=seed, iteration=it, gap=gap))
        for it, gap in enumerate([8, 1, 1, 1] if seed < 2 else [8, 8, 8, 8]):
            rows.append(dict(function="f", method="fast", seed=seed, iteration=it, gap=gap))
    table = analysis.speedup_table(pd.DataFrame(rows)).set_index("method")
    assert table.loc["fast", "speedup"] == pytest.approx(3.0)
    assert table.loc["fast", "censored"] == 1
    assert table.loc["vanilla", "speedup"] == pytest.approx(1.0)


def test_mean_ci_matches_t_interval():
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    mean, low, high = analysis.mean_ci(values)
    half = 2.7764451051977987 * values.std(ddof=1) / math.sqrt(5)
    assert (mean, low, high) == pytest.approx((3.0, 3.0 - half, 3.0 + half))


def test_cli_runs_and_reports(tmp_path, capsys):
    code = main(["run", "synthetic", "--function", "sphere", "--dim", "20", "--iterations", "5", "--seeds", "2",
                 "--history", "10", "--methods", "vanilla,optex", "--out", str(tmp_path), "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "optex" in out and "speedup" in out
    assert any(tmp_path.glob("synthetic/*/optex-seed1.csv"))


def test_cli_bad_value_is_one_clear_error(tmp_path, capsys):
    assert main(["run", "synthetic", "--parallelism", "0", "--out", str(tmp_path)]) == 2
    assert "parallelism" in capsys.readouterr().err
