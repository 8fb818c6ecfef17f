"""DPPO's advantage estimators beside its own (paper B.1, Fig. A1), chosen by `algo.advantage`.

- "state" (DPPO's): V(s_t) by GAE over env steps; every fine-tuned denoising step of env step t gets A_t,
  discounted by gamma_denoise^(K'-1-i). Lives in `PPOMethod.estimate_advantages`.
- "full_state": V(s_t, x_i, i), the value of the denoising MDP's full state (env state, the chain's current
  sample and which fine-tuned step is next). GAE runs over the flattened MDP of T x K' steps: within a chain
  the reward is 0, the discount gamma_denoise and lambda 1 (so A_{t,i} telescopes to
  gamma_denoise^(K'-1-i) (r_t + gamma V(s_{t+1}, x_0) + ...) - V(s_t, x_i), DPPO's estimate with a baseline that
  sees x_i); at a chain's end the env reward, gamma and gae_lambda apply.
- "q": a double-Q Q(s, a) on the executed chunk, trained off-policy by TD from a replay buffer (a' sampled from
  the current policy, Polyak-averaged target), as Psenka et al.'s (QSM's) critic; the advantage of all K'
  steps is min(Q1, Q2)(s_t, a_t), discounted as DPPO's. It does not use the rollout's rewards directly
  (paper B.1, footnote 6: that critic, with on-policy PPO updates of the actor).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn import functional as F

from methods.base import Rollout
from methods.diffusion_rl import bellman_target, double_q_loss
from methods.policies.networks import DoubleQCritic, frozen_copy, make_mlp, soft_update
from methods.ppo import gae
from methods.replay import ReplayBuffer

if TYPE_CHECKING:
    from methods.dppo import DPPO

ADVANTAGE_ESTIMATORS = ("state", "full_state", "q")


class FullStateCritic(nn.Module):
    """V(s, x_i, i): observation, the flattened chunk sample entering fine-tuned step i, and i one-hot."""

    def __init__(self, obs_dim: int, chunk_size: int, n_ft: int, hidden: list[int], act: str, residual: bool):
        super().__init__()
        self.n_ft = n_ft
        self.net = make_mlp(obs_dim + chunk_size + n_ft, hidden, 1, act, residual)

    def forward(self, obs: torch.Tensor, x: torch.Tensor, ft_index: torch.Tensor) -> torch.Tensor:
        b = obs.shape[0]
        step = F.one_hot(ft_index, self.n_ft).to(obs.dtype)
        return self.net(torch.cat([obs.reshape(b, -1), x.reshape(b, -1), step], dim=-1)).squeeze(-1)


def make_critic(method: DPPO) -> nn.Module | None:
    """The critic of `method.cfg.advantage` (None: DPPO's V(s), built by PPOMethod)."""
    c, t = method.cfg, method.ctx.task
    if c.advantage == "full_state":
        chunk = t.horizon * t.act_dim
        return FullStateCritic(
            t.obs_dim, chunk, c.ft_denoising_steps, c.critic_hidden, c.critic_activation, c.critic_residual
        )
    if c.advantage == "q":
        return DoubleQCritic(t.obs_dim, t.act_steps * t.act_dim, c.critic_hidden, c.critic_activation, c.q_residual)
    return None


@torch.no_grad()
def full_state_gae(method: DPPO, rollout: Rollout, rewards: torch.Tensor):
    """Advantages, returns and values of every (env step, fine-tuned step), each (T, N, K')."""
    c, critic, K = method.cfg, method.critic, method.n_ft
    T, N = rollout.n_steps, rollout.n_envs
    chain = rollout.kept["chain"]  # (T, N, K' + 1, Ta, Da): the input of each fine-tuned step, then the action
    steps = torch.arange(K, device=method.device)
    values = critic(
        rollout.obs.reshape(T * N, 1, -1).expand(-1, K, -1).reshape(T * N * K, -1),
        chain[:, :, :K].reshape(T * N * K, -1),
        steps.repeat(T * N),
    ).view(T, N, K)
    # the chain entering the first fine-tuned step at s_{t+1}: the next step's own where the rollout has it,
    # else (an episode ended, or the rollout's last step) a fresh one through the frozen steps
    start = torch.empty_like(chain[:, :, 0])
    start[:-1] = chain[1:, :, 0]
    fresh = rollout.terminated | rollout.truncated
    fresh[-1] = True
    start[fresh] = method.chain_start(rollout.next_obs[fresh])
    next_first = critic(rollout.next_obs.reshape(T * N, -1), start.reshape(T * N, -1), steps.new_zeros(T * N)).view(
        T, N
    )

    def flat(x: torch.Tensor) -> torch.Tensor:  # (T, N, K') -> (T K', N), chain steps in time order
        return x.permute(0, 2, 1).reshape(T * K, N)

    last = torch.zeros(T, N, K, dtype=torch.bool, device=method.device)
    last[..., -1] = True
    at_end = lambda x: torch.where(last, x.unsqueeze(-1), torch.zeros_like(last, dtype=x.dtype))  # noqa: E731
    next_values = torch.cat([values[..., 1:], next_first.unsqueeze(-1)], dim=-1)
    gammas = torch.where(last, torch.tensor(c.gamma), torch.tensor(c.gamma_denoise)).to(rewards.dtype)
    lams = torch.where(last, torch.tensor(c.gae_lambda), torch.tensor(1.0)).to(rewards.dtype)
    adv, ret = gae(
        flat(at_end(rewards)),
        flat(values),
        flat(next_values),
        flat(at_end(rollout.terminated)),
        flat(at_end(rollout.truncated)),
        flat(gammas.to(method.device)),
        flat(lams.to(method.device)),
    )
    unflat = lambda x: x.view(T, K, N).permute(0, 2, 1)  # noqa: E731
    return unflat(adv), unflat(ret), values


class QEstimator:
    """The double-Q critic's replay buffer, target copy and TD updates (the critic itself is `method.critic`)."""

    def __init__(self, method: DPPO):
        self.method = method
        self.buffer = self.new_buffer(method.ctx.budget.n_envs)
        self.target = frozen_copy(method.critic)
        self.last_loss = float("nan")  # the last TD step's loss, for the iteration's metrics

    def new_buffer(self, n_envs: int) -> ReplayBuffer:
        c, t = self.method.cfg, self.method.ctx.task
        return ReplayBuffer(c.q_buffer_size, n_envs, t.obs_dim, t.horizon, t.act_dim, self.method.device)

    def executed(self, actions: torch.Tensor) -> torch.Tensor:
        return actions[:, : self.method.act_steps]

    def advantages(self, rollout: Rollout, rewards: torch.Tensor):
        m, c = self.method, self.method.cfg
        actions = rollout.kept["chain"][:, :, -1]
        if not len(self.buffer) and self.buffer.n_envs != rollout.n_envs:  # a standalone method's first rollout
            self.buffer = self.new_buffer(rollout.n_envs)
        self.buffer.add(
            obs=rollout.obs,
            next_obs=rollout.next_obs,
            actions=actions,
            rewards=rewards,
            terminated=rollout.terminated,
            truncated=rollout.truncated,
        )
        n_steps = max(1, int(rollout.n_steps * rollout.n_envs / c.q_batch_size * c.q_replay_ratio))
        for _ in range(n_steps):
            b = self.buffer.get(self.buffer.sample_indices(c.q_batch_size))
            with torch.no_grad():
                next_actions = m.policy.sample(b["next_obs"], deterministic=False, min_std=c.min_sampling_std)[0]
                next_q = torch.min(*self.target(b["next_obs"], self.executed(next_actions)))
                target = bellman_target(b["rewards"], b["terminated"], c.gamma, next_q)
            loss = double_q_loss(*m.critic(b["obs"], self.executed(b["actions"])), target)
            m.critic_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            m.critic_optimizer.step()
            soft_update(self.target, m.critic, c.q_tau)
        T, N = rollout.n_steps, rollout.n_envs
        with torch.no_grad():
            chunks = actions.reshape(T * N, *actions.shape[2:])
            q = torch.min(*m.critic(rollout.obs.reshape(T * N, -1), self.executed(chunks)))
        self.last_loss = loss.item()
        return q.view(T, N), None, None

    def state_dict(self) -> dict[str, Any]:
        return {"target": self.target.state_dict(), "buffer": self.buffer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.target.load_state_dict(state["target"])
        if self.buffer.n_envs != state["buffer"]["n_envs"] and self.method.ctx.task.name == "standalone":
            self.buffer = self.new_buffer(state["buffer"]["n_envs"])  # it took its envs from its first rollout
        self.buffer.load_state_dict(state["buffer"])
