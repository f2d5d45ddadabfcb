"""The torch and JAX backends follow the same trajectories (float64) on the synthetic functions of Sec. 6.1.

Every proxy with select="last" and every select with proxy="kernel", for SGD and Adam, from the same
theta_0: after T = 50 sequential iterations max|theta_torch - theta_jax| / max(|theta|_inf, 1) <= 1e-6.

To compile once per (proxy, select, optimizer) rather than once per function, the JAX objective picks
the function with ``lax.switch`` on an integer passed as every process's batch; torch runs each
function directly with ``batches=None``. The objective values are the same (the batch only names the
function), so both backends solve the same deterministic problems.
"""
from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
optax = pytest.importorskip("optax")

import optex.jax  # noqa: E402
import optex.torch  # noqa: E402
from optex import problems  # noqa: E402

D, N, T0, ITERATIONS, LR, TOL = 32, 5, 20, 50, 1e-2, 1e-6
FUNCTIONS = ("sphere", "ackley", "rosenbrock", "levy")
# Scaled so that one learning rate keeps SGD, and OptEx around it, stable on all four (Rosenbrock's curvature ~ 1e3;
# at 0.1 OptEx-SGD with one-pair warm-up diverges, and a frozen run would compare nothing).
SCALE = {"sphere": 1.0, "ackley": 1.0, "rosenbrock": 0.05, "levy": 1.0}
PROBLEMS = {name: problems.make(name, D) for name in FUNCTIONS}
CONFIGS = [(proxy, "last") for proxy in ("none", "kernel", "target", "linesearch", "large_batch")] + [
    ("kernel", "min_loss"), ("kernel", "min_grad_norm")]
TORCH_OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}
JAX_OPTIMIZERS = {"sgd": optax.sgd(LR), "adam": optax.adam(LR)}


@pytest.fixture(scope="module", autouse=True)
def _float64_one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with jax.enable_x64(True):
        yield
    torch.set_num_threads(threads)


def _torch_loss(name, x, batch):
    return SCALE[name] * PROBLEMS[name](x, torch)


def _jax_branch(name, x):
    return SCALE[name] * PROBLEMS[name](x, jnp)


_JAX_BRANCHES = tuple(partial(_jax_branch, name) for name in FUNCTIONS)


def _jax_loss(x, index):
    return jax.lax.switch(index, _JAX_BRANCHES, x)


def initial_point(seed=0):
    return np.random.default_rng(seed).uniform(-1.0, 1.0, D)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("proxy, select", CONFIGS)
def test_torch_and_jax_trajectories_agree(proxy, select, optimizer):
    n = 1 if proxy == "none" else N
    settings = dict(parallelism=n, history=T0, proxy=proxy, select=select)
    errors = {}
    for index, name in enumerate(FUNCTIONS):
        x0 = initial_point(index)
        with_torch = optex.torch.OptEx(torch.tensor(x0), TORCH_OPTIMIZERS[optimizer], lr=LR, **settings)
        with_jax = optex.jax.OptEx(jnp.asarray(x0), optimizer=JAX_OPTIMIZERS[optimizer], **settings)
        loss = partial(_torch_loss, name)
        batches = [np.int32(index)] * n
        for _ in range(ITERATIONS):
            a, b = with_torch.step(loss), with_jax.step(_jax_loss, batches)
            assert (a.selected, a.evaluations, len(a.losses)) == (b.selected, b.evaluations, len(b.losses))
            assert not (a.nonfinite or b.nonfinite), (name, "a diverged run would only compare frozen iterates")
        theta_torch, theta_jax = with_torch.params.numpy(), np.asarray(with_jax.params)
        assert np.isfinite(theta_torch).all()
        errors[name] = np.abs(theta_torch - theta_jax).max() / max(np.abs(theta_torch).max(), 1.0)
    assert max(errors.values()) <= TOL, errors


@pytest.mark.parametrize("kernel, lengthscale, normalize", [("matern52", "auto", False), ("matern32", 0.7, True)])
def test_estimators_agree(kernel, lengthscale, normalize):
    """Same posterior mean, variance and lengthscale through ring-buffer wrap-around and rejected NaN rows."""
    rng = np.random.default_rng(0)
    settings = dict(kernel=kernel, lengthscale=lengthscale, history=7, normalize=normalize)
    with_torch, with_jax = optex.torch.GradientEstimator(**settings), optex.jax.GradientEstimator(**settings)
    for step in range(6):
        thetas, grads = rng.normal(size=(4, D)) + 0.1 * step, rng.normal(size=(4, D))
        thetas[step % 4, 0] = np.nan if step == 3 else thetas[step % 4, 0]
        assert with_torch.add(torch.tensor(thetas), torch.tensor(grads)) == with_jax.add(thetas, grads)
        assert len(with_torch) == len(with_jax)
        queries = rng.normal(size=(3, D))
        np.testing.assert_allclose(with_torch.mean(torch.tensor(queries)).numpy(), np.asarray(with_jax.mean(queries)),
                                   rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(with_torch.variance(torch.tensor(queries)).numpy(),
                                   np.asarray(with_jax.variance(queries)), rtol=1e-9, atol=1e-12)
        assert with_torch.lengthscale_ == pytest.approx(with_jax.lengthscale_, rel=1e-12)
