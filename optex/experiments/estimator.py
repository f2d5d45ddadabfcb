"""Sec. 4.1: the kernelized gradient estimator, seen three ways.

- ``field``: the estimate mu(theta) and posterior standard deviation of a 2-D gradient field on a grid,
  as the history grows (history points uniform in the window);
- ``prop41``: Prop. 4.1 checked numerically. An independent dense implementation of the multi-output
  GP posterior with the separable kernel K(theta, theta') = k(theta, theta') I_d (a dT' x dT' solve)
  is compared with the library's decoupled estimator (a T' x T' solve) and with the closed form of the
  proposition;
- ``cost``: the wall time of one estimate and of one history update against d and T0, to be set
  beside the cost model O(T0 d + T0^2) per estimate and O(N T0 d + T0^3) per update.
"""
from __future__ import annotations

import importlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from scipy.optimize import nnls
from scipy.spatial.distance import cdist

from .. import _validation as check
from .. import problems
from ..results import ResultStore, Unit, run_units
from ..verify import Prefix
from .synthetic import backend_adapter

FIGURE_ID = "estimator"
PARTS = ("field", "prop41", "cost")
PROFILES = {
    "paper": dict(grid=17, prop_dims=(1, 2, 5, 10), prop_histories=(5, 20, 50),
                  cost_dims=(100, 1_000, 10_000, 100_000), cost_histories=(10, 20, 50, 100, 200), repeats=7, seeds=5),
    "quick": dict(grid=11, prop_dims=(1, 2, 5), prop_histories=(5, 20),
                  cost_dims=(100, 1_000, 10_000), cost_histories=(10, 25, 50, 100), repeats=3, seeds=2),
}
# The 2-D window of the `field` part: centre and half-width. Ackley's is off its kink at 0 and spans
# four of its local wells, so the field has structure at the scale of the window.
CENTRE = {"ackley": (1.5, 1.5), "levy": (1.0, 1.0), "sphere": (0.0, 0.0), "rosenbrock": (0.0, 1.0)}
WINDOW = {"ackley": 1.0, "levy": 3.0, "sphere": 1.5, "rosenbrock": 1.5}


@dataclass(frozen=True)
class Config:
    """Settings of the estimator chapter. Fields left at None take the profile's value (``PROFILES``)."""

    profile: str = "paper"
    parts: tuple[str, ...] = PARTS
    function: str = "ackley"  # the 2-D gradient field of the `field` part
    field_histories: tuple[int, ...] = (10, 40, 160)  # history sizes shown for the field
    grid: int | None = None  # grid x grid arrows
    kernel: str = "matern52"
    lengthscale: float | str = "auto"
    noise: float = 1e-3  # sigma^2 of the GP
    prop_dims: tuple[int, ...] | None = None
    prop_histories: tuple[int, ...] | None = None
    cost_dims: tuple[int, ...] | None = None
    cost_histories: tuple[int, ...] | None = None
    cost_parallelism: int = 5  # N pairs added per history update
    repeats: int | None = None  # timings per (d, T0): the median is kept
    seeds: int | tuple[int, ...] | None = None
    device: str = "cpu"
    backend: str = "torch"

    def __post_init__(self) -> None:
        check.fill_from_profile(self, PROFILES)
        check.choices("parts", self.parts, PARTS)
        check.choice("function", self.function, tuple(WINDOW))
        check.positive_ints("field_histories", self.field_histories)
        if check.positive_int("grid", self.grid) < 2:
            raise ValueError(f"grid must be >= 2, got {self.grid}")
        check.choice("kernel", self.kernel, check.KERNELS)
        check.lengthscale(self.lengthscale)
        check.nonnegative_float("noise", self.noise)
        for name in ("prop_dims", "prop_histories", "cost_dims", "cost_histories"):
            check.positive_ints(name, getattr(self, name))
        check.positive_int("cost_parallelism", self.cost_parallelism)
        check.positive_int("repeats", self.repeats)
        check.seed_list(self.seeds)
        check.choice("device", self.device, check.DEVICES)
        check.choice("backend", self.backend, check.BACKENDS)

    @property
    def seed_list(self) -> list[int]:
        return check.seed_list(self.seeds)


# ------------------------------------------------------------------------------------ backends
class Backend:
    """The backend's ``GradientEstimator`` and array conversions, as the runner uses them."""

    def __init__(self, config: Config) -> None:
        self.adapter = backend_adapter(config.backend)
        self.module = importlib.import_module(f"optex.{config.backend}")
        self.device = config.device

    def estimator(self, kernel: str, lengthscale: float | str, noise: float, history: int) -> Any:
        return self.module.GradientEstimator(kernel, lengthscale=lengthscale, noise=noise, history=history)

    def array(self, values: np.ndarray, dtype: str = "float64") -> Any:
        return self.adapter.asarray(values, dtype, self.device)

    def numpy(self, values: Any) -> np.ndarray:
        return np.asarray(self.adapter.to_numpy(values), dtype=float)


