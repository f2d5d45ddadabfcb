"""One cold-start iteration (warmup_pairs=1) and proxy="last_gradient" in optex.jax.OptEx.

With one pair in the history and a data-driven lengthscale the surrogate is the stored gradient, so
OptEx's first proxy iteration is exactly a last_gradient iteration; under plain SGD last_gradient
visits LineSearch's points theta - s lr g; with momentum the two differ.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
optax = pytest.importorskip("optax")

from optex.jax import OptEx  # noqa: E402

N, LR = 4, 0.05
ADAM, SGD, MOMENTUM = optax.adam(LR), optax.sgd(LR), optax.sgd(LR, momentum=0.9)


@pytest.fixture(scope="module", autouse=True)
def _float64():
    with jax.enable_x64(True):
        yield


def loss_fn(x, batch):
    w, c = batch
    return 0.5 * jnp.sum(w * (x - c) ** 2) + 0.3 * jnp.sum(jnp.sin(2.0 * x))


def batches(t, d=6):
    rng = np.random.default_rng(20 + t)
    return [(1.0 + rng.random(d), rng.normal(size=d)) for _ in range(N)]


def x0(d=6):
    return jnp.asarray(np.random.default_rng(4).normal(size=d))


@pytest.mark.parametrize("lengthscale", ["auto", "median"])
@pytest.mark.parametrize("optimizer", [ADAM, MOMENTUM], ids=["adam", "momentum"])
def test_first_proxy_iteration_at_t2_is_a_last_gradient_iteration(lengthscale, optimizer):
    optex = OptEx(x0(), optimizer=optimizer, parallelism=N, lengthscale=lengthscale)
    ablation = OptEx(x0(), optimizer=optimizer, parallelism=N, proxy="last_gradient")
    assert [optex.step(loss_fn, batches(0)).evaluations, ablation.step(loss_fn, batches(0)).evaluations] == [1, 1]
    a, b = optex.step(loss_fn, batches(1)), ablation.step(loss_fn, batches(1))
    assert a.evaluations == N and len(a.proxy_cosine) == N - 1  # t = 2: the first proxy iteration
    # The proxy gradients are equal bit for bit; the two compiled programs may round the optimizer's
    # arithmetic differently in the last bit (XLA fuses it differently when the gradient is a loop constant).
    np.testing.assert_allclose(optex.params, ablation.params, rtol=1e-14, atol=1e-15)
    for u, v in zip(jax.tree.leaves(optex.state.inner_state), jax.tree.leaves(ablation.state.inner_state)):
        np.testing.assert_allclose(u, v, rtol=1e-14, atol=1e-15)
    assert a.selected == b.selected
    for u, v in ((a.losses, b.losses), (a.proxy_cosine, b.proxy_cosine), (a.proxy_rel_error, b.proxy_rel_error)):
        assert u == pytest.approx(v, rel=1e-13, abs=1e-14)
    assert a.lengthscale == math.inf and b.lengthscale is None
    assert len(optex.estimator) == 1 + N


def test_warmup_pairs_two_waits_for_two_pairs():
    opx = OptEx(x0(), optimizer=ADAM, parallelism=N, warmup_pairs=2)
    assert [opx.step(loss_fn, batches(t)).evaluations for t in range(3)] == [1, 1, N]


@pytest.mark.parametrize("select", ["last", "min_loss"])
def test_last_gradient_drives_the_proxy_steps_with_the_last_selected_gradient(select):
    opx = OptEx(x0(), optimizer=SGD, parallelism=N, proxy="last_gradient", select=select)
    info = opx.step(loss_fn, batches(0), trace=True)
    assert info.evaluations == 1 and info.mus is None  # the first iteration is a cold Vanilla step
    for t in range(1, 5):
        x, g_last = np.array(opx.params), np.array(opx.state.last_grad)
        info = opx.step(loss_fn, batches(t), trace=True)
        expected = np.stack([x - s * LR * g_last for s in range(N)])  # plain SGD: theta - s lr g
        np.testing.assert_allclose(info.points, expected, rtol=1e-13, atol=1e-14)
        np.testing.assert_array_equal(info.mus, np.broadcast_to(g_last, (N - 1, x.size)))
        true = [np.asarray(jax.grad(loss_fn)(info.points[s], batches(t)[s])) for s in range(N - 1)]
        cos = [g_last @ g / (np.linalg.norm(g_last) * np.linalg.norm(g)) for g in true]
        rel = [np.linalg.norm(g_last - g) / np.linalg.norm(g) for g in true]
        assert info.proxy_cosine == pytest.approx(cos, rel=1e-12)
        assert info.proxy_rel_error == pytest.approx(rel, rel=1e-12)


def test_under_plain_sgd_last_gradient_visits_linesearchs_points():
    ablation = OptEx(x0(), optimizer=SGD, parallelism=N, proxy="last_gradient", select="min_loss")
    linesearch = OptEx(x0(), optimizer=SGD, parallelism=N, proxy="linesearch")
    for t in range(6):
        a, b = ablation.step(loss_fn, batches(t), trace=True), linesearch.step(loss_fn, batches(t), trace=True)
        np.testing.assert_allclose(a.points, b.points, rtol=1e-13, atol=1e-14)
        assert a.selected == b.selected
        np.testing.assert_allclose(ablation.params, linesearch.params, rtol=1e-13, atol=1e-14)


def test_with_momentum_last_gradient_and_linesearch_differ():
    ablation = OptEx(x0(), optimizer=MOMENTUM, parallelism=N, proxy="last_gradient", select="min_loss")
    linesearch = OptEx(x0(), optimizer=MOMENTUM, parallelism=N, proxy="linesearch")
    ablation.step(loss_fn, batches(0))
    linesearch.step(loss_fn, batches(0))
    a, b = ablation.step(loss_fn, batches(1), trace=True), linesearch.step(loss_fn, batches(1), trace=True)
    np.testing.assert_array_equal(a.points[1], b.points[1])  # one step along g from the same state: the same point
    assert not np.allclose(a.points[2:], b.points[2:])  # momentum accumulates along the chain
