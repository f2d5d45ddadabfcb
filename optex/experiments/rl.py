"""Sec. 6.2: DQN on gymnasium's classic-control tasks, every method training the same agent.

``run(Config(task=...))`` trains one DQN agent (:mod:`optex.dqn`) per method x seed on one task and
returns a tidy table, one row per method x seed x episode. Each (method, seed) unit is cached under a
hash of the scientific settings and checkpoints at episode ends, so a killed run resumes from where it
stopped; units run in parallel processes with ``workers`` > 1.

The interaction protocol (the same for every method)
----------------------------------------------------
Episodes 1..W (``warmup_episodes``) act at random (ε = 1) and only fill the replay buffer; the
``episodes`` training episodes after them act ε-greedily, ε falling linearly from 1 to
``epsilon_min`` over ``epsilon_decay_episodes`` training episodes (:func:`optex.dqn.epsilon`). From the
first training episode on, every ``train_every``-th environment step triggers one Q-network update,
and every ``target_every`` updates the target network becomes a copy of the Q-network. One update is
one ``OptEx.step`` (one *sequential* iteration) of the method (``METHODS`` of
:mod:`optex.experiments.training`, built by its ``make_optex``): Vanilla evaluates one minibatch
gradient, the others N, each process on its own replay minibatch with its own TD targets. A method
changes only how the Q-network's parameters move; what the agent sees depends on it only through its
actions.

Randomness
----------
Every draw is keyed by the run's seed s, so that a run is reproducible and a checkpoint needs no
generator state: episode e resets the environment with seed ``SeedSequence([s, 1, e])`` and seeds its
action space (random actions) with ``SeedSequence([s, 2, e])``; its ε-coin flips come from
``default_rng([s, 3, e])``; process p of update u (0-based) samples its minibatch with
``default_rng([s, 4, u, p])``. θ_0 is :func:`optex.dqn.q_network` with seed s, the same for every
method, and the first W episodes are therefore identical for all methods.

What is recorded (one row per episode)
--------------------------------------
``episode`` (1-based, warm-up included), ``training_episode`` (episode - W: 0 or less in the warm-up),
``epsilon``, ``return``, ``length``, ``cum_avg_return`` (the mean return of the training episodes so
far: the paper's y-axis; NaN in the warm-up), cumulative ``env_steps``, ``updates`` and gradient
``evaluations``, the mean TD ``loss`` of the episode's updates, ``wall_time`` (cumulative seconds of
the unit: interaction and updates) and ``time_update`` (cumulative seconds inside ``OptEx.step``), and
for the surrogate methods the estimator's cosine with the true gradient: ``proxy_cosine_<s>`` (mean
over the episode's proxy updates, at proxy step s = 1..N-1; ``proxy_updates`` of them), and the mean
over proxy steps split by whether the estimator's inputs predate the last target-network copy
(``proxy_cosine_stale``, ``stale_updates``: OptEx while its history still holds a pair evaluated
against the previous target; the last gradient in the first update after a copy) or not
(``proxy_cosine_current``, ``current_updates``).
"""
from __future__ import annotations

import concurrent.futures
import math
import multiprocessing
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from .. import _validation as check
from .. import dqn, models
from ..analysis import mean_ci, return_bounds
from ..results import ResultStore, Unit, config_hash, run_units
from ..verify import TIMING, Prefix
from .synthetic import backend_adapter
from .training import METHODS, _load_checkpoint, _save_checkpoint, make_optex

FIGURE_ID = "rl"
_CHECKPOINT_FORMAT = 1  # optex.experiments.training's checkpoint format (same helpers)
WINDOW = 10  # episodes of the trailing mean that "episodes to threshold" reads


@dataclass(frozen=True)
class Task:
    """A gymnasium task and our settings for it.

    ``width`` (hidden units) and ``warmup`` (episodes) follow the paper's "64 or 128" and "30 or 50" by
    task (which task gets which is our choice). ``threshold``: the reward level of the "episodes to
    threshold" table, fixed before any run at about half way from a random policy's return to
    gymnasium's ``reward_threshold`` (``solved``). ``cleanrl``: the return CleanRL's DQN reports after
    500k environment steps (None: not reported), a sanity anchor.
    """

    env_id: str
    width: int
    warmup: int
    random_return: float
    solved: float
    threshold: float
    cleanrl: float | None


