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
from collections.abc import Callable, Iterable
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
        act_in, lin_in, act_mid, lin_out = self.net
        # = x + net(x). The two layer outputs are fresh and no backward saves them, so the ReLU after the first and
        # the skip's sum after the second run in place: two fewer activation-sized allocations per call.
        h = lin_in(act_in(x))
        return lin_out(h.relu_() if type(act_mid) is nn.ReLU else act_mid(h)).add_(x)


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


def transposed_weight(layer: nn.Linear) -> torch.Tensor:
    """`layer.weight.t()` as a contiguous (in, out) tensor, kept until the weight changes: a new tensor or an in-place
    change that autograd's version counter records (optimiser steps, `load_state_dict`, `copy_` under no_grad;
    not writes through `.data`, nor torch's fused optimisers, which skip the counter: nothing here uses either).
    For inference only: no gradient flows through it."""
    w = layer.weight
    key = (w.data_ptr(), w._version, w.device, w.dtype)
    cached = layer.__dict__.get("_transposed_weight")
    if cached is None or cached[0] != key:
        cached = (key, w.detach().t().contiguous())
        layer.__dict__["_transposed_weight"] = cached
    return cached[1]


# torch runs an elementwise op or reduction on fewer elements than its intra-op grain (at::internal::GRAIN_SIZE) on
# the calling thread, on more on its thread pool: a wake-up of the pool's threads per op, microseconds on an idle
# machine but up to a scheduler tick (~8 ms measured) while the cores are oversubscribed. Per-sample maths on a
# minibatch (50,000 x 12 values for DPPO) is cheap either way, so on CPU it runs in pieces under the grain, and so does
# the thin last layer of a sampled chain (`DiffusionMLP.conditioned`).
SERIAL_GRAIN = 32768


