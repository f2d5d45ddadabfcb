"""Scale-out: the per-iteration cost of OptEx with its N evaluations on one process or on W ranks.

One configuration is timed in several setups, on the 5-layer MNIST MLP of Sec. 6.3 (images and labels
drawn at random: the cost of an iteration does not depend on their values):

- ``vmap``: one process, the N gradients in one ``torch.func.vmap`` call, with ``threads`` threads;
- ``loop``: one process, one autograd call per process, one thread;
- ``distributed``: W single-thread ranks under ``torch.distributed`` (gloo, on this machine's cores),
  rank r evaluating its block of the N processes (:mod:`optex.torch.distributed`).

Each setup runs ``warmup`` untimed iterations and then ``iterations`` timed ones; a row per timed
iteration holds the time split of rank 0 (proxy steps, evaluation including the all-gather, update),
the selected loss (bit for bit the same in the loop and distributed setups, to float32 rounding in vmap:
a built-in check that every setup computes the same run) and,
for ``distributed``, the median time of one all-gather of N x d gradients measured apart. The machine's
load average is recorded with every unit: timings on a shared machine are only as quiet as it was.

:func:`cost_model` predicts the distributed time on W ranks from the single-rank split, t(W) =
eval * ceil(N / W) / N + (proxy + update) + all-gather(W): the evaluation shrinks with W, while the
proxy steps and the update, which every rank repeats, do not (Amdahl's serial part).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import pandas as pd

from .. import _validation as check
from ..results import ResultStore, Unit, run_units
from ..verify import Prefix

if TYPE_CHECKING:
    from ..tables import Table

FIGURE_ID = "scaling"
PROFILES = {
    "paper": dict(width=512, depth=5, batch_size=128, iterations=10, warmup=3),
    "quick": dict(width=64, depth=3, batch_size=32, iterations=3, warmup=1),
}
TIMES = ("time_proxy", "time_eval", "time_update")


@dataclass(frozen=True)
class Config:
    """What is timed. ``setups``: entries ``"vmap"``, ``"loop"`` or ``"distributed"``; ``worlds``: the
    rank counts W of the distributed setup; ``threads``: the thread counts of the vmap setup."""

    profile: str = "paper"
    parallelism: int = 4
    setups: tuple[str, ...] = ("vmap", "loop", "distributed")
    worlds: tuple[int, ...] = (1, 2)
    threads: tuple[int, ...] = (1, 2)
    width: int | None = None
    depth: int | None = None
    batch_size: int | None = None
    iterations: int | None = None
    warmup: int | None = None
    lr: float = 1e-3
    seed: int = 0
    device: str = "cpu"
    backend: str = "torch"

    def __post_init__(self) -> None:
        check.fill_from_profile(self, PROFILES)
        check.positive_int("parallelism", self.parallelism)
        check.choices("setups", self.setups, ("vmap", "loop", "distributed"))
        check.positive_ints("worlds", self.worlds)
        check.positive_ints("threads", self.threads)
        for name in ("width", "depth", "batch_size", "iterations"):
            check.positive_int(name, getattr(self, name))
        check.nonnegative_int("warmup", self.warmup)
        check.positive_float("lr", self.lr)
        check.nonnegative_int("seed", self.seed)
        check.choice("device", self.device, ("cpu",))
        check.choice("backend", self.backend, ("torch",))

    def units(self) -> list[tuple[str, int, int]]:
        """(setup, world, threads) of every timed setup, in display order."""
        out = []
        for setup in self.setups:
            if setup == "vmap":
                out += [("vmap", 1, t) for t in self.threads]
            elif setup == "loop":
                out.append(("loop", 1, 1))
            else:
                out += [("distributed", w, 1) for w in self.worlds]
        return out


def _model(config: Config):
    import torch

    from ..models import MLP

    torch.manual_seed(config.seed)
    return MLP(784, config.width, config.depth)


def _batch(config: Config, iteration: int, process: int):
    import torch

    gen = torch.Generator().manual_seed(int(np.random.SeedSequence((config.seed, iteration, process))
                                            .generate_state(1)[0]))
    return (torch.randn(config.batch_size, 1, 28, 28, generator=gen),
            torch.randint(0, 10, (config.batch_size,), generator=gen))


def _time(config: Config, parallel: str, rank: int | None = None, world: int = 1) -> list[dict[str, Any]]:
    """Rows of the timed iterations of one setup (on this rank)."""
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call

    from ..torch import OptEx, distributed

    model = _model(config)
    n = config.parallelism
    mine = None if rank is None else {p for p in range(n) if distributed.owner(p, n, world) == rank}

    def loss_fn(params, batch):
        x, y = batch
        return F.cross_entropy(functional_call(model, params, (x,)), y)

    params = {k: v.detach() for k, v in model.named_parameters()}
    opt = OptEx(params, torch.optim.Adam, parallelism=n, parallel=parallel, lr=config.lr)
    rows = []
    for t in range(config.warmup + config.iterations):
        batches = [_batch(config, t, p) if mine is None or p in mine else None for p in range(n)]
        info = opt.step(loss_fn, batches)
        if t >= config.warmup:
            rows.append({"iteration": t, "loss": info.loss, "dim": opt.dim,
                         **{k: getattr(info, k) for k in TIMES}})
    if parallel == "distributed":
        opt.check_ranks()
        rows = [dict(r, allgather_s=_allgather_seconds(n, opt.dim, world)) for r in rows]
    return rows


def _allgather_seconds(n: int, dim: int, world: int, repeats: int = 5) -> float:
    """Median seconds of one all-gather of the padded N x d float32 gradient block (this rank's view)."""
    import torch
    import torch.distributed as dist

    rows = torch.zeros(math.ceil(n / world), dim)
    out = rows.new_empty((world * rows.shape[0], dim))
    times = []
    for _ in range(repeats):
        dist.barrier()
        start = time.perf_counter()
        dist.all_gather_single(out, rows)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _rank(rank: int, world: int, config: Config) -> list[dict[str, Any]]:
    return _time(config, "distributed", rank, world)


def run_unit(config: Config, setup: str, world: int, threads: int) -> pd.DataFrame:
    """The timed rows of one setup (for ``distributed``, rank 0's; every rank's losses must agree)."""
    import torch

    from ..torch import distributed

    if setup == "distributed":
        ranks = distributed.run_local(_rank, world, config, timeout=600.0)
        losses = {tuple(r["loss"] for r in rows) for rows in ranks}
        if len(losses) != 1:
            raise RuntimeError(f"scaling: the {world} ranks selected different losses: {losses}")
        rows = ranks[0]
    else:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            rows = _time(config, setup)
        finally:
            torch.set_num_threads(before)
    frame = pd.DataFrame(rows)
    frame.insert(0, "setup", setup)
    frame.insert(1, "world", world)
    frame.insert(2, "threads", threads)
    frame["parallelism"] = config.parallelism
    frame["load_average"] = round(os.getloadavg()[0], 2)
    if "allgather_s" not in frame:
        frame["allgather_s"] = 0.0
    return frame


def _name(setup: str, world: int, threads: int) -> str:
    return f"{setup}-w{world}-t{threads}"


def run(config: Config, results_dir: str | Path | None = "results", figure_id: str = FIGURE_ID,
        progress: bool = True, commit: str | None = None, compute: bool = True) -> pd.DataFrame:
    """Every setup as one tidy table (one row per timed iteration), cached per setup."""
    store = None if results_dir is None else ResultStore(results_dir, figure_id, config)
    units = [Unit(_name(*u), lambda u=u: run_unit(config, *u), {"setup": u[0], "world": u[1], "threads": u[2]})
             for u in config.units()]
    frames = run_units(store, units, device=config.device, backend=config.backend, commit=commit, compute=compute,
                       progress=progress, label=figure_id)
    return pd.concat(frames, ignore_index=True)


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per setup: median seconds per iteration, its split, the all-gather and the speed against the
    one-rank distributed run (``speedup``)."""
    columns = [*TIMES, "allgather_s"]
    table = frame.groupby(["setup", "world", "threads"], sort=False)[columns].median().reset_index()
    table["total_s"] = table[list(TIMES)].sum(axis=1)
    one = table[(table.setup == "distributed") & (table.world == 1)]
    if len(one):
        table["speedup"] = float(one["total_s"].iloc[0]) / table["total_s"]
    return table


def cost_model(frame: pd.DataFrame, worlds: tuple[int, ...] | None = None) -> pd.DataFrame:
    """Predicted seconds per iteration on W ranks from the one-rank distributed split and the measured
    all-gather at W (or, where W was not measured, the largest measured one scaled by (W - 1) / W of
    the data), beside the measured time where there is one."""
    table = summary(frame)
    dist = table[table.setup == "distributed"].set_index("world")
    if 1 not in dist.index:
        raise ValueError("cost_model needs the distributed setup at world 1")
    n = int(frame["parallelism"].iloc[0])
    base = dist.loc[1]
    serial = base["time_proxy"] + base["time_update"]
    evaluation = base["time_eval"] - base["allgather_s"]
    measured = {int(w): row for w, row in dist.iterrows()}
    largest = max(measured)
    rows = []
    for w in worlds or tuple(sorted(set(measured) | {1, 2, 4, n})):
        if w in measured:
            comm = float(measured[w]["allgather_s"])
        else:
            ref = float(measured[largest]["allgather_s"]) if largest > 1 else 0.0
            comm = ref * ((w - 1) / w) / max((largest - 1) / largest, 1e-12) if largest > 1 else math.nan
        predicted = evaluation * math.ceil(n / w) / n + serial + comm
        rows.append({"world": w, "evaluation_s": evaluation * math.ceil(n / w) / n, "serial_s": serial,
                     "allgather_s": comm, "predicted_s": predicted,
                     "measured_s": float(measured[w]["total_s"]) if w in measured else math.nan})
    return pd.DataFrame(rows)


def setup_name(setup: str, world: int, threads: int) -> str:
    """A reader's name of a timed setup."""
    if setup == "distributed":
        return f"distributed, W = {world} single-thread ranks"
    return f"{setup}, 1 process, {threads} thread{'s' * (threads > 1)}"


def summary_table(summary: pd.DataFrame) -> "Table":
    """:func:`summary` as the chapter's table (milliseconds, three significant digits)."""
    from .. import tables

    frame = summary.assign(name=[setup_name(*u) for u in zip(summary.setup, summary.world, summary.threads)],
                           **{f"{c}_ms": summary[c] * 1e3 for c in (*TIMES, "allgather_s", "total_s")})
    columns = [tables.label("Setup", "name"),
               tables.Column("Proxy steps (ms)", tables.number("time_proxy_ms")),
               tables.Column("Evaluations (ms)", tables.number("time_eval_ms")),
               tables.Column("All-gather, within evaluations (ms)", tables.number("allgather_s_ms")),
               tables.Column("Update (ms)", tables.number("time_update_ms")),
               tables.Column("Iteration (ms)", tables.number("total_s_ms"))]
    if "speedup" in frame:
        columns.append(tables.Column("Speed vs 1 rank (×)", tables.number("speedup")))
    return tables.Table(frame, columns)


def model_table(model: pd.DataFrame) -> "Table":
    """:func:`cost_model` as the chapter's table (milliseconds)."""
    from .. import tables

    frame = model.assign(**{f"{c}_ms": model[c] * 1e3
                            for c in ("evaluation_s", "serial_s", "allgather_s", "predicted_s", "measured_s")})
    return tables.Table(frame, [
        tables.Column("Ranks W", tables.decimals("world", 0)),
        tables.Column("Evaluations E⌈N/W⌉/N (ms)", tables.number("evaluation_s_ms")),
        tables.Column("Serial S (ms)", tables.number("serial_s_ms")),
        tables.Column("All-gather C(W) (ms)", tables.number("allgather_s_ms")),
        tables.Column("Predicted (ms)", tables.number("predicted_s_ms")),
        tables.Column("Measured (ms)", tables.number("measured_s_ms"))], by=("world",))


def model_reading(model: pd.DataFrame, tolerance: float = 0.2) -> str:
    """One sentence on how the cost model fares at the largest measured W > 1 (within ``tolerance``
    relative, or by how much the measurement misses it, and the likely reason)."""
    measured = model.dropna(subset=["measured_s"])
    measured = measured[measured["world"] > 1]
    if measured.empty:
        return "Only one rank was measured, so the model is not checked here."
    row = measured.iloc[-1]
    w, predicted, actual = int(row["world"]), 1e3 * row["predicted_s"], 1e3 * row["measured_s"]
    text = f"At W = {w} the model predicts {predicted:.0f} ms per iteration and the measurement is {actual:.0f} ms"
    if abs(actual / predicted - 1) <= tolerance:
        return text + f": within {100 * tolerance:.0f}%."
    if actual > predicted:
        return (text + f" ({actual / predicted:.2f}× the prediction). The model assumes each rank has a device "
                "of its own; here the ranks share this machine's cores and memory bandwidth, and the proxy "
                "steps and updates that every rank repeats slow each other down, so spreading the evaluations "
                "does not pay on this CPU.")
    return text + f" ({actual / predicted:.2f}× the prediction): faster than the model allows for."


def verification(config: Config) -> list[Prefix]:
    """What ``book verify`` recomputes: the first timed iteration of every setup; its loss must match
    (the timings are not reproducible by nature and are ignored)."""
    short = replace(config, iterations=1)
    return [Prefix(_name(*u), lambda u=u: run_unit(short, *u),
                   ignore=(*TIMES, "allgather_s", "load_average"))
            for u in config.units()]


def chapter_configs(page: Any, parallelism: int = 4, worlds: Sequence[int] = (1, 2)) -> Callable[[str], list[Config]]:
    """The configs of the scaling chapter by profile, for :meth:`optex.report.Page.results`: one
    :class:`Config` with N and the rank counts W timed, on the ``page``'s device and backend. Both
    profiles are built here, so that a bad value fails before any work starts."""

    def configs(profile: str) -> list[Config]:
        return [Config(profile=profile, parallelism=parallelism, worlds=tuple(worlds), device=page.device,
                       backend=page.backend)]

    for profile in PROFILES:
        configs(profile)
    return configs


__all__ = ["Config", "FIGURE_ID", "PROFILES", "chapter_configs", "cost_model", "model_reading", "model_table", "run",
           "run_unit", "setup_name", "summary", "summary_table", "verification"]
