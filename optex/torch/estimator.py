"""Kernelized gradient estimation (Sec. 4.1, Prop. 4.1) for PyTorch."""
from __future__ import annotations

import logging
import math
from typing import Any

import torch

from .. import _validation as check
from ..kernels import from_sqdist

log = logging.getLogger("optex")

# Rows whose largest magnitude lies within 2^-BAND .. 2^BAND are used as they are; others are scaled by an
# exact power of two before their inner products. Products of in-band rows stay far from float32's
# overflow (2^128) and underflow (2^-126) even summed over d = 1e9 entries, and leaving them unscaled
# keeps every result in that range bit for bit what the unscaled arithmetic gives.
BAND = 40


def _small_dtype(device: torch.device) -> torch.dtype:
    # The T0 x T0 algebra is tiny, so it runs in float64 for robustness; MPS has no float64.
    return torch.float32 if device.type == "mps" else torch.float64


def _exponent(top: torch.Tensor) -> torch.Tensor:
    """e with 2^e <= top < 2^(e+1) (as a float tensor), 0 where top is 0 or not finite."""
    return torch.nan_to_num(torch.floor(torch.log2(top)), nan=0.0, posinf=0.0, neginf=0.0)


def row_top(rows: torch.Tensor) -> torch.Tensor:
    """Largest magnitude of each row (last dimension kept, size 1): NaN when the row holds a NaN, inf when
    it holds an inf, so ``isfinite(row_top(x))`` tells finite rows. Two plain reductions: on CPU torch's
    ``vector_norm(ord=inf)`` and ``isfinite().all()`` are an order of magnitude slower."""
    return torch.maximum(rows.amax(-1, keepdim=True), rows.amin(-1, keepdim=True).neg())


def row_scale(rows: torch.Tensor, top: torch.Tensor | None = None) -> torch.Tensor:
    """Per-row exact powers of two s (n x 1, dtype of ``rows``) such that ``rows * s`` cannot overflow
    or underflow in inner products: 1 for rows within the band, else 2^-(e+1) (largest entry in [0.5, 1)).
    ``top`` is ``row_top(rows)`` when the caller has it."""
    e = _exponent(row_top(rows) if top is None else top)
    return torch.exp2(-torch.where(e.abs() > BAND, e + 1.0, 0.0))


def out_of_band(top: torch.Tensor) -> torch.Tensor:
    """Whether any row with largest magnitude ``top`` (from :func:`row_top`) lies outside the band (0-d bool)."""
    return (_exponent(top).abs() > BAND).any()


def safe_norm(rows: torch.Tensor, top: torch.Tensor | None = None) -> torch.Tensor:
    """Euclidean norm of each row (last dimension) as m * |rows / m| with m an exact power of two:
    no overflow or underflow for any finite row whose norm is representable, and exactly
    ``torch.linalg.vector_norm`` for rows within the band."""
    scale = row_scale(rows, top)
    return torch.linalg.vector_norm(rows * scale, dim=-1) / scale.squeeze(-1)


def _cholesky(matrix: torch.Tensor) -> torch.Tensor:
    """Cholesky factors of a batch of SPD matrices that have none as they are: escalating jitter (a
    multiple of each matrix's mean diagonal, the same for all of them) until every one factors."""
    eye = torch.eye(matrix.shape[-1], dtype=matrix.dtype, device=matrix.device)
    scale = matrix.diagonal(dim1=-2, dim2=-1).mean(-1, keepdim=True).unsqueeze(-1).clamp_min(1e-30)
    for jitter in check.JITTER_LEVELS:
        factor, info = torch.linalg.cholesky_ex(matrix + jitter * scale * eye)
        if not bool((info > 0).any()):
            log.debug("kernel matrix needed jitter %.1e x mean diagonal for its Cholesky factor", jitter)
            return factor
    raise torch.linalg.LinAlgError(
        "kernel matrix is not positive definite even with jitter "
        f"{check.JITTER_LEVELS[-1]:g} x its mean diagonal; increase `noise`")


def _check_tensor(name: str, value: Any) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a torch tensor, got {type(value).__name__}")
    if value.device.type == "meta":
        raise ValueError(f"{name} is on the meta device and holds no values")
    if not value.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {value.dtype}")
    return value


