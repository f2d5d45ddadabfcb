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
# (chapter-cor2)=
# # Acceleration against the parallelism $N$ (Cor. 2, Thm. 2)
#
# One sequential iteration of OptEx evaluates $N$ gradients side by side (see {ref}`chapter-fig1`). How many
# sequential iterations does that save? Sec. 5 of {cite}`shu2024optex` answers for SGD as the base
# optimizer: the number of sequential iterations needed to converge falls by a factor of order
# $\sqrt{N}$ (Cor. 2), provided $N$ stays below a threshold set by the learning rate (Thm. 2). This page
# measures the factor for $N$ up to 16, and the threshold.
#
# ## What the theory says, and what it does not
#
# Thm. 2 is an upper bound on how long SGD-based OptEx (keeping the last process, $\theta_t = \theta^{(N)}_t$)
# takes to make the gradient small; Thm. 3 is a lower bound of the same order built on a noisy quadratic,
# a worst case; together they give the rate $\Theta(\sqrt{N})$ of Cor. 2. Two readings follow.
#
# - The rate is a **guarantee over a class of problems**, not a prediction for each problem. On an easy
#   problem the measured gain can grow faster than $\sqrt{N}$ without contradicting it. The ceiling is set
#   by **Target**, whose $N$ proxy steps use true gradients: on a deterministic problem it does exactly
#   $N$ base-optimizer steps per iteration, so its speedup is $N$ (exponent 1) until the target is
#   reached within one iteration.
# - The guarantee needs the proxy steps to stay accurate. Each of the $N-1$ proxy steps moves by about
#   the learning rate $\eta$ times the estimated gradient, further from the points the surrogate has
#   seen, and its error compounds along the proxy path. For a fixed $\eta$, the bound therefore only
#   guarantees convergence for $N$ below a threshold that shrinks as $\eta$ grows.
#
# The surviving text states both facts but not their formulas, which are unconfirmed; the measurements
# below test the shapes, not constants.
#
# ## The measurement
#
# For each $N \in \{1, 2, 4, 8, 16\}$ and each method, count the sequential iterations until the
# optimality gap first reaches the gap Vanilla (the base optimizer, $N = 1$) has after its whole budget
# of $T$ iterations, on the same seed; the speedup is Vanilla's own count divided by that. A run that
# never gets there is censored. The speedups are fitted as
#
# $$
# \text{speedup}(N) = N^{a},
# $$ (eq-cor2-fit)
#
# a line through speedup 1 at $N = 1$ on log-log axes, least squares per seed, then averaged over seeds.
# Problems: a noisy quadratic $F(\theta) = \tfrac12 \sum_i h_i \theta_i^2$ (condition number 10, gradient
# noise $\mathcal{N}(0, \sigma^2 I)$ as in Assumption 1) with SGD, the setting of the theorems; and the
# deterministic synthetic suite of {ref}`synthetic` with Adam. Runs with $N \ge 8$ get a shorter budget
# ($T\sqrt{4/N}$), enough for any method at least twice as fast as Vanilla.

# %% tags=["parameters"]
profile = "paper"  # "paper": committed results; "quick": smaller problems and fewer seeds, recomputed on CPU
device = "cpu"  # where missing results are computed: "cpu", "cuda", "mps" or "auto"
backend = "torch"  # "torch" or "jax"
seeds = None  # None: the profile's (paper 5, quick 2); or a count, or a list of seeds
recompute = False  # compute missing paper-scale results (many minutes on a CPU) instead of showing quick ones
commit = None  # git commit recorded with new results where .git is absent
panels = ["quadratic", "sphere", "ackley", "rosenbrock", "levy"]
quadratic_noise = 0.1  # sigma of the gradient noise on the quadratic
quadratic_lr = 0.05  # SGD's learning rate on the quadratic (the scaling part)
lr = 0.01  # Adam's learning rate on the synthetic functions
target_ratio = 0.05  # stability part: a run converges if its gap falls to this fraction of the initial gap

# %% tags=["hide-input"]
from IPython.display import Markdown, display

from optex import chapters, report
from optex.experiments import cor2

