"""The functional core of OptEx (Algorithm 1) in JAX, in the style of an optax transformation.

One sequential iteration is the pure function :func:`iterate` of (params, :class:`OptExState`,
batches): N-1 proxy steps (``lax.scan``), N true gradients (``jax.vmap`` of value-and-grad), the
selected process's optimizer step, the history update and the diagnostics. Every shape is static
(the history is a T0 x d ring buffer with a fill count) and every data-dependent branch (cold start,
Cholesky failure, selection) is a ``lax.cond``/``jnp.where``, so the whole iteration compiles as one
``jax.jit`` function. :func:`optex_transform` exposes it as an ``optax.GradientTransformationExtraArgs``;
``optex.jax.OptEx`` wraps it in the object API of ``optex.torch.OptEx``.

Only the selected process's optimizer step is computed: every selection rule (``last``, ``min_loss``,
``min_grad_norm``) depends only on quantities known before the step (the losses and gradients at the N
evaluated points), so the other N-1 steps of Algorithm 1, line 7, would be discarded unread. The
selected process steps from its own carried optimizer state (process s holds the state reached after
s-1 proxy steps, Sec. 4.2), exactly as when all N steps are taken. The selection rule is data in the
state, not a compile-time setting, so the three rules share one compiled iteration.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from .. import _validation as check
from .estimator import (History, KernelSettings, add_pairs, fit, init_history, kernel_settings, posterior_mean,
                        small_dtype)

ValueAndGrad = Callable[[Any, Any], tuple[jax.Array, Any]]

DEFAULT_OPTIMIZER = optax.adam(1e-3)  # torch.optim.Adam's defaults (lr 1e-3, betas 0.9/0.999, eps 1e-8)


@dataclass(frozen=True)
class Settings:
    """Everything that shapes the compiled iteration (hashable: a static argument of ``jax.jit``)."""

    optimizer: optax.GradientTransformation
    parallelism: int  # N
    history: int  # T0
    kernel: KernelSettings
    proxy: str
    parallel: str
    max_grad_norm: float | None


def make_settings(optimizer: Any, parallelism: Any, history: Any, kernel: Any, lengthscale: Any, noise: Any,
                  select: Any, proxy: Any, parallel: Any, max_grad_norm: Any) -> Settings:
    """Validated :class:`Settings`; a bad value raises ValueError naming its parameter.

    ``select`` is validated here but is not part of the settings: it is data in the state (see
    :func:`init`), so the three selection rules share one compiled iteration.
    """
    n, t0, noise, _, proxy, parallel = check.parallel_settings(parallelism, history, noise, select, proxy,
                                                                    parallel)
    if not isinstance(optimizer, optax.GradientTransformation):
        hint = " (call the factory: e.g. optax.adam(1e-3))" if callable(optimizer) else ""
        raise ValueError(f"optimizer must be an optax GradientTransformation{hint}, got {optimizer!r}")
    clip = None if max_grad_norm is None else check.positive_float("max_grad_norm", max_grad_norm)
    return Settings(optimizer, n, t0, kernel_settings(kernel, lengthscale, noise), proxy, parallel, clip)


def check_params(params: Any) -> jax.Array:
    """params as one flat d-vector, after checking they are floating point arrays of one dtype."""
    leaves = jax.tree.leaves(params)
    if not leaves or not all(isinstance(leaf, jax.Array) or hasattr(leaf, "__array__") for leaf in leaves):
        raise ValueError("params must be an array or a non-empty pytree (e.g. a dict) of arrays")
    dtypes = {jnp.result_type(leaf) for leaf in leaves}
    if len(dtypes) != 1:
        raise ValueError(f"params must all share one dtype, got {sorted(map(str, dtypes))}")
    if not jnp.issubdtype(dtypes.pop(), jnp.floating):
        raise ValueError(f"params must be floating point, got {jnp.result_type(leaves[0])}")
    return ravel_pytree(params)[0]


def check_optimizer(optimizer: optax.GradientTransformation, params: Any) -> None:
    """Dry-run ``update(grads, state, params)`` abstractly: optimizers needing more (the loss) fail here."""
    try:
        jax.eval_shape(lambda p: optimizer.update(p, optimizer.init(p), p), params)
    except (TypeError, ValueError, KeyError) as error:
        raise ValueError(
            "optimizer must be a gradient-only optax transformation: OptEx calls update(grads, state, params) "
            "with estimated gradients, which optimizers needing the loss value (optax.lbfgs, line searches) "
            f"cannot use; calling it failed with: {error}") from error


class IterationInfo(NamedTuple):
    """Diagnostics of the last sequential iteration (arrays, so they live in the jitted state)."""

    loss: jax.Array  # at the selected process's evaluated point (the mean over N for large_batch)
    grad_norm: jax.Array
    selected: jax.Array  # int32: index of the process that continues (0-based)
    cold: jax.Array  # bool: the iteration was a plain Vanilla step (history or last gradient missing)
    losses: jax.Array  # (N,): loss at each process's evaluated point (NaN where none was evaluated)
    finite: jax.Array  # (N,) bool: evaluated with a finite loss and gradient
    proxy_cosine: jax.Array  # (N-1,): cos(mu(theta^(s-1)), grad f(theta^(s-1))), NaN without kernel proxy steps
    proxy_rel_error: jax.Array  # (N-1,): |mu - grad f| / |grad f|
    lengthscale: jax.Array  # the surrogate's lengthscale this iteration (NaN when it was not fitted)
    factorized: jax.Array  # bool: False when K + sigma^2 I could not be factored (nothing changed)


class OptExState(NamedTuple):
    """State of OptEx: the base optimizer's state at theta_t, the history, counters, diagnostics."""

    inner_state: optax.OptState
    history: History | None  # proxy="kernel" only: the T0 most recent evaluated pairs
    last_grad: jax.Array | None  # proxy="linesearch" only: the last selected true gradient (flat)
    has_last_grad: jax.Array | None
    select: jax.Array  # int32: index of the selection rule in optex._validation.SELECT
    iteration: jax.Array  # int32: completed sequential iterations t
    info: IterationInfo


