"""OptEx (Algorithm 1) around any gradient-only optax optimizer: the object API of ``optex.torch.OptEx``."""
from __future__ import annotations

import time
import warnings
from functools import partial
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from .. import _validation as check
from .._types import StepInfo
from . import core
from .estimator import GradientEstimator

LossFn = Callable[[Any, Any], jax.Array]


@partial(jax.jit, static_argnames=("settings", "loss_fn"), donate_argnames=("state",))
def _compiled_iteration(settings: core.Settings, loss_fn: LossFn, params: Any, state: core.OptExState,
                        batches: Any) -> tuple[Any, core.OptExState]:
    # Module level, so OptEx instances with equal settings (same optimizer object) and the same
    # loss_fn share one compiled function.
    new_params, _, new_state = core.iterate(settings, jax.value_and_grad(loss_fn), params, state, batches)
    return new_params, new_state


def _stack_batches(batches: Sequence[Any]) -> Any:
    leaves, specs = zip(*(jax.tree.flatten(b) for b in batches))
    if any(spec != specs[0] for spec in specs):
        raise ValueError("batches must all have the same structure (one batch per parallel process)")
    return jax.tree.unflatten(specs[0], [jnp.stack([jnp.asarray(x) for x in group]) for group in zip(*leaves)])


def _as_arrays(params: Any) -> Any:
    leaves = jax.tree.leaves(params)
    if not leaves or not all(isinstance(leaf, (jax.Array, np.ndarray)) for leaf in leaves):
        raise ValueError("params must be an array or a non-empty pytree (e.g. a dict) of jax or numpy arrays")
    if not jax.config.read("jax_enable_x64") and any(np.dtype(leaf.dtype) == np.float64 for leaf in leaves):
        raise ValueError("params are float64 but JAX computes in float32 unless jax_enable_x64 is on: call "
                         "jax.config.update('jax_enable_x64', True) first (or pass float32 params)")
    return jax.tree.map(jnp.asarray, params)


