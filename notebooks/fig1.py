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
# (chapter-fig1)=
# # One iteration of OptEx (Fig. 1)
#
# A first-order optimizer is a chain: the step at iteration $t$ needs the gradient at $\theta_{t-1}$,
# which exists only once iteration $t-1$ is done. This page opens one link of that chain in OptEx
# {cite}`shu2024optex` and in the three baselines it is compared with, on two functions of the plane
# where every point can be drawn.
#
# ## The iteration, step by step
#
# Write $\mathrm{OPT}(\theta, g)$ for one update of the base optimizer from $\theta$ along the gradient
# (or gradient estimate) $g$: $\theta - \eta g$ for plain SGD; Adam {cite}`kingma2015adam` also updates
# its moment estimates, which travel with $\theta$. One *sequential* iteration of OptEx has three phases.
#
# 1. **Proxy steps.** From $\theta^{(0)}_{t-1} = \theta_{t-1}$, take $N-1$ updates with the
#    surrogate's mean $\mu_{t-1}$ (the subject of {ref}`chapter-estimator`) where the gradient would go:
#
#    $$
#    \theta^{(s)}_{t-1} = \mathrm{OPT}\big(\theta^{(s-1)}_{t-1},\, \mu_{t-1}(\theta^{(s-1)}_{t-1})\big),
#    \qquad s = 1, \dots, N-1 .
#    $$ (eq-fig1-proxy)
#
#    No gradient is evaluated here, so these steps cost little.
# 2. **Parallel true steps.** The gradient is evaluated at all $N$ proxy points at once, and each
#    point takes one ordinary update with its own gradient:
#
#    $$
#    \theta^{(s)}_{t} = \mathrm{OPT}\big(\theta^{(s-1)}_{t-1},\, \nabla f(\theta^{(s-1)}_{t-1}, \xi_s)\big),
#    \qquad s = 1, \dots, N .
#    $$ (eq-fig1-parallel)
#
#    The $N$ evaluated pairs $(\theta^{(s-1)}_{t-1}, \nabla f)$ join the history behind $\mu$.
# 3. **Selection.** One of the $N$ results continues: the last one, $\theta_t = \theta^{(N)}_t$, which is
#    the choice the theory analyses (the library also offers the lowest loss).
#
# If $\mu_{t-1}$ were the true gradient, the proxy points would be exactly the next $N-1$ iterates of the
# base optimizer and $\theta^{(N)}_t$ the point $N$ ordinary iterations reach: $N$ iterations for the
# wall-clock price of one. That ideal, which needs the true gradient and so cannot run in parallel, is
# the baseline **Target**. **Vanilla** is the base optimizer alone ($N = 1$), and **LineSearch** places
# its $N$ points along the last true gradient with step sizes $0, \eta, \dots, (N-1)\eta$ and keeps the
# one with the lowest loss.
#
# The drawings below come from the library's own `OptEx` (PyTorch), observed from outside: the runner
# records the points each iteration evaluated and the points its processes reached, and beside them the
# path of $N$ plain optimizer steps from $\theta_{t-1}$ with the optimizer state held there, which is
# what the proxy steps try to anticipate.

# %% tags=["parameters"]
profile = "paper"  # "paper": committed results; "quick": a shorter trace recomputed on CPU
device = "cpu"  # where missing results are computed: "cpu", "cuda", "mps" or "auto"
backend = "torch"  # the trace always uses the PyTorch implementation (it reads its processes)
seeds = None  # unused: the traces are deterministic, from fixed starting points
recompute = False  # compute missing paper-scale results instead of showing quick ones
commit = None  # git commit recorded with new results where .git is absent
functions = ["rosenbrock", "ackley"]
parallelism = 5  # N
lr = 0.15  # Adam's learning rate
shown_iteration = 8  # the iteration t drawn in the static figure (OptEx's first two iterations are cold starts)
animate = True  # also show an animation of every iteration

# %% tags=["hide-input"]
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import HTML, Markdown, display
from matplotlib.animation import FuncAnimation
from myst_nb import glue

from optex import plotting, problems, report
from optex.experiments import fig1

FIGURE_ID = "fig1"
METHODS = fig1.METHODS

page = report.Page(profile=profile, device=device, backend=backend, seeds=seeds, recompute=recompute, commit=commit)
if not isinstance(functions, (list, tuple)) or not functions:
    raise ValueError(f"functions must be a non-empty list of function names, got {functions!r}")
if not isinstance(animate, bool):
    raise ValueError(f"animate must be True or False, got {animate!r}")


def configs(scale):
    return [fig1.Config(profile=scale, functions=tuple(functions), parallelism=parallelism, lr=lr, device=device)]


for scale in report.PROFILES:
    configs(scale)

# %% tags=["remove-input"]
results = page.results(FIGURE_ID, fig1.run, configs)
trace = results.frame
last = int(trace["iteration"].max())
if isinstance(shown_iteration, bool) or not isinstance(shown_iteration, int) or not 3 <= shown_iteration <= last:
    raise ValueError(f"shown_iteration must be an integer from 3 to {last} (the trace's length), "
                     f"got {shown_iteration!r}")
