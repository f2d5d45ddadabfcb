# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# (chapter-fig6)=
# # Ablations on Rosenbrock (Fig. 6) and an exact parallel competitor
#
# The NeurIPS version of {cite}`shu2024optex` ablates OptEx on Rosenbrock in an appendix figure with four
# panels. Their exact settings are not legible in the text available to us, so the values below are our
# choices; everything else is the Rosenbrock panel of {numref}`fig2` ($d = 10^5$, Adam with learning rate
# 0.01, gradient clipping at 100, $N = 5$, $T_0 = 50$, five seeds).
#
# (a) **Parallel vs sequential.** The same OptEx run, but with its $N$ gradient evaluations made one after
# another, each counted as a sequential iteration. This is what the parallel hardware buys: without it,
# OptEx spends $N$ iterations where Vanilla spends one.
# (b) **Selection rule** for $\theta_t$: the last process (the theory's choice), the lowest loss, or the
# smallest gradient norm among the $N$ points where the true gradient was evaluated.
# (c) **History size** $T_0$. (d) **Parallelism** $N$ ($N = 1$ is Vanilla).
#
# The chapter ends with a method the paper does not compare against: Picard iteration, which
# parallelizes the same base optimizer *exactly*.

# %% tags=["parameters"]
profile = "paper"  # "paper": committed paper-scale results; "quick": a small run recomputed on CPU
device = "cpu"  # where missing results are computed: "cpu", "cuda", "mps" or "auto"
backend = "torch"  # "torch" or "jax" (the Picard section always uses torch)
seeds = None  # None: the profile's (paper 5, quick 2); or a count, or a list of seeds
recompute = False  # compute missing paper-scale results instead of showing quick ones
commit = None  # git commit recorded with new results where .git is absent
selects = ["last", "min_loss", "min_grad_norm"]
histories = [5, 10, 20, 50, 100]  # T0
parallelisms = [1, 2, 3, 5, 8, 10]  # N
picard_tol = 1e-6  # relative change below which a Picard iterate is accepted

# %% tags=["hide-input"]
import dataclasses

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display
from myst_nb import glue

from optex import plotting, report
from optex.analysis import speedup_table
from optex.experiments import fig6, synthetic

SEEDS = {"paper": dict(seeds=5), "quick": dict(seeds=2)}
page = report.Page(profile=profile, device=device, backend=backend, seeds=seeds, recompute=recompute, commit=commit)


def figure(scale):
    return fig6.Config(profile=scale, selects=tuple(selects), histories=tuple(histories),
                       parallelisms=tuple(parallelisms), device=device, backend=backend, **page.scale(scale, SEEDS))


for scale in report.PROFILES:  # a bad knob fails here, before any work starts
    figure(scale)

# %% tags=["remove-input"]
results = page.results("fig6", fig6.run, lambda scale: [figure(scale)])
display(Markdown(report.provenance_note(results)))
frame = results.frame

# %% [markdown]
# ## The four ablations
#
# Each panel of {numref}`fig6` shows the geometric mean over seeds of the optimality gap and its 95%
# band, against sequential iterations.

# %% tags=["hide-input"]
TITLES = {"parallel": "(a) parallel vs sequential", "select": r"(b) selection of $\theta_t$",
          "history": "(c) history size $T_0$", "parallelism": "(d) parallelism $N$"}
fig, axes = plt.subplots(2, 2, figsize=(10, 7), layout="constrained")
for ax, panel in zip(axes.flat, fig6.PANELS):
    sub = frame[frame["panel"] == panel]
    order = list(dict.fromkeys(sub["setting"]))
    curves = plotting.band(sub, by=("setting",))
    colors = plt.cm.viridis([i / max(len(order) - 1, 1) for i in range(len(order))])
    for color, setting in zip(colors, order):
        c = curves[curves["setting"] == setting]
        ax.plot(c["iteration"], c["center"], color=color, label=setting)
        ax.fill_between(c["iteration"], c["low"], c["high"], color=color, alpha=0.2, linewidth=0)
    ax.set_yscale("log")
    ax.set_title(TITLES[panel])
    ax.set_xlabel("sequential iteration $t$")
    ax.set_ylabel(r"gap $F(\theta_t) - F^\star$")
    ax.legend(fontsize=8, frameon=False)
report.publish(fig, results)
glue("fig6", fig, display=False)
plt.close(fig)

# %% [markdown]
# ```{glue:figure} fig6
# :name: fig6
#
# Ablations of OptEx on Rosenbrock: (a) the $N$ evaluations in parallel or one after another; (b) the rule
# that picks $\theta_t$ among the $N$ processes; (c) the history size $T_0$; (d) the parallelism $N$.
# Lines: geometric mean over seeds; bands: 95% t-intervals. Data: `fig6.csv`.
# ```

# %% tags=["remove-input"]
T = int(frame["iteration"].max())


def geometric_mean(gaps):
    return float(10 ** np.log10(gaps).mean())


# Each curve's last point (the sequential curve stops at the last multiple of N within T).
last_rows = frame.sort_values("iteration").groupby(["panel", "setting", "seed"]).tail(1)
final = last_rows.groupby(["panel", "setting"])["gap"].apply(geometric_mean).rename("final gap")
final_table = final.reset_index()
glue("fig6-final", final_table.style.format({"final gap": "{:.3g}"}).hide(axis="index"), display=False)
panel_d = frame[frame["panel"] == "parallelism"]
reach = speedup_table(panel_d.assign(method=panel_d["setting"].where(panel_d["setting"] != "N=1", "vanilla"))
                      .drop(columns="panel"))
