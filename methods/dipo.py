"""DIPO: diffusion policy with action gradients (SPEC 4, paper D.3 eqs. A4-A6).

A double-Q critic learns by Bellman backup (target: min of the target critic's two heads at an action
sampled by the target actor). Each gradient step then moves a batch of buffer actions uphill on
min(Q1, Q2) for `action_steps` steps, clamps them to [-1, 1], writes them back to the buffer, and fits
the actor to them with the plain diffusion loss. Acting uses the target actor (an EMA of the actor).

As the reference (agent/finetune/train_dipo_diffusion_agent.py) the action steps are Adam steps
(`action_optimizer="adam"`, a fresh Adam per batch, eps 1e-5); `action_optimizer="sgd"` is the paper's
`a <- a + eta * grad_a Q` (eq. A4). Either way the batch's action gradient is first clipped to a global
norm of `0.1 * act_dim * act_steps`, as the reference clips it.

Defaults: irom-princeton/dppo cfg/gym/finetune/hopper-v2/ft_dipo_diffusion_mlp.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from common.limits import AT_LEAST_ONE, FRACTION, POSITIVE, Range
from methods.base import MethodContext
from methods.diffusion_rl import OffPolicyConfig, OffPolicyMethod, step
from methods.policies.networks import frozen_copy, soft_update

ACTION_OPTIMIZERS = ("adam", "sgd")


@dataclass
class DIPOConfig(OffPolicyConfig):
    action_lr: float = 1e-4
    """eta: step size of the action gradient steps (reference: action_lr)."""
    action_steps: int = 10
    """M: action gradient steps per batch (reference: action_gradient_steps)."""
    action_optimizer: str = "adam"
    """"adam" (reference) or "sgd" (the paper's eq. A4) for the action gradient steps."""
    action_grad_norm: float = 0.1
    """The batch's action gradient is clipped to this x act_dim x act_steps (global norm; reference: 0.1)."""
    target_ema: float = 0.005
    """Polyak rate of the target critic and target actor, each gradient step (reference: target_ema_rate)."""

    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"action_optimizer": ACTION_OPTIMIZERS}
    LIMITS: ClassVar[dict[str, Range]] = {
        **OffPolicyConfig.LIMITS,
        "action_lr": POSITIVE,
        "action_steps": AT_LEAST_ONE,
        "action_grad_norm": POSITIVE,
        "target_ema": FRACTION,
    }


class DIPO(OffPolicyMethod):
    name = "dipo"
    config_cls = DIPOConfig

    def __init__(self, cfg: DIPOConfig, ctx: MethodContext):
        super().__init__(cfg, ctx)
        self.critic = self.double_q()
        self.critic_target = self.add_critic("critic", self.critic, target=True)
        self.actor_target = frozen_copy(self.policy.network)
        self.networks["actor_target"] = self.actor_target
        self.next_action_network = self.actor_target

    def act(self, obs: torch.Tensor, deterministic: bool):
        nets = [self.actor_target] * self.policy.n_sampling_steps
        actions, _ = self.policy.sample(obs, deterministic, min_std=self.cfg.min_sampling_std, networks=nets)
        return actions, ({} if deterministic else {"actions": actions})

    def exported_policy(self):
        """The policy that acts: the target actor's weights."""
        policy = frozen_copy(self.policy)
        policy.network.load_state_dict(self.actor_target.state_dict())
        return policy

    def moved_actions(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """`actions` after `action_steps` steps up min(Q1, Q2) (executed part), clamped to [-1, 1]."""
        c = self.cfg
        moving = self.executed(actions).detach().reshape(len(actions), -1).clone()
        opt_cls = torch.optim.Adam if c.action_optimizer == "adam" else torch.optim.SGD
        opt = opt_cls([moving], lr=c.action_lr, **({"eps": 1e-5} if c.action_optimizer == "adam" else {}))
        max_norm = c.action_grad_norm * self.policy.act_dim * self.act_steps
        for _ in range(c.action_steps):
            moving.requires_grad_(True)
            loss = -torch.min(*self.critic(obs, moving)).sum()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_([moving], max_norm=max_norm)
            opt.step()
            moving.requires_grad_(False)
            moving.clamp_(-1.0, 1.0)
        out = actions.detach().clone()
        out[:, : self.act_steps] = moving.view_as(out[:, : self.act_steps])
        return out

    def gradient_step(self, itr: int) -> None:
        c = self.cfg
        b = self.buffer.get(self.buffer.sample_indices(c.batch_size))
        loss, q = self.critic_loss(b)
        step(self.optimizers["critic"], loss)
        self.log(critic_loss=loss, q_mean=q, q_std=q.std())
        if itr >= c.n_critic_warmup_itr:
            idx = self.buffer.sample_indices(c.batch_size)
            b = self.buffer.get(idx)
            moved = self.moved_actions(b["obs"], b["actions"])
            self.buffer.set_actions(idx, moved)
            actor_loss = self.policy.noise_prediction_error(b["obs"], moved).mean()
            self.actor_step(actor_loss, itr)
            self.log(actor_loss=actor_loss, action_shift=(moved - b["actions"]).norm(dim=(-1, -2)))
        self.soft_update("critic", c.target_ema)
        soft_update(self.actor_target, self.policy.network, c.target_ema)