TASKS = {
    "cartpole": Task("CartPole-v1", 64, 30, random_return=22.0, solved=475.0, threshold=250.0, cleanrl=489.0),
    "acrobot": Task("Acrobot-v1", 64, 30, random_return=-500.0, solved=-100.0, threshold=-300.0, cleanrl=-92.0),
    "mountaincar": Task("MountainCar-v0", 64, 30, random_return=-200.0, solved=-110.0, threshold=-155.0,
                        cleanrl=-195.0),
    "lunarlander": Task("LunarLander-v3", 128, 50, random_return=-180.0, solved=200.0, threshold=0.0, cleanrl=None),
}
RL_METHODS = ("vanilla", "linesearch", "target", "optex", "large_batch", "large_batch_scaled", "last_gradient")
SURROGATE_PROXIES = ("kernel", "last_gradient")


@dataclass(frozen=True)
class Config:
    """Settings of one DQN experiment (one task, every method x seed); see the module docstring.

    ``episodes``: training episodes after the ``warmup_episodes`` (None: the task's, ``TASKS``).
    ``width``: hidden units of both hidden layers (None: the task's). ``max_episode_steps``: None keeps
    gymnasium's time limit. ``buffer_size``: transitions the replay buffer keeps. ``workers``: units
    computed in parallel processes (an execution option, like ``parallel``, ``device`` and ``backend``:
    not part of the result's identity). The runner is CPU and torch only: environments step on the
    CPU and the Q-network is small, so a GPU would only add transfers.
    """

    task: str = "cartpole"
    episodes: int = 100
    warmup_episodes: int | None = None
    width: int | None = None
    max_episode_steps: int | None = None
    methods: tuple[str, ...] = RL_METHODS
    seeds: int | tuple[int, ...] = 3
    parallelism: int = 4  # N
    optimizer: str = "adam"
    lr: float = 1e-3
    gamma: float = 0.95
    batch_size: int = 256
    buffer_size: int = 50_000
    train_every: int = 10
    target_every: int = 50
    epsilon_min: float = 0.1
    epsilon_decay_episodes: int = 50
    history: int = 50  # T0
    kernel: str = "matern52"
    lengthscale: float | str = "auto"
    noise: float = 1e-3
    select: str = "last"
    warmup_pairs: int = 1
    parallel: str = "vmap"
    device: str = "cpu"
    backend: str = "torch"
    workers: int = 1

    def __post_init__(self) -> None:
        spec = TASKS[check.choice("task", self.task, TASKS)]
        if self.warmup_episodes is None:
            object.__setattr__(self, "warmup_episodes", spec.warmup)
        if self.width is None:
            object.__setattr__(self, "width", spec.width)
        for name in ("episodes", "warmup_episodes", "width", "parallelism", "batch_size", "buffer_size",
                     "train_every", "target_every", "epsilon_decay_episodes", "history", "workers"):
            check.positive_int(name, getattr(self, name))
        if self.max_episode_steps is not None:
            check.positive_int("max_episode_steps", self.max_episode_steps)
        check.choices("methods", self.methods, METHODS)
        if "vanilla_long" in self.methods:
            raise ValueError("methods: 'vanilla_long' has no meaning here (RL compares episodes, not iterations)")
        check.seed_list(self.seeds)
        backend_adapter("torch").optimizer_args(self.optimizer, self.lr)  # checks both
        if not 0.0 < check.positive_float("gamma", self.gamma) <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma!r}")
        if not 0.0 <= check.nonnegative_float("epsilon_min", self.epsilon_min) <= 1.0:
            raise ValueError(f"epsilon_min must be in [0, 1], got {self.epsilon_min!r}")
        check.choice("kernel", self.kernel, check.KERNELS)
        check.lengthscale(self.lengthscale)
        check.nonnegative_float("noise", self.noise)
        check.choice("select", self.select, check.SELECT)
        if isinstance(self.warmup_pairs, bool) or self.warmup_pairs not in check.WARMUP_PAIRS:
            raise ValueError(f"warmup_pairs must be one of {check.WARMUP_PAIRS}; got {self.warmup_pairs!r}")
        check.choice("parallel", self.parallel, check.PARALLEL)
        if check.choice("device", self.device, check.DEVICES) != "cpu":
            raise ValueError(f"device must be 'cpu' for the RL runner (environments step on the CPU and the "
                             f"Q-network is small), got {self.device!r}")
        if check.choice("backend", self.backend, check.BACKENDS) != "torch":
            raise ValueError(f"backend must be 'torch' for the RL runner, got {self.backend!r}")

    @property
    def seed_list(self) -> list[int]:
        return check.seed_list(self.seeds)

    @property
    def total_episodes(self) -> int:
        return self.warmup_episodes + self.episodes


