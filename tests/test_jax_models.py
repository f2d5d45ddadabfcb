"""optex.jax.OptEx on a model written as plain functions: a BatchNorm MLP with running statistics as a
buffers pytree, dropout driven by the per-process key, checkpoints and the trace hook, each against an
independent reference (a plain optax loop, a plain forward pass, an uninterrupted run)."""
from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
optax = pytest.importorskip("optax")

from optex.jax import GradientEstimator, OptEx  # noqa: E402

N, LR = 4, 0.02
ADAM = optax.adam(LR)
MOMENTUM = optax.sgd(0.05, momentum=0.9)


@pytest.fixture(scope="module", autouse=True)
def _float64():
    with jax.enable_x64(True):
        yield


def init_model(seed=0):
    rng = np.random.default_rng(seed)
    # No bias before BatchNorm: its gradient is rounding noise, which Adam would amplify into steps.
    params = {"w1": rng.normal(size=(5, 16)) / np.sqrt(5), "gamma": np.ones(16),
              "beta": np.zeros(16), "w2": rng.normal(size=(16, 1)) / 4, "b2": np.zeros(1)}
    buffers = {"mean": np.zeros(16), "var": np.ones(16), "count": np.zeros((), np.int32)}
    return jax.tree.map(jnp.asarray, params), jax.tree.map(jnp.asarray, buffers)


def forward(params, buffers, x, dropout=0.0, key=None):
    """Linear, BatchNorm in training mode (running statistics updated with momentum 0.1), tanh, dropout,
    linear -> (output, new buffers)."""
    h = x @ params["w1"]
    mean, var = h.mean(0), h.var(0)
    new = {"mean": 0.9 * buffers["mean"] + 0.1 * mean, "var": 0.9 * buffers["var"] + 0.1 * var * len(x) / (len(x) - 1),
           "count": buffers["count"] + 1}
    h = jnp.tanh((h - mean) / jnp.sqrt(var + 1e-5) * params["gamma"] + params["beta"])
    if dropout:
        h = jnp.where(jax.random.bernoulli(key, 1.0 - dropout, h.shape), h / (1.0 - dropout), 0.0)
    return h @ params["w2"] + params["b2"], new


def loss_fn(params, buffers, batch):
    x, y = batch
    out, new = forward(params, buffers, x)
    return jnp.mean((out - y) ** 2), new


def dropout_loss(params, buffers, batch, key):
    x, y = batch
    out, new = forward(params, buffers, x, dropout=0.3, key=key)
    return jnp.mean((out - y) ** 2), new


def data(steps, n=N, size=32, seed=1):
    rng = np.random.default_rng(seed)
    return [[(rng.normal(size=(size, 5)), rng.normal(size=(size, 1))) for _ in range(n)] for _ in range(steps)]


def assert_trees(a, b, exact=True):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        if exact:
            np.testing.assert_array_equal(u, v)
        else:
            np.testing.assert_allclose(u, v, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("proxy", ["none", "kernel"])
def test_parallelism_one_is_the_plain_loop_running_stats_included(proxy):
    params, buffers = init_model()
    opx = OptEx(params, optimizer=ADAM, parallelism=1, proxy=proxy, buffers=buffers)
    state = ADAM.init(params)

    @jax.jit
    def plain(params, buffers, state, batch):
        (_, buffers), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, buffers, batch)
        updates, state = ADAM.update(grads, state, params)
        return optax.apply_updates(params, updates), buffers, state

    for (batch,) in data(10, n=1):
        opx.step(loss_fn, [batch])
        params, buffers, state = plain(params, buffers, state, batch)
    # Equal up to the last bits: XLA fuses the same arithmetic differently inside OptEx's compiled iteration
    # (and the kernel path evaluates through a vmap over one process).
    assert_trees((opx.params, opx.buffers), (params, buffers), exact=False)
    assert int(opx.buffers["count"]) == 10


