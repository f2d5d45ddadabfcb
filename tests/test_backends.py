"""One object-API suite for both backends (torch, jax), each against its own plain optimizer loop.

Everything runs in float64. For JAX the compiled iteration is cached per (settings, optimizer object,
loss_fn object), so the tests share module-level optimizers and losses and use N = 3, d = 6.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
optax = pytest.importorskip("optax")

import optex.jax  # noqa: E402
import optex.torch  # noqa: E402

D, N, LR = 6, 3, 0.05
BACKENDS = ("torch", "jax")


@pytest.fixture(scope="module", autouse=True)
def _float64_one_thread():
    """float64 for JAX and one torch thread (threads only add contention at d = 6), restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with jax.enable_x64(True):
        yield
    torch.set_num_threads(threads)


def _loss(x, batch, xp):
    """Smooth non-convex minibatch loss; the batch (w, c) reweights and moves the minimum."""
    w, c = batch
    return 0.5 * (w * (x - c) ** 2).sum() + 0.1 * xp.sin(3.0 * x).sum() + 0.05 * (x**4).sum()


class TorchKit:
    name = "torch"
    module = optex.torch
    optimizers = {"sgd": dict(optimizer=torch.optim.SGD, lr=LR), "adam": dict(optimizer=torch.optim.Adam, lr=LR)}

    @staticmethod
    def loss(x, batch):
        return _loss(x, batch, torch)

    @staticmethod
    def linear(x, batch):
        return (batch * x).sum()

    @staticmethod
    def flat(x, batch):
        return 0.0 * x.sum() + 1.0

    @staticmethod
    def array(values):
        return torch.tensor(np.asarray(values), dtype=torch.float64)

    @staticmethod
    def numpy(values):
        return values.detach().numpy()

    def plain_loop(self, name, x0, loss, batches):
        """The ordinary torch.optim loop: one step per batch."""
        kwargs = dict(self.optimizers[name])
        p = self.array(x0).requires_grad_(True)
        opt = kwargs.pop("optimizer")([p], **kwargs)
        for batch in batches:
            opt.zero_grad()
            loss(p, batch).backward()
            opt.step()
        return p.detach().numpy()


class JaxKit:
    name = "jax"
    module = optex.jax
    optimizers = {"sgd": dict(optimizer=optax.sgd(LR)), "adam": dict(optimizer=optax.adam(LR))}

    @staticmethod
    def loss(x, batch):
        return _loss(x, batch, jnp)

    @staticmethod
    def linear(x, batch):
        return (batch * x).sum()

    @staticmethod
    def flat(x, batch):
        return 0.0 * x.sum() + 1.0

    @staticmethod
    def array(values):
        return jnp.asarray(np.asarray(values), dtype=jnp.float64)

    @staticmethod
    def numpy(values):
        return np.asarray(values)

    def plain_loop(self, name, x0, loss, batches):
        """The ordinary optax loop: one step per batch."""
        opt = self.optimizers[name]["optimizer"]
        p = self.array(x0)
        state = opt.init(p)
        for batch in batches:
            updates, state = opt.update(jax.grad(loss)(p, batch), state, p)
            p = optax.apply_updates(p, updates)
        return np.asarray(p)


KITS = {"torch": TorchKit(), "jax": JaxKit()}


@pytest.fixture(params=BACKENDS)
def kit(request):
    return KITS[request.param]


def x_init(seed=0):
    return np.random.default_rng(seed).normal(size=D)


def make_batches(kit, count, seed=1):
    rng = np.random.default_rng(seed)
    return [(kit.array(1.0 + rng.random(D)), kit.array(rng.normal(size=D))) for _ in range(count)]


def make(kit, optimizer="adam", **kwargs):
    return kit.module.OptEx(kit.array(x_init()), **kit.optimizers[optimizer], **kwargs)


def history_size(opt):
    return len(opt.estimator)