def serial_rows(t: torch.Tensor) -> int:
    """Rows of `t` per piece for per-sample maths on one thread: under SERIAL_GRAIN elements on CPU, all elsewhere."""
    if t.device.type != "cpu" or not len(t):
        return max(1, len(t))
    return max(1, (SERIAL_GRAIN - 1) // max(1, t[0].numel()))


class _Scratch:
    """Reusable (rows, width) output buffers for `DiffusionMLP.conditioned`, a few per width: each layer writes into
    one (`out=`) instead of a fresh tensor per layer and step, which the allocator would take from, and the OS page in
    to, memory again on every call."""

    def __init__(self, like: torch.Tensor, rows: int):
        self.like, self.rows, self.pools = like, rows, {}

    def take(self, width: int, *busy: torch.Tensor, rows: int | None = None) -> torch.Tensor:
        """A (rows, width) buffer, `rows` the batch's by default, that is none of `busy`."""
        pool = self.pools.setdefault((rows or self.rows, width), [])
        for t in pool:
            if not any(t is u for u in busy):
                return t
        pool.append(self.like.new_empty(rows or self.rows, width))
        return pool[-1]

    def thin(self, d_in: int, d_out: int) -> bool:
        """Whether a (d_in -> d_out) layer has few enough outputs, at this batch size on CPU, to run as one
        matrix-vector product per output (one thread each) rather than one matmul, which CPU BLAS threads even at
        40 x 512 x 12: its wake-up of the thread pool costs more than the product when the cores are busy."""
        return d_out <= 16 and self.rows * d_in < SERIAL_GRAIN and self.like.device.type == "cpu"


def _nograd_op(module: nn.Module, scratch: _Scratch) -> Callable[..., torch.Tensor]:
    """`module`'s forward for `DiffusionMLP.conditioned`, op(h, *busy) -> output: linear layers as `addmm` with the
    transposed weight into a scratch buffer (none of h and `busy`), ReLU in place (its input is always a fresh layer
    output there), residual blocks with both; other modules as they are."""
    if isinstance(module, nn.Linear):
        bias, width = module.bias, module.out_features
        if scratch.thin(module.in_features, width):
            w_rows = module.weight.detach().unbind(0)  # output j's weights
            cols = scratch.take(scratch.rows, rows=width)
            col_rows = cols.unbind(0)

            def thin(h: torch.Tensor, *busy: torch.Tensor) -> torch.Tensor:
                for w_j, out_j in zip(w_rows, col_rows, strict=True):
                    torch.mv(h, w_j, out=out_j)
                # not `cols` either: at a batch of `width` rows it sits in the same pool
                return torch.add(cols.t(), bias, out=scratch.take(width, h, cols, *busy))

            return thin
        w_t = transposed_weight(module)
        return lambda h, *busy: torch.addmm(bias, h, w_t, out=scratch.take(width, h, *busy))
    if isinstance(module, nn.ReLU):
        return lambda h, *busy: h.relu_()
    if isinstance(module, ResidualBlock):
        act_in = module.net[0]  # not in place: its input is the skip connection
        lin_in, act_mid, lin_out = (_nograd_op(m, scratch) for m in module.net[1:])
        relu_in = isinstance(act_in, nn.ReLU)

        def block(h: torch.Tensor, *busy: torch.Tensor) -> torch.Tensor:
            a = torch.clamp(h, min=0, out=scratch.take(h.shape[1], h, *busy)) if relu_in else act_in(h)
            return lin_out(act_mid(lin_in(a, h, *busy)), h, *busy).add_(h)

        return block
    return lambda h, *busy: module(h)


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
        n_steps: int | None = None,
    ):
        super().__init__()
        self.horizon, self.act_dim = horizon, act_dim
        self.n_steps = n_steps  # K, if known: every k is in [0, K) (only speeds up `step_features`)
        self.time_embedding = step_embedding(time_dim, widen=2)
        chunk = horizon * act_dim
        self.body = make_mlp(chunk + time_dim + obs_dim, hidden, chunk, act, residual)

    def forward(self, x: torch.Tensor, k: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """x: (B, Ta, Da) noisy chunk, k: (B,) step indices, obs: (B, Do) -> eps (B, Ta, Da)."""
        b = x.shape[0]
        h = torch.cat([x.reshape(b, -1), self.step_features(k), obs.reshape(b, -1)], dim=-1)
        return self.body(h).view(b, self.horizon, self.act_dim)

    def step_features(self, k: torch.Tensor) -> torch.Tensor:
        """The time embedding of steps k (B,): with `n_steps` known and exceeded by the batch, computed once per
        step in [0, n_steps) and looked up per row (same values; gradients summed per step by the lookup)."""
        if self.n_steps is None or k.numel() <= self.n_steps:
            return self.time_embedding(k)
        return nn.functional.embedding(k, self.time_embedding(torch.arange(self.n_steps, device=k.device)))

    @torch.no_grad()
    def conditioned(self, obs: torch.Tensor, steps: Iterable[int]) -> Callable[[torch.Tensor, int], torch.Tensor]:
        """eps(x, k) = self(x, [k] * B, obs) for one batch of observations (B, Do) and a step k among `steps`,
        without gradients and equal up to float rounding: what a sampled chain calls once per step.

        Cheaper per call than `forward` at the small batches of a rollout: the first layer's observation and
        time-embedding parts are computed once here (the embedding for the listed steps only), so a call's first
        layer multiplies only the noisy chunk; every other layer is one `addmm` with a transposed copy of its weight
        (`transposed_weight`), which CPU BLAS runs markedly faster than `linear`'s transposed operand at a few dozen
        rows, or, for the thin output layer, one matrix-vector product per output (`_Scratch.thin`); layers write into
        a few buffers kept with the parts below and activations run in place. The tensor returned is one of those
        buffers: it holds eps until the next call of any `conditioned` function of this network."""
        b, chunk = obs.shape[0], self.horizon * self.act_dim
        first = self.body.net[0] if isinstance(self.body, ResidualMLP) else self.body[0]
        per_step, w_x, scratch, plan = self._conditioned_parts(tuple(sorted(set(steps))), obs)
        per_obs = obs.reshape(b, -1) @ first.weight[:, chunk + self.time_embedding[-1].out_features :].t()

        @torch.no_grad()
        def eps(x: torch.Tensor, k: int) -> torch.Tensor:
            h = torch.addmm(per_obs, x.reshape(b, chunk), w_x, out=scratch.take(per_obs.shape[1], per_obs))
            h.add_(per_step[k])
            for op in plan:
                h = op(h)
            return h.view(b, self.horizon, self.act_dim)

        return eps

    def _conditioned_parts(self, steps: tuple[int, ...], obs: torch.Tensor):
        """What `conditioned` needs besides the observations' part, kept until a parameter changes (as
        `transposed_weight` tells) or the steps, batch size, device or dtype do: the first layer's time-embedding
        part per step (bias included), its noisy-chunk weight transposed, the scratch buffers and the layer plan."""
        key = (steps, obs.shape[0], obs.device, obs.dtype, *((p.data_ptr(), p._version) for p in self.parameters()))
        cached = self.__dict__.get("_conditioned_cache")
        if cached is None or cached[0] != key:
            layers = list(self.body.net if isinstance(self.body, ResidualMLP) else self.body)
            first, chunk = layers[0], self.horizon * self.act_dim
            emb = self.time_embedding(torch.tensor(steps, device=obs.device))
            w_t = first.weight[:, chunk : chunk + emb.shape[1]].t()
            per_step = dict(zip(steps, torch.addmm(first.bias, emb, w_t), strict=True))
            scratch = _Scratch(first.weight.new_empty(0), obs.shape[0])
            plan = [_nograd_op(m, scratch) for m in layers[1:]]
            cached = (key, (per_step, first.weight[:, :chunk].t().contiguous(), scratch, plan))
            self.__dict__["_conditioned_cache"] = cached
        return cached[1]


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
