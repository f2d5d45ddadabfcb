"""Bad input to optex.jax.OptEx and optex.jax.GradientEstimator fails at once with one clear error naming
the parameter (and the process); the estimator is exact at extreme gradient scales in float32 and with
one pair in its history."""
from __future__ import annotations

import math

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
optax = pytest.importorskip("optax")

from optex.jax import GradientEstimator, OptEx  # noqa: E402
from optex.kernels import from_sqdist  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _float64():
    with jax.enable_x64(True):
        yield


@pytest.mark.parametrize("params,message", [
    (jnp.zeros(0), "params has no elements"),
    ({"w": jnp.zeros(3), "b": jnp.zeros((0, 2))}, "params\\['b'\\] has no elements"),
])
def test_degenerate_params_are_rejected(params, message):
    with pytest.raises(ValueError, match=message):
        OptEx(params)


@pytest.mark.parametrize("kwargs,param", [
    (dict(on_nonfinite="ignore"), "on_nonfinite"), (dict(warmup_pairs=0), "warmup_pairs"),
    (dict(warmup_pairs=3), "warmup_pairs"), (dict(warmup_pairs=True), "warmup_pairs"),
    (dict(warmup_pairs=1.0), "warmup_pairs"), (dict(warmup_pairs=2, history=1), "warmup_pairs"),
    (dict(seed=-1), "seed"), (dict(seed=1.5), "seed"), (dict(buffers={"m": 1.0}), "buffers"),
    (dict(proxy="ghost"), "proxy"),
])
def test_new_settings_are_validated(kwargs, param):
    with pytest.raises(ValueError, match=param):
        OptEx(jnp.zeros(3), **kwargs)


def linear(p, batch):
    x, y = batch
    return jnp.mean((x @ p - y) ** 2)


def test_step_arguments_are_checked():
    opx = OptEx(jnp.zeros(3), parallelism=3)
    with pytest.raises(ValueError, match="trace"):
        opx.step(linear, trace=1)
    rng = np.random.default_rng(0)
    batches = [(rng.normal(size=(8, 3)), rng.normal(size=8)) for _ in range(3)]
    batches[2] = (rng.normal(size=(5, 3)), rng.normal(size=5))
    with pytest.raises(ValueError, match=r"batches\[2\] has a leaf of shape \(5, 3\) where batches\[0\] has \(8, 3\)"):
        opx.step(linear, batches)
    with pytest.raises(ValueError, match=r"batches\[1\] has a different structure"):
        opx.step(linear, [batches[0], (batches[0][0],), batches[0]])
    with pytest.raises(ValueError, match="loss_fn must return a scalar"):
        opx.step(lambda p, b: p * 2.0)
    with pytest.raises(ValueError, match="floating-point scalar"):
        opx.step(lambda p, b: jnp.sum(p > 0))
    assert opx.iteration == 0
    with pytest.raises(ValueError, match="keyword argument key"):
        OptEx(jnp.zeros(3), seed=0).step(lambda p, b: jnp.sum(p**2))
    with pytest.raises(ValueError, match="new_buffers"):
        OptEx(jnp.zeros(3), buffers={"m": jnp.zeros(2)}).step(lambda p, bufs, b: jnp.sum(p**2))


# ---------------------------------------------------------------------------- the estimator
def gp_mean(X, G, Q, lengthscale, noise):
    """The dense float64 GP mean with the Matern-5/2 kernel."""
    def k(a, b):
        return from_sqdist(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1), lengthscale, "matern52", np)
    return k(Q, X) @ np.linalg.solve(k(X, X) + noise * np.eye(len(X)), G)


@pytest.mark.parametrize("scale", [1e20, 1e-20, 1e-25])
@pytest.mark.parametrize("lengthscale", ["auto", 0.8])
def test_gradients_at_extreme_scales_give_the_scaled_estimate(scale, lengthscale):
    """float32 without x64, so the T0 x T0 statistics are float32 too: gradient products of 1e40 / 1e-40
    overflow or underflow unless the rows are scaled by powers of two first."""
    rng = np.random.default_rng(30)
    d, n = 300, 12
    X = rng.normal(size=(n, d))
    G = np.sin(X) + 0.1 * rng.normal(size=(n, d))
    Q = X[:3] + 0.05 * rng.normal(size=(3, d))
    with jax.enable_x64(False):
        unit, big = GradientEstimator(lengthscale=lengthscale, history=n), GradientEstimator(lengthscale=lengthscale,
                                                                                             history=n)
        for rows in (slice(0, 7), slice(7, n)):
            unit.add(X[rows].astype(np.float32), G[rows].astype(np.float32))
            big.add(X[rows].astype(np.float32), (G[rows] * scale).astype(np.float32))
        expected = np.asarray(unit.mean(Q.astype(np.float32)), np.float64)
        got = np.asarray(big.mean(Q.astype(np.float32)), np.float64) / scale
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    assert big.lengthscale_ == pytest.approx(unit.lengthscale_, rel=1e-6)
    reference = gp_mean(X, G, Q, unit.lengthscale_, 1e-3)
    # Against the float64 GP, float32 is limited by the query's squared distances: |q - a|^2 + |x - a|^2
    # - 2 (q - a).(x - a) with both norms ~600 and the result ~0.75 cancels a factor ~1600, and the d = 300
    # products round by ~sqrt(d) eps |x - a|^2 depending on how XLA's CPU kernel orders the sum, so r is
    # good to a few 1e-4 (measured 4.8e-4 relative in the mean on an AMD EPYC, AVX2; < 1e-4 elsewhere).
    np.testing.assert_allclose(expected, reference, rtol=1e-3, atol=1e-3 * np.abs(reference).max())


