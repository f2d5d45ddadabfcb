"""Are the PyTorch backend's trajectories bit for bit those of an earlier commit?

    PYTHONPATH=. python benchmarks/torch_bit_identity.py [--base 7bae44c] [--threads 1,2]

Extracts ``optex/`` at ``--base`` (``git archive``) into a temporary directory, runs the same OptEx
configurations with that code and with the working tree in separate processes (``warmup_pairs=2``
where the current code has the setting and the base does not: the old cold start), and compares
every iterate, loss, gradient norm, selection, proxy cosine / relative error and lengthscale exactly
(``torch.equal`` and float ``==``; NaN equals NaN). The configurations cover every proxy, every
selection rule, clipping, float32 and float64, vmap and loop, minibatches, ring-buffer wrap-around
and d = 1e5 with a full history. Exit code 1 on any difference.
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

CONFIGS = [
    dict(name="kernel-last-adam-f32-vmap", proxy="kernel", select="last", opt="adam", dtype="float32", d=1000,
         n=5, t0=20, fn="rosenbrock", steps=14),
    dict(name="kernel-minloss-sgdm-f64-loop-clip", proxy="kernel", select="min_loss", opt="sgdm", dtype="float64",
         d=50, n=4, t0=10, fn="rosenbrock", steps=14, parallel="loop", clip=5.0, scale=0.1),
    dict(name="kernel-mingrad-nadam-f32-loop", proxy="kernel", select="min_grad_norm", opt="nadam",
         dtype="float32", d=2000, n=3, t0=12, fn="ackley", steps=12, parallel="loop"),
    dict(name="kernel-median-m32-wrap-batches", proxy="kernel", select="last", opt="adam", dtype="float64", d=40,
         n=3, t0=7, fn="batch", steps=14, kernel="matern32", lengthscale="median", noise=1e-2),
    dict(name="kernel-auto-minloss-batches-f32", proxy="kernel", select="min_loss", opt="adam", dtype="float32",
         d=200, n=4, t0=16, fn="batch", steps=12, clip=2.0),
    dict(name="kernel-fixed-rbf-sgd", proxy="kernel", select="last", opt="sgd", dtype="float64", d=30, n=5,
         t0=9, fn="levy", steps=10, kernel="rbf", lengthscale=0.7, scale=0.2),
    dict(name="kernel-d1e5-full-history", proxy="kernel", select="last", opt="adam", dtype="float32", d=100_000,
         n=5, t0=50, fn="sphere", steps=14),
    dict(name="target-last-adam-batches", proxy="target", select="last", opt="adam", dtype="float64", d=60, n=4,
         t0=10, fn="batch", steps=8),
    dict(name="target-minloss-sgdm-f32", proxy="target", select="min_loss", opt="sgdm", dtype="float32", d=300,
         n=3, t0=10, fn="rosenbrock", steps=8, scale=0.1),
    dict(name="linesearch-adam-f32", proxy="linesearch", select="last", opt="adam", dtype="float32", d=500, n=4,
         t0=10, fn="ackley", steps=10),
    dict(name="linesearch-sgdm-batches-clip", proxy="linesearch", select="last", opt="sgdm", dtype="float64",
         d=40, n=3, t0=10, fn="batch", steps=10, clip=1.0),
    dict(name="large-batch-adam", proxy="large_batch", select="last", opt="adam", dtype="float64", d=80, n=4,
         t0=10, fn="batch", steps=8),
    dict(name="vanilla-rmsprop-f32", proxy="none", select="last", opt="rmsprop", dtype="float32", d=400, n=1,
         t0=10, fn="levy", steps=8),
]


def _worker(config: dict, out: str, threads: int) -> None:
    import numpy as np
    import torch

    from optex import problems
    from optex.torch import OptEx

    torch.set_num_threads(threads)
    dtype = getattr(torch, config["dtype"])
    d, n = config["d"], config["n"]
    optimizers = {"adam": (torch.optim.Adam, dict(lr=0.01)), "sgd": (torch.optim.SGD, dict(lr=0.01)),
                  "sgdm": (torch.optim.SGD, dict(lr=0.01, momentum=0.9)), "nadam": (torch.optim.NAdam, dict(lr=0.01)),
                  "rmsprop": (torch.optim.RMSprop, dict(lr=0.001))}
    opt_cls, opt_kwargs = optimizers[config["opt"]]
    x0 = torch.tensor(np.random.default_rng(0).uniform(-1.0, 1.0, d), dtype=dtype)
    scale = config.get("scale", 1.0)
    if config["fn"] == "batch":
        def loss(x, batch):
            w, c = batch
            return 0.5 * (w * (x - c) ** 2).sum() + 0.1 * torch.sin(3.0 * x).sum() + 0.05 * (x**4).sum()

        gen = torch.Generator().manual_seed(1)
        batches = [[(1.0 + torch.rand(d, generator=gen, dtype=dtype), torch.randn(d, generator=gen, dtype=dtype))
                    for _ in range(n)] for _ in range(config["steps"])]
    else:
        problem = problems.make(config["fn"], d)

        def loss(x, batch):
            return scale * problem(x, torch)

        batches = [None] * config["steps"]
    kwargs = dict(parallelism=n, history=config["t0"], select=config["select"], proxy=config["proxy"],
                  parallel=config.get("parallel", "vmap"), max_grad_norm=config.get("clip"),
                  kernel=config.get("kernel", "matern52"), lengthscale=config.get("lengthscale", "auto"),
                  noise=config.get("noise", 1e-3))
    if "warmup_pairs" in inspect.signature(OptEx).parameters:
        kwargs["warmup_pairs"] = 2  # the cold start of earlier versions
    opx = OptEx(x0.clone(), optimizer=opt_cls, **kwargs, **opt_kwargs)
    record = {"theta": [], "info": []}
    for t in range(config["steps"]):
        info = opx.step(loss, batches[t])
        record["theta"].append(opx.theta)
        record["info"].append([info.loss, info.grad_norm, info.selected, info.evaluations, list(info.losses),
                               list(info.proxy_cosine), list(info.proxy_rel_error), info.lengthscale])
    torch.save(record, out)


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="7bae44c")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--only", default="", help="comma-separated configuration names")
    parser.add_argument("--worker", nargs=3, metavar=("CONFIG", "OUT", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(json.loads(args.worker[0]), args.worker[1], int(args.worker[2]))
        return
    import torch

    root = Path(__file__).resolve().parents[1]
    configs = [c for c in CONFIGS if not args.only or c["name"] in args.only.split(",")]
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "-C", str(root), "archive", args.base, "optex"], check=True,
                                 capture_output=True).stdout
        old = Path(tmp, "base")
        old.mkdir()
        with tarfile.open(fileobj=__import__("io").BytesIO(archive)) as tar:
            tar.extractall(old, filter="data")
        for threads in [int(t) for t in args.threads.split(",")]:
            for config in configs:
                runs = []
                for label, path in (("base", old), ("head", root)):
                    out = Path(tmp, f"{label}.pt")
                    env = dict(os.environ, PYTHONPATH=str(path))
                    subprocess.run([sys.executable, __file__, "--worker", json.dumps(config), str(out), str(threads)],
                                   check=True, env=env, cwd=tmp)
                    runs.append(torch.load(out, weights_only=True))
                base, head = runs
                bad = [t for t, (a, b) in enumerate(zip(base["theta"], head["theta"])) if not torch.equal(a, b)]
                bad_info = [t for t, (a, b) in enumerate(zip(base["info"], head["info"])) if not _same(a, b)]
                same = not bad and not bad_info and len(base["theta"]) == len(head["theta"])
                failures += not same
                verdict = "identical" if same else f"DIFFERENT (iterates at t={bad[:3]}, StepInfo at t={bad_info[:3]})"
                picks = sorted({info[2] for info in head["info"]})
                print(f"threads={threads} {config['name']:<36} {len(head['theta']):>3} iterations, selected "
                      f"{picks}: {verdict}", flush=True)
    print(f"{failures} configuration(s) differ from {args.base}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
