"""The non-finite policy of optex.jax.OptEx (the torch backend's: "loses nothing"), decided inside the
compiled iteration, and overflow-safe clipping.

A process whose loss or gradient is not finite takes no step, is never selected and never enters the
history; when every process is non-finite nothing changes at all. References: plain optax loops and
runs of the same objective without the bad evaluations.
"""
from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
optax = pytest.importorskip("optax")

from optex.jax import GradientEstimator, OptEx  # noqa: E402

D, N, LR = 6, 4, 0.05
NAN = float("nan")
ADAM, SGD = optax.adam(LR), optax.sgd(LR)


@pytest.fixture(scope="module", autouse=True)
def _float64():
    with jax.enable_x64(True):
        yield


def loss_fn(x, batch):
    """A smooth loss times the batch's factor: a NaN (or inf) factor poisons exactly that process."""
    w, c = batch
    return w * (0.5 * jnp.sum((x - c) ** 2) + 0.1 * jnp.sum(jnp.sin(3.0 * x)) + 0.05 * jnp.sum(x**4))


def batches(t, bad=(), value=NAN):
    rng = np.random.default_rng(100 + t)
    return [(np.float64(value if s in bad else 1.0), rng.normal(size=D)) for s in range(N)]


def x0():
    return jnp.asarray(np.random.default_rng(7).normal(size=D))


def snapshot(opx):
    """Everything an iteration may change besides the counters and diagnostics, as numpy copies."""
    s = opx.state
    return jax.tree.map(np.array, (opx.params, s.inner_state, s.history, s.last_grad, s.has_last_grad, s.buffers))


