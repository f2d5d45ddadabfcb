"""OptEx (Algorithm 1) around any gradient-only ``torch.optim`` optimizer."""
from __future__ import annotations

import contextlib
import inspect
import math
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils import _pytree as pytree

from .. import _validation as check
from .._types import StepInfo, report_nonfinite
from . import distributed
from .estimator import GradientEstimator, out_of_band, row_scale, row_top, safe_norm

LossFn = Callable[..., torch.Tensor]
STATE_VERSION = 1


def _check_optimizer(optimizer: Any, kwargs: dict) -> None:
    if not (inspect.isclass(optimizer) and issubclass(optimizer, torch.optim.Optimizer)):
        raise ValueError(f"optimizer must be a torch.optim.Optimizer class (e.g. torch.optim.Adam), got {optimizer!r}")
    if optimizer is torch.optim.SparseAdam:
        raise ValueError("optimizer SparseAdam needs sparse gradients; OptEx feeds dense gradient estimates")
    closure = inspect.signature(optimizer.step).parameters.get("closure")
    if closure is not None and closure.default is inspect.Parameter.empty:
        raise ValueError(f"optimizer {optimizer.__name__} needs a closure (it re-evaluates the loss inside step); "
                         "OptEx needs an optimizer whose step uses the gradient only")
    if "lr" in kwargs and not isinstance(kwargs["lr"], torch.Tensor):
        check.positive_float("lr", kwargs["lr"])


def _clone_state(state: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in state.items()}


def _clone_tree(tree: Any) -> Any:
    """Dicts, lists and tuples rebuilt with every tensor cloned (checkpoints never alias live state)."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().clone()
    if isinstance(tree, Mapping):
        return {k: _clone_tree(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_clone_tree(v) for v in tree)
    return tree


def _stack_batches(batches: Sequence[Any]) -> Any:
    """The N batches as one batch with a leading axis of N (for vmap), or a ValueError naming the process."""
    flat = [pytree.tree_flatten(b) for b in batches]
    first, spec = flat[0]
    for s, (leaves, other) in enumerate(flat):
        if other != spec:
            raise ValueError(f"batches[{s}] has a different structure from batches[0]; every process's batch "
                             "must be built the same way")
        for i, (leaf, ref) in enumerate(zip(leaves, first)):
            if not isinstance(leaf, torch.Tensor):
                raise ValueError(f"batches[{s}] holds a {type(leaf).__name__} (leaf {i}): parallel='vmap' stacks "
                                 "the N batches, so every leaf must be a tensor; use parallel='loop' otherwise")
            if leaf.shape != ref.shape:
                raise ValueError(f"batches[{s}] has a leaf of shape {tuple(leaf.shape)} where batches[0] has "
                                 f"{tuple(ref.shape)}: parallel='vmap' stacks the N batches, so their shapes must "
                                 "agree; use parallel='loop' for batches of different sizes")
    return pytree.tree_unflatten([torch.stack(group) for group in zip(*(leaves for leaves, _ in flat))], spec)


def _check_loss(loss: Any) -> None:
    if not isinstance(loss, torch.Tensor):
        raise ValueError(f"loss_fn must return a scalar tensor, got {type(loss).__name__}")
    if loss.dim() != 0:
        raise ValueError(f"loss_fn must return a scalar tensor, got shape {tuple(loss.shape)}")
    if not loss.is_floating_point():
        raise ValueError(f"loss_fn must return a floating-point scalar, got {loss.dtype}")


def _vmap_error(error: RuntimeError) -> ValueError | None:
    """The user's-terms error for a loss_fn that torch.func cannot batch (None: not a vmap limitation)."""
    text = str(error)
    if "calling .item() on a Tensor" in text:
        what = ("reads a tensor's value in Python (.item(), float(), int(), bool(), or an if/while on a tensor), "
                "which cannot be batched; rewrite that part with tensor operations (e.g. torch.where)")
    elif "mutate a captured Tensor" in text:
        what = ("changes, in place, a tensor it did not receive as an argument (a global tensor, or a module buffer "
                "such as BatchNorm's running statistics); for module buffers pass "
                "buffers=dict(model.named_buffers()) and write loss_fn(params, buffers, batch)")
    elif "randomness" in text:
        what = ("draws random numbers in place into a tensor made outside the batched call (e.g. x.bernoulli_()); "
                "draw them out of place instead (torch.rand_like, torch.nn.functional.dropout)")
    elif text.startswith("vmap") or "functorch" in text or "Batching rule" in text:
        what = "uses an operation that torch.func.vmap cannot batch"
    else:
        return None
    return ValueError(f"loss_fn cannot run under parallel='vmap': it {what}; or pass parallel='loop' "
                      f"(one autograd call per process). torch.func said: {text.splitlines()[0]}")


