"""OptEx (Algorithm 1) around any gradient-only optax optimizer: the object API of ``optex.torch.OptEx``."""
from __future__ import annotations

import inspect
import math
import time
from functools import partial
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from .. import _validation as check
from .._types import StepInfo, report_nonfinite
from . import core
from .estimator import GradientEstimator

LossFn = Callable[..., Any]
STATE_VERSION = 1


@partial(jax.jit, static_argnames=("settings", "loss_fn", "trace"), donate_argnames=("state",))
def _compiled_iteration(settings: core.Settings, loss_fn: LossFn, trace: bool, params: Any, state: core.OptExState,
                        batches: Any) -> tuple[Any, core.OptExState, Any]:
    # Module level, so OptEx instances with equal settings (same optimizer object) and the same
    # loss_fn share one compiled function.
    evaluate = core.evaluator(loss_fn, buffers=state.buffers is not None, key=state.key is not None)
    new_params, _, new_state, traced = core.iterate(settings, evaluate, params, state, batches, trace)
    return new_params, new_state, traced


def _stack_batches(batches: Sequence[Any]) -> Any:
    """The N batches as one pytree with a leading axis of N, or a ValueError naming the process."""
    flat = [jax.tree.flatten(b) for b in batches]
    first, spec = flat[0]
    for s, (leaves, other) in enumerate(flat):
        if other != spec:
            raise ValueError(f"batches[{s}] has a different structure from batches[0]; every process's batch "
                             "must be built the same way")
        for leaf, ref in zip(leaves, first):
            if np.shape(leaf) != np.shape(ref):
                raise ValueError(f"batches[{s}] has a leaf of shape {np.shape(leaf)} where batches[0] has "
                                 f"{np.shape(ref)}: the JAX backend stacks the N batches (parallel='vmap' and "
                                 "'loop' alike), so their shapes must agree")
    return jax.tree.unflatten(spec, [jnp.stack([jnp.asarray(x) for x in group]) for group in zip(*(f for f, _ in flat))])


def _as_arrays(name: str, tree: Any) -> Any:
    leaves = jax.tree.leaves(tree)
    if not all(isinstance(leaf, (jax.Array, np.ndarray)) for leaf in leaves) or (name == "params" and not leaves):
        raise ValueError(f"{name} must be an array or a non-empty pytree (e.g. a dict) of jax or numpy arrays")
    if not jax.config.read("jax_enable_x64") and any(np.dtype(leaf.dtype) == np.float64 for leaf in leaves):
        raise ValueError(f"{name} are float64 but JAX computes in float32 unless jax_enable_x64 is on: call "
                         f"jax.config.update('jax_enable_x64', True) first (or pass float32 {name})")
    return jax.tree.map(jnp.asarray, tree)