@pytest.mark.parametrize("rule", ["auto", "median"])
def test_one_pair_with_a_data_driven_lengthscale_is_the_stored_gradient(rule):
    rng = np.random.default_rng(32)
    x, g = rng.normal(size=5), rng.normal(size=5)
    est = GradientEstimator(lengthscale=rule, noise=0.1, history=4)
    est.add(x, g)
    queries = rng.normal(size=(3, 5)) * 100.0
    np.testing.assert_array_equal(est.mean(queries), np.broadcast_to(g, (3, 5)))
    np.testing.assert_array_equal(est.mean(x), g)
    np.testing.assert_array_equal(est.variance(queries), np.zeros(3))
    assert est.lengthscale_ == math.inf
    est.add(x + 1.0, g)  # a second pair: the ordinary GP again
    assert np.isfinite(est.mean(x)).all() and est.lengthscale_ == pytest.approx(math.sqrt(5.0))


def test_one_pair_with_a_fixed_lengthscale_is_the_ordinary_gp_mean():
    rng = np.random.default_rng(33)
    X, G, Q = rng.normal(size=(1, 4)), rng.normal(size=(1, 4)), rng.normal(size=(3, 4))
    est = GradientEstimator(lengthscale=1.3, noise=0.2, history=4)
    est.add(X, G)
    np.testing.assert_allclose(est.mean(Q), gp_mean(X, G, Q, 1.3, 0.2), rtol=1e-12)  # k(q, x1) / (1 + noise) g1


@pytest.mark.parametrize("thetas,message", [
    (np.zeros(0), "no columns"), (np.zeros(()), "0-d"), (np.zeros((2, 3, 4)), "n x d"), (np.zeros((0, 3)), "no rows"),
    (np.zeros((2, 0)), "no columns"), (np.zeros((2, 3), np.int64), "floating point"),
])
def test_degenerate_pairs_are_rejected_naming_thetas(thetas, message):
    est = GradientEstimator(lengthscale=1.0, history=4)
    with pytest.raises(ValueError, match=message) as error:
        est.add(thetas, thetas.copy())
    assert "thetas" in str(error.value) and len(est) == 0
    assert est.add(np.ones(3), np.ones(3)) == 1  # one 1-d pair


def test_mean_before_any_add_says_there_is_no_history():
    est = GradientEstimator()
    for method in (est.mean, est.variance):
        with pytest.raises(ValueError, match="no history yet"):
            method(np.zeros(3))


@pytest.mark.parametrize("kernel", ["matern52", "rbf"])
def test_a_lengthscale_so_small_the_kernel_is_nan_says_so(kernel):
    est = GradientEstimator(kernel=kernel, lengthscale=1e-200, history=4)
    est.add(np.eye(3), np.ones((3, 3)))
    with pytest.raises(ValueError, match="lengthscale .* so small .* NaN"):
        est.mean(np.zeros(3))
    opx = OptEx(jnp.zeros(3), optimizer=optax.sgd(0.1), parallelism=2, lengthscale=1e-200, warmup_pairs=2)
    for _ in range(2):
        opx.step(lambda p, b: jnp.sum((p - 1.0) ** 2))
    with pytest.raises(ValueError, match="lengthscale .* so small .* NaN"):
        opx.step(lambda p, b: jnp.sum((p - 1.0) ** 2))


@pytest.mark.parametrize("normalize", [1, "yes", None, np.bool_(True)])
def test_normalize_must_be_a_bool(normalize):
    with pytest.raises(ValueError, match="normalize"):
        GradientEstimator(normalize=normalize)


def test_checkpoint_restores_the_estimate_bit_for_bit(tmp_path):
    rng = np.random.default_rng(34)
    est = GradientEstimator(history=6)
    for _ in range(3):
        est.add(rng.normal(size=(4, 5)), rng.normal(size=(4, 5)))
    np.savez(tmp_path / "est.npz", **est.state_dict())
    copy = GradientEstimator(history=6)
    copy.load_state_dict(np.load(tmp_path / "est.npz"))
    queries = rng.normal(size=(2, 5))
    np.testing.assert_array_equal(copy.mean(queries), est.mean(queries))
    assert copy.lengthscale_ == est.lengthscale_
    pairs = rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
    est.add(*pairs)
    copy.add(*pairs)
    np.testing.assert_array_equal(copy.mean(queries), est.mean(queries))
    with pytest.raises(ValueError, match="history"):
        GradientEstimator(history=5).load_state_dict(est.state_dict())
