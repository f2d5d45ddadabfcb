"""What the neural-network and RL chapters show of their results: one call per figure, table or reading.

The image and text chapters (``mnist``, ``fig4a``, ``fig4b``) run the same methods and show the same
kinds of figures and tables; the RL chapter (``fig3``) has its own. A chapter notebook reads its results
(:meth:`optex.report.Page.results`), wraps them in :class:`TrainingChapter`, :class:`TextChapter` or
:class:`RLChapter`, and calls one method per figure or table. A figure is saved with its data under
the figures folder, a table is displayed as a numbered MyST table (:func:`optex.tables.publish`), and
each method returns the glue keys -> values (figures, numbers as text, Markdown) that the chapter's prose
pastes: the notebook hands them to :func:`optex.report.glue_all`. Glue keys are ``<prefix>-<name>``
for numbers and readings, the figure id (and ``<figure id>-speedup``, ``-cosine``) for figures.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from IPython.display import Markdown, display
from scipy import stats

from . import plotting, report, tables
from .analysis import effective_speedup, effective_speedup_table, speedup_table
from .experiments import cor2, fig2, fig6, rl, synthetic, training
from .models import TRANSFORMER_SIZES, transformer_dim

SHOWN = ("vanilla", "linesearch", "last_gradient", "large_batch", "large_batch_scaled", "target", "optex")
SPEEDUP_SHOWN = SHOWN[1:]  # Vanilla's effective speedup is 1 by definition: the dotted line
RL_SHOWN = ("vanilla", "linesearch", "last_gradient", "large_batch", "target", "optex")
TIMED = ("vanilla", "optex", "target", "large_batch")  # the methods of the time split
PROXY_METHODS = ("optex", "linesearch", "last_gradient")  # proxy steps that follow no fresh true gradient
NANOGPT_ITERATIONS = 2000  # nanoGPT's CPU configuration of the Shakespeare task runs this many
NANOGPT_BATCH = 12  # ... on minibatches of this many windows


def _figures_dir(figures_dir: str | Path | None) -> Path:
    return Path(figures_dir) if figures_dir is not None else report.project_root() / report.FIGURES_DIR


DEVICE_NAMES = {"cpu": "a CPU", "cuda": "a CUDA GPU", "mps": "an Apple GPU (MPS)"}


def _devices(results: report.Results) -> str:
    """Where ``results`` were computed, in words ("a CPU")."""
    return " and ".join(DEVICE_NAMES.get(d, d) for d in report.summary(results)["devices"]) or "an unknown device"


# ---------------------------------------------------------------------------------- image and text
class TrainingChapter:
    """The figures, tables and readings of one image or text chapter.

    ``results``: the chapter's :class:`optex.report.Results` (rows of
    :func:`optex.experiments.training.run_panel`); ``configs``: the configs they were computed with
    (one per panel, in the figure's order); ``prefix``: the chapter's glue-key prefix; ``loss`` and
    ``error``: the metrics of the speedup tables (the effective speedup reads ``loss``).
    """

    def __init__(self, results: report.Results, configs: Sequence[training.Config], prefix: str,
                 figures_dir: str | Path | None = None, loss: str = "train_loss", error: str = "val_error") -> None:
        if not configs:
            raise ValueError("configs must hold at least one config")
        self.results, self.frame, self.configs, self.prefix = results, results.frame, list(configs), prefix
        self.figure_id = results.figure_id
        self.panels = [training.panel_name(c) for c in self.configs]
        self.parallelism = self.configs[0].parallelism
        self.figures_dir = _figures_dir(figures_dir)
        self.loss, self.error = loss, error

    # numbers the prose quotes
    def settings(self) -> dict[str, Any]:
        """:func:`optex.experiments.training.glue_settings` and ``<prefix>-devices`` (where the results
        were computed)."""
        values = training.glue_settings(self.configs, self.prefix, self.results.profile)
        return {**values, f"{self.prefix}-devices": _devices(self.results)}

    # figures
    def curves(self, columns: Sequence[tuple[str, str]], log: bool = False) -> dict[str, Any]:
        """The chapter's main figure (:func:`optex.plotting.training_figure`: one row per panel, one column
        per (metric, x)), published with its evaluation rows for the report (:func:`optex.report.publish`)."""
        fig, _ = plotting.training_figure(self.frame, self.panels, columns, SHOWN, log=log)
        if log:
            plotting.plain_log_ticks(fig)
        report.publish(fig, self.results, data=plotting.evaluation_rows(self.frame, self.loss),
                       directory=self.figures_dir)
        return {self.figure_id: fig}

    @functools.cached_property
    def speedups(self) -> pd.DataFrame:
        """Per-seed effective speedups on ``loss`` (:func:`optex.analysis.effective_speedup`)."""
        return effective_speedup(self.frame, self.loss, interpolate=True, by=["panel"])

    def speedup_figure(self) -> dict[str, Any]:
        """Vanilla-equivalent iterations against t per panel (:func:`optex.plotting.effective_speedup_figure`)."""
        name = f"{self.figure_id}-speedup"
        fig, shown = plotting.effective_speedup_figure(self.speedups, self.panels, self.parallelism, SPEEDUP_SHOWN)
        plotting.save_figure(fig, name, shown, self.figures_dir)
        return {name: fig}

    def cosine_figure(self) -> dict[str, Any]:
        """The estimators' cosine by proxy step per panel (:func:`optex.plotting.proxy_cosine_figure`)."""
        name = f"{self.figure_id}-cosine"
        cosines = plotting.proxy_cosines(self.frame)
        fig = plotting.proxy_cosine_figure(cosines, self.panels)
        plotting.save_figure(fig, name, cosines, self.figures_dir)
        return {name: fig}

    # tables
    @functools.cached_property
    def table(self) -> pd.DataFrame:
        """:func:`optex.plotting.training_speedup_table` of the results."""
        return plotting.training_speedup_table(self.frame, loss=self.loss, error=self.error)

    @functools.cached_property
    def versus(self) -> pd.DataFrame:
        """OptEx against the better LargeBatch per panel (:func:`optex.plotting.versus`), indexed by panel."""
        best = plotting.best_large_batch(self.table)
        return plotting.versus(self.speedups, "optex", best).set_index("panel")

    @functools.cached_property
    def summary(self) -> pd.DataFrame:
        """:func:`optex.plotting.training_summary`: one row per panel of the numbers the readings quote."""
        return plotting.training_summary(self.table, self.versus, loss=self.loss)

    def speedup_tables(self, why: bool = True) -> dict[str, Any]:
        """Publish ``<figure id>-table`` (both speedup metrics per panel and method) and
        ``<figure id>-versus`` (OptEx against the better LargeBatch); return ``<prefix>-reading``, the
        conclusion drawn from them (:func:`optex.plotting.reading_text`; ``why``: with the cosine as
        the reason where OptEx does not beat LargeBatch)."""
        loss, error = (plotting.AXIS_LABELS.get(m, m) for m in (self.loss, self.error))
        tables.publish(tables.training_paper_table(self.table, [(self.loss, loss), (self.error, error)]),
                       f"{self.figure_id}-table",
                       f"The paper's metric per panel and method: the speedup over Vanilla in reaching Vanilla's "
                       f"{loss} and {error} at $T$ (sequential iterations, mean over the seeds that reach it with "
                       "its 95% interval; a dash where none does) and the seeds that never reach it (censored).")
        halfway, end = (int(self.table[f"t_{name}"].dropna().iloc[0]) for name in ("half", "end"))
        tables.publish(tables.training_effective_table(self.table, halfway, end), f"{self.figure_id}-effective",
                       f"The effective speedup on the {loss} per panel and method at $T/2$ and $T$ (mean and 95% "
                       "interval over seeds; ≥: some seed's method got below anything the long Vanilla run reached, "
                       "so the mean is a lower bound, shown alone where every seed did), and for the two surrogates "
                       "the median cosine between the proxy step's gradient estimate and the true minibatch "
                       "gradient at each proxy step $s$.")
        tables.publish(tables.versus_table(self.versus, self.table), f"{self.figure_id}-versus",
                       "OptEx against the better of the two LargeBatch runs (chosen per panel by the mean effective "
                       "speedup at $T$): the per-seed ratio of effective speedups at $T$, mean and 95% interval.")
        return {f"{self.prefix}-reading": Markdown(plotting.reading_text(self.summary, self.parallelism, why=why))}

    def time_split(self) -> dict[str, Any]:
        """Publish ``<figure id>-time-split`` (milliseconds per iteration: proxy steps, evaluations, update;
        :func:`optex.plotting.time_split`) and return ``<prefix>-optex-cost``: an OptEx iteration's cost in
        Vanilla iterations, the median over the panels."""
        split = plotting.time_split(self.frame, TIMED)
        tables.publish(tables.time_split_table(split), f"{self.figure_id}-time-split",
                       f"Milliseconds per sequential iteration on {_devices(self.results)} (median after the first "
                       "five iterations): the proxy steps (surrogate and base-optimizer updates), the gradient "
                       "evaluations and the update of the history.")
        total = split.set_index(["panel", "method"])["total"]
        cost = (total.xs("optex", level="method") / total.xs("vanilla", level="method")).median()
        return {f"{self.prefix}-optex-cost": float(cost)}


