"""Synthetic objectives: minima, analytic gradients, noise model, and the same values in every backend."""
import math

import numpy as np
import pytest
import torch

from optex import problems

FUNCS = ("sphere", "ackley", "rosenbrock", "levy", "quadratic")


@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("dim", [2, 7, 1000])
def test_minimum_at_argmin(name, dim):
    problem = problems.make(name, dim)
    x = torch.as_tensor(problem.argmin(), dtype=torch.float64)
    assert abs(float(problem.gap(x, torch))) < 1e-12
    # and strictly positive nearby
    assert float(problem.gap(x + 0.1, torch)) > 0


def _numeric_grad(problem, x):
    eps = 1e-6
    grad = np.zeros_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = eps
        hi = float(problem(torch.as_tensor(x + e), torch))
        lo = float(problem(torch.as_tensor(x - e), torch))
        grad[i] = (hi - lo) / (2 * eps)
    return grad


def test_analytic_gradients():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, 6)
    # Rosenbrock: d/dx_i = -400 x_i (x_{i+1} - x_i^2) - 2 (1 - x_i) + 200 (x_i - x_{i-1}^2)
    expected = np.zeros(6)
    expected[:-1] += -400 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2 * (1 - x[:-1])
    expected[1:] += 200 * (x[1:] - x[:-1] ** 2)
    t = torch.tensor(x, requires_grad=True)
    problems.make("rosenbrock", 6)(t, torch).backward()
    np.testing.assert_allclose(t.grad.numpy(), expected, rtol=1e-12)
    for name in ("ackley", "levy", "sphere"):
        problem = problems.make(name, 6)
        t = torch.tensor(x, requires_grad=True)
        problem(t, torch).backward()
        np.testing.assert_allclose(t.grad.numpy(), _numeric_grad(problem, x), rtol=1e-6, atol=1e-8)


def test_known_values():
    # Ackley at (1, ..., 1): -20 e^{-0.2} - e^{cos 2 pi} + 20 + e = 20 - 20 e^{-0.2}
    x = torch.ones(5, dtype=torch.float64)
    assert float(problems.make("ackley", 5)(x, torch)) == pytest.approx(20 - 20 * math.exp(-0.2), rel=1e-12)
    # Levy at 0: w = 3/4 everywhere
    d, w = 4, 0.75
    expected = (math.sin(math.pi * w) ** 2 + (d - 1) * (w - 1) ** 2 * (1 + 10 * math.sin(math.pi * w + 1) ** 2)
                + (w - 1) ** 2 * (1 + math.sin(2 * math.pi * w) ** 2))
    assert float(problems.make("levy", d)(torch.zeros(d, dtype=torch.float64), torch)) == pytest.approx(expected)


def test_quadratic_condition_number():
    problem = problems.make("quadratic", 10, condition=1000.0)
    hess = torch.autograd.functional.hessian(lambda x: problem(x, torch), torch.zeros(10, dtype=torch.float64))
    eig = torch.linalg.eigvalsh(hess)
    assert float(eig.max() / eig.min()) == pytest.approx(1000.0, rel=1e-9)


def test_gradient_noise_is_exactly_gaussian_shift():
    sigma = 0.3
    problem = problems.make("sphere", 50, grad_noise=sigma)
    x = torch.linspace(-1, 1, 50, dtype=torch.float64, requires_grad=True)
    xi = torch.randn(50, dtype=torch.float64)
    problem.loss(x, xi, torch).backward()
    np.testing.assert_allclose(x.grad.numpy(), (2 * x + sigma * xi).detach().numpy(), rtol=1e-12)
    # no batch -> the noiseless F
    assert float(problem.loss(x, None, torch)) == pytest.approx(float(problem(x, torch)))


def test_batched_last_axis():
    problem = problems.make("levy", 8)
    xs = torch.randn(3, 8, dtype=torch.float64)
    batched = problem(xs, torch)
    assert batched.shape == (3,)
    for i in range(3):
        assert float(batched[i]) == pytest.approx(float(problem(xs[i], torch)))


@pytest.mark.parametrize("name", FUNCS)
def test_same_values_in_jax(name):
    jnp = pytest.importorskip("jax.numpy")
    import jax

    jax.config.update("jax_enable_x64", True)
    problem = problems.make(name, 9)
    x = np.random.default_rng(1).uniform(-2, 2, 9)
    assert float(problem(jnp.asarray(x), jnp)) == pytest.approx(float(problem(torch.as_tensor(x), torch)), rel=1e-12)


@pytest.mark.parametrize("kwargs, word", [
    (dict(name="nope", dim=3), "function"), (dict(name="sphere", dim=0), "dim"),
    (dict(name="sphere", dim=3, grad_noise=-1.0), "grad_noise"), (dict(name="rosenbrock", dim=1), "dim"),
    (dict(name="quadratic", dim=3, condition=0.5), "condition"),
])
def test_bad_parameters(kwargs, word):
    with pytest.raises(ValueError, match=word):
        problems.make(**kwargs)