def make_env(config: Config) -> Any:
    """The gymnasium environment of ``config.task`` (with its time limit, or ``max_episode_steps``)."""
    import gymnasium

    kwargs = {} if config.max_episode_steps is None else {"max_episode_steps": config.max_episode_steps}
    return gymnasium.make(TASKS[config.task].env_id, **kwargs)


def _sizes(env: Any) -> tuple[int, int]:
    return int(np.prod(env.observation_space.shape)), int(env.action_space.n)


def dimension(config: Config) -> int:
    """d, the Q-network's number of parameters for ``config``'s task and width."""
    env = make_env(config)
    try:
        return models.num_parameters(dqn.q_network(*_sizes(env), config.width, 0))
    finally:
        env.close()


def _seed(*key: int) -> int:
    return int(np.random.SeedSequence(list(key)).generate_state(1)[0])


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


class _Agent:
    """One method's DQN on one seed: Q-network, target network, replay buffer, OptEx and the counters."""

    def __init__(self, config: Config, method: str, seed: int, state_size: int, actions: int) -> None:
        self.config, self.method, self.seed = config, method, seed
        self.processes = METHODS[method].processes(config.parallelism)
        self.surrogate = METHODS[method].proxy in SURROGATE_PROXIES
        self.stale_limit = config.history if METHODS[method].proxy == "kernel" else 1
        self.network = dqn.q_network(state_size, actions, config.width, seed)
        self.target = dqn.q_network(state_size, actions, config.width, seed)
        self.buffer = dqn.ReplayBuffer(config.buffer_size, state_size)
        self.opt = make_optex("torch", dict(self.network.named_parameters()), method,
                              parallelism=config.parallelism, optimizer=config.optimizer, lr=config.lr,
                              history=config.history, kernel=config.kernel, lengthscale=config.lengthscale,
                              noise=config.noise, select=config.select, warmup_pairs=config.warmup_pairs,
                              parallel=config.parallel)
        self.loss_fn = dqn.td_loss(self.network)
        # Counters: updates made, gradient evaluations, seconds inside OptEx.step, environment steps, and
        # the gradient pairs (OptEx) or updates (last gradient) since the last target-network copy.
        # The initial target network is θ_0 itself: nothing in an empty history predates it.
        self.counters = dict(updates=0, evaluations=0, time_update=0.0, env_steps=0, train_steps=0,
                             since_sync=self.stale_limit)

    def update(self, episode_log: dict[str, list[float]]) -> None:
        """One Q-network update: each process's minibatch and TD targets, one ``OptEx.step``."""
        config, counters = self.config, self.counters
        batches = [dqn.minibatch(self.buffer, np.random.default_rng([self.seed, 4, counters["updates"], p]),
                                 config.batch_size, self.target, config.gamma) for p in range(self.processes)]
        stale = counters["since_sync"] < self.stale_limit
        info = self.opt.step(self.loss_fn, batches)
        counters["updates"] += 1
        counters["evaluations"] += info.evaluations
        counters["time_update"] += info.time_total
        counters["since_sync"] += info.evaluations if self.stale_limit > 1 else 1
        episode_log["loss"].append(info.loss)
        if info.proxy_cosine:
            for s, cosine in enumerate(info.proxy_cosine, start=1):
                episode_log[f"cosine_{s}"].append(cosine)
            episode_log["stale" if stale else "current"].append(float(np.mean(info.proxy_cosine)))
        if counters["updates"] % config.target_every == 0:
            self.target.load_state_dict(self.network.state_dict())
            counters["since_sync"] = 0

    def state_dict(self) -> dict[str, Any]:
        return {"optex": self.opt.state_dict(), "target": self.target.state_dict(),
                "buffer": self.buffer.state_dict(), "counters": dict(self.counters)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state["optex"])  # writes θ into the Q-network's parameters
        self.target.load_state_dict(state["target"])
        self.buffer.load_state_dict(state["buffer"])
        self.counters = dict(state["counters"])


