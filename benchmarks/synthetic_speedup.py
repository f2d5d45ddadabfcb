"""Issue 11 benchmark: the paper's speedup metric and the effective (uncapped) speedup at N = 5.

    PYTHONPATH=. python benchmarks/synthetic_speedup.py [--dim 10000] [--iterations 60] [--seeds 5]
        [--out results/_bench] [--csv speedups.csv]

Vanilla, LineSearch, last_gradient, Target and OptEx (default OptEx settings, ``warmup_pairs=1``) on
the four synthetic functions, with Adam (lr 0.01) and with SGD at a stable learning rate per function
(stated in the table), d = 1e4, T = 60, 5 seeds. Per method and function it prints

- the paper's metric: iterations Vanilla itself needed to reach its final gap at T, divided by the
  method's (``paper``, 95% t-interval over seeds; ``censored`` seeds never reach it);
- the effective speedup at t = T and t = T/2: Vanilla iterations (from the long reference run, up to
  4NT) to reach the method's best gap at t, divided by t (``eff@T``, ``eff@T/2``; ``>`` marks a lower
  bound where the reference never gets there on some seed);
- ``plateau``: Vanilla's gap is flat over its last quarter (both metrics are ill-conditioned there).

Goal stated by the issue: OptEx's effective speedup >= 90% of Target's on Sphere, Rosenbrock and Levy,
and above last_gradient's and LineSearch's on every function; the last lines say whether it is met.
"""
from __future__ import annotations

import argparse

import pandas as pd

from optex.analysis import effective_speedup_table, speedup_table
from optex.experiments import synthetic

SGD_LR = {"sphere": 0.01, "ackley": 30.0, "rosenbrock": 2e-4, "levy": 0.1}
FUNCTIONS = ("sphere", "ackley", "rosenbrock", "levy")
METHODS = ("vanilla", "linesearch", "last_gradient", "target", "optex")


def _interval(mean: float, low: float, high: float, censored: int = 0) -> str:
    bound = ">" if censored else ""
    return f"{bound}{mean:.2f} [{low:.2f}, {high:.2f}]" if pd.notna(low) else f"{bound}{mean:.2f}"


def measure(optimizer: str, function: str, args: argparse.Namespace) -> pd.DataFrame:
    lr = 0.01 if optimizer == "adam" else SGD_LR[function]
    config = synthetic.Config(function=function, dim=args.dim, iterations=args.iterations, seeds=args.seeds,
                              optimizer=optimizer, lr=lr, parallelism=5, methods=METHODS)
    frame = synthetic.run(config, results_dir=args.out, progress=not args.no_progress)
    paper = speedup_table(frame).set_index("method")
    half = args.iterations // 2
    effective = effective_speedup_table(frame, at=(args.iterations, half)).set_index(["method", "iteration"])
    rows = []
    for method in METHODS:
        at_t, at_half = effective.loc[(method, args.iterations)], effective.loc[(method, half)]
        row = paper.loc[method]
        rows.append(dict(optimizer=f"{optimizer} lr={lr:g}", function=function, method=method,
                         paper=_interval(row.speedup, row.speedup_low, row.speedup_high),
                         censored=int(row.censored),
                         **{"eff@T": _interval(at_t.effective_speedup, at_t.effective_low, at_t.effective_high,
                                               at_t.censored),
                            "eff@T/2": _interval(at_half.effective_speedup, at_half.effective_low,
                                                 at_half.effective_high, at_half.censored)},
                         plateau=bool(row.plateau), effective=float(at_t.effective_speedup)))
    return pd.DataFrame(rows)


def goals(table: pd.DataFrame) -> list[str]:
    """The issue's goal, checked per optimizer and function on the effective speedup at T."""
    lines = []
    for (optimizer, function), group in table.groupby(["optimizer", "function"], sort=False):
        value = group.set_index("method")["effective"]
        ratio = value["optex"] / value["target"]
        beats = value["optex"] > max(value["last_gradient"], value["linesearch"])
        need = function != "ackley"
        lines.append(f"{optimizer:14s} {function:10s} OptEx/Target = {ratio:.2f}"
                     f"{' (goal >= 0.90: ' + ('met' if ratio >= 0.9 else 'NOT met') + ')' if need else ''}; "
                     f"above last_gradient and LineSearch: {'yes' if beats else 'NO'}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--out", default="results/_bench")
    parser.add_argument("--csv", default=None, help="also write the table here")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    table = pd.concat([measure(optimizer, function, args) for optimizer in ("adam", "sgd") for function in FUNCTIONS],
                      ignore_index=True)
    if args.csv:
        table.to_csv(args.csv, index=False)
    pd.set_option("display.width", 200)
    print(table.drop(columns="effective").to_string(index=False))
    print("\n".join(["", *goals(table)]))


if __name__ == "__main__":
    main()
