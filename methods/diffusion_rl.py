"""What the six diffusion-RL baselines (SPEC 4, paper D.3) share: fine-tuning the whole pre-trained
noise-prediction network, stochastic acting with a floor on every denoising step's std, the LR schedule,
and, for the off-policy ones, the replay buffer, the critics with their target networks and the
update schedule: each iteration adds its transitions to the buffer, then runs
`int(n_steps * n_envs / batch_size * replay_ratio)` gradient steps (the reference's `num_batch`).

Defaults are the reference's Hopper values (irom-princeton/dppo
cfg/gym/finetune/hopper-v2/ft_{rwr,awr,dipo,idql,dql,qsm}_diffusion_mlp.yaml): actor lr 1e-4 and critic
lr 1e-3, both constant (min_lr equal, 10 warm-up iterations of a 1000-iteration cycle), gamma 0.99,
rewards scaled by 0.01 into the buffer, critic MLPs [256, 256, 256] Mish.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from common.limits import AT_LEAST_ONE, DISCOUNT, NON_NEGATIVE, POSITIVE, Range, check_choices
from methods.base import Method, MethodContext, Rollout
from methods.optim import ActorOptim, CriticOptim, adamw, check_lr_schedules, scheduled_lr, set_lr
from methods.policies.diffusion import DiffusionPolicy
from methods.policies.networks import DoubleQCritic, ValueCritic, frozen_copy, soft_update
from methods.replay import ReplayBuffer


@dataclass
class DiffusionRLConfig(ActorOptim):
    actor_lr: float = 1e-4
    """Actor's peak AdamW LR (reference: actor_lr, or lr for RWR)."""
    actor_min_lr: float = 1e-4
    """Actor's LR at warm-up start and cosine-decay end; equal to actor_lr gives a constant LR (reference)."""
    actor_lr_cycle: int = 1000
    """Iterations per actor-LR cycle (reference: actor_lr_scheduler.first_cycle_steps)."""
    gamma: float = 0.99
    """Discount factor per env step, i.e. per executed action chunk (reference: gamma)."""
    batch_size: int = 1000
    """Transitions per gradient step (reference: batch_size)."""
    min_sampling_std: float = 0.1
    """Std floor of every denoising step when acting stochastically (reference: min_sampling_denoising_std)."""
    n_critic_warmup_itr: int = 0
    """First iterations in which the actor is not stepped (the critic is; reference: n_critic_warmup_itr)."""

    LIMITS: ClassVar[dict[str, Range]] = {
        **ActorOptim.LIMITS,
        "gamma": DISCOUNT,
        "batch_size": AT_LEAST_ONE,
        "min_sampling_std": NON_NEGATIVE,
        "n_critic_warmup_itr": NON_NEGATIVE,
    }


@dataclass
class OffPolicyConfig(DiffusionRLConfig, CriticOptim):
    critic_lr_cycle: int = 1000
    """Iterations per critic-LR cycle (reference: critic_lr_scheduler.first_cycle_steps)."""
    n_critic_warmup_itr: int = 5
    """First iterations in which the actor is not stepped (DIPO: nor are buffer actions moved; reference)."""
    q_residual: bool = False
    """Residual Q MLPs. The reference's Q critic (`CriticObsAct`) takes `residual_tyle`, a typo, so the
    configs' `residual_style: True` never reaches it: its Q networks are plain MLPs, and so are ours."""
    replay_ratio: float = 64.0
    """Gradient steps per iteration = int(new transitions / batch_size * replay_ratio) (reference: replay_ratio)."""
    buffer_size: int = 1_000_000
    """Replay buffer capacity in transitions (reference Hopper: 1M for DIPO, DQL, IDQL, QSM), i.e. the reference's
    buffer_size times n_envs where its buffer holds rows of all envs (AWR, IDQL, QSM: 25000 x 40), its
    buffer_size where it holds single transitions (DIPO, DQL)."""
    scale_reward: float = 0.01
    """Rewards are multiplied by this when they enter the buffer (reference: scale_reward_factor)."""

    LIMITS: ClassVar[dict[str, Range]] = {
        **DiffusionRLConfig.LIMITS,
        **CriticOptim.LIMITS,
        "replay_ratio": POSITIVE,
        "buffer_size": AT_LEAST_ONE,
        "scale_reward": POSITIVE,
    }


