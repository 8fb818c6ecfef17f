"""Diagonal Gaussian policy over action chunks (paper D.6), with an MLP or a Transformer backbone.

Pre-training uses a fixed std; fine-tuning may learn one log-variance per
action dimension, initialised at the fixed std and clamped to
[log std_min^2, log std_max^2], parametrised as the reference's `Gaussian_MLP`
(`logvar`, `learn_fixed_std`) so that an optimizer steps it the same way.
Sampled actions are clipped to within `randn_clip` std of the mean.
Defaults follow the reference's Avoid and Robomimic Gaussian configs
(irom-princeton/dppo cfg/d3il/pretrain/avoid_m2/pre_gaussian_mlp.yaml: 256x3
residual ReLU MLP, fixed_std 0.1; cfg/robomimic/finetune/can/ft_ppo_gaussian_mlp.yaml:
learned std in [0.01, 0.2], randn_clip_value 3; cfg/robomimic/finetune/can/ft_ppo_gaussian_transformer.yaml:
Transformer embedding 96, 4 heads, 4 layers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from common.limits import AT_LEAST_ONE, POSITIVE, Range
from methods.policies.networks import ChunkTransformer, make_mlp

BACKBONES = ("mlp", "transformer")


@dataclass
class GaussianPolicyConfig:
    backbone: str = "mlp"
    """Network from observation to the chunk's mean: mlp (hidden, activation, residual) or transformer."""
    hidden: list[int] = field(default_factory=lambda: [256, 256, 256])
    """Hidden widths of the obs -> mean-chunk MLP (residual: an odd number of equal widths; reference: mlp_dims)."""
    activation: str = "relu"
    """MLP activation: relu, mish, tanh, elu or gelu (reference: activation_type)."""
    residual: bool = True
    """Build the MLP from residual blocks instead of a plain MLP (reference: residual_style)."""
    transformer_embed_dim: int = 96
    """backbone=transformer: width of its tokens (reference: transformer_embed_dim)."""
    transformer_heads: int = 4
    """backbone=transformer: attention heads, must divide the width (reference: transformer_num_heads)."""
    transformer_layers: int = 4
    """backbone=transformer: decoder layers (reference: transformer_num_layers)."""
    fixed_std: float = 0.1
    """Std of each action dim: fixed in pre-training, the start value if algo.learn_std learns it (reference name)."""
    std_min: float = 0.01
    """Lower bound of the std: the log-variance is clamped to [log std_min^2, log std_max^2] (reference name)."""
    std_max: float = 0.2
    """Upper bound of the std; fixed_std must lie in [std_min, std_max] (reference name)."""
    randn_clip: float = 3.0
    """Sampled actions stay within +-this many stds of the mean (reference: randn_clip_value)."""
    tanh_mean: bool = True
    """Squash the predicted mean into [-1, 1] with tanh (reference Gaussian_MLP: tanh_output)."""

    LIMITS: ClassVar[dict[str, Range]] = {
        "hidden": AT_LEAST_ONE,
        "transformer_embed_dim": AT_LEAST_ONE,
        "transformer_heads": AT_LEAST_ONE,
        "transformer_layers": AT_LEAST_ONE,
        "fixed_std": POSITIVE,
        "std_min": POSITIVE,
        "std_max": POSITIVE,
        "randn_clip": POSITIVE,
    }


def check_std_and_backbone(cfg: GaussianPolicyConfig) -> None:
    if cfg.backbone not in BACKBONES:
        raise ValueError(f"policy.backbone must be one of {', '.join(BACKBONES)} for this policy, got {cfg.backbone!r}")
    if not 0 < cfg.std_min <= cfg.fixed_std <= cfg.std_max:
        raise ValueError(
            f"policy.fixed_std={cfg.fixed_std} lies outside [policy.std_min, policy.std_max] = "
            f"[{cfg.std_min}, {cfg.std_max}]; widen the range or pick a std inside it"
        )


def chunk_network(obs_dim: int, horizon: int, per_step: int, cfg: GaussianPolicyConfig) -> nn.Module:
    """The backbone that maps an observation to `per_step` outputs for each of the chunk's `horizon` steps."""
    if cfg.backbone == "transformer":
        return ChunkTransformer(
            obs_dim, horizon, per_step, cfg.transformer_embed_dim, cfg.transformer_heads, cfg.transformer_layers
        )
    return make_mlp(obs_dim, list(cfg.hidden), horizon * per_step, cfg.activation, cfg.residual)


def clamped_std(logvar: torch.Tensor, cfg: GaussianPolicyConfig) -> torch.Tensor:
    lo, hi = 2 * math.log(cfg.std_min), 2 * math.log(cfg.std_max)
    return torch.exp(0.5 * logvar.clamp(lo, hi))


class GaussianPolicy(nn.Module):
    kind = "gaussian"

    @staticmethod
    def check_config(cfg: GaussianPolicyConfig) -> None:
        """Raise ValueError naming the key if `cfg` can't make a policy."""
        check_std_and_backbone(cfg)

    @staticmethod
    def executes_part_of_chunk(cfg: GaussianPolicyConfig) -> bool:
        """Whether it may fine-tune executing fewer actions than it predicts (the paper: only DPPO-UNet)."""
        return False

    def __init__(self, obs_dim: int, act_dim: int, horizon: int, cfg: GaussianPolicyConfig):
        super().__init__()
        self.check_config(cfg)
        self.obs_dim, self.act_dim, self.horizon, self.cfg = obs_dim, act_dim, horizon, cfg
        self.network = chunk_network(obs_dim, horizon, act_dim, cfg)
        # Learned only during fine-tuning, and only where the method asks (requires_grad toggled by it).
        self.logvar = nn.Parameter(torch.full((act_dim,), 2 * math.log(cfg.fixed_std)), requires_grad=False)
        self.register_load_state_dict_pre_hook(_log_std_to_logvar)

    def mean(self, obs: torch.Tensor) -> torch.Tensor:
        obs = obs.reshape(obs.shape[0], -1)
        m = self.network(obs)[0] if self.cfg.backbone == "transformer" else self.network(obs)
        if self.cfg.tanh_mean:
            m = torch.tanh(m)
        return m.reshape(-1, self.horizon, self.act_dim)

    def std(self) -> torch.Tensor:
        return clamped_std(self.logvar, self.cfg)

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """Log-density of chunks (B, Ta, Da) -> (B,): of their first `steps` actions (None: all)."""
        logp = torch.distributions.Normal(self.mean(obs), self.std()).log_prob(actions)
        return logp[:, :steps].sum(dim=(-1, -2))

    def bc_loss(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return -self.log_prob(obs, actions).mean() / (self.horizon * self.act_dim)

    @torch.no_grad()
    def sample(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        mean = self.mean(obs)
        if deterministic:
            return mean
        z = torch.randn_like(mean).clamp_(-self.cfg.randn_clip, self.cfg.randn_clip)
        return mean + self.std() * z


def _log_std_to_logvar(_module, state_dict, prefix, *_args) -> None:
    """Checkpoints written before the std was parametrised as a log-variance hold `log_std`."""
    old = state_dict.pop(prefix + "log_std", None)
    if old is not None and prefix + "logvar" not in state_dict:
        state_dict[prefix + "logvar"] = 2 * old
