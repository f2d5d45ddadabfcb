"""The functional core of OptEx (Algorithm 1) in JAX, in the style of an optax transformation.

One sequential iteration is the pure function :func:`iterate` of (params, :class:`OptExState`,
batches): N-1 proxy steps (``lax.scan``), N true gradients (``jax.vmap`` of value-and-grad), the
selected process's optimizer step, the history update and the diagnostics. Every shape is static
(the history is a T0 x d ring buffer with a fill count) and every data-dependent branch (cold start,
Cholesky failure, selection, non-finite evaluations) is a ``lax.cond``/``jnp.where``, so the whole
iteration compiles as one ``jax.jit`` function. :func:`optex_transform` exposes it as an
``optax.GradientTransformationExtraArgs``; ``optex.jax.OptEx`` wraps it in the object API of
``optex.torch.OptEx``.

Only the selected process's optimizer step is computed: every selection rule (``last``, ``min_loss``,
``min_grad_norm``) depends only on quantities known before the step (the losses and gradients at the N
evaluated points), so the other N-1 steps of Algorithm 1, line 7, would be discarded unread. The
selected process steps from its own carried optimizer state (process s holds the state reached after
s-1 proxy steps, Sec. 4.2), exactly as when all N steps are taken. The selection rule is data in the
state, not a compile-time setting, so the three rules share one compiled iteration.

Non-finite evaluations follow the torch backend's policy: a process whose point, loss or gradient
(with ``max_grad_norm``: or gradient norm) is not finite is never selected and never enters the
history; when no process is finite the outcome *is* the incoming params, optimizer state, buffers,
history and last gradient (chosen with ``jnp.where`` inside the iteration: the state is donated).

The objective is an *evaluator* ``(params, buffers, key, batch) -> (loss, grads, new_buffers)``
(:func:`evaluator` builds one from a loss function): ``buffers`` is a pytree of non-parameter state
(BatchNorm statistics; None without) that each process evaluates with and that only the selected
process's evaluation updates, ``key`` a PRNG key per (iteration, process) when the state has a seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from .. import _validation as check
from .estimator import (History, KernelSettings, add_pairs, fit, init_history, kernel_settings, posterior_mean,
                        row_scale, row_top, safe_norm, scaled, small_dtype)

Evaluator = Callable[[Any, Any, Any, Any], tuple[jax.Array, Any, Any]]

MESH_AXIS = "n"  # the axis name of the default mesh of parallel="shard_map"
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
    warmup_pairs: int = 1
    mesh: Mesh | None = None  # parallel="shard_map": a one-axis mesh whose axis the N evaluations are split over


def make_settings(optimizer: Any, parallelism: Any, history: Any, kernel: Any, lengthscale: Any, noise: Any,
                  select: Any, proxy: Any, parallel: Any, max_grad_norm: Any, warmup_pairs: Any = 1,
                  mesh: Any = None) -> Settings:
    """Validated :class:`Settings`; a bad value raises ValueError naming its parameter.

    ``select`` is validated here but is not part of the settings: it is data in the state (see
    :func:`init`), so the three selection rules share one compiled iteration.
    """
    n, t0, noise, _, proxy, parallel = check.parallel_settings(parallelism, history, noise, select, proxy,
                                                                    parallel, check.JAX_PARALLEL)
    mesh = _mesh(parallel, mesh)
    if not isinstance(optimizer, optax.GradientTransformation):
        hint = " (call the factory: e.g. optax.adam(1e-3))" if callable(optimizer) else ""
        raise ValueError(f"optimizer must be an optax GradientTransformation{hint}, got {optimizer!r}")
    clip = None if max_grad_norm is None else check.positive_float("max_grad_norm", max_grad_norm)
    warmup = check.warmup_pairs(warmup_pairs, proxy, t0)
    return Settings(optimizer, n, t0, kernel_settings(kernel, lengthscale, noise), proxy, parallel, clip, warmup, mesh)


def _mesh(parallel: str, mesh: Any) -> Mesh | None:
    """The device mesh of ``parallel="shard_map"`` (default: every local device on one axis)."""
    if parallel != "shard_map":
        if mesh is not None:
            raise ValueError(f"mesh is only used with parallel='shard_map', got parallel={parallel!r}")
        return None
    if mesh is None:
        return Mesh(np.array(jax.devices()), (MESH_AXIS,))
    if not isinstance(mesh, Mesh) or len(mesh.axis_names) != 1:
        raise ValueError(f"mesh must be a jax.sharding.Mesh with one axis (the N evaluations are split over it), "
                         f"got {mesh!r}")
    return mesh


def check_params(params: Any) -> jax.Array:
    """params as one flat d-vector, after checking they are non-empty floating point arrays of one dtype."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    if not leaves or not all(isinstance(leaf, jax.Array) or hasattr(leaf, "__array__") for _, leaf in leaves):
        raise ValueError("params must be an array or a non-empty pytree (e.g. a dict) of arrays")
    for path, leaf in leaves:
        if jnp.size(leaf) == 0:
            raise ValueError(f"params{jax.tree_util.keystr(path)} has no elements (shape {jnp.shape(leaf)}): "
                             "leave empty arrays out")
    dtypes = {jnp.result_type(leaf) for _, leaf in leaves}
    if len(dtypes) != 1:
        raise ValueError(f"params must all share one dtype, got {sorted(map(str, dtypes))}")
    if not jnp.issubdtype(dtypes.pop(), jnp.floating):
        raise ValueError(f"params must be floating point, got {jnp.result_type(leaves[0][1])}")
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


