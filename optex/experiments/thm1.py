"""Thm. 1 / Cor. 1: how the gradient estimate's error and posterior spread shrink with the history.

Two kinds of gradient fields F: R^d -> R^d are estimated from T noisy or exact evaluations at points
drawn uniformly in a box, and measured at fresh points of the same box:

- ``gp-<kernel>``: fields sampled from the separable GP of Assumption 2, each of the d coordinates an
  independent GP with a unit-amplitude RBF, Matern-3/2 or Matern-5/2 kernel (random Fourier features,
  Rahimi & Recht 2007), observed with Gaussian noise of variance sigma^2 (Assumption 1); the estimator
  uses the true kernel, lengthscale and sigma^2, as the theorem does. The gradient of a scalar GP
  sample would not do: its covariance -grad grad^T k couples the coordinates, so it is not separable.
- the synthetic functions of Sec. 6.1 (exact gradients, the estimator's own lengthscale rule), which
  are not GP samples: there the theorem gives no rate, but the error still has to fall.

Per T the table holds the RMS error ||grad F(theta) - mu_T(theta)||, the RMS posterior standard
deviation sigma_T(theta) and the fraction of query points inside Thm. 1's bound
||grad F - mu_T||^2 <= beta sigma_T^2 with beta = d + 2 sqrt(d log(1/delta)) + 2 log(1/delta).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from .. import _validation as check
from .. import problems
from ..analysis import mean_ci
from ..results import ResultStore, Unit, run_units
from ..verify import Prefix
from .estimator import Backend, true_gradient

FIGURE_ID = "thm1"
GP_KERNELS = ("rbf", "matern32", "matern52")
SOURCES = tuple(f"gp-{k}" for k in GP_KERNELS) + ("sphere", "ackley", "rosenbrock", "levy")
NU = {"matern32": 1.5, "matern52": 2.5}
PROFILES = {
    "paper": dict(histories=(8, 16, 32, 64, 128, 256, 512, 1024, 2048),
                  synthetic_histories=(8, 16, 32, 64, 128, 256, 512), queries=256, seeds=5),
    "quick": dict(histories=(8, 16, 32, 64, 128, 256), synthetic_histories=(8, 16, 32, 64, 128), queries=128, seeds=3),
}


def cor1_exponent(kernel: str, dim: int) -> float:
    """The decay exponent a of the posterior standard deviation, sigma_T ~ T^-a, implied by Cor. 1 as
    the spec reconstructs it (UNCONFIRMED): ||Sigma_T^2|| = O~(T^-1) for RBF and O~(T^(-2nu/(2nu+d)))
    for Matern-nu, so a is half of that exponent (logarithmic factors dropped)."""
    check.choice("kernel", kernel, GP_KERNELS)
    if kernel == "rbf":
        return 0.5
    nu = NU[kernel]
    return nu / (2.0 * nu + check.positive_int("dim", dim))


def beta(dim: int, delta: float) -> float:
    """Thm. 1's beta = d + 2 sqrt(d log(1/delta)) + 2 log(1/delta) (chi-square tail, Laurent-Massart)."""
    log = math.log(1.0 / delta)
    return dim + 2.0 * math.sqrt(dim * log) + 2.0 * log


