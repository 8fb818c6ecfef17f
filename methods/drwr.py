"""DRWR: reward-weighted regression for a diffusion policy (SPEC 4, paper D.3 eq. A1).

On-policy, no critic: the diffusion loss on the iteration's own chunks, each weighted by
`min(exp(beta * R), max_weight)` with `R` the discounted reward-to-go normalised over the iteration.
As the reference (agent/finetune/train_rwr_diffusion_agent.py), only episodes that start and end within
the iteration (and last at least two env steps) count; their reward-to-go is computed within the episode.

Defaults: irom-princeton/dppo cfg/gym/finetune/hopper-v2/ft_rwr_diffusion_mlp.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from common.limits import AT_LEAST_ONE, POSITIVE, Range
from methods.base import Rollout
from methods.diffusion_rl import DiffusionRLConfig, DiffusionRLMethod


@dataclass
class DRWRConfig(DiffusionRLConfig):
    beta: float = 10.0
    """Inverse temperature of the exponentiated weight exp(beta * R) (reference: beta)."""
    max_weight: float = 100.0
    """Weights are clipped to at most this (reference: max_reward_weight)."""
    update_epochs: int = 16
    """Passes over the iteration's samples, in batches of batch_size, the last partial one skipped."""

    LIMITS: ClassVar[dict[str, Range]] = {
        **DiffusionRLConfig.LIMITS,
        "beta": POSITIVE,
        "max_weight": POSITIVE,
        "update_epochs": AT_LEAST_ONE,
    }


def complete_episodes(rollout: Rollout) -> list[tuple[int, int, int]]:
    """(env, first step, last step) of each episode that starts and ends within the rollout and lasts
    at least two steps, as the reference selects them."""
    done = (rollout.terminated | rollout.truncated).cpu()
    firsts = rollout.firsts.cpu()
    out = []
    for e in range(rollout.n_envs):
        ends = torch.nonzero(done[:, e]).flatten().tolist()
        for start in torch.nonzero(firsts[:, e]).flatten().tolist():
            end = next((t for t in ends if t >= start), None)
            if end is not None and end > start:
                out.append((e, start, end))
    return out


def reward_to_go(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """Discounted return from each step to the end of the (complete) episode `rewards` (L,)."""
    out = torch.zeros_like(rewards, dtype=torch.float64)
    running = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = float(rewards[t]) + gamma * running
        out[t] = running
    return out


def exp_weights(x: torch.Tensor, beta: float, max_weight: float) -> torch.Tensor:
    """min(exp(beta * x), max_weight)."""
    return torch.exp(beta * x).clamp(max=max_weight)


class DRWR(DiffusionRLMethod):
    name = "drwr"
    config_cls = DRWRConfig

    def learn(self, rollout: Rollout, itr: int) -> dict[str, float]:
        c = self.cfg
        episodes = complete_episodes(rollout)
        if not episodes:  # nothing to regress on; the reference skips the update too
            return {"actor_loss": 0.0, "n_samples": 0, "weight_mean": float("nan"), "weight_clipped": float("nan")}
        obs = torch.cat([rollout.obs[s : t + 1, e] for e, s, t in episodes])
        actions = torch.cat([rollout.kept["actions"][s : t + 1, e] for e, s, t in episodes])
        returns = torch.cat([reward_to_go(rollout.rewards[s : t + 1, e], c.gamma) for e, s, t in episodes])
        returns = (returns - returns.mean()) / (returns.std(unbiased=False) + 1e-3)
        weights = exp_weights(returns.float().to(self.device), c.beta, c.max_weight)

        n = len(obs)
        losses = []
        for _ in range(c.update_epochs):
            perm = torch.randperm(n, device=self.device)
            for b in range(max(1, n // c.batch_size)):
                idx = perm[b * c.batch_size : (b + 1) * c.batch_size]
                loss = (self.policy.noise_prediction_error(obs[idx], actions[idx]) * weights[idx]).mean()
                self.actor_step(loss, itr)
                losses.append(loss.detach())
        return {
            "actor_loss": torch.stack(losses).mean().item(),
            "n_samples": n,
            "weight_mean": weights.mean().item(),
            "weight_clipped": (weights >= c.max_weight).float().mean().item(),
            "grad_steps": len(losses),
        }