def _row(config: Config, agent: _Agent, episode: int, epsilon: float, ret: float, length: int,
         training_returns: list[float], log: dict[str, list[float]], wall: float) -> dict[str, Any]:
    counters = agent.counters
    row = dict(episode=episode, training_episode=episode - config.warmup_episodes, epsilon=epsilon,
               **{"return": ret}, length=length,
               cum_avg_return=_mean(training_returns), env_steps=counters["env_steps"], updates=counters["updates"],
               evaluations=counters["evaluations"], loss=_mean(log["loss"]), wall_time=wall,
               time_update=counters["time_update"])
    for s in range(1, config.parallelism):
        row[f"proxy_cosine_{s}"] = _mean(log[f"cosine_{s}"])
    row.update(proxy_updates=len(log["cosine_1"]) if config.parallelism > 1 else 0,
               proxy_cosine_stale=_mean(log["stale"]), stale_updates=len(log["stale"]),
               proxy_cosine_current=_mean(log["current"]), current_updates=len(log["current"]))
    return row


def run_unit(config: Config, method: str, seed: int, checkpoint: str | Path | None = None,
             checkpoint_every: float = 60.0) -> pd.DataFrame:
    """One method on one seed: one row per episode (warm-up included).

    With ``checkpoint`` (a file path) the unit saves its state there at the end of an episode at most
    every ``checkpoint_every`` seconds (0: every episode) and, if the file already holds a verified
    checkpoint of this unit and configuration, continues after its last episode: the rows are those
    of an uninterrupted run (the time columns aside).
    """
    check.choice("method", method, config.methods)
    env = make_env(config)
    try:
        agent = _Agent(config, method, seed, *_sizes(env))
        name, key = f"{method}-seed{seed}", config_hash(config)
        path = None if checkpoint is None else Path(checkpoint)
        state = None if path is None else _load_checkpoint(path, name, key)
        rows: list[dict[str, Any]] = []
        if state is not None:
            agent.load_state_dict(state["agent"])
            rows = state["rows"]
        training_returns = [r["return"] for r in rows if r["training_episode"] > 0]
        wall0 = time.perf_counter() - (rows[-1]["wall_time"] if rows else 0.0)
        saved = time.monotonic()
        for episode in range(len(rows) + 1, config.total_episodes + 1):
            epsilon = dqn.epsilon(episode, config.warmup_episodes, config.epsilon_decay_episodes, config.epsilon_min)
            training = episode > config.warmup_episodes
            state_now, _ = env.reset(seed=_seed(seed, 1, episode))
            env.action_space.seed(_seed(seed, 2, episode))
            coin = np.random.default_rng([seed, 3, episode])
            log: dict[str, list[float]] = {k: [] for k in ("loss", "stale", "current")}
            log.update({f"cosine_{s}": [] for s in range(1, config.parallelism)})
            ret, length, done = 0.0, 0, False
            while not done:
                explore = coin.random() < epsilon
                action = int(env.action_space.sample()) if explore else dqn.greedy_action(agent.network, state_now)
                next_state, reward, terminated, truncated, _ = env.step(action)
                agent.buffer.add(state_now, action, reward, next_state, terminated)
                state_now, ret, length, done = next_state, ret + float(reward), length + 1, terminated or truncated
                agent.counters["env_steps"] += 1
                if training:
                    agent.counters["train_steps"] += 1
                    if agent.counters["train_steps"] % config.train_every == 0:
                        agent.update(log)
            if training:
                training_returns.append(ret)
            rows.append(_row(config, agent, episode, epsilon, ret, length, training_returns, log,
                             time.perf_counter() - wall0))
            if path is not None and episode < config.total_episodes and \
                    time.monotonic() - saved >= checkpoint_every:
                _save_checkpoint(path, {"format": _CHECKPOINT_FORMAT, "unit": name, "config": key,
                                        "rows": rows, "agent": agent.state_dict()})
                saved = time.monotonic()
    finally:
        env.close()
    frame = pd.DataFrame(rows)
    frame.insert(0, "seed", seed)
    frame.insert(0, "method", method)
    frame.insert(0, "task", config.task)
    return frame


