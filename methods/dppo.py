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
from typing import Any, ClassVar

import torch

from common.limits import AT_LEAST_ONE, DISCOUNT, NON_NEGATIVE, POSITIVE, Range
from methods.base import MethodContext, Rollout
from methods.dppo_advantage import ADVANTAGE_ESTIMATORS, QEstimator, full_state_gae, make_critic
from methods.policies.diffusion import DiffusionPolicy, gaussian_log_prob
from methods.policies.networks import serial_rows
from methods.ppo import PPOConfig, PPOMethod, check_logprob_reduction


@dataclass
class DPPOConfig(PPOConfig):
    ft_denoising_steps: int = 10
    """K': how many of the S sampling steps (the last ones) the fine-tuned copy runs; a frozen copy runs the rest."""
    gamma_denoise: float = 0.95
    """Env advantage discount over denoising: fine-tuned step i gets this^(K'-1-i), i = 0 noisiest (gamma_denoising)."""
    clip_base: float = 0.1
    """Clip range at the noisiest fine-tuned step, growing to `clip` at the last (reference: clip_ploss_coef_base)."""
    clip_rate: float = 1.0
    """Exponential growth rate of the clip range from clip_base to clip; 0: linear (reference: clip_ploss_coef_rate)."""
    min_sampling_std: float = 0.1
    """eps_min_exp: std floor of every denoising step when sampling stochastically (min_sampling_denoising_std)."""
    min_logprob_std: float = 0.1
    """eps_min_prob: std floor when computing the fine-tuned steps' log-probs (reference: min_logprob_denoising_std)."""
    logprob_reduction: str = "mean_clamped"
    """"mean_clamped" (reference): mean per-dim log-prob over executed Ta x Da, clamped to [-5, 2]; "sum": exact."""
    logprob_batch_size: int = 10000
    """Samples per forward pass when recomputing the old log-probs (memory only; results unchanged)."""
    advantage: str = "state"
    """Advantage estimator (paper B.1): "state" V(s) with GAE (DPPO's), "full_state" V(s, x_k) over the denoising
    MDP, or "q" an off-policy double-Q Q(s, a) (methods/dppo_advantage.py)."""
    # The "q" estimator's TD training; defaults: QSM's (cfg/gym/finetune/hopper-v2/ft_qsm_diffusion_mlp.yaml).
    q_batch_size: int = 1000
    """advantage=q: transitions per TD step of the Q critic (reference QSM: batch_size)."""
    q_replay_ratio: float = 16.0
    """advantage=q: TD steps per iteration = new transitions / q_batch_size x this (reference QSM: replay_ratio)."""
    q_tau: float = 0.005
    """advantage=q: Polyak rate of the target Q critic per TD step (reference QSM: critic_tau)."""
    q_buffer_size: int = 1_000_000
    """advantage=q: replay buffer capacity in transitions (reference QSM: 25000 rows x 40 envs)."""
    q_residual: bool = False
    """advantage=q: residual Q MLPs (off, as the reference's CriticObsAct; see OffPolicyConfig.q_residual)."""

    LIMITS: ClassVar[dict[str, Range]] = {
        **PPOConfig.LIMITS,
        "ft_denoising_steps": AT_LEAST_ONE,
        "gamma_denoise": DISCOUNT,
        "clip_base": POSITIVE,
        "clip_rate": NON_NEGATIVE,
        "min_sampling_std": NON_NEGATIVE,
        "min_logprob_std": NON_NEGATIVE,
        "logprob_batch_size": AT_LEAST_ONE,
        "q_batch_size": AT_LEAST_ONE,
        "q_replay_ratio": POSITIVE,
        "q_tau": Range(0, 1, lo_open=True),
        "q_buffer_size": AT_LEAST_ONE,
    }


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
    def check_config(cls, cfg: DPPOConfig, policy: DiffusionPolicy | None = None) -> None:
        super().check_config(cfg, policy)
        check_logprob_reduction(cfg.logprob_reduction, ("mean_clamped", "sum"))
        if cfg.advantage not in ADVANTAGE_ESTIMATORS:
            raise ValueError(f"algo.advantage must be one of {', '.join(ADVANTAGE_ESTIMATORS)}, got {cfg.advantage!r}")
        if cfg.advantage == "q" and cfg.q_buffer_size < cfg.q_batch_size:
            raise ValueError(
                f"algo.q_buffer_size={cfg.q_buffer_size} is smaller than one TD batch (algo.q_batch_size="
                f"{cfg.q_batch_size}); the buffer must hold at least a batch of transitions"
            )
        if policy is None:
            return
        S = policy.n_sampling_steps
        if not 1 <= cfg.ft_denoising_steps <= S:
            raise ValueError(
                f"algo.ft_denoising_steps must be in [1, {S}] (the policy's sampling steps), "
                f"got {cfg.ft_denoising_steps}"
            )
        if policy.n_base_steps and policy.n_base_steps != S - cfg.ft_denoising_steps:  # DPPO fine-tuned it before
            raise ValueError(
                f"this policy was fine-tuned with its first {policy.n_base_steps} of {S} sampling steps frozen; "
                f"set algo.ft_denoising_steps={S - policy.n_base_steps}"
            )

    def __init__(self, cfg: DPPOConfig, ctx: MethodContext):
        super().__init__(cfg, ctx)
        self.check_config(cfg, self.policy)
        self.n_ft = cfg.ft_denoising_steps
        self.first_ft = self.policy.n_sampling_steps - self.n_ft  # sampling position of the first fine-tuned step
        if self.policy.n_base_steps == 0:  # a pre-trained policy: its network stays for the first steps
            self.policy.keep_base_network(self.first_ft)
        for p in self.policy.network.parameters():
            p.requires_grad_(True)
        self.act_steps = ctx.task.act_steps
        self.clips = clip_schedule(self.n_ft, cfg.clip_base, cfg.clip, cfg.clip_rate).to(self.device)
        self.denoise_discount = torch.tensor(
            [cfg.gamma_denoise ** (self.n_ft - 1 - i) for i in range(self.n_ft)], device=self.device
        )
        self.q_estimator = QEstimator(self) if cfg.advantage == "q" else None

    def make_critic(self) -> torch.nn.Module:
        return make_critic(self) or super().make_critic()

    def estimate_advantages(self, rollout: Rollout, rewards: torch.Tensor):
        if self.cfg.advantage == "full_state":
            return full_state_gae(self, rollout, rewards)
        if self.q_estimator is not None:
            return self.q_estimator.advantages(rollout, rewards)
        return super().estimate_advantages(rollout, rewards)

    def predict_values(self, mb: dict[str, torch.Tensor]) -> torch.Tensor | None:
        if self.cfg.advantage == "full_state":
            return self.critic(mb["obs"], mb["x_prev"], mb["ft_index"])
        return None if self.q_estimator is not None else super().predict_values(mb)

    def update(self, rollout: Rollout, itr: int) -> dict[str, float]:
        out = super().update(rollout, itr)
        return {**out, "q_loss": self.q_estimator.last_loss} if self.q_estimator is not None else out

    def chain_start(self, obs: torch.Tensor) -> torch.Tensor:
        """Fresh samples of the chain entering the first fine-tuned step at `obs` (through the frozen steps)."""
        if not len(obs):
            return obs.new_zeros(0, self.policy.horizon, self.policy.act_dim)
        _, chain = self.policy.sample(
            obs, deterministic=False, min_std=self.cfg.min_sampling_std, record_from=self.first_ft
        )
        return chain[:, 0]

    def actor_parameters(self):
        return list(self.policy.network.parameters())

    @property
    def frozen(self) -> torch.nn.Module | None:
        """The pre-trained network that runs the first S - K' sampling steps (None when K' = S)."""
        return getattr(self.policy, "base_network", None) if self.first_ft else None

    @property
    def networks(self) -> list[torch.nn.Module]:
        return self.policy.sampling_networks()

    def act(self, obs: torch.Tensor, deterministic: bool):
        actions, chain = self.policy.sample(
            obs,
            deterministic=deterministic,
            min_std=self.cfg.min_sampling_std,
            record_from=None if deterministic else self.first_ft,
        )
        return actions, ({} if deterministic else {"chain": chain})

    # -------------------------------------------------------------- likelihood
    def step_log_prob(self, obs, x_prev, x_next, ft_index) -> torch.Tensor:
        """log p_theta(x_next | x_prev, s) per element (B, Ta, Da) at fine-tuned step `ft_index` (B,)."""
        pos = ft_index + self.first_ft
        return self._step_log_prob(x_prev, x_next, self.policy.network(x_prev, self.policy.net_k[pos], obs), pos)

    def _step_log_prob(self, x_prev, x_next, eps, pos) -> torch.Tensor:
        mu, sigma = self.policy.mean_std_from_eps(x_prev, eps, pos, eta=1.0)
        return gaussian_log_prob(x_next, mu, sigma.clamp(min=self.cfg.min_logprob_std))

    def log_prob(self, obs, x_prev, x_next, ft_index) -> torch.Tensor:
        """`reduce_log_prob(step_log_prob(...))` (B,): the network runs on the whole batch, the per-sample maths after
        it in pieces of `serial_rows` samples (one CPU thread each; see networks.SERIAL_GRAIN)."""
        pos = ft_index + self.first_ft
        eps = self.policy.network(x_prev, self.policy.net_k[pos], obs)
        pieces = zip(*(t.split(serial_rows(eps)) for t in (x_prev, x_next, eps, pos)), strict=True)
        return torch.cat([self.reduce_log_prob(self._step_log_prob(*piece)) for piece in pieces])

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
                    self.log_prob(o, xp, xn, f)
                    for o, xp, xn, f in zip(
                        *(t.split(self.cfg.logprob_batch_size) for t in (s_obs, x_prev, x_next, ft_idx))
                    )
                ]
            )

        def per_sample(x: torch.Tensor) -> torch.Tensor:  # (T, N): shared by the step's K' samples; or (T, N, K')
            return x.reshape(-1) if x.dim() == 3 else x.reshape(-1)[env_idx]

        samples = {
            "obs": s_obs,
            "x_prev": x_prev,
            "x_next": x_next,
            "ft_index": ft_idx,
            "env_index": env_idx,  # the critic's V(s) runs once per env step (PPOMethod.predict_values)
            "old_logp": old,
            "advantages": per_sample(advantages),
        }
        if returns is not None:  # the "q" estimator's critic is not regressed by PPO
            samples.update(returns=per_sample(returns), values=per_sample(values))
        return samples

    def log_ratio_and_clip(self, mb, adv):
        new = self.log_prob(mb["obs"], mb["x_prev"], mb["x_next"], mb["ft_index"])
        if self.cfg.advantage != "full_state":  # full_state's GAE discounts over the denoising steps itself
            adv = adv * self.denoise_discount[mb["ft_index"]]
        return new - mb["old_logp"], adv, self.clips[mb["ft_index"]]

    def state_dict(self) -> dict[str, Any]:
        q = {"q_estimator": self.q_estimator.state_dict()} if self.q_estimator is not None else {}
        return {"policy": self.policy.state_dict(), **super().state_dict(), **q}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        super().load_state_dict(state)
        if self.q_estimator is not None:
            self.q_estimator.load_state_dict(state["q_estimator"])
