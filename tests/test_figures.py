"""Figure-level runners (Fig. 2, Fig. 6): the settings they build and the tables they return."""
import numpy as np
import pytest
import torch

from optex import problems
from optex.experiments import fig2, fig6, synthetic


def test_fig2_paper_settings_follow_the_spec():
    configs = fig2.Config().synthetic_configs()
    assert set(configs) == set(fig2.PANELS)
    assert configs["sphere"].dim == 100_000 and configs["ackley-10x"].dim == 1_000_000
    assert configs["rosenbrock"].clip == 100.0 and configs["levy"].clip is None
    for config in configs.values():
        assert (config.iterations, config.parallelism, config.history, config.optimizer, config.lr) == (40, 5, 50, "adam", 0.01)
        assert config.kernel == "matern52" and config.seed_list == [0, 1, 2, 3, 4]


def test_noise_ratio_scales_with_the_gradient():
    config = fig2.Config(profile="quick", panels=("sphere",), noise_ratio=0.5, methods=("vanilla", "large_batch"))
    sub = config.synthetic_configs()["sphere"]
    x0 = synthetic.initial_point(sub, 0)
    rms = float(np.sqrt(np.mean((2 * x0) ** 2)))  # grad of the sphere is 2 theta
    assert sub.grad_noise == pytest.approx(0.5 * rms, rel=2e-3)


def test_fig2_table_has_one_curve_per_panel_method_seed(tmp_path):
    config = fig2.Config(profile="quick", panels=("sphere", "levy"), methods=("vanilla", "optex"), seeds=1)
    frame = fig2.run(config, results_dir=tmp_path, progress=False)
    methods = frame[frame.method != synthetic.REFERENCE]
    assert methods.groupby(["panel", "method", "seed"]).size().eq(21).all()
    # Each panel carries its long Vanilla reference (N*T iterations at least) for the effective speedup.
    assert frame[frame.method == synthetic.REFERENCE].groupby("panel")["iteration"].max().ge(5 * 20).all()
    assert set(frame.panel) == {"sphere", "levy"}
    assert (tmp_path / "fig2").is_dir()


def test_fig6_sequential_curve_is_the_parallel_run_reindexed(tmp_path):
    config = fig6.Config(profile="quick", selects=("last",), histories=(10,), parallelisms=(1, 3), seeds=1)
    frame = fig6.run(config, results_dir=tmp_path, progress=False)
    par = frame[(frame.panel == "parallel") & frame.setting.str.startswith("parallel")]
    seq = frame[(frame.panel == "parallel") & frame.setting.str.startswith("sequential")]
    # sequential iteration k shows the gap the parallel run had after k evaluations
    merged = seq.merge(par, left_on="evaluations", right_on="evaluations", suffixes=("_s", "_p"))
    np.testing.assert_array_equal(merged["gap_s"], merged["gap_p"])
    assert seq["iteration"].max() <= 20
    assert set(frame.panel) == set(fig6.PANELS) | {"reference"}
    assert set(frame[frame.panel == "parallelism"].setting) == {"N=1", "N=3"}


def test_fig6_proxy_ablation_spends_the_same_evaluations(tmp_path):
    # GP mean vs last gradient: same N evaluations per iteration, same selection, one cold start each.
    config = fig6.Config(profile="quick", selects=("last",), histories=(10,), parallelisms=(2,), seeds=1)
    frame = fig6.run(config, results_dir=tmp_path, progress=False)
    proxy = frame[frame.panel == "proxy"]
    assert set(proxy.setting) == {"kernel", "last_gradient"}
    evaluations = proxy.pivot_table(index="iteration", columns="setting", values="evaluations")
    np.testing.assert_array_equal(evaluations["kernel"], evaluations["last_gradient"])
    assert not np.array_equal(*(proxy[proxy.setting == s]["gap"].to_numpy() for s in ("kernel", "last_gradient")))
    reference = frame[frame.panel == "reference"]
    assert reference["iteration"].max() >= 5 * 20 and set(reference.method) == {synthetic.REFERENCE}


def test_fig2_warmup_pairs_reaches_every_panel():
    configs = fig2.Config(profile="quick", warmup_pairs=2).synthetic_configs()
    assert {c.warmup_pairs for c in configs.values()} == {2}
    assert {c.warmup_pairs for c in fig2.Config(profile="quick").synthetic_configs().values()} == {1}


def test_bad_figure_parameters_name_the_field():
    with pytest.raises(ValueError, match="profile"):
        fig2.Config(profile="huge")
    with pytest.raises(ValueError, match="panels"):
        fig2.Config(panels=("himmelblau",))
    with pytest.raises(ValueError, match="histories"):
        fig6.Config(histories=(0,))
    with pytest.raises(ValueError, match="large_batch"):
        fig2.Config(methods=("vanilla", "large_batch"))


def test_rms_gradient_matches_autograd():
    sub = fig2.Config(profile="quick", panels=("rosenbrock",)).synthetic_configs()["rosenbrock"]
    x = torch.tensor(synthetic.initial_point(sub, 0), requires_grad=True)
    problems.make("rosenbrock", sub.dim)(x, torch).backward()
    assert fig2.rms_gradient(sub) == pytest.approx(float(x.grad.pow(2).mean().sqrt()), rel=1e-3)