class _Outcome(NamedTuple):
    params: Any  # theta_t
    updates: Any  # theta_t - theta_{t-1}, exact when the first process (theta^(0) = theta_{t-1}) is selected
    inner_state: Any
    points: jax.Array | None  # N x d evaluated inputs (kernel only)
    grads: jax.Array | None  # N x d true gradients (kernel only)
    stored: jax.Array | None  # (N,) bool: rows that are evaluated pairs (kernel only)
    grad: jax.Array  # the selected process's true gradient (flat)
    info: IterationInfo


def init(settings: Settings, params: Any, select: str = "last") -> OptExState:
    """The state before the first iteration: fresh optimizer state, empty history, the selection rule."""
    rule = check.SELECT.index(check.choice("select", select, check.SELECT))
    flat = check_params(params)
    check_optimizer(settings.optimizer, params)
    history = init_history(settings.history, flat.size, flat.dtype) if settings.proxy == "kernel" else None
    linesearch = settings.proxy == "linesearch"
    n = settings.parallelism
    nan = jnp.full(n, jnp.nan, flat.dtype)
    return OptExState(
        inner_state=settings.optimizer.init(params), history=history,
        last_grad=jnp.zeros_like(flat) if linesearch else None,
        has_last_grad=jnp.zeros((), bool) if linesearch else None,
        select=jnp.asarray(rule, jnp.int32), iteration=jnp.zeros((), jnp.int32),
        info=_info(settings, flat.dtype, small_dtype(), losses=nan, norms=nan, finite=jnp.zeros(n, bool), selected=0,
                   cold=True))


# ---------------------------------------------------------------------------------------------- pieces
def _flat(tree: Any) -> jax.Array:
    return ravel_pytree(tree)[0]


def _take(tree: Any, index: jax.Array) -> Any:
    return jax.tree.map(lambda x: x[index], tree)


def _prepend(first: Any, rest: Any) -> Any:
    return jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), first, rest)


def _append(rest: Any, last: Any) -> Any:
    return jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]]), rest, last)


def _single(tree: Any) -> Any:
    return jax.tree.map(lambda x: x[None], tree)


def _clip(settings: Settings, grads: Any) -> Any:
    """Scale to norm ``max_grad_norm`` when longer (norm 0 or NaN: unchanged), as the torch backend."""
    if settings.max_grad_norm is None:
        return grads
    factor = jnp.minimum(settings.max_grad_norm / optax.global_norm(grads), 1.0)
    factor = jnp.where(jnp.isnan(factor), 1.0, factor)
    return jax.tree.map(lambda g: g * factor.astype(g.dtype), grads)


