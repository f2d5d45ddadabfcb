"""OptEx (Algorithm 1) around any gradient-only ``torch.optim`` optimizer."""
from __future__ import annotations

import inspect
import math
import time
import warnings
from typing import Any, Callable, Mapping, Sequence

import torch
from torch.utils import _pytree as pytree

from .. import _validation as check
from .._types import StepInfo
from .estimator import GradientEstimator

LossFn = Callable[[Any, Any], torch.Tensor]


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


def _stack_batches(batches: Sequence[Any]) -> Any:
    leaves, spec = zip(*(pytree.tree_flatten(b) for b in batches))
    if any(s != spec[0] for s in spec):
        raise ValueError("batches must all have the same structure (one batch per parallel process)")
    return pytree.tree_unflatten([torch.stack(group) for group in zip(*leaves)], spec[0])


class OptEx:
    """Approximately parallelized iterations of a first-order optimizer (Shu et al., 2024, Algorithm 1).

    One :meth:`step` is one *sequential* iteration: N-1 proxy steps of the base optimizer driven by
    the gradient estimator's mean mu, the true gradient at all N proxy points theta^(0..N-1) in one
    batched call, one real optimizer step from each process's own state, the N evaluated pairs added
    to the history, and one process kept.

    Parameters
    ----------
    params:
        A tensor or a dict of tensors (e.g. ``dict(model.named_parameters())``). They are updated in
        place after every step, as a torch optimizer would.
    optimizer, **optimizer_kwargs:
        A ``torch.optim.Optimizer`` class whose step needs only the gradient, and its arguments
        (``lr=...``). Its state is carried through the proxy steps: process s starts from the state
        reached after s-1 proxy steps (Sec. 4.2).
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
        step; always selects the lowest loss at its points) or ``"large_batch"`` (the N gradients are
        averaged at one point; identical to Vanilla on a deterministic objective).
    parallel:
        ``"vmap"``: the N true gradients in one ``torch.func.vmap`` call; ``"loop"``: one autograd
        call each, for losses that cannot be vmapped.
    max_grad_norm:
        If set, every gradient fed to the base optimizer (true or estimated) is clipped to this norm;
        the history keeps the unclipped true gradients.
    """

    def __init__(self, params: torch.Tensor | Mapping[str, torch.Tensor], optimizer: type = torch.optim.Adam,
                 parallelism: int = 5, history: int = 50, kernel: Any = "matern52",
                 lengthscale: float | str | None = "auto", noise: float = 1e-3, select: str = "last",
                 proxy: str = "kernel", parallel: str = "vmap", max_grad_norm: float | None = None,
                 **optimizer_kwargs: Any) -> None:
        (self.parallelism, self.history, self.noise, self.select, self.proxy,
         self.parallel) = check.parallel_settings(parallelism, history, noise, select, proxy, parallel)
        _check_optimizer(optimizer, optimizer_kwargs)
        self.max_grad_norm = None if max_grad_norm is None else check.positive_float("max_grad_norm", max_grad_norm)
        self._targets, self._names, self._shapes = self._structure(params)
        first = self._targets[0]
        flat = torch.cat([t.detach().reshape(-1) for t in self._targets]).clone()
        self._numels = [t.numel() for t in self._targets]
        # One leaf tensor per process: process s holds theta^(s) and, in the optimizer, its own state.
        self._procs = [flat.clone().requires_grad_(True) for _ in range(self.parallelism)]
        self.optimizer = optimizer([{"params": [p]} for p in self._procs], **optimizer_kwargs)
        if self.proxy == "linesearch" and "lr" not in self.optimizer.defaults:
            raise ValueError(f"proxy='linesearch' needs an optimizer with a learning rate 'lr'; {optimizer.__name__} has none")
        self.estimator = GradientEstimator(kernel, lengthscale, noise, history) if self.proxy == "kernel" else None
        self._last_grad: torch.Tensor | None = None
        self.iteration = 0
        self.device = first.device

    # ------------------------------------------------------------------ parameters
    @staticmethod
    def _structure(params: Any) -> tuple[list[torch.Tensor], list[str] | None, list[torch.Size]]:
        if isinstance(params, torch.Tensor):
            targets, names = [params], None
        elif isinstance(params, Mapping) and params and all(isinstance(v, torch.Tensor) for v in params.values()):
            names, targets = list(params.keys()), list(params.values())
        else:
            raise ValueError("params must be a tensor or a non-empty dict of tensors")
        if len({(t.dtype, t.device) for t in targets}) != 1:
            raise ValueError("params must all share one dtype and one device")
        if not targets[0].is_floating_point():
            raise ValueError(f"params must be floating point, got {targets[0].dtype}")
        return targets, names, [t.shape for t in targets]

    def unflatten(self, flat: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """The user's structure (tensor or dict) as views of a flat d-vector."""
        pieces = [piece.view(shape) for piece, shape in zip(flat.split(self._numels), self._shapes)]
        return pieces[0] if self._names is None else dict(zip(self._names, pieces))

    @property
    def params(self) -> torch.Tensor | dict[str, torch.Tensor]:
        """The current iterate theta_t, in the structure (and the very tensors) passed in."""
        return self._targets[0] if self._names is None else dict(zip(self._names, self._targets))

    @property
    def theta(self) -> torch.Tensor:
        """The current iterate as one flat d-vector (a copy)."""
        return self._procs[0].detach().clone()

    @property
    def dim(self) -> int:
        return self._procs[0].numel()

    @torch.no_grad()
    def _write_back(self) -> None:
        for target, piece in zip(self._targets, self._procs[0].detach().split(self._numels)):
            target.copy_(piece.view(target.shape))

    # ------------------------------------------------------------------ building blocks
    def _clip(self, grad: torch.Tensor) -> torch.Tensor:
        if self.max_grad_norm is None:
            return grad
        norm = grad.norm(dim=-1, keepdim=True)
        return grad * (self.max_grad_norm / norm).clamp(max=1.0).nan_to_num(nan=1.0)

    def _copy_process(self, src: int, dst: int) -> None:
        self._procs[dst].data.copy_(self._procs[src].data)
        state = self.optimizer.state
        if self._procs[src] in state:
            state[self._procs[dst]] = _clone_state(state[self._procs[src]])
        else:
            state.pop(self._procs[dst], None)

    def _optimizer_step(self, grads: Mapping[int, torch.Tensor]) -> None:
        """One base-optimizer step for each process in ``grads`` (others are left untouched)."""
        for i, p in enumerate(self._procs):
            p.grad = self._clip(grads[i]).to(p.dtype) if i in grads else None
        self.optimizer.step()
        for p in self._procs:
            p.grad = None

    def _sync(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _evaluate(self, loss_fn: LossFn, points: torch.Tensor, batches: Sequence[Any] | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Losses (n,) and true gradients (n x d) at the rows of ``points``, batch i for row i."""
        def flat_loss(flat, batch):
            return loss_fn(self.unflatten(flat), batch)

        if self.parallel == "vmap":
            grad_and_value = torch.func.grad_and_value(flat_loss)
            if batches is None:
                grads, losses = torch.func.vmap(grad_and_value, in_dims=(0, None))(points, None)
            else:
                grads, losses = torch.func.vmap(grad_and_value)(points, _stack_batches(batches))
        else:
            grads, losses = [], []
            for i, point in enumerate(points):
                with torch.enable_grad():
                    x = point.detach().clone().requires_grad_(True)
                    loss = flat_loss(x, None if batches is None else batches[i])
                    if loss.dim() != 0:
                        raise ValueError(f"loss_fn must return a scalar, got shape {tuple(loss.shape)}")
                    (grad,) = torch.autograd.grad(loss, x)
                grads.append(grad)
                losses.append(loss.detach())
            grads, losses = torch.stack(grads), torch.stack(losses)
        grads, losses = grads.detach(), losses.detach()
        finite = torch.isfinite(losses) & torch.isfinite(grads.sum(1))
        if not bool(finite.all()):
            warnings.warn(f"loss_fn returned a non-finite loss or gradient at process(es) "
                          f"{(~finite).nonzero().flatten().tolist()} of iteration {self.iteration + 1}; "
                          "pairs with a non-finite point or gradient are kept out of the gradient history",
                          RuntimeWarning, stacklevel=3)
        return losses, grads

    def _is_cold(self) -> bool:
        if self.proxy == "kernel":
            return len(self.estimator) < 2
        if self.proxy == "linesearch":
            return self._last_grad is None
        return self.proxy == "none"

    # ------------------------------------------------------------------ one sequential iteration
    @torch.no_grad()
    def step(self, loss_fn: LossFn, batches: Sequence[Any] | None = None) -> StepInfo:
        """Run one sequential iteration of Algorithm 1 and return what it did and cost.

        ``loss_fn(params, batch)`` returns a scalar loss; ``params`` has the structure given to the
        constructor. ``batches`` is None for a deterministic objective, else one batch per process
        (N of them; Vanilla takes 1). While the history holds fewer than 2 pairs (no previous gradient
        for LineSearch), the iteration is a plain Vanilla step on ``batches[0]``.
        """
        if not callable(loss_fn):
            raise ValueError(f"loss_fn must be callable, got {loss_fn!r}")
        check.batches(batches, self.parallelism)
        cold = self._is_cold()
        run = {"kernel": self._kernel_iteration, "target": self._target_iteration,
               "linesearch": self._linesearch_iteration, "large_batch": self._large_batch_iteration}
        info = self._vanilla_iteration(loss_fn, batches) if cold else run[self.proxy](loss_fn, batches)
        self.iteration += 1
        self._write_back()
        return info

    def _finish(self, losses: torch.Tensor, grads: torch.Tensor, points: torch.Tensor, select: str,
                mus: list[torch.Tensor], times: list[float], evaluations: int) -> StepInfo:
        """Selection (Algorithm 1, line 9), history update, bookkeeping."""
        norms = grads.norm(dim=1)
        if select == "last":
            chosen = len(losses) - 1
        else:
            key = losses if select == "min_loss" else norms
            # Non-finite processes never win; argmin returns the first (lowest) index among ties.
            chosen = int(torch.argmin(torch.where(torch.isfinite(key), key, torch.full_like(key, math.inf))))
        if self.estimator is not None:
            self.estimator.add(points, grads)
        if self.proxy == "linesearch":
            self._last_grad = grads[chosen].clone()
        if chosen != 0:
            self._copy_process(chosen, 0)
        cosine, rel = (), ()
        if mus:
            est, true = torch.stack(mus).to(grads.dtype), grads[: len(mus)]
            cosine = tuple(torch.nn.functional.cosine_similarity(est, true, dim=1).tolist())
            rel = tuple(((est - true).norm(dim=1) / true.norm(dim=1)).tolist())
        times.append(self._sync())
        scalars = torch.stack([losses[chosen].to(norms.dtype), norms[chosen]]).tolist()
        return StepInfo(
            loss=scalars[0], grad_norm=scalars[1], selected=chosen, evaluations=evaluations,
            losses=tuple(losses.tolist()), proxy_cosine=cosine, proxy_rel_error=rel,
            lengthscale=None if self.estimator is None else self.estimator.lengthscale_,
            time_proxy=times[1] - times[0], time_eval=times[2] - times[1], time_update=times[3] - times[2])

    def _vanilla_iteration(self, loss_fn: LossFn, batches: Sequence[Any] | None) -> StepInfo:
        times = [self._sync()] * 2
        point = self._procs[0].detach().clone().unsqueeze(0)  # a copy: the step below moves the process
        losses, grads = self._evaluate(loss_fn, point, None if batches is None else batches[:1])
        times.append(self._sync())
        self._optimizer_step({0: grads[0]})
        return self._finish(losses, grads, point, "last", [], times, evaluations=1)

    def _kernel_iteration(self, loss_fn: LossFn, batches: Sequence[Any] | None) -> StepInfo:
        times = [self._sync()]
        mus = []
        for s in range(1, self.parallelism):  # Eq. (5): proxy steps driven by the estimator's mean
            self._copy_process(s - 1, s)
            mus.append(self.estimator.mean(self._procs[s].detach()))
            self._optimizer_step({s: mus[-1]})
        points = torch.stack([p.detach() for p in self._procs])
        times.append(self._sync())
        losses, grads = self._evaluate(loss_fn, points, batches)
        times.append(self._sync())
        self._optimizer_step(dict(enumerate(grads)))
        return self._finish(losses, grads, points, self.select, mus, times, evaluations=self.parallelism)

    def _target_iteration(self, loss_fn: LossFn, batches: Sequence[Any] | None) -> StepInfo:
        # Proxy steps with the true gradient on the batch the same process later uses; those N-1
        # gradients are reused for the parallel step (the official code computes them twice).
        times = [self._sync()]
        losses, grads = [], []
        for s in range(1, self.parallelism):
            self._copy_process(s - 1, s)
            batch = None if batches is None else batches[s - 1: s]
            loss, grad = self._evaluate(loss_fn, self._procs[s].detach().unsqueeze(0), batch)
            losses.append(loss)
            grads.append(grad)
            self._optimizer_step({s: grad[0]})
        points = torch.stack([p.detach() for p in self._procs])
        times.append(self._sync())
        loss, grad = self._evaluate(loss_fn, points[-1:], None if batches is None else batches[-1:])
        losses, grads = torch.cat(losses + [loss]), torch.cat(grads + [grad])
        times.append(self._sync())
        self._optimizer_step(dict(enumerate(grads)))
        return self._finish(losses, grads, points, self.select, [], times, evaluations=self.parallelism)

    def _linesearch_iteration(self, loss_fn: LossFn, batches: Sequence[Any] | None) -> StepInfo:
        # As in the official code: process j steps with learning rate j*lr along the last selected
        # true gradient (j = 0 is fed a zero gradient and does not move), from the current state.
        times = [self._sync()]
        for j in range(1, self.parallelism):
            self._copy_process(0, j)
        lrs = [group["lr"] for group in self.optimizer.param_groups]
        for j, group in enumerate(self.optimizer.param_groups):
            group["lr"] = j * lrs[j]
        self._optimizer_step({j: self._last_grad * (j > 0) for j in range(self.parallelism)})
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        points = torch.stack([p.detach() for p in self._procs])
        times.append(self._sync())
        losses, grads = self._evaluate(loss_fn, points, batches)
        times.append(self._sync())
        self._optimizer_step(dict(enumerate(grads)))
        return self._finish(losses, grads, points, "min_loss", [], times, evaluations=self.parallelism)

    def _large_batch_iteration(self, loss_fn: LossFn, batches: Sequence[Any] | None) -> StepInfo:
        times = [self._sync()] * 2
        points = self._procs[0].detach().clone().expand(self.parallelism, -1)
        losses, grads = self._evaluate(loss_fn, points, batches)
        times.append(self._sync())
        self._optimizer_step({0: grads.mean(0)})
        return self._finish(losses.mean(0, keepdim=True), grads.mean(0, keepdim=True), points[:1],
                            "last", [], times, evaluations=self.parallelism)
