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
# (e) **The surrogate itself.** The GP mean against the trivial surrogate that repeats the last true
# gradient in every proxy step: same evaluations, same selection. If the two coincide, the kernel
# estimate buys nothing on this problem.
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
from IPython.display import Markdown, display

from optex import chapters, report
from optex.experiments import fig6, synthetic

page = report.Page(profile=profile, device=device, backend=backend, seeds=seeds, recompute=recompute, commit=commit)
configs, picard_configs = fig6.chapter_configs(page, selects, histories, parallelisms, picard_tol)

# %% tags=["remove-input"]
results = page.results("fig6", fig6.run, configs)
display(Markdown(report.provenance_note(results)))
chapter = chapters.Fig6Chapter(results)

# %% [markdown]
# ## The five ablations
#
# Each panel of {numref}`fig6` shows the geometric mean over seeds of the optimality gap and its 95%
# band, against sequential iterations. Where curves lie on top of each other, the legend under the panel
# marks them ≡.

# %% tags=["hide-input"]
report.glue_all(chapter.curves())

# %% [markdown]
# ```{glue:figure} fig6
# :name: fig6
#
# Ablations of OptEx on Rosenbrock: (a) the $N$ evaluations in parallel or one after another; (b) the rule
# that picks $\theta_t$ among the $N$ processes; (c) the history size $T_0$; (d) the parallelism $N$;
# (e) the GP mean against the last true gradient as the surrogate of the proxy steps. Lines: geometric
# mean over seeds; bands: 95% t-intervals. Data: {download}`fig6.csv <figures/fig6.csv>`.
# ```

# %% tags=["remove-input"]
report.glue_all(chapter.final_tables())

# %% [markdown]
# Reading the panels: run sequentially, OptEx has after {glue:text}`fig6-sequential-t` sequential
# iterations {glue:text}`fig6-sequential-vs-vanilla:.2f` times the gap Vanilla has after as many. Without
# parallel evaluations OptEx is at best Vanilla, so the gain in panel (a) comes from the parallel
# hardware. Among the selection rules, {glue:text}`fig6-best-select` ends lowest. The speedup grows with
# $N$ as {numref}`fig6-speedup-n` shows; the theory chapter fits its rate. That is the paper's metric,
# read at Vanilla's final gap. The effective speedup reads the curves where they end, and there they have
# flattened: it peaks at {glue:text}`fig6-effective-half-best:.2f`× ($N$ =
# {glue:text}`fig6-effective-half-best-n`) at $t$ = {glue:text}`fig6-effective-half-t` and is
# {glue:text}`fig6-effective-end-range` at $t$ = {glue:text}`fig6-effective-end-t`, so beyond a few
# processes more of them buy little on this problem once OptEx nears its plateau. In panel (e) the
# last-gradient surrogate ends at {glue:text}`fig6-proxy-ratio:.2f` times the gap of the GP mean.
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
picard = page.results("fig6-picard", synthetic.run, picard_configs)
display(Markdown(report.provenance_note(picard)))
report.glue_all(chapter.picard(picard))

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
# exact Adam steps on average, {glue:text}`fig6-picard-pace`, staying within a relative distance of
# {glue:text}`fig6-picard-error-text` of the sequential trajectory. Adam's update is
# close to the sign of its momentum, which changes abruptly when a gradient coordinate changes sign, so
# the fixed-point iteration converges slowly; OptEx gives up exactness and advances $N$ steps per round
# with an approximate gradient. Where the exact trajectory matters (reproducing a training run bit for
# bit), Picard iteration is the parallel method to use; where only the objective matters, OptEx goes
# further per round.
