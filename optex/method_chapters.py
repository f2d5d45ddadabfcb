"""What the method, theory and scaling chapters show of their results: one call per figure, table or group
of numbers.

The chapters ``fig1`` (one iteration of OptEx), ``estimator`` (Sec. 4.1), ``thm1`` (Thm. 1, Cor. 1) and
``scaling`` (OptEx on many ranks) read their results (:meth:`optex.report.Page.results`) with the configs
of their experiment's ``chapter_configs``, wrap them in :class:`Fig1Chapter`, :class:`EstimatorChapter`,
:class:`Thm1Chapter` or :class:`ScalingChapter`, and call one method per figure or table. As in
:mod:`optex.chapters`, a figure is saved with its data under the figures folder, a table is displayed as a
numbered MyST table (:func:`optex.tables.publish`), and each method returns the glue keys -> values
(figures, numbers, Markdown) that the chapter's prose pastes: the notebook hands them to
:func:`optex.report.glue_all`. Glue keys are the figure id for a figure and ``<figure id>-<name>`` for a
number or a phrase.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from IPython.display import HTML, Markdown

from . import _validation as check
from . import plotting, report, tables
from .chapters import _figures_dir
from .experiments import estimator, fig1, scaling, thm1

KERNEL_LABELS = {"rbf": "RBF", "matern12": "Matérn-1/2", "matern32": "Matérn-3/2", "matern52": "Matérn-5/2"}
THM1_LABELS = {"gp-rbf": "GP, RBF", "gp-matern32": "GP, Matérn-3/2", "gp-matern52": "GP, Matérn-5/2",
               "sphere": "Sphere", "ackley": "Ackley", "rosenbrock": "Rosenbrock", "levy": "Levy"}
DRIFT_METHODS = ("target", "linesearch", "optex")  # the methods whose proxy points the drift table measures
FIRST_DRAWN = fig1.FIRST_DRAWN
PROP41_COLUMNS = {"mean_vs_library": "Mean: dense vs library", "var_vs_library": "Variance: dense vs library",
                  "mean_vs_closed_form": "Mean: dense vs closed form",
                  "var_vs_closed_form": "Variance: dense vs closed form",
                  "off_diagonal": "Largest off-diagonal of the dense $\\Sigma^2$"}


def _single(configs: Sequence[Any]) -> Any:
    """The one config of a chapter whose experiment runs from a single config."""
    if len(configs) != 1:
        raise ValueError(f"this chapter runs from exactly one config, got {len(configs)}")
    return configs[0]


# ------------------------------------------------------------------------------------------------ Fig. 1
class Fig1Chapter:
    """The figure, table and animation of the Fig. 1 chapter: ``results`` of
    :func:`optex.experiments.fig1.run` for ``configs`` (one config), iteration ``shown_iteration`` drawn
    (from :data:`FIRST_DRAWN` to the trace's last), and with ``animate`` an animation of every iteration."""

    def __init__(self, results: report.Results, configs: Sequence[fig1.Config], shown_iteration: int,
                 animate: bool = True, figures_dir: str | Path | None = None) -> None:
        self.results, self.trace, self.config = results, results.frame, _single(configs)
        self.functions = list(self.config.functions)
        self.last = int(self.trace["iteration"].max())
        # fig1.chapter_configs checked both before any trace was computed; the bound is this trace's
        self.shown_iteration = fig1.check_shown_iteration(shown_iteration, self.last)
        self.animate = check.flag("animate", animate)
        self.figures_dir = _figures_dir(figures_dir)

    def iteration_figure(self) -> dict[str, Any]:
        """``fig1``: iteration ``shown_iteration`` of every method on every function
        (:func:`optex.plotting.iteration_grid`), published with that iteration's rows; and ``fig1-iteration``,
        ``fig1-n`` (N)."""
        parallelism = self.config.parallelism
        fig = plotting.iteration_grid(self.trace, self.functions, fig1.METHODS, self.shown_iteration, parallelism)
        report.publish(fig, self.results, data=self.trace[self.trace["iteration"] == self.shown_iteration],
                       directory=self.figures_dir)
        return {self.results.figure_id: fig, "fig1-iteration": self.shown_iteration, "fig1-n": parallelism}

    @functools.cached_property
    def drifts(self) -> pd.DataFrame:
        """The median relative drift of the last proxy point (:func:`optex.report.proxy_drift`), function x
        method."""
        return report.proxy_drift(self.trace, FIRST_DRAWN).groupby(["function", "method"])["drift"].median().unstack()

    @functools.cached_property
    def final_gaps(self) -> pd.DataFrame:
        """The optimality gap of each method's iterate at the trace's last iteration, function x method."""
        final = self.trace[(self.trace["kind"] == "iterate") & (self.trace["iteration"] == self.last)]
        return final.pivot(index="function", columns="method", values="gap")

    def drift_table(self) -> dict[str, Any]:
        """Publish ``fig1-drift-table`` (median drift and final gap per function and proxy method); return
        ``fig1-<function>-optex-drift``, ``-linesearch-drift``, ``fig1-<function>-<method>-gap`` and
        ``fig1-iterations`` (the trace's length)."""
        rows = [dict(function=f, method=m, drift=self.drifts.loc[f, m], gap=self.final_gaps.loc[f, m])
                for m in DRIFT_METHODS for f in self.functions]
        tables.publish(tables.Table(pd.DataFrame(rows), [
            tables.label("Function", "function", str.capitalize),
            tables.label("Method", "method", plotting.method_label),
            tables.Column("Median relative drift", tables.decimals("drift", 3)),
            tables.Column(f"Gap after {self.last} iterations", tables.number("gap"))], by=["function"],
            order={"function": self.functions}), "fig1-drift-table",
            "Median over iterations $t \\ge 3$ of $\\lVert \\theta^{(N-1)}_{t-1} - \\theta^{\\mathrm{exact}}_{N-1} "
            "\\rVert$ divided by the length of the exact stretch, and the optimality gap after the whole trace.")
        values: dict[str, Any] = {}
        for function in self.functions:
            for method in ("optex", "linesearch"):
                values[f"fig1-{function}-{method}-drift"] = float(self.drifts.loc[function, method])
            for method in fig1.METHODS:
                values[f"fig1-{function}-{method}-gap"] = float(self.final_gaps.loc[function, method])
        return {**values, "fig1-iterations": self.last}

    def animation(self) -> list[Any]:
        """What to display for the animation of Target and OptEx on the first function from iteration
        :data:`FIRST_DRAWN` on (:func:`optex.plotting.iteration_animation`): a heading and the animation,
        or nothing without ``animate``."""
        if not self.animate:
            return []
        function = self.functions[0]
        heading = Markdown(f"**Every iteration from $t = {FIRST_DRAWN}$ on**, Target and OptEx on "
                           f"{function.capitalize()} (use the controls to step through):")
        frames = range(FIRST_DRAWN, self.last + 1)
        return [heading, HTML(plotting.iteration_animation(self.trace, function, ("target", "optex"), frames))]


# -------------------------------------------------------------------------------------------- estimator
class EstimatorChapter:
    """The figures, table and numbers of the estimator chapter: ``results`` of
    :func:`optex.experiments.estimator.run` for ``configs`` (one config)."""

    def __init__(self, results: report.Results, configs: Sequence[estimator.Config],
                 figures_dir: str | Path | None = None) -> None:
        self.results, self.frame, self.config = results, results.frame, _single(configs)
        self.figures_dir = _figures_dir(figures_dir)

    def field_figure(self) -> dict[str, Any]:
        """``estimator``: the learned gradient field of the first seed at each history size
        (:func:`optex.plotting.gradient_fields`), published with its rows; ``estimator-function`` (its name,
        as text) and, from :func:`optex.experiments.estimator.field_error` averaged over seeds, the
        relative error at the smallest and largest history (``estimator-error-first``, ``-error-last``)
        and those sizes (``estimator-size-first``, ``-size-last``)."""
        field, history = (self.frame[self.frame["part"] == part] for part in ("field", "history"))
        seed = int(field["seed"].min())
        shown = field[field["seed"] == seed]
        fig = plotting.gradient_fields(shown, history[history["seed"] == seed], sorted(field["history"].unique()))
        report.publish(fig, self.results, data=shown, directory=self.figures_dir)
        errors = estimator.field_error(self.frame).groupby("history")[["rel_error", "std"]].mean()
        return {self.results.figure_id: fig, "estimator-function": self.config.function.capitalize(),
                "estimator-error-first": float(errors["rel_error"].iloc[0]),
                "estimator-error-last": float(errors["rel_error"].iloc[-1]),
                "estimator-size-first": int(errors.index[0]), "estimator-size-last": int(errors.index[-1])}

    def prop41_table(self) -> dict[str, Any]:
        """Publish ``estimator-prop41`` (per kernel, the largest difference between the dense and the
        decoupled posteriors, :data:`PROP41_COLUMNS`); return ``estimator-prop41-max`` (over every column;
        ``-max-text``: as the tables write it), ``-cases`` (rows checked), ``-dim`` and ``-history`` (the
        largest d and T') and ``-speed``: how many times longer the dense solve takes there (ratio of the
        medians)."""
        prop = self.frame[self.frame["part"] == "prop41"]
        columns = list(PROP41_COLUMNS)
        tables.publish(tables.Table(prop.groupby("kernel")[columns].max().reset_index(), [
            tables.label("Kernel", "kernel", lambda k: KERNEL_LABELS.get(k, k)),
            *(tables.Column(title, tables.number(key, 2)) for key, title in PROP41_COLUMNS.items())], by=["kernel"]),
            "estimator-prop41", "Largest absolute difference, over dimensions, history sizes, query points and "
            "seeds, between the dense multi-output posterior and the decoupled forms, per kernel.")
        largest = prop[(prop["dim"] == prop["dim"].max()) & (prop["history"] == prop["history"].max())]
        largest_difference = float(prop[columns].to_numpy().max())
        return {"estimator-prop41-max": largest_difference,
                "estimator-prop41-max-text": tables.significant(largest_difference, 2),
                "estimator-prop41-cases": len(prop),
                "estimator-prop41-dim": int(prop["dim"].max()), "estimator-prop41-history": int(prop["history"].max()),
                "estimator-prop41-speed": float(largest["dense_s"].median() / largest["separable_s"].median())}

    @functools.cached_property
    def cost_model(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """:func:`optex.experiments.estimator.cost_model` of the results: coefficients and predictions."""
        return estimator.cost_model(self.frame)

    def cost_figure(self) -> dict[str, Any]:
        """``estimator-cost``: measured and fitted times of an estimate and an update
        (:func:`optex.plotting.cost_figure`), saved with the predictions; and ``estimator-cost-n``, the N
        pairs of an update."""
        _, predictions = self.cost_model
        cost_n = int(self.frame.loc[self.frame["part"] == "cost", "parallelism"].iloc[0])
        fig = plotting.cost_figure(predictions, cost_n)
        plotting.save_figure(fig, "estimator-cost", predictions, self.figures_dir)
        return {"estimator-cost": fig, "estimator-cost-n": cost_n}

    def cost_fit(self) -> dict[str, Any]:
        """The fitted cost model in the units the prose quotes: the median relative error of the fit in %
        (``estimator-cost-estimate-error``, ``-update-error``), the coefficients in ns (``-td-ns``,
        ``-t2-ns``, ``-ntd-ns``, ``-t3-ns``) and the overhead in µs (``-overhead-us``); and the largest
        measured estimate: ``-big-dim``, ``-big-history`` and its time in ms (``-big-ms``)."""
        coefficients, predictions = self.cost_model
        coef = coefficients.set_index(["operation", "term"])["coefficient"]
        errors = predictions.groupby("operation")["rel_error"].median()
        biggest = predictions[(predictions["operation"] == "estimate")
                              & (predictions["dim"] == predictions["dim"].max())].sort_values("history")
        return {"estimator-cost-estimate-error": float(errors["estimate"]) * 100,
                "estimator-cost-update-error": float(errors["update"]) * 100,
                "estimator-cost-td-ns": float(coef["estimate", "T0 d"]) * 1e9,
                "estimator-cost-t2-ns": float(coef["estimate", "T0^2"]) * 1e9,
                "estimator-cost-ntd-ns": float(coef["update", "N T0 d"]) * 1e9,
                "estimator-cost-t3-ns": float(coef["update", "T0^3"]) * 1e9,
                "estimator-cost-overhead-us": float(coef["estimate", "constant"]) * 1e6,
                "estimator-cost-big-dim": int(biggest["dim"].iloc[-1]),
                "estimator-cost-big-history": int(biggest["history"].iloc[-1]),
                "estimator-cost-big-ms": float(biggest["measured_s"].iloc[-1]) * 1e3}


# ------------------------------------------------------------------------------------------------ Thm. 1
class Thm1Chapter:
    """The figures, table and findings of the Thm. 1 chapter: ``results`` of
    :func:`optex.experiments.thm1.run` for ``configs`` (one config), decay exponents fitted on history
    sizes from ``fit_from`` up (:func:`optex.experiments.thm1.decay_exponents`)."""

    def __init__(self, results: report.Results, configs: Sequence[thm1.Config], fit_from: int,
                 figures_dir: str | Path | None = None) -> None:
        self.results, self.config = results, _single(configs)
        self.fit_from = check.positive_int("fit_from", fit_from)  # thm1.chapter_configs checked it first
        frame = results.frame.copy()
        frame["scaled_std"] = frame["std"] * np.sqrt(frame["dim"])  # sqrt(d) Sigma_T: the error's expected size
        self.frame, self.gp = frame, frame[frame["kind"] == "gp"]
        self.figures_dir = _figures_dir(figures_dir)

    def error_figure(self) -> dict[str, Any]:
        """``thm1``: error and posterior spread on the sampled fields and their local decay exponent beside
        Cor. 1's (:func:`optex.plotting.error_decay_figure`), published with the GP rows."""
        sources = [s for s in thm1.SOURCES if s in set(self.gp["source"])]
        dim = self.config.dim
        fig = plotting.error_decay_figure(self.gp, sources, THM1_LABELS,
                                          lambda s: thm1.cor1_exponent(s.removeprefix("gp-"), dim))
        report.publish(fig, self.results, data=self.gp, directory=self.figures_dir)
        return {self.results.figure_id: fig}

    @functools.cached_property
    def exponents(self) -> pd.DataFrame:
        """The fitted exponents of the error and of the posterior std, one row per source in
        :data:`optex.experiments.thm1.SOURCES` order, columns (``exponent``/``low``/``high``/``cor1``,
        ``error``/``std``)."""
        fitted = pd.concat([thm1.decay_exponents(self.frame, column, self.fit_from) for column in ("error", "std")])
        wide = fitted.pivot(index="source", columns="quantity")
        return wide.loc[[s for s in thm1.SOURCES if s in wide.index]]

    @functools.cached_property
    def coverage(self) -> pd.Series:
        """Per source, the smallest fraction (over T and seeds) of query points inside Thm. 1's bound."""
        return self.frame.groupby("source")["coverage"].min()

    @property
    def gp_sources(self) -> list[str]:
        return [s for s in self.exponents.index if s.startswith("gp-")]

    def exponent_table(self) -> dict[str, Any]:
        """Publish ``thm1-exponents`` (per field: both exponents with their intervals, Cor. 1's, the lowest
        coverage); return ``thm1-<kernel or function>-error-exponent``, ``-coverage``, ``thm1-fit-from`` and
        ``thm1-synthetic-pace``: which synthetic function's error falls fastest and which slowest."""
        wide, coverage, delta = self.exponents, self.coverage, self.config.delta
        rows = pd.DataFrame([dict(field=THM1_LABELS[s],
                                  **{f"{c}_{q}": wide.loc[s, (c, q)] for c in ("exponent", "low", "high")
                                     for q in ("error", "std")},
                                  cor1=wide.loc[s, ("cor1", "error")] if s.startswith("gp-") else None,
                                  coverage=coverage[s]) for s in wide.index])
        tables.publish(tables.Table(rows, [
            tables.label("Field", "field"),
            tables.Column("Error exponent (95% interval)",
                          tables.interval("exponent_error", "low_error", "high_error")),
            tables.Column("Std exponent (95% interval)", tables.interval("exponent_std", "low_std", "high_std")),
            tables.Column("Cor. 1 (reconstructed)", tables.decimals("cor1", 2)),
            tables.Column("Lowest coverage of the bound", tables.decimals("coverage", 3))]), "thm1-exponents",
            f"Decay exponents $a$ in error $\\propto T^{{-a}}$ and posterior std $\\propto T^{{-a}}$, fitted on "
            f"log-log axes for $T \\ge$ {self.fit_from} (mean and 95% t-interval over seeds), beside Cor. 1's "
            "exponent for the error as reconstructed; and the smallest fraction, over $T$ and seeds, of query points "
            f"that satisfy the bound {{eq}}`eq-thm1-bound` with $1 - \\delta$ = {tables.fixed(1 - delta, 2)}.")
        values: dict[str, Any] = {}
        for source in wide.index:
            key = source.removeprefix("gp-")
            values[f"thm1-{key}-error-exponent"] = float(wide.loc[source, ("exponent", "error")])
            values[f"thm1-{key}-coverage"] = float(coverage[source])
        functions = wide.loc[[s for s in wide.index if not s.startswith("gp-")], ("exponent", "error")]
        if len(functions) > 1:
            fast, slow = functions.idxmax(), functions.idxmin()
            values["thm1-synthetic-pace"] = (
                f"fastest on {THM1_LABELS[fast]} (exponent {tables.fixed(functions[fast], 2)}), slowest on "
                f"{THM1_LABELS[slow]} ({tables.fixed(functions[slow], 2)})")
        return {**values, "thm1-fit-from": self.fit_from}

    def findings(self) -> dict[str, Any]:
        """What the sampled fields show: the bound (``thm1-gp-coverage-min``, ``-confidence`` 1 - delta,
        ``-beta``, ``-bound-verdict``), the calibration at the largest history (``thm1-largest-history``,
        ``-calibration-low``/``-high``: error over sqrt(d) Sigma_T, the extremes over kernels), the fitted
        exponents against Cor. 1's (``thm1-versus-cor1``) and the exponent fitted per seed on the last
        doubling of T (``thm1-<kernel>-tail-exponent``, mean over seeds). The two verdicts are phrases
        inside a sentence of the prose: plain text, pasted with ``{glue:text}``."""
        gp, sources, delta = self.gp, self.gp_sources, self.config.delta
        largest = gp["history"].max()
        last = gp[gp["history"] == largest].groupby("source")
        ratio = last["error"].mean() / last["scaled_std"].mean()
        lowest = float(self.coverage[sources].min())
        verdict = ("so the bound holds" if bool(lowest >= 1 - delta)
                   else "so on some fields the bound fails more often than the theorem allows")
        fitted = self.exponents.loc[sources, ("exponent", "error")]
        reference = self.exponents.loc[sources, ("cor1", "error")]
        versus = ("all faster than the reconstructed Cor. 1 exponents, as an upper bound on the rate allows"
                  if bool((fitted > reference).all()) else
                  "not all faster than the reconstructed Cor. 1 exponents (" + ", ".join(
                      THM1_LABELS[s] for s in sources if fitted[s] <= reference[s])
                  + " is slower), which the bound does not allow")
        values = {"thm1-largest-history": int(largest), "thm1-calibration-low": float(ratio.min()),
                  "thm1-calibration-high": float(ratio.max()), "thm1-gp-coverage-min": lowest,
                  "thm1-confidence": 1 - delta, "thm1-beta": thm1.beta(self.config.dim, delta),
                  "thm1-bound-verdict": verdict, "thm1-versus-cor1": versus}
        tail = gp[gp["history"] >= largest / 2]
        for source in sources:
            runs = tail[tail["source"] == source].sort_values("history")
            slopes = [-np.polyfit(np.log(r["history"]), np.log(r["error"]), 1)[0] for _, r in runs.groupby("seed")]
            values[f"thm1-{source.removeprefix('gp-')}-tail-exponent"] = float(np.mean(slopes))
        return values

    def synthetic_figure(self) -> dict[str, Any]:
        """``thm1-synthetic``: the relative error on the synthetic functions
        (:func:`optex.plotting.relative_error_figure`), saved with their rows; and
        ``thm1-rosenbrock-coverage-pct``, Rosenbrock's lowest coverage of the bound in % (NaN without it)."""
        synthetic = self.frame[self.frame["kind"] == "synthetic"]
        functions = [s for s in self.exponents.index if not s.startswith("gp-")]
        fig = plotting.relative_error_figure(synthetic, functions, THM1_LABELS)
        plotting.save_figure(fig, "thm1-synthetic", synthetic, self.figures_dir)
        return {"thm1-synthetic": fig,
                "thm1-rosenbrock-coverage-pct": float(self.coverage.get("rosenbrock", np.nan)) * 100}


# ---------------------------------------------------------------------------------------------- scaling
class ScalingChapter:
    """The figure, tables and numbers of the scaling chapter: ``results`` of
    :func:`optex.experiments.scaling.run` for ``configs`` (one config)."""

    def __init__(self, results: report.Results, configs: Sequence[scaling.Config],
                 figures_dir: str | Path | None = None) -> None:
        self.results, self.frame, self.config = results, results.frame, _single(configs)
        self.summary = scaling.summary(self.frame)
        self.model = scaling.cost_model(self.frame)
        self.figures_dir = _figures_dir(figures_dir)

    def settings(self) -> dict[str, Any]:
        """``scaling-d`` (the MLP's parameters), ``-n`` (N), ``-megabytes`` (the float32 gradients the
        ranks exchange per iteration) and ``-load`` (the highest load average during the timings), as text."""
        dim, parallelism = int(self.frame["dim"].iloc[0]), self.config.parallelism
        return {"scaling-d": f"{dim:,}", "scaling-n": parallelism,
                "scaling-megabytes": tables.fixed(parallelism * dim * 4 / 1e6, 1),
                "scaling-load": tables.fixed(self.frame['load_average'].max(), 1)}

    def figure(self) -> dict[str, Any]:
        """``scaling``: milliseconds per iteration by setup with the cost model
        (:func:`optex.plotting.scaling_plot`), published with the timings."""
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 3.8), layout="constrained")
        plotting.scaling_plot(ax, self.summary, self.model)
        report.publish(fig, self.results, directory=self.figures_dir)
        return {self.results.figure_id: fig}

    def times_table(self) -> None:
        """Publish ``scaling-times`` (:func:`optex.experiments.scaling.summary_table`)."""
        tables.publish(scaling.summary_table(self.summary), "scaling-times",
                       "Median milliseconds per OptEx iteration by setup, split as in {numref}`scaling` "
                       "(rank 0's view).")

    def model_table(self) -> dict[str, Any]:
        """Publish ``scaling-model`` (:func:`optex.experiments.scaling.model_table`) and return
        ``scaling-serial``: the serial part's share of a one-rank iteration, in %, as text."""
        tables.publish(scaling.model_table(self.model), "scaling-model",
                       "The cost model against the measured distributed times; rows without a measurement are "
                       "predictions.")
        share = float(self.model["serial_s"].iloc[0] / self.model["predicted_s"].iloc[0])
        return {"scaling-serial": tables.fixed(100 * share, 0)}

    def model_reading(self) -> Markdown:
        """How the cost model fares against the measurement (:func:`optex.experiments.scaling.model_reading`)."""
        return Markdown(scaling.model_reading(self.model))


__all__ = ["DRIFT_METHODS", "EstimatorChapter", "FIRST_DRAWN", "Fig1Chapter", "PROP41_COLUMNS", "ScalingChapter",
           "THM1_LABELS", "Thm1Chapter"]