page = report.Page(profile=profile, device=device, backend=backend, seeds=seeds, recompute=recompute, commit=commit)
configs = cor2.chapter_configs(page, panels, quadratic_noise, quadratic_lr, lr, target_ratio)

# %% tags=["remove-input"]
results = page.results(cor2.FIGURE_ID, cor2.run, configs)
display(Markdown(report.provenance_note(results)))
chapter = chapters.Cor2Chapter(results, configs(results.profile)[0], panels)

# %% [markdown]
# ## Speedup against $N$
#
# {numref}`cor2` shows the speedup over Vanilla for each problem and method, with the two reference
# rates: $N$ (Target's ceiling) and $\sqrt{N}$ (Cor. 2).

# %% tags=["hide-input"]
report.glue_all(chapter.curves())

# %% [markdown]
# ```{glue:figure} cor2
# :name: cor2
#
# Speedup in sequential iterations over Vanilla against $N$, per problem (geometric mean over seeds
# with 95% band; censored runs left out). Grey: the rates $N$ (dashed) and $\sqrt{N}$ (dotted).
# ```

# %% tags=["remove-input"]
report.glue_all(chapter.exponents())

# %% [markdown]
# ## Reading the exponents
#
# - **Target** has $a$ {glue:text}`cor2-target-range`:
#   $N$ exact steps per iteration are worth $N$ iterations, up to the rounding of iteration counts.
# - **OptEx** has $a$ {glue:text}`cor2-optex-range` across
#   the problems; on the noisy quadratic, the setting of the theorems, $a$ =
#   {glue:text}`cor2-optex-quadratic:.2f`. {glue:text}`cor2-optex-between`
#   The gap to Target is the cost of estimating the gradient at the proxy points instead of evaluating
#   it, and it widens with $N$: later proxy steps are further from the history. Part of it is fixed:
#   OptEx's first iteration is a plain step, while its history is empty.
# - A measured $a$ above $\tfrac12$ is no contradiction of $\Theta(\sqrt{N})$: Cor. 2 bounds the worst
#   case over smooth problems with noisy gradients, and these problems are not the worst case.
# - **LineSearch** spaces its points along the last gradient. That helps while the path is straight
#   (sphere, the early phase of most runs) and not where it bends or where the gradient is noisy: on the
#   quadratic, $a$ = {glue:text}`cor2-linesearch-quadratic:.2f`.
#
# ## How large can $N$ be?
#
# Thm. 2 ties the admissible $N$ to the learning rate. The second experiment runs SGD-based OptEx on the
# noisy quadratic for several learning rates $\eta$ and $N$ up to twice the largest value above, and
# records whether each run brings the gap below {glue:text}`cor2-target-ratio:.2f` of its initial value
# within the budget. {numref}`cor2-stability` shows the share of seeds that do; the outlined cells mark,
# for each $\eta$, the largest $N$ such that it and every smaller $N$ converge on most seeds.

# %% tags=["hide-input"]
report.glue_all(chapter.stability())

# %% [markdown]
# ```{glue:figure} cor2-stability
# :name: cor2-stability
#
# SGD-based OptEx on the noisy quadratic. Left: share of seeds whose gap falls below the target within
# the budget, per learning rate and $N$ (outlined: the largest $N$ that converges together with every
# smaller one). Right: the gap at the end of the budget.
# ```

# %% tags=["remove-input"]
chapter.largest_table()

# %% [markdown]
# In this run the largest $N$ that converges (out of {glue:text}`cor2-stability-max-n` tried) falls from
# {glue:text}`cor2-n-small` at $\eta$ = {glue:text}`cor2-lr-small:g` to {glue:text}`cor2-n-large` at
# $\eta$ = {glue:text}`cor2-lr-large:g`. The right panel shows the mechanism: beyond the threshold the gap the run
# settles at grows quickly with $N$, because the last proxy points are far from every evaluated gradient
# and the errors of the successive proxy steps add up. This is the practical reason for the paper's
# adaptive selection rule (keep the best process instead of the last), and for choosing $N$ together with
# the learning rate.
