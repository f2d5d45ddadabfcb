"""Time of one sequential iteration of each training method, and its split, for the book's networks on this CPU.

    PYTHONPATH=. python benchmarks/training_step.py [--cases mlp128,mlp512,cnn,transformer] [--repeats 8]
        [--threads 2] [--parallelism 4] [--parallel vmap|loop] [--attention]

Cases: the 5-layer MLP at width 512 (d = 1,195,018) on MNIST with batches of 128 and 512, the CIFAR-10
CNN at width 16 (d = 117,866) with batches of 128, the CPU-sized character transformer (d = 809,856)
with batches of 12 windows of 64. Each method runs through ``optex.experiments.training.make_optex`` on
the runner's own minibatches (SGD lr 0.01, N = 4, T0 = 50, Matérn-5/2, lengthscale "auto"). After
enough iterations to fill the history (cost grows with it; at least 5, since first calls pay one-off costs), it reports the median over ``repeats``
iterations of ``StepInfo``'s proxy / evaluation / update times and their sum, in milliseconds, plus the
minimum total (the robust figure on a shared machine). ``large_batch_scaled`` costs what ``large_batch``
costs and ``vanilla_long`` what ``vanilla`` costs per iteration.

``--attention`` also times the transformer's gradient at N points three ways: ``vmap`` over the
masked-matmul attention the model uses, ``vmap`` over ``F.scaled_dot_product_attention`` (no batching
rule on CPU: torch loops over the points) and a Python loop of N autograd calls.
"""
from __future__ import annotations

import argparse
import inspect
import statistics
import time
import warnings

import torch

CASES = {
    "mlp128": dict(dataset="mnist", model="mlp", width=512, depth=5, batch_size=128),
    "mlp512": dict(dataset="mnist", model="mlp", width=512, depth=5, batch_size=512),
    "cnn": dict(dataset="cifar10", model="cnn", width=16, batch_size=128),
    "transformer": dict(dataset="shakespeare", model="transformer", batch_size=12),
}
METHODS = ("vanilla", "linesearch", "target", "optex", "large_batch", "last_gradient")


def time_method(case: dict, method: str, parallelism: int, repeats: int, parallel: str = "vmap") -> dict[str, float] | None:
    import optex.torch
    from optex.experiments import training

    if method == "last_gradient" and "warmup_pairs" not in inspect.signature(optex.torch.OptEx).parameters:
        return None  # the backend predates proxy="last_gradient"
    config = training.Config(**case, parallelism=parallelism, eval_size=10, seeds=1, parallel=parallel,
                             warmup_pairs=1 if method == "last_gradient" else 2)
    unit = training._TorchUnit(config, method, 0)
    task = training.task_for(config)
    n = training.METHODS[method].processes(parallelism)
    warmup = max(5, config.history // parallelism + 2 if method == "optex" else 0)  # first calls pay one-off costs
    splits = []
    for t in range(1, warmup + repeats + 1):
        info = unit.opt.step(unit.loss_fn, [task.batch(0, training.minibatch_index(t, p, n)) for p in range(n)])
        if t > warmup:
            splits.append((info.time_proxy, info.time_eval, info.time_update))
    proxy, evaluation, update = (1e3 * statistics.median(column) for column in zip(*splits))
    return dict(proxy=proxy, eval=evaluation, update=update, total=proxy + evaluation + update,
                min_total=1e3 * min(sum(s) for s in splits), d=unit.opt.dim)


def time_attention(parallelism: int, repeats: int) -> dict[str, float]:
    """ms per gradient at N points of the CPU transformer: vmap (masked matmuls), vmap (fused kernel), loop."""
    import torch.nn.functional as F
    from torch.func import functional_call, grad, vmap

    from optex import models
    from optex.models import transformer

    model = models.build("transformer", 0, vocab_size=65, **models.TRANSFORMER_SIZES["cpu"])
    params = {k: v.detach() for k, v in model.named_parameters()}
    points = {k: v.expand(parallelism, *v.shape).clone() for k, v in params.items()}
    tokens = torch.randint(0, 65, (parallelism, 12, 65), generator=torch.Generator().manual_seed(0))

    def loss(p, batch):
        logits = functional_call(model, p, (batch[:, :-1],))
        return F.cross_entropy(logits.reshape(-1, 65), batch[:, 1:].reshape(-1))

    def fused_forward(self, x):
        b, t, c = x.shape
        q, k, v = (z.reshape(b, t, self.heads, c // self.heads).transpose(1, 2) for z in self.qkv(x).split(c, dim=-1))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))

    def timed(fn) -> float:
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return 1e3 * min(times)

    out = {"vmap, masked matmuls": timed(lambda: vmap(grad(loss))(points, tokens)),
           "loop of N calls": timed(lambda: [grad(loss)(params, tokens[i]) for i in range(parallelism)])}
    original = transformer.CausalSelfAttention.forward
    transformer.CausalSelfAttention.forward = fused_forward
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "There is a performance drop ...": the point of this line
            out["vmap, scaled_dot_product_attention"] = timed(lambda: vmap(grad(loss))(points, tokens))
    finally:
        transformer.CausalSelfAttention.forward = original
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--parallelism", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parallel", default="vmap", choices=("vmap", "loop"), help="how the N gradients are evaluated")
    parser.add_argument("--attention", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, N = {args.parallelism}, parallel={args.parallel}; "
          "ms per sequential iteration "
          "(median of proxy / eval / update, their sum, and the minimum sum)")
    print(f"{'case':<12}{'d':>10} {'method':<14}{'proxy':>8}{'eval':>8}{'update':>8}{'total':>8}{'min':>8}")
    for name in args.cases.split(","):
        for method in args.methods.split(","):
            row = time_method(CASES[name], method, args.parallelism, args.repeats, args.parallel)
            if row is None:
                print(f"{name:<12}{'':>10} {method:<14}  (not in this backend)")
                continue
            print(f"{name:<12}{row['d']:>10,} {method:<14}{row['proxy']:>8.1f}{row['eval']:>8.1f}{row['update']:>8.1f}"
                  f"{row['total']:>8.1f}{row['min_total']:>8.1f}", flush=True)
    if args.attention:
        print(f"\nCPU transformer, gradient at N = {args.parallelism} points, batch 12 x 64 (ms, minimum of {args.repeats}):")
        for label, ms in time_attention(args.parallelism, args.repeats).items():
            print(f"  {label:<36}{ms:>8.1f}")


if __name__ == "__main__":
    main()
