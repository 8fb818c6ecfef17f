"""DAWR: advantage-weighted regression for a diffusion policy (SPEC 4, paper D.3 eqs. A2-A3).

A state-value critic V(s) regresses TD(lambda) targets computed over the replay buffer in time order;
the actor, off-policy from the buffer, minimises the diffusion loss weighted by
`min(exp(beta * A), max_weight)` with `A = target - V(s)` normalised within each batch. The critic takes
`1 / critic_update_ratio` as many gradient steps as the actor, and both use targets computed once per
iteration (the critic's before its steps, the actor's after them), as the reference does
(agent/finetune/train_awr_diffusion_agent.py, `td_values`).

The reference's TD(lambda) is `target_i = V(s_i) + val_i`, `val_i = alpha * delta_i + gamma * lam *
(1 - term_i) * val_{i+1}`, `delta_i = r_i + gamma * (1 - term_i) * V(s_{i+1}) - V(s_i)`, run along each
env's rows of the buffer: the next row's observation stands for s', so across a truncation it is the
next episode's first observation, and the newest row bootstraps from its own V(s_i). That is
`td_targets="reference"`, the default. `td_targets="episodic"` uses the stored true next observation
and stops the recursion at truncations as well as terminations.

Two more places where the reference's critic update is not what its text says, each the default here with
the plain version as an option (README, "The diffusion-RL baselines"): it draws critic batches only from
the buffer's oldest transitions (`critic_samples`), and its loss pairs every value of the batch with
every target (`v_regression`), so V is pulled towards the batch's mean target.

Defaults: irom-princeton/dppo cfg/gym/finetune/hopper-v2/ft_awr_diffusion_mlp.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from common.limits import AT_LEAST_ONE, FRACTION, POSITIVE, Range
from methods.base import MethodContext, Rollout
from methods.diffusion_rl import OffPolicyConfig, OffPolicyMethod, step
from methods.drwr import exp_weights

TD_TARGETS = ("reference", "episodic")
CRITIC_SAMPLES = ("reference", "uniform")
V_REGRESSIONS = ("reference", "per_sample")


@dataclass
class DAWRConfig(OffPolicyConfig):
    beta: float = 10.0
    """Inverse temperature of the exponentiated advantage weight (reference: beta)."""
    max_weight: float = 100.0
    """Weights are clipped to at most this (reference: max_adv_weight)."""
    lam: float = 0.95
    """lambda of the TD(lambda) value targets (the reference's td_values default)."""
    td_alpha: float = 0.95
    """Step size alpha on each TD error in the reference's TD(lambda) recursion (its td_values default)."""
    td_targets: str = "reference"
    """"reference": next row's observation as s' (see the module doc); "episodic": stored s', cut at truncation."""
    critic_samples: str = "reference"
    """"reference": critic batches drawn from the buffer's oldest transitions only, as the reference's index
    range (its buffer rows, not transitions) has it; "uniform": from every transition in the buffer."""
    v_regression: str = "reference"
    """"reference": the critic loss mean((V(s_i) - target_j)^2) over every pair i, j of the batch, as the reference's
    (B, 1) values minus (B,) targets broadcast; "per_sample": each V(s_i) regresses its own target."""
    critic_update_ratio: int = 4
    """The critic takes 1/this as many gradient steps as the actor (reference: critic_update_ratio)."""
    replay_ratio: float = 64.0
    """Actor gradient steps per iteration = int(new transitions / batch_size * replay_ratio)."""
    n_critic_warmup_itr: int = 0
    """First iterations in which the actor is not stepped (reference: n_critic_warmup_itr)."""
    buffer_size: int = 200_000
    """Replay buffer capacity in transitions (reference: buffer_size 5000 rows x n_envs 40)."""

    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        "td_targets": TD_TARGETS,
        "critic_samples": CRITIC_SAMPLES,
        "v_regression": V_REGRESSIONS,
    }
    LIMITS: ClassVar[dict[str, Range]] = {
        **OffPolicyConfig.LIMITS,
        "beta": POSITIVE,
        "max_weight": POSITIVE,
        "lam": FRACTION,
        "td_alpha": FRACTION,
        "critic_update_ratio": AT_LEAST_ONE,
    }