def evaluator(loss_fn: Callable[..., Any], buffers: bool = False, key: bool = False) -> Evaluator:
    """The evaluator of ``loss_fn``: ``loss_fn(params, batch)``, with ``buffers`` ``loss_fn(params, buffers,
    batch) -> (loss, new_buffers)``, with ``key`` also the keyword argument ``key=``."""
    def evaluate(params, bufs, k, batch):
        extra = {"key": k} if key else {}
        if buffers:
            (loss, new), grads = jax.value_and_grad(lambda p: loss_fn(p, bufs, batch, **extra), has_aux=True)(params)
            return loss, grads, new
        loss, grads = jax.value_and_grad(lambda p: loss_fn(p, batch, **extra))(params)
        return loss, grads, bufs
    return evaluate


class IterationInfo(NamedTuple):
    """Diagnostics of the last sequential iteration (arrays, so they live in the jitted state)."""

    loss: jax.Array  # at the selected process's evaluated point (the mean over the finite ones for large_batch)
    grad_norm: jax.Array
    selected: jax.Array  # int32: index of the process that continues (0-based), -1 when none was finite
    cold: jax.Array  # bool: the iteration was a plain Vanilla step (history or last gradient missing)
    evaluations: jax.Array  # int32: gradient evaluations spent
    losses: jax.Array  # (N,): loss at each process's evaluated point (NaN where none was evaluated)
    finite: jax.Array  # (N,) bool: evaluated with a finite point, loss and gradient
    proxy_cosine: jax.Array  # (N-1,): cos(mu(theta^(s-1)), grad f(theta^(s-1))), NaN without surrogate steps
    proxy_rel_error: jax.Array  # (N-1,): |mu - grad f| / |grad f|
    lengthscale: jax.Array  # the surrogate's lengthscale this iteration (NaN when it was not fitted; inf: one pair)
    factorized: jax.Array  # bool: False when K + sigma^2 I could not be factored (nothing changed)
    kernel_defined: jax.Array  # bool: False when the kernel matrix was NaN (lengthscale too small; nothing changed)
    iterate_finite: jax.Array  # bool: theta_t is finite


class OptExState(NamedTuple):
    """State of OptEx: the base optimizer's state at theta_t, the history, counters, diagnostics."""

    inner_state: optax.OptState
    history: History | None  # proxy="kernel" only: the T0 most recent evaluated pairs
    last_grad: jax.Array | None  # linesearch / last_gradient only: the last selected true gradient (flat)
    has_last_grad: jax.Array | None
    select: jax.Array  # int32: index of the selection rule in optex._validation.SELECT
    iteration: jax.Array  # int32: completed sequential iterations t
    info: IterationInfo
    buffers: Any = None  # the model's non-parameter state at theta_t (None: none)
    key: jax.Array | None = None  # PRNGKey(seed) (None: no seed)


class _Outcome(NamedTuple):
    params: Any  # theta_t
    updates: Any  # theta_t - theta_{t-1}, exact when the first process (theta^(0) = theta_{t-1}) is selected
    inner_state: Any
    buffers: Any
    points: jax.Array | None  # N x d evaluated inputs (kernel only)
    grads: jax.Array | None  # N x d true gradients (kernel only)
    stored: jax.Array | None  # (N,) bool: rows that enter the history (kernel only)
    grad: jax.Array  # the selected process's true gradient (flat)
    found: jax.Array  # bool: some process was finite
    info: IterationInfo
    trace: dict[str, jax.Array] | None  # trace=True: N x d points and stepped, (N-1) x d mus


