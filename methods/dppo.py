"""DPPO: PPO over the two-layer MDP of environment steps x denoising steps (SPEC 3).

Each env step samples a chain x_S -> ... -> x_0. A frozen copy of the
pre-trained network runs the first S - K' steps; a trainable copy runs the
last K'. Each fine-tuned step is a Gaussian policy step with mean
mu_theta(x_k, k, s) and std max(sigma_k, eps_min_prob); the env advantage of
step t is shared by its K' denoising steps, discounted by
gamma_denoise^(K'-1-i) (i = 0 the noisiest fine-tuned step).

Defaults: irom-princeton/dppo cfg/d3il/finetune/avoid_m2/ft_ppo_diffusion_mlp.yaml.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from methods.base import Rollout
from methods.policies.diffusion import DiffusionPolicy, gaussian_log_prob
from methods.ppo import PPOConfig, PPOMethod, check_logprob_reduction


@dataclass
class DPPOConfig(PPOConfig):
    ft_denoising_steps: int = 10  # K'
    gamma_denoise: float = 0.95
    clip_base: float = 0.1  # clip at the noisiest fine-tuned step; grows to `clip` at the last
    clip_rate: float = 1.0
    min_sampling_std: float = 0.1  # eps_min_exp
    min_logprob_std: float = 0.1  # eps_min_prob
    # "mean_clamped": the reference's average of per-dim log-probs over the
    # executed Ta x Da, clamped to [-5, 2]; "sum": the exact chunk log-density.
    logprob_reduction: str = "mean_clamped"
    logprob_batch_size: int = 10000  # chunking when recomputing old log-probs


def clip_schedule(n_ft: int, base: float, final: float, rate: float) -> torch.Tensor:
    """Clip range per fine-tuned step i = 0..K'-1, growing exponentially from base to final."""
    if n_ft == 1:
        return torch.tensor([final])
    i = torch.arange(n_ft, dtype=torch.float64) / (n_ft - 1)
    if rate == 0:
        return (base + (final - base) * i).float()
    return (base + (final - base) * (torch.exp(rate * i) - 1) / (math.exp(rate) - 1)).float()


class DPPO(PPOMethod):
    name = "dppo"
    policy_kind = "diffusion"
    config_cls = DPPOConfig

    @classmethod
    def check_config(cls, cfg: DPPOConfig) -> None:
        check_logprob_reduction(cfg.logprob_reduction)

    def __init__(self, policy: DiffusionPolicy, cfg: DPPOConfig, device, n_iterations: int, act_steps: int):
        S = policy.n_sampling_steps
        if not 1 <= cfg.ft_denoising_steps <= S:
            raise ValueError(
                f"ft_denoising_steps must be in [1, {S}] (the sampling steps), got {cfg.ft_denoising_steps}"
            )
        self.check_config(cfg)
        self.policy = policy.to(device)
        self.frozen = policy.frozen_copy()
        for p in self.policy.network.parameters():
            p.requires_grad_(True)
        self.n_ft = cfg.ft_denoising_steps
        self.first_ft = S - self.n_ft  # sampling position of the first fine-tuned step
        self.act_steps = act_steps
        self.clips = clip_schedule(self.n_ft, cfg.clip_base, cfg.clip, cfg.clip_rate).to(device)
        self.denoise_discount = torch.tensor(
            [cfg.gamma_denoise ** (self.n_ft - 1 - i) for i in range(self.n_ft)], device=device
        )
        super().__init__(policy, cfg, device, n_iterations)

    def actor_parameters(self):
        return list(self.policy.network.parameters())

    @property
    def networks(self) -> list[torch.nn.Module]:
        S = self.policy.n_sampling_steps
        return [self.frozen] * self.first_ft + [self.policy.network] * (S - self.first_ft)

    def act(self, obs: torch.Tensor, deterministic: bool):
        actions, chain = self.policy.sample(
            obs,
            deterministic=deterministic,
            min_std=self.cfg.min_sampling_std,
            networks=self.networks,
            record_from=None if deterministic else self.first_ft,
        )
        return actions, ({} if deterministic else {"chain": chain})

    # -------------------------------------------------------------- likelihood
    def step_log_prob(self, obs, x_prev, x_next, ft_index) -> torch.Tensor:
        """log p_theta(x_next | x_prev, s) per element (B, Ta, Da) at fine-tuned step `ft_index` (B,)."""
        mu, sigma = self.policy.step_mean_std(self.policy.network, x_prev, ft_index + self.first_ft, obs, eta=1.0)
        return gaussian_log_prob(x_next, mu, sigma.clamp(min=self.cfg.min_logprob_std))

    def reduce_log_prob(self, logp: torch.Tensor) -> torch.Tensor:
        executed = logp[:, : self.act_steps]
        if self.cfg.logprob_reduction == "sum":
            return executed.sum(dim=(-1, -2))
        return executed.clamp(-5, 2).mean(dim=(-1, -2))

    # -------------------------------------------------------------- PPO hooks
    def make_samples(self, rollout: Rollout, advantages, returns, values):
        T, N = rollout.n_steps, rollout.n_envs
        chain = rollout.kept["chain"].reshape(T * N, self.n_ft + 1, *rollout.kept["chain"].shape[-2:])
        obs = rollout.obs.reshape(T * N, -1)
        # one sample per (env step, fine-tuned denoising step)
        env_idx = torch.arange(T * N, device=self.device).repeat_interleave(self.n_ft)
        ft_idx = torch.arange(self.n_ft, device=self.device).repeat(T * N)
        x_prev, x_next = chain[env_idx, ft_idx], chain[env_idx, ft_idx + 1]
        s_obs = obs[env_idx]
        with torch.no_grad():
            old = torch.cat(
                [
                    self.reduce_log_prob(self.step_log_prob(o, xp, xn, f))
                    for o, xp, xn, f in zip(
                        *(t.split(self.cfg.logprob_batch_size) for t in (s_obs, x_prev, x_next, ft_idx))
                    )
                ]
            )
        return {
            "obs": s_obs,
            "x_prev": x_prev,
            "x_next": x_next,
            "ft_index": ft_idx,
            "old_logp": old,
            "advantages": advantages.reshape(-1)[env_idx],
            "returns": returns.reshape(-1)[env_idx],
            "values": values.reshape(-1)[env_idx],
        }

    def log_ratio_and_clip(self, mb, adv):
        new = self.reduce_log_prob(self.step_log_prob(mb["obs"], mb["x_prev"], mb["x_next"], mb["ft_index"]))
        return new - mb["old_logp"], adv * self.denoise_discount[mb["ft_index"]], self.clips[mb["ft_index"]]

    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.state_dict(), **super().state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        super().load_state_dict(state)
