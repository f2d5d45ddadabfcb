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
# (chapter-estimator)=
# # Kernelized gradient estimation (Sec. 4.1)
#
# Everything OptEx gains comes from one ingredient: a cheap guess $\mu_{t-1}(\theta)$ of the gradient at
# points where it has not been evaluated yet. This page builds that guess the way {cite}`shu2024optex`
# does, checks the algebra that makes it cheap, watches it learn a gradient field, and measures what it
# costs.
#
# ## A Gaussian process over gradient fields
#
# Treat the unknown gradient field $\nabla F: \mathbb{R}^d \to \mathbb{R}^d$ as a draw from a
# Gaussian process {cite}`rasmussen2006gaussian` with zero mean and a *separable* matrix kernel
#
# $$
# \mathrm{Cov}\big(\nabla F(\theta), \nabla F(\theta')\big) = k(\theta, \theta')\, I_d ,
# $$ (eq-est-separable)
#
# with $k$ a scalar kernel such as Matérn-5/2: different coordinates of the gradient are uncorrelated,
# and each coordinate varies smoothly in $\theta$. Suppose the optimizer has evaluated noisy gradients
# $g_\tau = \nabla F(\theta_\tau) + \varepsilon_\tau$, $\varepsilon_\tau \sim \mathcal{N}(0, \sigma^2 I_d)$,
# at $T'$ points, and stack them as the columns of $G = [g_1, \dots, g_{T'}] \in \mathbb{R}^{d \times T'}$.
# Conditioning the process on all $dT'$ numbers at once gives the textbook multi-output posterior mean
#
# $$
# \mu(\theta) = \mathbf{K}(\theta)^\top \big(\mathbf{K} + \sigma^2 I_{dT'}\big)^{-1} \mathrm{vec}(G),
# $$ (eq-est-dense)
#
# where $\mathbf{K}$ is the $dT' \times dT'$ matrix of all kernel blocks $k(\theta_\tau, \theta_{\tau'}) I_d$
# and $\mathbf{K}(\theta)$ stacks the blocks $k(\theta_\tau, \theta) I_d$. Solved as written, that is a
# system with $dT'$ unknowns: hopeless for a network with $d = 10^6$ parameters.
#
# ## Prop. 4.1: the $d$ outputs decouple
#
# With the separable kernel both matrices are Kronecker products, $\mathbf{K} = K \otimes I_d$ and
# $\mathbf{K}(\theta) = k(\theta) \otimes I_d$, where $K = [k(\theta_\tau, \theta_{\tau'})]$ is only
# $T' \times T'$ and $k(\theta) = [k(\theta_\tau, \theta)]_\tau$. Since
# $K \otimes I_d + \sigma^2 I_{dT'} = (K + \sigma^2 I_{T'}) \otimes I_d$, its inverse is
# $(K + \sigma^2 I)^{-1} \otimes I_d$, and the identity $(B^\top \otimes I)\,\mathrm{vec}(G) = \mathrm{vec}(G B)$
# turns {eq}`eq-est-dense` into
#
# $$
# \mu(\theta) = G\, \big(K + \sigma^2 I_{T'}\big)^{-1} k(\theta), \qquad
# \Sigma^2(\theta) = \Big(k(\theta, \theta) - k(\theta)^\top \big(K + \sigma^2 I_{T'}\big)^{-1} k(\theta)\Big)\, I_d .
# $$ (eq-est-prop41)
#
# All $d$ coordinates share one $T' \times T'$ solve and one scalar posterior variance. OptEx also keeps
# only the $T_0$ most recent evaluated pairs (a *local* history), so the work per estimate is a kernel
# row over $T_0$ points in $d$ dimensions and one triangular solve: $O(T_0 d + T_0^2)$. Adding $N$ pairs
# costs $O(N T_0 d)$ to update the pairwise distances, and refitting costs $O(T_0^3)$ per candidate
# lengthscale (the library picks the lengthscale with the smallest leave-one-out error on a fixed grid).

# %% tags=["parameters"]
profile = "paper"  # "paper": committed results; "quick": a smaller version recomputed on CPU
device = "cpu"  # where missing results are computed: "cpu", "cuda", "mps" or "auto"
backend = "torch"  # "torch" or "jax": whose GradientEstimator is checked and timed
seeds = None  # None: the profile's (paper 5, quick 2); or a count, or a list of seeds
recompute = False  # compute missing paper-scale results instead of showing quick ones
commit = None  # git commit recorded with new results where .git is absent
function = "ackley"  # the 2-D function whose gradient field is learned
field_histories = [10, 40, 160]  # history sizes T' shown for the field
kernel = "matern52"
lengthscale = "auto"  # a number, "median" or "auto" (leave-one-out on a grid)
noise = 1e-3  # sigma^2

# %% tags=["hide-input"]
from IPython.display import Markdown, display

from optex import method_chapters, report
from optex.experiments import estimator

page = report.Page(profile=profile, device=device, backend=backend, seeds=seeds, recompute=recompute, commit=commit)
configs = estimator.chapter_configs(page, function, field_histories, kernel, lengthscale, noise)

# %% tags=["remove-input"]
results = page.results(estimator.FIGURE_ID, estimator.run, configs)
display(Markdown(report.provenance_note(results)))
chapter = method_chapters.EstimatorChapter(results, configs(results.profile))