def spectral_sample(kernel: str, count: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """Frequencies omega ~ the kernel's spectral density (unit lengthscale), count x dim: standard normal
    for RBF, multivariate Student-t with 2 nu degrees of freedom for Matern-nu."""
    check.choice("kernel", kernel, GP_KERNELS)
    normal = rng.standard_normal((count, dim))
    if kernel == "rbf":
        return normal
    nu = NU[kernel]
    return normal * np.sqrt(2.0 * nu / rng.chisquare(2.0 * nu, size=(count, 1)))


def sample_field(kernel: str, dim: int, lengthscale: float, features: int,
                 rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    """A vector field R^d -> R^d whose d coordinates are independent random-feature GPs with kernel
    ``kernel``: f_j(x) = sqrt(2/M) sum_m w_jm cos(omega_jm . x / lengthscale + b_jm), with w ~ N(0, 1)
    and b ~ U(0, 2 pi). Over draws, E f_i(x) f_j(x') = k(x, x') if i = j and 0 otherwise, exactly for
    any number of features M (the distribution is Gaussian only as M grows)."""
    omega = np.stack([spectral_sample(kernel, features, dim, rng) for _ in range(dim)]) / lengthscale  # d x M x d
    phase = rng.uniform(0.0, 2.0 * math.pi, size=(dim, features))
    weight = rng.standard_normal((dim, features)) * math.sqrt(2.0 / features)

    def field(points: np.ndarray) -> np.ndarray:
        angles = np.einsum("jmk,nk->njm", omega, np.atleast_2d(points)) + phase
        return np.einsum("njm,jm->nj", np.cos(angles), weight)

    return field


@dataclass(frozen=True)
class Config:
    """Settings of the Thm. 1 experiment. Fields left at None take the profile's value (``PROFILES``)."""

    profile: str = "paper"
    sources: tuple[str, ...] = SOURCES
    dim: int = 2  # d, of both the input and the gradient field
    histories: tuple[int, ...] | None = None  # T for the GP samples
    synthetic_histories: tuple[int, ...] | None = None  # T for the synthetic functions (auto lengthscale: costlier)
    queries: int | None = None  # fresh points where the error is measured
    gp_lengthscale: float = 0.5  # of the sampled fields, in a box [-1, 1]^d
    grad_noise: float = 0.1  # sigma: observation noise of the GP fields (the estimator's noise is sigma^2)
    features: int = 1024  # random Fourier features per coordinate
    kernel: str = "matern52"  # the estimator's kernel on the synthetic functions
    synthetic_noise: float = 1e-3  # the estimator's sigma^2 on the (noise-free) synthetic functions
    synthetic_box: float = 0.5  # half-width of the box around theta_0 ~ U(-1, 1)^d for the synthetic functions
    delta: float = 0.05  # Thm. 1 holds with probability 1 - delta
    seeds: int | tuple[int, ...] | None = None
    device: str = "cpu"
    backend: str = "torch"

    def __post_init__(self) -> None:
        check.fill_from_profile(self, PROFILES)
        check.choices("sources", self.sources, SOURCES)
        check.positive_int("dim", self.dim)
        for name in ("histories", "synthetic_histories"):
            if len(check.positive_ints(name, getattr(self, name))) < 2:
                raise ValueError(f"{name} must be a tuple of at least 2 history sizes, got {getattr(self, name)!r}")
        check.positive_int("queries", self.queries)
        check.positive_float("gp_lengthscale", self.gp_lengthscale)
        check.positive_float("grad_noise", self.grad_noise)
        check.positive_int("features", self.features)
        check.choice("kernel", self.kernel, check.KERNELS)
        check.positive_float("synthetic_noise", self.synthetic_noise)
        check.positive_float("synthetic_box", self.synthetic_box)
        if not 0.0 < check.positive_float("delta", self.delta) < 1.0:
            raise ValueError(f"delta must lie in (0, 1), got {self.delta}")
        check.seed_list(self.seeds)
        check.choice("device", self.device, check.DEVICES)
        check.choice("backend", self.backend, check.BACKENDS)

    @property
    def seed_list(self) -> list[int]:
        return check.seed_list(self.seeds)


def run_unit(config: Config, source: str, seed: int, sizes: tuple[int, ...] | None = None) -> pd.DataFrame:
    """Error, posterior std and bound coverage of one field (one seed) for every history size (or for
    ``sizes`` only: the points and queries drawn are the same, so these rows equal the full run's)."""
    backend = Backend(config)
    rng = np.random.default_rng([seed, 5, SOURCES.index(source)])
    d = config.dim
    if source.startswith("gp-"):
        kernel = source.removeprefix("gp-")
        field = sample_field(kernel, d, config.gp_lengthscale, config.features, rng)
        drawn = config.histories
        points = rng.uniform(-1.0, 1.0, size=(max(drawn), d))
        queries = rng.uniform(-1.0, 1.0, size=(config.queries, d))
        observed = field(points) + config.grad_noise * rng.standard_normal((len(points), d))
        truth = field(queries)
        settings = (kernel, config.gp_lengthscale, config.grad_noise ** 2)
    else:
        problem = problems.make(source, d)
        drawn = config.synthetic_histories
        centre = rng.uniform(-1.0, 1.0, size=d)
        points = centre + rng.uniform(-config.synthetic_box, config.synthetic_box, size=(max(drawn), d))
        queries = centre + rng.uniform(-config.synthetic_box, config.synthetic_box, size=(config.queries, d))
        observed, truth = true_gradient(problem, points), true_gradient(problem, queries)
        settings = (config.kernel, "auto", config.synthetic_noise)
    scale = math.sqrt(float((truth ** 2).sum(1).mean()))
    bound = beta(d, config.delta)
    rows = []
    for size in drawn if sizes is None else sizes:
        est = backend.estimator(*settings, history=size)
        est.add(backend.array(points[:size]), backend.array(observed[:size]))
        mean = backend.numpy(est.mean(backend.array(queries)))
        var = backend.numpy(est.variance(backend.array(queries)))
        sq_err = ((mean - truth) ** 2).sum(1)
        rows.append(dict(source=source, kind="gp" if source.startswith("gp-") else "synthetic", seed=seed, dim=d,
                         history=size, error=math.sqrt(sq_err.mean()), rel_error=math.sqrt(sq_err.mean()) / scale,
                         std=math.sqrt(var.mean()), coverage=float((sq_err <= bound * var).mean()),
                         lengthscale=est.lengthscale_))
    return pd.DataFrame(rows)


def run(config: Config, results_dir: str | Path | None = "results", figure_id: str = FIGURE_ID,
        progress: bool = True, commit: str | None = None, compute: bool = True) -> pd.DataFrame:
    """Every source x seed as one tidy table (one row per history size), cached per (source, seed)."""
    store = None if results_dir is None else ResultStore(results_dir, figure_id, config)
    units = [Unit(f"{source}-seed{seed}", lambda so=source, se=seed: run_unit(config, so, se),
                  {"source": source, "seed": seed})
             for source in config.sources for seed in config.seed_list]
    frames = run_units(store, units, device=config.device, backend=config.backend, commit=commit, compute=compute,
                       progress=progress, label=figure_id)
    return pd.concat(frames, ignore_index=True)


def verification(config: Config) -> list[Prefix]:
    """What ``book verify`` recomputes: the three smallest history sizes of every source on the first seed."""
    seed = config.seed_list[0]

    def prefix(source: str) -> Prefix:
        drawn = config.histories if source.startswith("gp-") else config.synthetic_histories
        return Prefix(f"{source}-seed{seed}", lambda: run_unit(config, source, seed, tuple(drawn[:3])))

    return [prefix(source) for source in config.sources]


def decay_exponents(frame: pd.DataFrame, column: str = "error", min_history: int = 32) -> pd.DataFrame:
    """Per source: the exponent a of ``column`` ~ T^-a, fitted by least squares on log-log axes over
    T >= ``min_history`` for each seed, with the mean and 95% t-interval over seeds, and for the GP
    sources the rate of Cor. 1 (reconstructed, UNCONFIRMED) beside it."""
    rows = []
    for source, group in frame[frame["history"] >= min_history].groupby("source", sort=False):
        slopes = [-np.polyfit(np.log(g["history"]), np.log(g[column]), 1)[0] for _, g in group.groupby("seed")]
        mean, low, high = mean_ci(np.asarray(slopes))
        kernel = source.removeprefix("gp-")
        rows.append(dict(source=source, quantity=column, exponent=mean, low=low, high=high, seeds=len(slopes),
                         cor1=cor1_exponent(kernel, int(group["dim"].iloc[0])) if kernel in GP_KERNELS else math.nan))
    return pd.DataFrame(rows)


def chapter_configs(page: Any, dim: int = 2, gp_lengthscale: float = 0.5, grad_noise: float = 0.1,
                    delta: float = 0.05, fit_from: int = 32) -> Callable[[str], list[Config]]:
    """The configs of the Thm. 1 chapter by profile, for :meth:`optex.report.Page.results`: one
    :class:`Config` with the chapter's d, lengthscale and noise of the sampled fields and delta, and the
    ``page``'s seeds, device and backend. Both profiles are built here, and ``fit_from`` (the smallest
    history size of the decay fits, :func:`decay_exponents`) must leave each of them two history sizes
    of the sampled fields to fit, so that a bad value fails before any work starts."""
    check.positive_int("fit_from", fit_from)

    def configs(profile: str) -> list[Config]:
        return [Config(profile=profile, dim=dim, gp_lengthscale=gp_lengthscale, grad_noise=grad_noise, delta=delta,
                       seeds=page.seeds, device=page.device, backend=page.backend)]

    for profile in PROFILES:
        (config,) = configs(profile)
        fitted = [t for t in config.histories if t >= fit_from]
        if len(fitted) < 2:
            raise ValueError(f"fit_from must leave at least two history sizes to fit the decay on; the {profile} "
                             f"profile's are {', '.join(map(str, config.histories))}, got fit_from = {fit_from!r}")
    return configs


__all__ = ["Config", "FIGURE_ID", "GP_KERNELS", "PROFILES", "SOURCES", "beta", "chapter_configs", "cor1_exponent",
           "decay_exponents", "run", "run_unit", "sample_field", "spectral_sample", "verification"]