def _uses_last_grad(settings: Settings) -> bool:
    return settings.proxy in ("linesearch", "last_gradient")


def init(settings: Settings, params: Any, select: str = "last", buffers: Any = None,
         seed: int | None = None) -> OptExState:
    """The state before the first iteration: fresh optimizer state, empty history, the selection rule,
    a copy of the buffers (the state is donated to each iteration) and the seed's key."""
    rule = check.SELECT.index(check.choice("select", select, check.SELECT))
    flat = check_params(params)
    check_optimizer(settings.optimizer, params)
    history = init_history(settings.history, flat.size, flat.dtype) if settings.proxy == "kernel" else None
    last = _uses_last_grad(settings)
    n = settings.parallelism
    nan = jnp.full(n, jnp.nan, flat.dtype)
    info = _info(settings, flat.dtype, small_dtype(), losses=nan, norms=nan, finite=jnp.zeros(n, bool), selected=0,
                 cold=True, evaluations=0)
    return OptExState(
        inner_state=settings.optimizer.init(params), history=history,
        last_grad=jnp.zeros_like(flat) if last else None, has_last_grad=jnp.zeros((), bool) if last else None,
        select=jnp.asarray(rule, jnp.int32), iteration=jnp.zeros((), jnp.int32), info=info,
        buffers=jax.tree.map(jnp.array, buffers), key=None if seed is None else jax.random.PRNGKey(seed))


# ---------------------------------------------------------------------------------------------- pieces
def _flat(tree: Any) -> jax.Array:
    return ravel_pytree(tree)[0]


def _take(tree: Any, index: jax.Array) -> Any:
    return jax.tree.map(lambda x: x[index], tree)


def _stack(first: Any, rest: Any) -> Any:
    return jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), first, rest)


def _append(rest: Any, last: Any) -> Any:
    return jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]]), rest, last)


def _where(flag: jax.Array, new: Any, old: Any) -> Any:
    return jax.tree.map(lambda a, b: jnp.where(flag, a, b), new, old)


def _tree_norm(tree: Any) -> jax.Array:
    """Global norm of a pytree, scaled by an exact power of two first so that it neither overflows nor
    underflows (and equals the plain norm when the largest entry lies within the band)."""
    leaves = jax.tree.leaves(tree)
    top = jnp.max(jnp.stack([jnp.max(jnp.abs(x)) for x in leaves]))
    scale = row_scale(top)
    return jnp.sqrt(sum(jnp.sum(jnp.square(scaled(x, scale.astype(x.dtype)))) for x in leaves)) / scale


def _clip(settings: Settings, grads: Any) -> Any:
    """Scale to norm ``max_grad_norm`` when longer (norm 0 or NaN: unchanged), as the torch backend."""
    if settings.max_grad_norm is None:
        return grads
    factor = jnp.minimum(settings.max_grad_norm / _tree_norm(grads), 1.0)
    factor = jnp.where(jnp.isnan(factor), 1.0, factor)
    return jax.tree.map(lambda g: g * factor.astype(g.dtype), grads)


def _optimizer_step(settings: Settings, grads: Any, inner_state: Any, point: Any) -> tuple[Any, Any]:
    return settings.optimizer.update(_clip(settings, grads), inner_state, point)


def _keys(state: OptExState, n: int) -> jax.Array | None:
    """Process s's key for this iteration t (1-based): fold_in(fold_in(PRNGKey(seed), t), s)."""
    if state.key is None:
        return None
    key = jax.random.fold_in(state.key, state.iteration + 1)
    return jax.vmap(lambda s: jax.random.fold_in(key, s))(jnp.arange(n))


def _evaluate(settings: Settings, evaluate: Evaluator, points: Any, buffers: Any, keys: Any,
              batches: Any) -> tuple[jax.Array, Any, Any]:
    """Losses (n,), stacked gradients and updated buffers at stacked ``points``: batch and key i for point i,
    every point with the same incoming ``buffers``."""
    axes = (0, None, None if keys is None else 0, None if batches is None else 0)
    n = jax.tree.leaves(points)[0].shape[0]
    if settings.parallel == "shard_map" and n > 1:
        return _sharded(settings.mesh, evaluate, axes, n, points, buffers, keys, batches)
    if settings.parallel in ("vmap", "shard_map"):
        return jax.vmap(evaluate, in_axes=axes)(points, buffers, keys, batches)
    return jax.lax.map(lambda args: evaluate(args[0], buffers, args[1], args[2]), (points, keys, batches))