display(Markdown(report.provenance_note(results)))

# %% [markdown]
# ## Iteration $t$ of each method
#
# In {numref}`fig1` each row is a function and each column a method, all at the same iteration $t$.
# The window is zoomed on that iteration; the thin grey line is the path of the method's own iterates
# up to $\theta_{t-1}$. The black dashed path is the exact continuation: $N$ plain optimizer steps from
# $\theta_{t-1}$. Coloured circles are the points whose gradient the iteration evaluated (for OptEx,
# the proxy points of {eq}`eq-fig1-proxy`), arrows the true step each of them takes
# ({eq}`eq-fig1-parallel`), and the star the point that continues.

# %% tags=["hide-input"]
def window(points, pad=0.35):
    low, high = points.min(0), points.max(0)
    span = np.maximum(high - low, 1e-3)
    centre, half = (low + high) / 2, (1 + pad) * span.max() / 2
    return centre - half, centre + half


def contour(ax, function, low, high):
    problem = problems.make(function, 2)
    xs, ys = np.meshgrid(np.linspace(low[0], high[0], 160), np.linspace(low[1], high[1], 160))
    values = problem(torch.tensor(np.stack([xs, ys], -1)), torch).numpy()
    ax.contour(xs, ys, np.log1p(values - problem.minimum), levels=18, cmap="Greys", linewidths=0.6, alpha=0.8)


def draw(ax, function, method, t):
    rows = trace[(trace["function"] == function) & (trace["method"] == method)]
    now = rows[rows["iteration"] == t]
    kinds = {kind: now[now["kind"] == kind].sort_values("process") for kind in fig1.KINDS}
    path = rows[(rows["kind"] == "iterate") & (rows["iteration"] < t)].sort_values("iteration")
    low, high = window(pd.concat([kinds["exact"], kinds["proxy"], kinds["step"]])[["x", "y"]].to_numpy())
    contour(ax, function, low, high)
    colour = plotting.METHOD_STYLE[method]["color"]
    ax.plot(path["x"], path["y"], color="0.55", lw=0.9, marker=".", ms=3)
    ax.plot(kinds["exact"]["x"], kinds["exact"]["y"], "k--", lw=1.1, marker="o", ms=3, mfc="white")
    ax.plot(kinds["proxy"]["x"], kinds["proxy"]["y"], color=colour, lw=1.0, marker="o", ms=6)
    for (_, start), (_, end) in zip(kinds["proxy"].iterrows(), kinds["step"].iterrows()):
        ax.annotate("", xy=(end["x"], end["y"]), xytext=(start["x"], start["y"]),
                    arrowprops=dict(arrowstyle="->", color=colour, lw=1.0))
    chosen = kinds["step"][kinds["step"]["selected"]]
    ax.plot(chosen["x"], chosen["y"], marker="*", ms=15, color=colour, mec="black", mew=0.7, ls="none")
    ax.set_xlim(low[0], high[0])
    ax.set_ylim(low[1], high[1])
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


fig, axes = plt.subplots(len(functions), len(METHODS), figsize=(2.6 * len(METHODS), 2.7 * len(functions)),
                         squeeze=False, layout="constrained")
for row, function in zip(axes, functions):
    for ax, method in zip(row, METHODS):
        draw(ax, function, method, shown_iteration)
        ax.set_title(f"{plotting.method_label(method)}, {function}", fontsize=10)
legend = [plt.Line2D([], [], color="0.55", marker=".", label=r"iterates up to $\theta_{t-1}$"),
          plt.Line2D([], [], color="k", ls="--", marker="o", mfc="white", label=f"{parallelism} exact steps"),
          plt.Line2D([], [], color="0.3", marker="o", label="evaluated points"),
          plt.Line2D([], [], color="0.3", marker=r"$\rightarrow$", ls="none", ms=12, label="true step"),
          plt.Line2D([], [], color="0.3", marker="*", ms=12, ls="none", label=r"$\theta_t$ (kept)")]
fig.legend(handles=legend, loc="outside lower center", ncols=len(legend), frameon=False)
report.publish(fig, results, data=trace[trace["iteration"] == shown_iteration])
glue(FIGURE_ID, fig, display=False)
plt.close(fig)
glue("fig1-iteration", shown_iteration, display=False)

# %% [markdown]
# ```{glue:figure} fig1
# :name: fig1
#
# Iteration $t$ = {glue:text}`fig1-iteration` of Vanilla, Target, LineSearch and OptEx (Adam, $N$ = 5)
# on the 2-D Rosenbrock and Ackley functions, zoomed on that iteration. Dashed: $N$ exact optimizer
# steps from $\theta_{t-1}$; circles: the points whose gradients the iteration evaluated; arrows: the
# true step from each; star: $\theta_t$. Contours of $\log(1 + F - F^\star)$.
# ```
#
# ## How far the proxy points drift
#
# The figure shows one iteration; the trace holds all of them. A simple summary of how well the proxy
# steps anticipate the exact path is the distance between the last evaluated point
# $\theta^{(N-1)}_{t-1}$ and the exact iterate it stands for, $N-1$ plain steps after $\theta_{t-1}$,
# divided by the length of that exact stretch. It is zero for Target by construction.