@pytest.mark.parametrize("parallel, select", [("vmap", "min_loss"), ("loop", "last")])
def test_running_stats_are_those_of_the_selected_process(parallel, select):
    """With N = 4 the buffers after each step are those of one plain forward pass from the previous buffers at
    the selected process's point on its batch; the count advances once per sequential iteration."""
    params, buffers = init_model()
    opx = OptEx(params, optimizer=ADAM, parallelism=N, select=select, parallel=parallel, history=20, buffers=buffers)
    picked = set()
    for t, batches in enumerate(data(6)):
        before = jax.tree.map(jnp.copy, opx.buffers)
        info = opx.step(loss_fn, batches, trace=True)
        picked.add(info.selected)
        _, expected = forward(opx.unflatten(info.points[info.selected]), before, batches[info.selected][0])
        assert_trees(opx.buffers, expected, exact=False)
        assert int(opx.buffers["count"]) == t + 1
    if select == "min_loss":
        assert len(picked) > 1


def test_target_with_batchnorm_is_n_times_t_sequential_steps():
    params, buffers = init_model()
    opx = OptEx(params, optimizer=ADAM, parallelism=N, proxy="target", buffers=buffers)
    state = ADAM.init(params)
    for batches in data(3):
        opx.step(loss_fn, batches)
        for batch in batches:
            (_, buffers), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, buffers, batch)
            updates, state = ADAM.update(grads, state, params)
            params = optax.apply_updates(params, updates)
    assert_trees((opx.params, opx.buffers), (params, buffers), exact=False)
    assert int(opx.buffers["count"]) == 3 * N


def test_large_batch_keeps_the_mean_of_the_updated_statistics():
    params, buffers = init_model()
    opx = OptEx(params, optimizer=ADAM, parallelism=N, proxy="large_batch", buffers=buffers)
    batches = data(1)[0]
    opx.step(loss_fn, batches)
    updated = [forward(params, buffers, x)[1] for x, _ in batches]
    np.testing.assert_allclose(opx.buffers["mean"], np.mean([u["mean"] for u in updated], 0), rtol=1e-13)
    np.testing.assert_allclose(opx.buffers["var"], np.mean([u["var"] for u in updated], 0), rtol=1e-13)
    assert int(opx.buffers["count"]) == 1


# ---------------------------------------------------------------------------- dropout and seeds
def dropout_run(seed, steps=4):
    params, buffers = init_model()
    opx = OptEx(params, optimizer=ADAM, parallelism=N, history=20, buffers=buffers, seed=seed)
    return opx, [opx.step(dropout_loss, batches) for batches in data(steps)]


def test_dropout_runs_are_reproducible_by_seed():
    (a, infos_a), (b, infos_b), (_, infos_c) = dropout_run(3), dropout_run(3), dropout_run(4)
    assert_trees((a.params, a.buffers), (b.params, b.buffers))
    assert [i.losses for i in infos_a] == [i.losses for i in infos_b]
    assert [i.losses for i in infos_a] != [i.losses for i in infos_c]


def test_each_process_draws_its_own_dropout_mask():
    """N copies of one batch at one point (LargeBatch): independent masks make the N losses differ."""
    params, buffers = init_model()
    opx = OptEx(params, optimizer=ADAM, parallelism=N, proxy="large_batch", buffers=buffers, seed=0)
    batch = data(1, n=1)[0][0]
    opx.step(dropout_loss, [batch] * N)
    assert len({round(float(v), 8) for v in opx.state.info.losses}) == N


# ---------------------------------------------------------------------------- checkpoints
def test_save_at_17_of_40_and_continue_bit_for_bit(tmp_path):
    """BatchNorm, dropout, a seed, minibatches, Adam, the kernel history: the resumed run equals the
    uninterrupted one bit for bit (iterate, buffers, every StepInfo)."""
    batches = data(40, n=3, size=16)

    def make():
        params, buffers = init_model()
        return OptEx(params, optimizer=ADAM, parallelism=3, history=12, buffers=buffers, seed=7)

    whole = make()
    infos = [whole.step(dropout_loss, batches[t]) for t in range(40)]
    first = make()
    for t in range(17):
        first.step(dropout_loss, batches[t])
    np.savez(tmp_path / "optex.npz", **first.state_dict())
    resumed = make()  # a fresh object with the same settings
    resumed.load_state_dict(np.load(tmp_path / "optex.npz"))  # no pickle
    assert resumed.iteration == 17
    for t in range(17, 40):
        info = resumed.step(dropout_loss, batches[t])
        assert (info.losses, info.selected, info.proxy_cosine, info.lengthscale) == (
            infos[t].losses, infos[t].selected, infos[t].proxy_cosine, infos[t].lengthscale), t
    assert_trees((resumed.params, resumed.buffers), (whole.params, whole.buffers))


