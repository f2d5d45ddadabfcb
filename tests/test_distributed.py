"""parallel="distributed" (torch.distributed, gloo on CPU) against the single-process runs.

Every case runs the same iterations on W local ranks (optex.torch.distributed.run_local) and in this
process with parallel="loop": the trajectories, losses and buffers must agree bit for bit in float64;
the vmap run agrees to the tolerance of the vmap-vs-loop test. Each rank is handed only the batches of
the processes it owns (the others are None), so a rank that read another's batch would fail.
"""
import dataclasses
import math
import time

import pandas as pd
import pytest
import torch
from torch.func import functional_call

from optex import problems
from optex.torch import OptEx, distributed

pytestmark = pytest.mark.usefixtures("one_torch_thread")
F64 = torch.float64
ITERATIONS = 20
DIM = 40
ROSENBROCK = problems.make("rosenbrock", DIM)


def rosenbrock(x, batch=None):
    return ROSENBROCK(x, torch)


def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.BatchNorm1d(8), torch.nn.Tanh(),
                               torch.nn.Linear(8, 1)).to(F64)


MLP = _mlp()


def mlp_loss(params, buffers, batch):
    x, y = batch
    return torch.nn.functional.mse_loss(functional_call(MLP, (params, buffers), (x,)), y)


def mlp_batch(iteration, process):
    gen = torch.Generator().manual_seed(1000 * iteration + process)
    x = torch.randn(16, 3, generator=gen, dtype=F64)
    return x, torch.sin(x.sum(1, keepdim=True))


def run(case, parallel, rank=None, world=None, check_every=50):
    """(thetas (T+1 x d), losses (T x N), buffers) of ``case`` with ``parallel``."""
    kind, proxy, n = case
    mine = None if rank is None else {p for p in range(n) if distributed.owner(p, n, world) == rank}
    if kind == "rosenbrock":
        x = torch.full((DIM,), -1.0, dtype=F64)
        x[::2] = 1.5
        opt = OptEx(x, torch.optim.Adam, parallelism=n, proxy=proxy, parallel=parallel, history=10,
                    check_every=check_every, lr=0.05)
        step = lambda t: opt.step(rosenbrock)  # noqa: E731
        buffers = {}
    else:
        model = _mlp()
        params, buffers = dict(model.named_parameters()), dict(model.named_buffers())
        opt = OptEx({k: v.detach() for k, v in params.items()}, torch.optim.SGD, parallelism=n, proxy=proxy,
                    parallel=parallel, buffers=buffers, history=10, check_every=check_every, lr=0.1)
        step = lambda t: opt.step(mlp_loss, [mlp_batch(t, p) if mine is None or p in mine else None  # noqa: E731
                                             for p in range(n)])
    thetas, losses = [opt.theta.clone()], []
    for t in range(ITERATIONS):
        info = step(t)
        thetas.append(opt.theta.clone())
        losses.append(torch.tensor(info.losses + (math.nan,) * (n - len(info.losses)), dtype=F64))
    if parallel == "distributed":
        opt.check_ranks()
    return {"thetas": torch.stack(thetas), "losses": torch.stack(losses),
            "buffers": {k: v.clone() for k, v in buffers.items()}}


def diverge(rank):
    """An edit on rank 1 only at t = 2: the check at iteration 3 must catch it (on every rank)."""
    x = torch.ones(6, dtype=F64)
    opt = OptEx(x, torch.optim.SGD, parallelism=2, parallel="distributed", check_every=3, lr=0.1)
    try:
        for t in range(6):
            if rank == 1 and t == 2:
                x.add_(1e-12)
            opt.step(lambda p, _: (p ** 2).sum())
    except RuntimeError as error:
        return str(error)
    return "no error"


def die(rank):
    """Rank 1 stops without a word before iteration 3; rank 0 must fail, not hang. Runs last."""
    x = torch.ones(6, dtype=F64)
    opt = OptEx(x, torch.optim.SGD, parallelism=2, parallel="distributed", lr=0.1)
    start = time.perf_counter()
    try:
        for t in range(6):
            if rank == 1 and t == 3:
                return "stopped"
            opt.step(lambda p, _: (p ** 2).sum())
    except RuntimeError as error:
        return f"{time.perf_counter() - start:.1f} s: {error}"
    return "no error"


def each_case(rank, world, cases, failures):
    """The cases on this rank, then (with ``failures``) the divergence and the dead-rank scenarios."""
    out = [run(case, "distributed", rank, world) for case in cases]
    return out + ([diverge(rank), die(rank)] if failures else [])