def td_lambda_targets(
    values: torch.Tensor,
    next_values: torch.Tensor,
    rewards: torch.Tensor,
    terminated: torch.Tensor,
    cut: torch.Tensor,
    gamma: float,
    lam: float,
    alpha: float,
) -> torch.Tensor:
    """TD(lambda) targets along time (rows, N): `values` V(s_i), `next_values` V(s') for each row, the
    recursion stopped after rows where `cut` is set."""
    not_term = (~terminated).float()
    carry = (~cut).float()
    targets = torch.zeros_like(values)
    val = torch.zeros_like(values[0])
    for i in range(values.shape[0] - 1, -1, -1):
        delta = rewards[i] + gamma * next_values[i] * not_term[i] - values[i]
        val = alpha * delta + gamma * lam * carry[i] * val
        targets[i] = val + values[i]
    return targets


def v_against(v: torch.Tensor, how: str) -> torch.Tensor:
    """The values as the critic loss pairs them with the targets (B,): (B, 1) pairs each with all of them."""
    return v[:, None] if how == "reference" else v


class DAWR(OffPolicyMethod):
    name = "dawr"
    config_cls = DAWRConfig

    def __init__(self, cfg: DAWRConfig, ctx: MethodContext):
        super().__init__(cfg, ctx)
        self.critic = self.value_critic()
        self.add_critic("critic", self.critic)

    @torch.no_grad()
    def targets(self, held: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """TD(lambda) targets and V(s) for the buffer's transitions `held` (in time order), flat (rows * N,)."""
        c = self.cfg
        rows, n = held["rewards"].shape
        values = self.critic(held["obs"].flatten(0, 1)).view(rows, n)
        if c.td_targets == "reference":
            next_values = torch.cat([values[1:], values[-1:]])
            cut = held["terminated"]
        else:
            next_values = self.critic(held["next_obs"].flatten(0, 1)).view(rows, n)
            cut = held["terminated"] | held["truncated"]
        td = td_lambda_targets(
            values, next_values, held["rewards"], held["terminated"], cut, c.gamma, c.lam, c.td_alpha
        )
        return td.flatten(), values.flatten()

    def learn(self, rollout: Rollout, itr: int) -> dict[str, float]:
        c = self.cfg
        self.store(rollout)
        held = self.buffer.in_time_order()
        obs, actions = held["obs"].flatten(0, 1), held["actions"].flatten(0, 1)
        n_actor = self.n_grad_steps(rollout)
        n_critic = n_actor // c.critic_update_ratio
        # The reference draws the critic's indices below the number of buffer rows, from the flattened
        # (rows x envs) arrays: only its oldest rows / n_envs rows' transitions ("reference"), not all ("uniform").
        critic_range = held["obs"].shape[0] if c.critic_samples == "reference" else len(obs)
        td, _ = self.targets(held)
        for _ in range(n_critic):
            idx = torch.randint(0, critic_range, (c.batch_size,), device=self.device)
            v = self.critic(obs[idx])
            loss = ((v_against(v, c.v_regression) - td[idx]) ** 2).mean()
            step(self.optimizers["critic"], loss)
            self.log(critic_loss=loss, v_mean=v)
        td, values = self.targets(held)
        advantages = td - values
        for _ in range(n_actor):
            idx = torch.randint(0, len(obs), (c.batch_size,), device=self.device)
            adv = advantages[idx]
            weights = exp_weights((adv - adv.mean()) / (adv.std() + 1e-6), c.beta, c.max_weight)
            loss = (self.policy.noise_prediction_error(obs[idx], actions[idx]) * weights).mean()
            self.actor_step(loss, itr)
            self.log(actor_loss=loss, weight_mean=weights, weight_clipped=(weights >= c.max_weight).float())
        return self.summary(rollout, n_actor, critic_grad_steps=n_critic)