class DiffusionRLMethod(Method):
    """Base of the six baselines: the policy's whole network is the actor."""

    policy_kind = "diffusion"
    config_cls: ClassVar[type] = DiffusionRLConfig
    policy: DiffusionPolicy

    @classmethod
    def check_config(cls, cfg: DiffusionRLConfig, policy: nn.Module | None = None) -> None:
        check_lr_schedules(cfg)
        check_choices(cfg)
        if isinstance(cfg, OffPolicyConfig) and cfg.buffer_size < cfg.batch_size:
            raise ValueError(
                f"algo.buffer_size={cfg.buffer_size} is smaller than one batch (algo.batch_size={cfg.batch_size}); "
                "the buffer must hold at least a batch of transitions"
            )
        if isinstance(policy, DiffusionPolicy) and policy.n_base_steps:
            raise ValueError(
                f"{cls.name} fine-tunes every denoising step, but this checkpoint was fine-tuned by DPPO with its "
                f"first {policy.n_base_steps} steps frozen; start {cls.name} from the pre-trained checkpoint"
            )

    def __init__(self, cfg: DiffusionRLConfig, ctx: MethodContext):
        super().__init__(cfg, ctx)
        self.check_config(cfg, self.policy)
        for p in self.policy.network.parameters():
            p.requires_grad_(True)
        self.act_steps = ctx.task.act_steps
        self.actor_optimizer = adamw(self.policy.network.parameters(), cfg, "actor")
        self.optimizers: dict[str, torch.optim.Optimizer] = {"actor": self.actor_optimizer}
        self.networks: dict[str, nn.Module] = {"policy": self.policy}  # everything saved with the run

    # ------------------------------------------------------------ acting
    def act(self, obs: torch.Tensor, deterministic: bool):
        actions, _ = self.policy.sample(obs, deterministic=deterministic, min_std=self.cfg.min_sampling_std)
        return actions, ({} if deterministic else {"actions": actions})

    def sample_actions(self, obs: torch.Tensor, network: nn.Module | None = None, grad: bool = False) -> torch.Tensor:
        """Stochastic chunks (B, Ta, Da) as when acting in training, from `network` (default: the actor's)."""
        nets = None if network is None else [network] * self.policy.n_sampling_steps
        actions, _ = self.policy.sample(
            obs, deterministic=False, min_std=self.cfg.min_sampling_std, networks=nets, grad=grad
        )
        return actions

    # ------------------------------------------------------------ updating
    def update(self, rollout: Rollout, itr: int) -> dict[str, float]:
        lrs = {}
        for who, opt in self.optimizers.items():
            lrs[f"{who}_lr"] = scheduled_lr(self.cfg, "actor" if who == "actor" else "critic", itr)
            set_lr(opt, lrs[f"{who}_lr"])
        return {**self.learn(rollout, itr), **lrs}

    @abstractmethod
    def learn(self, rollout: Rollout, itr: int) -> dict[str, float]:
        """The method's own update from one iteration's rollout; returns its metrics."""

    def actor_step(self, loss: torch.Tensor, itr: int) -> None:
        """Back-propagate an actor loss and step the actor, except during critic warm-up (the reference
        computes the loss then too, and skips only the optimiser step)."""
        self.actor_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if itr >= self.cfg.n_critic_warmup_itr:
            if self.cfg.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(self.policy.network.parameters(), self.cfg.max_grad_norm)
            self.actor_optimizer.step()

    def nonfinite_advice(self, loss: str) -> str:
        if "critic" in loss or loss.startswith(("q_", "v_")):
            return "lower algo.critic_lr (or algo.scale_reward)"
        return "lower algo.actor_lr (or set algo.max_grad_norm)"

    # ------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            **{f"net_{k}": m.state_dict() for k, m in self.networks.items()},
            **{f"opt_{k}": o.state_dict() for k, o in self.optimizers.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, m in self.networks.items():
            m.load_state_dict(state[f"net_{k}"])
        for k, o in self.optimizers.items():
            o.load_state_dict(state[f"opt_{k}"])


def step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def double_q_loss(q1: torch.Tensor, q2: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Both Q heads regress the same target: MSE(q1) + MSE(q2)."""
    return ((q1 - target) ** 2).mean() + ((q2 - target) ** 2).mean()


def bellman_target(
    rewards: torch.Tensor, terminated: torch.Tensor, gamma: float, next_value: torch.Tensor
) -> torch.Tensor:
    """r + gamma (1 - terminated) V(s'): truncated transitions bootstrap (their s' is the true final obs)."""
    return rewards + gamma * next_value * (~terminated).float()


class OffPolicyMethod(DiffusionRLMethod):
    """A baseline with a replay buffer and learned critics."""

    config_cls: ClassVar[type] = OffPolicyConfig

    def __init__(self, cfg: OffPolicyConfig, ctx: MethodContext):
        super().__init__(cfg, ctx)
        t = ctx.task
        self.buffer = ReplayBuffer(cfg.buffer_size, ctx.budget.n_envs, t.obs_dim, t.horizon, t.act_dim, self.device)
        self.stats: dict[str, list[torch.Tensor]] = {}

    def double_q(self) -> DoubleQCritic:
        c, t = self.cfg, self.ctx.task
        return DoubleQCritic(t.obs_dim, t.act_steps * t.act_dim, c.critic_hidden, c.critic_activation, c.q_residual).to(
            self.device
        )

    def value_critic(self) -> ValueCritic:
        c = self.cfg
        return ValueCritic(self.ctx.task.obs_dim, c.critic_hidden, c.critic_activation, c.critic_residual).to(
            self.device
        )

    def add_critic(self, name: str, critic: nn.Module, target: bool = False) -> nn.Module | None:
        """Register a critic (saved, with its AdamW optimiser) and optionally its target copy."""
        self.networks[name] = critic
        self.optimizers[name] = adamw(critic.parameters(), self.cfg, "critic")
        if target:
            copy = frozen_copy(critic)
            self.networks[f"{name}_target"] = copy
            return copy
        return None

    next_action_network: nn.Module | None = None  # what samples a' for the Bellman target (None: the actor)

    def critic_loss(self, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Double-Q Bellman loss of `self.critic` on batch `b`, and its Q1: the target is the min of
        `self.critic_target`'s heads at a' sampled stochastically for s' (DIPO: by the target actor)."""
        with torch.no_grad():
            next_actions = self.sample_actions(b["next_obs"], self.next_action_network)
            next_q = torch.min(*self.critic_target(b["next_obs"], self.executed(next_actions)))
            target = bellman_target(b["rewards"], b["terminated"], self.cfg.gamma, next_q)
        q1, q2 = self.critic(b["obs"], self.executed(b["actions"]))
        return double_q_loss(q1, q2, target), q1

    def executed(self, actions: torch.Tensor) -> torch.Tensor:
        """The part of a chunk the env executes: what a Q critic is a function of."""
        return actions[:, : self.act_steps]

    def n_grad_steps(self, rollout: Rollout) -> int:
        return int(rollout.n_steps * rollout.n_envs / self.cfg.batch_size * self.cfg.replay_ratio)

    def store(self, rollout: Rollout) -> None:
        self.buffer.add(
            obs=rollout.obs,
            next_obs=rollout.next_obs,
            actions=rollout.kept["actions"],
            rewards=rollout.rewards * self.cfg.scale_reward,
            terminated=rollout.terminated,
            truncated=rollout.truncated,
        )

    def log(self, **values: torch.Tensor) -> None:
        for k, v in values.items():
            self.stats.setdefault(k, []).append(v.detach().float().mean())

    def summary(self, rollout: Rollout, n_steps: int, **extra: float) -> dict[str, float]:
        """The iteration's metrics: each logged value averaged over its gradient steps, and the replay ratio
        actually run (gradient steps per new transition)."""
        out = {k: torch.stack(v).mean().item() for k, v in self.stats.items()}
        self.stats = {}
        new = rollout.n_steps * rollout.n_envs
        return {
            **out,
            "grad_steps": n_steps,
            "replay_ratio": n_steps / new,
            "buffer_transitions": len(self.buffer),
            **extra,
        }

    def learn(self, rollout: Rollout, itr: int) -> dict[str, float]:
        self.store(rollout)
        n = self.n_grad_steps(rollout)
        for _ in range(n):
            self.gradient_step(itr)
        return self.summary(rollout, n)

    def gradient_step(self, itr: int) -> None:
        """One batch's critic and actor updates (log their statistics with `self.log`); a method whose
        iteration is not a sequence of such steps overrides `learn` instead."""
        raise NotImplementedError(f"{type(self).__name__} must define gradient_step() or learn()")

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "buffer": self.buffer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.buffer.load_state_dict(state["buffer"])

    def soft_update(self, name: str, tau: float) -> None:
        soft_update(self.networks[f"{name}_target"], self.networks[name], tau)