def _units(config: Config, checkpoint_every: float) -> list[Unit]:
    return [Unit(f"{method}-seed{seed}",
                 lambda path, m=method, s=seed: run_unit(config, m, s, checkpoint=path,
                                                         checkpoint_every=checkpoint_every),
                 {"method": method, "seed": seed}, checkpoint=True)
            for seed in config.seed_list for method in config.methods]


def _compute_in_worker(config: Config, results_dir: str, figure_id: str, commit: str | None, name: str,
                       checkpoint_every: float) -> None:
    """A worker process: computes and saves one unit (the store is safe for concurrent writers)."""
    import torch

    torch.set_num_threads(1)
    unit = [u for u in _units(config, checkpoint_every) if u.name == name]
    run_units(ResultStore(results_dir, figure_id, config), unit, device=config.device, backend=config.backend,
              commit=commit)


def run(config: Config, results_dir: str | Path | None = "results", figure_id: str = FIGURE_ID,
        progress: bool = True, commit: str | None = None, compute: bool = True,
        checkpoint_every: float = 60.0) -> pd.DataFrame:
    """All methods x seeds of ``config`` as one tidy table (cached per unit under ``results_dir``),
    ordered by ``config.methods``, then seed and episode.

    ``results_dir=None`` computes without caching (and without checkpoints). ``compute=False`` only
    reads the cache and raises ``FileNotFoundError`` listing what is missing. With ``workers`` > 1 the
    missing units are computed in that many processes (each on one torch thread) before they are read.
    """
    store = None if results_dir is None else ResultStore(results_dir, figure_id, config)
    units = _units(config, checkpoint_every)
    if store is not None and compute and config.workers > 1:
        missing = [u.name for u in units if store.load(u.name, u.expect) is None]
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(min(config.workers, max(len(missing), 1)),
                                                    mp_context=context) as pool:
            futures = [pool.submit(_compute_in_worker, config, str(results_dir), figure_id, commit, name,
                                   checkpoint_every) for name in missing]
            for future in concurrent.futures.as_completed(futures):
                future.result()
    frames = run_units(store, units, device=config.device, backend=config.backend, commit=commit, compute=compute,
                       progress=progress, label=f"{figure_id}:{config.task}")
    order = {m: i for i, m in enumerate(config.methods)}
    table = pd.concat(frames, ignore_index=True)
    return table.sort_values(["method", "seed", "episode"], key=lambda c: c.map(order) if c.name == "method" else c,
                             ignore_index=True)


def panel_name(config: Config) -> str:
    """The figure panel of ``config``: its gymnasium id, e.g. "CartPole-v1"."""
    return TASKS[config.task].env_id


def run_panel(config: Config, **kwargs: Any) -> pd.DataFrame:
    """:func:`run` with a ``panel`` column (:func:`panel_name`), for figures that put tasks side by side."""
    return run(config, **kwargs).assign(panel=panel_name(config))


def verification(config: Config) -> list[Prefix]:
    """What ``book verify`` recomputes: each method's warm-up and first two training episodes on the
    first seed (the ε schedule does not depend on the number of episodes, so they are the committed
    run's first rows)."""
    seed = config.seed_list[0]
    short = replace(config, episodes=min(config.episodes, 2))
    return [Prefix(f"{method}-seed{seed}", lambda m=method: run_unit(short, m, seed), ignore=TIMING)
            for method in config.methods]


