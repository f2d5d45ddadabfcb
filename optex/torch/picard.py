"""An exact parallel competitor: Picard iteration over a sliding window of optimizer steps.

The idea of ParaDiGMS (Shih et al., 2023), applied to an optimizer instead of a diffusion sampler: the
next N iterates theta_{k+1..k+N} of the base optimizer solve the fixed-point system
theta_{j+1} = U(theta_j, state_j, grad f(theta_j)). One round evaluates the N gradients of the current
window in one batched call, then replays the N (cheap) optimizer updates from the window's exact
start with those gradients. theta_{k+1} is exact after every round; each further iterate is accepted
once its change between rounds falls below ``tol`` (relative), and the window slides past the
accepted iterates. At worst a round advances one step (Vanilla); at best N (Target). Unlike OptEx
the result is the base optimizer's own trajectory, to within ``tol``.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from .. import _validation as check
from .._types import StepInfo
from .optex import LossFn, OptEx


class Picard(OptEx):
    """Sliding-window Picard iteration of a base optimizer with N parallel gradient evaluations per round.

    ``params``, ``optimizer``, ``parallelism`` (N, the window length), ``parallel``, ``max_grad_norm``
    and ``**optimizer_kwargs`` are as for :class:`OptEx`. ``tol`` is the relative change
    |theta_new - theta_old| / max(|theta_old|, 1) below which a window iterate counts as converged.
    Deterministic objectives only (each window position would need its own fixed batch).
    :attr:`steps` counts the exact base-optimizer steps done so far; :attr:`params` is that iterate.
    """

    def __init__(self, params: torch.Tensor | Mapping[str, torch.Tensor], optimizer: type = torch.optim.Adam,
                 parallelism: int = 5, tol: float = 1e-6, parallel: str = "vmap", max_grad_norm: float | None = None,
                 **optimizer_kwargs: Any) -> None:
        super().__init__(params, optimizer, parallelism=parallelism, proxy="target", parallel=parallel,
                         max_grad_norm=max_grad_norm, **optimizer_kwargs)
        self.tol = check.positive_float("tol", tol)
        self.steps = 0

    def _process_count(self) -> int:
        return self.parallelism  # the whole window persists between rounds

    def state_dict(self) -> dict[str, Any]:
        """:meth:`OptEx.state_dict` plus the window and the step count."""
        return dict(super().state_dict(), window=torch.stack([p.detach() for p in self._procs]).clone(),
                    steps=self.steps)

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        for p, saved in zip(self._procs, state["window"]):
            p.data.copy_(saved)
        self.steps = int(state["steps"])

    @torch.no_grad()
    def step(self, loss_fn: LossFn, batches: Sequence[Any] | None = None) -> StepInfo:
        """One round: N gradients in one batched call, replay, accept the converged prefix, slide."""
        if batches is not None:
            raise ValueError("batches must be None: Picard iteration needs a deterministic objective")
        n = self.parallelism
        times = [self._sync()]
        old = torch.stack([p.detach() for p in self._procs])
        times.append(self._sync())
        losses, grads, _ = self._evaluate(loss_fn, old, None)
        times.append(self._sync())
        # Replay the window from its exact start with the gradients just evaluated.
        for j in range(n - 1):
            self._copy_process(j, j + 1)
            self._optimizer_step({j + 1: grads[j]})
        new = torch.stack([p.detach() for p in self._procs])
        change = (new - old).norm(dim=1) / old.norm(dim=1).clamp_min(1.0)
        converged = (change[1:] < self.tol).tolist() + [False]
        accepted = 1 + converged.index(False)  # theta_{k+1} is always exact
        if accepted == n:
            self._copy_process(n - 1, 0)
            self._optimizer_step({0: grads[n - 1]})
            for i in range(1, n):
                self._copy_process(0, i)
        else:
            for i in range(n - accepted):
                self._copy_process(accepted + i, i)
            for i in range(n - accepted, n):
                self._copy_process(n - accepted - 1, i)
        self.steps += accepted
        self.iteration += 1
        self._write_back()
        times.append(self._sync())
        norms = grads.norm(dim=1)
        return StepInfo(loss=float(losses[0]), grad_norm=float(norms[0]), selected=0, evaluations=n,
                        losses=tuple(losses.tolist()), proxy_cosine=(), proxy_rel_error=(), lengthscale=None,
                        time_proxy=times[1] - times[0], time_eval=times[2] - times[1],
                        time_update=times[3] - times[2], advanced=accepted)