class GradientEstimator:
    """Gaussian-process surrogate of the gradient field, mu(theta) ~ grad F(theta).

    The separable kernel K(theta, theta') = k(theta, theta') I_d of Assumption 2 makes the d output
    dimensions independent GPs that share one scalar kernel k (Prop. 4.1), so the posterior mean is
    ``mu(theta) = G^T (K + noise I)^{-1} k(theta, X)`` with a T0 x T0 kernel matrix K, whatever d is.

    Parameters
    ----------
    kernel:
        ``"matern52"`` (default), ``"matern32"``, ``"matern12"`` or ``"rbf"``: unit-amplitude stationary
        kernels evaluated from squared distances that are kept up to date incrementally (adding n pairs
        costs O(n T0 d); one estimate costs O(T0 d + T0^2)). Any ``gpytorch.kernels.Kernel`` instance is
        accepted as well: it is evaluated by gpytorch on the raw inputs at every fit and estimate,
        which costs O(T0^2 d) per fit and is much slower at large d. Squared distances come from
        norms and inner products, so at a query that coincides with a history point r carries an
        error of about ``sqrt(eps) * norm(x - anchor) / lengthscale``: harmless for the smooth kernels, but
        ``"matern12"`` (not differentiable at 0) is then only ~1e-8 accurate in float64.
    lengthscale:
        A positive float; ``"median"``: the median pairwise distance of the history; ``"auto"``
        (default): the candidate on a 13-point log-grid from 1/8 to 8 times the median distance with
        the smallest closed-form leave-one-out error of the gradients, computed from T0 x T0
        statistics only (O(T0^3) per candidate; with fewer than 3 pairs, the median). Refitted
        whenever the history changes. With a single pair there is no distance: a data-driven
        lengthscale then takes the limit lengthscale -> infinity without the noise shrinkage, i.e.
        mu(theta) = g_1 (the stored gradient) everywhere, variance 0, and ``lengthscale_`` is ``inf``.
        For a gpytorch kernel without a ``lengthscale`` use ``None`` (its own hyper-parameters are
        kept); a gpytorch kernel with one pair uses the ordinary GP mean.
    noise:
        sigma^2, the variance added to the kernel matrix's diagonal (relative to the unit kernel
        amplitude). It models gradient noise and regularises the solve.
    history:
        T0, the number of most recent evaluated pairs kept (a ring buffer).
    normalize:
        ``True`` or ``False``. Divide inputs by the mean norm of the history points first (the
        official code's habit). It rescales a float lengthscale; ``"median"`` and ``"auto"`` are
        scale-invariant already.

    Notes
    -----
    Scale. The T0 x T0 statistics (gradient inner products, squared distances) are formed in the
    dtype of the inputs, then kept in float64 (float32 on MPS). Gradient rows whose largest entry is
    outside 2^-40 .. 2^40, and the centred inputs when they drift outside that range, are scaled by
    exact powers of two before the products and unscaled in float64, so gradients of size 1e20 or
    1e-20 in float32 give the same estimate as unit ones times their scale; within the range nothing
    is scaled and the arithmetic is unchanged.
    """

    def __init__(self, kernel: Any = "matern52", lengthscale: float | str | None = "auto",
                 noise: float = 1e-3, history: int = 50, normalize: bool = False) -> None:
        self.history = check.positive_int("history", history)
        self.noise = check.nonnegative_float("noise", noise)
        if not isinstance(normalize, bool):
            raise ValueError(f"normalize must be True or False, got {normalize!r}")
        self.normalize = normalize
        if isinstance(kernel, str):
            self.kernel = check.choice("kernel", kernel, check.KERNELS)
            self._generic = False
            self.lengthscale = check.lengthscale(lengthscale)
        else:
            import gpytorch  # only needed for the generic path

            if not isinstance(kernel, gpytorch.kernels.Kernel):
                raise ValueError(
                    f"kernel must be one of {', '.join(map(repr, check.KERNELS))} or a gpytorch Kernel "
                    f"instance; got {kernel!r}")
            self.kernel = kernel
            self._generic = True
            if lengthscale is None:
                self.lengthscale = None
            else:
                if not kernel.has_lengthscale:
                    raise ValueError(f"lengthscale must be None for {type(kernel).__name__}, which has none")
                self.lengthscale = check.lengthscale(lengthscale)
        self._count = 0
        self._next = 0
        self._dim: int | None = None
        self._lengthscale: torch.Tensor | float | None = None
        self._single = False
        self._dirty = True

    def __len__(self) -> int:
        return self._count

    @property
    def dim(self) -> int | None:
        """d, fixed by the first call to :meth:`add`."""
        return self._dim

    @property
    def lengthscale_(self) -> float | None:
        """The lengthscale of the last fit (``inf`` for a single pair with a data-driven rule)."""
        value = self._lengthscale
        return value if value is None or isinstance(value, float) else float(value)

    def reset(self) -> None:
        """Forget the whole history."""
        self._count = 0
        self._next = 0
        self._dirty = True

    # ------------------------------------------------------------------ history
    def _allocate(self, like: torch.Tensor) -> None:
        t0, d = self.history, like.shape[1]
        small = _small_dtype(like.device)
        opts = dict(dtype=like.dtype, device=like.device)
        self._dim = d
        self._X = torch.zeros(t0, d, **opts)  # inputs, centred at the anchor (see add), times 2^-k
        self._G = torch.zeros(t0, d, **opts)  # gradient rows times their own power of two
        self._gscale = torch.ones(t0, dtype=small, device=like.device)  # g_i = _G[i] * _gscale[i]
        self._anchor = torch.zeros(d, **opts)
        self._sq = torch.zeros(t0, dtype=small, device=like.device)  # |x_i - anchor|^2
        self._norm = torch.zeros(t0, dtype=small, device=like.device)  # |x_i|, for normalize
        self._D = torch.zeros(t0, t0, dtype=small, device=like.device)  # |x_i - x_j|^2
        self._S = torch.zeros(t0, t0, dtype=small, device=like.device)  # g_i . g_j
        self._set_xexp(torch.zeros((), **opts))  # k, the common power-of-two exponent of _X

    def _set_xexp(self, xexp: torch.Tensor) -> None:
        """The inputs' common exponent k and the factors derived from it (2^-k; 4^k in the small dtype)."""
        self._xexp = xexp
        self._xdown = torch.exp2(-xexp)
        self._xup = torch.exp2(2.0 * xexp.to(self._D.dtype))

    def _check_pairs(self, thetas: Any, grads: Any) -> tuple[torch.Tensor, torch.Tensor]:
        thetas, grads = _check_tensor("thetas", thetas), _check_tensor("grads", grads)
        if thetas.dim() == 0:
            raise ValueError("thetas must be one d-vector or an n x d matrix of pairs, got a 0-d tensor")
        if thetas.dim() == 1:
            thetas, grads = thetas.unsqueeze(0), grads.unsqueeze(0)
        if thetas.dim() != 2 or thetas.shape != grads.shape:
            raise ValueError(f"thetas and grads must both be n x d, got {tuple(thetas.shape)} and {tuple(grads.shape)}")
        if thetas.shape[0] == 0:
            raise ValueError("thetas has no rows: add() needs at least one pair")
        if thetas.shape[1] == 0:
            raise ValueError("thetas has no columns: points need d >= 1 coordinates")
        if self._dim is not None and self._count and thetas.shape[1] != self._dim:
            raise ValueError(f"thetas must have d = {self._dim} columns like the history, got {thetas.shape[1]}")
        return thetas, grads

    @torch.no_grad()
    def add(self, thetas: torch.Tensor, grads: torch.Tensor) -> int:
        """Add evaluated pairs (theta_i, grad f(theta_i)), n x d each (or one pair as two d-vectors);
        returns how many were stored.

        Pairs with a non-finite entry are rejected (and logged): they never enter the history.
        """
        thetas, grads = self._check_pairs(thetas, grads)
        # One pass per row: a non-finite entry makes the row sum non-finite (a finite row whose sum
        # overflows is rejected too, conservatively).
        finite = torch.isfinite(thetas.sum(1)) & torch.isfinite(grads.sum(1))
        if not bool(finite.all()):
            bad = (~finite).nonzero().flatten().tolist()
            log.warning("GradientEstimator.add: rejected %d pair(s) with non-finite values (rows %s)", len(bad), bad)
            thetas, grads = thetas[finite], grads[finite]
        if thetas.shape[0] == 0:
            return 0
        return self._store(thetas, grads)

    def _store(self, thetas: torch.Tensor, grads: torch.Tensor, top: torch.Tensor | None = None) -> int:
        """Store finite pairs (checked by the caller; ``top``: their ``row_top(grads)`` if known);
        O(T0 d) re-anchoring plus O(n T0 d) products."""
        if top is not None:
            top = top[-self.history:]
        thetas, grads = thetas[-self.history:], grads[-self.history:]
        if self._dim is None or self._count == 0 or self._X.dtype != thetas.dtype or self._X.device != thetas.device:
            self._allocate(thetas)
            self._count = self._next = 0
        small = self._D.dtype
        # Re-anchor at the newest point so |x_i - anchor|^2 stays of the size of the distances we
        # need: computing |x-y|^2 = |x|^2 + |y|^2 - 2 x.y from raw vectors would cancel catastrophically
        # in float32 when |x| >> |x - y| (e.g. d = 1e5, theta in [-1, 1]^d, steps of 0.01).
        anchor = thetas[-1]
        rows = thetas - anchor
        # The common exponent k of the centred inputs moves only when the new rows leave the band
        # around it, so in the ordinary range it stays 0 and every factor below is exactly 1.
        spread = _exponent(row_top(rows.view(1, -1)))[0, 0]
        moved = (spread - self._xexp).abs() > BAND
        xexp = torch.where(moved & (spread != 0), spread + 1.0, self._xexp)
        ratio = torch.exp2(self._xexp - xexp)
        self._set_xexp(xexp)
        down, up = self._xdown, self._xup
        rows.mul_(down)
        old = self._count
        if old:
            shift = (anchor - self._anchor) * down
            torch.addcmul(-shift, self._X[:old], ratio, out=self._X[:old])
            self._sq[:old] = torch.linalg.vector_norm(self._X[:old], dim=1).pow(2).to(small) * up
        self._anchor = anchor.clone()
        n = thetas.shape[0]
        if self._next + n <= self.history:  # contiguous slots: slices, no index copies
            slots: Any = slice(self._next, self._next + n)
        else:
            slots = (self._next + torch.arange(n, device=thetas.device)) % self.history
        gscale = row_scale(grads, top)
        scaled = grads * gscale
        self._X[slots] = rows
        self._G[slots] = scaled
        self._gscale[slots] = gscale.reciprocal().view(-1).to(small)
        self._sq[slots] = torch.linalg.vector_norm(rows, dim=1).pow(2).to(small) * up
        self._norm[slots] = thetas.norm(dim=1).to(small)
        self._next = (self._next + n) % self.history
        self._count = min(self._count + n, self.history)
        # The filled slots are always the first `count` rows, so slicing (never fancy indexing,
        # which would copy the T0 x d buffers) reads them in place; the new rows enter the products
        # as the fresh tensors they were stored from.
        live = self._count
        inner = (self._X[:live] @ rows.T).to(small) * up
        sqd = (self._sq[:live, None] + self._sq[None, slots] - 2.0 * inner).clamp_min(0.0)
        self._D[:live, slots] = sqd
        self._D[slots, :live] = sqd.T
        if isinstance(slots, slice):
            self._D[slots, slots].fill_diagonal_(0.0)
        else:
            self._D[slots, slots] = 0.0  # the diagonal entries (paired index tensors)
        gram = (self._G[:live] @ scaled.T).to(small) * self._gscale[:live, None] * self._gscale[None, slots]
        self._S[:live, slots] = gram
        self._S[slots, :live] = gram.T
        self._dirty = True
        return n

    # ------------------------------------------------------------------ fitting
    def _kernel_matrix(self, ells: torch.Tensor | None) -> torch.Tensor:
        """K(ell) + noise I for each candidate lengthscale in ``ells`` -> (len(ells), n, n).

        ``ells=None`` (gpytorch kernels only) keeps the kernel's own hyper-parameters.
        """
        n = self._count
        eye = torch.eye(n, dtype=self._D.dtype, device=self._D.device)
        if not self._generic:
            return from_sqdist(self._D[:n, :n].unsqueeze(0), ells.view(-1, 1, 1), self.kernel, torch) + self.noise * eye
        raw = self._raw()
        mats = []
        for ell in ([None] if ells is None else ells.tolist()):
            if ell is not None:
                self._set_generic_lengthscale(ell)
            mats.append(self.kernel(raw, raw).to_dense().to(self._D.dtype))
        return torch.stack(mats) + self.noise * eye

    def _raw(self) -> torch.Tensor:
        raw = self._X[: self._count] * torch.exp2(self._xexp) + self._anchor
        return raw / float(self._scale()) if self.normalize else raw

    def _set_generic_lengthscale(self, ell: float) -> None:
        with torch.no_grad():
            self.kernel.lengthscale = torch.full_like(self.kernel.lengthscale, ell)

    def _scale(self) -> torch.Tensor:
        """Mean norm of the stored inputs (1 when it is 0), the divisor of ``normalize``."""
        scale = self._norm[: self._count].mean()
        return torch.where(scale > 0, scale, 1.0)

    def _median_distance(self) -> torch.Tensor:
        """Median of the positive pairwise distances (1 when there is none), as a 0-d tensor.

        Non-positive distances become NaN for ``nanquantile``, which then interpolates between the same
        two middle values ``quantile`` would on the positive ones alone (torch.median would return the
        lower one), without reading their count back to the host.
        """
        n = self._count
        if n < 2:
            return torch.ones((), dtype=self._D.dtype, device=self._D.device)
        iu = torch.triu_indices(n, n, 1, device=self._D.device)
        dist = self._D[iu[0], iu[1]].sqrt()
        median = torch.nanquantile(torch.where(dist > 0, dist, math.nan), 0.5)
        median = torch.where(torch.isnan(median), 1.0, median)
        return median / self._scale() if self.normalize else median

    def _loo_error(self, factors: torch.Tensor) -> torch.Tensor:
        """Closed-form leave-one-out squared error of all d gradient outputs, per factor.

        With A = (K + noise I)^{-1}, the LOO residual of output j at point i is (A g_j)_i / A_ii, so
        the total is sum_i (A S A)_ii / A_ii^2 with S = G G^T: T0 x T0 work only.
        """
        n = self._count
        S = self._S[:n, :n]
        inv = torch.cholesky_inverse(factors)
        ASA = inv @ S @ inv
        return (ASA.diagonal(dim1=-2, dim2=-1) / inv.diagonal(dim1=-2, dim2=-1).pow(2)).sum(-1)

    def _fit(self) -> None:
        """Choose the lengthscale and factor K + noise I; one read-back (the factorization check)."""
        if not self._dirty:
            return
        if self._count == 0:
            raise ValueError("GradientEstimator has no history yet: call add() before mean() or variance()")
        small, device = self._D.dtype, self._D.device
        self._single = False
        if self.lengthscale is None:
            ells = None
        elif isinstance(self.lengthscale, float):
            ells = torch.tensor([self.lengthscale], dtype=small, device=device)
        elif self._count == 1 and not self._generic:
            self._single, self._lengthscale, self._dirty = True, math.inf, False
            return
        elif self.lengthscale == "median" or self._count < 3:
            # Leave-one-out with fewer than 3 points cannot tell lengthscales apart: use the median.
            ells = self._median_distance().view(1)
        else:
            ells = self._median_distance() * torch.tensor(check.AUTO_GRID_FACTORS, dtype=small, device=device)
        if ells is not None and self.normalize and not self._generic:
            ells = ells * self._scale()
        matrices = self._kernel_matrix(ells)
        factors, info = torch.linalg.cholesky_ex(matrices)
        failed, undefined = torch.stack([(info > 0).any(), ~torch.isfinite(matrices).all()]).tolist()
        if undefined:
            tried = "its own" if ells is None else ", ".join(f"{v:.3g}" for v in ells.tolist())
            raise ValueError(
                f"lengthscale ({tried}) is so small against the distances between history points that the "
                "kernel evaluates to NaN (r = distance / lengthscale overflows); use a larger lengthscale")
        if failed:
            factors = _cholesky(matrices)
        if factors.shape[0] == 1:
            best = torch.zeros(1, dtype=torch.long, device=device)
        else:
            best = torch.argmin(self._loo_error(factors)).view(1)
        if ells is not None:
            self._lengthscale = ells.index_select(0, best)[0]
            if self._generic:
                self._set_generic_lengthscale(self.lengthscale_)
        self._L = factors.index_select(0, best)[0]
        self._dirty = False

    # ------------------------------------------------------------------ prediction
    def _cross(self, thetas: torch.Tensor) -> torch.Tensor:
        """k(theta, X) for each query row -> m x n (small dtype)."""
        n = self._count
        if self._generic:
            query = thetas / float(self._scale()) if self.normalize else thetas
            return self.kernel(query, self._raw()).to_dense().to(self._D.dtype)
        small = self._D.dtype
        q = (thetas - self._anchor) * self._xdown
        up = self._xup
        inner = (q @ self._X[:n].T).to(small) * up
        sq = torch.linalg.vector_norm(q, dim=1).pow(2).to(small) * up
        sqd = (sq[:, None] + self._sq[None, :n] - 2.0 * inner).clamp_min(0.0)
        return from_sqdist(sqd, self._lengthscale, self.kernel, torch)

    def _queries(self, thetas: Any) -> tuple[torch.Tensor, bool]:
        thetas = _check_tensor("thetas", thetas)
        if self._count == 0:
            raise ValueError("GradientEstimator has no history yet: call add() before mean() or variance()")
        single = thetas.dim() == 1
        thetas = thetas.unsqueeze(0) if single else thetas
        if thetas.dim() != 2 or thetas.shape[1] != self._dim:
            raise ValueError(f"thetas must be m x d with d = {self._dim}, got {tuple(thetas.shape)}")
        self._fit()
        return thetas.to(self._X.dtype), single

    @torch.no_grad()
    def mean(self, thetas: torch.Tensor) -> torch.Tensor:
        """Posterior mean mu(theta) of the gradient, m x d (or d for a single d-vector)."""
        thetas, single = self._queries(thetas)
        if self._single:
            out = (self._G[:1] * self._gscale[:1].to(self._G.dtype)).expand(thetas.shape[0], -1).clone()
        else:
            weights = torch.cholesky_solve(self._cross(thetas).T, self._L)  # n x m: solved in history space
            out = (weights.T * self._gscale[: self._count]).to(self._G.dtype) @ self._G[: self._count]
        return out[0] if single else out

    @torch.no_grad()
    def variance(self, thetas: torch.Tensor) -> torch.Tensor:
        """Posterior variance k(theta, theta) - k^T (K + noise I)^{-1} k, shared by all d outputs."""
        thetas, single = self._queries(thetas)
        if self._single:
            out = torch.zeros(thetas.shape[0], dtype=self._D.dtype, device=self._D.device)
            return out[0] if single else out
        cross = self._cross(thetas)
        prior = torch.ones(thetas.shape[0], dtype=cross.dtype, device=cross.device)
        if self._generic:
            query = thetas / float(self._scale()) if self.normalize else thetas
            prior = self.kernel(query, query, diag=True).to(cross.dtype)
        weights = torch.cholesky_solve(cross.T, self._L)
        out = (prior - (cross.T * weights).sum(0)).clamp_min(0.0)
        return out[0] if single else out

    # ------------------------------------------------------------------ checkpoints
    _BUFFERS = ("_X", "_xexp", "_G", "_gscale", "_anchor", "_sq", "_norm", "_D", "_S")

    def state_dict(self) -> dict[str, Any]:
        """The history and its statistics as plain tensors and numbers (``torch.load(weights_only=True)``),
        with the lengthscale fitted to that history."""
        if self._count:
            self._fit()
        state: dict[str, Any] = {"history": self.history, "count": self._count, "next": self._next,
                                 "dim": self._dim, "lengthscale": self.lengthscale_}
        if self._dim is not None:
            state.update({name.lstrip("_"): getattr(self, name).clone() for name in self._BUFFERS})
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (into an estimator with the same ``history``)."""
        if state.get("history") != self.history:
            raise ValueError(f"state holds a history of {state.get('history')} pairs, "
                             f"this estimator keeps {self.history}")
        self._count, self._next, self._dim = int(state["count"]), int(state["next"]), state["dim"]
        if self._dim is not None:
            for name in self._BUFFERS:
                setattr(self, name, state[name.lstrip("_")].clone())
            self._set_xexp(self._xexp)
        self._lengthscale = state["lengthscale"]
        self._dirty = True
