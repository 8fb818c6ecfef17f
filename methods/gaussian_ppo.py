"""PPO with a diagonal Gaussian policy over action chunks (paper D.6), optionally BC-regularised (D.7).

The pre-trained mean network is fine-tuned, and with `learn_std` also a per-dim
log-variance (clamped to [std_min, std_max] by the policy). One training sample
is one env step. Its log-probability is computed as the reference computes it
(model/rl/gaussian_vpg.py `get_logprobs`, model/rl/gaussian_ppo.py `loss`): the
per-dim log-densities averaged over the whole predicted chunk (horizon x action
dims, executed or not), clamped to [-5, 2] for both the new and the old policy.

With `bc_coef` = alpha > 0 the actor's loss gains alpha * -E[log pi_theta(a_bc | s)] (eq. A14), a_bc sampled
(with its noise) from a frozen copy of the pre-trained policy at the minibatch's observations and its
log-probability reduced as the PPO ratio's (model/rl/gaussian_ppo.py `use_bc_loss`).

Defaults: irom-princeton/dppo cfg/d3il/finetune/avoid_m2/ft_ppo_gaussian_mlp.yaml
(same PPO values as DPPO there: clip 0.1, actor lr 1e-5, critic lr 1e-3, 10 epochs,
target KL 1; std fixed at 0.1, `learn_fixed_std: False`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from common.limits import NON_NEGATIVE, Range
from methods.base import MethodContext, Rollout
from methods.policies.networks import frozen_copy
from methods.ppo import PPOConfig, PPOMethod, check_logprob_reduction


@dataclass
class GaussianPPOConfig(PPOConfig):
    # Reference: False on Avoid (cfg/d3il/finetune/avoid_m*/ft_ppo_gaussian_mlp.yaml), True within [0.01, 0.2] on
    # Robomimic (cfg/robomimic/finetune/*/ft_ppo_gaussian_mlp.yaml, learn_fixed_std, std_min, std_max).
    learn_std: bool = False
    """Learn the per-action-dim log-variance (std kept in policy.std_min..std_max); False: keep the pre-trained std."""
    logprob_reduction: str = "mean_clamped"
    """mean_clamped (reference Gaussian): per-dim mean over the whole chunk, clamped to [-5, 2]; sum_clamped
    (reference GMM): the whole chunk's log-density, clamped; sum: exact, executed actions only."""
    bc_coef: float = 0.0
    """alpha of eq. A14: weight of -log pi(a_bc | s), a_bc sampled from the frozen pre-trained policy; 0: off."""

    LIMITS: ClassVar[dict[str, Range]] = {**PPOConfig.LIMITS, "bc_coef": NON_NEGATIVE}


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
        for p in self.actor_parameters():
            p.requires_grad_(True)
        self.policy.logvar.requires_grad_(cfg.learn_std)
        self.act_steps = ctx.task.act_steps
        self.bc_policy = frozen_copy(self.policy) if cfg.bc_coef > 0 else None

    def actor_parameters(self):
        """Every weight of the policy, and its log-variance where it is learned."""
        weights = [p for name, p in self.policy.named_parameters() if name != "logvar"]
        return weights + ([self.policy.logvar] if self.cfg.learn_std else [])

    def act(self, obs: torch.Tensor, deterministic: bool):
        actions = self.policy.sample(obs, deterministic=deterministic)
        return actions, ({} if deterministic else {"actions": actions})

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The training log-probability of chunks (B, Ta, Da) -> (B,), reduced as `logprob_reduction` says."""
        reduction = self.cfg.logprob_reduction
        if reduction == "sum":
            return self.policy.log_prob(obs, actions, steps=self.act_steps)
        logp = self.policy.log_prob(obs, actions)
        if reduction == "mean_clamped":
            logp = logp / (actions.shape[-1] * actions.shape[-2])
        return logp.clamp(-5, 2)

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

    def actor_regularisers(self, mb):
        if self.bc_policy is None:
            return {}
        a_bc = self.bc_policy.sample(mb["obs"], deterministic=False)
        return {"bc_loss": -self.cfg.bc_coef * self.log_prob(mb["obs"], a_bc).mean()}

    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.state_dict(), **super().state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        super().load_state_dict(state)