class OptEx:
    """Approximately parallelized iterations of a first-order optimizer (Shu et al., 2024, Algorithm 1).

    One :meth:`step` is one *sequential* iteration: N-1 proxy steps of the base optimizer driven by
    the gradient estimator's mean mu, the true gradient at all N proxy points theta^(0..N-1) in one
    vmapped call, the selected process's optimizer step from its own state, the N evaluated pairs
    added to the history. All of it is one compiled function (:func:`optex.jax.core.iterate`); the
    same iteration is available as an optax transformation, :func:`optex.jax.optex_transform`.

    Parameters
    ----------
    params:
        An array or a pytree of arrays (e.g. a dict), all of one floating dtype. JAX arrays are
        immutable: read the current iterate theta_t from :attr:`params` after each step.
    optimizer:
        An optax ``GradientTransformation`` whose update needs only the gradient (default
        ``optax.adam(1e-3)``, torch.optim.Adam's defaults). Its state is carried through the proxy
        steps: process s starts from the state reached after s-1 proxy steps (Sec. 4.2).
        Optimizers that need the loss value (``optax.lbfgs``) are rejected with a ValueError.
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
        step; always selects the lowest loss at its points) or ``"large_batch"`` (the N gradients are
        averaged at one point; identical to Vanilla on a deterministic objective). LineSearch scales
        process j's *updates* by j, which equals scaling the learning rate for optax optimizers whose
        update is linear in it (sgd, momentum, the adam family).
    parallel:
        ``"vmap"``: the N true gradients in one ``jax.vmap`` call; ``"loop"``: one after the other
        (``lax.map``), e.g. to bound memory.
    max_grad_norm:
        If set, every gradient fed to the base optimizer (true or estimated) is clipped to this norm;
        the history keeps the unclipped true gradients.

    Notes
    -----
    Pass the same ``loss_fn`` object to every :meth:`step`: the compiled iteration is cached per
    ``loss_fn`` (and per settings), so a new function object means a new compilation. The functional
    state (:class:`optex.jax.OptExState`) is :attr:`state`; its buffers are donated to the next step,
    so copy it (``jax.tree.map(jnp.copy, opt.state)``) to keep a snapshot.
    """

    def __init__(self, params: Any, optimizer: optax.GradientTransformation = core.DEFAULT_OPTIMIZER,
                 parallelism: int = 5, history: int = 50, kernel: str = "matern52",
                 lengthscale: float | str = "auto", noise: float = 1e-3, select: str = "last",
                 proxy: str = "kernel", parallel: str = "vmap", max_grad_norm: float | None = None) -> None:
        self.settings = core.make_settings(optimizer, parallelism, history, kernel, lengthscale, noise, select, proxy,
                                           parallel, max_grad_norm)
        s = self.settings
        self.parallelism, self.history, self.noise = s.parallelism, s.history, s.kernel.noise
        self.select, self.proxy, self.parallel, self.max_grad_norm = select, s.proxy, s.parallel, s.max_grad_norm
        self.optimizer = optimizer
        self._params = _as_arrays(params)
        self.state = core.init(s, self._params, select)
        self._unravel = ravel_pytree(self._params)[1]
        self._checked_loss: LossFn | None = None
        self._lengthscale: float | None = None
        self.iteration = 0

    # ------------------------------------------------------------------ parameters
    @property
    def params(self) -> Any:
        """The current iterate theta_t, in the structure passed in."""
        return self._params

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
        batch = None if batches is None else jax.tree.map(lambda b: b[0], batches)
        out = jax.eval_shape(loss_fn, self._params, batch)
        if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != ():
            raise ValueError(f"loss_fn must return a scalar, got {getattr(out, 'shape', out)!r}")
        self._checked_loss = loss_fn

    def step(self, loss_fn: LossFn, batches: Sequence[Any] | None = None) -> StepInfo:
        """Run one sequential iteration of Algorithm 1 and return what it did and cost.

        ``loss_fn(params, batch)`` returns a scalar loss; ``params`` has the structure given to the
        constructor. ``batches`` is None for a deterministic objective, else one batch per process
        (N of them; Vanilla takes 1). While the history holds fewer than 2 pairs (no previous gradient
        for LineSearch), the iteration is a plain Vanilla step on ``batches[0]``.

        Timing: proxy steps, evaluations and updates run inside one compiled function and cannot be
        timed apart, so ``time_eval`` holds the wall time of the whole iteration (including
        compilation on the first call with a new ``loss_fn``) and ``time_proxy`` = ``time_update`` = 0.
        """
        if not callable(loss_fn):
            raise ValueError(f"loss_fn must be callable, got {loss_fn!r}")
        check.batches(batches, self.parallelism)
        stacked = None if batches is None else _stack_batches(batches)
        self._check_loss(loss_fn, stacked)
        start = time.perf_counter()
        params, state = jax.block_until_ready(
            _compiled_iteration(self.settings, loss_fn, self._params, self.state, stacked))
        elapsed = time.perf_counter() - start
        self._params, self.state = params, state
        info = jax.device_get(state.info)
        if not info.factorized:
            raise np.linalg.LinAlgError("kernel matrix is not positive definite even with jitter 0.01 x its mean "
                                        "diagonal; increase `noise`")
        cold = bool(info.cold)
        evaluated = 1 if cold else self.parallelism
        bad = np.flatnonzero(~info.finite[:evaluated]).tolist()
        if bad:
            warnings.warn(f"loss_fn returned a non-finite loss or gradient at process(es) {bad} of iteration "
                          f"{self.iteration + 1}; pairs with a non-finite point or gradient are kept out of "
                          "the gradient history", RuntimeWarning, stacklevel=2)
        self.iteration += 1
        lengthscale = None if np.isnan(info.lengthscale) else float(info.lengthscale)
        if lengthscale is not None:
            self._lengthscale = lengthscale
        if cold:
            losses = (float(info.losses[0]),)
        elif self.proxy == "large_batch":
            losses = (float(info.loss),)
        else:
            losses = tuple(info.losses.tolist())
        kernel_steps = self.proxy == "kernel" and not cold and self.parallelism > 1
        return StepInfo(
            loss=float(info.loss), grad_norm=float(info.grad_norm), selected=int(info.selected), evaluations=evaluated,
            losses=losses, proxy_cosine=tuple(info.proxy_cosine.tolist()) if kernel_steps else (),
            proxy_rel_error=tuple(info.proxy_rel_error.tolist()) if kernel_steps else (),
            lengthscale=self._lengthscale if self.proxy == "kernel" else None,
            time_proxy=0.0, time_eval=elapsed, time_update=0.0)
