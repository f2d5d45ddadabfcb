"""Issue benchmark: sequential iterations to reach Vanilla's final gap at N = 5 (d = 1e4, 60 iterations).

    PYTHONPATH=. python benchmarks/synthetic_speedup.py [--dim 10000] [--seeds 5] [--out results/_bench]

Adam lr 0.01 with default OptEx settings on the four functions, plus SGD at a stable learning rate
per function (stated in the table). ``speedup`` divides the iterations Vanilla itself first needed to
reach its final gap; ``speedup_vs_budget`` divides its whole budget (60). The ceiling of OptEx with
``select="last"`` is 60 / 14 = 4.29x vs the budget: its first two iterations are Vanilla steps
(the history needs 2 pairs), then each iteration advances N = 5 steps at best.
"""
from __future__ import annotations

import argparse

import pandas as pd

from optex.analysis import speedup_table
from optex.experiments import synthetic

SGD_LR = {"sphere": 0.01, "ackley": 30.0, "rosenbrock": 2e-4, "levy": 0.1}
FUNCTIONS = ("sphere", "ackley", "rosenbrock", "levy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--out", default="results/_bench")
    args = parser.parse_args()
    tables = []
    for optimizer in ("adam", "sgd"):
        for function in FUNCTIONS:
            lr = 0.01 if optimizer == "adam" else SGD_LR[function]
            config = synthetic.Config(function=function, dim=args.dim, iterations=args.iterations, seeds=args.seeds,
                                      optimizer=optimizer, lr=lr, methods=("vanilla", "linesearch", "target", "optex"))
            table = speedup_table(synthetic.run(config, results_dir=args.out))
            table.insert(1, "optimizer", f"{optimizer} lr={lr:g}")
            tables.append(table)
    pd.set_option("display.width", 200)
    print(pd.concat(tables, ignore_index=True).round(2).to_string(index=False))


if __name__ == "__main__":
    main()
