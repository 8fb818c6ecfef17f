"""DDPM / DDIM diffusion policy over action chunks (SPEC sections 1-2).

The policy denoises a chunk `x` of shape (Ta, Da) in `S` sampling steps
(`S = K` for DDPM, `S = ddim_steps` for DDIM). Everything a step needs is
stored per *sampling position* `i = 0..S-1` (0 is the noisiest), so a batch
may mix positions: that is what DPPO's minibatches of (env step, denoising
step) pairs need.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from common.limits import AT_LEAST_ONE, POSITIVE, Range
from methods.policies.networks import DiffusionMLP, frozen_copy

BACKBONES = ("mlp", "unet")


def cosine_betas(K: int, s: float = 0.008) -> np.ndarray:
    """Nichol & Dhariwal's cosine schedule (diffusers' `squaredcos_cap_v2`), float64."""
    i = np.arange(K + 1, dtype=np.float64)
    abar = np.cos(((i / K) + s) / (1 + s) * np.pi / 2) ** 2
    abar = abar / abar[0]
    return np.clip(1.0 - abar[1:] / abar[:-1], 0.0, 0.999)


@dataclass
class DiffusionPolicyConfig:
    denoising_steps: int = 20
    """K: diffusion steps of the cosine noise schedule, trained on and sampled by DDPM (reference: denoising_steps)."""
    backbone: str = "mlp"
    """Noise-prediction network: mlp (hidden, activation, residual) or unet (unet_*; may execute part of its chunk)."""
    hidden: list[int] = field(default_factory=lambda: [512, 512, 512])
    """Hidden widths of the noise-prediction MLP (residual: an odd number of equal widths; reference: mlp_dims)."""
    time_dim: int = 16
    """Size of the sinusoidal denoising-step embedding fed to the MLP (reference: time_dim)."""
    activation: str = "relu"
    """MLP activation: relu, mish, tanh, elu or gelu (reference: activation_type)."""
    residual: bool = True
    """Build the MLP from residual blocks instead of a plain MLP (reference: residual_style)."""
    unet_dim: int = 40
    """backbone=unet: channels of its first level (reference Unet1D: dim)."""
    unet_dim_mults: list[int] = field(default_factory=lambda: [1, 2])
    """backbone=unet: channel multiple of each level; the horizon must divide by 2^(levels-1) (reference: dim_mults)."""
    unet_kernel: int = 5
    """backbone=unet: temporal convolution width (reference: kernel_size)."""
    unet_groups: int = 8
    """backbone=unet: GroupNorm groups, must divide every level's channels (reference: n_groups)."""
    unet_groupnorm_eps: float = 1e-5
    """backbone=unet: GroupNorm epsilon (reference: groupnorm_eps)."""
    unet_film_scale: bool = True
    """backbone=unet: FiLM predicts a per-channel scale as well as a bias (reference: cond_predict_scale)."""
    use_ddim: bool = False
    """Sample with DDIM in `ddim_steps` steps (eta 0 when deterministic, else 1) instead of DDPM's K steps."""
    ddim_steps: int = 5
    """Number of DDIM sampling steps, must divide denoising_steps; used only with use_ddim."""
    denoised_clip: float = 1.0
    """The predicted x0 is clipped to +-this at every reverse step (reference: denoised_clip_value)."""
    randn_clip: float = 3.0
    """Sampling noise z ~ N(0, 1) is clipped to +-this at every reverse step (reference: randn_clip_value)."""
    final_action_clip: float | None = None
    """Clip the sampled chunk to +-this after the last step; None: no clipping (reference: final_action_clip_value)."""

    # How the chain is sampled, not what the weights are: a pre-trained checkpoint may be fine-tuned with others
    # (the reference pre-trains with DDPM and fine-tunes some tasks with DDIM, e.g.
    # cfg/furniture/finetune/one_leg_low/ft_ppo_diffusion_mlp.yaml: use_ddim True, ddim_steps 5).
    SAMPLING_KEYS: ClassVar[tuple[str, ...]] = ("use_ddim", "ddim_steps")

    LIMITS: ClassVar[dict[str, Range]] = {
        "denoising_steps": AT_LEAST_ONE,
        "hidden": AT_LEAST_ONE,
        "time_dim": AT_LEAST_ONE,
        "unet_dim": AT_LEAST_ONE,
        "unet_dim_mults": AT_LEAST_ONE,
        "unet_kernel": AT_LEAST_ONE,
        "unet_groups": AT_LEAST_ONE,
        "unet_groupnorm_eps": POSITIVE,
        "ddim_steps": AT_LEAST_ONE,
        "denoised_clip": POSITIVE,
        "randn_clip": POSITIVE,
        "final_action_clip": POSITIVE,
    }


