"""Cost of one OptEx proxy step (estimator mean + base-optimizer update) vs d and T0, PyTorch, CPU.

    PYTHONPATH=. python benchmarks/proxy_cost.py [--dims 1e4,1e5,1e6] [--histories 10,20,50,100]

Runs OptEx (N = 5, Adam, float32) on the sphere and reports, once the history is full, the median over
iterations of time_proxy / (N - 1) and of the update phase (the selected process's real step, the N pairs
added to the history, the diagnostics). The model is O(T0 d + T0^2) per estimate and O(N T0 d + T0^3) per
history update.
"""
from __future__ import annotations

import argparse
import statistics

import torch

from optex import problems
from optex.torch import OptEx


def measure(dim: int, history: int, parallelism: int = 5, repeats: int = 8) -> dict[str, float]:
    problem = problems.make("sphere", dim)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(dim, generator=gen) * 2 - 1
    opt = OptEx(x0, parallelism=parallelism, history=history, lr=0.01)
    warmup = max(2, -(-history // parallelism)) + 2  # fill the ring buffer first
    proxy, update = [], []
    for it in range(warmup + repeats):
        info = opt.step(lambda p, b: problem(p, torch))
        if it >= warmup:
            proxy.append(info.time_proxy / (parallelism - 1))
            update.append(info.time_update)
    return {"d": dim, "T0": history, "proxy_step_ms": 1e3 * statistics.median(proxy),
            "update_ms": 1e3 * statistics.median(update)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", default="1e4,1e5,1e6")
    parser.add_argument("--histories", default="10,20,50,100")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dims = [int(float(x)) for x in args.dims.split(",")]
    histories = [int(x) for x in args.histories.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'d':>9} {'T0':>4} {'proxy step (ms)':>16} {'update phase (ms)':>18}")
    for dim in dims:
        for history in histories:
            row = measure(dim, history)
            print(f"{row['d']:>9} {row['T0']:>4} {row['proxy_step_ms']:>16.2f} {row['update_ms']:>18.2f}")


if __name__ == "__main__":
    main()
