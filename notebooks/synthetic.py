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
# (synthetic)=
# # Synthetic functions (Sec. 6.1)
#
# The first experiment of {cite}`shu2024optex` asks the simplest question one can ask of OptEx: on a
# smooth, deterministic objective, how many *sequential* iterations does it save? Each method below
# starts from the same random point $\theta_0 \sim \mathcal{U}(-1, 1)^d$, runs Adam
# {cite}`kingma2015adam` with learning rate 0.01, and is scored by its optimality gap
#
# $$
# \Delta_t = F(\theta_t) - \inf_\theta F(\theta)
# $$ (eq-gap)
#
# after $t$ sequential iterations. One sequential iteration of OptEx, Target and LineSearch spends
# $N$ gradient evaluations that could run side by side ($N$ is the `parallelism` parameter below);
# Vanilla spends one. The four methods are
#
# - **Vanilla**: Adam alone.
# - **OptEx**: $N-1$ cheap proxy steps driven by the kernel estimate $\mu_{t-1}(\theta)$ of the gradient,
#   then the true gradient at all $N$ visited points at once, keeping the last process (Algorithm 1).
# - **Target**: the same schedule with the true gradient in place of $\mu_{t-1}$, i.e. $N$ plain Adam
#   steps per iteration. It is the ideal OptEx could reach with a perfect estimator, not a practical method.
# - **LineSearch**: process $j$ steps $j$ times further along the last true gradient, and the lowest loss wins.
#
# :::{admonition} Runs with or without a GPU
# :class: tip
# The paper profile reads the committed results of this page, so building it takes seconds on any
# machine. To recompute them, pass `--recompute` (and `--device cuda` where a GPU is available); the
# quick profile recomputes a smaller version on a CPU in about a minute:
# `python -m optex book execute --only synthetic --profile quick`.
# :::

# %% tags=["parameters"]
profile = "paper"  # "paper": committed paper-scale results; "quick": a small run recomputed on CPU
device = "cpu"  # where missing results are computed: "cpu", "cuda", "mps" or "auto"
backend = "torch"  # "torch" or "jax"
seeds = None  # None: the profile's (paper 5, quick 3); or a count, or a list of seeds
recompute = False  # compute missing paper-scale results (minutes on a CPU) instead of showing quick ones
commit = None  # git commit recorded with new results where .git is absent
functions = ["sphere", "ackley", "rosenbrock", "levy"]
dim = None  # d; None: the profile's (paper 10_000, quick 1_000)
iterations = None  # T sequential iterations; None: the profile's (paper 60, quick 20)
parallelism = 5  # N
lr = 0.01  # Adam's learning rate
rosenbrock_clip = 100.0  # gradient-norm clip on Rosenbrock only, as in the official example

# %% tags=["hide-input"]
from IPython.display import Markdown, display

from optex import chapters, report
from optex.experiments import synthetic

page = report.Page(profile=profile, device=device, backend=backend, seeds=seeds, recompute=recompute, commit=commit)
configs = synthetic.chapter_configs(page, functions, parallelism, lr, rosenbrock_clip, dim=dim, iterations=iterations)

# %% tags=["remove-input"]
results = page.results(synthetic.CHAPTER_ID, synthetic.run, configs)
display(Markdown(report.provenance_note(results)))
chapter = chapters.SyntheticChapter(results, functions, parallelism)
report.glue_all(chapter.settings())

# %% [markdown]
# ## Optimality gap per sequential iteration
#
# {numref}`synthetic-demo` shows $\Delta_t$ from {eq}`eq-gap` on a log scale. Each line is the geometric
# mean over seeds and the shaded band its 95% Student-t interval (computed on $\log_{10}\Delta_t$, so it
# is multiplicative); with deterministic objectives the seeds differ only in $\theta_0$, so the bands
# are narrow.

# %% tags=["hide-input"]
report.glue_all(chapter.curves())

# %% [markdown]
# ```{glue:figure} synthetic-demo
# :name: synthetic-demo
#
# Optimality gap of Vanilla, LineSearch, Target and OptEx (Adam, $N$ = {glue:text}`synthetic-n`) against
# the number of sequential iterations, on the synthetic functions. Lines: geometric mean over seeds;
# bands: 95% t-intervals. The data behind the figure is the file
# {download}`synthetic-demo.csv <figures/synthetic-demo.csv>`.
# ```
#
# ## Iterations saved
#
# The paper reads its figure as a speedup: how many fewer sequential iterations a method needs to reach
# the optimality gap that Vanilla has at the end of its run. {numref}`synthetic-demo-speedups` gives it
# for each function and method, with a 95% interval over seeds. A seed on which a method never reaches
# that gap is *censored*: it is left out of the mean and counted in the last column.

# %% tags=["remove-input"]
report.glue_all(chapter.speedup_tables())

# %% [markdown]
# ## Reading the result
#
# In this run ({glue:text}`synthetic-demo-profile` profile), OptEx's speedup over Vanilla in sequential
# iterations is {glue:text}`synthetic-demo-optex-range`. The paper reports at least a factor of
# two with $N = 5$, and its theory predicts a gain of order $\sqrt{N}$, here
# $\sqrt{N} \approx$ {glue:text}`synthetic-sqrt-n:.1f` with $N$ = {glue:text}`synthetic-n`. Target, which is
# handed the true gradient at every proxy step, is at least {glue:text}`synthetic-demo-target-min:.1f`
# times faster than Vanilla; it bounds what any gradient estimator could achieve here, and the distance
# between Target and OptEx is the price of estimating rather than evaluating the gradient. The
# {doc}`/book/report` turns these numbers into verdicts.