def _takes_key(loss_fn: LossFn) -> bool:
    try:
        parameters = inspect.signature(loss_fn).parameters.values()
    except (TypeError, ValueError):  # no signature to read: let the call decide
        return True
    return any(p.name == "key" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


class OptEx:
    """Approximately parallelized iterations of a first-order optimizer (Shu et al., 2024, Algorithm 1).

    One :meth:`step` is one *sequential* iteration: N-1 proxy steps of the base optimizer driven by
    the gradient estimator's mean mu, the true gradient at all N proxy points theta^(0..N-1) in one
    vmapped call, the selected process's optimizer step from its own state, the N evaluated pairs
    added to the history. All of it is one compiled function (:func:`optex.jax.core.iterate`); the
    same iteration is available as an optax transformation, :func:`optex.jax.optex_transform`.
    Settings and semantics are those of ``optex.torch.OptEx``; only the differences are spelt out here.

    Parameters
    ----------
    params:
        An array or a pytree of arrays (e.g. a dict), all of one floating dtype, none empty. JAX arrays
        are immutable: read the current iterate theta_t from :attr:`params` after each step.
    optimizer:
        An optax ``GradientTransformation`` whose update needs only the gradient (default
        ``optax.adam(1e-3)``, torch.optim.Adam's defaults). Its state is carried through the proxy
        steps: process s starts from the state reached after s-1 proxy steps (Sec. 4.2).
        Optimizers that need the loss value (``optax.lbfgs``) are rejected with a ValueError; one that
        turns a finite gradient into a non-finite step (``optax.adam(float("nan"))``) is caught by a dry
        update on the first step whose iterate is non-finite while its gradient was finite (ValueError).
    parallelism:
        N, the number of points whose true gradients are evaluated per sequential iteration.
    history, kernel, lengthscale, noise:
        T0 and the surrogate's settings; see :class:`GradientEstimator`.
    select:
        Which process continues: ``"last"`` (theta_t = theta_t^(N), as in the theory), ``"min_loss"`` or
        ``"min_grad_norm"`` (the loss or gradient norm already evaluated at each process's point; ties
        go to the lowest index).
    proxy:
        ``"kernel"`` (OptEx) or a baseline: ``"none"`` (Vanilla, N = 1), ``"target"`` (proxy steps
        with true gradients: the ideal, N-1 extra *sequential* evaluations), ``"linesearch"`` (process
        j steps with learning rate j*lr along the last selected true gradient, then takes one true
        step; always selects the lowest loss at its points), ``"large_batch"`` (the N gradients are
        averaged at one point; identical to Vanilla on a deterministic objective) or
        ``"last_gradient"`` (the trivial surrogate: the N-1 proxy steps are fed the last selected true
        gradient instead of mu; same evaluations and selection as OptEx). LineSearch scales process j's
        *updates* by j, which equals scaling the learning rate for optax optimizers whose update is
        linear in it (sgd, momentum, the adam family).
    parallel:
        ``"vmap"``: the N true gradients in one ``jax.vmap`` call; ``"loop"``: one after the other
        (``lax.map``), e.g. to bound memory; ``"shard_map"``: the N evaluations split over the devices
        of ``mesh`` with ``jax.shard_map`` (the N axis sharded in contiguous blocks, everything else
        replicated; each device vmaps its block; N is padded to a multiple of the device count by
        repeating the last point, whose extra evaluations are discarded). Every device holds the
        history and runs the proxy steps; only the evaluations are split. All three stack the N
        batches, so their shapes must agree.
    mesh:
        ``parallel="shard_map"`` only: a ``jax.sharding.Mesh`` with one axis (default: every device of
        ``jax.devices()``). On a CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (set before
        JAX is imported) makes four host devices to try it on.
    max_grad_norm:
        If set, every gradient fed to the base optimizer (true or estimated) is clipped to this norm;
        the history keeps the unclipped true gradients. Norms are taken after scaling by an exact power
        of two, so they neither overflow nor underflow; a gradient whose norm is still not finite
        counts as non-finite.
    on_nonfinite:
        ``"skip"`` (default) or ``"raise"``: the policy of ``optex.torch.OptEx`` (a non-finite process
        takes no step, is never selected and never enters the history; with none finite, iterate,
        optimizer state, history, last gradient and buffers stay exactly as they were and
        ``StepInfo.skipped`` is True; a ``RuntimeWarning`` names the iteration, or ``FloatingPointError``
        is raised once the iteration is complete). It is decided inside the compiled iteration.
    warmup_pairs:
        1 (default) or 2: ``proxy="kernel"`` runs plain Vanilla iterations while the history holds fewer
        pairs. With one pair and a data-driven lengthscale the surrogate is the stored gradient itself,
        so that iteration equals a ``"last_gradient"`` one; 2 is the behaviour of earlier versions.
    buffers:
        ``None``, or a pytree of the model's non-parameter arrays (BatchNorm running statistics). With
        buffers, ``loss_fn(params, buffers, batch)`` returns ``(loss, new_buffers)`` (same structure).
        They are never part of theta nor of the history: every process evaluates with the buffers at
        theta_{t-1} and only the selected process's ``new_buffers`` are kept, so running statistics
        advance once per sequential iteration as in a plain loop. Target chains them (process s
        evaluates with process s-1's), LargeBatch keeps the mean of the floating-point ones over its
        finite processes and the integer ones of the first; a skipped iteration keeps them. Read them
        from :attr:`buffers`.
    seed:
        ``None`` (default) or a non-negative int. With a seed, ``loss_fn`` is also called with the
        keyword argument ``key``: process s (0-based) of sequential iteration t (1-based) gets
        ``jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), t), s)``, so every process
        draws its own dropout mask and a run is reproducible (and resumable from a checkpoint). Process
        s's key is not the key a sequential run would use at that step.

    Notes
    -----
    Pass the same ``loss_fn`` object to every :meth:`step`: the compiled iteration is cached per
    ``loss_fn`` (and per settings), so a new function object means a new compilation. The functional
    state (:class:`optex.jax.OptExState`) is :attr:`state`; its buffers are donated to the next step,
    so copy it (``jax.tree.map(jnp.copy, opt.state)``) to keep a snapshot, or use :meth:`state_dict`.

    Checkpoints. :meth:`state_dict` returns everything a run needs to continue bit for bit (iterate,
    optimizer state, history, last gradient, buffers, key, iteration count) as numpy arrays, ints,
    floats and strings under flat string keys: ``np.savez(path, **opt.state_dict())`` writes it and
    ``opt.load_state_dict(np.load(path))`` (no pickle) restores it into an object built with the same
    settings.
    """

    def __init__(self, params: Any, optimizer: optax.GradientTransformation = core.DEFAULT_OPTIMIZER,
                 parallelism: int = 5, history: int = 50, kernel: str = "matern52",
                 lengthscale: float | str = "auto", noise: float = 1e-3, select: str = "last",
                 proxy: str = "kernel", parallel: str = "vmap", max_grad_norm: float | None = None,
                 on_nonfinite: str = "skip", warmup_pairs: int = 1, buffers: Any = None,
                 seed: int | None = None, mesh: Any = None) -> None:
        self.settings = core.make_settings(optimizer, parallelism, history, kernel, lengthscale, noise, select, proxy,
                                           parallel, max_grad_norm, warmup_pairs, mesh)
        s = self.settings
        self.parallelism, self.history, self.noise = s.parallelism, s.history, s.kernel.noise
        self.select, self.proxy, self.parallel, self.max_grad_norm = select, s.proxy, s.parallel, s.max_grad_norm
        self.warmup_pairs = s.warmup_pairs
        self.on_nonfinite = check.choice("on_nonfinite", on_nonfinite, check.ON_NONFINITE)
        self.seed = None if seed is None else check.nonnegative_int("seed", seed)
        self.optimizer = optimizer
        self._params = _as_arrays("params", params)
        buffers = None if buffers is None else _as_arrays("buffers", buffers)
        self.state = core.init(s, self._params, select, buffers, self.seed)
        self._unravel = ravel_pytree(self._params)[1]
        self._checked_loss: LossFn | None = None
        self._optimizer_checked = False
        self._lengthscale: float | None = None
        self.iteration = 0

    # ------------------------------------------------------------------ parameters
    @property
    def params(self) -> Any:
        """The current iterate theta_t, in the structure passed in."""
        return self._params

    @property
    def buffers(self) -> Any:
        """The buffers at theta_t (None without buffers)."""
        return self.state.buffers

    @property
    def theta(self) -> jax.Array:
        """The current iterate as one flat d-vector."""
        return ravel_pytree(self._params)[0]

    @property
    def dim(self) -> int:
        return self.theta.size

    @property
    def device(self) -> jax.Device:
        return next(iter(jax.tree.leaves(self._params)[0].devices()))

    def unflatten(self, flat: jax.Array) -> Any:
        """The params' structure from a flat d-vector."""
        return self._unravel(flat)

    @property
    def estimator(self) -> GradientEstimator | None:
        """The surrogate on the current history (proxy="kernel"), valid until the next :meth:`step`
        (the state's buffers are donated to it)."""
        if self.state.history is None:
            return None
        return GradientEstimator.view(self.state.history, self.settings.kernel, self._lengthscale)

    # ------------------------------------------------------------------ one sequential iteration
    def _check_loss(self, loss_fn: LossFn, batches: Any) -> None:
        if loss_fn is self._checked_loss:
            return
        extra = {}
        if self.seed is not None:
            if not _takes_key(loss_fn):
                raise ValueError("loss_fn must take a keyword argument key (a PRNG key per process and iteration) "
                                 "when OptEx is given a seed")
            extra["key"] = self.state.key
        batch = None if batches is None else jax.tree.map(lambda b: b[0], batches)
        buffers = self.state.buffers
        args = (self._params, batch) if buffers is None else (self._params, buffers, batch)
        out = jax.eval_shape(partial(loss_fn, **extra), *args)
        if buffers is not None:
            def spec(tree):
                return jax.tree.structure(tree), [(np.shape(x), np.dtype(x.dtype)) for x in jax.tree.leaves(tree)]

            if not (isinstance(out, tuple) and len(out) == 2 and spec(out[1]) == spec(buffers)):
                raise ValueError("with buffers, loss_fn(params, buffers, batch) must return (loss, new_buffers), "
                                 "new_buffers with the structure, shapes and dtypes of buffers")
            out = out[0]
        if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != ():
            raise ValueError(f"loss_fn must return a scalar, got {getattr(out, 'shape', out)!r}")
        if not jnp.issubdtype(out.dtype, jnp.floating):
            raise ValueError(f"loss_fn must return a floating-point scalar, got {out.dtype}")
        self._checked_loss = loss_fn

    def step(self, loss_fn: LossFn, batches: Sequence[Any] | None = None, trace: bool = False) -> StepInfo:
        """Run one sequential iteration of Algorithm 1 and return what it did and cost.

        ``loss_fn(params, batch)`` (with ``buffers``: ``loss_fn(params, buffers, batch) -> (loss,
        new_buffers)``; with ``seed``: also ``key=``) returns a scalar loss; ``params`` has the structure
        given to the constructor. ``batches`` is None for a deterministic objective, else one batch per
        process (N of them; Vanilla takes 1). While the history holds fewer than ``warmup_pairs`` pairs
        (LineSearch and last_gradient: before the first gradient), the iteration is a plain Vanilla
        step on ``batches[0]``.

        ``trace=True`` also takes the real step of every process and fills ``StepInfo.points``, ``mus``
        and ``stepped`` as ``optex.torch.OptEx`` does (arrays with one row per point; a separate
        compilation). The iteration itself is unchanged.

        Timing: proxy steps, evaluations and the update run inside one compiled function (splitting it
        would add two dispatches and two host synchronisations to every step), so ``time_eval`` holds
        the wall time of the whole iteration (including compilation on the first call with a new
        ``loss_fn``) and ``time_proxy`` = ``time_update`` = 0.
        """
        if not callable(loss_fn):
            raise ValueError(f"loss_fn must be callable, got {loss_fn!r}")
        check.batches(batches, self.parallelism)
        if not isinstance(trace, bool):
            raise ValueError(f"trace must be True or False, got {trace!r}")
        stacked = None if batches is None else _stack_batches(batches)
        self._check_loss(loss_fn, stacked)
        start = time.perf_counter()
        params, state, traced = jax.block_until_ready(
            _compiled_iteration(self.settings, loss_fn, trace, self._params, self.state, stacked))
        elapsed = time.perf_counter() - start
        self._params, self.state = params, state
        info = jax.device_get(state.info)
        if not info.kernel_defined:
            raise ValueError(f"lengthscale ({float(info.lengthscale):.3g}) is so small against the distances between "
                             "history points that the kernel evaluates to NaN; use a larger lengthscale")
        if not info.factorized:
            raise np.linalg.LinAlgError("kernel matrix is not positive definite even with jitter 0.01 x its mean "
                                        "diagonal; increase `noise`")
        skipped = not info.finite.any()
        if not skipped and not info.iterate_finite:
            self._check_optimizer_output()
        self.iteration += 1
        result = self._result(info, skipped, traced, elapsed)
        self._report(result)
        return result

    def _check_optimizer_output(self) -> None:
        """A dry update from the optimizer's initial state with a unit gradient: a non-finite update means
        bad hyper-parameters (the non-finite iterate is then the optimizer's doing, not the objective's)."""
        if self._optimizer_checked:
            return
        ones = jax.tree.map(jnp.ones_like, self._params)
        updates, _ = self.optimizer.update(ones, self.optimizer.init(ones), ones)
        if not all(bool(jnp.isfinite(u).all()) for u in jax.tree.leaves(updates)):
            raise ValueError("optimizer turned a finite gradient into a non-finite step (a dry update from its "
                             "initial state with a unit gradient is non-finite too): check its hyper-parameters, "
                             "e.g. a NaN or infinite learning rate; the iterate is now non-finite")
        self._optimizer_checked = True

    def _result(self, info: core.IterationInfo, skipped: bool, traced: Any, elapsed: float) -> StepInfo:
        cold, n = bool(info.cold), self.parallelism
        evaluations = int(info.evaluations)
        lengthscale = float(info.lengthscale)
        if not math.isnan(lengthscale):
            self._lengthscale = lengthscale
        if cold:
            losses = (float(info.losses[0]),)
        elif self.proxy == "large_batch":
            losses = (float(info.loss),)
        else:
            losses = tuple(info.losses[:evaluations].tolist())
        compared = self.proxy in ("kernel", "last_gradient") and not cold and n > 1
        extra = {}
        if traced is not None:
            rows = 1 if cold or self.proxy == "large_batch" else evaluations
            driven = 0 if cold or self.proxy in ("linesearch", "large_batch") else rows - 1
            extra = dict(points=traced["points"][:rows], mus=traced["mus"][:driven] if driven else None,
                         stepped=traced["stepped"][:rows])
        return StepInfo(
            loss=float(info.loss), grad_norm=float(info.grad_norm), selected=int(info.selected),
            evaluations=evaluations, losses=losses,
            proxy_cosine=tuple(info.proxy_cosine.tolist()) if compared else (),
            proxy_rel_error=tuple(info.proxy_rel_error.tolist()) if compared else (),
            lengthscale=self._lengthscale if self.proxy == "kernel" else None,
            time_proxy=0.0, time_eval=elapsed, time_update=0.0,
            nonfinite=tuple(i for i in range(evaluations) if not info.finite[i]), skipped=skipped, **extra)

    def _report(self, info: StepInfo) -> None:
        report_nonfinite(info, self.iteration, self.on_nonfinite)

    # ------------------------------------------------------------------ checkpoints
    def _settings(self) -> dict[str, Any]:
        return {"parallelism": self.parallelism, "history": self.history, "proxy": self.proxy,
                "select": self.select, "dim": self.dim, "dtype": str(self.theta.dtype),
                "warmup_pairs": self.warmup_pairs, "seed": -1 if self.seed is None else self.seed}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the run bit for bit: numpy arrays (copies), ints, floats and strings
        under flat string keys (``np.savez`` stores it without pickle)."""
        out: dict[str, Any] = {"version": STATE_VERSION, "iteration": self.iteration,
                               "lengthscale": math.nan if self._lengthscale is None else self._lengthscale}
        out.update({f"settings/{k}": v for k, v in self._settings().items()})
        for name, tree in (("params", self._params), ("state", self.state)):
            out.update({f"{name}/{i}": np.array(leaf) for i, leaf in enumerate(jax.tree.leaves(tree))})
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the run saved by :meth:`state_dict` (an object built with the same settings; a mapping
        such as ``np.load(path)`` works too)."""
        if not isinstance(state, Mapping) and not hasattr(state, "files"):
            raise ValueError("state must be a mapping made by OptEx.state_dict()")
        keys = set(state.keys())
        if "version" not in keys or int(state["version"]) != STATE_VERSION:
            raise ValueError(f"state must be a mapping made by OptEx.state_dict() (version {STATE_VERSION})")
        for key, value in self._settings().items():
            saved = np.asarray(state.get(f"settings/{key}")).item()
            if saved != value:
                raise ValueError(f"state was saved with {key}={saved!r}, this OptEx has {value!r}")
        restored = {}
        for name, tree in (("params", self._params), ("state", self.state)):
            leaves, spec = jax.tree.flatten(tree)
            saved = [state.get(f"{name}/{i}") for i in range(len(leaves))]
            if f"{name}/{len(leaves)}" in keys or any(
                    s is None or np.shape(s) != np.shape(x) or np.asarray(s).dtype != x.dtype
                    for s, x in zip(saved, leaves)):
                raise ValueError(f"state's {name} do not match this OptEx's (other buffers or optimizer?)")
            restored[name] = jax.tree.unflatten(spec, [jax.device_put(np.asarray(s), self.device) for s in saved])
        self._params, self.state = restored["params"], restored["state"]
        self.iteration = int(state["iteration"])
        lengthscale = float(state["lengthscale"])
        self._lengthscale = None if math.isnan(lengthscale) else lengthscale