def _sharded(mesh: Mesh, evaluate: Evaluator, axes: tuple, n: int, points: Any, buffers: Any, keys: Any,
             batches: Any) -> tuple[jax.Array, Any, Any]:
    """The n evaluations split over the mesh's devices in contiguous blocks (``jax.shard_map``: the N axis
    sharded, buffers replicated), each device vmapping its block. n is padded to a multiple of the device
    count by repeating the last point (those evaluations are discarded)."""
    k = mesh.devices.size
    padded = -(-n // k) * k

    def pad(tree: Any) -> Any:
        return jax.tree.map(lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], padded - n, axis=0)]), tree)

    sharded = P(mesh.axis_names[0])
    args = (pad(points), buffers, None if keys is None else pad(keys), None if batches is None else pad(batches))
    specs = tuple(sharded if axis == 0 else P() for axis in axes)
    local = jax.shard_map(lambda *a: jax.vmap(evaluate, in_axes=axes)(*a), mesh=mesh, in_specs=specs,
                          out_specs=sharded, check_vma=False)
    return jax.tree.map(lambda x: x[:n], local(*args))


_LAST, _MIN_LOSS = check.SELECT.index("last"), check.SELECT.index("min_loss")


def _choose(rule: jax.Array, finite: jax.Array, losses: jax.Array, norms: jax.Array) -> jax.Array:
    """Algorithm 1, line 9, among the finite processes, for the rule with index ``rule`` in ``check.SELECT``:
    the highest-index finite process, or the lowest loss or gradient norm (ties: the lowest index)."""
    index = jnp.arange(finite.shape[0])
    key = jnp.where(finite, jnp.where(rule == _MIN_LOSS, losses.astype(norms.dtype), norms), jnp.inf)
    best = jnp.argmax(finite & (key == jnp.min(key)))
    return jnp.where(rule == _LAST, jnp.max(jnp.where(finite, index, -1)), best).astype(jnp.int32)


def _true_step(settings: Settings, params: Any, point: Any, inner_state: Any, grads: Any) -> tuple[Any, Any, Any]:
    """A process's step from its own point and state -> (theta_t, update from theta_{t-1}, state)."""
    updates, inner_state = _optimizer_step(settings, grads, inner_state, point)
    new_params = optax.apply_updates(point, updates)
    # (point - params) is exactly 0 for the first process, so its update is returned bit for bit.
    total = jax.tree.map(lambda p, q, u: ((p - q) + u).astype(q.dtype), point, params, updates)
    return new_params, total, inner_state


