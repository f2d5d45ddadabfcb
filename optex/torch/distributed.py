"""The N evaluations of an OptEx iteration spread over the ranks of a ``torch.distributed`` group.

SPMD: every rank holds the same history, optimizer states and iterate and computes the proxy steps
identically (same code, same inputs, deterministic kernels). Process p of an iteration is evaluated by
rank ``owner(p, N, W) = floor(p * W / N)`` -- contiguous blocks whose sizes differ by at most one (with
N = 5 on 2 ranks: processes 0-2 on rank 0, 3-4 on rank 1; with N < W some ranks only wait). Each rank
evaluates its processes one autograd call at a time, exactly as ``parallel="loop"`` does, and one
all-gather per tensor kind (gradients, losses, each buffer) shares the results, so every rank then
selects, steps and stores the same pairs: a distributed run equals the single-process loop run bit for
bit. What crosses the network per iteration: N x d gradient entries, N losses and the buffers of N
processes (padded to W x ceil(N / W) rows).

A rank that dies or hangs makes the collectives of the others fail after the process group's timeout
(``torch.distributed.init_process_group(timeout=...)``): the error names the rank that raised it and
the iteration. ``check_ranks`` compares an exact checksum of theta (the sum of its bit patterns) across
ranks and fails loudly when they differ.
"""
from __future__ import annotations

import datetime
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

DEFAULT_TIMEOUT = datetime.timedelta(seconds=120)


def owner(process: int, parallelism: int, world: int) -> int:
    """The rank that evaluates process ``process`` of ``parallelism`` on ``world`` ranks."""
    return process * world // parallelism


def world(group: Any = None) -> tuple[int, int]:
    """(rank, world size) of ``group`` (None: the default group), or a ValueError when there is none."""
    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError("parallel='distributed' needs an initialised torch.distributed process group: launch with "
                         "`torchrun --nproc-per-node=K script.py` and call optex.torch.distributed.init() (or "
                         "torch.distributed.init_process_group) before building OptEx")
    return dist.get_rank(group), dist.get_world_size(group)


def init(backend: str | None = None, timeout: datetime.timedelta = DEFAULT_TIMEOUT) -> tuple[int, int]:
    """Join the process group ``torchrun`` describes in the environment (once): gloo on CPU, NCCL when
    CUDA is available, unless ``backend`` says otherwise. Returns (rank, world size)."""
    if not dist.is_initialized():
        missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise ValueError(f"parallel='distributed': {', '.join(missing)} not set; launch the script with torchrun")
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        dist.init_process_group(backend, timeout=timeout)
    return world()


def _failure(error: Exception, what: str, iteration: int, group: Any) -> RuntimeError:
    rank, size = dist.get_rank(group), dist.get_world_size(group)
    return RuntimeError(f"OptEx rank {rank} of {size}: the {what} of iteration {iteration} failed ({error}). Another "
                        "rank has probably died or hung (see its log); the process group's timeout bounds this wait")


def _gather(rows: torch.Tensor, group: Any, what: str, iteration: int) -> torch.Tensor:
    size = dist.get_world_size(group)
    out = rows.new_empty((size * rows.shape[0], *rows.shape[1:]))
    try:
        dist.all_gather_single(out, rows.contiguous(), group=group)
    except (RuntimeError, dist.DistBackendError) as error:
        raise _failure(error, what, iteration, group) from error
    return out


def evaluate(evaluate_rows: Callable[..., tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor] | None]],
             points: torch.Tensor, batches: Sequence[Any] | None, buffers: Mapping[str, torch.Tensor] | None,
             first: int, parallelism: int, group: Any, iteration: int
             ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor] | None]:
    """Losses (n,), gradients (n x d) and updated buffers at the n rows of ``points`` (processes
    ``first .. first + n - 1``), each evaluated by its owner with ``evaluate_rows`` and shared with all.

    Losses travel in float64 (exact for float16/32/64 losses; selection is unchanged)."""
    rank, size = dist.get_rank(group), dist.get_world_size(group)
    n = points.shape[0]
    owners = [owner(first + i, parallelism, size) for i in range(n)]
    mine = [i for i in range(n) if owners[i] == rank]
    width = max(owners.count(r) for r in range(size))
    grads = points.new_zeros((width, points.shape[1]))
    losses = torch.zeros(width, dtype=torch.float64, device=points.device)
    local_buffers = None
    if mine:
        local_batches = None if batches is None else [batches[i] for i in mine]
        loss, grad, local_buffers = evaluate_rows(points[mine], local_batches, buffers, [first + i for i in mine])
        grads[: len(mine)] = grad
        losses[: len(mine)] = loss.to(torch.float64)
    # Row i of the gathered tensors: rank owners[i]'s block, at i's place within that block.
    index = [owners[i] * width + i - owners.index(owners[i]) for i in range(n)]
    gathered = _gather(grads, group, "all-gather of the gradients", iteration)[index]
    gathered_losses = _gather(losses, group, "all-gather of the losses", iteration)[index]
    updated = None
    if buffers is not None:
        updated = {}
        for name, value in buffers.items():
            rows = value.new_zeros((width, *value.shape))
            if local_buffers is not None:
                rows[: len(mine)] = local_buffers[name]
            updated[name] = _gather(rows, group, f"all-gather of buffer {name!r}", iteration)[index]
    return gathered_losses, gathered, updated


def checksum(theta: torch.Tensor) -> torch.Tensor:
    """An exact fingerprint of theta: the wrapping int64 sum of its bit patterns (and its length)."""
    bits = {8: torch.int64, 4: torch.int32, 2: torch.int16}[theta.element_size()]
    total = theta.detach().contiguous().view(bits).to(torch.int64).sum()
    return torch.stack([total, torch.tensor(theta.numel(), device=theta.device)])


def check_ranks(theta: torch.Tensor, group: Any, iteration: int) -> None:
    """Raise RuntimeError if theta differs between ranks (every rank must call this at the same point)."""
    local = checksum(theta)
    every = _gather(local.unsqueeze(0), group, "rank consistency check", iteration)
    differ = [r for r in range(every.shape[0]) if not torch.equal(every[r], every[0])]
    if differ:
        raise RuntimeError(f"OptEx ranks diverged at iteration {iteration}: theta on rank(s) {differ} differs from "
                           "rank 0. Every rank must run the same code on the same inputs (same seeds, same batches "
                           "for the processes it owns, deterministic kernels)")


def _local_rank(rank: int, fn: Callable[..., Any], world_size: int, folder: str, timeout: float,
                args: tuple) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=timeout))
    try:
        result = fn(rank, world_size, *args)
        torch.save(result, Path(folder) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_local(fn: Callable[..., Any], world_size: int, *args: Any, timeout: float = 60.0) -> list[Any]:
    """``fn(rank, world_size, *args)`` on ``world_size`` local CPU processes (gloo, one thread each, a
    process-group timeout of ``timeout`` seconds); their return values (tensors, numbers, dicts and lists
    of them) in rank order. For tests and single-machine measurements; on a cluster use ``torchrun``.
    ``fn`` must be importable (a module-level function). A failing rank raises here."""
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive integer, got {world_size!r}")
    with tempfile.TemporaryDirectory(prefix="optex-dist-") as folder:
        mp.start_processes(_local_rank, args=(fn, world_size, folder, timeout, args), nprocs=world_size,
                           start_method="spawn")
        return [torch.load(Path(folder) / f"rank{r}.pt", weights_only=True) for r in range(world_size)]


__all__ = ["DEFAULT_TIMEOUT", "check_ranks", "checksum", "evaluate", "init", "owner", "run_local", "world"]