class DiffusionPolicy(nn.Module):
    kind = "diffusion"

    def __init__(self, obs_dim: int, act_dim: int, horizon: int, cfg: DiffusionPolicyConfig):
        super().__init__()
        self.obs_dim, self.act_dim, self.horizon, self.cfg = obs_dim, act_dim, horizon, cfg
        K = cfg.denoising_steps
        self.check_config(cfg)
        if cfg.backbone == "unet":
            from methods.policies.unet import UNet1D

            self.network = UNet1D(
                obs_dim,
                act_dim,
                horizon,
                dim=cfg.unet_dim,
                dim_mults=tuple(cfg.unet_dim_mults),
                kernel_size=cfg.unet_kernel,
                n_groups=cfg.unet_groups,
                time_dim=cfg.time_dim,
                cond_predict_scale=cfg.unet_film_scale,
                activation=cfg.activation,
                groupnorm_eps=cfg.unet_groupnorm_eps,
            )
        else:
            self.network = DiffusionMLP(
                obs_dim, act_dim, horizon, list(cfg.hidden), cfg.time_dim, cfg.activation, cfg.residual, n_steps=K
            )

        betas = cosine_betas(K)
        alphas = 1.0 - betas
        abar = np.cumprod(alphas)
        abar_prev = np.concatenate([[1.0], abar[:-1]])
        # forward process, indexed by k
        self._buffer("sqrt_abar", np.sqrt(abar))
        self._buffer("sqrt_one_minus_abar", np.sqrt(1.0 - abar))

        if cfg.use_ddim:
            ratio = K // cfg.ddim_steps
            ks = np.arange(cfg.ddim_steps)[::-1] * ratio  # "leading" spacing, reversed
            a = abar[ks]
            a_prev = np.concatenate([abar[ks[1:]], [1.0]])
            # Every coefficient in float64 before rounding once: near a_prev ~ 1 the direction coefficient
            # sqrt(1 - a_prev - sigma^2) is a difference of nearly equal numbers, and float32 inputs to it
            # would lose ~1e-3 of it (K = 100, 5 DDIM steps).
            self._ddim_a_prev = a_prev
            self._ddim_sigma1_sq = (1 - a_prev) / (1 - a) * (1 - a / a_prev)  # sigma^2 at eta = 1
            self._buffer("sqrt_a", np.sqrt(a))
            self._buffer("sqrt_one_minus_a", np.sqrt(1 - a))
            self._buffer("sqrt_a_prev", np.sqrt(a_prev))
            self._buffer("ddim_sigma1", np.sqrt(self._ddim_sigma1_sq))
            self._buffer("ddim_dir_eta0", self._ddim_dir(0.0))  # evaluation
            self._buffer("ddim_dir_eta1", self._ddim_dir(1.0))  # fine-tuning
        else:
            ks = np.arange(K)[::-1]
            var = betas * (1.0 - abar_prev) / (1.0 - abar)
            self._buffer("sqrt_recip_abar", np.sqrt(1.0 / abar[ks]))
            self._buffer("sqrt_recipm1_abar", np.sqrt(1.0 / abar[ks] - 1.0))
            self._buffer("mu_c1", (betas * np.sqrt(abar_prev) / (1.0 - abar))[ks])
            self._buffer("mu_c2", ((1.0 - abar_prev) * np.sqrt(alphas) / (1.0 - abar))[ks])
            self._buffer("ddpm_sigma", np.sqrt(np.maximum(var, 1e-20))[ks])
        self.register_buffer("net_k", torch.as_tensor(ks.copy(), dtype=torch.long), persistent=False)

    @staticmethod
    def check_config(cfg: DiffusionPolicyConfig) -> None:
        """Raise ValueError naming the key if `cfg` can't make a policy."""
        if cfg.backbone not in BACKBONES:
            raise ValueError(
                f"policy.backbone must be one of {', '.join(BACKBONES)} for a diffusion policy, got {cfg.backbone!r}"
            )
        if cfg.use_ddim and (cfg.ddim_steps < 1 or cfg.denoising_steps % cfg.ddim_steps):
            K = cfg.denoising_steps
            valid = ", ".join(str(d) for d in range(1, K + 1) if K % d == 0)
            raise ValueError(
                f"policy.ddim_steps={cfg.ddim_steps} must divide policy.denoising_steps={K}: one of {valid}"
            )

    @staticmethod
    def executes_part_of_chunk(cfg: DiffusionPolicyConfig) -> bool:
        """Whether it may fine-tune executing fewer actions than it predicts: the UNet convolves over the chunk;
        the paper found an MLP unstable when the two differ (Sec. 4.2, footnote 4)."""
        return cfg.backbone == "unet"

    def _buffer(self, name: str, values: np.ndarray) -> None:
        self.register_buffer(name, torch.as_tensor(values, dtype=torch.float32), persistent=False)

    def _ddim_dir(self, eta: float) -> np.ndarray:
        """sqrt(1 - a_prev - (eta sigma_1)^2) per sampling position, in float64."""
        return np.sqrt(np.maximum(1 - self._ddim_a_prev - eta**2 * self._ddim_sigma1_sq, 0.0))

    def ddim_direction(self, eta: float) -> torch.Tensor:
        """The DDIM step's coefficient of eps at `eta`: precomputed for 0 and 1, else computed in float64 now."""
        if eta == 0.0:
            return self.ddim_dir_eta0
        if eta == 1.0:
            return self.ddim_dir_eta1
        return torch.as_tensor(self._ddim_dir(eta), dtype=torch.float32, device=self.sqrt_a.device)

    @property
    def n_sampling_steps(self) -> int:
        return self.cfg.ddim_steps if self.cfg.use_ddim else self.cfg.denoising_steps

    # ---------------------------------------------------------------- training
    def bc_loss(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Eps-prediction MSE with k ~ U{0..K-1}."""
        return self.noise_prediction_error(obs, actions).mean()

    def noise_prediction_error(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Per sample (B,): mean over the chunk of (eps_theta(x_k, k, s) - eps)^2, k ~ U{0..K-1}, x_k ~ q(x_k | a)."""
        k = torch.randint(0, self.cfg.denoising_steps, (actions.shape[0],), device=actions.device)
        eps = torch.randn_like(actions)
        return ((self.network(self.noised(actions, k, eps), k, obs) - eps) ** 2).mean(dim=(-1, -2))

    def noised(self, actions: torch.Tensor, k: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_k = sqrt(abar_k) a + sqrt(1 - abar_k) eps: the forward process at diffusion steps k (B,)."""
        return self.sqrt_abar[k, None, None] * actions + self.sqrt_one_minus_abar[k, None, None] * eps

    # ---------------------------------------------------------------- one reverse step
    def step_mean_std(
        self,
        network: nn.Module,
        x: torch.Tensor,
        pos: torch.Tensor,
        obs: torch.Tensor,
        eta: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of p(x_{next} | x) at sampling positions `pos` (B,) with `network`.

        The std returned is the schedule's own (DDPM sigma_k, or DDIM eta * sigma);
        callers apply their floors.
        """
        return self.mean_std_from_eps(x, network(x, self.net_k[pos], obs), pos, eta)

    def mean_std_from_eps(
        self, x: torch.Tensor, eps: torch.Tensor, pos: torch.Tensor, eta: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`step_mean_std` given the network's noise prediction `eps` at sampling positions `pos` (B,)."""
        shape = (-1, 1, 1)

        def coef(name: str) -> torch.Tensor:
            return (self.ddim_direction(eta) if name == "ddim_dir" else getattr(self, name))[pos].view(shape)

        mu, sigma = self._mean_std(x, eps, coef, eta)
        return mu, sigma.expand_as(mu)

    def _mean_std(self, x: torch.Tensor, eps: torch.Tensor, coef: Callable, eta: float):
        """The step's mean from the predicted noise and the schedule's std, with `coef(name)` the named coefficient
        at the step's positions: a (B, 1, 1) tensor, or a float when the whole batch is at one position."""
        clip = self.cfg.denoised_clip
        if self.cfg.use_ddim:
            sqrt_a, sqrt_1ma = coef("sqrt_a"), coef("sqrt_one_minus_a")
            x0 = (x - sqrt_1ma * eps) / sqrt_a
            if clip is not None:
                x0 = x0.clamp(-clip, clip)
                eps = (x - sqrt_a * x0) / sqrt_1ma
            return coef("sqrt_a_prev") * x0 + coef("ddim_dir") * eps, eta * coef("ddim_sigma1")
        x0 = coef("sqrt_recip_abar") * x - coef("sqrt_recipm1_abar") * eps
        if clip is not None:
            x0 = x0.clamp(-clip, clip)
        return coef("mu_c1") * x0 + coef("mu_c2") * x, coef("ddpm_sigma")

    def _step_floats(self, eta: float) -> list[dict[str, float]]:
        """Per sampling position, every coefficient `_mean_std` reads (and the network's step `net_k`) as Python
        numbers, the buffers' own values; kept per eta until a buffer changes (its version counter)."""
        names = (
            ("sqrt_a", "sqrt_one_minus_a", "sqrt_a_prev", "ddim_sigma1", "ddim_dir_eta0", "ddim_dir_eta1", "net_k")
            if self.cfg.use_ddim
            else ("sqrt_recip_abar", "sqrt_recipm1_abar", "mu_c1", "mu_c2", "ddpm_sigma", "net_k")
        )
        buffers = [getattr(self, name) for name in names]
        key = (eta, *((b.data_ptr(), b._version, b.dtype) for b in buffers))
        cached = self.__dict__.get("_step_floats_cache", {}).get(eta)
        if cached is None or cached[0] != key:
            tables = {name: b.tolist() for name, b in zip(names, buffers, strict=True)}
            if self.cfg.use_ddim:
                tables["ddim_dir"] = self.ddim_direction(eta).tolist()
            cached = (key, [{name: t[i] for name, t in tables.items()} for i in range(self.n_sampling_steps)])
            self.__dict__.setdefault("_step_floats_cache", {})[eta] = cached
        return cached[1]

    def _conditioned_networks(self, nets: list[nn.Module], obs: torch.Tensor) -> list[Callable] | None:
        """Per sampling position, x -> eps from `DiffusionMLP.conditioned` for a no-grad chain of MLPs; else None."""
        if torch.is_grad_enabled() or not all(isinstance(n, DiffusionMLP) for n in nets):
            return None
        ks = [c["net_k"] for c in self._step_floats(0.0)]
        steps: dict[int, tuple[nn.Module, list[int]]] = {}
        for net, k in zip(nets, ks, strict=True):
            steps.setdefault(id(net), (net, []))[1].append(k)
        evals = {key: net.conditioned(obs, net_ks) for key, (net, net_ks) in steps.items()}
        return [functools.partial(evals[id(net)], k=k) for net, k in zip(nets, ks, strict=True)]

    # ---------------------------------------------------------------- sampling
    def sample(
        self,
        obs: torch.Tensor,
        deterministic: bool = True,
        min_std: float = 0.0,
        networks: list[nn.Module] | None = None,
        record_from: int | None = None,
        grad: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run the whole chain for a batch of observations (B, Do).

        deterministic: evaluation sampling (DDPM: std floored at 1e-3 and zero at
            the last step; DDIM: eta = 0). Otherwise the std is floored at `min_std`
            and DDIM uses eta = 1.
        networks: one network per sampling position (default: `sampling_networks()`).
        record_from: if given, also return the chain of states from the input of
            position `record_from` to the final output, (B, S - record_from + 1, Ta, Da).
        grad: keep the autograd graph through the whole chain (DQL's actor loss); otherwise no gradients.
        """
        with torch.set_grad_enabled(grad):
            return self._sample(obs, deterministic, min_std, networks, record_from)

    def _sample(self, obs, deterministic, min_std, networks, record_from):
        S = self.n_sampling_steps
        nets = networks or self.sampling_networks()
        B = obs.shape[0]
        x = torch.randn(B, self.horizon, self.act_dim, device=obs.device)
        chain = [x] if record_from == 0 else []
        eta = 0.0 if deterministic else 1.0
        # Without gradients every row is at the same position: MLPs run their no-grad fast path and the step's
        # coefficients are Python floats (the same float32 values as the indexed buffers).
        evals = self._conditioned_networks(nets, obs)
        floats = self._step_floats(eta) if evals is not None else None
        for i in range(S):
            if evals is not None:
                mu, sigma = self._mean_std(x, evals[i](x), floats[i].__getitem__, eta)
                if deterministic:
                    std = 0.0 if (self.cfg.use_ddim or i == S - 1) else max(sigma, 1e-3)
                else:
                    std = max(sigma, min_std)
            else:
                pos = torch.full((B,), i, device=obs.device, dtype=torch.long)
                mu, std = self.step_mean_std(nets[i], x, pos, obs, eta)
                if deterministic:
                    std = torch.zeros_like(std) if (self.cfg.use_ddim or i == S - 1) else std.clamp(min=1e-3)
                else:
                    std = std.clamp(min=min_std)
            z = torch.randn_like(x).clamp_(-self.cfg.randn_clip, self.cfg.randn_clip)
            x = mu + std * z
            if i == S - 1 and self.cfg.final_action_clip is not None:
                x = x.clamp(-self.cfg.final_action_clip, self.cfg.final_action_clip)
            if record_from is not None and i >= record_from - 1:
                chain.append(x)
        return x, (torch.stack(chain, dim=1) if record_from is not None else None)

    def frozen_copy(self) -> nn.Module:
        return frozen_copy(self.network)

    # ---------------------------------------------------------------- fine-tuned late steps only
    n_base_steps = 0  # sampling positions 0..n_base_steps-1 run `base_network`

    def keep_base_network(self, n_steps: int) -> None:
        """From now on, the first `n_steps` sampling steps run a frozen copy of the current network (DPPO
        fine-tunes only the last K' steps); it is part of the policy's state_dict and checkpoint."""
        if not 0 <= n_steps <= self.n_sampling_steps:
            raise ValueError(f"n_steps={n_steps} must be in [0, {self.n_sampling_steps}]")
        if n_steps:
            self.base_network = self.frozen_copy()
            self.register_load_state_dict_pre_hook(_base_network_from_older_state)
        self.n_base_steps = n_steps

    def sampling_networks(self) -> list[nn.Module]:
        """The network of each sampling position."""
        S, n = self.n_sampling_steps, self.n_base_steps
        return [self.base_network] * n + [self.network] * (S - n) if n else [self.network] * S


def _base_network_from_older_state(module, state_dict, prefix, *args) -> None:
    """A DPPO state saved before policies kept their base network: that network was the pre-trained one,
    which is what `keep_base_network` just copied; keep it."""
    base = prefix + "base_network."
    if not any(k.startswith(base) for k in state_dict):
        for name, tensor in module.base_network.state_dict().items():
            state_dict[base + name] = tensor


def gaussian_log_prob(x: torch.Tensor, mu: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Element-wise log N(x; mu, std^2)."""
    return -((x - mu) ** 2) / (2 * std**2) - torch.log(std) - 0.5 * math.log(2 * math.pi)
