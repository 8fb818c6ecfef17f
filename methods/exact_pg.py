"""Exact-likelihood diffusion policy gradient (paper Appendix B.5, Fig. A9; SPEC 4).

PPO over the single-layer MDP of env steps (one training sample per env step, like Gaussian PPO), where
log pi_theta(a | s) of a sampled action chunk a (normalised units, the whole predicted chunk) is the
log-density the diffusion policy assigns it through the probability-flow ODE of its DDPM (Song et al.
2021, App. D): integrate

    dx/dt = f(x, t) = -1/2 beta(t) (x + score(x, t)),     d(delta)/dt = div_x f(x, t)

from x(t0) = a at t0 ~ 0 to t = 1 with `torchdiffeq.odeint`, and take
log p(a) = log N(x(1); 0, I) + delta(1). The divergence is Hutchinson's estimate: the network's part
tr(d eps_theta / dx) ~ mean over probes v of v^T (d eps_theta / dx) v, with the same probes over the whole
integration; the linear part of f is exact. The actor's gradient back-propagates through the solver.

Rollouts sample the DDPM chain (std floored at `min_sampling_std`), as the reference does
(irom-princeton/dppo agent/finetune/train_ppo_exact_diffusion_agent.py: actions from the chain, the ODE only
for their likelihood); the ratio is of the likelihoods of the whole sampled chunk (Ta x Da, as the reference)
under the new and the rollout-time policy. Unlike DPPO, every denoising step is fine-tuned and there is no
denoising discount (paper B.5: exact PG "does not offer the flexibility of fine-tuning fewer-than-K denoising
steps"; the reference's configs set ft_denoising_steps 10, but its likelihood's divergence term always runs the
frozen base network).

Continuous time. The DDPM's step k (0..K-1, 0 the least noisy) happens on t in [k/K, (k+1)/K), where
beta(t) = -K log(1 - beta_k) = K (log abar_{k-1} - log abar_k), so exp(-int_0^t beta) equals the policy's
alphas_cumprod at every t = (k+1)/K and abar(0) = 1; there the score is -eps_theta(x, k, s) / sqrt(1 - abar_k),
the network at the step (and noise level) it was trained for. The reference (model/diffusion/sde_lib.py
VPSDE.sde) uses the discrete beta_k as beta(t) without the 1/dt = K rescaling: with T = 1 its flow ends at
abar(1) = exp(-sum_k beta_k / K) ~ 0.79 (cosine, K 20) instead of the DDPM's 6e-6, so x(1) is far from the N(0, I)
prior whose density it adds. We keep its time grid (one Euler step per denoising step by default) and network
indexing (step k on the k-th interval), with the consistent beta(t).

Defaults of the solver and estimator: irom-princeton/dppo cfg/gym/finetune/hopper-v2/ft_ppo_exact_diffusion_mlp.yaml
(sde_method euler, sde_step_size 0.05 = 1/K at K 20, sde_num_epsilon 2, Rademacher, rtol = atol = 1e-4,
eps 1e-4 (model/diffusion/diffusion_ppo_exact.py default), min_sampling_denoising_std 0.1); the PPO defaults are
the Avoid DPPO values every PPO method shares (methods/ppo.py), presets set the reference's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from common.limits import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, Range, check_choices
from methods.base import MethodContext, Rollout
from methods.policies.diffusion import DiffusionPolicy
from methods.ppo import PPOConfig, PPOMethod

# torchdiffeq 0.2.5's solvers (torchdiffeq/_impl/odeint.py SOLVERS) but scipy_solver: fixed-grid ones take
# `ode_step_size`, adaptive ones `ode_rtol` / `ode_atol`.
FIXED_GRID_SOLVERS = ("euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams", "implicit_adams")
ADAPTIVE_SOLVERS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
ODE_SOLVERS = FIXED_GRID_SOLVERS + ADAPTIVE_SOLVERS
HUTCHINSON_NOISES = ("rademacher", "gaussian")
# bits_per_dim_clamped: the reference's (model/diffusion/exact_likelihood.py returns log p / (D ln 2), and
# diffusion_ppo_exact.py clamps new and old to [-5, 2]); sum: the chunk's log-density in nats, unclamped.
EXACT_LOGPROB_REDUCTIONS = ("bits_per_dim_clamped", "sum")


@dataclass
class ExactPGConfig(PPOConfig):
    min_sampling_std: float = 0.1
    """Std floor of every DDPM step when sampling rollouts (reference: min_sampling_denoising_std)."""
    ode_method: str = "euler"
    """torchdiffeq solver of the probability-flow ODE: a fixed-grid or an adaptive one (reference: sde_method)."""
    ode_step_size: float | None = None
    """Fixed-grid solvers' step in t in [0, 1]; None: 1/K, one step per denoising step (reference: sde_step_size)."""
    ode_rtol: float = 1e-4
    """Adaptive solvers' relative tolerance (reference: sde_rtol)."""
    ode_atol: float = 1e-4
    """Adaptive solvers' absolute tolerance (reference: sde_atol)."""
    ode_t0: float = 1e-4
    """The ODE starts at t = this (the action) instead of 0, for numerical stability (reference: sde_eps)."""
    hutchinson_samples: int = 2
    """Probe vectors per sample whose mean estimates the divergence (reference: sde_num_epsilon)."""
    hutchinson_noise: str = "rademacher"
    """Distribution of the probe vectors: rademacher (+-1) or gaussian (reference: sde_hutchinson_type)."""
    # With fresh probes (the reference) old and new log-likelihoods differ by Hutchinson noise even before an update;
    # on a Hopper policy (K 20, 512x3) that is ~1.3 nats per chunk, ~0.16 bits/dim, against a clip of 0.01.
    hutchinson_fixed: bool = False
    """Draw a sample's probes once per iteration for its old and new log-likelihoods; False (reference): each time."""
    logprob_reduction: str = "bits_per_dim_clamped"
    """bits_per_dim_clamped (reference): log p / (Ta Da ln 2), clamped to [-5, 2]; sum: log p in nats, unclamped."""
    logprob_batch_size: int = 10000
    """Samples per ODE solve when computing the rollout's old log-likelihoods (memory only; reference default)."""

    LIMITS: ClassVar[dict[str, Range]] = {
        **PPOConfig.LIMITS,
        "min_sampling_std": NON_NEGATIVE,
        "ode_step_size": Range(0, 1, lo_open=True),
        "ode_rtol": POSITIVE,
        "ode_atol": POSITIVE,
        "ode_t0": Range(0, 1, hi_open=True),
        "hutchinson_samples": AT_LEAST_ONE,
        "logprob_batch_size": AT_LEAST_ONE,
    }
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        "ode_method": ODE_SOLVERS,
        "hutchinson_noise": HUTCHINSON_NOISES,
        "logprob_reduction": EXACT_LOGPROB_REDUCTIONS,
    }


