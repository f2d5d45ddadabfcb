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
shown_iteration = 8  # the iteration t drawn in the static figure (OptEx's first iteration is a cold start)
animate = True  # also show an animation of every iteration

# %% tags=["hide-input"]
from IPython.display import Markdown, display

from optex import method_chapters, report
from optex.experiments import fig1

page = report.Page(profile=profile, device=device, backend=backend, seeds=seeds, recompute=recompute, commit=commit)
configs = fig1.chapter_configs(page, functions, parallelism, lr, shown_iteration, animate)

# %% tags=["remove-input"]
results = page.results(fig1.FIGURE_ID, fig1.run, configs)
chapter = method_chapters.Fig1Chapter(results, configs(results.profile), shown_iteration, animate)
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
report.glue_all(chapter.iteration_figure())

# %% [markdown]
# ```{glue:figure} fig1
# :name: fig1
#
# Iteration $t$ = {glue:text}`fig1-iteration` of Vanilla, Target, LineSearch and OptEx (Adam,
# $N$ = {glue:text}`fig1-n`)
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
report.glue_all(chapter.drift_table())

# %% [markdown]
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
display(*chapter.animation())
