"""Wall time of one OptEx sequential iteration, PyTorch vs JAX backend, on CPU.

    PYTHONPATH=. python benchmarks/backends.py [--dims 1e4,1e6] [--repeats 9] [--threads 2]

Runs OptEx (N = 5, T0 = 50, Adam lr 0.01, float32, lengthscale "auto") on the sphere from theta_0 ~
U(-1, 1)^d. After warm-up (the JAX compilation, and enough iterations to fill the T0 ring buffer) it
reports the median and the minimum wall time of ``repeats`` iterations (the minimum is the robust
figure on a shared machine): for torch ``StepInfo.time_total``, for JAX the whole compiled iteration
(``time_eval``, dispatch and ``block_until_ready`` included).
"""
from __future__ import annotations

import argparse
import os
import statistics
from typing import Callable

import numpy as np

from optex import problems


def _iteration_times(make: Callable, loss_fn: Callable, warmup: int, repeats: int) -> list[float]:
    opt = make()
    times = []
    for it in range(warmup + repeats):
        info = opt.step(loss_fn)
        if it >= warmup:
            times.append(info.time_total)
    return times


def measure(dim: int, parallelism: int = 5, history: int = 50, repeats: int = 9) -> dict[str, float]:
    import jax.numpy as jnp
    import optax
    import torch

    import optex.jax
    import optex.torch

    problem = problems.make("sphere", dim)
    x0 = np.random.default_rng(0).uniform(-1.0, 1.0, dim).astype(np.float32)
    warmup = -(-history // parallelism) + 3  # 2 cold-start iterations, then fill the ring buffer
    settings = dict(parallelism=parallelism, history=history)

    def torch_loss(p, batch):
        return problem(p, torch)

    def jax_loss(p, batch):
        return problem(p, jnp)

    torch_times = _iteration_times(
        lambda: optex.torch.OptEx(torch.from_numpy(x0.copy()), torch.optim.Adam, lr=0.01, **settings),
        torch_loss, warmup, repeats)
    jax_times = _iteration_times(
        lambda: optex.jax.OptEx(jnp.asarray(x0), optimizer=optax.adam(0.01), **settings), jax_loss, warmup, repeats)
    return {"d": dim, "torch_ms": 1e3 * statistics.median(torch_times), "torch_min_ms": 1e3 * min(torch_times),
            "jax_ms": 1e3 * statistics.median(jax_times), "jax_min_ms": 1e3 * min(jax_times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", default="1e4,1e6")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="torch intra-op threads (XLA uses its own pool over all cores)")
    args = parser.parse_args()
    import jax
    import torch

    torch.set_num_threads(args.threads)
    dims = [int(float(x)) for x in args.dims.split(",")]
    print(f"torch {torch.__version__}, jax {jax.__version__} on {jax.devices()[0].platform}, "
          f"{args.threads} torch threads; N = 5, T0 = 50, float32, sphere; ms per iteration over {args.repeats}")
    print(f"{'d':>9} {'torch median':>13} {'torch min':>10} {'jax median':>11} {'jax min':>8} {'min ratio':>10}")
    for dim in dims:
        r = measure(dim, repeats=args.repeats)
        print(f"{r['d']:>9} {r['torch_ms']:>13.1f} {r['torch_min_ms']:>10.1f} {r['jax_ms']:>11.1f} "
              f"{r['jax_min_ms']:>8.1f} {r['torch_min_ms'] / r['jax_min_ms']:>10.2f}")
    print("GPU: not run (no GPU in this environment)")


if __name__ == "__main__":
    main()
