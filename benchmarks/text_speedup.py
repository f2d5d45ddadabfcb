"""Issue 14 benchmark: effective speedup over Vanilla in training loss of the text chapter (fig4b).

    PYTHONPATH=. python benchmarks/text_speedup.py [--results results]

Reads the committed paper-profile results of the ``fig4b`` chapter (figure id ``text-autoregression``:
the character transformer on tiny Shakespeare, SGD 0.01 and Adam 1e-3, N = 4), every configuration as
its manifest records it (nothing is computed), and prints per panel the effective speedup at T on the
training loss over the fixed evaluation windows (95% t-interval over seeds; ``>``: a lower bound where
the N·T-iteration Vanilla run never gets there on some seed) of OptEx, Target, the better of LargeBatch
at the base and the scaled learning rate, LineSearch and last_gradient, OptEx's paper metric, and the
mean seconds per iteration of Vanilla and OptEx.

Goal stated by the issue, checked on the last lines: OptEx >= 80% of Target's effective speedup and
above the better LargeBatch's.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from optex import plotting, results
from optex.analysis import effective_speedup
from optex.experiments import training

FIGURE_ID = "text-autoregression"
METHODS = ("optex", "target", "large_batch", "linesearch", "last_gradient")


def _cell(row: pd.Series, name: str) -> str:
    bound = ">" if row.get(f"{name}_censored", 0) else ""
    mean, low, high = row[name], row[f"{name}_low"], row[f"{name}_high"]
    return f"{bound}{mean:.2f} [{low:.2f}, {high:.2f}]" if pd.notna(low) else f"{bound}{mean:.2f}"


def load(root: Path) -> pd.DataFrame:
    frames = []
    for manifest in sorted((root / FIGURE_ID).glob("*/manifest.json")):
        config = results.config_from_manifest(results.ResultStore.at(manifest.parent).manifest())
        frames.append(training.run_panel(config, results_dir=root, figure_id=FIGURE_ID, progress=False,
                                         compute=False))
    if not frames:
        raise SystemExit(f"no results under {root / FIGURE_ID}: compute them with `python -m optex book execute "
                         "--profile paper --recompute --only fig4b`")
    return pd.concat(frames, ignore_index=True)


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    table = plotting.training_speedup_table(frame, loss="train_loss", error="val_loss")
    versus = plotting.versus(effective_speedup(frame, "train_loss", interpolate=True, by=["panel"]), "optex",
                             plotting.best_large_batch(table)).set_index("panel")
    summary = plotting.training_summary(table, versus)
    seconds = plotting.iteration_seconds(frame).set_index(["panel", "method"])["seconds"]
    summary["vanilla_s"] = [seconds[(p, "vanilla")] for p in summary["panel"]]
    summary["optex_s"] = [seconds[(p, "optex")] for p in summary["panel"]]
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    args = parser.parse_args()
    summary = summarise(load(args.results))
    rows = [{"panel": row["panel"], **{m: _cell(row, m) for m in METHODS}, "better LargeBatch": row["rival"],
             "OptEx paper metric": f"{row['paper_optex']:.2f}", "OptEx/Target": f"{row['optex_of_target']:.2f}",
             "OptEx/LargeBatch": _cell(row.rename({"ratio": "r", "ratio_low": "r_low", "ratio_high": "r_high"}), "r"),
             "s/it Vanilla": f"{row['vanilla_s']:.3f}", "s/it OptEx": f"{row['optex_s']:.3f}"}
            for _, row in summary.iterrows()]
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(pd.DataFrame(rows).to_string(index=False))
    print()
    for _, row in summary.iterrows():
        print(f"{row['panel']}: OptEx >= 80% of Target: {'met' if row['optex_of_target'] >= 0.8 else 'not met'} "
              f"({100 * row['optex_of_target']:.0f}%); OptEx above the better LargeBatch (mean per-seed ratio > 1): "
              f"{'met' if row['ratio'] > 1 else 'not met'} (ratio {row['ratio']:.2f}, 95% interval "
              f"[{row['ratio_low']:.2f}, {row['ratio_high']:.2f}])")


if __name__ == "__main__":
    main()
