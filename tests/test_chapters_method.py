"""Runners of the method and theory chapters: Fig. 1 traces, the estimator checks, Thm. 1, Cor. 2."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from optex import problems
from optex.experiments import cor2, estimator, fig1, thm1
from optex.results import ResultStore


# ------------------------------------------------------------------------------------------- fig1
@pytest.fixture(scope="module")
def trace():
    config = fig1.Config(profile="quick", functions=("rosenbrock",), methods=("target", "optex"), iterations=4)
    return config, fig1.run(config, results_dir=None, progress=False)


def test_fig1_optex_evaluates_n_proxy_points_after_its_cold_start(trace):
    config, frame = trace
    optex = frame[(frame.method == "optex") & (frame.kind == "proxy")]
    counts = optex.groupby("iteration").size()
    assert counts.loc[1] == counts.loc[2] == 1  # fewer than 2 history pairs: a plain step
    assert (counts.loc[3:] == config.parallelism).all()
    steps = frame[(frame.method == "optex") & (frame.kind == "step")].groupby("iteration").size()
    assert steps.equals(counts)
    kept = frame[(frame.method == "optex") & (frame.kind == "step") & frame.selected]
    iterates = frame[(frame.method == "optex") & (frame.kind == "iterate") & (frame.iteration > 0)]
    np.testing.assert_allclose(kept[["x", "y"]].to_numpy(), iterates[["x", "y"]].to_numpy())


def test_fig1_target_proxy_path_is_plain_sequential_adam(trace):
    config, frame = trace
    x = torch.tensor(fig1.STARTS["rosenbrock"], dtype=torch.float64, requires_grad=True)
    adam = torch.optim.Adam([x], lr=config.lr)
    problem = problems.make("rosenbrock", 2)
    plain = [x.detach().clone()]
    for _ in range(config.iterations * config.parallelism):
        adam.zero_grad()
        problem(x, torch).backward()
        adam.step()
        plain.append(x.detach().clone())
    plain = torch.stack(plain).numpy()
    target = frame[frame.method == "target"]
    n = config.parallelism
    for t in range(1, config.iterations + 1):
        proxy = target[(target.iteration == t) & (target.kind == "proxy")].sort_values("process")
        exact = target[(target.iteration == t) & (target.kind == "exact")].sort_values("process")
        np.testing.assert_allclose(proxy[["x", "y"]].to_numpy(), plain[(t - 1) * n: t * n], rtol=0, atol=1e-12)
        np.testing.assert_allclose(exact[["x", "y"]].to_numpy(), plain[(t - 1) * n: t * n + 1], rtol=0, atol=1e-12)


# -------------------------------------------------------------------------------------- estimator
def test_prop41_dense_posterior_equals_the_decoupled_estimator():
    config = estimator.Config(profile="quick", parts=("prop41",), prop_dims=(1, 3), prop_histories=(4, 12), seeds=1)
    frame = estimator.run(config, results_dir=None, progress=False)
    assert set(frame.kernel) == {"rbf", "matern12", "matern32", "matern52"}
    columns = ["mean_vs_library", "var_vs_library", "mean_vs_closed_form", "var_vs_closed_form", "off_diagonal"]
    assert frame[columns].to_numpy().max() < 1e-10


def test_dense_posterior_interpolates_the_history():
    rng = np.random.default_rng(0)
    X, G, Q = rng.standard_normal((6, 2)), rng.standard_normal((6, 2)), rng.standard_normal((3, 2))
    mean, cov = estimator.dense_posterior(X, G, Q, "matern52", 1.0, 1e-3)
    assert np.abs(mean).max() > 1e-3 and cov.shape == (3, 2, 2)
    # At a history point, with almost no noise, the mean is the observed gradient and the variance ~0.
    at_data, spread = estimator.dense_posterior(X, G, X[:1], "rbf", 1.0, 1e-9)
    np.testing.assert_allclose(at_data[0], G[0], atol=1e-5)
    assert np.abs(spread).max() < 1e-6


def test_field_estimate_improves_with_history():
    config = estimator.Config(profile="quick", parts=("field",), function="sphere", field_histories=(3, 30), grid=6,
                              seeds=1)
    frame = estimator.run(config, results_dir=None, progress=False)
    assert (frame.part == "field").sum() == 2 * 36 and (frame.part == "history").sum() == 30
    errors = estimator.field_error(frame).set_index("history")["rel_error"]
    assert errors[30] < 0.2 * errors[3]


def test_cost_model_recovers_known_coefficients():
    dims, sizes = np.array([100, 1000, 10000]), np.array([10, 20, 50, 100])
    d, t0 = (a.ravel() for a in np.meshgrid(dims, sizes))
    frame = pd.DataFrame(dict(part="cost", dim=d, history=t0, parallelism=5,
                              estimate_s=2e-10 * t0 * d + 3e-9 * t0 ** 2 + 1e-4,
                              update_s=1e-10 * 5 * t0 * d + 2e-8 * t0 ** 3 + 5e-4))
    coefficients, predictions = estimator.cost_model(frame)
    coef = coefficients.set_index(["operation", "term"])["coefficient"]
    assert coef["estimate", "T0 d"] == pytest.approx(2e-10, rel=1e-6)
    assert coef["update", "T0^3"] == pytest.approx(2e-8, rel=1e-6)
    assert predictions["rel_error"].max() < 1e-6


# ------------------------------------------------------------------------------------------- thm1
@pytest.mark.parametrize("kernel", thm1.GP_KERNELS)
def test_sampled_fields_are_separable_with_the_kernels_covariance(kernel):
    rng = np.random.default_rng(1)
    points = np.array([[0.0, 0.0], [0.3, -0.2], [0.9, 0.4]])
    draws = np.stack([thm1.sample_field(kernel, 2, 0.5, 64, rng)(points).ravel() for _ in range(4000)])
    empirical = np.cov(draws, rowvar=False, bias=True)  # (point, coordinate) x (point, coordinate)
    scalar = estimator.kernel_matrix(points, points, kernel, 0.5)
    expected = np.kron(scalar, np.eye(2))  # k(x_p, x_q) on matching coordinates, 0 across coordinates
    np.testing.assert_allclose(empirical, expected, atol=0.08)


def test_cor1_exponents_and_beta():
    assert thm1.cor1_exponent("rbf", 5) == 0.5
    assert thm1.cor1_exponent("matern52", 2) == pytest.approx(2.5 / 7)
    assert thm1.cor1_exponent("matern32", 2) == pytest.approx(0.3)
    assert thm1.beta(1, math.exp(-1)) == pytest.approx(1 + 2 + 2)


def test_thm1_bound_holds_and_error_falls_on_a_gp_sample(tmp_path):
    config = thm1.Config(profile="quick", sources=("gp-matern52", "sphere"), histories=(8, 128),
                         synthetic_histories=(8, 64), queries=64, seeds=2)
    frame = thm1.run(config, results_dir=tmp_path, progress=False)
    gp = frame[frame.source == "gp-matern52"].groupby("history")[["error", "std", "coverage"]].mean()
    assert gp.loc[128, "error"] < 0.5 * gp.loc[8, "error"]
    assert gp["coverage"].min() >= 0.9
    assert 0.5 < gp.loc[128, "error"] / (math.sqrt(2) * gp.loc[128, "std"]) < 2.0
    exponents = thm1.decay_exponents(frame, "error", min_history=1).set_index("source")
    assert exponents.loc["gp-matern52", "cor1"] == pytest.approx(2.5 / 7)
    assert math.isnan(exponents.loc["sphere", "cor1"])
    # Cached: a second call only reads, and a missing unit is reported instead of computed.
    again = thm1.run(config, results_dir=tmp_path, progress=False, compute=False)
    pd.testing.assert_frame_equal(again, frame, check_dtype=False)
    with pytest.raises(FileNotFoundError, match="missing"):
        thm1.run(thm1.Config(profile="quick", sources=("sphere",), seeds=1), results_dir=tmp_path, compute=False)


# ------------------------------------------------------------------------------------------- cor2
def test_target_speedup_exponent_is_one(tmp_path):
    config = cor2.Config(profile="quick", parts=("scaling",), panels=("sphere",), methods=("target", "optex"),
                         parallelisms=(1, 2, 4), dim=20, iterations=16, seeds=1)
    frame = cor2.run(config, results_dir=tmp_path, progress=False)
    reach = cor2.iterations_to_target(frame)
    exponents = cor2.speedup_exponents(reach).set_index("method")["exponent"]
    assert exponents["target"] == pytest.approx(1.0, abs=0.05)
    assert 0.0 < exponents["optex"] <= 1.0 + 1e-9
    for unit in config.unit_configs():
        assert list(ResultStore(tmp_path, cor2.FIGURE_ID, unit).units()) == [f"{unit.methods[0]}-seed0"]


def test_budget_and_largest_converging():
    assert [cor2.budget(40, n) for n in (1, 4, 16)] == [40, 40, 20]
    reach = pd.DataFrame(dict(part="stability", lr=[0.1] * 6 + [1.0] * 6, parallelism=[1, 2, 4] * 4,
                              seed=[0, 0, 0, 1, 1, 1] * 2,
                              reached=[True, True, True, True, True, False, True, False, True, True, False, True]))
    largest = cor2.largest_converging(reach).set_index("lr")["largest_n"]
    # lr 0.1: N = 4 converges on one seed of two, which is no majority. lr 1.0: N = 2 fails, so N = 4's
    # success does not count either.
    assert largest[0.1] == 2 and largest[1.0] == 1


# ---------------------------------------------------------------------------------------- configs
@pytest.mark.parametrize("make, field", [
    (lambda: fig1.Config(parallelism=1), "parallelism"),
    (lambda: fig1.Config(functions=("himmelblau",)), "functions"),
    (lambda: estimator.Config(grid=1), "grid"),
    (lambda: estimator.Config(seeds=0), "seeds"),
    (lambda: estimator.Config(parts=("quiver",)), "parts"),
    (lambda: thm1.Config(delta=1.5), "delta"),
    (lambda: thm1.Config(histories=(8,)), "histories"),
    (lambda: thm1.Config(sources=("gp-matern12",)), "sources"),
    (lambda: cor2.Config(parallelisms=(2, 4)), "parallelisms"),
    (lambda: cor2.Config(stability_lrs=(0.1, -1.0)), "stability_lrs"),
    (lambda: cor2.Config(profile="huge"), "profile"),
])
def test_bad_settings_name_the_field(make, field):
    with pytest.raises(ValueError, match=field):
        make()


def test_profiles_fill_unset_sizes_only():
    assert thm1.Config(profile="quick").histories == thm1.PROFILES["quick"]["histories"]
    assert thm1.Config(profile="quick", histories=(4, 8)).histories == (4, 8)
    assert estimator.Config(profile="paper", seeds=2).seed_list == [0, 1]
    assert cor2.Config(profile="quick").seeds == cor2.PROFILES["quick"]["seeds"]
