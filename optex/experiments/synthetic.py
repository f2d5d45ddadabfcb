"""Sec. 6.1: OptEx and its baselines on synthetic functions (Fig. 2 of the NeurIPS version).

``run(Config(...))`` returns a tidy table with one row per method x seed x iteration. Each
(method, seed) unit is cached on disk under a hash of the scientific settings, so a killed run
resumes from its finished units and a repeated call only reads files.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from .. import _validation as check
from .. import problems
from ..analysis import REFERENCE, REFERENCE_GROWTH
from ..results import ResultStore, Unit, run_units
from ..verify import Prefix

FIGURE_ID = "synthetic"
# method name -> OptEx `proxy`; "vanilla" is the base optimizer alone (N = 1); "last_gradient" is the
# trivial-surrogate ablation (the proxy steps follow the last true gradient instead of the GP mean).
# "picard" is the exact parallel competitor (optex.torch.Picard), not an OptEx proxy.
METHODS = {"vanilla": "none", "optex": "kernel", "target": "target", "linesearch": "linesearch",
           "last_gradient": "last_gradient", "large_batch": "large_batch", "picard": None}
DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class Config:
    """Settings of one synthetic experiment (defaults: the official example, spec Sec. 9, at d = 1000).

    ``device`` and ``backend`` say where it runs and ``parallel`` how the N gradients are evaluated
    (``"vmap"``, ``"loop"``; torch ``"distributed"`` under ``torchrun``, every rank running this runner and
    rank 0 writing the results; JAX ``"shard_map"``); they are not part of the result's identity.
    """

    function: str = "rosenbrock"
    dim: int = 1000
    parallelism: int = 5  # N
    history: int = 50  # T0
    kernel: str = "matern52"
    lengthscale: float | str = "auto"
    noise: float = 1e-3  # sigma^2 of the GP
    optimizer: str = "adam"
    lr: float = 0.01
    momentum: float = 0.0
    iterations: int = 40  # T, sequential iterations
    seeds: int | tuple[int, ...] = 5  # a count (seeds 0..n-1) or explicit seeds
    methods: tuple[str, ...] = ("vanilla", "linesearch", "target", "optex")
    select: str = "last"
    warmup_pairs: int = 1  # Vanilla iterations until the history holds this many pairs (2: the old rule)
    grad_noise: float = 0.0  # sigma of Assumption 1
    condition: float = 100.0  # quadratic only
    init_low: float = -1.0  # theta_0 ~ U(init_low, init_high)^d
    init_high: float = 1.0
    clip: float | None = None  # max gradient norm fed to the optimizer (official example: 100 on Rosenbrock)
    picard_tol: float = 1e-6  # relative change below which a Picard window iterate is accepted
    dtype: str = "float32"
    parallel: str = "vmap"
    device: str = "cpu"
    backend: str = "torch"

    def __post_init__(self) -> None:
        problems.make(self.function, self.dim, self.grad_noise, self.condition)
        check.positive_int("parallelism", self.parallelism)
        check.positive_int("history", self.history)
        check.positive_int("iterations", self.iterations)
        check.positive_float("lr", self.lr)
        check.nonnegative_float("momentum", self.momentum)
        check.lengthscale(self.lengthscale)
        check.nonnegative_float("noise", self.noise)
        check.choice("kernel", self.kernel, check.KERNELS)
        check.choice("select", self.select, check.SELECT)
        check.choice("dtype", self.dtype, DTYPES)
        check.choice("device", self.device, check.DEVICES)
        check.choice("backend", self.backend, check.BACKENDS)
        check.choice("parallel", self.parallel, check.TORCH_PARALLEL if self.backend == "torch" else check.JAX_PARALLEL)
        check.choices("methods", self.methods, METHODS)
        if self.warmup_pairs not in check.WARMUP_PAIRS or isinstance(self.warmup_pairs, bool):
            raise ValueError(f"warmup_pairs must be one of {', '.join(map(str, check.WARMUP_PAIRS))}, "
                             f"got {self.warmup_pairs!r}")
        # The optimizer's name, learning rate and momentum, checked by the backend that will use them.
        backend_adapter(self.backend).optimizer_args(self.optimizer, self.lr, self.momentum)
        if self.clip is not None:
            check.positive_float("clip", self.clip)
        if not self.init_low < self.init_high:
            raise ValueError(f"init_low must be < init_high, got {self.init_low} and {self.init_high}")
        check.seed_list(self.seeds)
        check.positive_float("picard_tol", self.picard_tol)
        if "picard" in self.methods and (self.grad_noise > 0 or self.backend != "torch"):
            raise ValueError("methods: 'picard' needs a deterministic objective (grad_noise=0) and backend='torch'")
        if "large_batch" in self.methods and self.grad_noise == 0:
            raise ValueError("methods: 'large_batch' equals 'vanilla' on a deterministic objective (grad_noise=0); "
                             "drop it or set grad_noise > 0")

    @property
    def seed_list(self) -> list[int]:
        return check.seed_list(self.seeds)

    @property
    def has_reference(self) -> bool:
        """Whether the results include the long Vanilla reference (Vanilla and another method)."""
        return "vanilla" in self.methods and len(self.methods) > 1


def backend_adapter(backend: str) -> Any:
    """``optex.torch.adapter`` or ``optex.jax.adapter``: arrays, devices, optimizers, ``OptEx``."""
    check.choice("backend", backend, check.BACKENDS)
    return importlib.import_module(f"optex.{backend}.adapter")


def initial_point(config: Config, seed: int) -> np.ndarray:
    """theta_0 for ``seed``: the same for every method and backend."""
    rng = np.random.default_rng([seed, 0])
    return rng.uniform(config.init_low, config.init_high, size=config.dim)


def _noise_batches(config: Config, count: int, rng: np.random.Generator) -> list[np.ndarray] | None:
    if config.grad_noise == 0:
        return None
    return list(rng.standard_normal((count, config.dim)))


def _make_optimizer(config: Config, method: str, x0: Any, parallelism: int) -> Any:
    backend = backend_adapter(config.backend)
    module = importlib.import_module(f"optex.{config.backend}")
    optimizer_args = backend.optimizer_args(config.optimizer, config.lr, config.momentum)
    if method == "picard":
        return module.Picard(x0, parallelism=parallelism, tol=config.picard_tol, max_grad_norm=config.clip,
                             **optimizer_args)
    return module.OptEx(x0, parallelism=parallelism, history=config.history, kernel=config.kernel,
                        lengthscale=config.lengthscale, noise=config.noise, select=config.select,
                        proxy=METHODS[method], max_grad_norm=config.clip, warmup_pairs=config.warmup_pairs,
                        parallel=config.parallel, **optimizer_args)


def run_unit(config: Config, method: str, seed: int, beat: float = -np.inf) -> pd.DataFrame:
    """One method on one seed: T sequential iterations, tidy rows for iterations 0..T.

    For "picard", ``steps`` counts the exact base-optimizer steps reached and ``trajectory_error`` is
    the relative distance to the plain sequential trajectory at that step (computed alongside).
    For ``REFERENCE`` ("vanilla_long"), Vanilla runs N*T iterations, continued to 2NT and 4NT while its
    best gap is above ``beat`` (the best gap any other method reached); its first T rows are Vanilla's.
    """
    if method != REFERENCE:
        check.choice("method", method, METHODS)
    backend = backend_adapter(config.backend)
    problem = problems.make(config.function, config.dim, config.grad_noise, config.condition)
    xp = backend.xp
    n = 1 if method in ("vanilla", REFERENCE) else config.parallelism
    stops = [g * config.parallelism * config.iterations for g in REFERENCE_GROWTH] if method == REFERENCE else []
    length = stops[-1] if stops else config.iterations
    x0 = initial_point(config, seed)
    optimizer = _make_optimizer(config, "vanilla" if method == REFERENCE else method,
                                backend.asarray(x0, config.dtype, config.device), n)
    reference = None
    if method == "picard":
        reference = _make_optimizer(config, "vanilla", backend.asarray(x0, config.dtype, config.device), 1)

    def loss_fn(params, batch):
        return problem.loss(params, batch, xp)

    noise_rng = np.random.default_rng([seed, 1])
    gap0 = float(backend.to_numpy(problem.gap(optimizer.params, xp)))
    rows = [dict(iteration=0, gap=gap0, evaluations=0, wall_time=0.0, loss=np.nan, grad_norm=np.nan,
                 proxy_cosine=np.nan, lengthscale=np.nan, selected=-1, steps=0)]
    evaluations, wall, steps, best = 0, 0.0, 0, gap0
    for t in range(1, length + 1):
        noise = _noise_batches(config, n, noise_rng)
        batches = None if noise is None else [backend.asarray(z, config.dtype, config.device) for z in noise]
        info = optimizer.step(loss_fn, batches)
        evaluations += info.evaluations
        wall += info.time_total
        steps += info.advanced if method == "picard" else (1 if info.evaluations == 1 else n)
        gap = float(backend.to_numpy(problem.gap(optimizer.params, xp)))
        row = dict(iteration=t, gap=gap, evaluations=evaluations, wall_time=wall, loss=info.loss,
                   grad_norm=info.grad_norm,
                   proxy_cosine=float(np.mean(info.proxy_cosine)) if info.proxy_cosine else np.nan,
                   lengthscale=np.nan if info.lengthscale is None else info.lengthscale,
                   selected=info.selected, steps=steps)
        if reference is not None:
            while reference.iteration < steps:
                reference.step(loss_fn)
            exact = backend.to_numpy(reference.theta)
            row["trajectory_error"] = float(np.linalg.norm(backend.to_numpy(optimizer.theta) - exact)
                                            / max(np.linalg.norm(exact), 1.0))
        rows.append(row)
        if not np.isfinite(gap):
            break  # diverged: the remaining iterations are recorded as missing
        best = min(best, gap)
        if t in stops and best <= beat:
            break
    frame = pd.DataFrame(rows)
    frame.insert(0, "seed", seed)
    frame.insert(0, "method", method)
    frame.insert(0, "function", config.function)
    return frame


def run(config: Config, results_dir: str | Path | None = "results", figure_id: str = FIGURE_ID,
        progress: bool = True, commit: str | None = None, compute: bool = True) -> pd.DataFrame:
    """All methods x seeds of ``config`` as one tidy table (cached per unit under ``results_dir``),
    with the long Vanilla reference (method ``REFERENCE``) where ``config.has_reference``.

    ``results_dir=None`` computes without caching. ``compute=False`` only reads the cache and raises
    ``FileNotFoundError`` listing what is missing (used where hours of work must not start silently).
    """
    if config.parallel == "distributed":
        from ..torch import distributed

        distributed.init()  # the process group torchrun describes (once); every rank runs this same call
    store = None if results_dir is None else ResultStore(results_dir, figure_id, config)
    options = dict(device=config.device, backend=config.backend, commit=commit, compute=compute, progress=progress,
                   label=f"{figure_id}:{config.function}")
    units = [Unit(f"{method}-seed{seed}", lambda m=method, s=seed: run_unit(config, m, s),
                  {"method": method, "seed": seed})
             for seed in config.seed_list for method in config.methods]
    frames = run_units(store, units, **options)
    if config.has_reference:
        by_seed = pd.concat(frames, ignore_index=True)
        rivals = by_seed[(by_seed["method"] != "vanilla") & np.isfinite(by_seed["gap"])].groupby("seed")["gap"].min()
        frames += run_units(store, [Unit(f"{REFERENCE}-seed{seed}",
                                         lambda s=seed: run_unit(config, REFERENCE, s, float(rivals.get(s, np.inf))),
                                         {"method": REFERENCE, "seed": seed}) for seed in config.seed_list], **options)
    order = {m: i for i, m in enumerate((*config.methods, REFERENCE))}
    table = pd.concat(frames, ignore_index=True)
    return table.sort_values(["method", "seed", "iteration"], key=lambda c: c.map(order) if c.name == "method" else c,
                             ignore_index=True)


def verification(config: Config) -> list[Prefix]:
    """What ``book verify`` recomputes: each method's first ``warmup_pairs + 2`` iterations on the first
    seed (the cold start and two proxy iterations, the second with a fitted lengthscale). The long
    reference starts as Vanilla's run, so its first rows are checked against the same recomputation."""
    seed = config.seed_list[0]
    short = replace(config, iterations=min(config.iterations, config.warmup_pairs + 2))
    computed: dict[str, pd.DataFrame] = {}

    def prefix(method: str) -> pd.DataFrame:
        if method not in computed:
            computed[method] = run_unit(short, method, seed)
        return computed[method]

    prefixes = [Prefix(f"{method}-seed{seed}", lambda m=method: prefix(m)) for method in config.methods]
    if config.has_reference:
        prefixes.append(Prefix(f"{REFERENCE}-seed{seed}", lambda: prefix("vanilla").assign(method=REFERENCE)))
    return prefixes


