"""Kernelized gradient estimation (Sec. 4.1, Prop. 4.1) for JAX.

The history of evaluated pairs (theta_i, g_i) is a pytree of fixed shapes (:class:`History`, a ring
buffer of T0 rows with a fill count), so that storing pairs, fitting the lengthscale and evaluating the
posterior mean mu are pure functions that compile inside one ``jax.jit`` of an OptEx iteration.
:class:`GradientEstimator` wraps them in the same object API as ``optex.torch.GradientEstimator``.

Unfilled rows are masked rather than sliced away: the kernel matrix is block diagonal, with K + sigma^2 I
on the filled rows and an identity block on the others whose right-hand sides are zero, so every
solve, leave-one-out error and prediction equals the one on the filled rows alone.

The T0 x T0 algebra runs in float64 when ``jax_enable_x64`` is on (like the torch backend, which
always uses float64 there) and in float32 otherwise.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import cho_solve, solve_triangular

from .. import _validation as check
from ..kernels import from_sqdist

log = logging.getLogger("optex")

# lengthscale="auto" with fewer than 3 pairs uses the median itself, the grid's factor 1.
_MEDIAN_INDEX = check.AUTO_GRID_FACTORS.index(1.0)


def small_dtype() -> jnp.dtype:
    """dtype of the T0 x T0 statistics: float64 when ``jax_enable_x64`` is on, else float32."""
    return jnp.dtype(jnp.float64 if jax.config.read("jax_enable_x64") else jnp.float32)


@dataclass(frozen=True)
class KernelSettings:
    """The surrogate's hyper-parameters (hashable, so they can be static arguments of ``jax.jit``)."""

    kernel: str = "matern52"
    lengthscale: float | str = "auto"
    noise: float = 1e-3  # sigma^2
    normalize: bool = False


class History(NamedTuple):
    """The T0 most recent evaluated pairs (theta_i, g_i) as a ring buffer.

    Slots fill in order and are never emptied, so the filled rows are always ``0 .. count-1``.
    Inputs are stored relative to ``anchor``, the newest stored theta: ``|x - y|^2 = |x|^2 + |y|^2 -
    2 x.y`` from raw vectors would cancel catastrophically in float32 when ``|x| >> |x - y|`` (e.g.
    d = 1e5, theta in [-1, 1]^d, steps of 0.01); relative to a recent point the terms are of the size
    of the distances themselves.
    """

    thetas: jax.Array  # T0 x d: theta_i - anchor
    grads: jax.Array  # T0 x d: g_i
    anchor: jax.Array  # d
    sq: jax.Array  # T0: |theta_i - anchor|^2
    norms: jax.Array  # T0: |theta_i|, for normalize
    sqdist: jax.Array  # T0 x T0: |theta_i - theta_j|^2
    gram: jax.Array  # T0 x T0: g_i . g_j
    count: jax.Array  # int32: filled rows (<= T0)
    next: jax.Array  # int32: the slot the next pair goes to


class Fit(NamedTuple):
    """A fitted surrogate: Cholesky factor of K + sigma^2 I, the lengthscale used, success flag."""

    chol: jax.Array  # T0 x T0, lower
    lengthscale: jax.Array
    ok: jax.Array  # False: K + sigma^2 I was not positive definite even with the largest jitter


def init_history(history: int, dim: int, dtype) -> History:
    """An empty history of T0 = ``history`` pairs in dimension d = ``dim``."""
    small = small_dtype()
    return History(
        thetas=jnp.zeros((history, dim), dtype), grads=jnp.zeros((history, dim), dtype),
        anchor=jnp.zeros(dim, dtype), sq=jnp.zeros(history, small), norms=jnp.zeros(history, small),
        sqdist=jnp.zeros((history, history), small), gram=jnp.zeros((history, history), small),
        count=jnp.zeros((), jnp.int32), next=jnp.zeros((), jnp.int32))


def _sqnorm(rows: jax.Array, small) -> jax.Array:
    return jnp.sum(rows * rows, axis=-1).astype(small)


def finite_rows(thetas: jax.Array, grads: jax.Array) -> jax.Array:
    """Rows whose theta and gradient are both finite: the only pairs a history accepts.

    As in the torch backend, a row is tested through its sum (one pass; a finite row whose sum
    overflows is rejected too, conservatively).
    """
    return jnp.isfinite(jnp.sum(thetas, axis=1)) & jnp.isfinite(jnp.sum(grads, axis=1))