def hutchinson_probes(n: int, like: torch.Tensor, kind: str) -> torch.Tensor:
    """`n` probe vectors v per sample of `like` (B, ...), as (B, n, ...) of its dtype and device: E[v v^T] = I."""
    shape, opts = (like.shape[0], n, *like.shape[1:]), {"dtype": like.dtype, "device": like.device}
    if kind == "rademacher":
        return torch.randint(0, 2, shape, **opts) * 2 - 1
    if kind == "gaussian":
        return torch.randn(shape, **opts)
    raise ValueError(f"algo.hutchinson_noise must be one of {', '.join(HUTCHINSON_NOISES)}, got {kind!r}")


def hutchinson_trace(y: torch.Tensor, x: torch.Tensor, probes: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """Hutchinson's estimate of tr(dy/dx) per sample, (B,): the mean over probes v (n, B, ...) of v^T (dy/dx) v,
    for y = g(x) computed sample-wise from x (B, ...); `create_graph`: differentiable in g's parameters."""
    trace = 0.0
    for i, v in enumerate(probes):
        retain = create_graph or i < len(probes) - 1
        (vjp,) = torch.autograd.grad(y, x, v, create_graph=create_graph, retain_graph=retain)
        trace = trace + (vjp * v).flatten(1).sum(-1)
    return trace / len(probes)


class ProbabilityFlowLikelihood:
    """log p_theta(a | s) of a DDPM diffusion policy's chunks by its probability-flow ODE (module docstring)."""

    def __init__(
        self,
        policy: DiffusionPolicy,
        method: str = "euler",
        step_size: float | None = None,
        rtol: float = 1e-4,
        atol: float = 1e-4,
        t0: float = 1e-4,
        n_probes: int = 2,
        noise: str = "rademacher",
    ):
        if method not in ODE_SOLVERS:
            raise ValueError(f"algo.ode_method must be one of {', '.join(ODE_SOLVERS)}, got {method!r}")
        self.policy, self.method, self.rtol, self.atol, self.t0 = policy, method, rtol, atol, t0
        self.n_probes, self.noise = n_probes, noise
        self.K = policy.cfg.denoising_steps
        self.step_size = step_size if step_size is not None else 1.0 / self.K
        # alphas_cumprod from the policy's own buffers, in float64; beta(t) per step's interval of t
        log_abar = 2 * torch.log(policy.sqrt_abar.detach().double().cpu())
        log_abar_prev = torch.cat([torch.zeros(1, dtype=torch.float64), log_abar[:-1]])
        self.beta = (self.K * (log_abar_prev - log_abar)).tolist()
        self.sigma = policy.sqrt_one_minus_abar.detach().double().cpu().tolist()

    def step_at(self, t: float) -> int:
        """The DDPM step k whose interval [k/K, (k+1)/K) holds t."""
        return min(max(math.floor(t * self.K), 0), self.K - 1)

    def __call__(self, obs: torch.Tensor, actions: torch.Tensor, probes: torch.Tensor | None = None) -> torch.Tensor:
        """log p(actions | obs) in nats, (B,), for chunks (B, Ta, Da); `probes` (B, n, Ta, Da) or None: drawn now.

        With grad enabled the result is differentiable in the policy's parameters (through the solver)."""
        from torchdiffeq import odeint

        B, shape = actions.shape[0], actions.shape[1:]
        D = math.prod(shape)
        if probes is None:
            probes = hutchinson_probes(self.n_probes, actions, self.noise)
        probes = probes.transpose(0, 1)  # (n, B, Ta, Da)
        create_graph = torch.is_grad_enabled()
        nets = self.policy.sampling_networks()  # DDPM: sampling position K-1-k runs step k

        def dynamics(t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
            k = self.step_at(float(t))
            beta, sigma = self.beta[k], self.sigma[k]
            x = state[:, :D].reshape(B, *shape)
            with torch.enable_grad():
                if not x.requires_grad:
                    x = x.detach().requires_grad_(True)
                steps = torch.full((B,), k, device=x.device, dtype=torch.long)
                eps = nets[self.K - 1 - k](x, steps, obs)
                trace = hutchinson_trace(eps, x, probes, create_graph)
            drift = -0.5 * beta * (x - eps / sigma)
            div = -0.5 * beta * (D - trace / sigma)
            out = torch.cat([drift.reshape(B, D), div[:, None]], dim=-1)
            return out if create_graph else out.detach()

        y0 = torch.cat([actions.reshape(B, D), actions.new_zeros(B, 1)], dim=-1)
        ts = torch.tensor([self.t0, 1.0], dtype=y0.dtype, device=y0.device)
        if self.method in FIXED_GRID_SOLVERS:
            kwargs = {"options": {"step_size": self.step_size}}
        else:
            kwargs = {"rtol": self.rtol, "atol": self.atol}
        end = odeint(dynamics, y0, ts, method=self.method, **kwargs)[-1]
        z, delta = end[:, :D], end[:, D]
        prior = -0.5 * D * math.log(2 * math.pi) - 0.5 * (z**2).sum(-1)
        return prior + delta


class ExactPG(PPOMethod):
    name = "exact_pg"
    policy_kind = "diffusion"
    config_cls = ExactPGConfig

    @classmethod
    def check_config(cls, cfg: ExactPGConfig, policy: DiffusionPolicy | None = None) -> None:
        super().check_config(cfg, policy)
        check_choices(cfg)
        if policy is not None and policy.cfg.use_ddim:
            raise ValueError(
                "exact_pg samples the DDPM chain whose probability-flow ODE gives the likelihood; "
                "set policy.use_ddim=false"
            )

    def __init__(self, cfg: ExactPGConfig, ctx: MethodContext):
        super().__init__(cfg, ctx)
        self.check_config(cfg, self.policy)
        for p in self.policy.network.parameters():
            p.requires_grad_(True)
        self.likelihood = ProbabilityFlowLikelihood(
            self.policy,
            cfg.ode_method,
            cfg.ode_step_size,
            cfg.ode_rtol,
            cfg.ode_atol,
            cfg.ode_t0,
            cfg.hutchinson_samples,
            cfg.hutchinson_noise,
        )

    def actor_parameters(self) -> list[nn.Parameter]:
        return list(self.policy.network.parameters())

    def act(self, obs: torch.Tensor, deterministic: bool):
        actions, _ = self.policy.sample(obs, deterministic=deterministic, min_std=self.cfg.min_sampling_std)
        return actions, ({} if deterministic else {"actions": actions})

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor, probes: torch.Tensor | None = None) -> torch.Tensor:
        """The training log-probability of chunks (B, Ta, Da) -> (B,), reduced as `logprob_reduction` says."""
        logp = self.likelihood(obs, actions, probes)
        if self.cfg.logprob_reduction == "sum":
            return logp
        return (logp / (math.prod(actions.shape[1:]) * math.log(2))).clamp(-5, 2)

    def make_samples(self, rollout: Rollout, advantages, returns, values):
        T, N = rollout.n_steps, rollout.n_envs
        obs = rollout.obs.reshape(T * N, -1)
        actions = rollout.kept["actions"].reshape(T * N, *rollout.kept["actions"].shape[-2:])
        samples = {"obs": obs, "actions": actions}
        if self.cfg.hutchinson_fixed:
            samples["probes"] = hutchinson_probes(self.cfg.hutchinson_samples, actions, self.cfg.hutchinson_noise)
        with torch.no_grad():
            chunks = zip(*(v.split(self.cfg.logprob_batch_size) for v in samples.values()))
            old = torch.cat([self.log_prob(*chunk) for chunk in chunks])
        return {
            **samples,
            "old_logp": old,
            "advantages": advantages.reshape(-1),
            "returns": returns.reshape(-1),
            "values": values.reshape(-1),
        }

    def log_ratio_and_clip(self, mb, adv):
        new = self.log_prob(mb["obs"], mb["actions"], mb.get("probes"))
        return new - mb["old_logp"], adv, self.cfg.clip

    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.state_dict(), **super().state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        super().load_state_dict(state)