class OptEx:
    """Approximately parallelized iterations of a first-order optimizer (Shu et al., 2024, Algorithm 1).

    One :meth:`step` is one *sequential* iteration: N-1 proxy steps of the base optimizer driven by
    the gradient estimator's mean mu, the true gradient at all N proxy points theta^(0..N-1) in one
    batched call, the selected process's real optimizer step from its own state, and the N evaluated
    pairs added to the history. Every selection rule depends only on what was evaluated, so only the
    selected process's real step is taken (the other N-1 would be discarded unread); tracing takes
    all N (see :meth:`step`).

    Parameters
    ----------
    params:
        A tensor or a dict of tensors (e.g. ``dict(model.named_parameters())``): floating point, one
        dtype and device, none empty or on the meta device. They are updated in place after every
        step, as a torch optimizer would. They are also read back at the start of every step (one copy
        of the d numbers), so an edit made between steps -- weight decay or a projection by hand,
        ``load_state_dict`` on the model, edits through ``.data`` -- becomes the iterate theta_{t-1}
        the next step starts from; the optimizer state and the history are kept.
    optimizer, **optimizer_kwargs:
        A ``torch.optim.Optimizer`` class whose step needs only the gradient, and its arguments
        (``lr=...``). Its state is carried through the proxy steps: process s starts from the state
        reached after s-1 proxy steps (Sec. 4.2). ``self.optimizer`` is that one optimizer; its first
        parameter group holds the iterate theta_t and the state of the base optimizer there (the
        others are work space), so a learning-rate scheduler attached to it works as usual.
    parallelism:
        N, the number of points whose true gradients are evaluated per sequential iteration.
    history, kernel, lengthscale, noise:
        T0 and the surrogate's settings; see :class:`GradientEstimator`.
    select:
        Which process continues: ``"last"`` (theta_t = theta_t^(N), as in the theory), ``"min_loss"`` or
        ``"min_grad_norm"`` (the loss or gradient norm already evaluated at each process's point; ties
        go to the lowest index).
    proxy:
        ``"kernel"`` (OptEx) or a baseline: ``"none"`` (Vanilla, N = 1), ``"target"`` (proxy steps
        with true gradients: the ideal, N-1 extra *sequential* evaluations), ``"linesearch"`` (process
        j steps with learning rate j*lr along the last selected true gradient, then takes one true
        step; always selects the lowest loss at its points), ``"large_batch"`` (the N gradients are
        averaged at one point; identical to Vanilla on a deterministic objective) or
        ``"last_gradient"`` (the trivial surrogate: the N-1 proxy steps are fed the last selected true
        gradient, a constant, instead of mu; same evaluations and selection as OptEx. Under plain SGD
        it visits LineSearch's points theta - s lr g; with momentum or Adam the two differ).
    parallel:
        ``"vmap"``: the N true gradients in one ``torch.func.vmap`` call (random operations such as
        dropout draw independently per process: ``randomness="different"``); ``"loop"``: one
        autograd call each, for losses that cannot be vmapped. A loss that vmap cannot batch fails
        with a ValueError that says why and suggests ``"loop"`` (the torch error is its ``__cause__``).
        ``"distributed"``: SPMD over the ranks of a ``torch.distributed`` process group (launched with
        ``torchrun``; see :mod:`optex.torch.distributed`): every rank runs the same program, rank r
        evaluates processes p with floor(p W / N) = r one autograd call at a time and one all-gather
        shares the N gradients and losses, so the run equals the ``"loop"`` run bit for bit. Each rank
        needs only its own processes' entries of ``batches`` (the others may be None). With ``seed``,
        process p's random operations draw from a generator seeded by (seed, iteration, p).
    group, check_every:
        ``parallel="distributed"`` only: the process group (None: the default one) and how often (in
        iterations) the ranks compare an exact checksum of theta, failing loudly if they diverged
        (:meth:`check_ranks` does it on demand, e.g. at the end of a run).
    max_grad_norm:
        If set, every gradient fed to the base optimizer (true or estimated) is clipped to this norm;
        the history keeps the unclipped true gradients. Norms are computed as ``m * norm(g / m)`` with m an
        exact power of two, so they neither overflow nor underflow; a gradient whose norm is still not
        finite counts as non-finite.
    on_nonfinite:
        ``"skip"`` (default) or ``"raise"``; see *Non-finite evaluations* below.
    warmup_pairs:
        1 (default) or 2: ``proxy="kernel"`` runs plain Vanilla iterations while the history holds fewer
        pairs. With one pair and a data-driven lengthscale the surrogate is the stored gradient itself
        (see :class:`GradientEstimator`), so that iteration equals a ``"last_gradient"`` one; 2 is the
        behaviour of earlier versions (kept so old results stay reproducible).
    buffers:
        ``None``, or a dict of the model's non-parameter tensors (``dict(model.named_buffers())``:
        BatchNorm running statistics). With buffers, ``loss_fn(params, buffers, batch)`` is called,
        typically as ``functional_call(model, (params, buffers), (x,))``, which updates running
        statistics in place on the buffers it is given. Buffers are never part of theta nor of the
        history: each process evaluates with its own copy of the buffers at theta_{t-1}, and the
        selected process's updated buffers are copied into these tensors (the others are discarded),
        so running statistics advance once per sequential iteration as in a plain training loop.
        Target chains them (process s evaluates with the buffers process s-1's evaluation produced),
        so Target equals N plain sequential steps; LargeBatch keeps the mean of the floating-point
        buffers and the integer ones (``num_batches_tracked``) of its first finite process; Vanilla
        and cold-start iterations keep process 0's. ``model.train()`` / ``model.eval()`` act through
        ``functional_call`` as usual (in eval mode BatchNorm reads and never updates them).
    seed:
        ``None`` (default: random operations in ``loss_fn`` draw from torch's global generator) or a
        non-negative int: each step then runs under ``torch.random.fork_rng`` seeded from
        ``numpy.random.SeedSequence((seed, iteration))``, so a run is reproducible (and resumable from
        a checkpoint) and leaves the global generator as it found it. Process s's dropout mask is not
        the mask a sequential run would draw at that step (and vmap and loop draw differently).

    Notes
    -----
    Non-finite evaluations. A process is non-finite when its point, its loss or any entry of its true
    gradient is not finite (with ``max_grad_norm``: or its gradient norm). It takes no real step, is
    never selected, never enters the history and its buffers are discarded: ``select="last"`` keeps
    the highest-index finite process, ``"min_loss"`` / ``"min_grad_norm"`` the best finite one;
    Target's chain ends at its first non-finite gradient (the processes after it are not evaluated);
    LargeBatch averages the finite gradients only. If every process is non-finite, the iterate, the
    optimizer state, the history, the last gradient and the buffers stay exactly as they were and
    ``StepInfo.skipped`` is True (``iteration`` still advances: the evaluations were spent). Any
    non-finite process is listed in ``StepInfo.nonfinite`` and reported by one ``RuntimeWarning``
    naming the iteration; with ``on_nonfinite="raise"`` the iteration is completed the same way and
    then ``FloatingPointError`` is raised instead.

    Checkpoints. :meth:`state_dict` / :meth:`load_state_dict` save and restore everything a run needs
    to continue bit for bit: the iterate, the optimizer state, the history and its statistics, the
    lengthscale, the last gradient, the buffers, the iteration count and the seed (plain tensors,
    numbers and strings: ``torch.load(path, weights_only=True)`` reads them).
    """

    def __init__(self, params: torch.Tensor | Mapping[str, torch.Tensor], optimizer: type = torch.optim.Adam,
                 parallelism: int = 5, history: int = 50, kernel: Any = "matern52",
                 lengthscale: float | str | None = "auto", noise: float = 1e-3, select: str = "last",
                 proxy: str = "kernel", parallel: str = "vmap", max_grad_norm: float | None = None,
                 on_nonfinite: str = "skip", warmup_pairs: int = 1,
                 buffers: Mapping[str, torch.Tensor] | None = None, seed: int | None = None,
                 group: Any = None, check_every: int = 50, **optimizer_kwargs: Any) -> None:
        (self.parallelism, self.history, self.noise, self.select, self.proxy,
         self.parallel) = check.parallel_settings(parallelism, history, noise, select, proxy, parallel,
                                                  check.TORCH_PARALLEL)
        self.group, self.check_every = group, check.positive_int("check_every", check_every)
        if self.parallel == "distributed":
            distributed.world(group)
        elif group is not None:
            raise ValueError(f"group is only used with parallel='distributed', got parallel={self.parallel!r}")
        _check_optimizer(optimizer, optimizer_kwargs)
        self.max_grad_norm = None if max_grad_norm is None else check.positive_float("max_grad_norm", max_grad_norm)
        self.on_nonfinite = check.choice("on_nonfinite", on_nonfinite, check.ON_NONFINITE)
        self.warmup_pairs = check.warmup_pairs(warmup_pairs, self.proxy, self.history)
        self.seed = None if seed is None else check.nonnegative_int("seed", seed)
        self._targets, self._names, self._shapes = self._structure(params)
        first = self._targets[0]
        self.device = first.device
        self._buffers = self._check_buffers(buffers)
        flat = torch.cat([t.detach().reshape(-1) for t in self._targets]).clone()
        self._numels = [t.numel() for t in self._targets]
        # Leaf tensors of the one optimizer: process 0 holds theta_t and the base optimizer's state there;
        # the proxy chains run on process 1 (Picard keeps its whole window).
        self._procs = [flat.clone().requires_grad_(True) for _ in range(self._process_count())]
        self.optimizer = optimizer([{"params": [p]} for p in self._procs], **optimizer_kwargs)
        if self.proxy == "linesearch" and "lr" not in self.optimizer.defaults:
            raise ValueError(f"proxy='linesearch' needs an optimizer with a learning rate 'lr'; {optimizer.__name__} has none")
        self.estimator = GradientEstimator(kernel, lengthscale, noise, history) if self.proxy == "kernel" else None
        self._last_grad: torch.Tensor | None = None
        self.iteration = 0

    def _process_count(self) -> int:
        return 2

    # ------------------------------------------------------------------ parameters and buffers
    @staticmethod
    def _structure(params: Any) -> tuple[list[torch.Tensor], list[str] | None, list[torch.Size]]:
        if isinstance(params, torch.Tensor):
            targets, names = [params], None
        elif isinstance(params, Mapping) and params and all(isinstance(v, torch.Tensor) for v in params.values()):
            names, targets = list(params.keys()), list(params.values())
        else:
            raise ValueError("params must be a tensor or a non-empty dict of tensors")
        labels = ["params"] if names is None else [f"params[{name!r}]" for name in names]
        for label, t in zip(labels, targets):
            if t.device.type == "meta":
                raise ValueError(f"{label} is on the meta device and holds no values: materialise the model "
                                 "first (e.g. model.to_empty(device=...) and initialise it)")
            if t.numel() == 0:
                raise ValueError(f"{label} has no elements (shape {tuple(t.shape)}): leave empty tensors out")
        if len({(t.dtype, t.device) for t in targets}) != 1:
            raise ValueError("params must all share one dtype and one device")
        if not targets[0].is_floating_point():
            raise ValueError(f"params must be floating point, got {targets[0].dtype}")
        return targets, names, [t.shape for t in targets]

    def _check_buffers(self, buffers: Any) -> dict[str, torch.Tensor] | None:
        if buffers is None:
            return None
        if not isinstance(buffers, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                         for k, v in buffers.items()):
            raise ValueError("buffers must be None or a dict of named tensors, e.g. dict(model.named_buffers())")
        for name, value in buffers.items():
            if value.device != self.device:
                raise ValueError(f"buffers[{name!r}] is on {value.device}, params on {self.device}")
        return dict(buffers)

    def unflatten(self, flat: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """The user's structure (tensor or dict) as views of a flat d-vector."""
        pieces = [piece.view(shape) for piece, shape in zip(flat.split(self._numels), self._shapes)]
        return pieces[0] if self._names is None else dict(zip(self._names, pieces))

    @property
    def params(self) -> torch.Tensor | dict[str, torch.Tensor]:
        """The current iterate theta_t, in the structure (and the very tensors) passed in."""
        return self._targets[0] if self._names is None else dict(zip(self._names, self._targets))

    @property
    def buffers(self) -> dict[str, torch.Tensor] | None:
        """The buffers passed in (the very tensors), holding those of theta_t."""
        return self._buffers

    @property
    def theta(self) -> torch.Tensor:
        """The current iterate as one flat d-vector (a copy of :attr:`params`, edits included)."""
        return torch.cat([t.detach().reshape(-1) for t in self._targets])

    @property
    def dim(self) -> int:
        return self._procs[0].numel()

    @torch.no_grad()
    def _write_back(self) -> None:
        for target, piece in zip(self._targets, self._procs[0].detach().split(self._numels)):
            target.copy_(piece.view(target.shape))

    @torch.no_grad()
    def _read_params(self) -> None:
        """Adopt the user's tensors as theta_{t-1} (bit for bit theta_t of the last step when unedited)."""
        flat = self._procs[0].detach()
        for piece, target in zip(flat.split(self._numels), self._targets):
            piece.copy_(target.detach().reshape(-1))

    # ------------------------------------------------------------------ building blocks
    def _clip(self, grad: torch.Tensor) -> torch.Tensor:
        if self.max_grad_norm is None:
            return grad
        norm = safe_norm(grad).unsqueeze(-1)
        return grad * (self.max_grad_norm / norm).clamp(max=1.0).nan_to_num(nan=1.0)

    def _copy_process(self, src: int, dst: int) -> None:
        self._procs[dst].data.copy_(self._procs[src].data)
        state = self.optimizer.state
        if self._procs[src] in state:
            state[self._procs[dst]] = _clone_state(state[self._procs[src]])
        else:
            state.pop(self._procs[dst], None)

    def _adopt(self, src: int) -> None:
        """Process ``src`` becomes the iterate: its point is copied, its optimizer state moved (not cloned)."""
        self._procs[0].data.copy_(self._procs[src].data)
        state = self.optimizer.state
        moved = state.pop(self._procs[src], None)
        if moved is None:
            state.pop(self._procs[0], None)
        else:
            state[self._procs[0]] = moved

    def _discard_work(self) -> None:
        for p in self._procs[1:]:
            self.optimizer.state.pop(p, None)

    def _optimizer_step(self, grads: Mapping[int, torch.Tensor]) -> None:
        """One base-optimizer step for each process in ``grads`` (others are left untouched)."""
        for i, p in enumerate(self._procs):
            p.grad = self._clip(grads[i]).to(p.dtype) if i in grads else None
        self.optimizer.step()
        for p in self._procs:
            p.grad = None

    @contextlib.contextmanager
    def _scaled_lr(self, process: int, factor: float) -> Iterator[None]:
        group = self.optimizer.param_groups[process]
        lr = group["lr"]
        group["lr"] = factor * lr
        try:
            yield
        finally:
            group["lr"] = lr

    def _sync(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    @contextlib.contextmanager
    def _randomness(self) -> Iterator[None]:
        if self.seed is None:
            yield
            return
        accelerator = self.device.type != "cpu"
        devices = [self.device.index or 0] if accelerator else []
        seed = self._seed_of()
        with torch.random.fork_rng(devices=devices, device_type=self.device.type if accelerator else None):
            torch.manual_seed(seed)
            yield

    def _seed_of(self, *process: int) -> int:
        return int(np.random.SeedSequence((self.seed, self.iteration, *process)).generate_state(1, np.uint64)[0])

    def _evaluate(self, loss_fn: LossFn, points: torch.Tensor, batches: Sequence[Any] | None,
                  buffers: Mapping[str, torch.Tensor] | None = None, first: int = 0
                  ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor] | None]:
        """Losses (n,), true gradients (n x d) and, with buffers, each process's updated buffers (n x ...)
        at the rows of ``points`` (processes ``first`` .. ``first + n - 1``): batch i and a fresh copy of
        ``buffers`` for row i."""
        def flat_loss(flat, *args):
            loss = loss_fn(self.unflatten(flat), *args)
            _check_loss(loss)
            return loss

        n = points.shape[0]
        if self.parallel == "vmap":
            stacked = None if batches is None else _stack_batches(batches)
            try:
                if buffers is None:
                    run = torch.func.vmap(torch.func.grad_and_value(flat_loss),
                                          in_dims=(0, None if batches is None else 0), randomness="different")
                    grads, losses = run(points, stacked)
                    updated = None
                else:
                    def with_buffers(flat, bufs, batch):
                        # A copy made inside the transforms: BatchNorm may update it in place.
                        bufs = {k: v.clone() for k, v in bufs.items()}
                        return flat_loss(flat, bufs, batch), bufs

                    run = torch.func.vmap(torch.func.grad_and_value(with_buffers, has_aux=True),
                                          in_dims=(0, 0, None if batches is None else 0), randomness="different")
                    expanded = {k: v.unsqueeze(0).expand(n, *v.shape) for k, v in buffers.items()}
                    grads, (losses, updated) = run(points, expanded, stacked)
            except RuntimeError as error:
                friendly = _vmap_error(error)
                if friendly is None:
                    raise
                raise friendly from error
        elif self.parallel == "loop":
            losses, grads, updated = self._loop(flat_loss, points, batches, buffers)
        else:
            def rows(at, local_batches, bufs, processes):
                return self._loop(flat_loss, at, local_batches, bufs, processes)

            losses, grads, updated = distributed.evaluate(rows, points, batches, buffers, first, self.parallelism,
                                                          self.group, self.iteration)
        return losses.detach(), grads.detach(), updated

    def _loop(self, flat_loss: LossFn, points: torch.Tensor, batches: Sequence[Any] | None,
              buffers: Mapping[str, torch.Tensor] | None, processes: Sequence[int] | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor] | None]:
        """One autograd call per row. With ``processes`` (distributed) and a seed, process p's random
        operations draw from a generator seeded by (seed, iteration, p), whichever rank evaluates it."""
        grads, losses, copies = [], [], []
        for i, point in enumerate(points):
            batch = None if batches is None else batches[i]
            args = (batch,) if buffers is None else ({k: v.clone() for k, v in buffers.items()}, batch)
            if processes is not None and self.seed is not None:
                torch.manual_seed(self._seed_of(processes[i]))
            with torch.enable_grad():
                x = point.detach().clone().requires_grad_(True)
                loss = flat_loss(x, *args)
                (grad,) = torch.autograd.grad(loss, x)
            grads.append(grad)
            losses.append(loss.detach())
            copies.append(args[0] if buffers is not None else None)
        grads, losses = torch.stack(grads), torch.stack(losses)
        updated = None if buffers is None else {k: torch.stack([c[k] for c in copies]) for k in buffers}
        return losses, grads, updated

    def _is_cold(self) -> bool:
        if self.proxy == "kernel":
            return len(self.estimator) < self.warmup_pairs
        if self.proxy in ("linesearch", "last_gradient"):
            return self._last_grad is None
        return self.proxy == "none"

    # ------------------------------------------------------------------ one sequential iteration
    @torch.no_grad()
    def step(self, loss_fn: LossFn, batches: Sequence[Any] | None = None, trace: bool = False) -> StepInfo:
        """Run one sequential iteration of Algorithm 1 and return what it did and cost.

        ``loss_fn(params, batch)`` (with ``buffers``: ``loss_fn(params, buffers, batch)``) returns a
        scalar loss; ``params`` has the structure given to the constructor. ``batches`` is None for a
        deterministic objective, else one batch per process (N of them; Vanilla takes 1). While the
        history holds fewer than ``warmup_pairs`` pairs (LineSearch and last_gradient: before the first
        gradient), the iteration is a plain Vanilla step on ``batches[0]``.

        ``trace=True`` also takes the real step of every process and fills ``StepInfo.points`` (the
        evaluated points theta^(0..N-1)), ``mus`` (the N-1 gradients that drove the proxy steps: mu,
        the last gradient, or Target's true gradients; None for the other methods) and ``stepped``
        (the point each process reaches with its real step theta_t^(s); a non-finite process's row is
        its evaluated point), as tensors with one row per point. The iteration itself is unchanged.
        """
        if not callable(loss_fn):
            raise ValueError(f"loss_fn must be callable, got {loss_fn!r}")
        check.batches(batches, self.parallelism)
        if not isinstance(trace, bool):
            raise ValueError(f"trace must be True or False, got {trace!r}")
        self._read_params()
        with self._randomness():
            if self._is_cold():
                info = self._vanilla_iteration(loss_fn, batches, trace)
            else:
                run = {"kernel": self._surrogate_iteration, "last_gradient": self._surrogate_iteration,
                       "target": self._target_iteration, "linesearch": self._linesearch_iteration,
                       "large_batch": self._large_batch_iteration}
                info = run[self.proxy](loss_fn, batches, trace)
        self.iteration += 1
        self._write_back()
        if self.parallel == "distributed" and self.iteration % self.check_every == 0:
            self.check_ranks()
        self._report(info)
        return info

    def check_ranks(self) -> None:
        """``parallel="distributed"``: raise RuntimeError if theta differs between the ranks (a collective:
        every rank must call it at the same point of the run)."""
        if self.parallel != "distributed":
            raise ValueError("check_ranks() needs parallel='distributed'")
        distributed.check_ranks(self._procs[0].detach(), self.group, self.iteration)

    def _report(self, info: StepInfo) -> None:
        report_nonfinite(info, self.iteration, self.on_nonfinite)

    def _finite(self, losses: torch.Tensor, top: torch.Tensor, points: torch.Tensor,
                norms: torch.Tensor) -> torch.Tensor:
        """Finite loss, gradient (``top`` = its ``row_top``), point (through its sum: a point that large
        is out of reach anyway) and, with clipping, norm."""
        finite = torch.isfinite(losses) & torch.isfinite(top[:, 0]) & torch.isfinite(points.sum(1))
        return finite & torch.isfinite(norms) if self.max_grad_norm is not None else finite

    def _choose(self, select: str, finite: torch.Tensor, losses: torch.Tensor, norms: torch.Tensor,
                extra: torch.Tensor | None = None) -> tuple[list[bool], int | None, bool]:
        """Algorithm 1, line 9, among the finite processes, read back to the host in one transfer (with the
        0-d flag ``extra``, returned as a bool)."""
        index = torch.arange(finite.shape[0], device=finite.device)
        if select == "last":
            chosen = torch.where(finite, index, -1).max()
        else:
            key = torch.where(finite, losses.to(norms.dtype) if select == "min_loss" else norms, math.inf)
            # The first (lowest) index among the finite processes with the smallest key.
            chosen = (finite & (key == key.min())).to(torch.int8).argmax()
        flag = torch.zeros(1, dtype=torch.long, device=finite.device) if extra is None else extra.to(torch.long).view(1)
        values = torch.cat([finite.to(torch.long), chosen.view(1), flag]).tolist()
        flags = [bool(v) for v in values[:-2]]
        return flags, (values[-2] if any(flags) else None), bool(values[-1])

    def _compare(self, est: torch.Tensor, grads: torch.Tensor, top: torch.Tensor, est_top: torch.Tensor,
                 wide: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Cosine and relative error of the proxy gradients ``est`` against the true ones; when some row is
        outside the band (``wide``) the rows are scaled by exact powers of two first, so gradients of any
        size compare without overflow."""
        true = grads[: est.shape[0]]
        if not wide:
            return (torch.nn.functional.cosine_similarity(est, true, dim=1),
                    (est - true).norm(dim=1) / true.norm(dim=1))
        scale = row_scale(true, top[: est.shape[0]])
        scaled = true * scale
        cosine = torch.nn.functional.cosine_similarity(est * row_scale(est, est_top), scaled, dim=1)
        rel = torch.linalg.vector_norm(est * scale - scaled, dim=1) / torch.linalg.vector_norm(scaled, dim=1)
        return cosine, rel

    def _result(self, *, losses: torch.Tensor, norms: torch.Tensor, chosen: int | None, evaluations: int,
                flags: list[bool], times: list[float], compare: tuple[torch.Tensor, torch.Tensor] | None = None,
                loss: torch.Tensor | None = None, grad_norm: torch.Tensor | None = None,
                trace: dict[str, Any] | None = None) -> StepInfo:
        """StepInfo from device tensors, read back in one transfer."""
        wide = torch.float32 if self.device.type == "mps" else torch.float64
        if chosen is not None:
            loss = losses[chosen].to(norms.dtype) if loss is None else loss.to(norms.dtype)
            grad_norm = norms[chosen] if grad_norm is None else grad_norm
        else:
            loss = grad_norm = torch.full((), math.nan, dtype=norms.dtype, device=norms.device)
        parts = [losses.to(wide), torch.stack([loss, grad_norm]).to(wide)]
        if compare is not None:
            parts += [compare[0].to(wide), compare[1].to(wide)]
        scale = None if self.estimator is None else self.estimator._lengthscale
        if isinstance(scale, torch.Tensor):
            parts.append(scale.to(wide).view(1))
        times.append(self._sync())
        values = torch.cat(parts).tolist()
        n, m = losses.shape[0], 0 if compare is None else compare[0].shape[0]
        if isinstance(scale, torch.Tensor):
            scale = values[-1]
        trace = trace or {}
        return StepInfo(
            loss=values[n], grad_norm=values[n + 1], selected=-1 if chosen is None else chosen,
            evaluations=evaluations, losses=tuple(values[:n]), proxy_cosine=tuple(values[n + 2: n + 2 + m]),
            proxy_rel_error=tuple(values[n + 2 + m: n + 2 + 2 * m]), lengthscale=scale,
            time_proxy=times[1] - times[0], time_eval=times[2] - times[1], time_update=times[3] - times[2],
            nonfinite=tuple(i for i, ok in enumerate(flags) if not ok), skipped=chosen is None, **trace)

    def _keep_buffers(self, updated: dict[str, torch.Tensor] | None, chosen: int) -> None:
        if updated is not None:
            for name, target in self._buffers.items():
                target.copy_(updated[name][chosen])

    def _finish(self, *, losses: torch.Tensor, grads: torch.Tensor, points: torch.Tensor,
                updated: dict[str, torch.Tensor] | None, mus: list[torch.Tensor], times: list[float], select: str,
                work: int | None, trace: bool, linesearch: bool = False, compare: bool = False) -> StepInfo:
        """Selection, the selected process's real step, history, buffers and bookkeeping.

        Process c's point and optimizer state are rebuilt on process 0 (still at theta_{t-1}) by
        replaying its c proxy steps with the stored proxy gradients -- the very arithmetic that made
        them -- unless the work process already holds them (``work`` is the process the chain ended on).
        """
        top = row_top(grads)
        norms = safe_norm(grads, top)
        est = est_top = wide = None
        if compare:
            est = torch.stack(mus).to(grads.dtype)
            est_top = row_top(est)
            wide = out_of_band(torch.cat([top[: est.shape[0]], est_top]))
        flags, chosen, wide = self._choose(select, self._finite(losses, top, points, norms), losses, norms, wide)
        traced = self._trace(points, grads, mus, flags, linesearch) if trace else None
        if chosen is None:
            self._discard_work()
        else:
            if chosen == work and not trace:
                self._adopt(1)
            else:
                self._replay(0, chosen, mus, linesearch)
                self._discard_work()
            self._optimizer_step({0: grads[chosen]})
            if self.estimator is not None:
                keep = slice(None) if all(flags) else torch.tensor(flags, device=self.device)
                self.estimator._store(points[keep], grads[keep], top[keep])
            if self.proxy in ("linesearch", "last_gradient"):
                self._last_grad = grads[chosen].clone()
            self._keep_buffers(updated, chosen)
        comparison = self._compare(est, grads, top, est_top, wide) if compare else None
        return self._result(losses=losses, norms=norms, chosen=chosen, evaluations=losses.shape[0], flags=flags,
                            times=times, compare=comparison, trace=traced)

    def _replay(self, process: int, s: int, mus: list[torch.Tensor], linesearch: bool) -> None:
        """Bring ``process`` (holding theta_{t-1} and its state) to process s's point and state."""
        if linesearch:
            with self._scaled_lr(process, s):
                self._optimizer_step({process: self._last_grad * (s > 0)})
        else:
            for mu in mus[:s]:
                self._optimizer_step({process: mu})

    def _trace(self, points: torch.Tensor, grads: torch.Tensor, mus: list[torch.Tensor], flags: list[bool],
               linesearch: bool) -> dict[str, Any]:
        """Every process's real step, taken on the work process from theta_{t-1} (process 0 untouched)."""
        stepped = points.clone()
        for s, ok in enumerate(flags):
            if ok:
                self._copy_process(0, 1)
                self._replay(1, s, mus, linesearch)
                self._optimizer_step({1: grads[s]})
                stepped[s] = self._procs[1].detach()
        return {"points": points.clone(), "mus": torch.stack(mus).clone() if mus else None, "stepped": stepped}

    def _vanilla_iteration(self, loss_fn: LossFn, batches: Sequence[Any] | None, trace: bool) -> StepInfo:
        times = [self._sync()] * 2
        point = self._procs[0].detach().clone().unsqueeze(0)
        losses, grads, updated = self._evaluate(loss_fn, point, None if batches is None else batches[:1], self._buffers)
        times.append(self._sync())
        return self._finish(losses=losses, grads=grads, points=point, updated=updated, mus=[], times=times,
                            select="last", work=None, trace=trace)

    def _surrogate_iteration(self, loss_fn: LossFn, batches: Sequence[Any] | None, trace: bool) -> StepInfo:
        """OptEx (Eq. 5: proxy steps driven by mu) or its trivial-surrogate ablation (the last gradient)."""
        times = [self._sync()]
        n = self.parallelism
        points = torch.empty((n, self.dim), dtype=self._procs[0].dtype, device=self.device)
        points[0] = self._procs[0].detach()
        mus = []
        if n > 1:
            self._copy_process(0, 1)
        work = self._procs[1].detach()
        for s in range(1, n):
            mus.append(self.estimator.mean(work) if self.proxy == "kernel" else self._last_grad)
            self._optimizer_step({1: mus[-1]})
            points[s] = work
        times.append(self._sync())
        losses, grads, updated = self._evaluate(loss_fn, points, batches, self._buffers)
        times.append(self._sync())
        return self._finish(losses=losses, grads=grads, points=points, updated=updated, mus=mus, times=times,
                            select=self.select, work=n - 1 if n > 1 else None, trace=trace, compare=bool(mus))

    def _target_iteration(self, loss_fn: LossFn, batches: Sequence[Any] | None, trace: bool) -> StepInfo:
        # Proxy steps with the true gradient on the batch the same process later uses; those N-1
        # gradients are reused for the processes' real steps (the official code computes them twice).
        times = [self._sync()]
        n = self.parallelism
        self._copy_process(0, 1)
        work = self._procs[1].detach()
        points, losses, grads, chain = [], [], [], []
        buffers = self._buffers

        def evaluate(at: torch.Tensor, s: int) -> bool:
            loss, grad, updated = self._evaluate(loss_fn, at, None if batches is None else batches[s: s + 1], buffers,
                                                 first=s)
            losses.append(loss)
            grads.append(grad)
            chain.append(updated)
            return bool(torch.isfinite(loss).all() & torch.isfinite(row_top(grad)).all() & torch.isfinite(at.sum()))

        complete = True
        for s in range(n - 1):
            points.append(work.clone())
            if not evaluate(work.unsqueeze(0), s):
                complete = False  # the chain ends at the first non-finite gradient
                break
            buffers = None if chain[-1] is None else {k: v[0] for k, v in chain[-1].items()}
            self._optimizer_step({1: grads[-1][0]})
        times.append(self._sync())
        if complete:
            points = torch.stack(points + [work.clone()])
            evaluate(points[-1:], n - 1)
        else:
            points = torch.stack(points)
        losses, grads = torch.cat(losses), torch.cat(grads)
        updated = None if self._buffers is None else {k: torch.cat([u[k] for u in chain]) for k in self._buffers}
        times.append(self._sync())
        return self._finish(losses=losses, grads=grads, points=points, updated=updated,
                            mus=list(grads[: len(points) - 1]), times=times, select=self.select,
                            work=len(points) - 1, trace=trace)

    def _linesearch_iteration(self, loss_fn: LossFn, batches: Sequence[Any] | None, trace: bool) -> StepInfo:
        # As in the official code: process j steps with learning rate j*lr along the last selected
        # true gradient (j = 0 is fed a zero gradient and does not move), from the current state.
        times = [self._sync()]
        n = self.parallelism
        points = torch.empty((n, self.dim), dtype=self._procs[0].dtype, device=self.device)
        for j in range(n):
            self._copy_process(0, 1)
            self._replay(1, j, [], linesearch=True)
            points[j] = self._procs[1].detach()
        times.append(self._sync())
        losses, grads, updated = self._evaluate(loss_fn, points, batches, self._buffers)
        times.append(self._sync())
        return self._finish(losses=losses, grads=grads, points=points, updated=updated, mus=[], times=times,
                            select="min_loss", work=n - 1, trace=trace, linesearch=True)

    def _large_batch_iteration(self, loss_fn: LossFn, batches: Sequence[Any] | None, trace: bool) -> StepInfo:
        times = [self._sync()] * 2
        point = self._procs[0].detach().clone()
        points = point.expand(self.parallelism, -1)
        losses, grads, updated = self._evaluate(loss_fn, points, batches, self._buffers)
        times.append(self._sync())
        top = row_top(grads)
        norms = safe_norm(grads, top)
        flags, first, _ = self._choose("min_loss", self._finite(losses, top, points, norms), losses, norms)
        loss = grad_norm = None
        if first is not None:
            first = flags.index(True)
            keep = slice(None) if all(flags) else torch.tensor(flags, device=self.device)
            mean = grads[keep].mean(0)
            loss, grad_norm = losses[keep].mean(0), safe_norm(mean.unsqueeze(0))[0]
            self._optimizer_step({0: mean})
            if updated is not None:
                for name, target in self._buffers.items():
                    values = updated[name]
                    target.copy_(values[keep].mean(0) if values.is_floating_point() else values[first])
        traced = None
        if trace:
            stepped = point.unsqueeze(0) if first is None else self._procs[0].detach().clone().unsqueeze(0)
            traced = {"points": point.unsqueeze(0), "mus": None, "stepped": stepped}
        mean_loss = torch.full((1,), math.nan, dtype=losses.dtype, device=self.device) if loss is None else loss.view(1)
        return self._result(losses=mean_loss, norms=norms, chosen=None if first is None else 0,
                            evaluations=self.parallelism, flags=flags, times=times, loss=loss, grad_norm=grad_norm,
                            trace=traced)

    # ------------------------------------------------------------------ checkpoints
    def _settings(self) -> dict[str, Any]:
        return {"parallelism": self.parallelism, "history": self.history, "proxy": self.proxy,
                "select": self.select, "dim": self.dim, "dtype": str(self._procs[0].dtype),
                "optimizer": type(self.optimizer).__name__,
                "buffers": None if self._buffers is None else sorted(self._buffers)}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the run bit for bit, as plain tensors, numbers and strings (copies)."""
        return {
            "version": STATE_VERSION,
            "settings": self._settings(),
            "iteration": self.iteration,
            "seed": self.seed,
            "theta": self.theta,
            "optimizer": _clone_tree(self.optimizer.state_dict()),
            "last_grad": None if self._last_grad is None else self._last_grad.clone(),
            "buffers": None if self._buffers is None else {k: v.detach().clone() for k, v in self._buffers.items()},
            "estimator": None if self.estimator is None else self.estimator.state_dict(),
        }

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the run saved by :meth:`state_dict` (an object built with the same settings).

        The iterate and the buffers are written into the tensors this object was given; the seed and the
        iteration count are the checkpoint's.
        """
        if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
            raise ValueError(f"state must be a dict made by OptEx.state_dict() (version {STATE_VERSION})")
        for key, value in self._settings().items():
            if state["settings"].get(key) != value:
                raise ValueError(f"state was saved with {key}={state['settings'].get(key)!r}, this OptEx has {value!r}")
        self._procs[0].data.copy_(state["theta"])
        self.optimizer.load_state_dict(_clone_tree(state["optimizer"]))
        self._last_grad = None if state["last_grad"] is None else state["last_grad"].clone().to(self.device)
        if self._buffers is not None:
            for name, target in self._buffers.items():
                target.copy_(state["buffers"][name])
        if self.estimator is not None:
            self.estimator.load_state_dict(state["estimator"])
        self.iteration, self.seed = int(state["iteration"]), state["seed"]
        self._write_back()
