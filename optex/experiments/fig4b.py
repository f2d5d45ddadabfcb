"""Sec. 6.3, Fig. 4b (v2) / Fig. 4 (v1): the character-level transformer on tiny Shakespeare.

The runs themselves are :mod:`optex.experiments.training` runs (``dataset="shakespeare"``,
``model="transformer"``); this module adds what the text chapter needs on top of them:

- :func:`run_sized`: a training run tagged with its panel and its model's size (``d``, ``size``), for
  the estimator's cosine against the number of parameters;
- :func:`size_configs`: one configuration per model size of :data:`COSINE_SIZES`, everything else kept;
  :func:`cosine_configs`: the same for the two surrogate methods only (OptEx and the last gradient),
  shorter and on fewer seeds: the runs that measure the estimator's cosine against d;
- :func:`chapter_configs`: the chapter's training and cosine runs by profile, from its parameters;
- :func:`use_threads`: how many CPU threads torch uses. The book's runs use one: on a small shared CPU
  the element-wise work of these small models is dominated by the threads' synchronisation (a quick
  run measured 2-9 CPU-seconds per unit with two threads under load, 0.2-0.3 with one).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Mapping, Sequence

import pandas as pd

from . import training

# Model sizes of the cosine-against-d sweep (depth, heads, width; the context stays the run's): from a
# one-block toy to twice the CPU-sized model's width. The third is the chapter's CPU-sized model.
COSINE_SIZES: tuple[Mapping[str, int], ...] = (
    {"depth": 1, "heads": 4, "width": 32},
    {"depth": 2, "heads": 4, "width": 64},
    {"depth": 4, "heads": 4, "width": 128},
    {"depth": 4, "heads": 8, "width": 256},
)
SURROGATE_METHODS = ("optex", "last_gradient")


def size_label(config: training.Config) -> str:
    """The transformer's shape in words, e.g. "4 blocks x width 128"."""
    blocks = "block" if config.depth == 1 else "blocks"
    return f"{config.depth} {blocks} × width {config.width}"


def size_configs(config: training.Config, sizes: Sequence[Mapping[str, int]] = COSINE_SIZES) -> list[training.Config]:
    """``config`` at every model size of ``sizes`` (mappings of ``depth``, ``heads``, ``width``)."""
    if config.model != "transformer":
        raise ValueError(f"size_configs varies the transformer's size; config.model is {config.model!r}")
    if not sizes:
        raise ValueError("sizes must name at least one model size")
    out = []
    for size in sizes:
        unknown = sorted(set(size) - {"depth", "heads", "width"})
        if unknown:
            raise ValueError(f"sizes: unknown field(s) {', '.join(unknown)} (use depth, heads, width)")
        out.append(replace(config, **size))
    return out


def cosine_configs(configs: Sequence[training.Config], iterations: int, seeds: int | tuple[int, ...],
                   sizes: Sequence[Mapping[str, int]] = COSINE_SIZES) -> list[training.Config]:
    """For each of ``configs`` and each model size of ``sizes``: the same run with the surrogate methods
    only (``optex`` and ``last_gradient``, whose proxy steps record the estimator's cosine), ``iterations``
    sequential iterations and ``seeds``."""
    return [c for base in configs for c in size_configs(
        replace(base, methods=SURROGATE_METHODS, iterations=iterations, seeds=seeds), sizes)]


def use_threads(threads: int) -> int:
    """Set torch's intra-op CPU threads to ``threads`` (a positive integer) and return it."""
    import torch

    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    torch.set_num_threads(threads)
    return threads


def run_sized(config: training.Config, **kwargs: Any) -> pd.DataFrame:
    """:func:`optex.experiments.training.run_panel` with the model's parameter count ``d`` and its
    shape (``size``, :func:`size_label`) as columns."""
    return training.run_panel(config, **kwargs).assign(d=training.dimension(config), size=size_label(config))


# The cosine-against-d runs of each profile: a fresh short run of the surrogates at every model size.
SWEEP = {"paper": dict(iterations=20, seeds=1, sizes=COSINE_SIZES),
         "quick": dict(iterations=4, seeds=1, sizes=({"depth": 1, "heads": 2, "width": 8},
                                                     {"depth": 1, "heads": 2, "width": 16}))}


def chapter_configs(page: Any, optimizers: Mapping[str, float], parallelism: int, iterations: int | None = None,
                    data_dir: str = "", sample_seed: int = 0, threads: int = 1
                    ) -> tuple[Callable[[str], list[training.Config]], Callable[[str], list[training.Config]]]:
    """The text chapter's training configs and its cosine-against-d configs (:data:`SWEEP`), each by
    profile (:func:`optex.experiments.training.chapter_configs` with chapter ``"fig4b"``). Sets torch's
    CPU ``threads`` and checks every parameter here: the backend is torch, and ``sample_seed`` (the
    run whose generated text the chapter shows) is one of the paper profile's seeds."""
    use_threads(threads)
    if page.backend != "torch":
        raise ValueError(f"backend must be 'torch' for the transformer, got {page.backend!r}")
    configs = training.chapter_configs("fig4b", page, optimizers, parallelism, data_dir=data_dir, iterations=iterations)

    def sweep(profile: str) -> list[training.Config]:
        return cosine_configs(configs(profile), **SWEEP[profile])

    for profile in SWEEP:
        sweep(profile)
    if isinstance(sample_seed, bool) or not isinstance(sample_seed, int) or \
            sample_seed not in configs("paper")[0].seed_list:
        raise ValueError(f"sample_seed must be one of the runs' seeds, got {sample_seed!r}")
    return configs, sweep


__all__ = ["COSINE_SIZES", "SURROGATE_METHODS", "SWEEP", "chapter_configs", "cosine_configs", "run_sized",
           "size_configs", "size_label", "use_threads"]
