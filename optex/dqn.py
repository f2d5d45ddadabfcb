"""A compact DQN (Mnih et al., 2015) whose Q-network update is one ``OptEx.step``.

The pieces, each small enough to read at once (CleanRL's single-file ``dqn.py`` is the model):

- :class:`ReplayBuffer`: a numpy ring buffer of transitions (s, a, r, s', terminated) and uniform
  sampling with a caller's generator;
- :func:`q_network`: the Q-network, an MLP with two hidden layers (:class:`optex.models.MLP`);
- :func:`epsilon`: the exploration rate, 1 during the warm-up episodes, then falling linearly to
  ``epsilon_min``;
- :func:`td_targets`: r + γ (1 - terminated) max_a' Q_target(s', a'), from the target network;
- :func:`td_loss`: the Huber loss between Q(s, a) and the TD target, as a ``loss_fn(params, batch)``
  for ``OptEx.step`` (``batch = (states, actions, targets)``).

A truncated episode (time limit) is bootstrapped like any other transition; only a terminal state
(``terminated``) has no future value. The experiment that drives these pieces, with its seeding and
checkpoints, is :mod:`optex.experiments.rl`.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from . import _validation as check
from . import models

FIELDS = ("states", "actions", "rewards", "next_states", "terminated")


class ReplayBuffer:
    """The last ``capacity`` transitions; once full, a new transition overwrites the oldest.

    ``states`` and ``next_states`` are float32 arrays (capacity x state size), ``actions`` int64,
    ``rewards`` float32, ``terminated`` float32 (1.0 for a terminal next state).
    """

    def __init__(self, capacity: int, state_size: int) -> None:
        self.capacity = check.positive_int("capacity", capacity)
        state_size = check.positive_int("state_size", state_size)
        self.states = np.zeros((capacity, state_size), np.float32)
        self.actions = np.zeros(capacity, np.int64)
        self.rewards = np.zeros(capacity, np.float32)
        self.next_states = np.zeros((capacity, state_size), np.float32)
        self.terminated = np.zeros(capacity, np.float32)
        self.added = 0  # transitions ever added; the next one goes to row added % capacity

    def __len__(self) -> int:
        return min(self.added, self.capacity)

    def add(self, state: np.ndarray, action: int, reward: float, next_state: np.ndarray, terminated: bool) -> None:
        row = self.added % self.capacity
        self.states[row], self.actions[row], self.rewards[row] = state, action, reward
        self.next_states[row], self.terminated[row] = next_state, float(terminated)
        self.added += 1

    def sample(self, rng: np.random.Generator, batch_size: int) -> tuple[np.ndarray, ...]:
        """``batch_size`` transitions drawn uniformly with replacement: (states, actions, rewards,
        next_states, terminated). The rows are ``rng.integers(0, len(self), batch_size)``."""
        if len(self) == 0:
            raise ValueError("the replay buffer is empty: add transitions before sampling")
        rows = rng.integers(0, len(self), check.positive_int("batch_size", batch_size))
        return tuple(getattr(self, name)[rows] for name in FIELDS)

    def state_dict(self) -> dict[str, Any]:
        """The filled rows and the write position, as tensors and an int (for ``torch.save(weights_only)``)."""
        filled = len(self)
        return {"added": self.added,
                **{name: torch.from_numpy(getattr(self, name)[:filled].copy()) for name in FIELDS}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        filled = min(int(state["added"]), self.capacity)
        for name in FIELDS:
            values = state[name].numpy()
            if len(values) != filled or values.shape[1:] != getattr(self, name).shape[1:]:
                raise ValueError(f"replay buffer state: {name} has shape {tuple(values.shape)}, expected "
                                 f"{(filled, *getattr(self, name).shape[1:])}")
            getattr(self, name)[:filled] = values
        self.added = int(state["added"])


def q_network(state_size: int, actions: int, width: int, seed: int) -> nn.Module:
    """Q(s, ·): state -> width -> width -> one value per action (ReLU), initialised from ``seed``."""
    return models.build("mlp", seed, in_features=state_size, width=width, depth=3, classes=actions)


def epsilon(episode: int, warmup: int, decay_episodes: int, epsilon_min: float) -> float:
    """The exploration rate of ``episode`` (1-based): 1 during the ``warmup`` episodes, then linear from 1
    down to ``epsilon_min``, reached at training episode ``decay_episodes`` and kept afterwards."""
    trained = episode - warmup
    if trained <= 0:
        return 1.0
    return max(epsilon_min, 1.0 - (1.0 - epsilon_min) * trained / decay_episodes)


@torch.no_grad()
def greedy_action(network: nn.Module, state: np.ndarray) -> int:
    """argmax_a Q(state, a) (the lowest index on ties)."""
    return int(network(torch.as_tensor(state, dtype=torch.float32).unsqueeze(0)).argmax(1)[0])


@torch.no_grad()
def td_targets(target: nn.Module, rewards: np.ndarray, next_states: np.ndarray, terminated: np.ndarray,
               gamma: float) -> torch.Tensor:
    """y = r + γ (1 - terminated) max_a' Q_target(s', a'), float32."""
    future = target(torch.as_tensor(next_states)).max(1).values
    return torch.as_tensor(rewards) + gamma * (1.0 - torch.as_tensor(terminated)) * future


def td_loss(network: nn.Module) -> Callable[[dict[str, torch.Tensor], tuple[torch.Tensor, ...]], torch.Tensor]:
    """``loss_fn(params, (states, actions, targets))``: the mean Huber loss (δ = 1) between
    Q_params(s, a) and the TD targets, evaluated through ``functional_call`` (``vmap``-able)."""
    def loss_fn(params: dict[str, torch.Tensor], batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        states, actions, targets = batch
        q = functional_call(network, params, (states,)).gather(1, actions.unsqueeze(1)).squeeze(1)
        return F.smooth_l1_loss(q, targets)
    return loss_fn


def minibatch(buffer: ReplayBuffer, rng: np.random.Generator, batch_size: int, target: nn.Module,
              gamma: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One process's batch for :func:`td_loss`: sampled transitions and their TD targets."""
    states, actions, rewards, next_states, terminated = buffer.sample(rng, batch_size)
    return (torch.as_tensor(states), torch.as_tensor(actions),
            td_targets(target, rewards, next_states, terminated, gamma))


__all__ = ["ReplayBuffer", "epsilon", "greedy_action", "minibatch", "q_network", "td_loss", "td_targets"]