# ---------------------------------------------------------------------------------------------- analysis
def trailing_return(frame: pd.DataFrame, window: int = WINDOW) -> pd.Series:
    """The mean return of the last ``window`` training episodes (fewer at the start), per run; NaN in
    the warm-up."""
    keys = [c for c in ("panel", "task") if c in frame.columns][:1] + ["method", "seed"]
    returns = frame["return"].where(frame["training_episode"] > 0).reset_index(drop=True)
    groups = frame[keys].reset_index(drop=True)
    rolled = returns.groupby([groups[k] for k in keys], sort=False).transform(
        lambda r: r.dropna().rolling(window, min_periods=1).mean().reindex(r.index))
    return pd.Series(rolled.to_numpy(), index=frame.index, name="trailing_return")


def episodes_to_threshold(frame: pd.DataFrame, thresholds: dict[str, float] | None = None,
                          window: int = WINDOW) -> pd.DataFrame:
    """Per run (task, method, seed): the first training episode whose trailing ``window``-episode mean
    return reaches the task's threshold (``TASKS``, or ``thresholds`` by task), NaN when it never does
    (censored). Columns: the panel column present, ``task``, ``method``, ``seed``, ``threshold``,
    ``episodes``, ``best_trailing`` (the highest trailing mean the run reached), ``final_cum_avg`` (the
    cumulative average return at the last episode) and ``training_episodes``."""
    thresholds = {**{k: t.threshold for k, t in TASKS.items()}, **(thresholds or {})}
    keys = [c for c in ("panel",) if c in frame.columns] + ["task", "method", "seed"]
    frame = frame.assign(trailing=trailing_return(frame, window))
    rows = []
    for key, run in frame.groupby(keys, sort=False):
        level = thresholds[dict(zip(keys, key))["task"]]
        hit = run[(run["training_episode"] > 0) & (run["trailing"] >= level)]
        rows.append(dict(zip(keys, key), threshold=level,
                         episodes=float(hit["training_episode"].iloc[0]) if len(hit) else math.nan,
                         best_trailing=float(run["trailing"].max()),
                         final_cum_avg=float(run["cum_avg_return"].iloc[-1]),
                         training_episodes=int(run["training_episode"].max())))
    return pd.DataFrame(rows)


def threshold_table(frame: pd.DataFrame, thresholds: dict[str, float] | None = None,
                    window: int = WINDOW) -> pd.DataFrame:
    """Per task and method: training episodes to the threshold (mean over the seeds that reach it, 95%
    t-interval, ``censored`` seeds that never do), the highest trailing mean return a run reached
    (``best``: mean and interval over all seeds: informative where every seed is censored), the final
    cumulative average return (``final_cum_avg``: mean and interval over all seeds) and ``floor``:
    whether every training return of every method and seed was the same value (e.g. MountainCar's
    -200: nothing was learnt)."""
    reach = episodes_to_threshold(frame, thresholds, window)
    keys = [c for c in ("panel",) if c in reach.columns] + ["task"]
    training = frame[frame["training_episode"] > 0]
    rows = []
    for key, group in reach.groupby(keys + ["method"], sort=False):
        where = dict(zip(keys + ["method"], key))
        returns = training[training["task"] == where["task"]]["return"]
        reached = group["episodes"].dropna().to_numpy()
        budget = int(group["training_episodes"].max())
        returns_range = return_bounds(where["task"])
        mean, low, high = mean_ci(reached, bounds=(0.0, budget)) if len(reached) else (math.nan,) * 3
        final, final_low, final_high = mean_ci(group["final_cum_avg"].to_numpy(), bounds=returns_range)
        best, best_low, best_high = mean_ci(group["best_trailing"].to_numpy(), bounds=returns_range)
        rows.append(dict(where, threshold=group["threshold"].iloc[0], episodes=mean, episodes_low=low,
                         episodes_high=high, censored=int(group["episodes"].isna().sum()), seeds=len(group),
                         training_episodes=budget, best=best, best_low=best_low,
                         best_high=best_high, final_cum_avg=final, final_low=final_low, final_high=final_high,
                         floor=bool(returns.nunique() == 1)))
    return pd.DataFrame(rows)