# ---------------------------------------------------------------------------- equivalences with plain loops
@pytest.mark.parametrize("proxy, optimizer", [("none", "sgd"), ("none", "adam"), ("kernel", "adam")])
def test_parallelism_one_is_the_base_optimizer(kit, proxy, optimizer):
    batches = make_batches(kit, 12)
    opt = make(kit, optimizer, parallelism=1, proxy=proxy)
    for batch in batches:
        info = opt.step(kit.loss, [batch])
        assert info.evaluations == 1 and info.selected == 0 and info.proxy_cosine == ()
    expected = kit.plain_loop(optimizer, x_init(), kit.loss, batches)
    np.testing.assert_allclose(kit.numpy(opt.params), expected, rtol=1e-12, atol=1e-14)


def test_target_last_is_n_times_t_plain_steps(kit):
    batches = make_batches(kit, 4 * N)
    opt = make(kit, "adam", parallelism=N, proxy="target", select="last")
    for t in range(4):
        info = opt.step(kit.loss, batches[t * N:(t + 1) * N])
        assert info.selected == N - 1 and info.evaluations == N
    expected = kit.plain_loop("adam", x_init(), kit.loss, batches)
    np.testing.assert_allclose(kit.numpy(opt.params), expected, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------- selection
def test_selection_rules_and_lowest_index_ties(kit):
    # Linear loss a.x under target: every proxy step lowers the loss, every gradient has the same norm.
    a = [kit.array(np.linspace(-1.0, 1.0, D))] * N
    for select, chosen in (("last", N - 1), ("min_loss", N - 1), ("min_grad_norm", 0)):
        opt = make(kit, "sgd", parallelism=N, proxy="target", select=select)
        infos = [opt.step(kit.linear, a) for _ in range(2)]
        assert [i.selected for i in infos] == [chosen, chosen]
        assert infos[0].losses == tuple(sorted(infos[0].losses, reverse=True))
    # A constant loss ties every process: the lowest index wins.
    opt = make(kit, "sgd", parallelism=N, proxy="target", select="min_loss")
    assert opt.step(kit.flat, a).selected == 0


# ---------------------------------------------------------------------------- cold start and evaluation counts
@pytest.mark.parametrize("proxy, parallelism, evaluations, losses", [
    ("none", 1, [1, 1, 1, 1], [1, 1, 1, 1]),
    ("kernel", N, [1, N, N, N], [1, N, N, N]),
    ("linesearch", N, [1, N, N, N], [1, N, N, N]),
    ("target", N, [N] * 4, [N] * 4),
    ("large_batch", N, [N] * 4, [1] * 4),
])
def test_cold_start_and_evaluation_counts(kit, proxy, parallelism, evaluations, losses):
    batches = make_batches(kit, parallelism)
    opt = make(kit, "adam", parallelism=parallelism, proxy=proxy, select="min_loss")
    infos = [opt.step(kit.loss, batches) for _ in range(4)]
    assert [i.evaluations for i in infos] == evaluations
    assert [len(i.losses) for i in infos] == losses
    if proxy == "kernel":
        # One Vanilla step while the history is empty; with one pair the surrogate is that pair's gradient.
        assert [i.lengthscale is None for i in infos] == [True, False, False, False]
        assert infos[1].lengthscale == math.inf
        assert [len(i.proxy_cosine) for i in infos] == [0, N - 1, N - 1, N - 1]
        assert history_size(opt) == 1 + 3 * N
        assert all(0.0 < c <= 1.0 + 1e-12 for i in infos[1:] for c in i.proxy_cosine)
    else:
        assert all(i.lengthscale is None and i.proxy_cosine == () for i in infos)


@pytest.mark.parametrize("warmup_pairs", [1, 2])
def test_cold_start_is_a_vanilla_step_on_the_first_batch(kit, warmup_pairs):
    batches = make_batches(kit, N)
    opt = make(kit, "adam", parallelism=N, proxy="kernel", select="min_loss", warmup_pairs=warmup_pairs)
    for _ in range(warmup_pairs):
        assert opt.step(kit.loss, batches).evaluations == 1
    expected = kit.plain_loop("adam", x_init(), kit.loss, [batches[0]] * warmup_pairs)
    np.testing.assert_allclose(kit.numpy(opt.params), expected, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------- non-finite evaluations
def test_nan_pairs_never_enter_the_history_nor_win(kit):
    batches = make_batches(kit, N)
    bad = (batches[1][0] * math.nan, batches[1][1])  # process 1's loss and gradient are NaN
    batches = [batches[0], bad, batches[2]]
    opt = make(kit, "adam", parallelism=N, proxy="kernel", select="min_loss")
    sizes = []
    for t in range(4):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            info = opt.step(kit.loss, batches)
        sizes.append(history_size(opt))
        if t >= 1:  # past the cold start all N processes are evaluated, process 1 with NaN
            assert any(issubclass(w.category, RuntimeWarning) and "[1]" in str(w.message) for w in caught)
            assert info.selected != 1 and math.isnan(info.losses[1])
            # mu is finite: its cosine with the finite true gradient (process 0) is a number.
            assert math.isfinite(info.proxy_cosine[0])
    assert sizes == [1, 3, 5, 7]
    assert np.isfinite(kit.numpy(opt.params)).all()


# ---------------------------------------------------------------------------- bad input
BAD_SETTINGS = [
    (dict(parallelism=0), "parallelism"), (dict(history=0), "history"), (dict(noise=-1.0), "noise"),
    (dict(select="best"), "select"), (dict(proxy="magic"), "proxy"), (dict(parallel="threads"), "parallel"),
    (dict(lengthscale=-1.0), "lengthscale"), (dict(lengthscale="bogus"), "lengthscale"),
    (dict(kernel="cosine"), "kernel"), (dict(max_grad_norm=0.0), "max_grad_norm"),
    (dict(proxy="none", parallelism=2), "parallelism"),
]


@pytest.mark.parametrize("kwargs, name", BAD_SETTINGS, ids=[f"{n}-{i}" for i, (_, n) in enumerate(BAD_SETTINGS)])
def test_bad_settings_name_the_parameter(kit, kwargs, name):
    with pytest.raises(ValueError, match=name):
        make(kit, **kwargs)


def test_bad_optimizer_params_and_step_arguments(kit):
    closure_optimizer = dict(optimizer=torch.optim.LBFGS) if kit.name == "torch" else dict(optimizer=optax.lbfgs())
    for optimizer in (closure_optimizer, dict(optimizer="adam")):
        with pytest.raises(ValueError, match="optimizer"):
            kit.module.OptEx(kit.array(x_init()), **optimizer)
    integers = torch.arange(D) if kit.name == "torch" else jnp.arange(D)
    with pytest.raises(ValueError, match="params"):
        kit.module.OptEx(integers)
    opt = make(kit, parallelism=N)
    with pytest.raises(ValueError, match="loss_fn"):
        opt.step(None)
    with pytest.raises(ValueError, match="batches"):
        opt.step(kit.loss, make_batches(kit, N - 1))


# ---------------------------------------------------------------------------- JAX: the optax transformation
def test_optex_transform_drops_into_an_optax_loop():
    batches = make_batches(KITS["jax"], N)
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *batches)
    adam = JaxKit.optimizers["adam"]["optimizer"]
    transform = optex.jax.optex_transform(adam, parallelism=N, select="min_loss")
    grad_fn = jax.value_and_grad(JaxKit.loss)

    @jax.jit
    def train_step(params, state):
        updates, state = transform.update(None, state, params, grad_fn=grad_fn, batches=stacked)
        return optax.apply_updates(params, updates), state

    params = JaxKit.array(x_init())
    state = transform.init(params)
    opt = make(KITS["jax"], "adam", parallelism=N, select="min_loss")
    for _ in range(5):
        params, state = train_step(params, state)
        info = opt.step(JaxKit.loss, batches)
        assert int(state.info.selected) == info.selected
    assert int(state.iteration) == 5 and int(state.history.count) == 1 + 4 * N
    np.testing.assert_allclose(np.asarray(params), np.asarray(opt.params), rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="optimizer"):
        optex.jax.optex_transform(optax.lbfgs()).init(params)
