"""Gaussian mixture policy over action chunks (paper Sec. 5.2, D.6): `n_modes` diagonal Gaussians over the
whole chunk, mixed by observation-dependent weights; MLP or Transformer backbone.

The std treatment is the Gaussian policy's (fixed in pre-training, then optionally learned, one
log-variance per mode and action dimension, clamped to [std_min, std_max]); a sample picks a mode by its
weight and adds noise clipped to within `randn_clip` std of that mode's mean. Deterministic sampling
still picks the mode at random (the reference's GMMModel samples with scale 1e-4), so an evaluation
without noise keeps the mixture's modes.

Layout as the reference's (irom-princeton/dppo model/common/mlp_gmm.py `GMM_MLP`, model/common/transformer.py
`GMM_Transformer`): MLP: one network for the means of all modes and one for the mode logits;
Transformer: per chunk step the means of all modes, and the logits from all steps' final features.
Avoid values: cfg/d3il/pretrain/avoid_m2/pre_gmm_mlp.yaml (5 modes, MLP 256x2 plain ReLU, fixed_std 0.1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from common.limits import AT_LEAST_ONE, Range
from methods.policies.gaussian import GaussianPolicyConfig, check_std_and_backbone, chunk_network, clamped_std
from methods.policies.networks import make_mlp


@dataclass
class GMMPolicyConfig(GaussianPolicyConfig):
    n_modes: int = 5
    """Mixture components (reference: num_modes)."""

    LIMITS: ClassVar[dict[str, Range]] = {**GaussianPolicyConfig.LIMITS, "n_modes": AT_LEAST_ONE}


class GMMPolicy(nn.Module):
    kind = "gmm"

    @staticmethod
    def check_config(cfg: GMMPolicyConfig) -> None:
        check_std_and_backbone(cfg)
        if cfg.n_modes < 1:
            raise ValueError(f"policy.n_modes={cfg.n_modes}: a mixture needs at least 1 component (the paper uses 5)")

    @staticmethod
    def executes_part_of_chunk(cfg: GMMPolicyConfig) -> bool:
        return False

    def __init__(self, obs_dim: int, act_dim: int, horizon: int, cfg: GMMPolicyConfig):
        super().__init__()
        self.check_config(cfg)
        self.obs_dim, self.act_dim, self.horizon, self.cfg = obs_dim, act_dim, horizon, cfg
        M = cfg.n_modes
        self.network = chunk_network(obs_dim, horizon, M * act_dim, cfg)
        self.logvar = nn.Parameter(torch.full((M, act_dim), 2 * math.log(cfg.fixed_std)), requires_grad=False)
        if cfg.backbone == "transformer":
            self.logits_head = nn.Linear(horizon * cfg.transformer_embed_dim, M)
        else:
            self.logits_head = make_mlp(obs_dim, list(cfg.hidden), M, cfg.activation, cfg.residual)

    def components(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Means (B, M, Ta, Da) and mode logits (B, M)."""
        obs = obs.reshape(obs.shape[0], -1)
        B, M, H, D = obs.shape[0], self.cfg.n_modes, self.horizon, self.act_dim
        if self.cfg.backbone == "transformer":
            out, features = self.network(obs)  # (B, H, M * D), (B, H, E)
            means = out.view(B, H, M, D).transpose(1, 2)
            logits = self.logits_head(features.reshape(B, -1))
        else:
            means = self.network(obs).view(B, M, H, D)
            logits = self.logits_head(obs)
        return (torch.tanh(means) if self.cfg.tanh_mean else means), logits

    def std(self) -> torch.Tensor:
        """(M, Da)."""
        return clamped_std(self.logvar, self.cfg)

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """Mixture log-density of chunks (B, Ta, Da) -> (B,): of their first `steps` actions (None: all), each
        mode's marginal over those steps weighted as the mode."""
        means, logits = self.components(obs)
        per_dim = torch.distributions.Normal(means, self.std()[:, None, :]).log_prob(actions[:, None])
        per_mode = per_dim[:, :, :steps].sum(dim=(-1, -2))  # (B, M)
        return torch.logsumexp(torch.log_softmax(logits, dim=-1) + per_mode, dim=-1)

    def bc_loss(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        # per action dimension, like the Gaussian policy's, so the pre-training LR means the same for both
        return -self.log_prob(obs, actions).mean() / (self.horizon * self.act_dim)

    @torch.no_grad()
    def sample(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        means, logits = self.components(obs)
        mode = torch.distributions.Categorical(logits=logits).sample()
        mean = means[torch.arange(means.shape[0], device=means.device), mode]
        if deterministic:
            return mean
        z = torch.randn_like(mean).clamp_(-self.cfg.randn_clip, self.cfg.randn_clip)
        return mean + self.std()[mode][:, None, :] * z