def compute_cost(frame: pd.DataFrame) -> dict[str, float]:
    """Seconds the runs took (``seconds``: the sum over runs of their last ``wall_time``) and an estimate
    of what one update per training step would have taken (``every_step_seconds``: each run's seconds
    inside ``OptEx.step`` per update times its training steps, plus its other seconds)."""
    keys = [c for c in ("panel", "task") if c in frame.columns][:1] + ["method", "seed"]
    seconds = every_step = 0.0
    for _, run in frame.groupby(keys, sort=False):
        run = run.sort_values("episode")
        last = run.iloc[-1]
        warm = run[run["training_episode"] <= 0]
        steps = last["env_steps"] - (warm["env_steps"].iloc[-1] if len(warm) else 0)
        per_update = last["time_update"] / last["updates"] if last["updates"] else 0.0
        seconds += last["wall_time"]
        every_step += last["wall_time"] - last["time_update"] + per_update * steps
    return {"seconds": seconds, "every_step_seconds": every_step}


# --------------------------------------------------------------------------------------------- the chapter
# The RL chapter (fig3): its methods (LargeBatch at the scaled learning rate is left out for the update budget)
# and each profile's sizes, common to every task and per task. The paper profile's are what its committed
# results were computed with: k (environment steps per update) grows with the length of a task's episodes,
# and ε reaches its floor half way through the training episodes.
CHAPTER_METHODS = ("vanilla", "linesearch", "target", "optex", "large_batch", "last_gradient")
CHAPTER_SCALES = {
    "paper": dict(seeds=3, target_every=25),
    "quick": dict(seeds=2, episodes=4, warmup_episodes=3, train_every=4, target_every=5, epsilon_decay_episodes=2,
                  batch_size=64),
}
CHAPTER_TASK_SCALES = {
    "paper": {"cartpole": dict(episodes=100, train_every=4, epsilon_decay_episodes=50),
              "acrobot": dict(episodes=50, train_every=10, epsilon_decay_episodes=25),
              "mountaincar": dict(episodes=30, train_every=10, epsilon_decay_episodes=15),
              "lunarlander": dict(episodes=50, train_every=20, epsilon_decay_episodes=25)},
    "quick": {},
}


def chapter_configs(page: Any, tasks: Sequence[str], parallelism: int, episodes: int | None = None,
                    workers: int = 1) -> Callable[[str], list[Config]]:
    """The RL chapter's configs by profile: one per task (``tasks``: keys of :data:`TASKS`; the quick
    profile runs the first only) at the profile's size (:data:`CHAPTER_SCALES`, then
    :data:`CHAPTER_TASK_SCALES`) with the ``page``'s seeds; ``episodes`` (not None) replaces the training
    episodes of every task. Both profiles are built here, so that a bad parameter fails at once."""
    if not isinstance(tasks, (list, tuple)) or not tasks:
        raise ValueError(f"tasks must be a non-empty list of task names, got {tasks!r}")

    def configs(profile: str) -> list[Config]:
        chosen = tasks if profile == "paper" else tasks[:1]
        out = []
        for task in chosen:
            scales = {p: {**CHAPTER_SCALES[p], **CHAPTER_TASK_SCALES[p].get(task, {})} for p in CHAPTER_SCALES}
            settings = page.scale(profile, scales, episodes=episodes)
            out.append(Config(task=task, methods=CHAPTER_METHODS, parallelism=parallelism, workers=workers, **settings))
        return out

    for profile in CHAPTER_SCALES:
        configs(profile)
    return configs


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """The command line's summary of a run: :func:`threshold_table`."""
    return threshold_table(frame)


__all__ = ["CHAPTER_METHODS", "CHAPTER_SCALES", "CHAPTER_TASK_SCALES", "Config", "FIGURE_ID", "RL_METHODS", "TASKS", "Task", "WINDOW", "compute_cost", "dimension",
           "chapter_configs", "episodes_to_threshold", "make_env", "panel_name", "run", "run_panel", "run_unit", "summary",
           "threshold_table", "trailing_return", "verification"]
