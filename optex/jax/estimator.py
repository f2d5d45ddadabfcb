"""Kernelized gradient estimation (Sec. 4.1, Prop. 4.1) for JAX.

The history of evaluated pairs (theta_i, g_i) is a pytree of fixed shapes (:class:`History`, a ring
buffer of T0 rows with a fill count), so that storing pairs, fitting the lengthscale and evaluating the
posterior mean mu are pure functions that compile inside one ``jax.jit`` of an OptEx iteration.
:class:`GradientEstimator` wraps them in the same object API as ``optex.torch.GradientEstimator``.

Unfilled rows are masked rather than sliced away: the kernel matrix is block diagonal, with K + sigma^2 I
on the filled rows and an identity block on the others whose right-hand sides are zero, so every
solve, leave-one-out error and prediction equals the one on the filled rows alone.

The T0 x T0 algebra runs in float64 when ``jax_enable_x64`` is on (like the torch backend, which
always uses float64 there) and in float32 otherwise. Without float64 to fall back on, gradient rows
whose largest entry lies outside 2^-BAND .. 2^BAND are stored times an exact power of two (their
largest entry then in [0.5, 1)) and the scale is kept beside them, so the inner products of gradients
of size 1e20 or 1e-20 neither overflow nor underflow; rows within the band are stored as they are and
their arithmetic is unchanged (the torch backend's rule).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import cho_solve, solve_triangular

from .. import _validation as check
from ..kernels import from_sqdist

log = logging.getLogger("optex")

# lengthscale="auto" with fewer than 3 pairs uses the median itself, the grid's factor 1.
_MEDIAN_INDEX = check.AUTO_GRID_FACTORS.index(1.0)
# Rows whose largest magnitude lies within 2^-BAND .. 2^BAND are used as they are, others are scaled by an
# exact power of two first (as in the torch backend).
BAND = 40


def row_top(rows: jax.Array) -> jax.Array:
    """Largest magnitude of each row (last axis): NaN when the row holds a NaN, inf when it holds an inf."""
    return jnp.max(jnp.abs(rows), axis=-1)


def row_scale(top: jax.Array) -> jax.Array:
    """Exact powers of two s, one per entry of ``top`` (row maxima from :func:`row_top`), such that a row
    times s cannot overflow or underflow in inner products: 1 within the band, else 2^-e with the largest
    entry times s in [0.5, 1); 1 where ``top`` is 0 or not finite."""
    _, exponent = jnp.frexp(jnp.where(jnp.isfinite(top), top, 0))
    shift = jnp.where(jnp.abs(exponent - 1) > BAND, exponent, 0)
    return jnp.ldexp(jnp.ones_like(top), -shift)


def scaled(rows: jax.Array, scale: jax.Array) -> jax.Array:
    """``rows * scale`` behind an optimization barrier: where the rows are compile-time constants (a linear
    loss) XLA would otherwise rewrite ``(row s) . (row s)`` as ``(row . row) s^2``, which overflows."""
    return jax.lax.optimization_barrier(rows * scale)


def safe_norm(rows: jax.Array, top: jax.Array | None = None) -> jax.Array:
    """Euclidean norm of each row as |rows s| / s with s from :func:`row_scale`: no overflow or underflow for
    a finite row whose norm is representable, the plain norm for rows within the band."""
    scale = row_scale(row_top(rows) if top is None else top)
    return jnp.linalg.norm(scaled(rows, scale[..., None]), axis=-1) / scale


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
    grads: jax.Array  # T0 x d: g_i / gscale_i
    gscale: jax.Array  # T0: g_i = grads_i * gscale_i, an exact power of two (1 for rows within the band)
    anchor: jax.Array  # d
    sq: jax.Array  # T0: |theta_i - anchor|^2
    norms: jax.Array  # T0: |theta_i|, for normalize
    sqdist: jax.Array  # T0 x T0: |theta_i - theta_j|^2
    gram: jax.Array  # T0 x T0: grads_i . grads_j (the stored, scaled rows)
    count: jax.Array  # int32: filled rows (<= T0)
    next: jax.Array  # int32: the slot the next pair goes to


class Fit(NamedTuple):
    """A fitted surrogate: Cholesky factor of K + sigma^2 I, the lengthscale used, flags."""

    chol: jax.Array  # T0 x T0, lower
    lengthscale: jax.Array  # inf for a single pair with a data-driven rule
    ok: jax.Array  # False: K + sigma^2 I was not positive definite even with the largest jitter
    defined: jax.Array  # False: the kernel matrix holds NaN (the lengthscale is too small for the distances)
    single: jax.Array  # one pair, data-driven lengthscale: mu = g_1 everywhere, variance 0


def init_history(history: int, dim: int, dtype) -> History:
    """An empty history of T0 = ``history`` pairs in dimension d = ``dim``."""
    small = small_dtype()
    return History(
        thetas=jnp.zeros((history, dim), dtype), grads=jnp.zeros((history, dim), dtype), gscale=jnp.ones(history, small),
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
    """Store the rows of ``thetas`` / ``grads`` (n x d each) that are finite (:func:`finite_rows`), or,
    when given, those that are ``valid`` (the caller has checked them).

    Costs O(T0 d) for re-anchoring plus O(n T0 d) for the new distances and gradient inner products.
    With no storable row it is an exact no-op (no branch needed: the shift is zero, no slot is
    written). When more than T0 rows are storable only the last T0 are kept.
    """
    t0 = h.thetas.shape[0]
    small = h.sqdist.dtype
    thetas, grads = thetas.astype(h.thetas.dtype), grads.astype(h.grads.dtype)
    ok = finite_rows(thetas, grads) if valid is None else valid
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
    scale = row_scale(row_top(grads))
    grads = scaled(grads, scale[:, None])
    stored = h.grads.at[slots].set(grads, mode="drop")  # in place: only the written rows are touched
    gscale = h.gscale.at[slots].set((1.0 / scale).astype(small), mode="drop")
    sq = _sqnorm(centred, small)
    norms = jnp.where(written, jnp.linalg.norm(thetas, axis=1).astype(small)[source], h.norms)
    # Column j of the new statistics against the incoming row source[j] (T0 x T0): it replaces
    # row and column j of every written slot, the row taking precedence (as in the torch backend).
    sqd = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * (centred @ rows.T).astype(small)[:, source], 0.0)
    sqdist = _replace(h.sqdist, jnp.where(jnp.eye(t0, dtype=bool), 0.0, sqd), written)
    gram = _replace(h.gram, (stored @ grads.T).astype(small)[:, source], written)
    return History(thetas=centred, grads=stored, gscale=gscale, anchor=anchor, sq=sq, norms=norms, sqdist=sqdist, gram=gram,
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
    """Choose the lengthscale and factor K + sigma^2 I from the T0 x T0 statistics only.

    With a single pair and a data-driven lengthscale there is no distance: the fit is the limit
    lengthscale -> infinity without the noise shrinkage (``single``: mu = g_1, lengthscale inf).
    """
    live = _live(h)
    pair = live[:, None] & live[None, :]
    ells = _candidates(h, live, settings)
    kmat = jnp.where(pair, from_sqdist(h.sqdist[None], ells[:, None, None], settings.kernel, jnp), 0.0)
    kmat = kmat + jnp.diag(jnp.where(live, settings.noise, 1.0 + settings.noise).astype(kmat.dtype))
    auto = ells.shape[0] > 1
    # Leave-one-out with fewer than 3 pairs cannot tell lengthscales apart: the median is used.
    few = h.count < 3
    needed = (jnp.arange(ells.shape[0]) == _MEDIAN_INDEX) | ~few if auto else jnp.ones(1, bool)
    defined = jnp.all(jnp.isfinite(kmat) | ~needed[:, None, None])
    factors, ok = _cholesky(kmat, live, needed)
    if auto:
        # The gradient products relative to the largest row scale: the leave-one-out choice is invariant
        # to a common factor, and this one keeps them in range.
        rel = jnp.where(live, h.gscale, 0.0)
        rel = rel / jnp.max(rel)
        gram = jnp.where(pair, h.gram * rel[:, None] * rel[None, :], 0.0)
        best = jnp.where(few, _MEDIAN_INDEX, jnp.argmin(_loo_error(factors, gram)))
    else:
        best = 0
    single = (h.count == 1) & (not isinstance(settings.lengthscale, float))
    return Fit(chol=factors[best], lengthscale=jnp.where(single, jnp.inf, ells[best]), ok=ok | single,
               defined=defined | single, single=single)


def _cross(h: History, fitted: Fit, settings: KernelSettings, thetas: jax.Array) -> jax.Array:
    """k(theta, theta_i) for each query row and stored pair -> m x T0 (0 on unfilled rows)."""
    q = thetas.astype(h.thetas.dtype) - h.anchor
    small = h.sqdist.dtype
    # X q^T, not q X^T: XLA:CPU would transpose the whole T0 x d buffer for the latter.
    inner = (h.thetas @ q.T).T.astype(small)
    sqd = jnp.maximum(_sqnorm(q, small)[:, None] + h.sq[None, :] - 2.0 * inner, 0.0)
    return jnp.where(_live(h)[None, :], from_sqdist(sqd, fitted.lengthscale, settings.kernel, jnp), 0.0)


def _weights(h: History, fitted: Fit, settings: KernelSettings, thetas: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(k(theta, X) (m x T0), (K + sigma^2 I)^{-1} k(theta, X) (T0 x m)); a single fit weighs its pair by 1."""
    cross = _cross(h, fitted, settings, thetas)
    weights = cho_solve((fitted.chol, True), cross.T)  # T0 x m: solved in history space
    return cross, jnp.where(fitted.single, _live(h)[:, None].astype(weights.dtype), weights)