def assert_same(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("proxy", ["kernel", "last_gradient", "linesearch", "target", "large_batch"])
@pytest.mark.parametrize("value", [NAN, math.inf])
def test_an_all_non_finite_iteration_changes_nothing(proxy, value):
    """Inserting an iteration where every process is non-finite leaves iterate, optimizer state, history and
    last gradient exactly as they were, and the rest of the run is the run without it, bit for bit."""
    clean, hit = (OptEx(x0(), optimizer=ADAM, parallelism=N, proxy=proxy, history=12) for _ in range(2))
    for t in range(3):
        clean.step(loss_fn, batches(t))
        hit.step(loss_fn, batches(t))
    before = snapshot(hit)
    with pytest.warns(RuntimeWarning, match="iteration 4: .*left unchanged") as record:
        info = hit.step(loss_fn, batches(3, bad=range(N), value=value))
    assert len(record) == 1
    assert info.skipped and info.selected == -1 and math.isnan(info.loss)
    assert info.evaluations == (1 if proxy == "target" else N)  # Target's chain ends at its first process
    assert info.nonfinite == ((0,) if proxy == "target" else tuple(range(N)))
    assert hit.iteration == 4
    assert_same(snapshot(hit), before)
    for t in range(3, 7):
        a, b = clean.step(loss_fn, batches(t)), hit.step(loss_fn, batches(t))
        np.testing.assert_array_equal(clean.theta, hit.theta)
        assert (a.losses, a.selected) == (b.losses, b.selected)


def test_the_issue_example_keeps_theta():
    opx = OptEx(jnp.ones(4), parallelism=3)
    with pytest.warns(RuntimeWarning, match="non-finite"):
        for _ in range(3):
            info = opx.step(lambda p, _: p.sum() * float("nan"))
    np.testing.assert_array_equal(opx.params, np.ones(4))
    assert info.skipped and opx.iteration == 3


def adam_step(theta, state, grad):
    updates, state = ADAM.update(grad, state, theta)
    return optax.apply_updates(theta, updates), state


@pytest.mark.parametrize("select,bad,expected", [
    ("last", (3,), 2), ("last", (2, 3), 1), ("last", (1, 3), 2), ("min_loss", (0,), None), ("min_grad_norm", (1, 2), None),
])
def test_selection_among_the_finite_processes(select, bad, expected):
    """Each bad process is skipped; the kept one is the hand-computed process's real step."""
    opx = OptEx(x0(), optimizer=ADAM, parallelism=N, select=select, history=12)
    for t in range(3):
        opx.step(loss_fn, batches(t))
    theta, state = jnp.array(opx.params), jax.tree.map(jnp.copy, opx.state.inner_state)
    est = GradientEstimator(history=12)
    est.load_state_dict(opx.estimator.state_dict())
    stored = len(est)
    with pytest.warns(RuntimeWarning, match=re.escape(f"iteration 4: process(es) {list(bad)}")):
        info = opx.step(loss_fn, batches(3, bad=bad))
    points, states = [theta], [state]
    for _ in range(N - 1):
        point, st = adam_step(points[-1], states[-1], est.mean(points[-1]))
        points.append(point)
        states.append(st)
    evaluated = [jax.value_and_grad(loss_fn)(points[s], b) for s, b in enumerate(batches(3, bad=bad))]
    good = [s for s in range(N) if s not in bad]
    if expected is None:
        key = [float(v) for v, _ in evaluated] if select == "min_loss" else [float(jnp.linalg.norm(g))
                                                                            for _, g in evaluated]
        expected = min(good, key=lambda s: (key[s], s))
    assert info.selected == expected and info.nonfinite == bad and not info.skipped
    reference, _ = adam_step(points[expected], states[expected], evaluated[expected][1])
    np.testing.assert_allclose(opx.params, reference, rtol=1e-12, atol=1e-13)
    assert len(opx.estimator) == stored + len(good)  # only the finite pairs entered the history
    assert all(math.isnan(info.losses[s]) for s in bad)


def test_target_chain_ends_at_the_first_non_finite_process():
    """Target with select='last' is N plain sequential steps; a NaN at process 2 ends the chain there: the
    processes after it count as not evaluated and the iterate is the plain loop after 2 steps."""
    opx = OptEx(x0(), optimizer=SGD, parallelism=N, proxy="target")
    data = batches(0, bad=(2,))
    with pytest.warns(RuntimeWarning, match="\\[2\\]"):
        info = opx.step(loss_fn, data)
    assert info.evaluations == 3 and info.selected == 1 and len(info.losses) == 3 and info.nonfinite == (2,)
    p, state = x0(), SGD.init(x0())
    for batch in data[:2]:
        updates, state = SGD.update(jax.grad(loss_fn)(p, batch), state, p)
        p = optax.apply_updates(p, updates)
    np.testing.assert_array_equal(opx.params, p)


def test_large_batch_averages_only_the_finite_gradients():
    opx = OptEx(x0(), optimizer=ADAM, parallelism=N, proxy="large_batch")
    data = batches(0, bad=(1, 3))
    with pytest.warns(RuntimeWarning):
        info = opx.step(loss_fn, data)
    pairs = [jax.value_and_grad(loss_fn)(x0(), data[s]) for s in (0, 2)]
    reference, _ = adam_step(x0(), ADAM.init(x0()), (pairs[0][1] + pairs[1][1]) / 2)
    np.testing.assert_allclose(opx.params, reference, rtol=1e-14, atol=0)
    assert info.loss == pytest.approx(float(pairs[0][0] + pairs[1][0]) / 2, rel=1e-14) and info.nonfinite == (1, 3)


@pytest.mark.parametrize("proxy", ["linesearch", "last_gradient"])
def test_last_gradient_is_only_ever_a_finite_selected_gradient(proxy):
    opx = OptEx(x0(), optimizer=SGD, parallelism=N, proxy=proxy)
    opx.step(loss_fn, batches(0))
    last = np.array(opx.state.last_grad)
    with pytest.warns(RuntimeWarning):
        opx.step(loss_fn, batches(1, bad=range(N)))
    np.testing.assert_array_equal(opx.state.last_grad, last)
    with pytest.warns(RuntimeWarning):
        info = opx.step(loss_fn, batches(2, bad=(0,)))
    assert np.isfinite(opx.state.last_grad).all() and info.selected != 0


def test_raise_completes_the_iteration_then_raises():
    skip = OptEx(x0(), optimizer=ADAM, parallelism=N, history=12)
    strict = OptEx(x0(), optimizer=ADAM, parallelism=N, history=12, on_nonfinite="raise")
    for t in range(2):
        skip.step(loss_fn, batches(t))
        strict.step(loss_fn, batches(t))
    with pytest.warns(RuntimeWarning):
        skip.step(loss_fn, batches(2, bad=(3,)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning besides the exception
        with pytest.raises(FloatingPointError, match="iteration 3: process\\(es\\) \\[3\\]"):
            strict.step(loss_fn, batches(2, bad=(3,)))
    assert strict.iteration == 3
    assert_same(snapshot(strict), snapshot(skip))  # the same outcome as the skip policy


def test_a_nan_learning_rate_is_a_clear_error():
    opx = OptEx(jnp.ones(4), optimizer=optax.adam(float("nan")), parallelism=2)
    with pytest.raises(ValueError, match="optimizer turned a finite gradient into a non-finite step"):
        opx.step(lambda p, _: jnp.sum((p - 2.0) ** 2))


# ---------------------------------------------------------------------------- float32: clipping and scales
def test_clipping_does_not_overflow_float32():
    """Gradients of 1e20 per entry: the float32 norm (~1.5e21) overflows when squared naively, which would
    make the clip factor 0 and freeze training. Here the step is exactly max_grad_norm long."""
    d, lr, max_norm = 100, 0.1, 2.0
    with jax.enable_x64(False):
        direction = jnp.linspace(1.0, 2.0, d)
        opx = OptEx(jnp.zeros(d), optimizer=optax.sgd(lr), parallelism=1, proxy="none", max_grad_norm=max_norm)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            info = opx.step(lambda p, _: 1e20 * jnp.sum(direction * p))
        unit = np.linspace(1.0, 2.0, d)
        np.testing.assert_allclose(np.asarray(opx.params, np.float64), -lr * max_norm * unit / np.linalg.norm(unit),
                                   rtol=1e-6)
        assert info.grad_norm == pytest.approx(1e20 * np.linalg.norm(unit), rel=1e-6)


def test_a_norm_beyond_float32_range_is_a_non_finite_gradient():
    """Entries of 1e38 over d = 100: the norm 1e39 is not representable in float32, so with clipping the
    process counts as non-finite and nothing moves."""
    with jax.enable_x64(False):
        opx = OptEx(jnp.zeros(100), optimizer=optax.sgd(0.1), parallelism=1, proxy="none", max_grad_norm=1.0)
        with pytest.warns(RuntimeWarning, match="left unchanged"):
            info = opx.step(lambda p, _: 1e38 * jnp.sum(p))
        assert info.skipped and not np.asarray(opx.params).any()


@pytest.mark.parametrize("scale", [1e-20, 1e20])
def test_optex_with_extreme_gradient_scales_follows_the_unit_run(scale):
    """SGD is linear in the gradient: OptEx on scale * f with lr / scale takes the unit run's steps (up to
    rounding) in float32 -- the history's gradient products and the clip norms stay representable."""
    with jax.enable_x64(False):
        start = jnp.asarray(np.random.default_rng(3).uniform(-1, 1, 50), jnp.float32)

        def unit_loss(p, _):
            return jnp.sum((p - 0.3) ** 2) + 0.1 * jnp.sum(jnp.sin(3 * p))

        def scaled_loss(p, _):
            return scale * unit_loss(p, _)

        def make(factor):
            return OptEx(start, optimizer=optax.sgd(0.05 / factor), parallelism=4, history=20, max_grad_norm=1e3 * factor)

        unit, scaled = make(1.0), make(scale)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for _ in range(6):
                a, b = unit.step(unit_loss), scaled.step(scaled_loss)
        np.testing.assert_allclose(scaled.params, unit.params, rtol=1e-4, atol=1e-5)
        assert b.proxy_cosine == pytest.approx(a.proxy_cosine, rel=1e-3, abs=1e-4)
        assert b.lengthscale == pytest.approx(a.lengthscale, rel=1e-4)