def sweep(base: Config, values: Sequence[Any], name: str, **kwargs: Any) -> pd.DataFrame:
    """``run`` for each value of one field (e.g. ``name="function"``), tagged with a column ``name``."""
    frames = []
    for value in values:
        frame = run(replace(base, **{name: value}), **kwargs)
        frame[name] = value
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


CHAPTER_ID = "synthetic-demo"  # the figure id of the synthetic chapter
CHAPTER_METHODS = ("vanilla", "linesearch", "target", "optex")
CHAPTER_SCALES = {"paper": {"dim": 10_000, "iterations": 60, "seeds": 5},
                  "quick": {"dim": 1_000, "iterations": 20, "seeds": 3}}


def chapter_configs(page: Any, functions: Sequence[str], parallelism: int, lr: float, rosenbrock_clip: float | None,
                    dim: int | None = None, iterations: int | None = None) -> Callable[[str], list[Config]]:
    """The configs of the synthetic chapter by profile, for :meth:`optex.report.Page.results`: one per
    function of ``functions``, Adam at ``lr`` with N = ``parallelism``, the gradient-norm clip
    ``rosenbrock_clip`` on Rosenbrock only, at the profile's size (``CHAPTER_SCALES``; ``dim`` and
    ``iterations`` replace it where not None) with the ``page``'s seeds, device and backend. Both profiles
    are built here, so that a bad knob fails before any work starts."""
    if not isinstance(functions, (list, tuple)) or not functions:
        raise ValueError(f"functions must be a non-empty list of function names, got {functions!r}")

    def configs(profile: str) -> list[Config]:
        settings = page.scale(profile, CHAPTER_SCALES, dim=dim, iterations=iterations)
        return [Config(function=name, methods=CHAPTER_METHODS, parallelism=parallelism, lr=lr,
                       clip=rosenbrock_clip if name == "rosenbrock" else None, device=page.device,
                       backend=page.backend, **settings)
                for name in functions]

    for profile in CHAPTER_SCALES:
        configs(profile)
    return configs


__all__ = ["CHAPTER_ID", "CHAPTER_METHODS", "CHAPTER_SCALES", "Config", "FIGURE_ID", "METHODS", "REFERENCE",
           "chapter_configs", "initial_point", "run", "run_unit", "sweep", "verification"]
