"""Backbones shared by every policy and critic: plain and residual MLPs, the
sinusoidal time embedding and the diffusion MLP that predicts noise.

Dimensions follow the reference implementation's `DiffusionMLP`
(irom-princeton/dppo, model/diffusion/mlp_diffusion.py): a 16-dim sinusoidal
time embedding refined by a two-layer Mish MLP, concatenated with the flattened
noisy chunk and the flattened observation, fed to a residual MLP.
"""

from __future__ import annotations

import copy
import math
from itertools import pairwise

import torch
from torch import nn

ACTIVATIONS = {
    "relu": nn.ReLU,
    "mish": nn.Mish,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
}


def activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name.lower()]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None


def mlp(dims: list[int], act: str) -> nn.Sequential:
    """Linear layers with `act` between them and no activation at the end."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(pairwise(dims)):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(dims) - 2:
            layers.append(activation(act))
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """Two pre-activation linear layers with a skip connection."""

    def __init__(self, width: int, act: str):
        super().__init__()
        self.net = nn.Sequential(activation(act), nn.Linear(width, width), activation(act), nn.Linear(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class ResidualMLP(nn.Module):
    """`in -> hidden`, then one residual block per two further hidden layers, then `hidden -> out`.

    `hidden` lists the hidden widths as in the reference configs (`mlp_dims`);
    all must be equal and their count odd (1 input layer + pairs), e.g. [512, 512, 512].
    """

    def __init__(self, d_in: int, hidden: list[int], d_out: int, act: str):
        super().__init__()
        width = hidden[0]
        if any(h != width for h in hidden) or len(hidden) % 2 == 0:
            raise ValueError(
                f"residual MLP needs an odd number of equal hidden widths, got {hidden}; "
                "use residual=false for other shapes"
            )
        blocks = [ResidualBlock(width, act) for _ in range((len(hidden) - 1) // 2)]
        self.net = nn.Sequential(nn.Linear(d_in, width), *blocks, nn.Linear(width, d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def make_mlp(d_in: int, hidden: list[int], d_out: int, act: str, residual: bool) -> nn.Module:
    if residual:
        return ResidualMLP(d_in, hidden, d_out, act)
    return mlp([d_in, *hidden, d_out], act)


class SinusoidalEmbedding(nn.Module):
    """Transformer-style sin/cos embedding of the (integer) denoising step."""

    def __init__(self, dim: int):
        super().__init__()
        half = dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half) / (half - 1))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, k: torch.Tensor) -> torch.Tensor:
        angles = k.float()[:, None] * self.freqs[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


def step_embedding(dim: int, widen: int) -> nn.Sequential:
    """Sinusoidal embedding of the denoising step refined by Linear(dim, widen * dim), Mish, Linear(widen * dim, dim):
    the MLP's (widen 2) and the UNet's (widen 4) step inputs."""
    return nn.Sequential(SinusoidalEmbedding(dim), nn.Linear(dim, widen * dim), nn.Mish(), nn.Linear(widen * dim, dim))


class DiffusionMLP(nn.Module):
    """eps_theta(x_k, k, obs): noise prediction for a chunk of `horizon` actions."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        horizon: int,
        hidden: list[int],
        time_dim: int = 16,
        act: str = "relu",
        residual: bool = True,
    ):
        super().__init__()
        self.horizon, self.act_dim = horizon, act_dim
        self.time_embedding = step_embedding(time_dim, widen=2)
        chunk = horizon * act_dim
        self.body = make_mlp(chunk + time_dim + obs_dim, hidden, chunk, act, residual)

    def forward(self, x: torch.Tensor, k: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """x: (B, Ta, Da) noisy chunk, k: (B,) step indices, obs: (B, Do) -> eps (B, Ta, Da)."""
        b = x.shape[0]
        h = torch.cat([x.reshape(b, -1), self.time_embedding(k), obs.reshape(b, -1)], dim=-1)
        return self.body(h).view(b, self.horizon, self.act_dim)


class ValueCritic(nn.Module):
    """State-only value V(s) (the reference's `CriticObs`)."""

    def __init__(self, obs_dim: int, hidden: list[int], act: str = "mish", residual: bool = True):
        super().__init__()
        self.net = make_mlp(obs_dim, hidden, 1, act, residual)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs.reshape(obs.shape[0], -1)).squeeze(-1)


class DoubleQCritic(nn.Module):
    """Two independent Q(s, a) MLPs on the observation and the flattened executed chunk (the reference's
    `CriticObsAct` with `double_q`). Returns (q1, q2), each (B,)."""

    def __init__(self, obs_dim: int, action_size: int, hidden: list[int], act: str = "mish", residual: bool = False):
        super().__init__()
        self.q1 = make_mlp(obs_dim + action_size, hidden, 1, act, residual)
        self.q2 = make_mlp(obs_dim + action_size, hidden, 1, act, residual)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = obs.shape[0]
        x = torch.cat([obs.reshape(b, -1), actions.reshape(b, -1)], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A copy of `module` that no optimiser trains (a target network)."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging: target <- (1 - tau) target + tau source."""
    for t, s in zip(target.parameters(), source.parameters(), strict=True):
        t.mul_(1.0 - tau).add_(s, alpha=tau)


class ChunkTransformer(nn.Module):
    """Decoder-only transformer over the action chunk (paper D.6; Diffusion Policy's transformer without
    diffusion): `horizon` learned position embeddings are the queries, cross-attending to one observation
    token; pre-norm layers, GELU, no dropout. forward(obs (B, Do)) -> (head output (B, H, d_out),
    final-layer-normed features (B, H, embed_dim)).

    Registered as the reference's `Transformer` (irom-princeton/dppo model/common/transformer.py, T_cond 1,
    no condition encoder layers: a 2-layer Mish MLP instead), so weights map one to one, and initialised as
    it is: N(0, 0.02) weights and position embeddings, zero biases.
    """

    def __init__(self, obs_dim: int, horizon: int, d_out: int, embed_dim: int, n_heads: int, n_layers: int):
        super().__init__()
        if embed_dim % n_heads:
            raise ValueError(
                f"policy.transformer_embed_dim={embed_dim} must be divisible by policy.transformer_heads={n_heads}"
            )
        self.horizon = horizon
        self.obs_embed = nn.Linear(obs_dim, embed_dim)
        self.obs_pos = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.obs_mlp = nn.Sequential(
            nn.Linear(embed_dim, 4 * embed_dim), nn.Mish(), nn.Linear(4 * embed_dim, embed_dim)
        )
        self.positions = nn.Parameter(torch.zeros(1, horizon, embed_dim))
        layer = nn.TransformerDecoderLayer(
            embed_dim, n_heads, 4 * embed_dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.decoder = nn.TransformerDecoder(layer, n_layers)
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, d_out)
        self.apply(_transformer_init)
        nn.init.normal_(self.positions, std=0.02)
        nn.init.normal_(self.obs_pos, std=0.02)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = obs.shape[0]
        memory = self.obs_mlp(self.obs_embed(obs.reshape(b, 1, -1)) + self.obs_pos)
        h = self.norm(self.decoder(self.positions.expand(b, -1, -1), memory))
        return self.head(h), h


def _transformer_init(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.MultiheadAttention):
        nn.init.normal_(module.in_proj_weight, std=0.02)
        nn.init.zeros_(module.in_proj_bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
