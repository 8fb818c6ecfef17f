"""A 1-D temporal-convolution UNet that predicts the noise in an action chunk (Chi et al.'s Diffusion Policy).

Behaves like the reference implementation's `Unet1D` (irom-princeton/dppo, model/diffusion/unet.py) with
`smaller_encoder=False` and no `cond_mlp_dims`: the chunk's actions are the channels and its steps the
length of a 1-D signal; residual conv blocks, each modulated by FiLM from the step embedding and the
observation, go down (strided convs), through the middle and up again (transposed convs, with skips).
Parameters are registered in the reference's order and shapes, so its weights copy over one by one.

Reference configs:
- cfg/robomimic/finetune/can/ft_ppo_diffusion_unet.yaml: dim 40, dim_mults [1, 2], kernel_size 5,
  n_groups 8, diffusion_step_embed_dim 16, cond_predict_scale True, smaller_encoder False (horizon 4);
- cfg/furniture/finetune/one_leg_low/ft_ppo_diffusion_unet.yaml: horizon_steps 16, act_steps 8, dim 64,
  dim_mults [1, 2, 4], groupnorm_eps 1e-4 (otherwise as Can).

Two quirks of the reference, kept: the up path has one level fewer than the down path and upsamples at
every level, so the chunk is halved and doubled len(dim_mults) - 1 times (the horizon must be divisible
by 2 ** (len(dim_mults) - 1)); and the first level's skip connection is computed but never used.
"""

from __future__ import annotations

from functools import partial
from itertools import pairwise

import torch
from torch import nn

from methods.policies.networks import activation, step_embedding


class ConvBlock(nn.Sequential):
    """Conv1d (same length) -> GroupNorm -> activation, on (B, C, T)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, n_groups: int, act: str, eps: float):
        super().__init__(
            nn.Conv1d(c_in, c_out, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(n_groups, c_out, eps=eps),
            activation(act),
        )


class FiLMResidualBlock(nn.Module):
    """Two conv blocks; between them the features are scaled and shifted per channel by an MLP of `cond`."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        cond_dim: int,
        kernel_size: int,
        n_groups: int,
        act: str,
        eps: float,
        predict_scale: bool,
    ):
        super().__init__()
        self.convs = nn.ModuleList([ConvBlock(c, c_out, kernel_size, n_groups, act, eps) for c in (c_in, c_out)])
        width = 2 * c_out if predict_scale else c_out
        self.film = nn.Sequential(
            nn.Linear(cond_dim, width),
            activation(act),
            nn.Linear(width, width),
            activation(act),
            nn.Linear(width, width),
        )
        self.predict_scale = predict_scale
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.convs[0](x)
        film = self.film(cond).unsqueeze(-1)
        if self.predict_scale:
            scale, bias = film.chunk(2, dim=1)
            h = scale * h + bias
        else:
            h = h + film
        return self.convs[1](h) + self.skip(x)


class UNet1D(nn.Module):
    """eps_theta(x_k, k, obs) for a chunk of `horizon` actions; same interface as `DiffusionMLP`."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        horizon: int,
        dim: int = 40,
        dim_mults: tuple[int, ...] | list[int] = (1, 2),
        kernel_size: int = 5,
        n_groups: int = 8,
        time_dim: int = 16,
        cond_predict_scale: bool = True,
        activation: str = "mish",
        groupnorm_eps: float = 1e-5,
    ):
        super().__init__()
        mults = list(dim_mults)
        factor = 2 ** (len(mults) - 1)
        if not mults or mults[0] != 1:
            raise ValueError(f"unet_dim_mults must start with 1 (the last conv block has `dim` channels), got {mults}")
        if horizon % factor:
            raise ValueError(
                f"policy.horizon {horizon} must be divisible by {factor} for unet_dim_mults {mults}; "
                f"the UNet halves the chunk {len(mults) - 1} time(s) and doubles it back, so use a multiple "
                f"of {factor} or fewer dim_mults"
            )
        widths = [dim * m for m in mults]
        if any(w % n_groups for w in widths):
            raise ValueError(f"every UNet width {widths} (dim * dim_mults) must be divisible by n_groups {n_groups}")

        self.horizon, self.act_dim = horizon, act_dim
        self.time_mlp = step_embedding(time_dim, widen=4)
        block = partial(
            FiLMResidualBlock,
            cond_dim=time_dim + obs_dim,
            kernel_size=kernel_size,
            n_groups=n_groups,
            act=activation,
            eps=groupnorm_eps,
            predict_scale=cond_predict_scale,
        )
        # registration order as in the reference: middle, down, up, final
        self.mid = nn.ModuleList([block(widths[-1], widths[-1]), block(widths[-1], widths[-1])])
        self.down = nn.ModuleList()
        for i, (c_in, c_out) in enumerate(pairwise([act_dim, *widths])):
            last = i == len(widths) - 1
            downsample = nn.Identity() if last else nn.Conv1d(c_out, c_out, 3, stride=2, padding=1)
            self.down.append(nn.ModuleList([block(c_in, c_out), block(c_out, c_out), downsample]))
        self.up = nn.ModuleList()
        for c_low, c_high in reversed(list(pairwise(widths))):
            upsample = nn.ConvTranspose1d(c_low, c_low, 4, stride=2, padding=1)
            self.up.append(nn.ModuleList([block(2 * c_high, c_low), block(c_low, c_low), upsample]))
        self.final = nn.Sequential(
            ConvBlock(dim, dim, kernel_size, n_groups, activation, groupnorm_eps), nn.Conv1d(dim, act_dim, 1)
        )

    def forward(self, x: torch.Tensor, k: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """x: (B, Ta, Da) noisy chunk, k: (B,) step indices, obs: (B, Do) -> eps (B, Ta, Da)."""
        b = x.shape[0]
        cond = torch.cat([self.time_mlp(k), obs.reshape(b, -1)], dim=-1)
        h = x.transpose(1, 2)  # (B, Da, Ta): actions are channels, chunk steps the length
        skips = []
        for block1, block2, downsample in self.down:
            h = block2(block1(h, cond), cond)
            skips.append(h)
            h = downsample(h)
        for block in self.mid:
            h = block(h, cond)
        for block1, block2, upsample in self.up:
            h = torch.cat([h, skips.pop()], dim=1)
            h = upsample(block2(block1(h, cond), cond))
        return self.final(h).transpose(1, 2)