class TextChapter(TrainingChapter):
    """:class:`TrainingChapter` for the text chapter (``fig4b``), with what only it shows: the seconds per
    iteration, the estimator's cosine against the model size, the generated text and the verdict."""

    def __init__(self, results: report.Results, configs: Sequence[training.Config], prefix: str = "text",
                 figures_dir: str | Path | None = None, threads: int = 1) -> None:
        super().__init__(results, configs, prefix, figures_dir, loss="train_loss", error="val_loss")
        self.threads = threads

    def settings(self) -> dict[str, Any]:
        """:meth:`TrainingChapter.settings`, the seconds per iteration (:meth:`timing`), the GPU-sized model's
        ``gpu-d``, ``sample-length``, ``threads`` (and ``threads-phrase``: "1 thread", "4 threads"), ``nanogpt-ratio`` (nanoGPT's iterations over T) and
        ``size-note``: how the model and minibatch compare with nanoGPT's CPU configuration."""
        first = self.configs[0]
        vocabulary = len(training.task_for(first).dataset.vocabulary)
        gpu = TRANSFORMER_SIZES["gpu"]
        values = {"gpu-d": f"{transformer_dim(vocabulary, gpu['width'], gpu['depth'], gpu['block_size']):,}",
                  "sample-length": training.SAMPLE_LENGTH, "threads": self.threads,
                  "threads-phrase": f"{self.threads} thread" + ("" if str(self.threads) == "1" else "s"),
                  "nanogpt-ratio": f"{NANOGPT_ITERATIONS / first.iterations:g}", "size-note": self.size_note()}
        return {**super().settings(), **self.timing(), **{f"{self.prefix}-{k}": v for k, v in values.items()}}

    def size_note(self) -> str:
        """How this page's model and minibatch compare with nanoGPT's CPU configuration of the task
        (:data:`optex.models.TRANSFORMER_SIZES` ``"cpu"``, minibatches of :data:`NANOGPT_BATCH`)."""
        first, cpu = self.configs[0], TRANSFORMER_SIZES["cpu"]
        if all(getattr(first, name) == value for name, value in cpu.items()) and first.batch_size == NANOGPT_BATCH:
            return "the size of this page's model and minibatch"
        return "not this page's model and minibatch"

    def timing(self) -> dict[str, str]:
        """Mean seconds per iteration of Vanilla, OptEx, Target and LargeBatch (``<prefix>-vanilla-s``,
        ``-optex-s``, ``-target-s``, ``-large-s``) and OptEx's split: ``-optex-eval`` (the N gradients) and
        ``-optex-gp`` (the proxy steps and the update)."""
        seconds = plotting.iteration_seconds(self.frame).groupby("method")[["seconds", "proxy", "eval", "update"]].mean()
        keys = {"vanilla": "vanilla", "optex": "optex", "target": "target", "large_batch": "large"}
        values = {f"{self.prefix}-{key}-s": tables.fixed(seconds.loc[name, "seconds"], 2) for name, key in keys.items()}
        values[f"{self.prefix}-optex-eval"] = tables.fixed(seconds.loc["optex", "eval"], 2)
        values[f"{self.prefix}-optex-gp"] = tables.fixed(seconds.loc["optex", "proxy"] + seconds.loc["optex", "update"], 2)
        return values

    def readings(self) -> dict[str, Any]:
        """``<prefix>-story`` (:func:`optimizer_story`), ``-adam-note`` (:func:`adaptive_step_note`),
        ``-contrast`` (:func:`optex.plotting.optimizer_contrast_text`; empty with one panel) and
        ``-surrogates`` (:func:`optex.plotting.surrogate_text`)."""
        contrast = plotting.optimizer_contrast_text(self.summary) if len(self.summary) > 1 else ""
        return {f"{self.prefix}-story": Markdown(optimizer_story(self.summary)),
                f"{self.prefix}-adam-note": Markdown(adaptive_step_note(self.summary)),
                f"{self.prefix}-contrast": Markdown(contrast),
                f"{self.prefix}-surrogates": Markdown(plotting.surrogate_text(self.frame, self.summary))}

    def cosine_sweep(self, sweep: report.Results, configs: Sequence[training.Config]) -> dict[str, Any]:
        """The estimator's cosine against d (``sweep``: results of :func:`optex.experiments.fig4b.run_sized`
        for ``configs``): publish the figure ``sweep.figure_id`` and its table ``text-cosine-table``;
        return the figure, the sweep's settings (``<prefix>-sweep-T``, ``-sweep-d``, ``-sweep-seeds``,
        ``-sweep-count``, ``-sweep-width``), ``-cosine-reading`` and ``-compute``: the seconds of
        compute behind this page and the sweep (:func:`optex.tables.format_duration`)."""
        cosines = plotting.cosine_by_dimension(sweep.frame)
        fig = plotting.cosine_dimension_figure(cosines, self.panels)
        report.publish(fig, sweep, data=cosines, directory=self.figures_dir)
        tables.publish(tables.frame_table(plotting.cosine_dimension_display(cosines)), f"{self.prefix}-cosine-table",
                       f"The medians of {{numref}}`{sweep.figure_id}`.")
        first = configs[0]
        seconds = report.summary(self.results)["wall_time_s"] + report.summary(sweep)["wall_time_s"]
        values = {"sweep-T": first.iterations, "sweep-seeds": len(first.seed_list),
                  "sweep-d": ", ".join(f"{d:,}" for d in sorted(sweep.frame["d"].unique())),
                  "sweep-count": sweep.frame["d"].nunique(), "sweep-width": max(c.width for c in configs),
                  "cosine-reading": Markdown(plotting.cosine_dimension_text(cosines)),
                  "compute": tables.format_duration(seconds)}
        return {sweep.figure_id: fig, **{f"{self.prefix}-{k}": v for k, v in values.items()}}

    def samples(self, seed: int, methods: Sequence[str] = ("vanilla", "optex", "target")) -> str:
        """The text each of ``methods`` generated at the end of its run on ``seed``, one fenced block per
        panel and method (:func:`optex.plotting.samples_markdown`)."""
        return plotting.samples_markdown(plotting.text_samples(self.frame, methods, seed=seed))

    def verdict(self) -> dict[str, Any]:
        """The report's verdict on the chapter's claim (``<prefix>-verdict``) and what it rests on
        (``-finding``)."""
        claim = next(c for c in report.CLAIMS if c.key == self.figure_id)
        finding = claim.evaluate(plotting.evaluation_rows(self.frame, self.loss))
        return {f"{self.prefix}-verdict": finding.verdict, f"{self.prefix}-finding": Markdown(f"{finding.ours}.")}


