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
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
from IPython.display import Markdown
from scipy import stats

from . import plotting, report, tables
from .analysis import effective_speedup
from .experiments import rl, training
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
        display = plotting.training_table_display(self.table, loss=self.loss, error=self.error)
        tables.publish(tables.frame_table(display), f"{self.figure_id}-table",
                       f"Per panel and method: the paper's metric (sequential iterations to reach Vanilla's {loss} "
                       f"and {error} at $T$, and the speedup over Vanilla, mean over the seeds that reach it with its "
                       "95% interval; \"censored\": seeds that never do), the effective speedup on the "
                       f"{loss} at $T/2$ and $T$ with its 95% interval, and for the two surrogates the median "
                       "cosine between the proxy step's gradient estimate and the true minibatch gradient at "
                       "proxy steps $s = 1, \\dots, N-1$.")
        tables.publish(tables.frame_table(plotting.versus_display(self.versus, self.table)),
                       f"{self.figure_id}-versus",
                       "OptEx against the better of the two LargeBatch runs (chosen per panel by the mean effective "
                       "speedup at $T$): the per-seed ratio of effective speedups at $T$, mean and 95% interval.")
        return {f"{self.prefix}-reading": Markdown(plotting.reading_text(self.summary, self.parallelism, why=why))}

    def time_split(self) -> dict[str, Any]:
        """Publish ``<figure id>-time-split`` (milliseconds per iteration: proxy steps, evaluations, update;
        :func:`optex.plotting.time_split`) and return ``<prefix>-optex-cost``: an OptEx iteration's cost in
        Vanilla iterations, the median over the panels."""
        split = plotting.time_split(self.frame, TIMED)
        shown = split.assign(method=split["method"].map(plotting.method_label)).round(1)
        tables.publish(tables.frame_table(shown), f"{self.figure_id}-time-split",
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
        ``gpu-d``, ``sample-length``, ``threads``, ``nanogpt-ratio`` (nanoGPT's iterations over T) and
        ``size-note``: how the model and minibatch compare with nanoGPT's CPU configuration."""
        first = self.configs[0]
        vocabulary = len(training.task_for(first).dataset.vocabulary)
        gpu = TRANSFORMER_SIZES["gpu"]
        values = {"gpu-d": f"{transformer_dim(vocabulary, gpu['width'], gpu['depth'], gpu['block_size']):,}",
                  "sample-length": training.SAMPLE_LENGTH, "threads": self.threads,
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
        values = {f"{self.prefix}-{key}-s": f"{seconds.loc[name, 'seconds']:.2f}" for name, key in keys.items()}
        values[f"{self.prefix}-optex-eval"] = f"{seconds.loc['optex', 'eval']:.2f}"
        values[f"{self.prefix}-optex-gp"] = f"{seconds.loc['optex', 'proxy'] + seconds.loc['optex', 'update']:.2f}"
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
            lines.append(f"In {row.panel}, OptEx ({row.optex:.2f}×), LineSearch ({row.linesearch:.2f}×) and the last "
                         f"gradient ({row.last_gradient:.2f}×), the three methods whose proxy steps follow something "
                         "other than a fresh true gradient, all end behind plain Vanilla (an effective speedup below 1 "
                         f"at $T$), while Target ({row.target:.2f}×) and {plotting.method_label(row.rival)} "
                         f"({row.large_batch:.2f}×) do not.")
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
                  "t-quantile": f"{stats.t.ppf(0.975, seeds - 1):.2f}" if seeds > 1 else "undefined",
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
                       "seeds that reach it, 95% interval, censored seeds); the best trailing mean return a run "
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