def add_pairs(h: History, thetas: jax.Array, grads: jax.Array, valid: jax.Array | None = None) -> History:
    """Store the rows of ``thetas`` / ``grads`` (n x d each) that are finite and ``valid``.

    Costs O(T0 d) for re-anchoring plus O(n T0 d) for the new distances and gradient inner products.
    With no storable row it is an exact no-op (no branch needed: the shift is zero, no slot is
    written). When more than T0 rows are storable only the last T0 are kept.
    """
    t0 = h.thetas.shape[0]
    small = h.sqdist.dtype
    thetas, grads = thetas.astype(h.thetas.dtype), grads.astype(h.grads.dtype)
    ok = finite_rows(thetas, grads)
    if valid is not None:
        ok = ok & valid
    rank = jnp.cumsum(ok, dtype=jnp.int32) - 1
    n_ok = jnp.sum(ok, dtype=jnp.int32)
    kept = jnp.minimum(n_ok, t0)
    skipped = n_ok - kept
    # Slot t0 is out of range: such rows are written nowhere.
    slots = jnp.where(ok & (rank >= skipped), (h.next + rank - skipped) % t0, t0)
    newest = jnp.max(jnp.where(ok, jnp.arange(thetas.shape[0]), 0))
    anchor = jnp.where(n_ok > 0, thetas[newest], h.anchor)
    rows = thetas - anchor
    # Row t of the buffer either receives incoming row source[t] or is re-anchored at the newest
    # point: one elementwise pass that XLA runs in place (a scatter into the shifted buffer would
    # copy all T0 x d of it). Rows beyond `count` are shifted too but never read before written.
    match = slots[None, :] == jnp.arange(t0)[:, None]
    written, source = jnp.any(match, axis=1), jnp.argmax(match, axis=1)
    centred = jnp.where(written[:, None], rows[source], h.thetas - (anchor - h.anchor))
    stored = h.grads.at[slots].set(grads, mode="drop")  # in place: only the written rows are touched
    sq = _sqnorm(centred, small)
    norms = jnp.where(written, jnp.linalg.norm(thetas, axis=1).astype(small)[source], h.norms)
    # Column j of the new statistics against the incoming row source[j] (T0 x T0): it replaces
    # row and column j of every written slot, the row taking precedence (as in the torch backend).
    sqd = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * (centred @ rows.T).astype(small)[:, source], 0.0)
    sqdist = _replace(h.sqdist, jnp.where(jnp.eye(t0, dtype=bool), 0.0, sqd), written)
    gram = _replace(h.gram, (stored @ grads.T).astype(small)[:, source], written)
    return History(thetas=centred, grads=stored, anchor=anchor, sq=sq, norms=norms, sqdist=sqdist, gram=gram,
                   count=jnp.minimum(h.count + kept, t0), next=(h.next + kept) % t0)


def _replace(old: jax.Array, new: jax.Array, written: jax.Array) -> jax.Array:
    """``old`` with row and column j taken from ``new`` for every written slot j (rows first)."""
    return jnp.where(written[:, None], new.T, jnp.where(written[None, :], new, old))


def _live(h: History) -> jax.Array:
    return jnp.arange(h.sqdist.shape[0]) < h.count


def _scale(h: History, live: jax.Array) -> jax.Array:
    """Mean norm of the stored inputs (1 when it is 0), the divisor of ``normalize``."""
    mean = jnp.sum(jnp.where(live, h.norms, 0.0)) / jnp.maximum(h.count, 1)
    return jnp.where(mean > 0, mean, 1.0)