def _optimizer_step(settings: Settings, grads: Any, inner_state: Any, point: Any) -> tuple[Any, Any]:
    return settings.optimizer.update(_clip(settings, grads), inner_state, point)


def _evaluate(settings: Settings, value_and_grad: ValueAndGrad, points: Any, batches: Any) -> tuple[jax.Array, Any]:
    """Losses (n,) and stacked gradient pytrees at stacked ``points``, batch i for point i."""
    if settings.parallel == "vmap":
        return jax.vmap(value_and_grad, in_axes=(0, None if batches is None else 0))(points, batches)
    return jax.lax.map(lambda args: value_and_grad(*args), (points, batches))


_LAST, _MIN_LOSS = check.SELECT.index("last"), check.SELECT.index("min_loss")


def _choose(rule: jax.Array, losses: jax.Array, norms: jax.Array) -> jax.Array:
    """Algorithm 1, line 9, for the rule with index ``rule`` in ``check.SELECT``: the last process, or
    the lowest loss or gradient norm. Non-finite processes never win; ties go to the lowest index."""
    key = jnp.where(rule == _MIN_LOSS, losses, norms)
    best = jnp.argmin(jnp.where(jnp.isfinite(key), key, jnp.inf))
    return jnp.where(rule == _LAST, losses.shape[0] - 1, best).astype(jnp.int32)


def _true_step(settings: Settings, params: Any, point: Any, inner_state: Any, grads: Any) -> tuple[Any, Any, Any]:
    """The selected process's step from its own point and state -> (theta_t, update from theta_{t-1}, state)."""
    updates, inner_state = _optimizer_step(settings, grads, inner_state, point)
    new_params = optax.apply_updates(point, updates)
    # (point - params) is exactly 0 for the first process, so its update is returned bit for bit.
    total = jax.tree.map(lambda p, q, u: ((p - q) + u).astype(q.dtype), point, params, updates)
    return new_params, total, inner_state