def true_gradient(problem: problems.Problem, points: np.ndarray) -> np.ndarray:
    """grad F at each row of ``points`` (float64 autograd), n x d."""
    x = torch.tensor(points, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(problem(x, torch).sum(), x)
    return grad.numpy()


# ---------------------------------------------------------------------------------------- field
def field_unit(config: Config, seed: int) -> pd.DataFrame:
    """Estimated vs true gradient field on the grid for each history size, and the history points."""
    backend = Backend(config)
    problem = problems.make(config.function, 2)
    centre, half = np.asarray(CENTRE[config.function]), WINDOW[config.function]
    rng = np.random.default_rng([seed, 2])
    history = centre + rng.uniform(-half, half, size=(max(config.field_histories), 2))
    grads = true_gradient(problem, history)
    axis = np.linspace(-half, half, config.grid)
    grid = centre + np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2)
    truth = true_gradient(problem, grid)
    frames = [pd.DataFrame(dict(part="history", seed=seed, index=np.arange(len(history)), x=history[:, 0],
                                y=history[:, 1], true_x=grads[:, 0], true_y=grads[:, 1]))]
    for size in config.field_histories:
        est = backend.estimator(config.kernel, config.lengthscale, config.noise, size)
        est.add(backend.array(history[:size]), backend.array(grads[:size]))
        mean = backend.numpy(est.mean(backend.array(grid)))
        std = np.sqrt(backend.numpy(est.variance(backend.array(grid))))
        frames.append(pd.DataFrame(dict(part="field", seed=seed, history=size, x=grid[:, 0], y=grid[:, 1],
                                        true_x=truth[:, 0], true_y=truth[:, 1], est_x=mean[:, 0], est_y=mean[:, 1],
                                        std=std, lengthscale=est.lengthscale_)))
    return pd.concat(frames, ignore_index=True)


def field_error(frame: pd.DataFrame) -> pd.DataFrame:
    """Per seed and history size: the relative RMS error of mu over the grid and the mean posterior std."""
    field = frame[frame["part"] == "field"]
    rows = []
    for (seed, size), group in field.groupby(["seed", "history"]):
        err = (group["est_x"] - group["true_x"]) ** 2 + (group["est_y"] - group["true_y"]) ** 2
        scale = group["true_x"] ** 2 + group["true_y"] ** 2
        rows.append(dict(seed=seed, history=size, rel_error=math.sqrt(err.mean() / scale.mean()),
                         std=float(group["std"].mean())))
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------- prop41
def kernel_matrix(a: np.ndarray, b: np.ndarray, kernel: str, lengthscale: float) -> np.ndarray:
    """k(a_i, b_j) for unit-amplitude stationary kernels, written out independently of optex.kernels."""
    r = cdist(a, b) / lengthscale
    if kernel == "rbf":
        return np.exp(-0.5 * r * r)
    if kernel == "matern12":
        return np.exp(-r)
    if kernel == "matern32":
        return (1.0 + math.sqrt(3.0) * r) * np.exp(-math.sqrt(3.0) * r)
    if kernel == "matern52":
        return (1.0 + math.sqrt(5.0) * r + 5.0 / 3.0 * r * r) * np.exp(-math.sqrt(5.0) * r)
    raise ValueError(f"kernel must be one of {', '.join(map(repr, check.KERNELS))}; got {kernel!r}")