# %% tags=["remove-input"]
def drift(frame):
    rows = []
    for (function, method, t), now in frame[frame["iteration"] >= 3].groupby(["function", "method", "iteration"]):
        proxy = now[now["kind"] == "proxy"].sort_values("process")[["x", "y"]].to_numpy()
        exact = now[now["kind"] == "exact"].sort_values("process")[["x", "y"]].to_numpy()
        if len(proxy) < 2:
            continue
        k = len(proxy) - 1
        stretch = np.linalg.norm(exact[k] - exact[0])
        rows.append(dict(function=function, method=method, iteration=t,
                         drift=np.linalg.norm(proxy[k] - exact[k]) / max(stretch, 1e-12)))
    return pd.DataFrame(rows)


drifts = drift(trace)
summary = drifts.groupby(["function", "method"])["drift"].median().unstack()
final = trace[(trace["kind"] == "iterate") & (trace["iteration"] == last)].pivot(
    index="function", columns="method", values="gap")
table = pd.DataFrame({
    "function": list(functions) * 3,
    "method": [plotting.method_label(m) for m in ("target", "linesearch", "optex") for _ in functions],
    "median relative drift": [f"{summary.loc[f, m]:.3f}" for m in ("target", "linesearch", "optex") for f in functions],
    f"gap after {last} iterations": [f"{final.loc[f, m]:.3g}" for m in ("target", "linesearch", "optex")
                                     for f in functions],
})
glue("fig1-drift-table", table.style.hide(axis="index"), display=False)
for function in functions:
    glue(f"fig1-{function}-optex-drift", float(summary.loc[function, "optex"]), display=False)
    glue(f"fig1-{function}-linesearch-drift", float(summary.loc[function, "linesearch"]), display=False)
    for method in METHODS:
        glue(f"fig1-{function}-{method}-gap", float(final.loc[function, method]), display=False)
glue("fig1-iterations", last, display=False)

# %% [markdown]
# ```{glue:figure} fig1-drift-table
# :name: fig1-drift-table
# :figwidth: 100%
#
# Median over iterations $t \ge 3$ of $\lVert \theta^{(N-1)}_{t-1} - \theta^{\mathrm{exact}}_{N-1} \rVert$
# divided by the length of the exact stretch, and the optimality gap after the whole trace.
# ```
#
# ## What the pictures say
#
# - **Target** evaluates exactly the points the base optimizer would visit: its circles sit on the dashed
#   path and each arrow ends on the next circle. It is the yardstick, not a method: its $N$ gradients
#   are computed one after another.
# - **LineSearch** puts its points on a straight ray along the previous gradient. Where the landscape
#   bends (Rosenbrock's curved valley) the ray leaves the exact path at once; its median drift is
#   {glue:text}`fig1-rosenbrock-linesearch-drift:.2f` of the exact stretch there.
# - **OptEx** bends its proxy path with the surrogate, so on Rosenbrock its points follow the exact path
#   much more closely (median drift {glue:text}`fig1-rosenbrock-optex-drift:.2f`). The error grows with
#   $s$: every proxy step starts from a point that is already slightly off, which is why the paper keeps
#   $N$ moderate and why the last process is the least reliable one.
# - On **Ackley** the surrogate, fitted to a few dozen nearby gradients, smooths out the small ripples.
#   Its proxy steps then follow the broad bowl rather than the local well, so OptEx (and LineSearch,
#   which also takes long steps) can leave a local minimum where Adam and Target settle: after
#   {glue:text}`fig1-iterations` iterations the gap is {glue:text}`fig1-ackley-optex-gap:.3g` for OptEx
#   against {glue:text}`fig1-ackley-target-gap:.3g` for Target. This is a property of this landscape and
#   this start, not the mechanism the theory describes; on a smooth function OptEx's best case is Target.
#
# The same computation in many dimensions is the subject of {ref}`synthetic`; how good $\mu_{t-1}$ is,
# and what it costs, is the subject of {ref}`chapter-estimator`.

# %% tags=["remove-input"]
if animate:
    function = functions[0]
    frames = list(range(3, last + 1))
    # Small JPEG frames keep the page light: the frames are embedded in it.
    anim_fig, anim_axes = plt.subplots(1, 2, figsize=(6.4, 3.3), dpi=72, layout="constrained")

    def update(t):
        for ax, method in zip(anim_axes, ("target", "optex")):
            ax.clear()
            draw(ax, function, method, t)
            ax.set_title(f"{plotting.method_label(method)}, {function}, t = {t}", fontsize=10)

    animation = FuncAnimation(anim_fig, update, frames=frames, interval=700)
    display(Markdown(f"**Every iteration from $t = 3$ on**, Target and OptEx on {function} (use the controls "
                     "to step through):"))
    with plt.rc_context({"animation.frame_format": "jpeg"}):
        display(HTML(animation.to_jshtml(fps=1.5, default_mode="once")))
    plt.close(anim_fig)
