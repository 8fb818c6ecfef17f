"""The interface between the trainer and a method.

The trainer owns envs, rollouts, evaluation, logging and checkpoints. A method
owns how it acts, what it keeps from a rollout and how it updates:

    chunk, keep = method.act(obs, deterministic)     # per vector-env step
    stats = method.update(rollout, itr)              # once per iteration

`keep` is a dict of tensors with a leading batch dim; the trainer stacks them
over the iteration's steps into `rollout.kept[name]` of shape (T, N, ...).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn


@dataclass
class Rollout:
    """One iteration of experience from N envs over T (chunk) steps.

    `next_obs[t]` is the observation after step t: the true final observation
    when the episode ended at t (so truncation can be bootstrapped), otherwise
    the next decision's observation. `firsts[t]` marks steps that start an episode.
    """

    obs: torch.Tensor  # (T, N, Do)
    next_obs: torch.Tensor  # (T, N, Do)
    rewards: torch.Tensor  # (T, N)
    terminated: torch.Tensor  # (T, N) bool
    truncated: torch.Tensor  # (T, N) bool
    firsts: torch.Tensor  # (T, N) bool
    kept: dict[str, torch.Tensor]  # each (T, N, ...)

    @property
    def n_steps(self) -> int:
        return self.rewards.shape[0]

    @property
    def n_envs(self) -> int:
        return self.rewards.shape[1]


class Method(ABC):
    """Base class of every fine-tuning method. Register subclasses in `methods/__init__.py`."""

    name: ClassVar[str]
    policy_kind: ClassVar[str]  # which pre-trained policy it starts from: "diffusion" | "gaussian"
    config_cls: ClassVar[type]  # dataclass of the method's hyperparameters

    def __init__(self, policy: nn.Module, cfg: Any, device: torch.device, n_iterations: int):
        self.policy, self.cfg, self.device, self.n_iterations = policy, cfg, device, n_iterations

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        """Raise ValueError naming the key if `cfg` can't work; called before a run writes anything."""
        return None

    @abstractmethod
    def act(self, obs: torch.Tensor, deterministic: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Action chunks (N, Ta, Da) in normalised units, and what to keep for the update."""

    @abstractmethod
    def update(self, rollout: Rollout, itr: int) -> dict[str, float]:
        """Learn from one iteration's rollout; return scalar metrics."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: networks, optimisers, running statistics."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def exported_policy(self) -> nn.Module:
        """The policy to save as a standalone checkpoint (same kind as the pre-trained one)."""
        return self.policy