def dense_posterior(X: np.ndarray, G: np.ndarray, Q: np.ndarray, kernel: str, lengthscale: float,
                    noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Eq. (3) as written: the multi-output GP posterior with K(theta, theta') = k(theta, theta') I_d,
    solved over all d T' outputs at once. Returns the means (m x d) and covariances (m x d x d)."""
    t, d = G.shape
    eye = np.eye(d)
    big = np.kron(kernel_matrix(X, X, kernel, lengthscale), eye) + noise * np.eye(t * d)  # (tau, i) ordering
    cross = np.kron(kernel_matrix(X, Q, kernel, lengthscale), eye)  # dT' x md
    solved = np.linalg.solve(big, np.concatenate([G.reshape(-1, 1), cross], axis=1))
    means = (cross.T @ solved[:, :1]).reshape(len(Q), d)
    prior = np.kron(kernel_matrix(Q, Q, kernel, lengthscale), eye)
    cov = prior - cross.T @ solved[:, 1:]
    blocks = np.stack([cov[i * d:(i + 1) * d, i * d:(i + 1) * d] for i in range(len(Q))])
    return means, blocks


def separable_posterior(X: np.ndarray, G: np.ndarray, Q: np.ndarray, kernel: str, lengthscale: float,
                        noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Prop. 4.1's closed form: mu = G^T (K + noise I)^{-1} k(theta), variance k - k^T (K + noise I)^{-1} k."""
    gram = kernel_matrix(X, X, kernel, lengthscale) + noise * np.eye(len(X))
    cross = kernel_matrix(X, Q, kernel, lengthscale)
    solved = np.linalg.solve(gram, cross)
    return solved.T @ G, 1.0 - (cross * solved).sum(0)


def prop41_unit(config: Config, seed: int) -> pd.DataFrame:
    """Max abs differences between the dense multi-output posterior, the closed form and the library."""
    backend = Backend(config)
    rng = np.random.default_rng([seed, 3])
    rows = []
    for kernel in check.KERNELS:
        for dim in config.prop_dims:
            for size in config.prop_histories:
                X, G = rng.standard_normal((size, dim)), rng.standard_normal((size, dim))
                Q = rng.standard_normal((8, dim))
                ell = math.sqrt(dim)
                start = time.perf_counter()
                dense_mean, dense_cov = dense_posterior(X, G, Q, kernel, ell, config.noise)
                dense_s = time.perf_counter() - start
                start = time.perf_counter()
                sep_mean, sep_var = separable_posterior(X, G, Q, kernel, ell, config.noise)
                sep_s = time.perf_counter() - start
                est = backend.estimator(kernel, ell, config.noise, size)
                est.add(backend.array(X), backend.array(G))
                lib_mean = backend.numpy(est.mean(backend.array(Q)))
                lib_var = backend.numpy(est.variance(backend.array(Q)))
                diagonal = np.einsum("mii->mi", dense_cov)
                off = dense_cov - np.einsum("mi,ij->mij", diagonal, np.eye(dim))
                rows.append(dict(part="prop41", seed=seed, kernel=kernel, dim=dim, history=size,
                                 mean_vs_library=float(np.abs(dense_mean - lib_mean).max()),
                                 var_vs_library=float(np.abs(diagonal - lib_var[:, None]).max()),
                                 mean_vs_closed_form=float(np.abs(dense_mean - sep_mean).max()),
                                 var_vs_closed_form=float(np.abs(diagonal - sep_var[:, None]).max()),
                                 off_diagonal=float(np.abs(off).max()), dense_s=dense_s, separable_s=sep_s))
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------- cost
def _timed(call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def cost_unit(config: Config) -> pd.DataFrame:
    """Median wall time of one estimate and of one history update (N pairs added, then the refit that
    the next estimate triggers) for each (d, T0), in float32 as in the experiments."""
    backend = Backend(config)
    rng = np.random.default_rng([0, 4])
    n, repeats = config.cost_parallelism, config.repeats
    rows = []
    for dim in config.cost_dims:
        for size in config.cost_histories:
            total = size + n * (repeats + 1)
            X = backend.array(rng.standard_normal((total, dim)).astype(np.float32), "float32")
            G = backend.array(rng.standard_normal((total, dim)).astype(np.float32), "float32")
            queries = [backend.array(rng.standard_normal((1, dim)).astype(np.float32), "float32")
                       for _ in range(repeats + 1)]
            est = backend.estimator(config.kernel, config.lengthscale, config.noise, size)
            est.add(X[:size], G[:size])
            backend.numpy(est.mean(queries[0]))  # first fit (and, in JAX, compilation) is not timed
            estimate = float(np.median([_timed(lambda q=q: backend.numpy(est.mean(q))) for q in queries[1:]]))

            def update(i: int) -> None:
                lo = size + n * i
                est.add(X[lo:lo + n], G[lo:lo + n])
                backend.numpy(est.mean(queries[i]))

            update(0)  # warm-up of the update path (compilation in JAX)
            with_estimate = float(np.median([_timed(lambda i=i: update(i)) for i in range(1, repeats + 1)]))
            rows.append(dict(part="cost", dim=dim, history=size, parallelism=n, estimate_s=estimate,
                             update_s=max(with_estimate - estimate, 0.0), repeats=repeats))
    return pd.DataFrame(rows)


COST_TERMS = {"estimate": ("T0 d", "T0^2", "constant"), "update": ("N T0 d", "T0^3", "constant")}


def _features(cost: pd.DataFrame, op: str) -> np.ndarray:
    d, t0, n = (cost[c].to_numpy(dtype=float) for c in ("dim", "history", "parallelism"))
    if op == "estimate":
        return np.stack([t0 * d, t0 ** 2, np.ones_like(d)], 1)
    return np.stack([n * t0 * d, t0 ** 3, np.ones_like(d)], 1)


def cost_model(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fit seconds = sum_j c_j * term_j (non-negative c_j, relative least squares) for the estimate
    and the update, with the terms of ``COST_TERMS``.

    Returns the coefficients (one row per operation and term) and the measured vs predicted times
    (one row per operation, d and T0, with the relative error of the prediction).
    """
    cost = frame[frame["part"] == "cost"].reset_index(drop=True)
    coefficients, predictions = [], []
    for op in COST_TERMS:
        seconds = cost[f"{op}_s"].to_numpy(dtype=float)
        keep = seconds > 0
        features = _features(cost, op)
        coef, _ = nnls(features[keep] / seconds[keep, None], np.ones(int(keep.sum())))
        predicted = features @ coef
        coefficients += [dict(operation=op, term=term, coefficient=c) for term, c in zip(COST_TERMS[op], coef)]
        predictions.append(pd.DataFrame(dict(operation=op, dim=cost["dim"], history=cost["history"], measured_s=seconds,
                                             predicted_s=predicted, rel_error=np.abs(predicted - seconds) / seconds)))
    return pd.DataFrame(coefficients), pd.concat(predictions, ignore_index=True)


# ------------------------------------------------------------------------------------------ run
def verification(config: Config) -> list[Prefix]:
    """What ``book verify`` recomputes: the field and Prop. 4.1 units of the first seed (a fraction of a
    second each). The cost part measures wall time, which no other machine reproduces: not verified.
    Prop. 4.1's columns are differences at rounding level, so they compare within 1e-9 absolute."""
    seed, prefixes = config.seed_list[0], []
    if "field" in config.parts:
        prefixes.append(Prefix(f"field-seed{seed}", lambda: field_unit(config, seed)))
    if "prop41" in config.parts:
        prefixes.append(Prefix(f"prop41-seed{seed}", lambda: prop41_unit(config, seed),
                               ignore=("dense_s", "separable_s"), atol=1e-9))
    return prefixes


def run(config: Config, results_dir: str | Path | None = "results", figure_id: str = FIGURE_ID,
        progress: bool = True, commit: str | None = None, compute: bool = True) -> pd.DataFrame:
    """Every part of ``config`` as one tidy table with a ``part`` column (cached per part and seed)."""
    store = None if results_dir is None else ResultStore(results_dir, figure_id, config)
    units: list[Unit] = []
    if "field" in config.parts:
        units += [Unit(f"field-seed{s}", lambda s=s: field_unit(config, s), {"seed": s}) for s in config.seed_list]
    if "prop41" in config.parts:
        units += [Unit(f"prop41-seed{s}", lambda s=s: prop41_unit(config, s), {"part": "prop41", "seed": s})
                  for s in config.seed_list]
    if "cost" in config.parts:
        units.append(Unit("cost", lambda: cost_unit(config), {"part": "cost"}))
    frames = run_units(store, units, device=config.device, backend=config.backend, commit=commit, compute=compute,
                       progress=progress, label=figure_id)
    return pd.concat(frames, ignore_index=True)


def chapter_configs(page: Any, function: str = "ackley", field_histories: Sequence[int] = (10, 40, 160),
                    kernel: str = "matern52", lengthscale: float | str = "auto",
                    noise: float = 1e-3) -> Callable[[str], list[Config]]:
    """The configs of the estimator chapter by profile, for :meth:`optex.report.Page.results`: one
    :class:`Config` with the field's function and history sizes (a non-empty list), the estimator's
    kernel, lengthscale and noise, and the ``page``'s seeds, device and backend. Both profiles are built
    here, so that a bad value fails before any work starts."""
    if not isinstance(field_histories, (list, tuple)) or not field_histories:
        raise ValueError(f"field_histories must be a non-empty list of history sizes, got {field_histories!r}")

    def configs(profile: str) -> list[Config]:
        return [Config(profile=profile, function=function, field_histories=tuple(field_histories), kernel=kernel,
                       lengthscale=lengthscale, noise=noise, seeds=page.seeds, device=page.device,
                       backend=page.backend)]

    for profile in PROFILES:
        configs(profile)
    return configs


__all__ = ["Backend", "Config", "FIGURE_ID", "PARTS", "PROFILES", "chapter_configs", "cost_model", "dense_posterior",
           "field_error", "kernel_matrix", "run", "separable_posterior", "true_gradient", "verification"]