def optimizer_story(summary: pd.DataFrame) -> str:
    """Where, among the panels of :func:`optex.plotting.training_summary`, the three methods whose proxy
    steps follow no fresh true gradient (OptEx, LineSearch, the last gradient) all end behind Vanilla (an
    effective speedup at T below 1) while Target and the better LargeBatch do not; or that no panel does."""
    lines = []
    for row in summary.itertuples():
        if _proxies_behind(row):
            lines.append(f"In {row.panel}, OptEx ({tables.fixed(row.optex, 2)}×), LineSearch "
                         f"({tables.fixed(row.linesearch, 2)}×) and the last gradient ({tables.fixed(row.last_gradient, 2)}×), "
                         "the three methods whose proxy steps follow something other than a fresh true gradient, all end "
                         "behind plain Vanilla (an effective speedup below 1 at $T$), while Target "
                         f"({tables.fixed(row.target, 2)}×) and {plotting.method_label(row.rival)} "
                         f"({tables.fixed(row.large_batch, 2)}×) do not.")
    if not lines:
        return ("In no panel do the three methods whose proxy steps follow something other than a fresh true "
                "gradient (OptEx, LineSearch, the last gradient) all end behind plain Vanilla.")
    return " ".join(lines)


def _proxies_behind(row: Any) -> bool:
    return all(getattr(row, m) < 1 for m in PROXY_METHODS) and row.target > 1 and row.large_batch > 1


def adaptive_step_note(summary: pd.DataFrame) -> str:
    """A hypothesis for the panels with an adaptive base optimizer (not SGD) where :func:`optimizer_story`
    finds every estimated-proxy method behind Vanilla; empty when there is none."""
    panels = [row.panel for row in summary.itertuples() if "SGD" not in row.panel and _proxies_behind(row)]
    if not panels:
        return ""
    return (f"Where that happens ({'; '.join(panels)}), our reading, which this chapter does not test: an "
            "adaptive optimizer such as Adam divides each step by a running root-mean-square of the gradients, so "
            "a proxy step moves every coordinate by about the learning rate whatever the length of the estimate, "
            "and it feeds the estimate into its moment estimates as well; SGD's step is proportional to the "
            "estimate, and the GP mean, which shrinks towards zero where the history says little, takes short "
            "steps where it is unsure. A poor direction then costs SGD little and Adam a full step, $N - 1$ times "
            "per iteration.")