def test_a_checkpoint_of_other_settings_is_refused():
    params, buffers = init_model()
    saved = OptEx(params, optimizer=ADAM, parallelism=N, buffers=buffers).state_dict()
    with pytest.raises(ValueError, match="parallelism"):
        OptEx(params, optimizer=ADAM, parallelism=3, buffers=buffers).load_state_dict(saved)
    with pytest.raises(ValueError, match="state"):
        OptEx(params, optimizer=ADAM, parallelism=N).load_state_dict(saved)  # no buffers here
    with pytest.raises(ValueError, match="state"):
        OptEx(params, optimizer=ADAM, parallelism=N).load_state_dict({"theta": 1})


# ---------------------------------------------------------------------------- trace
def quadratic(p, batch=None):
    return 0.5 * jnp.sum((p - 1.0) ** 2 * jnp.arange(1.0, 7.0)) + 0.2 * jnp.sum(jnp.sin(3 * p))


def momentum_step(theta, state, grad, factor=1.0):
    updates, state = MOMENTUM.update(grad, state, theta)
    return theta + factor * updates, state


@pytest.mark.parametrize("proxy", ["kernel", "last_gradient", "target", "linesearch"])
def test_trace_reports_the_points_the_drivers_and_every_real_step(proxy):
    x = jnp.linspace(-1.0, 1.0, 6)
    traced, plain = (OptEx(x, optimizer=MOMENTUM, parallelism=N, proxy=proxy, history=10) for _ in range(2))
    grad = jax.grad(quadratic)
    last = None
    for t in range(4):
        theta, state = jnp.array(traced.params), jax.tree.map(jnp.copy, traced.state.inner_state)
        est = None
        if proxy == "kernel" and t:
            est = GradientEstimator(history=10)
            est.load_state_dict(traced.estimator.state_dict())
        info = traced.step(quadratic, trace=True)
        plain.step(quadratic)
        np.testing.assert_array_equal(traced.params, plain.params)  # tracing changes nothing in the algorithm
        if info.evaluations == 1:  # cold start: one point, one step
            assert info.mus is None and np.array_equal(info.points[0], theta)
            np.testing.assert_allclose(info.stepped[0], momentum_step(theta, state, grad(theta))[0], rtol=1e-14)
            last = grad(theta)
            continue
        driver = {"kernel": lambda p: est.mean(p), "last_gradient": lambda p: last, "target": grad}.get(proxy)
        points, states = [theta], [state]
        for s in range(1, N):
            if proxy == "linesearch":
                point, st = momentum_step(theta, state, last, factor=s)
            else:
                point, st = momentum_step(points[-1], states[-1], driver(points[-1]))
            points.append(point)
            states.append(st)
        if proxy == "linesearch":
            points[0], states[0] = momentum_step(theta, state, jnp.zeros_like(theta), factor=0.0)
        np.testing.assert_allclose(info.points, np.stack(points), rtol=1e-13, atol=1e-14)
        if proxy == "linesearch":
            assert info.mus is None
        else:
            np.testing.assert_allclose(info.mus, np.stack([driver(p) for p in points[:-1]]), rtol=1e-12, atol=1e-13)
        stepped = [momentum_step(points[s], states[s], grad(points[s]))[0] for s in range(N)]
        np.testing.assert_allclose(info.stepped, np.stack(stepped), rtol=1e-12, atol=1e-13)
        np.testing.assert_array_equal(traced.params, info.stepped[info.selected])
        last = grad(points[info.selected])
