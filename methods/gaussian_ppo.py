"""PPO with a diagonal Gaussian policy over action chunks (paper D.6).

The pre-trained mean network is fine-tuned together with a learned per-dim
log-std (clamped to [std_min, std_max] by the policy). One training sample is
one env step; its log-probability is the sum over the executed chunk.

Defaults: irom-princeton/dppo cfg/d3il/finetune/avoid_m2/ft_ppo_gaussian_mlp.yaml
(same PPO values as DPPO there: clip 0.1, actor lr 1e-5, critic lr 1e-3, 10 epochs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from methods.base import Rollout
from methods.policies.gaussian import GaussianPolicy
from methods.ppo import PPOConfig, PPOMethod


@dataclass
class GaussianPPOConfig(PPOConfig):
    learn_std: bool = True


class GaussianPPO(PPOMethod):
    name = "gaussian_ppo"
    policy_kind = "gaussian"
    config_cls = GaussianPPOConfig

    def __init__(self, policy: GaussianPolicy, cfg: GaussianPPOConfig, device, n_iterations: int, act_steps: int):
        self.policy = policy.to(device)
        for p in self.policy.network.parameters():
            p.requires_grad_(True)
        self.policy.log_std.requires_grad_(cfg.learn_std)
        self.act_steps = act_steps
        super().__init__(policy, cfg, device, n_iterations)

    def actor_parameters(self):
        return [p for p in self.policy.parameters() if p.requires_grad]

    def act(self, obs: torch.Tensor, deterministic: bool):
        actions = self.policy.sample(obs, deterministic=deterministic)
        return actions, ({} if deterministic else {"actions": actions})

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Log-density of the executed part of each chunk."""
        mean = self.policy.mean(obs)[:, : self.act_steps]
        dist = torch.distributions.Normal(mean, self.policy.std())
        return dist.log_prob(actions[:, : self.act_steps]).sum(dim=(-1, -2))

    def make_samples(self, rollout: Rollout, advantages, returns, values):
        T, N = rollout.n_steps, rollout.n_envs
        obs = rollout.obs.reshape(T * N, -1)
        actions = rollout.kept["actions"].reshape(T * N, *rollout.kept["actions"].shape[-2:])
        with torch.no_grad():
            old = self.log_prob(obs, actions)
        return {
            "obs": obs,
            "actions": actions,
            "old_logp": old,
            "advantages": advantages.reshape(-1),
            "returns": returns.reshape(-1),
            "values": values.reshape(-1),
        }

    def log_ratio_and_clip(self, mb, adv):
        return self.log_prob(mb["obs"], mb["actions"]) - mb["old_logp"], adv, self.cfg.clip

    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.state_dict(), **super().state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        super().load_state_dict(state)