# ---------------------------------------------------------------------------------------------------- RL
class RLChapter:
    """The figures, tables and readings of the RL chapter (``fig3``): ``results`` of
    :func:`optex.experiments.rl.run_panel` for ``configs`` (one per task)."""

    def __init__(self, results: report.Results, configs: Sequence[rl.Config], prefix: str = "rl",
                 figures_dir: str | Path | None = None) -> None:
        if not configs:
            raise ValueError("configs must hold at least one config")
        self.results, self.frame, self.configs, self.prefix = results, results.frame, list(configs), prefix
        self.figure_id = results.figure_id
        self.figures_dir = _figures_dir(figures_dir)
        self.dims = {rl.panel_name(c): rl.dimension(c) for c in self.configs}
        self.titles = {p: f"{p} ($d$ = {d:,})" for p, d in self.dims.items()}

    def settings(self) -> dict[str, Any]:
        """The settings the prose quotes (``<prefix>-N``, ``-seeds``, ``-batch``, ``-buffer``, ``-gamma``,
        ``-lr``, ``-eps-min``, ``-target-every``, ``-history``, ``-history-updates``: updates whose
        gradients fill the history, ``-window``, ``-t-quantile``: the 95% t quantile of the seeds,
        ``-max-steps``, ``-profile``), and the compute: ``-compute``
        (the runs' seconds) and ``-every-step`` (an estimate with one update per environment step), both
        through :func:`optex.tables.format_duration`."""
        first = self.configs[0]
        seeds = len(first.seed_list)
        cost = rl.compute_cost(self.frame)
        values = {"N": first.parallelism, "profile": self.results.profile, "seeds": seeds, "batch": first.batch_size,
                  "buffer": f"{first.buffer_size:,}", "gamma": first.gamma, "lr": f"{first.lr:g}",
                  "eps-min": first.epsilon_min, "target-every": first.target_every, "history": first.history,
                  "history-updates": -(-first.history // first.parallelism), "window": rl.WINDOW,
                  "t-quantile": tables.fixed(stats.t.ppf(0.975, seeds - 1), 2) if seeds > 1 else "undefined",
                  "max-steps": f"{int(self.frame['env_steps'].max()):,}",
                  "compute": tables.format_duration(cost["seconds"]),
                  "every-step": tables.format_duration(cost["every_step_seconds"])}
        return {f"{self.prefix}-{k}": v for k, v in values.items()}

    def settings_table(self) -> None:
        """Publish ``rl-settings``: per task d, width, episodes, k, threshold, steps and updates of a run."""
        settings = plotting.rl_settings_table(self.configs, self.dims, self.frame)
        tables.publish(tables.frame_table(settings), f"{self.prefix}-settings",
                       "Per task: the Q-network's parameter count $d$ and hidden width, warm-up and training "
                       "episodes, $k$ (environment steps per update), the reward threshold of "
                       f"{{numref}}`{self.prefix}-threshold`, and the mean number of environment steps and updates "
                       "of a run (over methods and seeds).")

    def curves(self) -> dict[str, Any]:
        """The cumulative average return per task (:func:`optex.plotting.rl_curves`), published for the report."""
        fig, _ = plotting.rl_curves(self.frame, self.titles, RL_SHOWN)
        report.publish(fig, self.results, data=plotting.rl_rows(self.frame), directory=self.figures_dir)
        return {self.figure_id: fig}

    def threshold_tables(self) -> dict[str, Any]:
        """Publish ``rl-threshold`` (episodes to the threshold, best and final returns) and ``rl-anchors``
        (CleanRL's returns beside ours); return ``<prefix>-reading`` (:func:`optex.plotting.rl_reading_text`)
        and ``-verdict`` (the report's claim on the cumulative average return)."""
        table = rl.threshold_table(self.frame)
        tables.publish(tables.frame_table(plotting.rl_threshold_display(table)), f"{self.prefix}-threshold",
                       "Training episodes until the trailing mean return reaches the task's threshold (mean over the "
                       "seeds that reach it, 95% interval; \"> E\": no seed did within its E training episodes) and "
                       "the seeds that never do (censored); the best trailing mean return a run "
                       "reached, which says how close a censored method came; and the cumulative average return at "
                       "the last episode (both: mean and 95% interval over all seeds). \"Every return the same\": no "
                       "run of any method left the task's floor.")
        anchors = plotting.rl_anchor_table(self.frame, {rl.panel_name(c): rl.TASKS[c.task].cleanrl for c in self.configs})
        tables.publish(tables.frame_table(anchors), f"{self.prefix}-anchors",
                       "CleanRL's DQN returns after 500k steps, the environment steps of our runs, and the mean return "
                       "of the last 10 episodes of Vanilla and OptEx (mean and 95% interval over seeds).")
        finding = report.collects_more_reward()(plotting.rl_rows(self.frame))
        return {f"{self.prefix}-reading": Markdown(plotting.rl_reading_text(table, self.frame)),
                f"{self.prefix}-verdict": finding.verdict}

    def cosine(self) -> dict[str, Any]:
        """Publish ``rl-cosine-table`` (the estimators' cosine with a stale and a current history) and the
        figure ``<figure id>-cosine``; return the figure and ``<prefix>-cosine-reading``."""
        table = plotting.rl_cosine_table(self.frame)
        tables.publish(tables.frame_table(plotting.rl_cosine_display(table)), f"{self.prefix}-cosine-table",
                       "The estimator's cosine with the true gradient with a stale and with a current history (mean "
                       "over the proxy updates of a seed, then mean and 95% interval over seeds).")
        name = f"{self.figure_id}-cosine"
        fig, curves = plotting.rl_cosine_figure(self.frame, self.titles)
        plotting.save_figure(fig, name, curves, self.figures_dir)
        return {name: fig, f"{self.prefix}-cosine-reading": Markdown(plotting.rl_cosine_reading(table))}


__all__ = ["DEVICE_NAMES", "NANOGPT_BATCH", "NANOGPT_ITERATIONS", "PROXY_METHODS", "RLChapter", "RL_SHOWN", "SHOWN", "SPEEDUP_SHOWN", "TIMED",
           "TextChapter", "TrainingChapter", "adaptive_step_note", "optimizer_story"]


# ---------------------------------------------------------------------------------- synthetic functions
# The chapters on the synthetic suite (``synthetic``, ``fig2``, ``fig6``, ``cor2``) show rows of the
# synthetic runner (optex.experiments.synthetic, directly or through fig2, fig6 and cor2); their configs
# come from each experiment's ``chapter_configs``. Glue keys start with the figure id.
class SyntheticChapter:
    """The figure, tables and readings of the synthetic chapter (``synthetic``): ``results`` of
    :func:`optex.experiments.synthetic.run` for :func:`optex.experiments.synthetic.chapter_configs` on
    ``functions`` with N = ``parallelism``."""

    def __init__(self, results: report.Results, functions: Sequence[str], parallelism: int,
                 figures_dir: str | Path | None = None) -> None:
        self.results, self.frame, self.figure_id = results, results.frame, results.figure_id
        self.functions, self.parallelism = list(functions), parallelism
        self.figures_dir = _figures_dir(figures_dir)

    def settings(self) -> dict[str, Any]:
        """``synthetic-n`` (N) and ``synthetic-sqrt-n``: the gain of order sqrt(N) the theory predicts."""
        return {"synthetic-n": self.parallelism, "synthetic-sqrt-n": math.sqrt(self.parallelism)}

    def curves(self) -> dict[str, Any]:
        """The optimality gap per sequential iteration, one panel per function, published for the report."""
        fig = plotting.curve_grid(self.frame, self.functions, by="function", title=lambda name, rows: name.capitalize(),
                                  methods=synthetic.CHAPTER_METHODS, ncols=2)
        report.publish(fig, self.results, directory=self.figures_dir)
        return {self.figure_id: fig}

    def speedup_tables(self) -> dict[str, Any]:
        """Publish ``<figure id>-speedups`` (the paper's metric) and ``-effective`` (the uncapped speedup);
        return ``-optex-range`` (OptEx's speedup over the functions), ``-target-min`` and ``-profile``."""
        speedups = speedup_table(self.frame)
        groups, methods = [("function", "Function", self.functions)], synthetic.CHAPTER_METHODS
        tables.publish(tables.speedups(speedups, groups, methods), f"{self.figure_id}-speedups",
                       "Sequential iterations each method needs to reach Vanilla's final optimality gap, and the "
                       "speedup over Vanilla (mean over the seeds that reach it, with its 95% t-interval).")
        tables.publish(tables.effective_speedups(effective_speedup_table(self.frame), groups, methods),
                       f"{self.figure_id}-effective",
                       "Effective (uncapped) speedup over Vanilla at half the budget and at its end: the Vanilla "
                       f"iterations (from {_LONG_RUN}) whose best gap first reaches the method's best gap at $t$, "
                       f"over $t$; {_LOWER_BOUND}.")
        low, high = speedups.groupby("method")["speedup"].min(), speedups.groupby("method")["speedup"].max()
        return {f"{self.figure_id}-optex-range": tables.format_range(low["optex"], high["optex"], 1, "×",
                                                                     equal="on every function"),
                f"{self.figure_id}-target-min": float(low["target"]), f"{self.figure_id}-profile": self.results.profile}


# How the effective-speedup tables of the synthetic chapters describe their reference run and their "≥".
_LONG_RUN = ("a Vanilla run $N$ times as long, continued to $2N$ and $4N$ times while another method is still "
             "ahead")
_LOWER_BOUND = "≥: a lower bound, as some seed got below anything that run reached"


def _fig2_title(panel: str, rows: pd.DataFrame) -> str:
    return f"{panel.removesuffix('-10x').capitalize()}, $d = {rows['dim'].iloc[0]:,}$"


BACKEND_FUNCTIONS = ("sphere", "ackley", "rosenbrock", "levy")  # Fig2Chapter.backends, paper profile


class Fig2Chapter:
    """The figures, tables and readings of the Fig. 2 chapter (``fig2``): ``results`` of
    :func:`optex.experiments.fig2.run` for the deterministic configs of
    :func:`optex.experiments.fig2.chapter_configs` on ``panels`` with N = ``parallelism``; the noisy
    variant's results are handed to :meth:`noisy`."""

    def __init__(self, results: report.Results, panels: Sequence[str], parallelism: int,
                 figures_dir: str | Path | None = None) -> None:
        self.results, self.frame, self.figure_id = results, results.frame, results.figure_id
        self.panels, self.parallelism = list(panels), parallelism
        self.figures_dir = _figures_dir(figures_dir)
        shown = self.frame["method"].isin(fig2.CHAPTER_METHODS)
        self.iterations = int(self.frame.loc[shown, "iteration"].max())  # T

    def settings(self) -> dict[str, Any]:
        """``<figure id>-n``: N."""
        return {f"{self.figure_id}-n": self.parallelism}

    def curves(self) -> dict[str, Any]:
        """The optimality gap per sequential iteration, one panel per function, published for the report."""
        fig = plotting.curve_grid(self.frame, self.panels, title=_fig2_title, methods=fig2.CHAPTER_METHODS)
        report.publish(fig, self.results, directory=self.figures_dir)
        return {self.figure_id: fig}

    @functools.cached_property
    def speedups(self) -> pd.DataFrame:
        """Per-seed speedups in sequential iterations (:func:`optex.analysis.speedup_table`)."""
        return speedup_table(self.frame)

    def speedup_tables(self) -> dict[str, Any]:
        """Publish ``<figure id>-speedups`` (the paper's metric) and ``-effective`` (the uncapped speedup);
        return OptEx's ceiling (``-ceiling-iterations``: 1 + ceil((T - 1) / N), ``-ceiling``: T over it),
        ``-target-min``, the ranges of OptEx and LineSearch (``-optex-range``, ``-linesearch-range``), on how
        many of ``-panels`` panels LineSearch is at least as fast as OptEx (``-linesearch-ahead``) and the
        report's verdicts ``-verdict-2x`` and ``-verdict-target``."""
        key, methods = self.figure_id, fig2.CHAPTER_METHODS
        groups = [("panel", "Function", self.panels, report.panel_title)]
        tables.publish(tables.speedups(self.speedups, groups, methods), f"{key}-speedups",
                       "Sequential iterations to reach Vanilla's final gap, and the speedup over Vanilla (mean over "
                       "seeds with its 95% t-interval; an interval of zero width means every seed gave the same "
                       "count).")
        tables.publish(tables.effective_speedups(effective_speedup_table(self.frame), groups, methods),
                       f"{key}-effective", "Effective (uncapped) speedup over Vanilla at $T/2$ and $T$: Vanilla "
                       f"iterations (from {_LONG_RUN}) to reach the method's best gap at $t$, over $t$; "
                       f"{_LOWER_BOUND} (the bound alone where every seed did). Unlike the paper's metric it is not "
                       "capped by the cold-start iteration.")
        ceiling = 1 + math.ceil((self.iterations - 1) / self.parallelism)
        low, high = (self.speedups.groupby("method")["speedup"].agg(f) for f in ("min", "max"))
        pivot = self.speedups.pivot_table(index="panel", columns="method", values="speedup")
        values = {f"{key}-ceiling-iterations": ceiling, f"{key}-ceiling": self.iterations / ceiling,
                  f"{key}-target-min": float(low["target"])}
        for method in ("optex", "linesearch"):
            values[f"{key}-{method}-range"] = tables.format_range(low[method], high[method], 2, "×",
                                                                  equal="on every panel")
        values[f"{key}-linesearch-ahead"] = int((pivot["linesearch"] >= pivot["optex"]).sum())
        values[f"{key}-panels"] = int(len(pivot))
        values[f"{key}-verdict-2x"] = report.speedup_at_least("optex", 2.0)(self.frame).verdict
        values[f"{key}-verdict-target"] = report.trails_ideal("optex", "target", within=2.0)(self.frame).verdict
        return values

    def wallclock(self) -> dict[str, Any]:
        """The best gap so far against the optimizer's wall-clock time (``<figure id>-wallclock``, published
        for the report) and ``-wall-ratio``: OptEx's time over Vanilla's at T, the median over panels."""
        name = f"{self.figure_id}-wallclock"
        fig = plotting.curve_grid(self.frame, self.panels, title=_fig2_title, x="wall_time",
                                  methods=fig2.CHAPTER_METHODS, best_so_far=True, xscale="log",
                                  xlabel="optimizer wall-clock time (s)", ylabel="best gap so far")
        report.publish(fig, self.results, directory=self.figures_dir, name=name)
        final = self.frame[self.frame["iteration"] == self.iterations]
        wall = final.groupby(["panel", "method"])["wall_time"].mean().unstack()
        return {name: fig, f"{self.figure_id}-wall-ratio": float((wall["optex"] / wall["vanilla"]).median())}

    def noisy(self, noisy: report.Results, noise_ratios: Sequence[float]) -> dict[str, Any]:
        """The noisy variant (``noisy``: the results of the noisy configs at ``noise_ratios``): its figure
        (one row per noise level, published for the report), the table ``<figure id>-noisy-table`` of
        speedups, and ``-noisy-optex-wins``: in how many of the ``-noisy-cases`` (noise level, function)
        cases OptEx ends with a lower mean gap than the large batch at T."""
        frame, methods = noisy.frame, fig2.NOISY_METHODS
        shown = [p for p in self.panels if p in set(frame["panel"])]
        cases = [(ratio, panel) for ratio in sorted(noise_ratios) for panel in shown]
        fig = plotting.curve_grid(frame, cases, by=("noise_ratio", "panel"), methods=methods, ncols=len(shown),
                                  title=lambda case, rows: f"{case[1].capitalize()}, noise {case[0]:g}×", height=2.0)
        report.publish(fig, noisy, directory=self.figures_dir)
        speed = pd.concat([speedup_table(frame[frame["noise_ratio"] == r]).assign(noise_ratio=r) for r in noise_ratios])
        groups = [("noise_ratio", "Noise level (× RMS gradient)", sorted(noise_ratios), tables.compact),
                  ("panel", "Function", shown)]
        tables.publish(tables.speedups(speed, groups, methods), f"{self.figure_id}-noisy-table",
                       "Speedup over Vanilla in reaching Vanilla's final gap with noisy gradients, per noise level and "
                       "function (mean over seeds with its 95% t-interval).")
        effective = pd.concat([effective_speedup_table(frame[frame["noise_ratio"] == r]).assign(noise_ratio=r)
                               for r in noise_ratios])
        tables.publish(tables.effective_speedups(effective, groups, methods), f"{self.figure_id}-noisy-effective",
                       "Effective (uncapped) speedup over Vanilla with noisy gradients at $T/2$ and $T$: Vanilla "
                       f"iterations (from {_LONG_RUN.replace('a Vanilla run', 'a noisy Vanilla run')}) to reach the "
                       f"method's best gap at $t$, over $t$; {_LOWER_BOUND}.")
        final = frame[frame["method"].isin(methods) & (frame["iteration"] == self.iterations)]
        final_gap = final.groupby(["noise_ratio", "panel", "method"])["gap"].mean().unstack()
        return {noisy.figure_id: fig,
                f"{self.figure_id}-noisy-optex-wins": int((final_gap["optex"] < final_gap["large_batch"]).sum()),
                f"{self.figure_id}-noisy-cases": int(len(final_gap))}

    def backends(self, functions: Sequence[str] | None = None) -> None:
        """Publish ``<figure id>-backends``: per function, the largest relative difference between the torch
        and jax gaps of a small float64 run (:func:`optex.report.backend_agreement`), or say that only one
        backend is installed. ``functions`` None: the four of the suite in the paper profile, the Sphere
        alone in the quick one (each function costs two compilations of the JAX step, ~10 s on a CPU)."""
        if functions is None:
            functions = BACKEND_FUNCTIONS if self.results.profile == "paper" else BACKEND_FUNCTIONS[:1]
        agreement = report.backend_agreement(tuple(functions))
        if agreement.empty:
            display(Markdown("Only one backend is installed here, so there is nothing to compare."))
            return
        tables.publish(tables.Table(agreement, [tables.label("Function", "function", str.capitalize),
                                                tables.Column("Largest relative difference in the gap",
                                                              tables.number("difference", 2))]),
                       f"{self.figure_id}-backends",
                       "Largest relative difference between the PyTorch and JAX optimality gaps over the iterations "
                       "of a small float64 run of OptEx, per function.")


class Fig6Chapter:
    """The figures, tables and readings of the Fig. 6 chapter (``fig6``): ``results`` of
    :func:`optex.experiments.fig6.run` (the ablations on Rosenbrock); the Picard comparison's results
    are handed to :meth:`picard`."""

    def __init__(self, results: report.Results, figures_dir: str | Path | None = None) -> None:
        self.results, self.frame, self.figure_id = results, results.frame, results.figure_id
        self.figures_dir = _figures_dir(figures_dir)

    def curves(self) -> dict[str, Any]:
        """The five ablation panels (:func:`optex.plotting.sweep_grid`), published for the report."""
        fig = plotting.sweep_grid(self.frame, fig6.PANELS, plotting.FIG6_TITLES, plotting.fig6_styles)
        report.publish(fig, self.results, directory=self.figures_dir)
        return {self.figure_id: fig}

    def final_tables(self) -> dict[str, Any]:
        """Publish ``<figure id>-final`` (each curve's final gap) and ``-speedup-n`` (panel (d) as speedups
        over Vanilla); return ``-best-select`` (the selection rule that ends lowest), ``-sequential-t`` and
        ``-sequential-vs-vanilla`` (the sequential run's last iteration and its gap over Vanilla's there)
        and ``-proxy-ratio`` (the last-gradient surrogate's final gap over the GP mean's); and panel (d)'s
        effective speedup: its largest value at T/2 (``-effective-half-best``, at N = ``-effective-half-best-n``;
        ``-effective-half-t``: T/2) and its range over N at T (``-effective-end-range``, ``-effective-end-t``)."""
        key = self.figure_id
        final = report.fig6_final_gaps(self.frame)
        columns = [tables.label("Panel", "title"), tables.label("Setting", "label"),
                   tables.Column("Final optimality gap (geometric mean)", tables.number("gap"))]
        tables.publish(tables.Table(final, columns, by=["panel", "setting"], order={"panel": fig6.PANELS}),
                       f"{key}-final",
                       "Optimality gap after each curve's last iteration (geometric mean over seeds), per panel and "
                       "setting.")
        speedups, effective = self.parallelism_speedups(), self.parallelism_effective()
        half, end = sorted(effective["iteration"].unique())

        def at(t: int, suffix: str) -> pd.DataFrame:  # the effective speedups at t, columns suffixed, by N
            return effective[effective["iteration"] == t].drop(columns=["method", "iteration"]).add_suffix(suffix) \
                .rename(columns={f"N{suffix}": "N"})
        wide = speedups.merge(at(half, "_half"), on="N").merge(at(end, "_end"), on="N")
        tables.publish(tables.Table(wide, [
            tables.Column("Parallelism $N$", tables.decimals("N", 0)),
            tables.Column("Speedup over Vanilla, paper's metric (95% interval)", tables.interval("speedup", unit="×")),
            tables.Column("Censored seeds", tables.count_of("censored", "seeds")),
            *(tables.effective_column(f"Effective speedup at $t = {t}$ (95% interval)",
                                      *(f"{part}_{name}" for part in ("effective_speedup", "effective_low",
                                                                      "effective_high", "censored", "seeds")))
              for name, t in (("half", half), ("end", end)))], by=["N"]), f"{key}-speedup-n",
            "Panel (d) as speedups. The paper's metric: iterations Vanilla ($N = 1$) needs to reach its final gap, "
            "divided by those OptEx needs with $N$ processes. The effective speedup: iterations of a Vanilla run "
            f"{self.reference_factor} times as long that reach OptEx's best gap at $t$, over $t$ (≥: a lower bound). "
            "Mean and 95% interval over seeds.")
        at_end = effective[effective["iteration"] == end]
        at_half = effective[effective["iteration"] == half]
        best = at_half.loc[at_half["effective_speedup"].idxmax()]
        sequential = final[(final["panel"] == "parallel") & final["setting"].str.startswith("sequential")].iloc[0]
        proxy = final[final["panel"] == "proxy"].set_index("setting")["gap"]
        return {f"{key}-best-select": final[final["panel"] == "select"].sort_values("gap")["label"].iloc[0],
                f"{key}-sequential-t": int(sequential["iteration"]),
                f"{key}-sequential-vs-vanilla": report.fig6_sequential_ratio(self.frame),
                f"{key}-proxy-ratio": float(proxy["last_gradient"] / proxy["kernel"]),
                f"{key}-effective-half-t": int(half), f"{key}-effective-end-t": int(end),
                f"{key}-effective-half-best": float(best["effective_speedup"]),
                f"{key}-effective-half-best-n": int(best["N"]),
                f"{key}-effective-end-range": tables.format_range(at_end["effective_speedup"].min(),
                                                                   at_end["effective_speedup"].max(), 2, "×",
                                                                   equal="for every $N$")}

    @property
    def reference_factor(self) -> int:
        """How many times longer the reference Vanilla run is than the curves (its last iteration over T)."""
        ref = self.frame[self.frame["panel"] == "reference"]["iteration"].max()
        return int(round(ref / self.frame[self.frame["panel"] == "parallelism"]["iteration"].max()))

    def parallelism_effective(self) -> pd.DataFrame:
        """Panel (d)'s effective speedups (:func:`optex.analysis.effective_speedup_table` against the
        figure's long Vanilla run, the ``reference`` panel) at T/2 and T, one row per N > 1 and t."""
        panel = self.frame[self.frame["panel"] == "parallelism"]
        runs = panel.assign(method=panel["setting"].where(panel["setting"] != "N=1", "vanilla"))
        runs = runs.drop(columns=[c for c in ("panel", "setting", "function") if c in runs.columns])
        reference = self.frame[self.frame["panel"] == "reference"][["seed", "iteration", "gap"]]
        table = effective_speedup_table(runs, reference=reference, by=[])
        table = table[table["method"] != "vanilla"]
        return table.assign(N=table["method"].str.removeprefix("N=").astype(int))

    def parallelism_speedups(self) -> pd.DataFrame:
        """Panel (d) as :func:`optex.analysis.speedup_table` rows (N = 1 is Vanilla), one per N > 1 and
        seed, with the column ``N``."""
        panel = self.frame[self.frame["panel"] == "parallelism"]
        reach = speedup_table(panel.assign(method=panel["setting"].where(panel["setting"] != "N=1", "vanilla"))
                              .drop(columns="panel"))
        return reach[reach["method"] != "vanilla"].assign(N=lambda r: r["method"].str.removeprefix("N=").astype(int))

    def picard(self, picard: report.Results) -> dict[str, Any]:
        """The Picard comparison (``picard``: its results): the gap and the base-optimizer steps per round
        (published for the report) and ``<figure id>-picard-steps`` (Picard's mean steps after the last
        round), ``-picard-rounds``, ``-picard-error`` (the largest distance to the sequential trajectory)
        and ``-picard-vs-vanilla`` (steps per round)."""
        frame = picard.frame[picard.frame["method"].isin(fig6.PICARD_METHODS)]
        rounds = int(frame["iteration"].max())
        fig = plotting.steps_figure(frame, fig6.PICARD_METHODS, rounds)
        report.publish(fig, picard, directory=self.figures_dir)
        steps = frame[(frame["method"] == "picard") & (frame["iteration"] == rounds)]["steps"].mean()
        key, pace, error = f"{self.figure_id}-picard", float(steps / rounds), float(frame["trajectory_error"].max())
        reading = ("exactly Vanilla's one step per round: on this problem its parallel evaluations bought nothing"
                   if abs(pace - 1.0) < 1e-9 else f"{tables.fixed(pace, 2)} times Vanilla's one step per round")
        return {picard.figure_id: fig, f"{key}-steps": float(steps), f"{key}-rounds": rounds,
                f"{key}-error": error, f"{key}-error-text": tables.significant(error, 2),
                f"{key}-vs-vanilla": pace, f"{key}-pace": reading}


def _cor2_title(panel: str) -> str:
    return panel.capitalize() + (" (noisy, SGD)" if panel == "quadratic" else " (Adam)")


_COR2_BETWEEN = {True: "All lie above Cor. 2's ½ and below Target's exponent on the same problem.",
                 False: "Not all lie between Cor. 2's ½ and Target's exponent on the same problem: see the table."}


def _n_text(value: float) -> str:
    return "none" if not np.isfinite(value) else str(int(value))


class Cor2Chapter:
    """The figures, tables and readings of the Cor. 2 chapter (``cor2``): ``results`` of
    :func:`optex.experiments.cor2.run` for ``config`` (:func:`optex.experiments.cor2.chapter_configs`),
    shown on ``panels``."""

    def __init__(self, results: report.Results, config: cor2.Config, panels: Sequence[str],
                 figures_dir: str | Path | None = None) -> None:
        self.results, self.frame, self.figure_id = results, results.frame, results.figure_id
        self.config, self.panels = config, list(panels)
        self.figures_dir = _figures_dir(figures_dir)
        self.reach = cor2.iterations_to_target(self.frame, config.target_ratio)

    def curves(self) -> dict[str, Any]:
        """The speedup over Vanilla against N per problem, published with the iterations to the target."""
        fig = plotting.speedup_against_n(cor2.with_vanilla_as_n1(self.reach), self.panels, cor2.METHODS, _cor2_title)
        report.publish(fig, self.results, data=self.reach, directory=self.figures_dir)
        return {self.figure_id: fig}

    def exponents(self) -> dict[str, Any]:
        """Publish ``<figure id>-exponents`` (the fitted exponents a, :func:`optex.experiments.cor2.speedup_exponents`);
        return OptEx's and Target's smallest and largest exponent (``-optex-min``, ...), OptEx's and
        LineSearch's on the quadratic (NaN without it) and ``-optex-between``: whether every OptEx
        exponent lies between 1/2 and Target's on the same problem, as a sentence."""
        key = self.figure_id
        exponents = cor2.speedup_exponents(self.reach)
        tables.publish(tables.Table(exponents[exponents["method"].isin(cor2.METHODS)], [
            tables.label("Problem", "panel", str.capitalize), tables.label("Method", "method", plotting.method_label),
            tables.Column("Exponent $a$ (95% interval)", tables.interval("exponent", "low", "high")),
            tables.Column("Censored runs", tables.number("censored"))], by=["panel", "method"],
            order={"panel": self.panels, "method": cor2.METHODS}), f"{key}-exponents",
            "Fitted exponents $a$ of {eq}`eq-cor2-fit` (mean over seeds with 95% t-interval; a zero-width "
            "interval: every seed gave the same value), and the number of ($N$, seed) runs that never reached "
            "the target.")
        by_method = exponents.set_index(["panel", "method"])["exponent"]
        optex, target = by_method.xs("optex", level="method"), by_method.xs("target", level="method")
        linesearch = by_method.xs("linesearch", level="method")
        between = bool(((optex > 0.5) & (optex < target.reindex(optex.index))).all())
        return {f"{key}-optex-min": float(optex.min()), f"{key}-optex-max": float(optex.max()),
                f"{key}-optex-quadratic": float(optex.get("quadratic", np.nan)),
                f"{key}-target-min": float(target.min()), f"{key}-target-max": float(target.max()),
                f"{key}-optex-range": tables.format_range(optex.min(), optex.max(), 2),
                f"{key}-target-range": tables.format_range(target.min(), target.max(), 2),
                f"{key}-linesearch-quadratic": float(linesearch.get("quadratic", np.nan)),
                f"{key}-optex-between": _COR2_BETWEEN[between]}

    def stability(self) -> dict[str, Any]:
        """The stability part's figure (share of converging seeds and final gap per learning rate and N,
        saved with its rows) and ``<figure id>-target-ratio``, the smallest and largest learning rate
        (``-lr-small``, ``-lr-large``) with their largest converging N (``-n-small``, ``-n-large``: "none"
        where no N converges) and ``-stability-max-n`` (the largest N tried)."""
        key = self.figure_id
        stability = self.reach[self.reach["part"] == "stability"]
        largest = cor2.largest_converging(self.reach)
        share = stability.groupby(["lr", "parallelism"])["reached"].mean().unstack()
        # Geometric mean over the seeds whose run stayed finite (a point is missing where every seed diverged).
        finite_gap = stability.assign(final_gap=stability["final_gap"].where(np.isfinite(stability["final_gap"])))
        final = (finite_gap.groupby(["lr", "parallelism"])["final_gap"]
                 .apply(lambda v: float(np.exp(np.log(v).mean()))).unstack())
        fig = plotting.stability_figure(share, final, largest)
        plotting.save_figure(fig, cor2.STABILITY_ID, stability, self.figures_dir)
        ends = largest.sort_values("lr").iloc[[0, -1]]
        return {cor2.STABILITY_ID: fig, f"{key}-target-ratio": self.config.target_ratio,
                f"{key}-lr-small": float(ends["lr"].iloc[0]), f"{key}-lr-large": float(ends["lr"].iloc[1]),
                f"{key}-n-small": _n_text(ends["largest_n"].iloc[0]),
                f"{key}-n-large": _n_text(ends["largest_n"].iloc[1]),
                f"{key}-stability-max-n": int(largest["tried"].max())}

    def largest_table(self) -> None:
        """Publish ``<figure id>-largest-table``: the largest converging N per learning rate ("(all tried)"
        where it is the largest N tried)."""
        largest = cor2.largest_converging(self.reach)
        largest = largest.assign(text=[_n_text(v) + (" (all tried)" if np.isfinite(v) and v == t else "")
                                       for v, t in zip(largest["largest_n"], largest["tried"])])
        columns = [tables.Column(r"SGD learning rate $\eta$", tables.text("lr", tables.compact)),
                   tables.Column("Largest converging $N$", tables.text("text"))]
        tables.publish(tables.Table(largest, columns, by=["lr"]),
                       f"{self.figure_id}-largest-table", "The largest $N$ that converges, per learning rate.")


__all__ += ["Cor2Chapter", "Fig2Chapter", "Fig6Chapter", "SyntheticChapter"]