reach = reach[reach["method"] != "vanilla"].assign(N=lambda r: r["method"].str.removeprefix("N=").astype(int))
glue("fig6-speedup-n", reach[["N", "speedup", "speedup_low", "speedup_high"]].round(2).style.hide(axis="index"),
     display=False)
best_select = final.loc["select"].idxmin()
glue("fig6-best-select", best_select, display=False)
panel_a = frame[frame["panel"] == "parallel"]
sequential = panel_a[panel_a["setting"].str.startswith("sequential")]
t_seq = int(sequential["iteration"].max())
at_t = panel_a[panel_a["iteration"] == t_seq]
ratio = (geometric_mean(at_t[at_t["setting"].str.startswith("sequential")]["gap"])
         / geometric_mean(at_t[at_t["setting"] == "vanilla"]["gap"]))
glue("fig6-sequential-t", t_seq, display=False)
glue("fig6-sequential-vs-vanilla", ratio, display=False)

# %% [markdown]
# ```{glue:figure} fig6-final
# :name: fig6-final
#
# Optimality gap after the last iteration (geometric mean over seeds), per panel and setting.
# ```
#
# ```{glue:figure} fig6-speedup-n
# :name: fig6-speedup-n
#
# Panel (d) as speedups: iterations Vanilla ($N = 1$) needs to reach its final gap, divided by those OptEx
# needs with $N$ processes (mean and 95% interval over seeds).
# ```
#
# Reading the panels: run sequentially, OptEx has after {glue:text}`fig6-sequential-t` sequential
# iterations {glue:text}`fig6-sequential-vs-vanilla:.2f` times the gap Vanilla has after as many. Without
# parallel evaluations OptEx is at best Vanilla, so the gain in panel (a) comes from the parallel hardware. Among the selection rules, {glue:text}`fig6-best-select` ends
# lowest. The speedup grows with $N$ as {numref}`fig6-speedup-n` shows; the theory chapter fits its rate.
#
# ## An exact competitor: Picard iteration
#
# OptEx approximates the next $N$ iterates of the base optimizer. They can also be computed *exactly* in
# parallel: the iterates $\theta_{k+1}, \dots, \theta_{k+N}$ solve a fixed-point system, and Picard
# iteration over a sliding window solves it with $N$ gradient evaluations per round, as ParaDiGMS
# {cite}`shih2023paradigms` does for diffusion sampling. Each round evaluates the window's gradients in one
# batched call, replays the $N$ optimizer updates from the window's exact start, accepts the iterates that
# stopped changing (relative change below `picard_tol`) and slides on; the first iterate is always exact,
# so a round never does worse than Vanilla and at best matches Target. Its output is the base optimizer's
# own trajectory, so we also report its distance to that trajectory.

# %% tags=["remove-input"]
def picard_config(scale):
    base = fig6.Config(profile=scale, selects=("last",), histories=(50,), parallelisms=(5,), device=device,
                       backend="torch", **page.scale(scale, SEEDS)).base()
    return dataclasses.replace(base, methods=("vanilla", "target", "optex", "picard"), picard_tol=picard_tol)


picard = page.results("fig6-picard", synthetic.run, lambda scale: [picard_config(scale)])
display(Markdown(report.provenance_note(picard)))
pframe = picard.frame
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
plotting.band_plot(left, pframe, methods=("vanilla", "target", "optex", "picard"))
left.set_xlabel("sequential round $t$ ($N$ parallel evaluations each)")
left.set_ylabel(r"gap $F(\theta_t) - F^\star$")
left.legend(fontsize=8, frameon=False)
steps = pframe[pframe["method"].isin(["picard", "optex", "target"])]
for method, group in steps.groupby("method"):
    mean = group.groupby("iteration")["steps"].mean()
    right.plot(mean.index, mean.to_numpy(), label=plotting.method_label(method),
               color=plotting.METHOD_STYLE.get(method, {}).get("color"))
right.plot([0, T], [0, T], color=plotting.METHOD_STYLE["vanilla"]["color"], label="Vanilla")
right.set_xlabel("sequential round $t$")
right.set_ylabel("base-optimizer steps reached")
right.legend(fontsize=8, frameon=False)
report.publish(fig, picard)
glue("fig6-picard", fig, display=False)
plt.close(fig)
last = pframe[pframe["iteration"] == pframe["iteration"].max()]
glue("fig6-picard-steps", float(last[last["method"] == "picard"]["steps"].mean()), display=False)
glue("fig6-picard-rounds", int(last["iteration"].max()), display=False)
glue("fig6-picard-error", float(pframe["trajectory_error"].max()), display=False)
glue("fig6-picard-vs-vanilla", float(last[last["method"] == "picard"]["steps"].mean() / last["iteration"].max()),
     display=False)

# %% [markdown]
# ```{glue:figure} fig6-picard
# :name: fig6-picard
#
# Left: optimality gap per sequential round for Vanilla, Target, OptEx and Picard iteration ($N = 5$).
# Right: how many steps of the base optimizer each has advanced (OptEx and Target: $N$ per round after
# start-up; Picard: the accepted ones).
# ```
#
# In {glue:text}`fig6-picard-rounds` rounds Picard iteration advanced {glue:text}`fig6-picard-steps:.1f`
# exact Adam steps on average, {glue:text}`fig6-picard-vs-vanilla:.2f` per round, staying within a
# relative distance of {glue:text}`fig6-picard-error:.1e` of the sequential trajectory. Adam's update is
# close to the sign of its momentum, which changes abruptly when a gradient coordinate changes sign, so
# the fixed-point iteration converges slowly; OptEx gives up exactness and advances $N$ steps per round
# with an approximate gradient. Where the exact trajectory matters (reproducing a training run bit for
# bit), Picard iteration is the parallel method to use; where only the objective matters, OptEx goes
# further per round.
