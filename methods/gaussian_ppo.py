"""PPO with a diagonal Gaussian policy over action chunks (paper D.6).

The pre-trained mean network is fine-tuned, and with `learn_std` also a per-dim
log-variance (clamped to [std_min, std_max] by the policy). One training sample
is one env step. Its log-probability is computed as the reference computes it
(model/rl/gaussian_vpg.py `get_logprobs`, model/rl/gaussian_ppo.py `loss`): the
per-dim log-densities averaged over the whole predicted chunk (horizon x action
dims, executed or not), clamped to [-5, 2] for both the new and the old policy.

Defaults: irom-princeton/dppo cfg/d3il/finetune/avoid_m2/ft_ppo_gaussian_mlp.yaml
(same PPO values as DPPO there: clip 0.1, actor lr 1e-5, critic lr 1e-3, 10 epochs,
target KL 1; std fixed at 0.1, `learn_fixed_std: False`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from methods.base import MethodContext, Rollout
from methods.ppo import PPOConfig, PPOMethod, check_logprob_reduction


@dataclass
class GaussianPPOConfig(PPOConfig):
    # Reference: False on Avoid (cfg/d3il/finetune/avoid_m*/ft_ppo_gaussian_mlp.yaml), True within [0.01, 0.2] on
    # Robomimic (cfg/robomimic/finetune/*/ft_ppo_gaussian_mlp.yaml, learn_fixed_std, std_min, std_max).
    learn_std: bool = False
    """Learn the per-action-dim log-variance (std kept in policy.std_min..std_max); False: keep the pre-trained std."""
    logprob_reduction: str = "mean_clamped"
    """"mean_clamped" (reference): per-dim mean over the whole chunk, clamped to [-5, 2]; "sum": exact, executed Ta."""


class GaussianPPO(PPOMethod):
    name = "gaussian_ppo"
    policy_kind = "gaussian"
    config_cls = GaussianPPOConfig

    @classmethod
    def check_config(cls, cfg: GaussianPPOConfig, policy=None) -> None:
        super().check_config(cfg, policy)
        check_logprob_reduction(cfg.logprob_reduction)

    def __init__(self, cfg: GaussianPPOConfig, ctx: MethodContext):
        super().__init__(cfg, ctx)
        self.check_config(cfg, self.policy)
        for p in self.policy.network.parameters():
            p.requires_grad_(True)
        self.policy.logvar.requires_grad_(cfg.learn_std)
        self.act_steps = ctx.task.act_steps

    def actor_parameters(self):
        return [*self.policy.network.parameters(), *([self.policy.logvar] if self.cfg.learn_std else [])]

    def act(self, obs: torch.Tensor, deterministic: bool):
        actions = self.policy.sample(obs, deterministic=deterministic)
        return actions, ({} if deterministic else {"actions": actions})

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The training log-probability of chunks (B, Ta, Da) -> (B,), reduced as `logprob_reduction` says."""
        logp = torch.distributions.Normal(self.policy.mean(obs), self.policy.std()).log_prob(actions)
        if self.cfg.logprob_reduction == "sum":
            return logp[:, : self.act_steps].sum(dim=(-1, -2))
        return logp.mean(dim=(-1, -2)).clamp(-5, 2)

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