# %% [markdown]
# ## Watching the surrogate learn a gradient field
#
# {numref}`estimator` fits the estimator to $T'$ exact gradients of the 2-D {glue:text}`estimator-function`
# function at points drawn uniformly in the window, for growing $T'$. White arrows (black outline) are the
# true gradient, blue arrows the posterior mean $\mu(\theta)$ (same scale), and the shading the posterior
# standard deviation $\Sigma(\theta)$ of each coordinate: dark where the surrogate is unsure.

# %% tags=["hide-input"]
report.glue_all(chapter.field_figure())

# %% [markdown]
# ```{glue:figure} estimator
# :name: estimator
#
# The gradient field of the 2-D {glue:text}`estimator-function` function (white arrows) and the estimator's
# posterior mean (blue) after $T'$ evaluated gradients at the orange points; shading: posterior standard
# deviation. Matérn-5/2 kernel, lengthscale chosen by leave-one-out error.
# ```
#
# Over the whole window and all seeds, the relative RMS error $\lVert \mu - \nabla F \rVert / \lVert \nabla F \rVert$
# falls from {glue:text}`estimator-error-first:.2f` with {glue:text}`estimator-size-first` points to
# {glue:text}`estimator-error-last:.2f` with {glue:text}`estimator-size-last`. Two things are visible.
# Far from the history the mean shrinks towards the prior mean, zero, and the standard deviation grows
# towards the prior's, one: the surrogate does not extrapolate, it abstains. And the standard deviation
# depends only on *where* the gradients were evaluated, never on their values. This is why OptEx keeps a
# history of points near the current iterate, and why its proxy steps are trustworthy only for a few
# steps away from the last evaluations (see {ref}`chapter-fig1`).
#
# ## Checking Prop. 4.1 numerically
#
# The check below solves {eq}`eq-est-dense` as written, with the full $dT' \times dT'$ matrix in NumPy
# and kernels written out independently of the library, and compares the result with the closed form
# {eq}`eq-est-prop41` and with the library's `GradientEstimator` (float64, fixed lengthscale
# $\sqrt{d}$, random histories and queries).

# %% tags=["remove-input"]
report.glue_all(chapter.prop41_table())

# %% [markdown]
# Across {glue:text}`estimator-prop41-cases` random cases the largest difference of any kind is
# {glue:text}`estimator-prop41-max-text`: the decoupled posterior *is* the multi-output posterior, to
# rounding error, and its covariance is exactly diagonal. Already at $d$ = {glue:text}`estimator-prop41-dim`
# and $T'$ = {glue:text}`estimator-prop41-history`, the dense solve takes
# {glue:text}`estimator-prop41-speed:.0f` times longer than the decoupled one.
#
# ## What one estimate costs
#
# {numref}`estimator-cost` times the library's estimator in float32: one estimate $\mu(\theta)$ at a new
# point, and one history update ($N$ = {glue:text}`estimator-cost-n` new pairs, then the lengthscale refit the next estimate
# triggers), for several $d$ and $T_0$. Dashed lines are the least-squares fit of the cost model
#
# $$
# t_{\text{estimate}} \approx a_1\, T_0 d + a_2\, T_0^2 + a_0, \qquad
# t_{\text{update}} \approx b_1\, N T_0 d + b_2\, T_0^3 + b_0 ,
# $$ (eq-est-cost)
#
# with non-negative coefficients, fitted on relative error.

# %% tags=["hide-input"]
report.glue_all(chapter.cost_figure())
report.glue_all(chapter.cost_fit())

# %% [markdown]
# ```{glue:figure} estimator-cost
# :name: estimator-cost
#
# Median wall time of one estimate (left) and one history update (right) against $T_0$, one line per
# $d$; dashed: the fitted cost model {eq}`eq-est-cost`. Measured on the machine named in the note at
# the top of the page.
# ```
#
# The model describes the measurements with a median relative error of
# {glue:text}`estimator-cost-estimate-error:.0f`% for an estimate and
# {glue:text}`estimator-cost-update-error:.0f`% for an update: a rough description, as timings on a
# shared machine are noisy, but the orders of growth are those of the model. Its coefficients are
# {glue:text}`estimator-cost-td-ns:.3g` ns per unit of $T_0 d$ and {glue:text}`estimator-cost-t2-ns:.3g` ns
# per unit of $T_0^2$ for an estimate, {glue:text}`estimator-cost-ntd-ns:.3g` ns per unit of $N T_0 d$ and
# {glue:text}`estimator-cost-t3-ns:.3g` ns per unit of $T_0^3$ for an update, on top of a fixed
# {glue:text}`estimator-cost-overhead-us:.0f` µs of Python and library overhead per estimate, which
# dominates for small problems. At $d$ = {glue:text}`estimator-cost-big-dim:,` and
# $T_0$ = {glue:text}`estimator-cost-big-history` an estimate takes
# {glue:text}`estimator-cost-big-ms:.1f` ms: linear in $d$, like a gradient step itself, so for a model
# whose gradient costs a forward and a backward pass through real data the $N-1$ proxy steps are
# cheap. The $T_0^3$ refit is what limits the history: it is paid once per iteration, whatever $N$.
