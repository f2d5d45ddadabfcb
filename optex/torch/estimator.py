"""Kernelized gradient estimation (Sec. 4.1, Prop. 4.1) for PyTorch."""
from __future__ import annotations

import logging
from typing import Any

import torch

from .. import _validation as check
from ..kernels import from_sqdist

log = logging.getLogger("optex")


def _small_dtype(device: torch.device) -> torch.dtype:
    # The T0 x T0 algebra is tiny, so it runs in float64 for robustness; MPS has no float64.
    return torch.float32 if device.type == "mps" else torch.float64


def _cholesky(matrix: torch.Tensor) -> torch.Tensor:
    """Cholesky factor of a (batch of) SPD matrix, adding escalating jitter when it is ill-conditioned."""
    factor, info = torch.linalg.cholesky_ex(matrix)
    if not bool((info > 0).any()):
        return factor
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
        statistics only (O(T0^3) per candidate). Refitted whenever the history changes. For a gpytorch
        kernel without a ``lengthscale`` use ``None`` (its own hyper-parameters are kept).
    noise:
        sigma^2, the variance added to the kernel matrix's diagonal (relative to the unit kernel
        amplitude). It models gradient noise and regularises the solve.
    history:
        T0, the number of most recent evaluated pairs kept (a ring buffer).
    normalize:
        Divide inputs by the mean norm of the history points first (the official code's habit). It
        rescales a float lengthscale; ``"median"`` and ``"auto"`` are scale-invariant already.
    """

    def __init__(self, kernel: Any = "matern52", lengthscale: float | str | None = "auto",
                 noise: float = 1e-3, history: int = 50, normalize: bool = False) -> None:
        self.history = check.positive_int("history", history)
        self.noise = check.nonnegative_float("noise", noise)
        self.normalize = bool(normalize)
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
        self.lengthscale_: float | None = None
        self._dirty = True

    def __len__(self) -> int:
        return self._count

    @property
    def dim(self) -> int | None:
        """d, fixed by the first call to :meth:`add`."""
        return self._dim

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
        self._X = torch.zeros(t0, d, **opts)  # inputs, centred at the anchor (see add)
        self._G = torch.zeros(t0, d, **opts)
        self._anchor = torch.zeros(d, **opts)
        self._sq = torch.zeros(t0, dtype=small, device=like.device)  # |x_i - anchor|^2
        self._norm = torch.zeros(t0, dtype=small, device=like.device)  # |x_i|, for normalize
        self._D = torch.zeros(t0, t0, dtype=small, device=like.device)  # |x_i - x_j|^2
        self._S = torch.zeros(t0, t0, dtype=small, device=like.device)  # g_i . g_j

    def _check_pairs(self, thetas: torch.Tensor, grads: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(thetas, torch.Tensor) or not isinstance(grads, torch.Tensor):
            raise ValueError("thetas and grads must be torch tensors")
        if thetas.dim() == 1:
            thetas, grads = thetas.unsqueeze(0), grads.unsqueeze(0)
        if thetas.dim() != 2 or thetas.shape != grads.shape:
            raise ValueError(f"thetas and grads must both be n x d, got {tuple(thetas.shape)} and {tuple(grads.shape)}")
        if self._dim is not None and self._count and thetas.shape[1] != self._dim:
            raise ValueError(f"thetas must have d = {self._dim} columns like the history, got {thetas.shape[1]}")
        return thetas, grads

    @torch.no_grad()
    def add(self, thetas: torch.Tensor, grads: torch.Tensor) -> int:
        """Add evaluated pairs (theta_i, grad f(theta_i)), n x d each; returns how many were stored.

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
        thetas, grads = thetas[-self.history:], grads[-self.history:]
        if self._dim is None or self._count == 0 or self._X.dtype != thetas.dtype or self._X.device != thetas.device:
            self._allocate(thetas)
            self._count = self._next = 0
        small = self._D.dtype
        # Re-anchor at the newest point so |x_i - anchor|^2 stays of the size of the distances we
        # need: computing |x-y|^2 = |x|^2 + |y|^2 - 2 x.y from raw vectors would cancel catastrophically
        # in float32 when |x| >> |x - y| (e.g. d = 1e5, theta in [-1, 1]^d, steps of 0.01).
        anchor = thetas[-1]
        old = self._count
        if old:
            self._X[:old] -= anchor - self._anchor
            self._sq[:old] = torch.linalg.vector_norm(self._X[:old], dim=1).pow(2).to(small)
        self._anchor = anchor.clone()
        n = thetas.shape[0]
        slots = (self._next + torch.arange(n, device=thetas.device)) % self.history
        self._X[slots] = thetas - anchor
        self._G[slots] = grads
        self._sq[slots] = torch.linalg.vector_norm(self._X[slots], dim=1).pow(2).to(small)
        self._norm[slots] = thetas.norm(dim=1).to(small)
        self._next = (self._next + n) % self.history
        self._count = min(self._count + n, self.history)
        # The filled slots are always the first `count` rows, so slicing (never fancy indexing,
        # which would copy the T0 x d buffers) reads them in place.
        live = self._count
        inner = (self._X[:live] @ self._X[slots].T).to(small)
        sqd = (self._sq[:live, None] + self._sq[None, slots] - 2.0 * inner).clamp_min(0.0)
        self._D[:live, slots] = sqd
        self._D[slots, :live] = sqd.T
        self._D[slots, slots] = 0.0
        gram = (self._G[:live] @ self._G[slots].T).to(small)
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
        raw = self._X[: self._count] + self._anchor
        return raw / self._scale() if self.normalize else raw

    def _set_generic_lengthscale(self, ell: float) -> None:
        with torch.no_grad():
            self.kernel.lengthscale = torch.full_like(self.kernel.lengthscale, ell)

    def _scale(self) -> float:
        if not self.normalize:
            return 1.0
        scale = float(self._norm[: self._count].mean())
        return scale if scale > 0 else 1.0

    def _median_distance(self) -> float:
        n = self._count
        iu = torch.triu_indices(n, n, 1, device=self._D.device)
        dist = self._D[iu[0], iu[1]].sqrt()
        positive = dist[dist > 0]
        if positive.numel() == 0:
            return 1.0
        median = float(positive.quantile(0.5))  # torch.median would return the lower middle value
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
        if not self._dirty:
            return
        if self._count == 0:
            raise RuntimeError("GradientEstimator has no history yet: call add() first")
        small, device = self._D.dtype, self._D.device
        if self.lengthscale is None:
            ells = None
        elif isinstance(self.lengthscale, float):
            ells = torch.tensor([self.lengthscale], dtype=small, device=device)
        elif self.lengthscale == "median" or self._count < 3:
            # Leave-one-out with fewer than 3 points cannot tell lengthscales apart: use the median.
            ells = torch.tensor([self._median_distance()], dtype=small, device=device)
        else:
            ells = self._median_distance() * torch.tensor(check.AUTO_GRID_FACTORS, dtype=small, device=device)
        if ells is not None and self.normalize and not self._generic:
            ells = ells * self._scale()
        factors = _cholesky(self._kernel_matrix(ells))
        best = 0 if factors.shape[0] == 1 else int(torch.argmin(self._loo_error(factors)))
        if ells is not None:
            self.lengthscale_ = float(ells[best])
            if self._generic:
                self._set_generic_lengthscale(self.lengthscale_)
        self._L = factors[best]
        self._dirty = False

    # ------------------------------------------------------------------ prediction
    def _cross(self, thetas: torch.Tensor) -> torch.Tensor:
        """k(theta, X) for each query row -> m x n (small dtype)."""
        n = self._count
        if self._generic:
            query = thetas / self._scale() if self.normalize else thetas
            return self.kernel(query, self._raw()).to_dense().to(self._D.dtype)
        q = thetas - self._anchor
        inner = (q @ self._X[:n].T).to(self._D.dtype)
        sqd = (torch.linalg.vector_norm(q, dim=1).pow(2).to(self._D.dtype)[:, None] + self._sq[None, :n] - 2.0 * inner).clamp_min(0.0)
        return from_sqdist(sqd, self.lengthscale_, self.kernel, torch)

    def _queries(self, thetas: torch.Tensor) -> tuple[torch.Tensor, bool]:
        if not isinstance(thetas, torch.Tensor):
            raise ValueError("thetas must be a torch tensor")
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
        weights = torch.cholesky_solve(self._cross(thetas).T, self._L)  # n x m: solved in history space
        out = weights.T.to(self._G.dtype) @ self._G[: self._count]
        return out[0] if single else out

    @torch.no_grad()
    def variance(self, thetas: torch.Tensor) -> torch.Tensor:
        """Posterior variance k(theta, theta) - k^T (K + noise I)^{-1} k, shared by all d outputs."""
        thetas, single = self._queries(thetas)
        cross = self._cross(thetas)
        prior = torch.ones(thetas.shape[0], dtype=cross.dtype, device=cross.device)
        if self._generic:
            query = thetas / self._scale() if self.normalize else thetas
            prior = self.kernel(query, query, diag=True).to(cross.dtype)
        weights = torch.cholesky_solve(cross.T, self._L)
        out = (prior - (cross.T * weights).sum(0)).clamp_min(0.0)
        return out[0] if single else out