CASES = {2: [("rosenbrock", "kernel", 4), ("rosenbrock", "kernel", 5), ("rosenbrock", "target", 4),
             ("mlp", "kernel", 4)],
         4: [("rosenbrock", "kernel", 4), ("mlp", "kernel", 4), ("mlp", "target", 4), ("mlp", "large_batch", 3)]}
TIMEOUT_S = 10.0


@pytest.mark.parametrize("world", sorted(CASES))
def test_distributed_equals_the_single_process_loop_bit_for_bit(world):
    failures = world == 2
    ranks = distributed.run_local(each_case, world, CASES[world], failures, timeout=TIMEOUT_S)
    for index, case in enumerate(CASES[world]):
        loop = run(case, "loop")
        for rank, results in enumerate(ranks):
            got = results[index]
            assert torch.equal(got["thetas"], loop["thetas"]), (case, rank)
            assert torch.equal(got["losses"].nan_to_num(-1), loop["losses"].nan_to_num(-1)), (case, rank)
            for name, value in loop["buffers"].items():
                assert torch.equal(got["buffers"][name], value), (case, rank, name)
        vmap = run(case, "vmap")
        torch.testing.assert_close(ranks[0][index]["thetas"], vmap["thetas"], rtol=1e-9, atol=1e-11)
    if failures:
        # Diverged ranks fail loudly, on every rank, at the first check after the edit.
        for rank in range(world):
            assert "ranks diverged at iteration 3: theta on rank(s) [1] differs from rank 0" in ranks[rank][-2]
        # A rank that dies makes the survivor fail with its rank and iteration named, within the timeout.
        assert ranks[1][-1] == "stopped"
        seconds, _, message = ranks[0][-1].partition(" s: ")
        assert "OptEx rank 0 of 2: the all-gather of the gradients of iteration 3 failed" in message
        assert float(seconds) < TIMEOUT_S + 5


def test_processes_are_spread_in_contiguous_blocks():
    assert [distributed.owner(p, 5, 2) for p in range(5)] == [0, 0, 0, 1, 1]
    assert [distributed.owner(p, 4, 4) for p in range(4)] == [0, 1, 2, 3]
    assert [distributed.owner(p, 2, 4) for p in range(2)] == [0, 2]
    for n in range(1, 9):
        for w in range(1, 6):
            sizes = [sum(distributed.owner(p, n, w) == r for p in range(n)) for r in range(w)]
            assert sum(sizes) == n and max(sizes) - min(sizes) <= 1


def test_distributed_needs_a_process_group():
    with pytest.raises(ValueError, match="initialised torch.distributed process group"):
        OptEx(torch.ones(3), torch.optim.SGD, parallelism=2, parallel="distributed", lr=0.1)
    with pytest.raises(ValueError, match="group is only used with parallel='distributed'"):
        OptEx(torch.ones(3), torch.optim.SGD, parallelism=2, group=object(), lr=0.1)


def runners(rank, world, configs, folder):
    from optex.experiments import synthetic, training

    modules = {"training": training, "synthetic": synthetic}
    return {name: modules[name].run(config, results_dir=f"{folder}/{name}", progress=False).to_dict("list")
            for name, config in configs.items()}  # plain lists travel back


def test_the_runners_run_distributed_and_only_rank_0_writes(tmp_path):
    from optex.experiments import synthetic, training

    configs = {"training": training.Config(dataset="mnist", width=16, depth=2, batch_size=8, iterations=4,
                                           eval_every=2, eval_size=32, train_subset=256, methods=("optex",), seeds=1,
                                           parallel="distributed", dtype="float64"),
               "synthetic": synthetic.Config(dim=30, iterations=6, seeds=1, methods=("optex", "target"),
                                             parallel="distributed", dtype="float64")}
    ranks = distributed.run_local(runners, 2, configs, str(tmp_path / "dist"))
    for name, config in configs.items():
        module = {"training": training, "synthetic": synthetic}[name]
        loop = module.run(dataclasses.replace(config, parallel="loop"), results_dir=str(tmp_path / "loop" / name),
                          progress=False)
        columns = [c for c in loop.columns if not c.startswith("time_") and c != "wall_time"]
        for tables in ranks:
            pd.testing.assert_frame_equal(pd.DataFrame(tables[name])[columns], loop[columns], check_dtype=False)
        written = sorted(p.name for p in (tmp_path / "dist" / name).rglob("*.csv"))
        expected = sorted(p.name for p in (tmp_path / "loop" / name).rglob("*.csv"))
        assert written == expected  # one file per unit: rank 1 wrote nothing
