"""DQL: diffusion Q-learning (SPEC 4, paper D.3 eqs. A10-A11).

A double-Q critic learns by Bellman backup (target: min of the target critic's heads at an action the
current actor samples for s'). The actor samples a chunk for each buffer state with the whole chain
differentiable and minimises `bc_loss - alpha * Q_i(s, a_theta) / mean|Q_j(s, a_theta)|`, (i, j) = (1, 2)
or (2, 1) by a coin flip per step, the normaliser detached: Q's gradient reaches every denoising step.

The reference (model/diffusion/diffusion_dql.py `loss_actor`) computes the diffusion (BC) term on the
actor's own differentiable samples, `bc_target="policy_sample"`, the default; `bc_target="buffer"` uses
the buffer's actions, as the paper's eq. A10 and the original DQL do.

Defaults: irom-princeton/dppo cfg/gym/finetune/hopper-v2/ft_dql_diffusion_mlp.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from common.limits import FRACTION, NON_NEGATIVE, Range
from methods.base import MethodContext
from methods.diffusion_rl import OffPolicyConfig, OffPolicyMethod, step

BC_TARGETS = ("policy_sample", "buffer")


@dataclass
class DQLConfig(OffPolicyConfig):
    alpha: float = 1.0
    """Weight of the normalised Q term in the actor loss (reference: eta)."""
    bc_target: str = "policy_sample"
    """What the diffusion loss fits: "policy_sample" (reference) or "buffer" actions (paper eq. A10)."""
    target_ema: float = 0.005
    """Polyak rate of the target critic, each gradient step (reference: target_ema_rate)."""
    replay_ratio: float = 16.0
    """Gradient steps per iteration = int(new transitions / batch_size * replay_ratio) (reference)."""

    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"bc_target": BC_TARGETS}
    LIMITS: ClassVar[dict[str, Range]] = {
        **OffPolicyConfig.LIMITS,
        "alpha": NON_NEGATIVE,
        "target_ema": FRACTION,
    }


class DQL(OffPolicyMethod):
    name = "dql"
    config_cls = DQLConfig

    def __init__(self, cfg: DQLConfig, ctx: MethodContext):
        super().__init__(cfg, ctx)
        self.critic = self.double_q()
        self.critic_target = self.add_critic("critic", self.critic, target=True)

    def actor_loss(self, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(total, bc, q term) for a batch: samples with the chain differentiable, scored by the critic."""
        new = self.sample_actions(b["obs"], grad=True)
        q1, q2 = self.critic(b["obs"], self.executed(new))
        fit = new if self.cfg.bc_target == "policy_sample" else b["actions"]
        bc = self.policy.noise_prediction_error(b["obs"], fit).mean()
        if torch.rand(()) > 0.5:
            q_term = -q1.mean() / q2.abs().mean().detach()
        else:
            q_term = -q2.mean() / q1.abs().mean().detach()
        return bc + self.cfg.alpha * q_term, bc, q_term

    def gradient_step(self, itr: int) -> None:
        c = self.cfg
        b = self.buffer.get(self.buffer.sample_indices(c.batch_size))
        loss, q = self.critic_loss(b)
        step(self.optimizers["critic"], loss)
        actor_loss, bc, q_term = self.actor_loss(b)
        self.actor_step(actor_loss, itr)
        self.soft_update("critic", c.target_ema)
        self.log(critic_loss=loss, actor_loss=actor_loss, bc_loss=bc, q_term=q_term, q_mean=q, q_std=q.std())