def _median_distance(h: History, live: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(any positive pairwise distance?, their median).

    The median of an even count is the midpoint of the two middle values, computed as
    ``torch.quantile(0.5)`` does (its lerp included), so both backends pick the same lengthscales.
    """
    upper = np.triu_indices(h.sqdist.shape[0], 1)
    dist = jnp.sqrt(h.sqdist[upper])
    valid = live[upper[0]] & live[upper[1]] & (dist > 0)
    ordered = jnp.sort(jnp.where(valid, dist, jnp.inf))
    count = jnp.sum(valid, dtype=jnp.int32)
    rank = 0.5 * jnp.maximum(count - 1, 0).astype(dist.dtype)
    below = rank.astype(jnp.int32)
    low, high = ordered[below], ordered[jnp.ceil(rank).astype(jnp.int32)]
    weight = rank - below
    median = jnp.where(weight < 0.5, low + weight * (high - low), high - (high - low) * (1.0 - weight))
    return count > 0, median


def _candidates(h: History, live: jax.Array, settings: KernelSettings) -> jax.Array:
    """The lengthscales to try: one for a float or ``"median"``, the 13-point grid for ``"auto"``."""
    small = h.sqdist.dtype
    scale = _scale(h, live) if settings.normalize else jnp.ones((), small)
    if isinstance(settings.lengthscale, float):
        return (settings.lengthscale * scale)[None]
    found, median = _median_distance(h, live)
    median = jnp.where(found, median / scale, 1.0)
    if settings.lengthscale == "median":
        return (median * scale)[None]
    return median * jnp.asarray(check.AUTO_GRID_FACTORS, small) * scale


def _cholesky(matrices: jax.Array, live: jax.Array, needed: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Cholesky factors of a batch of SPD matrices, adding escalating jitter while any ``needed`` fails."""
    eye = jnp.eye(matrices.shape[-1], dtype=matrices.dtype)
    diagonal = jnp.diagonal(matrices, axis1=-2, axis2=-1)
    scale = jnp.sum(jnp.where(live, diagonal, 0.0), -1) / jnp.maximum(jnp.sum(live), 1)
    scale = jnp.maximum(scale, 1e-30)[:, None, None]
    # Level 0 adds exactly nothing; one factorization site in the loop keeps compilation short.
    levels = jnp.asarray((0.0,) + check.JITTER_LEVELS, matrices.dtype)

    def failed(factors):
        return jnp.any(jnp.any(jnp.isnan(factors), axis=(-2, -1)) & needed)

    def attempt(carry):
        level, _ = carry
        return level + 1, jnp.linalg.cholesky(matrices + levels[level] * scale * eye)

    def again(carry):
        level, factors = carry
        return (level == 0) | (failed(factors) & (level < levels.shape[0]))

    _, factors = jax.lax.while_loop(again, attempt, (jnp.zeros((), jnp.int32), jnp.zeros_like(matrices)))
    return factors, ~failed(factors)


def _loo_error(factors: jax.Array, gram: jax.Array) -> jax.Array:
    """Closed-form leave-one-out squared error of all d gradient outputs, per factor.

    With A = (K + noise I)^{-1}, the LOO residual of output j at point i is (A g_j)_i / A_ii, so the
    total is sum_i (A S A)_ii / A_ii^2 with S = G G^T: T0 x T0 work only (never d right-hand sides).
    Masked rows contribute 0 (their rows of S are 0).
    """
    eye = jnp.eye(factors.shape[-1], dtype=factors.dtype)
    half = jax.vmap(lambda f: solve_triangular(f, eye, lower=True))(factors)  # L^{-1}
    inv = jnp.swapaxes(half, -1, -2) @ half
    asa = inv @ gram @ inv
    return jnp.sum(jnp.diagonal(asa, axis1=-2, axis2=-1) / jnp.diagonal(inv, axis1=-2, axis2=-1) ** 2, -1)


def fit(h: History, settings: KernelSettings) -> Fit:
    """Choose the lengthscale and factor K + sigma^2 I from the T0 x T0 statistics only."""
    live = _live(h)
    pair = live[:, None] & live[None, :]
    ells = _candidates(h, live, settings)
    kmat = jnp.where(pair, from_sqdist(h.sqdist[None], ells[:, None, None], settings.kernel, jnp), 0.0)
    kmat = kmat + jnp.diag(jnp.where(live, settings.noise, 1.0 + settings.noise).astype(kmat.dtype))
    auto = ells.shape[0] > 1
    # Leave-one-out with fewer than 3 pairs cannot tell lengthscales apart: the median is used.
    few = h.count < 3
    needed = (jnp.arange(ells.shape[0]) == _MEDIAN_INDEX) | ~few if auto else jnp.ones(1, bool)
    factors, ok = _cholesky(kmat, live, needed)
    if auto:
        best = jnp.where(few, _MEDIAN_INDEX, jnp.argmin(_loo_error(factors, jnp.where(pair, h.gram, 0.0))))
    else:
        best = 0
    return Fit(chol=factors[best], lengthscale=ells[best], ok=ok)


def _cross(h: History, fitted: Fit, settings: KernelSettings, thetas: jax.Array) -> jax.Array:
    """k(theta, theta_i) for each query row and stored pair -> m x T0 (0 on unfilled rows)."""
    q = thetas.astype(h.thetas.dtype) - h.anchor
    small = h.sqdist.dtype
    # X q^T, not q X^T: XLA:CPU would transpose the whole T0 x d buffer for the latter.
    inner = (h.thetas @ q.T).T.astype(small)
    sqd = jnp.maximum(_sqnorm(q, small)[:, None] + h.sq[None, :] - 2.0 * inner, 0.0)
    return jnp.where(_live(h)[None, :], from_sqdist(sqd, fitted.lengthscale, settings.kernel, jnp), 0.0)


def posterior_mean(h: History, fitted: Fit, settings: KernelSettings, thetas: jax.Array) -> jax.Array:
    """mu(theta) = G^T (K + sigma^2 I)^{-1} k(theta, X) for each row of ``thetas`` (m x d)."""
    weights = cho_solve((fitted.chol, True), _cross(h, fitted, settings, thetas).T)  # T0 x m: history space
    return weights.T.astype(h.grads.dtype) @ h.grads


def posterior_variance(h: History, fitted: Fit, settings: KernelSettings, thetas: jax.Array) -> jax.Array:
    """k(theta, theta) - k^T (K + sigma^2 I)^{-1} k for each row of ``thetas``, shared by all d outputs."""
    cross = _cross(h, fitted, settings, thetas)
    weights = cho_solve((fitted.chol, True), cross.T)
    return jnp.maximum(1.0 - jnp.sum(cross.T * weights, axis=0), 0.0)


_add_jit = jax.jit(add_pairs, donate_argnums=0)
_fit_jit = jax.jit(fit, static_argnums=1)
_mean_jit = jax.jit(posterior_mean, static_argnums=2)
_variance_jit = jax.jit(posterior_variance, static_argnums=2)


def kernel_settings(kernel: str, lengthscale: float | str, noise: float, normalize: bool = False) -> KernelSettings:
    """Validated :class:`KernelSettings` (ValueError naming the bad parameter)."""
    if not isinstance(kernel, str):
        raise ValueError(f"kernel must be one of {', '.join(map(repr, check.KERNELS))} (the JAX backend has "
                         f"no kernel objects); got {kernel!r}")
    return KernelSettings(check.choice("kernel", kernel, check.KERNELS), check.lengthscale(lengthscale),
                          check.nonnegative_float("noise", noise), bool(normalize))


class GradientEstimator:
    """Gaussian-process surrogate of the gradient field, mu(theta) ~ grad F(theta).

    The separable kernel K(theta, theta') = k(theta, theta') I_d of Assumption 2 makes the d output
    dimensions independent GPs that share one scalar kernel k (Prop. 4.1), so the posterior mean is
    ``mu(theta) = G^T (K + noise I)^{-1} k(theta, X)`` with a T0 x T0 kernel matrix K, whatever d is.
    Same parameters and semantics as ``optex.torch.GradientEstimator``; the state is the pytree
    :attr:`state` (a :class:`History`) and every method runs compiled pure functions on it.

    Parameters
    ----------
    kernel:
        ``"matern52"`` (default), ``"matern32"``, ``"matern12"`` or ``"rbf"``: unit-amplitude stationary
        kernels evaluated from squared distances that are kept up to date incrementally (adding n pairs
        costs O(n T0 d); one estimate costs O(T0 d + T0^2)).
    lengthscale:
        A positive float; ``"median"``: the median pairwise distance of the history; ``"auto"``
        (default): the candidate on a 13-point log-grid from 1/8 to 8 times the median distance with
        the smallest closed-form leave-one-out error of the gradients, computed from T0 x T0
        statistics only. Refitted whenever the history changes.
    noise:
        sigma^2, the variance added to the kernel matrix's diagonal (relative to the unit kernel
        amplitude). It models gradient noise and regularises the solve.
    history:
        T0, the number of most recent evaluated pairs kept (a ring buffer).
    normalize:
        Divide inputs by the mean norm of the history points first (the official code's habit). It
        rescales a float lengthscale; ``"median"`` and ``"auto"`` are scale-invariant already.
    """

    def __init__(self, kernel: str = "matern52", lengthscale: float | str = "auto", noise: float = 1e-3,
                 history: int = 50, normalize: bool = False) -> None:
        self.history = check.positive_int("history", history)
        self.settings = kernel_settings(kernel, lengthscale, noise, normalize)
        self.kernel, self.lengthscale = self.settings.kernel, self.settings.lengthscale
        self.noise, self.normalize = self.settings.noise, self.settings.normalize
        self.state: History | None = None
        self.lengthscale_: float | None = None
        self._fitted: Fit | None = None

    @classmethod
    def view(cls, state: History, settings: KernelSettings, lengthscale: float | None = None) -> GradientEstimator:
        """An estimator reading an existing history (e.g. that of an ``OptEx`` state)."""
        estimator = cls(settings.kernel, settings.lengthscale, settings.noise, state.thetas.shape[0],
                        settings.normalize)
        estimator.state, estimator.lengthscale_ = state, lengthscale
        return estimator

    def __len__(self) -> int:
        return 0 if self.state is None else int(self.state.count)

    @property
    def dim(self) -> int | None:
        """d, fixed by the first call to :meth:`add`."""
        return None if self.state is None else self.state.thetas.shape[1]

    def reset(self) -> None:
        """Forget the whole history."""
        self.state = None
        self._fitted = None

    def _check_pairs(self, thetas, grads) -> tuple[jax.Array, jax.Array]:
        thetas, grads = jnp.asarray(thetas), jnp.asarray(grads)
        if thetas.ndim == 1:
            thetas, grads = thetas[None], grads[None]
        if thetas.ndim != 2 or thetas.shape != grads.shape:
            raise ValueError(f"thetas and grads must both be n x d, got {thetas.shape} and {grads.shape}")
        if not jnp.issubdtype(thetas.dtype, jnp.floating):
            raise ValueError(f"thetas must be floating point, got {thetas.dtype}")
        if len(self) and thetas.shape[1] != self.dim:
            raise ValueError(f"thetas must have d = {self.dim} columns like the history, got {thetas.shape[1]}")
        return thetas, grads

    def add(self, thetas, grads) -> int:
        """Add evaluated pairs (theta_i, grad f(theta_i)), n x d each; returns how many were stored.

        Pairs with a non-finite entry are rejected (and logged): they never enter the history.
        """
        thetas, grads = self._check_pairs(thetas, grads)
        finite = np.asarray(finite_rows(thetas, grads))
        if not finite.all():
            bad = np.flatnonzero(~finite).tolist()
            log.warning("GradientEstimator.add: rejected %d pair(s) with non-finite values (rows %s)", len(bad), bad)
        if not finite.any():
            return 0
        if not len(self) or self.state.thetas.dtype != thetas.dtype:
            self.state = init_history(self.history, thetas.shape[1], thetas.dtype)
        self.state = _add_jit(self.state, thetas, grads)
        self._fitted = None
        return min(int(finite.sum()), self.history)

    def _fit(self) -> Fit:
        if self._fitted is None:
            if not len(self):
                raise RuntimeError("GradientEstimator has no history yet: call add() first")
            fitted = _fit_jit(self.state, self.settings)
            if not bool(fitted.ok):
                raise np.linalg.LinAlgError(
                    "kernel matrix is not positive definite even with jitter "
                    f"{check.JITTER_LEVELS[-1]:g} x its mean diagonal; increase `noise`")
            self._fitted, self.lengthscale_ = fitted, float(fitted.lengthscale)
        return self._fitted

    def _queries(self, thetas) -> tuple[jax.Array, bool]:
        thetas = jnp.asarray(thetas)
        single = thetas.ndim == 1
        thetas = thetas[None] if single else thetas
        if thetas.ndim != 2 or thetas.shape[1] != self.dim:
            raise ValueError(f"thetas must be m x d with d = {self.dim}, got {thetas.shape}")
        return thetas, single

    def mean(self, thetas) -> jax.Array:
        """Posterior mean mu(theta) of the gradient, m x d (or d for a single d-vector)."""
        thetas, single = self._queries(thetas)
        fitted = self._fit()
        out = _mean_jit(self.state, fitted, self.settings, thetas)
        return out[0] if single else out

    def variance(self, thetas) -> jax.Array:
        """Posterior variance k(theta, theta) - k^T (K + noise I)^{-1} k, shared by all d outputs."""
        thetas, single = self._queries(thetas)
        fitted = self._fit()
        out = _variance_jit(self.state, fitted, self.settings, thetas)
        return out[0] if single else out


__all__ = ["GradientEstimator", "History", "Fit", "KernelSettings", "init_history", "add_pairs", "fit",
           "posterior_mean", "posterior_variance", "finite_rows", "kernel_settings", "small_dtype"]
