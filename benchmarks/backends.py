"""Wall time of one OptEx sequential iteration, PyTorch vs JAX backend, on CPU, with the same thread count.

    PYTHONPATH=. python benchmarks/backends.py [--dims 1e3,1e5,1e6] [--threads 1] [--rounds 3] [--repeats 10]
                                               [--torch-base 7bae44c]

OptEx with N = 5, T0 = 50, Adam lr 0.01, float32, lengthscale "auto", on the sphere from theta_0 ~
U(-1, 1)^d. Every measurement is a fresh process: torch gets ``torch.set_num_threads(threads)``, XLA gets
``--xla_cpu_multi_thread_eigen`` and ``intra_op_parallelism_threads=threads`` before JAX is imported.
After a warm-up that compiles (JAX) and fills the T0 ring buffer, ``repeats`` calls of ``step()`` are
timed wall-clock (``perf_counter`` around the call: dispatch, synchronisation and the StepInfo read-back
included) and their median is that run's figure. Rounds alternate the backends (torch, JAX, torch, ...)
so that a drifting machine load hits both; the table gives the median over rounds with the min-max
range, and the torch/JAX ratio taken round by round; "best" is the fastest single step of all rounds (the
figure least disturbed by other load on a shared machine) and its ratio. ``--torch-base`` adds the torch backend of an
earlier commit (extracted with ``git archive``) as a third column. The torch split (proxy / evaluation
/ update) is StepInfo's; the JAX backend of that code reports one compiled call only.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

N, T0, LR = 5, 50, 0.01


def _worker(backend: str, dim: int, repeats: int, threads: int) -> dict[str, float]:
    import numpy as np

    from optex import problems

    problem = problems.make("sphere", dim)
    x0 = np.random.default_rng(0).uniform(-1.0, 1.0, dim).astype(np.float32)
    warmup = -(-T0 // N) + 3  # the cold start, then enough iterations to fill the ring buffer
    if backend == "jax":
        import jax.numpy as jnp
        import optax

        import optex.jax

        opt = optex.jax.OptEx(jnp.asarray(x0), optimizer=optax.adam(LR), parallelism=N, history=T0)

        def loss(p, batch):
            return problem(p, jnp)
    else:
        import torch

        import optex.torch

        torch.set_num_threads(threads)
        opt = optex.torch.OptEx(torch.from_numpy(x0.copy()), torch.optim.Adam, parallelism=N, history=T0, lr=LR)

        def loss(p, batch):
            return problem(p, torch)

    walls, split = [], []
    for it in range(warmup + repeats):
        start = time.perf_counter()
        info = opt.step(loss)
        wall = time.perf_counter() - start
        if it >= warmup:
            walls.append(wall)
            split.append((info.time_proxy, info.time_eval, info.time_update))
    med = statistics.median
    return {"wall": 1e3 * med(walls), "best": 1e3 * min(walls), "proxy": 1e3 * med(s[0] for s in split),
            "eval": 1e3 * med(s[1] for s in split), "update": 1e3 * med(s[2] for s in split)}


def _run(backend: str, dim: int, repeats: int, threads: int, path: Path) -> dict[str, float]:
    flags = f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} intra_op_parallelism_threads={threads}"
    env = dict(os.environ, PYTHONPATH=str(path), XLA_FLAGS=flags, OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, __file__, "--worker", "jax" if backend == "jax" else "torch", str(dim),
                          str(repeats), str(threads)], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):8.1f} [{min(values):.1f}-{max(values):.1f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", default="1e3,1e5,1e6")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--torch-base", default=None, help="also time the torch backend of this commit")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        backend, dim, repeats, threads = args.worker
        print(json.dumps(_worker(backend, int(dim), int(repeats), int(threads))))
        return
    root = Path(__file__).resolve().parents[1]
    dims = [int(float(x)) for x in args.dims.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        backends = {"torch": root, "jax": root}
        if args.torch_base:
            archive = subprocess.run(["git", "-C", str(root), "archive", args.torch_base, "optex"], check=True,
                                     capture_output=True).stdout
            with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
                tar.extractall(tmp, filter="data")
            backends["torch@" + args.torch_base] = Path(tmp)
        results: dict = {(b, d): [] for b in backends for d in dims}
        for _ in range(args.rounds):
            for dim in dims:
                for backend, path in backends.items():
                    results[backend, dim].append(_run(backend, dim, args.repeats, args.threads, path))
    load = os.getloadavg()[0]
    print(f"OptEx N = {N}, T0 = {T0}, Adam, float32, sphere; {args.threads} thread(s) for torch and XLA; "
          f"ms per step(), median over {args.rounds} alternating rounds of {args.repeats} timed steps "
          f"[min-max over rounds]; load average at the end {load:.1f} on {os.cpu_count()} cores")
    header = (f"{'d':>9} {'backend':<16} {'step ms':>22} {'proxy':>7} {'eval':>7} {'update':>7} {'torch/jax':>20} "
              f"{'best ms':>8} {'best ratio':>10}")
    print(header)
    for dim in dims:
        jax = [r["wall"] for r in results["jax", dim]]
        jax_best = min(r["best"] for r in results["jax", dim])
        for backend in backends:
            runs = results[backend, dim]
            walls = [r["wall"] for r in runs]
            ratio = ""
            if backend != "jax":
                ratio = _spread([w / j for w, j in zip(walls, jax)]).replace("    ", "", 1)
                split = [f"{statistics.median(r[k] for r in runs):7.1f}" for k in ("proxy", "eval", "update")]
            else:
                split = [f"{'-':>7}"] * 3
            best = min(r["best"] for r in runs)
            best_ratio = "" if backend == "jax" else f"{best / jax_best:.2f}"
            print(f"{dim:>9} {backend:<16} {_spread(walls):>22} {' '.join(split)} {ratio:>20} {best:>8.1f} "
                  f"{best_ratio:>10}")


if __name__ == "__main__":
    main()