def _compare(mus: jax.Array, grads: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Cosine (torch's eps 1e-8 convention) and relative error of mu against the true gradients."""
    mu_norm, grad_norm = jnp.linalg.norm(mus, axis=1), jnp.linalg.norm(grads, axis=1)
    cosine = jnp.sum(mus * grads, 1) / (jnp.maximum(mu_norm, 1e-8) * jnp.maximum(grad_norm, 1e-8))
    return cosine, jnp.linalg.norm(mus - grads, axis=1) / grad_norm


def _info(settings: Settings, dtype, small, *, losses, norms, finite, selected, cold, loss=None, grad_norm=None,
          cosine=None, rel=None, lengthscale=None, factorized=True) -> IterationInfo:
    """IterationInfo with fixed dtypes and shapes (so that every branch of a lax.cond agrees)."""
    n = settings.parallelism
    pad = n - losses.shape[0]
    nan = jnp.full(n - 1, jnp.nan, dtype)
    return IterationInfo(
        loss=jnp.asarray(losses[selected] if loss is None else loss, dtype),
        grad_norm=jnp.asarray(norms[selected] if grad_norm is None else grad_norm, dtype),
        selected=jnp.asarray(selected, jnp.int32), cold=jnp.asarray(cold, bool),
        losses=jnp.concatenate([losses.astype(dtype), jnp.full(pad, jnp.nan, dtype)]),
        finite=jnp.concatenate([finite, jnp.zeros(pad, bool)]),
        proxy_cosine=nan if cosine is None else cosine.astype(dtype),
        proxy_rel_error=nan if rel is None else rel.astype(dtype),
        lengthscale=jnp.full((), jnp.nan, small) if lengthscale is None else jnp.asarray(lengthscale, small),
        factorized=jnp.asarray(factorized, bool))


class _Iteration:
    """The branches of one sequential iteration, sharing the settings and the objective."""

    def __init__(self, settings: Settings, value_and_grad: ValueAndGrad, params: Any, state: OptExState,
                 batches: Any) -> None:
        self.settings, self.value_and_grad, self.batches = settings, value_and_grad, batches
        self.params, self.state = params, state
        flat, self.unravel = ravel_pytree(params)
        self.dtype = flat.dtype
        self.small = state.info.lengthscale.dtype

    def info(self, **kwargs) -> IterationInfo:
        return _info(self.settings, self.dtype, self.small, **kwargs)

    def evaluated(self, losses: jax.Array, grads: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Flat gradients (n x d), their norms and the finite flags of n evaluations."""
        flat = jax.vmap(_flat)(grads)
        return flat, jnp.linalg.norm(flat, axis=1), jnp.isfinite(losses) & jnp.isfinite(jnp.sum(flat, axis=1))

    def kernel_rows(self, points: Any, flat_grads: jax.Array, stored: jax.Array) -> dict[str, Any]:
        if self.settings.proxy != "kernel":
            return dict(points=None, grads=None, stored=None)
        return dict(points=jax.vmap(_flat)(points), grads=flat_grads, stored=stored)

    def vanilla(self) -> _Outcome:
        """A plain base-optimizer step on the first batch (Vanilla, and every cold start)."""
        n = self.settings.parallelism
        batch = None if self.batches is None else _take(self.batches, 0)
        loss, grads = self.value_and_grad(self.params, batch)
        loss, flat_grad = jnp.asarray(loss), _flat(grads)
        new_params, updates, inner = _true_step(self.settings, self.params, self.params, self.state.inner_state, grads)
        _, norms, finite = self.evaluated(loss[None], _single(grads))
        points = jax.tree.map(lambda p: jnp.broadcast_to(p, (n,) + p.shape), self.params)
        rows = self.kernel_rows(points, jnp.broadcast_to(flat_grad, (n, flat_grad.size)), jnp.arange(n) == 0)
        info = self.info(losses=loss[None], norms=norms, finite=finite, selected=0, cold=True)
        return _Outcome(new_params, updates, inner, grad=flat_grad, info=info, **rows)

    def select_and_step(self, points: Any, states: Any, losses: jax.Array, grads: Any, **info: Any) -> _Outcome:
        """Line 9 then the selected process's true step (line 7) and the outcome."""
        flat_grads, norms, finite = self.evaluated(losses, grads)
        chosen = _choose(self.state.select, losses, norms)
        new_params, updates, inner = _true_step(self.settings, self.params, _take(points, chosen),
                                                _take(states, chosen), _take(grads, chosen))
        rows = self.kernel_rows(points, flat_grads, jnp.ones(losses.shape[0], bool))
        return _Outcome(new_params, updates, inner, grad=flat_grads[chosen], **rows,
                        info=self.info(losses=losses, norms=norms, finite=finite, selected=chosen, cold=False, **info))

    def kernel(self) -> _Outcome:
        """OptEx: N-1 proxy steps driven by mu (Eq. 5), N true gradients, selection."""
        if self.settings.parallelism == 1:
            return self._kernel_steps(None)
        fitted = fit(self.state.history, self.settings.kernel)
        return jax.lax.cond(fitted.ok, self._kernel_steps, self._unfactored, fitted)

    def _kernel_steps(self, fitted) -> _Outcome:
        settings, h = self.settings, self.state.history
        if fitted is None:  # N = 1: no proxy step, the surrogate is never fitted (as in the torch backend)
            points, states = _single(self.params), _single(self.state.inner_state)
            losses, grads = _evaluate(settings, self.value_and_grad, points, self.batches)
            return self.select_and_step(points, states, losses, grads)

        def proxy_step(carry, _):
            point, inner = carry
            mu = posterior_mean(h, fitted, settings.kernel, _flat(point)[None])[0]
            updates, inner = _optimizer_step(settings, self.unravel(mu), inner, point)
            point = optax.apply_updates(point, updates)
            return (point, inner), (point, inner, mu)

        _, (tail, tail_states, mus) = jax.lax.scan(proxy_step, (self.params, self.state.inner_state), None,
                                                   length=settings.parallelism - 1)
        points, states = _prepend(self.params, tail), _prepend(self.state.inner_state, tail_states)
        losses, grads = _evaluate(settings, self.value_and_grad, points, self.batches)
        cosine, rel = _compare(mus, jax.vmap(_flat)(grads)[:-1])
        return self.select_and_step(points, states, losses, grads, cosine=cosine, rel=rel,
                                    lengthscale=fitted.lengthscale)

    def _unfactored(self, fitted) -> _Outcome:
        """K + sigma^2 I is not positive definite even with jitter: change nothing, report it."""
        n, d = self.settings.parallelism, self.state.history.thetas.shape[1]
        zeros = jnp.zeros((n, d), self.dtype)
        info = self.info(losses=jnp.full(n, jnp.nan, self.dtype), norms=jnp.full(n, jnp.nan, self.dtype),
                         finite=jnp.zeros(n, bool), selected=0, cold=False, lengthscale=fitted.lengthscale,
                         factorized=False)
        return _Outcome(self.params, jax.tree.map(jnp.zeros_like, self.params), self.state.inner_state, zeros, zeros,
                        jnp.zeros(n, bool), jnp.zeros(d, self.dtype), info)

    def target(self) -> _Outcome:
        """Proxy steps with the true gradient on the batch the same process later uses (the ideal).

        Those N-1 gradients are reused by their processes (the official code computes them twice);
        with ``select="last"`` the iteration is N plain sequential optimizer steps.
        """
        settings, n = self.settings, self.settings.parallelism

        def proxy_step(carry, batch):
            point, inner = carry
            loss, grads = self.value_and_grad(point, batch)
            updates, stepped = _optimizer_step(settings, grads, inner, point)
            return (optax.apply_updates(point, updates), stepped), (point, inner, loss, grads)

        head = None if self.batches is None else jax.tree.map(lambda b: b[: n - 1], self.batches)
        (last, last_state), (points, states, losses, grads) = jax.lax.scan(
            proxy_step, (self.params, self.state.inner_state), head, length=n - 1)
        batch = None if self.batches is None else _take(self.batches, n - 1)
        loss, grad = self.value_and_grad(last, batch)
        return self.select_and_step(_append(points, last), _append(states, last_state), _append(losses, loss),
                                    _append(grads, grad))

    def linesearch(self) -> _Outcome:
        """Process j steps with j x the learning rate along the last selected true gradient, then truly.

        The learning rate is scaled by scaling the *updates* of process j by j: exact for every optax
        optimizer whose update is linear in its learning rate (sgd, momentum, the adam family, ...),
        with no access to the optimizer's hyper-parameters. As in the torch backend, process 0 is fed
        a zero gradient (its state advances, it does not move) and the lowest loss is always selected.
        """
        settings, n = self.settings, self.settings.parallelism
        last = self.unravel(self.state.last_grad)
        moved, moved_state = _optimizer_step(settings, last, self.state.inner_state, self.params)
        stayed, stayed_state = _optimizer_step(settings, jax.tree.map(jnp.zeros_like, last), self.state.inner_state,
                                               self.params)

        def point(j, updates):
            return optax.apply_updates(self.params, jax.tree.map(lambda u: u * jnp.asarray(j, u.dtype), updates))

        points = _prepend(point(0, stayed), jax.vmap(point, in_axes=(0, None))(jnp.arange(1, n), moved))
        losses, grads = _evaluate(settings, self.value_and_grad, points, self.batches)
        flat_grads, norms, finite = self.evaluated(losses, grads)
        chosen = _choose(jnp.asarray(_MIN_LOSS), losses, norms)
        inner = jax.tree.map(lambda a, b: jnp.where(chosen == 0, a, b), stayed_state, moved_state)
        new_params, updates, inner = _true_step(settings, self.params, _take(points, chosen), inner,
                                                _take(grads, chosen))
        info = self.info(losses=losses, norms=norms, finite=finite, selected=chosen, cold=False)
        return _Outcome(new_params, updates, inner, None, None, None, flat_grads[chosen], info)

    def large_batch(self) -> _Outcome:
        """The N gradients at theta_{t-1} (one batch each) averaged into one step."""
        settings, n = self.settings, self.settings.parallelism
        points = jax.tree.map(lambda p: jnp.broadcast_to(p, (n,) + p.shape), self.params)
        losses, grads = _evaluate(settings, self.value_and_grad, points, self.batches)
        mean = jax.tree.map(lambda g: jnp.mean(g, axis=0), grads)
        new_params, updates, inner = _true_step(settings, self.params, self.params, self.state.inner_state, mean)
        _, norms, finite = self.evaluated(losses, grads)
        flat_mean = _flat(mean)
        info = self.info(losses=losses, norms=norms, finite=finite, selected=0, cold=False, loss=jnp.mean(losses),
                         grad_norm=jnp.linalg.norm(flat_mean))
        return _Outcome(new_params, updates, inner, None, None, None, flat_mean, info)


def iterate(settings: Settings, value_and_grad: ValueAndGrad, params: Any, state: OptExState,
            batches: Any = None) -> tuple[Any, Any, OptExState]:
    """One sequential iteration of Algorithm 1 -> (theta_t, theta_t - theta_{t-1}, new state).

    ``value_and_grad(params, batch) -> (loss, grads)`` is e.g. ``jax.value_and_grad(loss_fn)``;
    ``batches`` is None (deterministic objective) or a pytree whose leaves have a leading axis of N,
    batch s for process s. While the history holds fewer than 2 pairs (for LineSearch: while there is
    no previous gradient) the iteration is a plain Vanilla step on batch 0.
    """
    n = settings.parallelism
    if batches is not None:
        sizes = {leaf.shape[0] if leaf.ndim else None for leaf in jax.tree.leaves(batches)}
        if sizes != {n}:
            raise ValueError(f"batches must hold one batch per parallel process ({n}) along the leading axis of "
                             f"every leaf; got leading sizes {sorted(sizes, key=str)}")
    it = _Iteration(settings, value_and_grad, params, state, batches)
    if settings.proxy == "none":
        out = it.vanilla()
    elif settings.proxy == "kernel":
        out = jax.lax.cond(state.history.count >= 2, it.kernel, it.vanilla)
    elif settings.proxy == "linesearch":
        out = jax.lax.cond(state.has_last_grad, it.linesearch, it.vanilla)
    elif settings.proxy == "target":
        out = it.target()
    else:
        out = it.large_batch()
    history, last_grad, has_last_grad = state.history, state.last_grad, state.has_last_grad
    if settings.proxy == "kernel":
        history = add_pairs(history, out.points, out.grads, out.stored)
    if settings.proxy == "linesearch":
        last_grad, has_last_grad = out.grad, jnp.ones((), bool)
    new_state = OptExState(inner_state=out.inner_state, history=history, last_grad=last_grad,
                           has_last_grad=has_last_grad, select=state.select,
                           iteration=state.iteration + out.info.factorized.astype(jnp.int32), info=out.info)
    return out.params, out.updates, new_state


def optex_transform(optimizer: optax.GradientTransformation = DEFAULT_OPTIMIZER, parallelism: int = 5,
                    history: int = 50, kernel: str = "matern52", lengthscale: float | str = "auto",
                    noise: float = 1e-3, select: str = "last", proxy: str = "kernel", parallel: str = "vmap",
                    max_grad_norm: float | None = None) -> optax.GradientTransformationExtraArgs:
    """OptEx around ``optimizer`` as an optax transformation (arguments as for ``optex.jax.OptEx``).

    ``update(updates, state, params, *, grad_fn, batches=None)`` runs one sequential iteration and
    returns theta_t - theta_{t-1}, so ``optax.apply_updates(params, updates)`` is theta_t. Its
    ``grad_fn(params, batch) -> (loss, grads)`` is ``jax.value_and_grad(loss_fn)`` (the losses drive
    ``select``); ``batches`` is None or a pytree of N stacked batches. The incoming ``updates`` are
    not used: all N gradients, the one at theta_{t-1} included, come from ``grad_fn``. Diagnostics
    are in ``state.info``; if K + sigma^2 I cannot be factored the update is zero and
    ``state.info.factorized`` is False. Usage::

        opt = optex_transform(optax.adam(1e-2), parallelism=5)
        state = opt.init(params)
        updates, state = opt.update(None, state, params, grad_fn=jax.value_and_grad(loss_fn))
        params = optax.apply_updates(params, updates)
    """
    settings = make_settings(optimizer, parallelism, history, kernel, lengthscale, noise, select, proxy, parallel,
                             max_grad_norm)

    def init_fn(params: Any) -> OptExState:
        return init(settings, params, select)

    def update_fn(updates: Any, state: OptExState, params: Any = None, *, grad_fn: ValueAndGrad | None = None,
                  batches: Any = None, **extra_args: Any) -> tuple[Any, OptExState]:
        del updates, extra_args
        if params is None:
            raise ValueError("params must be given to update: OptEx steps from theta_{t-1}")
        if grad_fn is None:
            raise ValueError("grad_fn must be given to update: (params, batch) -> (loss, grads), "
                             "e.g. jax.value_and_grad(loss_fn)")
        _, updates, state = iterate(settings, grad_fn, params, state, batches)
        return updates, state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


__all__ = ["DEFAULT_OPTIMIZER", "IterationInfo", "OptExState", "Settings", "init", "iterate", "make_settings",
           "optex_transform", "check_optimizer", "check_params"]
