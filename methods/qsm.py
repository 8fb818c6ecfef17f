"""QSM: Q-score matching (SPEC 4, paper D.3 eqs. A12-A13).

A double-Q critic learns by Bellman backup (target: min of the target critic's heads at an action the
current actor samples for s'). The actor's noise prediction at a noised buffer chunk x_k is matched to
the critic's action gradient there: `|| -eps_theta(x_k, k, s) - alpha * grad_x Q(s, x_k) ||^2`, with
grad Q the mean of the two heads' gradients. The minus sign is the paper's D.3 note: the denoising mean
moves against eps, so eps_theta = -alpha grad Q moves samples uphill on Q. As the reference
(model/diffusion/diffusion_qsm.py) the gradient is taken at the noised chunk x_k, not at the clean one.

The critic scores the executed part of a chunk, so QSM needs chunks the env executes whole
(task horizon = act_steps, as every reference QSM config has).

Defaults: irom-princeton/dppo cfg/gym/finetune/hopper-v2/ft_qsm_diffusion_mlp.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from common.limits import FRACTION, NON_NEGATIVE, Range
from methods.base import MethodContext
from methods.diffusion_rl import OffPolicyConfig, OffPolicyMethod, step


@dataclass
class QSMConfig(OffPolicyConfig):
    alpha: float = 10.0
    """Scale of the critic's action gradient the noise prediction is matched to (reference: q_grad_coeff)."""
    critic_tau: float = 0.005
    """Polyak rate of the target critic, each gradient step (reference: critic_tau)."""
    replay_ratio: float = 16.0
    """Gradient steps per iteration = int(new transitions / batch_size * replay_ratio) (reference)."""

    LIMITS: ClassVar[dict[str, Range]] = {
        **OffPolicyConfig.LIMITS,
        "alpha": NON_NEGATIVE,
        "critic_tau": FRACTION,
    }


def qsm_target(critic, obs: torch.Tensor, x: torch.Tensor, alpha: float) -> torch.Tensor:
    """alpha * (grad_x Q1(s, x) + grad_x Q2(s, x)) / 2: what -eps_theta is matched to."""
    x = x.detach().requires_grad_(True)
    q1, q2 = critic(obs, x)
    g1 = torch.autograd.grad(q1.sum(), x)[0]
    g2 = torch.autograd.grad(q2.sum(), x)[0]
    return alpha * (g1 + g2) / 2


class QSM(OffPolicyMethod):
    name = "qsm"
    config_cls = QSMConfig

    def __init__(self, cfg: QSMConfig, ctx: MethodContext):
        if ctx.task.horizon != ctx.task.act_steps:
            raise ValueError(
                "qsm matches the whole chunk's score to the critic's action gradient, so the env must execute whole "
                f"chunks; task {ctx.task.name} predicts {ctx.task.horizon} steps and executes {ctx.task.act_steps}"
            )
        super().__init__(cfg, ctx)
        self.critic = self.double_q()
        self.critic_target = self.add_critic("critic", self.critic, target=True)

    def actor_loss(self, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        obs, actions = b["obs"], b["actions"]
        k = torch.randint(0, self.policy.cfg.denoising_steps, (len(actions),), device=self.device)
        x_k = self.policy.noised(actions, k, torch.randn_like(actions))
        target = qsm_target(self.critic, obs, x_k, self.cfg.alpha)
        eps = self.policy.network(x_k, k, obs)
        return ((-eps - target) ** 2).mean(), target

    def gradient_step(self, itr: int) -> None:
        c = self.cfg
        b = self.buffer.get(self.buffer.sample_indices(c.batch_size))
        loss, q = self.critic_loss(b)
        step(self.optimizers["critic"], loss)
        actor_loss, target = self.actor_loss(b)
        self.actor_step(actor_loss, itr)
        self.soft_update("critic", c.critic_tau)
        self.log(
            critic_loss=loss, actor_loss=actor_loss, q_mean=q, q_std=q.std(), q_grad_norm=target.norm(dim=(-1, -2))
        )
