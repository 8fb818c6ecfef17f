"""The interface between the trainer and a method.

The trainer owns envs, rollouts, evaluation, logging and checkpoints. A method
owns how it acts, what it keeps from a rollout and how it updates:

    method = MethodClass(cfg, ctx)                    # cfg: its config dataclass; ctx: a MethodContext
    chunk, keep = method.act(obs, deterministic)     # per vector-env step
    stats = method.update(rollout, itr)              # once per iteration

`keep` is a dict of tensors with a leading batch dim; the trainer stacks them
over the iteration's steps into `rollout.kept[name]` of shape (T, N, ...).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
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


@dataclass(frozen=True)
class TaskInfo:
    """What a method may know of its task (normalised units: observations and actions in [-1, 1])."""

    name: str
    obs_dim: int
    act_dim: int
    horizon: int  # action chunk length the policy predicts
    act_steps: int  # of which the env executes the first act_steps
    max_episode_steps: int


@dataclass(frozen=True)
class TrainingBudget:
    n_iterations: int
    n_envs: int
    n_steps: int  # chunk steps per env per iteration
    env_step_budget: int | None = None


@dataclass
class MethodContext:
    """Everything a method is built from besides its own config.

    `policy` is the pre-trained policy (None for a method that starts from scratch); `dataset()` loads the
    task's offline data on first call (the run's `dataset=` or the task's default): an object with
    `chunks(horizon) -> (obs, action chunks)` in normalised units; None where the run has none to offer.
    """

    policy: nn.Module | None
    device: torch.device
    task: TaskInfo
    budget: TrainingBudget
    seed: int = 0
    dataset: Callable[[], Any] | None = None

    @classmethod
    def standalone(
        cls, policy: nn.Module, device: torch.device | str = "cpu", act_steps: int | None = None, n_iterations: int = 1
    ) -> MethodContext:
        """A context outside a run (scripts, tests): the task is what the policy's dims say."""
        steps = act_steps or policy.horizon
        task = TaskInfo("standalone", policy.obs_dim, policy.act_dim, policy.horizon, steps, steps)
        return cls(policy, torch.device(device), task, TrainingBudget(n_iterations, n_envs=1, n_steps=1))


class Method(ABC):
    """Base class of every fine-tuning method. Register subclasses in `methods/__init__.py`.

    Subclasses call `super().__init__(cfg, ctx)` first; it sets `self.cfg`, `self.ctx`, `self.device`
    and `self.policy` (the context's policy moved to the device, or None).
    """

    name: ClassVar[str]
    policy_kind: ClassVar[str]  # which pre-trained policy it starts from: a key of methods.policies.POLICIES
    config_cls: ClassVar[type]  # dataclass of the method's hyperparameters

    def __init__(self, cfg: Any, ctx: MethodContext):
        self.cfg, self.ctx, self.device = cfg, ctx, ctx.device
        self.policy = ctx.policy.to(ctx.device) if ctx.policy is not None else None

    @classmethod
    def check_config(cls, cfg: Any, policy: nn.Module | None = None) -> None:
        """Raise ValueError naming the key if `cfg` can't work (with `policy`, the policy it will start from,
        when there is one); called before a run writes anything."""
        return None

    def nonfinite_advice(self, loss: str) -> str:
        """What to change when the metric `loss` (a key of `update()`'s result) becomes NaN or infinite."""
        return "lower the method's learning rates (algo.*)"

    @abstractmethod
    def act(self, obs: torch.Tensor, deterministic: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Action chunks (N, Ta, Da) in normalised units, and what to keep for the update."""

    @abstractmethod
    def update(self, rollout: Rollout, itr: int) -> dict[str, float]:
        """Learn from one iteration's rollout; return scalar metrics (any key containing "loss" must be finite)."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: networks, optimisers, running statistics."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def exported_policy(self) -> nn.Module:
        """The policy to save as a standalone checkpoint (same kind as the pre-trained one)."""
        return self.policy

    def acting_state(self) -> dict[str, Any]:
        """What acting needs besides the exported policy (IDQL: the critics that choose among candidates);
        saved with the fine-tuned checkpoint so that evaluating it acts as the run did."""
        return {}

    def load_acting_state(self, state: dict[str, Any]) -> None:
        """Restore `acting_state()` from a fine-tuned checkpoint of this method."""
        if state:
            raise NotImplementedError(f"{type(self).__name__} saved an acting state but can't load it")
