"""Issue 13 benchmark: effective speedup over Vanilla in training loss of the image-classification chapters.

    PYTHONPATH=. python benchmarks/training_speedup.py [--results results] [--figures image-classification,cifar10]

Reads the committed paper-profile results of the ``mnist`` (figure id ``image-classification``: the
5-layer MLP on MNIST and Fashion-MNIST) and ``fig4a`` (``cifar10``: the CIFAR-10 CNN) chapters, every
configuration as its manifest records it (nothing is computed), and prints per panel the effective
speedup at T on the training loss over the fixed evaluation set (95% t-interval over seeds; ``>``: a
lower bound where the N·T-iteration Vanilla run never gets there on some seed) of OptEx, Target, the
better of LargeBatch at the base and the scaled learning rate, LineSearch and last_gradient, and the
paper's metric beside OptEx's.

Goal stated by the issue, checked on the last lines: OptEx >= 80% of Target's effective speedup and
>= 2x the better LargeBatch's.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from optex import plotting, results
from optex.analysis import effective_speedup
from optex.experiments import training

METHODS = ("optex", "target", "large_batch", "linesearch", "last_gradient")


def _cell(row: pd.Series, name: str) -> str:
    bound = ">" if row.get(f"{name}_censored", 0) else ""
    mean, low, high = row[name], row[f"{name}_low"], row[f"{name}_high"]
    return f"{bound}{mean:.2f} [{low:.2f}, {high:.2f}]" if pd.notna(low) else f"{bound}{mean:.2f}"


def load(root: Path, figure_id: str) -> pd.DataFrame:
    frames = []
    for folder in sorted((root / figure_id).glob("*/manifest.json")):
        config = results.config_from_manifest(results.ResultStore.at(folder.parent).manifest())
        frames.append(training.run_panel(config, results_dir=root, figure_id=figure_id, progress=False, compute=False))
    if not frames:
        raise SystemExit(f"no results under {root / figure_id}: compute them with `python -m optex book execute "
                         "--profile paper --recompute --only mnist --only fig4a`")
    return pd.concat(frames, ignore_index=True)


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    table = plotting.training_speedup_table(frame)
    versus = plotting.versus(effective_speedup(frame, "train_loss", interpolate=True, by=["panel"]), "optex",
                             plotting.best_large_batch(table)).set_index("panel")
    return plotting.training_summary(table, versus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--figures", default="image-classification,cifar10")
    args = parser.parse_args()
    rows = []
    for figure_id in args.figures.split(","):
        summary = summarise(load(args.results, figure_id))
        for _, row in summary.iterrows():
            rows.append({"panel": row["panel"], **{m: _cell(row, m) for m in METHODS},
                         "better LargeBatch": row["rival"], "OptEx paper metric": f"{row['paper_optex']:.2f}",
                         "OptEx/Target": f"{row['optex_of_target']:.2f}", "OptEx/LargeBatch": _cell(
                             row.rename({"ratio": "r", "ratio_low": "r_low", "ratio_high": "r_high"}), "r"),
                         "_of_target": row["optex_of_target"], "_ratio": row["ratio"]})
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(table.drop(columns=["_of_target", "_ratio"]).to_string(index=False))
    print()
    for _, row in table.iterrows():
        print(f"{row['panel']}: OptEx >= 80% of Target: {'met' if row['_of_target'] >= 0.8 else 'not met'} "
              f"({100 * row['_of_target']:.0f}%); OptEx >= 2x the better LargeBatch: "
              f"{'met' if row['_ratio'] >= 2 else 'not met'} ({row['_ratio']:.2f}x)")


if __name__ == "__main__":
    main()