def _compare(mus: jax.Array, grads: jax.Array, top: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Cosine (torch's eps 1e-8 convention) and relative error of mu against the true gradients (``top``:
    their row maxima), the rows scaled by exact powers of two first (1 within the band)."""
    scale = row_scale(top)[:, None]
    true, est = scaled(grads, scale), scaled(mus, row_scale(row_top(mus))[:, None])
    mu_norm, grad_norm = jnp.linalg.norm(est, axis=1), jnp.linalg.norm(true, axis=1)
    cosine = jnp.sum(est * true, 1) / (jnp.maximum(mu_norm, 1e-8) * jnp.maximum(grad_norm, 1e-8))
    return cosine, jnp.linalg.norm(scaled(mus, scale) - true, axis=1) / grad_norm


def _info(settings: Settings, dtype, small, *, losses, norms, finite, selected, cold, evaluations, loss=None,
          grad_norm=None, cosine=None, rel=None, lengthscale=None, factorized=True, defined=True,
          iterate_finite=True) -> IterationInfo:
    """IterationInfo with fixed dtypes and shapes (so that every branch of a lax.cond agrees)."""
    n = settings.parallelism
    nan = jnp.full(n - 1, jnp.nan, dtype)
    found = jnp.any(finite)
    loss = losses[selected] if loss is None else loss
    grad_norm = norms[selected] if grad_norm is None else grad_norm
    return IterationInfo(
        loss=jnp.where(found, jnp.asarray(loss, dtype), jnp.nan),
        grad_norm=jnp.where(found, jnp.asarray(grad_norm, dtype), jnp.nan),
        selected=jnp.where(found, jnp.asarray(selected, jnp.int32), -1), cold=jnp.asarray(cold, bool),
        evaluations=jnp.asarray(evaluations, jnp.int32),
        losses=jnp.concatenate([losses.astype(dtype), jnp.full(n - losses.shape[0], jnp.nan, dtype)]),
        finite=jnp.concatenate([finite, jnp.zeros(n - finite.shape[0], bool)]),
        proxy_cosine=nan if cosine is None else cosine.astype(dtype),
        proxy_rel_error=nan if rel is None else rel.astype(dtype),
        lengthscale=jnp.full((), jnp.nan, small) if lengthscale is None else jnp.asarray(lengthscale, small),
        factorized=jnp.asarray(factorized, bool), kernel_defined=jnp.asarray(defined, bool),
        iterate_finite=jnp.asarray(iterate_finite, bool))


class _Iteration:
    """The branches of one sequential iteration, sharing the settings and the objective."""

    def __init__(self, settings: Settings, evaluate: Evaluator, params: Any, state: OptExState, batches: Any,
                 trace: bool) -> None:
        self.settings, self.evaluate, self.batches, self.trace = settings, evaluate, batches, trace
        self.params, self.state = params, state
        flat, self.unravel = ravel_pytree(params)
        self.flat, self.dtype = flat, flat.dtype
        self.small = state.info.lengthscale.dtype
        self.keys = _keys(state, settings.parallelism)

    def info(self, **kwargs) -> IterationInfo:
        return _info(self.settings, self.dtype, self.small, **kwargs)

    def evaluated(self, losses: jax.Array, grads: Any, points: jax.Array,
                  evaluated: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        """Flat gradients (n x d), their row maxima and norms, and which of the n evaluations are finite:
        the point (through its sum), the loss, every gradient entry and, with clipping, the norm."""
        flat = jax.vmap(_flat)(grads)
        top = row_top(flat)
        norms = safe_norm(flat, top)
        finite = jnp.isfinite(losses) & jnp.isfinite(top) & jnp.isfinite(jnp.sum(points, axis=1))
        if self.settings.max_grad_norm is not None:
            finite = finite & jnp.isfinite(norms)
        return flat, top, norms, finite if evaluated is None else finite & evaluated

    def conclude(self, points: Any, states: Any, losses: jax.Array, grads: Any, buffers: Any, *, rule: jax.Array,
                 evaluated: jax.Array | None = None, mus: jax.Array | None = None, compare: bool = False,
                 **info: Any) -> _Outcome:
        """Line 9 among the finite processes, the selected process's true step (line 7), the kept buffers;
        with no finite process the incoming iterate, optimizer state and buffers, exactly."""
        n = losses.shape[0]
        flat_points = jax.vmap(_flat)(points)
        flat_grads, top, norms, finite = self.evaluated(losses, grads, flat_points, evaluated)
        chosen = _choose(rule, finite, losses, norms)
        found = jnp.any(finite)
        stepped = _true_step(self.settings, self.params, _take(points, chosen), _take(states, chosen),
                             _take(grads, chosen))
        zeros = jax.tree.map(jnp.zeros_like, self.params)
        new_params, updates, inner = _where(found, stepped, (self.params, zeros, self.state.inner_state))
        kept = _where(found, _take(buffers, chosen), self.state.buffers)
        if compare:
            info["cosine"], info["rel"] = _compare(mus, flat_grads[: n - 1], top[: n - 1])
        trace = None
        if self.trace:
            every = jax.vmap(lambda p, s, g: _flat(_true_step(self.settings, self.params, p, s, g)[0]))(
                points, states, grads)
            trace = self.traced(flat_points, mus, jnp.where(finite[:, None], every, flat_points))
        kernel = self.settings.proxy == "kernel"
        return _Outcome(new_params, updates, inner, kept, flat_points if kernel else None,
                        flat_grads if kernel else None, finite if kernel else None, flat_grads[chosen], found,
                        self.info(losses=losses, norms=norms, finite=finite, selected=chosen,
                                  evaluations=n if evaluated is None else jnp.sum(evaluated), **info,
                                  iterate_finite=jnp.isfinite(jnp.sum(_flat(new_params)))), trace)

    def traced(self, points: jax.Array, mus: jax.Array | None, stepped: jax.Array) -> dict[str, jax.Array]:
        """Trace arrays of fixed shapes (N x d, (N-1) x d, N x d): every branch of a lax.cond agrees."""
        n, d = self.settings.parallelism, self.flat.size

        def pad(rows, count):
            return jnp.concatenate([rows, jnp.zeros((count - rows.shape[0], d), self.dtype)])

        mus = jnp.zeros((n - 1, d), self.dtype) if mus is None else mus
        return {"points": pad(points, n), "mus": pad(mus, n - 1), "stepped": pad(stepped, n)}

    def broadcast(self, tree: Any, n: int) -> Any:
        return jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + jnp.shape(x)), tree)

    def vanilla(self) -> _Outcome:
        """A plain base-optimizer step on the first batch (Vanilla, and every cold start)."""
        batch = None if self.batches is None else _take(self.batches, 0)
        key = None if self.keys is None else self.keys[0]
        loss, grads, buffers = self.evaluate(self.params, self.state.buffers, key, batch)
        single = self.broadcast((self.params, self.state.inner_state, jnp.asarray(loss), grads, buffers), 1)
        out = self.conclude(*single, rule=jnp.asarray(_LAST), cold=True)
        if self.settings.proxy != "kernel":
            return out
        # The cold branch of a lax.cond with the kernel one: N history rows, only the first stored.
        n = self.settings.parallelism
        rows = dict(points=self.broadcast(out.points[0], n), grads=self.broadcast(out.grads[0], n),
                    stored=jnp.arange(n) == jnp.where(out.stored[0], 0, n))
        return out._replace(**rows)

    # ------------------------------------------------------------------------------ proxy methods
    def surrogate(self) -> _Outcome:
        """OptEx (proxy steps driven by mu, Eq. 5) or its trivial-surrogate ablation (the last gradient)."""
        settings = self.settings
        if settings.parallelism == 1:  # no proxy step: the surrogate is never fitted (as in the torch backend)
            return self.proxy_steps(None)
        if settings.proxy == "last_gradient":
            return self.proxy_steps(None)
        fitted = fit(self.state.history, settings.kernel)
        return jax.lax.cond(fitted.ok & fitted.defined, self.proxy_steps, self.unfactored, fitted)

    def proxy_steps(self, fitted) -> _Outcome:
        settings, h, n = self.settings, self.state.history, self.settings.parallelism
        if n == 1:
            points, states = self.broadcast((self.params, self.state.inner_state), 1)
            mus, extra = None, {}
        else:
            def proxy_step(carry, _):
                point, inner = carry
                if fitted is None:
                    mu = self.state.last_grad
                else:
                    mu = posterior_mean(h, fitted, settings.kernel, _flat(point)[None])[0]
                updates, inner = _optimizer_step(settings, self.unravel(mu), inner, point)
                point = optax.apply_updates(point, updates)
                return (point, inner), (point, inner, mu)

            _, (tail, tail_states, mus) = jax.lax.scan(proxy_step, (self.params, self.state.inner_state), None,
                                                       length=n - 1)
            points, states = _stack(self.params, tail), _stack(self.state.inner_state, tail_states)
            extra = dict(compare=True, lengthscale=None if fitted is None else fitted.lengthscale)
        losses, grads, buffers = _evaluate(settings, self.evaluate, points, self.state.buffers, self.keys,
                                           self.batches)
        return self.conclude(points, states, losses, grads, buffers, rule=self.state.select, mus=mus, cold=False,
                             **extra)

    def unfactored(self, fitted) -> _Outcome:
        """K + sigma^2 I is not positive definite even with jitter, or not defined: change nothing, report it."""
        n, d = self.settings.parallelism, self.flat.size
        zeros = jnp.zeros((n, d), self.dtype)
        nan = jnp.full(n, jnp.nan, self.dtype)
        info = self.info(losses=nan, norms=nan, finite=jnp.zeros(n, bool), selected=0, cold=False, evaluations=0,
                         lengthscale=fitted.lengthscale, factorized=fitted.ok, defined=fitted.defined)
        trace = self.traced(zeros, None, zeros) if self.trace else None
        return _Outcome(self.params, jax.tree.map(jnp.zeros_like, self.params), self.state.inner_state,
                        self.state.buffers, zeros, zeros, jnp.zeros(n, bool), jnp.zeros(d, self.dtype),
                        jnp.zeros((), bool), info, trace)

    def target(self) -> _Outcome:
        """Proxy steps with the true gradient on the batch the same process later uses (the ideal).

        Those N-1 gradients are reused by their processes (the official code computes them twice); with
        ``select="last"`` the iteration is N plain sequential optimizer steps. Process s evaluates with the
        buffers process s-1's evaluation produced. The chain ends at its first non-finite evaluation: the
        processes after it count as not evaluated (their evaluations are computed, frozen, and ignored).
        """
        settings, n = self.settings, self.settings.parallelism

        def proxy_step(carry, inputs):
            point, inner, buffers, alive = carry
            batch, key = inputs
            loss, grads, new_buffers = self.evaluate(point, buffers, key, batch)
            ok = alive & jnp.isfinite(loss) & jnp.all(jnp.isfinite(_flat(grads))) & jnp.isfinite(
                jnp.sum(_flat(point)))
            updates, stepped = _optimizer_step(settings, grads, inner, point)
            moved = (optax.apply_updates(point, updates), stepped, new_buffers)
            carry = (*_where(ok, moved, (point, inner, buffers)), ok)
            return carry, (point, inner, loss, grads, new_buffers, alive)

        def head(tree):
            return None if tree is None else jax.tree.map(lambda b: b[: n - 1], tree)

        (last, last_state, last_buffers, alive), (points, states, losses, grads, buffers, evaluated) = jax.lax.scan(
            proxy_step, (self.params, self.state.inner_state, self.state.buffers, jnp.ones((), bool)),
            (head(self.batches), head(self.keys)), length=n - 1)
        batch = None if self.batches is None else _take(self.batches, n - 1)
        key = None if self.keys is None else self.keys[n - 1]
        loss, grad, new_buffers = self.evaluate(last, last_buffers, key, batch)
        points, states = _append(points, last), _append(states, last_state)
        grads, evaluated = _append(grads, grad), _append(evaluated, alive)
        mus = jax.vmap(_flat)(grads)[: n - 1]
        return self.conclude(points, states, jnp.where(evaluated, _append(losses, loss), jnp.nan), grads,
                             _append(buffers, new_buffers), rule=self.state.select, evaluated=evaluated, mus=mus,
                             cold=False)

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

        points = _stack(point(0, stayed), jax.vmap(point, in_axes=(0, None))(jnp.arange(1, n), moved))
        states = _stack(stayed_state, self.broadcast(moved_state, n - 1))
        losses, grads, buffers = _evaluate(settings, self.evaluate, points, self.state.buffers, self.keys,
                                           self.batches)
        return self.conclude(points, states, losses, grads, buffers, rule=jnp.asarray(_MIN_LOSS), cold=False)

    def large_batch(self) -> _Outcome:
        """The finite ones of the N gradients at theta_{t-1} (one batch each) averaged into one step; the
        buffers: the mean of the floating-point ones, the integer ones of the first finite process."""
        settings, n = self.settings, self.settings.parallelism
        points = self.broadcast(self.params, n)
        losses, grads, buffers = _evaluate(settings, self.evaluate, points, self.state.buffers, self.keys,
                                           self.batches)
        _, _, _, finite = self.evaluated(losses, grads, self.broadcast(self.flat, n))
        found, count = jnp.any(finite), jnp.sum(finite)
        all_finite = jnp.all(finite)

        def average(x):
            mask = finite.reshape((n,) + (1,) * (x.ndim - 1))
            return jnp.where(all_finite, jnp.mean(x, axis=0), jnp.sum(jnp.where(mask, x, 0), axis=0) / count)

        mean = jax.tree.map(average, grads)
        first = jnp.argmax(finite)
        kept = jax.tree.map(lambda b: average(b).astype(b.dtype) if jnp.issubdtype(b.dtype, jnp.floating) else b[first],
                            buffers)
        stepped = _true_step(settings, self.params, self.params, self.state.inner_state, mean)
        zeros = jax.tree.map(jnp.zeros_like, self.params)
        new_params, updates, inner = _where(found, stepped, (self.params, zeros, self.state.inner_state))
        flat_mean = _flat(mean)
        info = self.info(losses=average(losses)[None], norms=jnp.full(1, jnp.nan, self.dtype), finite=finite,
                         selected=0, cold=False, evaluations=n, grad_norm=safe_norm(flat_mean[None])[0],
                         iterate_finite=jnp.isfinite(jnp.sum(_flat(new_params))))
        trace = None
        if self.trace:
            rows = self.flat[None], _flat(new_params)[None]
            trace = self.traced(rows[0], None, rows[1])
        return _Outcome(new_params, updates, inner, _where(found, kept, self.state.buffers), None, None, None,
                        flat_mean, found, info, trace)


def iterate(settings: Settings, evaluate: Evaluator, params: Any, state: OptExState, batches: Any = None,
            trace: bool = False) -> tuple[Any, Any, OptExState, dict[str, jax.Array] | None]:
    """One sequential iteration of Algorithm 1 -> (theta_t, theta_t - theta_{t-1}, new state, trace).

    ``evaluate(params, buffers, key, batch) -> (loss, grads, new_buffers)`` is e.g. ``evaluator(loss_fn)``;
    ``batches`` is None (deterministic objective) or a pytree whose leaves have a leading axis of N,
    batch s for process s. While the history holds fewer than ``settings.warmup_pairs`` pairs (LineSearch
    and last_gradient: while there is no previous gradient) the iteration is a plain Vanilla step on
    batch 0. ``trace`` (static) also takes every process's real step: the trace holds the N x d evaluated
    points, the (N-1) x d gradients that drove the proxy steps and the N x d points the real steps reach
    (zero rows past what was evaluated).
    """
    n = settings.parallelism
    if batches is not None:
        sizes = {leaf.shape[0] if leaf.ndim else None for leaf in jax.tree.leaves(batches)}
        if sizes != {n}:
            raise ValueError(f"batches must hold one batch per parallel process ({n}) along the leading axis of "
                             f"every leaf; got leading sizes {sorted(sizes, key=str)}")
    it = _Iteration(settings, evaluate, params, state, batches, trace)
    if settings.proxy == "none":
        out = it.vanilla()
    elif settings.proxy == "kernel":
        out = jax.lax.cond(state.history.count >= settings.warmup_pairs, it.surrogate, it.vanilla)
    elif settings.proxy == "last_gradient":
        out = jax.lax.cond(state.has_last_grad, it.surrogate, it.vanilla)
    elif settings.proxy == "linesearch":
        out = jax.lax.cond(state.has_last_grad, it.linesearch, it.vanilla)
    elif settings.proxy == "target":
        out = it.target()
    else:
        out = it.large_batch()
    history, last_grad, has_last_grad = state.history, state.last_grad, state.has_last_grad
    if settings.proxy == "kernel":
        history = add_pairs(history, out.points, out.grads, out.stored)
    if _uses_last_grad(settings):
        last_grad, has_last_grad = jnp.where(out.found, out.grad, last_grad), has_last_grad | out.found
    done = out.info.factorized & out.info.kernel_defined
    new_state = state._replace(inner_state=out.inner_state, history=history, last_grad=last_grad,
                               has_last_grad=has_last_grad, iteration=state.iteration + done.astype(jnp.int32),
                               info=out.info, buffers=out.buffers)
    return out.params, out.updates, new_state, out.trace


def optex_transform(optimizer: optax.GradientTransformation = DEFAULT_OPTIMIZER, parallelism: int = 5,
                    history: int = 50, kernel: str = "matern52", lengthscale: float | str = "auto",
                    noise: float = 1e-3, select: str = "last", proxy: str = "kernel", parallel: str = "vmap",
                    max_grad_norm: float | None = None, warmup_pairs: int = 1) -> optax.GradientTransformationExtraArgs:
    """OptEx around ``optimizer`` as an optax transformation (arguments as for ``optex.jax.OptEx``).

    ``update(updates, state, params, *, grad_fn, batches=None)`` runs one sequential iteration and
    returns theta_t - theta_{t-1}, so ``optax.apply_updates(params, updates)`` is theta_t. Its
    ``grad_fn(params, batch) -> (loss, grads)`` is ``jax.value_and_grad(loss_fn)`` (the losses drive
    ``select``); ``batches`` is None or a pytree of N stacked batches. The incoming ``updates`` are
    not used: all N gradients, the one at theta_{t-1} included, come from ``grad_fn``. Diagnostics
    are in ``state.info`` (``info.finite``: the processes that were finite; with none the update is
    zero and the state unchanged); if K + sigma^2 I cannot be factored the update is zero and
    ``state.info.factorized`` is False. Usage::

        opt = optex_transform(optax.adam(1e-2), parallelism=5)
        state = opt.init(params)
        updates, state = opt.update(None, state, params, grad_fn=jax.value_and_grad(loss_fn))
        params = optax.apply_updates(params, updates)
    """
    settings = make_settings(optimizer, parallelism, history, kernel, lengthscale, noise, select, proxy, parallel,
                             max_grad_norm, warmup_pairs)

    def init_fn(params: Any) -> OptExState:
        return init(settings, params, select)

    def update_fn(updates: Any, state: OptExState, params: Any = None, *, grad_fn: Callable | None = None,
                  batches: Any = None, **extra_args: Any) -> tuple[Any, OptExState]:
        del updates, extra_args
        if params is None:
            raise ValueError("params must be given to update: OptEx steps from theta_{t-1}")
        if grad_fn is None:
            raise ValueError("grad_fn must be given to update: (params, batch) -> (loss, grads), "
                             "e.g. jax.value_and_grad(loss_fn)")

        def evaluate(p, buffers, key, batch):
            return (*grad_fn(p, batch), buffers)

        _, updates, state, _ = iterate(settings, evaluate, params, state, batches)
        return updates, state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


__all__ = ["DEFAULT_OPTIMIZER", "IterationInfo", "OptExState", "Settings", "init", "iterate", "make_settings",
           "optex_transform", "check_optimizer", "check_params", "evaluator"]
