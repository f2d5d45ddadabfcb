"""Sec. 6.3: one supervised-training runner for the image and text figures, and the shared method table.

``run(Config(...))`` trains one model on one dataset with every method x seed and returns a tidy table
(one row per method x seed x iteration). Each (method, seed) unit is cached under a hash of the
scientific settings, so a killed run resumes from its finished units; a long unit also checkpoints
inside the run (torch backend), so it resumes near where it stopped.

Methods (``METHODS``; the RL runner reuses the table, :func:`make_optex` and :func:`minibatch_index`)
------------------------------------------------------------------------------------------------------
``vanilla`` the base optimizer alone (N = 1); ``vanilla_long`` the same for N·T iterations (the
reference for the effective speedup); ``linesearch``, ``target`` (proxy steps with true gradients: the
ideal), ``optex`` (kernel surrogate), ``last_gradient`` (the trivial-surrogate ablation: proxy steps
driven by the last selected true gradient); ``large_batch`` (the N gradients averaged at one point, the
base learning rate) and ``large_batch_scaled`` (the same at the learning rate a larger batch is normally
given: x N for SGD, the linear scaling rule of Goyal et al., 2017; x sqrt(N) for Adam and the other
adaptive optimizers, the square-root rule of Malladi et al., 2022), so that LargeBatch is never left at a
setting that handicaps it.

Which minibatch each gradient evaluation sees
---------------------------------------------
Seed s owns one sequence of minibatches: minibatch k (k = 0, 1, ...) is drawn from its own generator
``numpy.random.default_rng([s, 1, k])`` (:func:`optex.data.minibatch_indices`; window offsets for text),
so it is the same whichever method asks for it. A method with n processes (n = 1 for Vanilla, N for the
others) gives process p (0-based) of sequential iteration t (1-based) minibatch k = (t - 1) n + p: every
method reads the sequence in the order of its gradient evaluations.

* Vanilla, iteration t: minibatch t - 1. ``vanilla_long`` continues the same sequence for N·T
  iterations, so Vanilla's run is the first T iterations of ``vanilla_long``.
* OptEx, Target, LineSearch, last_gradient, iteration t: process p evaluates on minibatch (t - 1) N + p.
  Target's chain thus takes true steps on minibatches (t - 1) N ... t N - 1, exactly the steps of
  ``vanilla_long``'s iterations (t - 1) N + 1 ... t N: with ``select="last"``, Target at iteration t is
  ``vanilla_long`` at iteration t N. A cold iteration (history too short for the surrogate, or no last
  gradient yet) is one Vanilla step on process 0's minibatch; the other N - 1 minibatches are skipped.
* LargeBatch: the gradients on minibatches (t - 1) N ... t N - 1, all at θ_{t-1}, are averaged.

Every method starts from the same θ_0, :func:`optex.models.build` with the run's seed.

What is recorded
----------------
Every iteration: the minibatch loss of the selected process (``loss``; LargeBatch: the mean), its
gradient norm, the selected process, cumulative gradient ``evaluations``, the StepInfo time split
(``time_proxy``, ``time_eval``, ``time_update``: seconds) and ``wall_time``, the cumulative seconds inside
``OptEx.step`` (minibatch drawing and the metrics below are not counted), the lengthscale, and at each
proxy step s = 1..N-1 the estimator's cosine with the true gradient and its relative error
(``proxy_cosine_<s>``, ``proxy_rel_error_<s>``; NaN where no surrogate drove the step). Every
``eval_every`` iterations and at 0 and T (N·T for ``vanilla_long``), deterministic metrics with the
model in eval mode on fixed sets (the same for every run): ``train_loss`` / ``train_error`` on
``eval_size`` examples of the training part, ``val_loss`` / ``val_error`` on ``eval_size`` examples of the
held-out validation part (the one to use for every "iterations to reach" number), ``test_loss`` /
``test_error`` on ``eval_size`` test examples; the language model records ``train_loss`` and ``val_loss``
(mean next-character cross-entropy, nats) on ``eval_size`` fixed windows of each part, and a seeded text
``sample`` in its last row.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import io
import math
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .. import _validation as check
from .. import data, models
from ..analysis import REFERENCE
from ..results import ResultStore, Unit, atomic_write, config_hash, process_rank, run_units
from ..verify import Prefix
from .synthetic import backend_adapter

FIGURE_ID = "training"
SPEEDUP_METRIC = "train_loss"  # what the command line's speedup summary compares (deterministic, every k iterations)
DTYPES = ("float32", "float64")
MODELS_FOR = {"mnist": ("mlp", "cnn"), "fashion_mnist": ("mlp", "cnn"), "cifar10": ("mlp", "cnn"),
              "shakespeare": ("transformer",)}
# Sizes a model takes when its field is left at None; a size field the model does not have must stay None.
MODEL_DEFAULTS = {"mlp": {"width": 512, "depth": 5}, "cnn": {"width": 16},
                  "transformer": dict(models.TRANSFORMER_SIZES["cpu"])}
SIZE_FIELDS = ("width", "depth", "heads", "block_size")
LINEAR_LR_SCALING = ("sgd",)  # optimizers whose learning rate grows x N with an N x batch; the others x sqrt(N)
EVAL_CHUNK = 1000  # examples (windows for text) per forward pass of the metrics
SAMPLE_LENGTH = 300  # characters of the text sample in a language model's last row
_CHECKPOINT_FORMAT = 1


# ---------------------------------------------------------------------------------------------- methods
@dataclass(frozen=True)
class Method:
    """How one method of the comparison drives ``OptEx``.

    ``proxy``: OptEx's ``proxy`` option; ``parallel``: N processes per iteration (else one);
    ``scaled_lr``: the larger-batch learning rate (:meth:`lr`); ``long``: N·T sequential iterations.
    """

    label: str
    proxy: str
    parallel: bool = True
    scaled_lr: bool = False
    long: bool = False

    def processes(self, parallelism: int) -> int:
        return parallelism if self.parallel else 1

    def iterations(self, iterations: int, parallelism: int) -> int:
        return iterations * parallelism if self.long else iterations

    def lr(self, optimizer: str, lr: float, parallelism: int) -> float:
        if not self.scaled_lr:
            return lr
        return lr * (parallelism if optimizer in LINEAR_LR_SCALING else math.sqrt(parallelism))


METHODS = {
    "vanilla": Method("Vanilla", "none", parallel=False),
    "vanilla_long": Method("Vanilla (N·T iterations)", "none", parallel=False, long=True),
    "linesearch": Method("LineSearch", "linesearch"),
    "target": Method("Target", "target"),
    "optex": Method("OptEx", "kernel"),
    "large_batch": Method("LargeBatch", "large_batch"),
    "large_batch_scaled": Method("LargeBatch (scaled lr)", "large_batch", scaled_lr=True),
    "last_gradient": Method("Last gradient", "last_gradient"),
}


def minibatch_index(iteration: int, process: int, processes: int) -> int:
    """k of the minibatch that ``process`` (0-based) of sequential ``iteration`` (1-based) evaluates on."""
    return (iteration - 1) * processes + process


def make_optex(backend: str, params: Any, method: str, *, parallelism: int, optimizer: str, lr: float,
               momentum: float = 0.0, history: int = 50, kernel: str = "matern52", lengthscale: float | str = "auto",
               noise: float = 1e-3, select: str = "last", warmup_pairs: int = 1, clip: float | None = None,
               parallel: str = "vmap") -> Any:
    """The ``optex.<backend>.OptEx`` object that runs ``method`` (a ``METHODS`` key) on ``params``."""
    spec = METHODS[check.choice("method", method, METHODS)]
    module = importlib.import_module(f"optex.{backend}")
    options = dict(parallelism=spec.processes(parallelism), history=history, kernel=kernel, lengthscale=lengthscale,
                   noise=noise, select=select, proxy=spec.proxy, parallel=parallel, max_grad_norm=clip,
                   warmup_pairs=warmup_pairs)
    optimizer_args = backend_adapter(backend).optimizer_args(optimizer, spec.lr(optimizer, lr, parallelism), momentum)
    return module.OptEx(params, **options, **optimizer_args)


# ---------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class Config:
    """Settings of one training experiment (one dataset, one model, every method x seed).

    Size fields left at None take the model's defaults (``MODEL_DEFAULTS``): ``width`` is the MLP's
    hidden width, the CNN's first convolution's channels, the transformer's embedding width;
    ``depth`` the MLP's linear layers or the transformer's blocks; ``heads`` and ``block_size``
    (context length) the transformer's. ``validation`` is the fraction of the training set held out
    (images: a fixed random part; text: the last part). ``train_subset`` keeps only that many training
    examples (characters for text) of the training part, for quick profiles. ``eval_size``: examples
    (windows for text) in each fixed evaluation set. ``warmup_pairs``: history pairs OptEx waits for
    before its first proxy step (1, or 2 for the behaviour of earlier versions). ``parallel``: how the
    N gradients are evaluated (``"vmap"``: one batched call; ``"loop"``: one call each; torch
    ``"distributed"``: over the ranks of a ``torchrun`` launch, each rank running this same runner, only
    rank 0 writing results and checkpoints; JAX ``"shard_map"``: over the local devices). ``parallel``,
    ``device``, ``backend`` and ``data_dir`` (a data folder; "" means ``$OPTEX_DATA_DIR``, then the
    cache) say how and where it runs and are not part of the result's identity
    (``optex.results.EXECUTION_FIELDS``).
    """

    dataset: str = "mnist"
    model: str = "mlp"
    width: int | None = None
    depth: int | None = None
    heads: int | None = None
    block_size: int | None = None
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.0
    batch_size: int = 128
    parallelism: int = 4  # N
    iterations: int = 100  # T, sequential iterations
    eval_every: int = 10  # k
    eval_size: int = 1000
    validation: float = 0.1
    train_subset: int | None = None
    methods: tuple[str, ...] = ("vanilla", "vanilla_long", "linesearch", "target", "optex", "large_batch",
                                "large_batch_scaled")
    seeds: int | tuple[int, ...] = 5
    select: str = "last"
    history: int = 50  # T0
    kernel: str = "matern52"
    lengthscale: float | str = "auto"
    noise: float = 1e-3  # sigma^2 of the GP
    warmup_pairs: int = 1
    clip: float | None = None
    parallel: str = "vmap"
    dtype: str = "float32"
    device: str = "cpu"
    backend: str = "torch"
    data_dir: str = ""

    def __post_init__(self) -> None:
        check.choice("dataset", self.dataset, data.DATASETS)
        check.choice("model", self.model, MODELS_FOR[self.dataset])
        for name in SIZE_FIELDS:
            value = getattr(self, name)
            if value is None:
                object.__setattr__(self, name, MODEL_DEFAULTS[self.model].get(name))
            elif name not in MODEL_DEFAULTS[self.model]:
                raise ValueError(f"{name} does not apply to model {self.model!r} (leave it None)")
            else:
                check.positive_int(name, value)
        if self.model == "transformer" and self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be a multiple of heads ({self.heads})")
        check.nonnegative_float("momentum", self.momentum)
        backend_adapter("torch").optimizer_args(self.optimizer, self.lr, self.momentum)  # checks all three
        for name in ("batch_size", "parallelism", "iterations", "eval_every", "eval_size", "history"):
            check.positive_int(name, getattr(self, name))
        if not 0.0 < check.positive_float("validation", self.validation) < 1.0:
            raise ValueError(f"validation must be a fraction in (0, 1), got {self.validation!r}")
        if self.train_subset is not None and check.positive_int("train_subset", self.train_subset) < self.batch_size:
            raise ValueError(f"train_subset ({self.train_subset}) must be at least batch_size ({self.batch_size})")
        check.choices("methods", self.methods, METHODS)
        check.seed_list(self.seeds)
        check.choice("select", self.select, check.SELECT)
        check.choice("kernel", self.kernel, check.KERNELS)
        check.lengthscale(self.lengthscale)
        check.nonnegative_float("noise", self.noise)
        if isinstance(self.warmup_pairs, bool) or self.warmup_pairs not in check.WARMUP_PAIRS:
            raise ValueError(f"warmup_pairs must be one of {check.WARMUP_PAIRS}; got {self.warmup_pairs!r}")
        if self.clip is not None:
            check.positive_float("clip", self.clip)
        check.choice("parallel", self.parallel, check.TORCH_PARALLEL if self.backend == "torch" else check.JAX_PARALLEL)
        check.choice("dtype", self.dtype, DTYPES)
        check.choice("device", self.device, check.DEVICES)
        check.choice("backend", self.backend, check.BACKENDS)
        if self.backend == "jax" and self.model != "mlp":
            raise ValueError(f"backend 'jax' runs model 'mlp' only, not {self.model!r}")
        if not isinstance(self.data_dir, str):
            raise ValueError(f"data_dir must be a path string ('' for $OPTEX_DATA_DIR or the cache), got {self.data_dir!r}")

    @property
    def seed_list(self) -> list[int]:
        return check.seed_list(self.seeds)

    @property
    def is_text(self) -> bool:
        return self.dataset == "shakespeare"


# ---------------------------------------------------------------------------------------------- data
class ImageTask:
    """The data of an image run: normalised training images, minibatches and the fixed evaluation sets.

    Arrays live on the backend's device (``put``): the whole training part, then each minibatch is a
    gather by index. Normalisation: per-channel mean and standard deviation of the training part.
    """

    metric_splits = ("train", "val", "test")

    def __init__(self, name: str, data_dir: str, validation: float, train_subset: int | None, eval_size: int,
                 batch_size: int, dtype: str, put: Callable[[np.ndarray, str], Any]) -> None:
        dataset = data.load(name, data_dir or None)
        self.dataset, self.batch_size, self.put = dataset, batch_size, put
        train, val = data.holdout(len(dataset.train_labels), validation)
        if train_subset is not None:
            train = train[:train_subset]
        if len(train) < batch_size:
            raise ValueError(f"batch_size ({batch_size}) exceeds the {len(train)} training examples")
        pixels = dataset.train_images[train].astype(np.float32) / 255.0
        self.mean = pixels.mean(axis=(0, 2, 3), dtype=np.float64)[:, None, None].astype(np.float32)
        self.std = pixels.std(axis=(0, 2, 3), dtype=np.float64)[:, None, None].astype(np.float32)
        self.train_x, self.train_y = put((pixels - self.mean) / self.std, dtype), put(dataset.train_labels[train], "int")
        self.n_train = len(train)
        test = data.fixed_subset(len(dataset.test_labels), eval_size, stream=0)
        parts = {"train": (dataset.train_images, dataset.train_labels, train[:eval_size]),
                 "val": (dataset.train_images, dataset.train_labels, val[:eval_size]),
                 "test": (dataset.test_images, dataset.test_labels, test)}
        self.eval_sets = {split: [(put(self._normalise(images[index[i: i + EVAL_CHUNK]]), dtype),
                                   labels[index[i: i + EVAL_CHUNK]]) for i in range(0, len(index), EVAL_CHUNK)]
                          for split, (images, labels, index) in parts.items()}

    def _normalise(self, images: np.ndarray) -> np.ndarray:
        return (images.astype(np.float32) / 255.0 - self.mean) / self.std

    def batch(self, seed: int, k: int) -> tuple[Any, Any]:
        index = self.put(data.minibatch_indices(seed, k, self.n_train, self.batch_size), "int")
        return self.train_x[index], self.train_y[index]

    @property
    def describe(self) -> str:
        note = f"; {self.dataset.note}" if self.dataset.note else ""
        return f"{self.dataset.name}: {self.n_train:,} training examples{note}"


class TextTask:
    """The data of a language-model run: token windows of ``block_size`` + 1 (inputs and next-token targets)."""

    metric_splits = ("train", "val")

    def __init__(self, name: str, data_dir: str, validation: float, train_subset: int | None, eval_size: int,
                 batch_size: int, block_size: int, put: Callable[[np.ndarray, str], Any]) -> None:
        dataset = data.load(name, data_dir or None)
        self.dataset, self.batch_size, self.block_size, self.put = dataset, batch_size, block_size, put
        train, val = dataset.split(validation)
        if train_subset is not None:
            train = train[:train_subset]
        self.train_tokens, self.n_train = put(train, "int"), len(train)
        self._steps = np.arange(block_size + 1)
        chunk = max(1, EVAL_CHUNK // 16)
        self.eval_sets = {}
        for stream, (split, tokens) in enumerate((("train", train), ("val", val))):
            x, y = data.windows(tokens, data.fixed_window_offsets(len(tokens), block_size, eval_size, stream), block_size)
            self.eval_sets[split] = [(put(x[i: i + chunk], "int"), y[i: i + chunk]) for i in range(0, len(y), chunk)]

    def batch(self, seed: int, k: int) -> tuple[Any, Any]:
        offsets = data.window_offsets(seed, k, self.n_train, self.block_size, self.batch_size)
        chunk = self.train_tokens[self.put(offsets[:, None] + self._steps, "int")]
        return chunk[:, :-1], chunk[:, 1:]

    @property
    def describe(self) -> str:
        return f"{self.dataset.name}: {self.n_train:,} training characters, vocabulary {len(self.dataset.vocabulary)}"


@functools.lru_cache(maxsize=2)
def _task(dataset: str, data_dir: str, validation: float, train_subset: int | None, eval_size: int,
          batch_size: int, block_size: int, dtype: str, device: str, backend: str) -> ImageTask | TextTask:
    adapter = backend_adapter(backend)
    ints = "int64" if backend == "torch" else "int32"

    def put(values: np.ndarray, kind: str) -> Any:
        # A copy when ``values`` views a read-only dataset array: torch refuses to wrap read-only memory.
        return adapter.asarray(np.require(values, requirements="W"), ints if kind == "int" else kind, device)

    if dataset == "shakespeare":
        return TextTask(dataset, data_dir, validation, train_subset, eval_size, batch_size, block_size, put)
    return ImageTask(dataset, data_dir, validation, train_subset, eval_size, batch_size, dtype, put)


def task_for(config: Config) -> ImageTask | TextTask:
    """The data of ``config`` (cached per process: every unit of a run shares it)."""
    return _task(config.dataset, config.data_dir, config.validation, config.train_subset, config.eval_size,
                 config.batch_size, config.block_size, config.dtype, config.device, config.backend)


def build_model(config: Config, seed: int) -> Any:
    """The torch model of ``config`` with seed ``seed``'s initial weights θ_0 (on the CPU, float32)."""
    dataset = task_for(config).dataset
    if config.model == "transformer":
        return models.build("transformer", seed, vocab_size=len(dataset.vocabulary), width=config.width,
                            depth=config.depth, heads=config.heads, block_size=config.block_size)
    channels, height, width = dataset.image_shape
    if config.model == "mlp":
        return models.build("mlp", seed, in_features=channels * height * width, width=config.width, depth=config.depth)
    return models.build("cnn", seed, in_channels=channels, image_size=height, width=config.width)