def posterior_mean(h: History, fitted: Fit, settings: KernelSettings, thetas: jax.Array) -> jax.Array:
    """mu(theta) = G^T (K + sigma^2 I)^{-1} k(theta, X) for each row of ``thetas`` (m x d)."""
    weights = _weights(h, fitted, settings, thetas)[1]
    return (weights.T * h.gscale).astype(h.grads.dtype) @ h.grads


def posterior_variance(h: History, fitted: Fit, settings: KernelSettings, thetas: jax.Array) -> jax.Array:
    """k(theta, theta) - k^T (K + sigma^2 I)^{-1} k for each row of ``thetas``, shared by all d outputs."""
    cross, weights = _weights(h, fitted, settings, thetas)
    return jnp.where(fitted.single, 0.0, jnp.maximum(1.0 - jnp.sum(cross.T * weights, axis=0), 0.0))


_add_jit = jax.jit(add_pairs, donate_argnums=0)
_fit_jit = jax.jit(fit, static_argnums=1)
_mean_jit = jax.jit(posterior_mean, static_argnums=2)
_variance_jit = jax.jit(posterior_variance, static_argnums=2)


def kernel_settings(kernel: str, lengthscale: float | str, noise: float, normalize: bool = False) -> KernelSettings:
    """Validated :class:`KernelSettings` (ValueError naming the bad parameter)."""
    if not isinstance(normalize, bool):
        raise ValueError(f"normalize must be True or False, got {normalize!r}")
    if not isinstance(kernel, str):
        raise ValueError(f"kernel must be one of {', '.join(map(repr, check.KERNELS))} (the JAX backend has "
                         f"no kernel objects); got {kernel!r}")
    return KernelSettings(check.choice("kernel", kernel, check.KERNELS), check.lengthscale(lengthscale),
                          check.nonnegative_float("noise", noise), normalize)


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
        statistics only. Refitted whenever the history changes. With a single pair there is no
        distance: a data-driven lengthscale then takes the limit lengthscale -> infinity without the
        noise shrinkage, i.e. mu(theta) = g_1 (the stored gradient) everywhere, variance 0, and
        ``lengthscale_`` is ``inf``.
    noise:
        sigma^2, the variance added to the kernel matrix's diagonal (relative to the unit kernel
        amplitude). It models gradient noise and regularises the solve.
    history:
        T0, the number of most recent evaluated pairs kept (a ring buffer).
    normalize:
        ``True`` or ``False``. Divide inputs by the mean norm of the history points first (the official
        code's habit). It rescales a float lengthscale; ``"median"`` and ``"auto"`` are scale-invariant
        already.

    Notes
    -----
    Scale. Gradient rows are stored times exact powers of two when their largest entry lies outside
    2^-40 .. 2^40 (see the module docstring), so gradients of size 1e20 or 1e-20 in float32 give the same
    estimate as unit ones times their scale. The inputs are not rescaled: their squared distances must be
    representable in the dtype of the T0 x T0 statistics.

    Checkpoints. :meth:`state_dict` returns the history as numpy arrays and ints; :meth:`load_state_dict`
    restores it.
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
        if thetas.ndim == 0:
            raise ValueError("thetas must be one d-vector or an n x d matrix of pairs, got a 0-d array")
        if thetas.ndim == 1:
            thetas, grads = thetas[None], grads[None]
        if thetas.ndim != 2 or thetas.shape != grads.shape:
            raise ValueError(f"thetas and grads must both be n x d, got {thetas.shape} and {grads.shape}")
        if not jnp.issubdtype(thetas.dtype, jnp.floating):
            raise ValueError(f"thetas must be floating point, got {thetas.dtype}")
        if thetas.shape[0] == 0:
            raise ValueError("thetas has no rows: add() needs at least one pair")
        if thetas.shape[1] == 0:
            raise ValueError("thetas has no columns: points need d >= 1 coordinates")
        if len(self) and thetas.shape[1] != self.dim:
            raise ValueError(f"thetas must have d = {self.dim} columns like the history, got {thetas.shape[1]}")
        return thetas, grads

    def add(self, thetas, grads) -> int:
        """Add evaluated pairs (theta_i, grad f(theta_i)), n x d each (or one pair as two d-vectors);
        returns how many were stored.

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
            fitted = _fit_jit(self.state, self.settings)
            if not bool(fitted.defined):
                raise ValueError(
                    f"lengthscale ({float(fitted.lengthscale):.3g}) is so small against the distances between "
                    "history points that the kernel evaluates to NaN (r = distance / lengthscale overflows); use "
                    "a larger lengthscale")
            if not bool(fitted.ok):
                raise np.linalg.LinAlgError(
                    "kernel matrix is not positive definite even with jitter "
                    f"{check.JITTER_LEVELS[-1]:g} x its mean diagonal; increase `noise`")
            self._fitted, self.lengthscale_ = fitted, float(fitted.lengthscale)
        return self._fitted

    def _queries(self, thetas) -> tuple[jax.Array, bool]:
        if not len(self):
            raise ValueError("GradientEstimator has no history yet: call add() before mean() or variance()")
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

    def state_dict(self) -> dict[str, Any]:
        """The history as numpy arrays and ints (``np.savez`` stores it, ``np.load`` reads it without pickle)."""
        state: dict[str, Any] = {"history": self.history, "count": len(self)}
        if self.state is not None:
            state.update({name: np.asarray(value) for name, value in self.state._asdict().items()})
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (into an estimator with the same ``history``)."""
        if int(state.get("history", -1)) != self.history:
            raise ValueError(f"state holds a history of {state.get('history')} pairs, this estimator keeps "
                             f"{self.history}")
        self.reset()
        if int(state["count"]):
            self.state = History(**{name: jnp.asarray(state[name]) for name in History._fields})


__all__ = ["GradientEstimator", "History", "Fit", "KernelSettings", "init_history", "add_pairs", "fit",
           "posterior_mean", "posterior_variance", "finite_rows", "kernel_settings", "small_dtype", "row_top", "row_scale",
           "scaled", "safe_norm"]