def dimension(config: Config) -> int:
    """d, the number of trained parameters of ``config``'s model."""
    return models.num_parameters(build_model(config, 0))


# ---------------------------------------------------------------------------------------------- backends
def _log_softmax_metrics(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Summed cross-entropy and summed errors (float64) of ``logits`` (..., classes) for integer ``labels``."""
    logits = logits.reshape(-1, logits.shape[-1]).astype(np.float64)
    labels = labels.reshape(-1).astype(np.int64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(labels)), labels].sum()), float((logits.argmax(axis=1) != labels).sum())


class _TorchUnit:
    """One method on one seed with the torch backend: model, OptEx object, loss and metrics."""

    def __init__(self, config: Config, method: str, seed: int) -> None:
        import torch
        import torch.nn.functional as F
        from torch.func import functional_call

        adapter = backend_adapter("torch")
        self.torch, self.config = torch, config
        self.model = build_model(config, seed).to(device=adapter.resolve_device(config.device, config.dtype),
                                                  dtype=getattr(torch, config.dtype))
        self.model.train()

        def loss_fn(params: dict[str, Any], batch: tuple[Any, Any]) -> Any:
            x, y = batch
            logits = functional_call(self.model, params, (x,))
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

        self.loss_fn = loss_fn
        self.opt = make_optex("torch", dict(self.model.named_parameters()), method, **_optex_settings(config))
        self.can_checkpoint = hasattr(self.opt, "state_dict")

    def forward(self, x: Any) -> np.ndarray:
        with self.torch.no_grad():
            self.model.eval()
            try:
                return self.model(x).cpu().numpy()
            finally:
                self.model.train()

    def sample(self, task: TextTask, seed: int) -> str:
        generator = self.torch.Generator(device=self.model.token.weight.device).manual_seed(seed)
        prompt = self.torch.as_tensor(task.dataset.encode("\n"), dtype=self.torch.int64, device=generator.device)
        self.model.eval()
        try:
            return task.dataset.decode(self.model.generate(prompt, SAMPLE_LENGTH, generator).tolist()[1:])
        finally:
            self.model.train()


class _JaxUnit:
    """One method on one seed with the JAX backend (the MLP): same θ_0 as torch, plain-function model."""

    def __init__(self, config: Config, method: str, seed: int) -> None:
        import jax

        from ..models import jax_mlp

        if config.dtype == "float64":
            jax.config.update("jax_enable_x64", True)
        params = jax.device_put(jax_mlp.params_from_torch(build_model(config, seed), config.dtype),
                                backend_adapter("jax").resolve_device(config.device, config.dtype))

        self.loss_fn = jax_mlp.loss
        self._apply = jax.jit(jax_mlp.apply)
        self.opt = make_optex("jax", params, method, **_optex_settings(config))
        # The runner's checkpoints are torch files read with weights_only, which holds no numpy arrays (the
        # JAX OptEx.state_dict's): a killed JAX unit starts again.
        self.can_checkpoint = False

    def forward(self, x: Any) -> np.ndarray:
        return np.asarray(self._apply(self.opt.params, x))


def _optex_settings(config: Config) -> dict[str, Any]:
    return dict(parallelism=config.parallelism, optimizer=config.optimizer, lr=config.lr, momentum=config.momentum,
                history=config.history, kernel=config.kernel, lengthscale=config.lengthscale, noise=config.noise,
                select=config.select, warmup_pairs=config.warmup_pairs, clip=config.clip, parallel=config.parallel)


def _metrics(unit: _TorchUnit | _JaxUnit, task: ImageTask | TextTask) -> dict[str, float]:
    out = {}
    for split in task.metric_splits:
        loss = errors = count = 0.0
        for x, y in task.eval_sets[split]:
            batch_loss, batch_errors = _log_softmax_metrics(unit.forward(x), y)
            loss, errors, count = loss + batch_loss, errors + batch_errors, count + y.size
        out[f"{split}_loss"] = loss / count
        if isinstance(task, ImageTask):
            out[f"{split}_error"] = errors / count
    return out


# ---------------------------------------------------------------------------------------------- checkpoints
def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """torch.save(payload), prefixed by its sha256 so that a damaged file is recognised; written atomically
    (by rank 0 only in a distributed run: every rank resumes from the same file)."""
    import torch

    if process_rank() != 0:
        return

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    body = buffer.getvalue()
    atomic_write(path, hashlib.sha256(body).hexdigest().encode() + b"\n" + body)


def _load_checkpoint(path: Path, unit: str, key: str) -> dict[str, Any] | None:
    """The checkpoint of ``unit`` under config hash ``key``, or None (with a warning) when it fails verification."""
    import torch

    if not path.is_file():
        return None
    digest, _, body = path.read_bytes().partition(b"\n")
    problem = None
    if hashlib.sha256(body).hexdigest().encode() != digest:
        problem = "its sha256 does not match (truncated or altered)"
    else:
        payload = torch.load(io.BytesIO(body), weights_only=True)
        if payload.get("format") != _CHECKPOINT_FORMAT or payload.get("unit") != unit or payload.get("config") != key:
            problem = "it belongs to another unit, configuration or format"
    if problem:
        warnings.warn(f"ignoring checkpoint {path}: {problem}; the unit starts again", RuntimeWarning, stacklevel=3)
        return None
    return payload


# ---------------------------------------------------------------------------------------------- one unit
def _step_row(t: int, info: Any, evaluations: int, wall: float, parallelism: int) -> dict[str, Any]:
    row = dict(iteration=t, evaluations=evaluations, loss=info.loss, grad_norm=info.grad_norm, selected=info.selected,
               skipped=info.skipped, lengthscale=np.nan if info.lengthscale is None else info.lengthscale,
               wall_time=wall, time_proxy=info.time_proxy, time_eval=info.time_eval, time_update=info.time_update)
    for s in range(1, parallelism):
        row[f"proxy_cosine_{s}"] = info.proxy_cosine[s - 1] if len(info.proxy_cosine) >= s else np.nan
        row[f"proxy_rel_error_{s}"] = info.proxy_rel_error[s - 1] if len(info.proxy_rel_error) >= s else np.nan
    return row


def _initial_row(parallelism: int) -> dict[str, Any]:
    row = dict(iteration=0, evaluations=0, loss=np.nan, grad_norm=np.nan, selected=-1, skipped=False,
               lengthscale=np.nan, wall_time=0.0, time_proxy=np.nan, time_eval=np.nan, time_update=np.nan)
    for s in range(1, parallelism):
        row[f"proxy_cosine_{s}"] = row[f"proxy_rel_error_{s}"] = np.nan
    return row


def run_unit(config: Config, method: str, seed: int, checkpoint: str | Path | None = None,
             checkpoint_every: float = 300.0, progress: bool = False) -> pd.DataFrame:
    """One method on one seed: tidy rows for iterations 0..T (0..N·T for ``vanilla_long``).

    With ``checkpoint`` (a file path) and a backend that has ``OptEx.state_dict``, the unit saves its
    state there at most every ``checkpoint_every`` seconds and, if the file already holds a verified
    checkpoint of this unit and configuration, continues from it (the rows are the ones an
    uninterrupted run produces, time columns aside).
    """
    spec = METHODS[check.choice("method", method, METHODS)]
    task = task_for(config)
    unit = (_TorchUnit if config.backend == "torch" else _JaxUnit)(config, method, seed)
    n, total = spec.processes(config.parallelism), spec.iterations(config.iterations, config.parallelism)
    name, key = f"{method}-seed{seed}", config_hash(config)
    path = None if checkpoint is None or not unit.can_checkpoint else Path(checkpoint)
    state = None if path is None else _load_checkpoint(path, name, key)
    if state is not None:
        unit.opt.load_state_dict(state["optex"])
        rows, start = state["rows"], state["iteration"]
    else:
        rows, start = [{**_initial_row(config.parallelism), **_metrics(unit, task)}], 0
    evaluations, wall = rows[-1]["evaluations"], rows[-1]["wall_time"]
    saved = time.monotonic()
    bar = tqdm(range(start + 1, total + 1), desc=name, unit="it", leave=False, disable=not progress)
    for t in bar:
        batches = [task.batch(seed, minibatch_index(t, p, n)) for p in range(n)]
        info = unit.opt.step(unit.loss_fn, batches)
        evaluations += info.evaluations
        wall += info.time_total
        row = _step_row(t, info, evaluations, wall, config.parallelism)
        if t % config.eval_every == 0 or t == total:
            row.update(_metrics(unit, task))
        if t == total and config.is_text:
            row["sample"] = unit.sample(task, seed)
        rows.append(row)
        if "train_loss" in row and not math.isfinite(row["train_loss"]):
            break  # diverged: the remaining iterations are recorded as missing
        if path is not None and t < total and time.monotonic() - saved >= checkpoint_every:
            _save_checkpoint(path, {"format": _CHECKPOINT_FORMAT, "unit": name, "config": key, "iteration": t,
                                    "rows": rows, "optex": unit.opt.state_dict()})
            saved = time.monotonic()
    frame = pd.DataFrame(rows)
    frame.insert(0, "seed", seed)
    frame.insert(0, "method", method)
    frame.insert(0, "dataset", config.dataset)
    return frame


# ---------------------------------------------------------------------------------------------- all units
def run(config: Config, results_dir: str | Path | None = "results", figure_id: str = FIGURE_ID,
        progress: bool = True, commit: str | None = None, compute: bool = True,
        checkpoint_every: float = 300.0) -> pd.DataFrame:
    """All methods x seeds of ``config`` as one tidy table (cached per unit under ``results_dir``),
    ordered by ``config.methods``, then seed and iteration.

    ``results_dir=None`` computes without caching (and without checkpoints). ``compute=False`` only
    reads the cache and raises ``FileNotFoundError`` listing what is missing. A unit checkpoints at
    most every ``checkpoint_every`` seconds into its store folder (see :func:`run_unit`).
    """
    if config.parallel == "distributed":
        from ..torch import distributed

        distributed.init()  # the process group torchrun describes (once); every rank runs this same call
    store = None if results_dir is None else ResultStore(results_dir, figure_id, config)
    units = [Unit(f"{method}-seed{seed}",
                  lambda path, m=method, s=seed: run_unit(config, m, s, checkpoint=path,
                                                          checkpoint_every=checkpoint_every, progress=progress),
                  {"method": method, "seed": seed}, checkpoint=True)
             for seed in config.seed_list for method in config.methods]
    frames = run_units(store, units, device=config.device, backend=config.backend, commit=commit, compute=compute,
                       progress=progress, label=f"{figure_id}:{config.dataset}",
                       details=lambda: {"data": task_for(config).describe, "parallel": config.parallel})
    order = {m: i for i, m in enumerate(config.methods)}
    table = pd.concat(frames, ignore_index=True)
    return table.sort_values(["method", "seed", "iteration"], key=lambda c: c.map(order) if c.name == "method" else c,
                             ignore_index=True)


DATASET_TITLES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10",
                  "shakespeare": "Shakespeare"}
OPTIMIZER_TITLES = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "nadam": "NAdam", "radam": "RAdam",
                    "adamax": "Adamax", "rmsprop": "RMSprop", "adagrad": "Adagrad", "adadelta": "Adadelta"}


def panel_name(config: Config) -> str:
    """The figure panel of ``config``: its dataset, base optimizer and learning rate, e.g. "MNIST, SGD 0.01"."""
    return f"{DATASET_TITLES[config.dataset]}, {OPTIMIZER_TITLES[config.optimizer]} {config.lr:g}"


def run_panel(config: Config, **kwargs: Any) -> pd.DataFrame:
    """:func:`run` with a ``panel`` column (:func:`panel_name`), for figures that put several configs side by side."""
    return run(config, **kwargs).assign(panel=panel_name(config))


def _metric_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.split("_")[0] in ("train", "val", "test") or c == "sample"]


def verification(config: Config) -> list[Prefix]:
    """What ``book verify`` recomputes: each method's first ``warmup_pairs + 2`` iterations on the first
    seed (the cold start and two proxy iterations, the second with a fitted lengthscale), with the
    evaluation metrics kept only where the committed run records them (every ``eval_every`` iterations
    and at 0). ``vanilla_long``'s first iterations are Vanilla's (the same minibatch sequence)."""
    seed = config.seed_list[0]
    short = replace(config, iterations=min(config.iterations, config.warmup_pairs + 2))
    computed: dict[str, pd.DataFrame] = {}

    def prefix(method: str) -> pd.DataFrame:
        source = "vanilla" if method == REFERENCE else method
        if source not in computed:
            frame = run_unit(short, source, seed)
            off_grid = (frame["iteration"] % config.eval_every != 0) & (frame["iteration"] != config.iterations)
            frame.loc[off_grid, _metric_columns(frame)] = np.nan
            computed[source] = frame
        return computed[source].assign(method=method)

    return [Prefix(f"{method}-seed{seed}", lambda m=method: prefix(m)) for method in config.methods]


# ------------------------------------------------------------------------------------------ the book's chapters
# The three neural-network chapters (mnist, fig4a, fig4b) run the same methods and differ in their data, model
# and sizes. A chapter's paper profile is what its committed results were computed with: changing a size here
# changes their settings hash, so the page would no longer find them.
CHAPTER_METHODS = ("vanilla", "vanilla_long", "linesearch", "target", "optex", "large_batch", "large_batch_scaled",
                   "last_gradient")


@dataclass(frozen=True)
class Chapter:
    """One neural-network chapter: its figure id, datasets and model, and the experiment size of each
    profile (``scales``: profile -> Config fields; ``seeds``: profile -> optimizer -> seeds, ``default_seeds``
    for an optimizer it does not name)."""

    figure_id: str
    datasets: tuple[str, ...]
    model: str
    scales: Mapping[str, Mapping[str, Any]]
    seeds: Mapping[str, Mapping[str, int]]
    default_seeds: Mapping[str, int]


CHAPTERS = {
    "mnist": Chapter(
        "image-classification", ("mnist", "fashion_mnist"), "mlp",
        scales={"paper": dict(width=128, depth=5, batch_size=64, iterations=300, eval_every=20, eval_size=1000,
                              train_subset=None),
                "quick": dict(width=32, depth=5, batch_size=32, iterations=12, eval_every=4, eval_size=150,
                              train_subset=1000)},
        seeds={"paper": {"sgd": 5, "adam": 3}, "quick": {}}, default_seeds={"paper": 3, "quick": 2}),
    "fig4a": Chapter(
        "cifar10", ("cifar10",), "cnn",
        scales={"paper": dict(width=8, batch_size=32, iterations=300, eval_every=25, eval_size=500, train_subset=None),
                "quick": dict(width=4, batch_size=16, iterations=10, eval_every=5, eval_size=100, train_subset=1000)},
        seeds={"paper": {"sgd": 5, "adam": 3}, "quick": {}}, default_seeds={"paper": 3, "quick": 2}),
    "fig4b": Chapter(
        "text-autoregression", ("shakespeare",), "transformer",
        scales={"paper": dict(**models.TRANSFORMER_SIZES["cpu"], batch_size=12, iterations=100, eval_every=10,
                              eval_size=128, train_subset=None),
                "quick": dict(depth=1, heads=2, width=16, block_size=16, batch_size=4, iterations=8, eval_every=4,
                              eval_size=16, train_subset=20000)},
        seeds={"paper": {}, "quick": {}}, default_seeds={"paper": 3, "quick": 2}),
}


def chapter_configs(name: str, page: Any, optimizers: Mapping[str, float], parallelism: int,
                    datasets: Sequence[str] | None = None, data_dir: str = "",
                    **knobs: Any) -> Callable[[str], list[Config]]:
    """The configs of chapter ``name`` (:data:`CHAPTERS`) by profile, for :meth:`optex.report.Page.results`.

    One config per dataset (default: the chapter's) and base optimizer (``optimizers``: name -> learning
    rate), in that order, at the profile's size with the ``page``'s seeds, device and backend; ``knobs``
    that are not None (``width``, ``iterations``, ``parallel``, ...) replace the profile's value in both
    profiles. Both profiles are built here, so that a bad knob fails before any work starts.
    """
    chapter = CHAPTERS[check.choice("chapter", name, CHAPTERS)]
    datasets = chapter.datasets if datasets is None else datasets
    if not isinstance(datasets, (list, tuple)) or not datasets:
        raise ValueError(f"datasets must be a non-empty list of dataset names, got {datasets!r}")
    if not isinstance(optimizers, Mapping) or not optimizers:
        raise ValueError(f"optimizers must map optimizer names to learning rates, got {optimizers!r}")

    def configs(profile: str) -> list[Config]:
        out = []
        for dataset in datasets:
            for optimizer, lr in optimizers.items():
                settings = page.scale(profile, chapter.scales, **knobs)
                settings.setdefault("seeds", chapter.seeds[profile].get(optimizer, chapter.default_seeds[profile]))
                out.append(Config(dataset=dataset, model=chapter.model, optimizer=optimizer, lr=lr,
                                  parallelism=parallelism, methods=CHAPTER_METHODS, device=page.device,
                                  backend=page.backend, data_dir=data_dir, **settings))
        return out

    for profile in chapter.scales:
        configs(profile)
    return configs


def seeds_text(configs: Sequence[Config]) -> str:
    """The seeds of ``configs`` in words: "3" when every panel has as many, else the count per base
    optimizer ("5 (SGD 0.01), 3 (Adam 0.001)") or, where one optimizer's panels differ, per panel."""
    counts = {panel_name(c): len(c.seed_list) for c in configs}
    if len(set(counts.values())) == 1:
        return str(next(iter(counts.values())))
    by_optimizer: dict[str, set[int]] = {}
    for config in configs:
        by_optimizer.setdefault(f"{OPTIMIZER_TITLES[config.optimizer]} {config.lr:g}", set()).add(len(config.seed_list))
    if all(len(n) == 1 for n in by_optimizer.values()):
        return ", ".join(f"{min(n)} ({name})" for name, n in by_optimizer.items())
    return ", ".join(f"{n} ({name})" for name, n in counts.items())


def glue_settings(configs: Sequence[Config], prefix: str, profile: str) -> dict[str, Any]:
    """The settings a chapter's prose quotes, as glue keys ``<prefix>-<name>`` -> value (text already
    formatted), read from the first of ``configs`` (the panels differ in dataset and optimizer only):
    ``d``, the model's sizes (``width``, ``depth``, ``heads``, ``block`` where the model has them),
    ``batch``, ``T``, ``NT`` (Vanilla's long run), ``N``, ``k``, ``eval-size``, ``train-size``,
    ``history`` (T0), ``train-share`` and ``val-share`` (percent), ``seeds`` (:func:`seeds_text`),
    ``methods`` (runs per seed and panel) and ``profile``; for images ``staged`` (the training images of
    the dataset on disk), for text ``tokens`` (characters predicted per minibatch), ``vocab`` and
    ``uniform`` (log of the vocabulary size: a uniform guess's loss)."""
    if not configs:
        raise ValueError("configs must hold at least one config")
    first = configs[0]
    task = task_for(first)
    values = {"d": f"{dimension(first):,}", "width": first.width, "depth": first.depth, "heads": first.heads,
              "block": first.block_size, "batch": first.batch_size, "T": first.iterations,
              "NT": first.iterations * first.parallelism, "N": first.parallelism, "k": first.eval_every,
              "eval-size": f"{first.eval_size:,}", "train-size": f"{task.n_train:,}", "history": first.history,
              "train-share": f"{100 * (1 - first.validation):g}", "val-share": f"{100 * first.validation:g}",
              "seeds": seeds_text(configs), "methods": len(first.methods), "profile": profile}
    if first.is_text:
        vocabulary = len(task.dataset.vocabulary)
        values.update({"tokens": first.batch_size * first.block_size, "vocab": vocabulary,
                       "uniform": f"{math.log(vocabulary):.2f}"})
    else:
        values["staged"] = f"{len(task.dataset.train_labels):,}"
    return {f"{prefix}-{key}": value for key, value in values.items() if value is not None}


__all__ = ["CHAPTERS", "CHAPTER_METHODS", "Chapter", "Config", "FIGURE_ID", "METHODS", "Method", "MODEL_DEFAULTS",
           "chapter_configs", "glue_settings", "make_optex", "minibatch_index", "run", "run_unit", "run_panel",
           "panel_name", "seeds_text", "task_for", "build_model", "dimension", "verification", "ImageTask",
           "TextTask"]
