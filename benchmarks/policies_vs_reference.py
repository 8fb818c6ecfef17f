"""Our policy networks and their PPO losses against the official implementation's on identical weights.

Usage:
    python benchmarks/policies_vs_reference.py --reference /path/to/dppo [--batch 256] [--seed 0]
        [--only NAME ...] [--json OUT]

`--reference` is a checkout of irom-princeton/dppo; `model.*` is imported from there (torch and einops
only). Nothing of it is copied here.

Each check builds a reference network (initialised by the reference), copies its parameters into ours in
registration order, runs both on the same inputs and returns one row per compared quantity. To add one,
write a function `(batch, seed) -> list of rows` (rows from `row(...)`) and append a `Check` to `CHECKS`.

UNet noise prediction (`Unet1D`, model/diffusion/unet.py, against methods/policies/unet.py):
- Can: cfg/robomimic/finetune/can/ft_ppo_diffusion_unet.yaml (obs 23, act 7, horizon 4, dim 40,
  dim_mults [1, 2], kernel 5, n_groups 8, step embedding 16, cond_predict_scale True, smaller_encoder False);
- Furniture: cfg/furniture/finetune/one_leg_low/ft_ppo_diffusion_unet.yaml (act 10, horizon 16, dim 64,
  dim_mults [1, 2, 4], groupnorm_eps 1e-4; otherwise as Can), obs 58.
Compared: the predicted noise for random chunks, steps in [0, 20) and observations; then, after
backpropagating the same random upstream gradient through both, every parameter gradient and the
gradient with respect to the noisy chunk; and the parameter counts.

One PPO minibatch with a Gaussian or GMM policy (methods/gaussian_ppo.py, methods/gmm_ppo.py against
model/rl/gaussian_ppo.py `PPO_Gaussian`, model/rl/gmm_ppo.py `PPO_GMM`), as benchmarks/gaussian_vs_reference.py
does for the Gaussian MLP:
- gaussian-transformer: cfg/robomimic/finetune/can/ft_ppo_gaussian_transformer.yaml (obs 23, act 7, horizon 4,
  `Gaussian_Transformer` embed 96, 4 heads, 4 layers, learned std in [0.01, 0.2], clip 0.01) against our
  GaussianPolicy(backbone=transformer) and GaussianPPO(learn_std, logprob_reduction=mean_clamped);
- gmm-mlp: cfg/d3il/finetune/avoid_m2/ft_ppo_gmm_mlp.yaml (obs 4, act 2, horizon 4, `GMM_MLP` 256x2 plain
  ReLU, 5 modes, std fixed at 0.1, clip 0.1) against GMMPolicy and GMMPPO(logprob_reduction=sum_clamped);
- gmm-mlp-can: cfg/robomimic/finetune/can/ft_ppo_gmm_mlp.yaml (obs 23, act 7, horizon 4, `GMM_MLP` 512x3
  residual Mish, 5 modes, learned std in [0.01, 0.2], clip 0.01);
- gmm-transformer: cfg/robomimic/finetune/can/ft_ppo_gmm_transformer.yaml (`GMM_Transformer` embed 96, 4 heads,
  4 layers, 5 modes, learned std in [0.01, 0.2], clip 0.01);
- gaussian-bc: the BC-regularised Gaussian PPO (paper eq. A14) at Avoid dims (cfg/d3il/finetune/avoid_m2/
  ft_ppo_gaussian_mlp.yaml: `Gaussian_MLP` 256x3 residual ReLU, std fixed at 0.1, clip 0.1): the reference's
  `loss(..., use_bc_loss=True)` weighted by bc_loss_coeff 0.1 against GaussianPPO(bc_coef=0.1).
Critics: CriticObs 256x3 residual Mish against our ValueCritic; vf_coef 0.5, advantages normalised, no value
clipping. The reference builds and initialises its networks; ours get copies by submodule (the mean network
or transformer, the GMM's mode-logit network, the learned log-variances; not the reference's frozen
logvar_min/logvar_max). Where the std is learned, the log-variances are spread so that some lie outside
[std_min, std_max] (clamped: no gradient, checked on both sides). Actions are sampled with the reference's
sampler; then every actor is perturbed by the same noise and one minibatch is run: the reference's `loss` and
backward as its agent combines them (agent/finetune/train_ppo_gaussian_agent.py, also used for the GMM), ours
`minibatch_step` at learning rate 0. Compared: old and new log-probs (before and after the [-5, 2] clamp), pg
loss, value loss, clip fraction, approx KL, all actor and critic gradients, the count of trained actor
parameters, and the fractions of log-probs at the clamp.

The GMM log-probability is the joint log-density of the whole chunk (8 or 28 dims), clamped to [-5, 2]: at
std 0.1 nearly every on-policy sample lies above 2 (the rows "on-policy log-probs"), so its ratio is exactly 1
and it passes no gradient. So that the GMM comparisons are not vacuous, every other chunk of the minibatch is
moved off its mode along a random direction until the reference's log-prob equals a target drawn from
U(-4.5, 1.5) (bisection on the step length); about half of the minibatch then carries gradient.

BC term: both sides draw a_bc from their frozen base policy with the global generator, the same number of
normals; the generator is seeded identically right before each side's loss, and the draws are recorded (not
replaced) and compared. Our "bc_loss" is already weighted by bc_coef, the reference's is not. The BC term's
own actor gradient is the full step's minus that of the same step without BC, on each side.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(REPO))
from gaussian_vs_reference import accept_zero_dropout  # noqa: E402
from reference_impl import add_reference, check_imported_from, copy_parameters, inspection_ppo_config  # noqa: E402

from methods.base import MethodContext  # noqa: E402
from methods.gaussian_ppo import GaussianPPO, GaussianPPOConfig  # noqa: E402
from methods.gmm_ppo import GMMPPO, GMMPPOConfig  # noqa: E402
from methods.policies import GaussianPolicy, GaussianPolicyConfig, GMMPolicy, GMMPolicyConfig  # noqa: E402
from methods.policies.unet import UNet1D  # noqa: E402

# float32 on both sides, summed in different orders: agreement to rounding, relative to each quantity's scale
RTOL = 1e-4
DENOISING_STEPS = 20


def row(quantity: str, reference: torch.Tensor | float, ours: torch.Tensor | float) -> dict[str, Any]:
    """Max |reference - ours| and that over max |reference|; tensors are shown by their norms."""
    a, b = torch.as_tensor(reference, dtype=torch.float64), torch.as_tensor(ours, dtype=torch.float64)
    diff = (a - b).abs().max().item()
    scale = a.abs().max().item()
    shown = (a.norm().item(), b.norm().item()) if a.numel() > 1 else (a.item(), b.item())
    label = f"{quantity} (norm)" if a.numel() > 1 else quantity
    return {
        "quantity": label,
        "reference": shown[0],
        "ours": shown[1],
        "max_abs_diff": diff,
        "rel_diff": diff / scale if scale > 0 else diff,
    }


def flat_grads(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in module.parameters()])


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@dataclass
class UNetSetup:
    obs_dim: int
    act_dim: int
    horizon: int
    dim: int
    dim_mults: list[int]
    n_groups: int = 8
    kernel_size: int = 5
    time_dim: int = 16
    cond_predict_scale: bool = True
    groupnorm_eps: float = 1e-5


def unet_rows(s: UNetSetup, batch: int, seed: int) -> list[dict[str, Any]]:
    from model.diffusion.unet import Unet1D

    torch.manual_seed(seed)
    reference = Unet1D(
        action_dim=s.act_dim,
        cond_dim=s.obs_dim,
        diffusion_step_embed_dim=s.time_dim,
        dim=s.dim,
        dim_mults=list(s.dim_mults),
        smaller_encoder=False,
        cond_mlp_dims=None,
        kernel_size=s.kernel_size,
        n_groups=s.n_groups,
        activation_type="Mish",
        cond_predict_scale=s.cond_predict_scale,
        groupnorm_eps=s.groupnorm_eps,
    )
    ours = UNet1D(
        s.obs_dim,
        s.act_dim,
        s.horizon,
        dim=s.dim,
        dim_mults=s.dim_mults,
        kernel_size=s.kernel_size,
        n_groups=s.n_groups,
        time_dim=s.time_dim,
        cond_predict_scale=s.cond_predict_scale,
        activation="mish",
        groupnorm_eps=s.groupnorm_eps,
    )
    copy_parameters(reference, ours)

    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, s.horizon, s.act_dim, generator=gen)
    k = torch.randint(0, DENOISING_STEPS, (batch,), generator=gen)
    obs = torch.randn(batch, s.obs_dim, generator=gen)
    upstream = torch.randn(batch, s.horizon, s.act_dim, generator=gen)

    x_ref, x_ours = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out_ref = reference(x_ref, k, cond={"state": obs.view(batch, 1, -1)})
    out_ours = ours(x_ours, k, obs)
    (out_ref * upstream).sum().backward()
    (out_ours * upstream).sum().backward()
    return [
        row("predicted noise", out_ref.detach(), out_ours.detach()),
        row("parameter gradients", flat_grads(reference), flat_grads(ours)),
        row("gradient wrt the noisy chunk", x_ref.grad, x_ours.grad),
        row("parameter count", n_params(reference), n_params(ours)),
    ]


UNET_CAN = UNetSetup(obs_dim=23, act_dim=7, horizon=4, dim=40, dim_mults=[1, 2])
UNET_FURNITURE = UNetSetup(obs_dim=58, act_dim=10, horizon=16, dim=64, dim_mults=[1, 2, 4], groupnorm_eps=1e-4)


def describe(s: UNetSetup) -> str:
    return (
        f"obs {s.obs_dim}, act {s.act_dim}, horizon {s.horizon}, dim {s.dim}, dim_mults {s.dim_mults}, "
        f"n_groups {s.n_groups}, step embedding {s.time_dim}, groupnorm_eps {s.groupnorm_eps:g}"
    )


# ---------------------------------------------------------------- one PPO minibatch, Gaussian and GMM policies

VF_COEF = 0.5
CRITIC_DIMS = [256, 256, 256]  # CriticObs 256x3 residual Mish in every config compared here
LOGP_MIN, LOGP_MAX = -5.0, 2.0  # the reference's clamp of every PPO log-probability


@dataclass
class PPOSetup:
    policy: str  # "gaussian" or "gmm"
    backbone: str  # "mlp" or "transformer"
    source: str  # the reference config it follows
    obs_dim: int
    act_dim: int
    horizon: int
    clip: float
    learn_std: bool
    std_min: float = 0.01
    std_max: float = 1.0
    fixed_std: float = 0.1
    mlp_dims: list[int] = field(default_factory=lambda: [256, 256, 256])
    activation: str = "Mish"  # the reference's activation_type
    residual: bool = True
    embed_dim: int = 96
    heads: int = 4
    layers: int = 4
    n_modes: int = 5
    spread_std: tuple[float, float] | None = None  # learned std: spread the stds over this range, ends clamped
    perturb: float = 0.0  # noise added to every trained actor weight between the old and the new policy
    into_clamp: bool = False  # move every other sample off its mode until its log-prob lies inside the clamp
    bc_coef: float = 0.0  # > 0: the BC-regularised loss (eq. A14) with this weight

    @property
    def reduction(self) -> str:
        return "mean_clamped" if self.policy == "gaussian" else "sum_clamped"


def reference_ppo(s: PPOSetup) -> Any:
    """The reference's PPO_Gaussian / PPO_GMM with the actor and critic its config names, its own init."""
    from model.common.critic import CriticObs

    std = {"fixed_std": s.fixed_std, "learn_fixed_std": s.learn_std, "std_min": s.std_min, "std_max": s.std_max}
    dims = {"action_dim": s.act_dim, "horizon_steps": s.horizon, "cond_dim": s.obs_dim}
    mlp = {"mlp_dims": list(s.mlp_dims), "activation_type": s.activation, "residual_style": s.residual}
    tf = {"transformer_embed_dim": s.embed_dim, "transformer_num_heads": s.heads, "transformer_num_layers": s.layers}
    if s.policy == "gaussian":
        from model.rl.gaussian_ppo import PPO_Gaussian

        if s.backbone == "transformer":
            from model.common.transformer import Gaussian_Transformer

            actor = Gaussian_Transformer(**dims, **tf, **std)
        else:
            from model.common.mlp_gaussian import Gaussian_MLP

            accept_zero_dropout()
            actor = Gaussian_MLP(**dims, **mlp, **std)
        ppo, extra = PPO_Gaussian, {"randn_clip_value": 3}
    else:
        from model.rl.gmm_ppo import PPO_GMM

        if s.backbone == "transformer":
            from model.common.transformer import GMM_Transformer

            actor = GMM_Transformer(**dims, num_modes=s.n_modes, **tf, **std)
        else:
            from model.common.mlp_gmm import GMM_MLP

            actor = GMM_MLP(**dims, num_modes=s.n_modes, **mlp, **std)
        ppo, extra = PPO_GMM, {}
    critic = CriticObs(cond_dim=s.obs_dim, mlp_dims=list(CRITIC_DIMS), activation_type="Mish", residual_style=True)
    model = ppo(
        actor=actor,
        critic=critic,
        clip_ploss_coef=s.clip,
        clip_vloss_coef=None,
        norm_adv=True,
        horizon_steps=s.horizon,
        device="cpu",
        **extra,
    )
    if s.spread_std is not None:
        with torch.no_grad():
            logvar = model.actor_ft.logvar
            logvar.copy_(2 * torch.log(torch.linspace(*s.spread_std, logvar.numel())))
    return model


def reference_submodules(reference: Any, s: PPOSetup) -> list[torch.nn.Module]:
    """The reference actor's networks, in the order of `our_submodules` (its logvar is paired separately)."""
    actor = reference.actor_ft
    trunk = actor.transformer if s.backbone == "transformer" else actor.mlp_mean
    if s.policy == "gaussian":
        return [trunk]
    return [trunk, actor.modes_head if s.backbone == "transformer" else actor.mlp_weights]


def our_submodules(policy: torch.nn.Module, s: PPOSetup) -> list[torch.nn.Module]:
    return [policy.network] if s.policy == "gaussian" else [policy.network, policy.logits_head]


def our_method(reference: Any, s: PPOSetup, bc_coef: float) -> GaussianPPO:
    """Our policy and PPO at learning rate 0, with copies of the reference's actor and critic weights."""
    kw = {
        "backbone": s.backbone,
        "hidden": list(s.mlp_dims),
        "activation": s.activation.lower(),
        "residual": s.residual,
        "transformer_embed_dim": s.embed_dim,
        "transformer_heads": s.heads,
        "transformer_layers": s.layers,
        "fixed_std": s.fixed_std,
        "std_min": s.std_min,
        "std_max": s.std_max,
        "randn_clip": 3.0,
        "tanh_mean": True,
    }
    if s.policy == "gaussian":
        policy = GaussianPolicy(s.obs_dim, s.act_dim, s.horizon, GaussianPolicyConfig(**kw))
        method_cls, cfg_cls = GaussianPPO, GaussianPPOConfig
    else:
        policy = GMMPolicy(s.obs_dim, s.act_dim, s.horizon, GMMPolicyConfig(**kw, n_modes=s.n_modes))
        method_cls, cfg_cls = GMMPPO, GMMPPOConfig
    for src, dst in zip(reference_submodules(reference, s), our_submodules(policy, s), strict=True):
        copy_parameters(src, dst)
    if s.learn_std:
        with torch.no_grad():
            policy.logvar.copy_(reference.actor_ft.logvar.view_as(policy.logvar))
    cfg = inspection_ppo_config(
        cfg_cls, CRITIC_DIMS, "mish", learn_std=s.learn_std, logprob_reduction=s.reduction, bc_coef=bc_coef,
        clip=s.clip, vf_coef=VF_COEF,
    )  # fmt: skip
    method = method_cls(cfg, MethodContext.standalone(policy, act_steps=s.horizon))
    copy_parameters(reference.critic, method.critic)
    return method


def actor_pairs(reference: Any, method: GaussianPPO, s: PPOSetup) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(reference, ours) for every trained actor parameter; the logvars may differ in shape, not in order."""
    pairs = []
    for src, dst in zip(reference_submodules(reference, s), our_submodules(method.policy, s), strict=True):
        pairs += list(zip(src.parameters(), dst.parameters(), strict=True))
    if s.learn_std:
        pairs.append((reference.actor_ft.logvar, method.policy.logvar))
    return pairs


def trained_actor_params(reference: Any, method: GaussianPPO) -> tuple[int, int]:
    frozen = ("logvar_min", "logvar_max")  # the reference's clamp bounds, registered as frozen Parameters
    ref = sum(p.numel() for n, p in reference.actor_ft.named_parameters() if n not in frozen)
    return ref, sum(p.numel() for p in method.actor_parameters())


def unclamped_logp(reference: Any, method: GaussianPPO, cond: dict, obs: torch.Tensor, actions: torch.Tensor):
    """Each side's log-probability before the [-5, 2] clamp: the reference's `get_logprobs`; ours the policy's
    log-density reduced as `logprob_reduction` says (mean_clamped: per dim over the chunk; sum_clamped: joint)."""
    with torch.no_grad():
        ref = reference.get_logprobs(cond, actions)[0]
        ours = method.policy.log_prob(obs, actions)
        if method.cfg.logprob_reduction == "mean_clamped":
            ours = ours / (actions.shape[-2] * actions.shape[-1])
    return ref, ours


def clamp_rows(label: str, ref: torch.Tensor, ours: torch.Tensor) -> list[dict[str, Any]]:
    """The fractions of log-probabilities at or beyond each end of the clamp, by each side."""
    return [
        row(
            f"{label}: fraction <= {LOGP_MIN:g} (clamped)",
            (ref <= LOGP_MIN).float().mean(),
            (ours <= LOGP_MIN).float().mean(),
        ),
        row(
            f"{label}: fraction >= {LOGP_MAX:g} (clamped)",
            (ref >= LOGP_MAX).float().mean(),
            (ours >= LOGP_MAX).float().mean(),
        ),
    ]


class Recorder:
    """Wrap `owner.name` (a method) to keep what it returns; `restore()` puts the class's method back."""

    def __init__(self, owner: Any, name: str):
        self.owner, self.name, self.outputs = owner, name, []
        inner = getattr(owner, name)

        def wrapped(*args, **kwargs):
            out = inner(*args, **kwargs)
            self.outputs.append(out.detach().clone())
            return out

        setattr(owner, name, wrapped)

    def restore(self) -> None:
        delattr(self.owner, self.name)


def move_into_clamp(reference: Any, method: GaussianPPO, cond: dict, actions: torch.Tensor, gen: torch.Generator):
    """Move every other chunk (in place) along a random direction, scaled per action dim by the policy's std (the
    mean over its modes), until the reference's log-prob equals a target drawn from U(-4.5, 1.5): found by
    bisection on the step length. Chunks already below their target stay (step length 0)."""
    far, state = actions[1::2], cond["state"][1::2]
    std = method.policy.std().detach()
    direction = (std if std.dim() == 1 else std.mean(0)) * torch.randn(far.shape, generator=gen)
    target = LOGP_MIN + 0.5 + (LOGP_MAX - LOGP_MIN - 1.0) * torch.rand(far.shape[0], generator=gen)

    def above(step: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            logp = reference.get_logprobs({"state": state}, far + step[:, None, None] * direction)[0]
        return logp > target

    lo, hi = torch.zeros(far.shape[0]), torch.ones(far.shape[0])
    while (up := above(hi)).any():
        hi = torch.where(up, 2 * hi, hi)
    for _ in range(40):
        mid = (lo + hi) / 2
        up = above(mid)
        lo, hi = torch.where(up, mid, lo), torch.where(up, hi, mid)
    far += hi[:, None, None] * direction


def grads(pairs: list[tuple[torch.Tensor, torch.Tensor]], side: int) -> torch.Tensor:
    return torch.cat([pair[side].grad.flatten() for pair in pairs])


def ppo_rows(s: PPOSetup, batch: int, seed: int) -> list[dict[str, Any]]:
    torch.manual_seed(seed)
    reference = reference_ppo(s)
    ours = our_method(reference, s, s.bc_coef)
    plain = our_method(reference, s, 0.0) if s.bc_coef else None  # the same without BC: isolates its gradient

    gen = torch.Generator().manual_seed(seed + 1)
    obs = torch.randn(batch, s.obs_dim, generator=gen)
    cond = {"state": obs.view(batch, 1, s.obs_dim)}
    torch.manual_seed(seed + 2)
    with torch.no_grad():
        on_policy = reference(cond=cond, deterministic=False)  # (B, H, Da), the reference's sampler
    fractions = clamp_rows("on-policy log-probs", *unclamped_logp(reference, ours, cond, obs, on_policy))

    actions = on_policy.clone()
    if s.into_clamp:
        move_into_clamp(reference, ours, cond, actions, gen)
    old_ref_raw, old_ours_raw = unclamped_logp(reference, ours, cond, obs, actions)
    with torch.no_grad():
        old_ours = ours.log_prob(obs, actions)
        methods = [ours] if plain is None else [ours, plain]
        pairs = [actor_pairs(reference, m, s) for m in methods]
        for group in zip(*pairs, strict=True):  # the same perturbation of every actor: the policy after some updates
            noise = s.perturb * torch.randn(group[0][0].shape, generator=gen)
            group[0][0].add_(noise)
            for _, p in group:
                p.add_(noise.view_as(p))
    returns, values, advantages = (torch.randn(batch, generator=gen) for _ in range(3))
    new_ref_raw, new_ours_raw = unclamped_logp(reference, ours, cond, obs, actions)
    with torch.no_grad():
        new_ours = ours.log_prob(obs, actions)
    fractions += clamp_rows("this batch's old log-probs", old_ref_raw, old_ours_raw)
    inside_ref = ((new_ref_raw > LOGP_MIN) & (new_ref_raw < LOGP_MAX)).float().mean()
    inside_ours = ((new_ours_raw > LOGP_MIN) & (new_ours_raw < LOGP_MAX)).float().mean()
    fractions.append(
        row("this batch: fraction of new log-probs inside (-5, 2), with gradient", inside_ref, inside_ours)
    )

    # the reference: its agent's loss (agent/finetune/train_ppo_gaussian_agent.py, also for the GMM) and backward
    def reference_step(use_bc: bool) -> tuple[Any, ...]:
        reference.actor_ft.zero_grad(set_to_none=True)
        reference.critic.zero_grad(set_to_none=True)
        out = reference.loss(cond, actions, returns, values, advantages, old_ref_raw, use_bc_loss=use_bc)
        pg_loss, _entropy, v_loss, _clipfrac, _kl, _ratio, bc_loss, _std = out
        (pg_loss + VF_COEF * v_loss + s.bc_coef * bc_loss).backward()
        return out

    mb = {"obs": obs, "actions": actions, "old_logp": old_ours, "advantages": advantages, "returns": returns}
    mb["values"] = values
    bc_seed = seed + 3
    if s.bc_coef:
        torch.manual_seed(bc_seed)  # both samplers draw a_bc from the global generator, the same number of normals
        record_ref = Recorder(reference, "forward")
    pg_loss, _, v_loss, clipfrac, approx_kl, _, bc_loss, _ = reference_step(use_bc=bool(s.bc_coef))
    ref_pairs = actor_pairs(reference, ours, s)
    ref_actor, ref_critic = grads(ref_pairs, 0), torch.cat([p.grad.flatten() for p in reference.critic.parameters()])
    if s.bc_coef:
        record_ref.restore()
        torch.manual_seed(bc_seed)
        record_ours = Recorder(ours.bc_policy, "sample")
    stats = ours.minibatch_step(mb, train_actor=True)
    our_actor, our_critic = grads(ref_pairs, 1), torch.cat([p.grad.flatten() for p in ours.critic.parameters()])

    rows = [
        row("old log-prob, unclamped", old_ref_raw, old_ours_raw),
        row("old log-prob", old_ref_raw.clamp(LOGP_MIN, LOGP_MAX), old_ours),
        row("new log-prob, unclamped", new_ref_raw, new_ours_raw),
        row("new log-prob", new_ref_raw.clamp(LOGP_MIN, LOGP_MAX), new_ours),
        row("pg_loss", pg_loss.item(), stats["pg_loss"]),
        row("v_loss", v_loss.item(), stats["v_loss"]),
        row("clipfrac", clipfrac, stats["clipfrac"]),
        row("approx_kl", approx_kl, stats["approx_kl"]),
        row("actor gradients", ref_actor, our_actor),
        row("critic gradients", ref_critic, our_critic),
    ]
    if s.bc_coef:
        record_ours.restore()
        a_ref, a_ours = record_ref.outputs, record_ours.outputs
        assert len(a_ref) == len(a_ours) == 1, (len(a_ref), len(a_ours))
        rows += [
            row("a_bc, sampled from the frozen base policy", a_ref[0], a_ours[0]),
            row(f"bc_loss x bc_coef {s.bc_coef:g}", s.bc_coef * bc_loss.item(), stats["bc_loss"]),
        ]
        # the BC term's own gradient: the step with BC minus the same step without
        reference_step(use_bc=False)
        plain.minibatch_step(mb, train_actor=True)
        plain_pairs = actor_pairs(reference, plain, s)
        rows.append(
            row(
                "actor gradients of the BC term alone",
                ref_actor - grads(ref_pairs, 0),
                our_actor - grads(plain_pairs, 1),
            )
        )
    if s.learn_std:  # outside [std_min, std_max] the clamp passes no gradient, on both sides
        lo, hi = 2 * math.log(s.std_min), 2 * math.log(s.std_max)
        logvar = reference.actor_ft.logvar.detach()
        clamped = (logvar < lo) | (logvar > hi)
        g_ref = reference.actor_ft.logvar.grad[clamped].abs().max().item()
        g_ours = ours.policy.logvar.grad.flatten()[clamped].abs().max().item()
        r = row(f"logvar gradient of the {int(clamped.sum())} clamped entries (max abs)", g_ref, g_ours)
        r["rel_diff"] = 0.0 if g_ref == g_ours == 0.0 else 1.0
        rows.append(r)
    ref_n, our_n = trained_actor_params(reference, ours)
    return [*rows, row("trained actor parameter count", ref_n, our_n), *fractions]


GAUSSIAN_TRANSFORMER = PPOSetup(
    policy="gaussian",
    backbone="transformer",
    source="cfg/robomimic/finetune/can/ft_ppo_gaussian_transformer.yaml",
    obs_dim=23,
    act_dim=7,
    horizon=4,
    clip=0.01,
    learn_std=True,
    std_max=0.2,
    spread_std=(0.005, 0.3),
    perturb=1e-4,
)
GMM_MLP_AVOID = PPOSetup(
    policy="gmm",
    backbone="mlp",
    source="cfg/d3il/finetune/avoid_m2/ft_ppo_gmm_mlp.yaml",
    obs_dim=4,
    act_dim=2,
    horizon=4,
    clip=0.1,
    learn_std=False,
    mlp_dims=[256, 256],
    activation="ReLU",
    residual=False,
    perturb=1e-3,
    into_clamp=True,
)
GMM_MLP_CAN = PPOSetup(
    policy="gmm",
    backbone="mlp",
    source="cfg/robomimic/finetune/can/ft_ppo_gmm_mlp.yaml",
    obs_dim=23,
    act_dim=7,
    horizon=4,
    clip=0.01,
    learn_std=True,
    std_max=0.2,
    mlp_dims=[512, 512, 512],
    spread_std=(0.008, 0.22),
    perturb=1e-5,
    into_clamp=True,
)
GMM_TRANSFORMER = PPOSetup(
    policy="gmm",
    backbone="transformer",
    source="cfg/robomimic/finetune/can/ft_ppo_gmm_transformer.yaml",
    obs_dim=23,
    act_dim=7,
    horizon=4,
    clip=0.01,
    learn_std=True,
    std_max=0.2,
    spread_std=(0.008, 0.22),
    perturb=1e-5,
    into_clamp=True,
)
GAUSSIAN_BC = PPOSetup(
    policy="gaussian",
    backbone="mlp",
    source="cfg/d3il/finetune/avoid_m2/ft_ppo_gaussian_mlp.yaml",
    obs_dim=4,
    act_dim=2,
    horizon=4,
    clip=0.1,
    learn_std=False,
    activation="ReLU",
    perturb=0.003,
    bc_coef=0.1,
)


def describe_ppo(s: PPOSetup) -> str:
    net = (
        f"Transformer embed {s.embed_dim}, {s.heads} heads, {s.layers} layers"
        if s.backbone == "transformer"
        else f"MLP {s.mlp_dims} {s.activation}{' residual' if s.residual else ''}"
    )
    std = f"std learned in [{s.std_min:g}, {s.std_max:g}]" if s.learn_std else f"std fixed at {s.fixed_std:g}"
    modes = f", {s.n_modes} modes" if s.policy == "gmm" else ""
    extra = ", every other chunk moved until its log-prob lies in (-4.5, 1.5)" if s.into_clamp else ""
    bc = f", BC coef {s.bc_coef:g}" if s.bc_coef else ""
    return (
        f"{s.source}: obs {s.obs_dim}, act {s.act_dim}, horizon {s.horizon}, {net}{modes}, {std}, clip {s.clip:g}, "
        f"{s.reduction}, actor perturbed by {s.perturb:g}{extra}{bc}"
    )


@dataclass
class Check:
    name: str  # for --only
    title: str
    run: Callable[[int, int], list[dict[str, Any]]]  # (batch, seed) -> rows


CHECKS = [
    *(
        Check(name, f"UNet noise prediction, {dims} dims ({describe(setup)})", partial(unet_rows, setup))
        for name, dims, setup in (
            ("unet-can", "Robomimic Can", UNET_CAN),
            ("unet-furniture", "Furniture one_leg", UNET_FURNITURE),
        )
    ),
    *(
        Check(name, f"{what} ({describe_ppo(setup)})", partial(ppo_rows, setup))
        for name, what, setup in (
            ("gaussian-transformer", "Gaussian-Transformer PPO minibatch", GAUSSIAN_TRANSFORMER),
            ("gmm-mlp", "GMM-MLP PPO minibatch, Avoid", GMM_MLP_AVOID),
            ("gmm-mlp-can", "GMM-MLP PPO minibatch, learned std", GMM_MLP_CAN),
            ("gmm-transformer", "GMM-Transformer PPO minibatch", GMM_TRANSFORMER),
            ("gaussian-bc", "BC-regularised Gaussian-MLP PPO minibatch, eq. A14", GAUSSIAN_BC),
        )
    ),
]


def fmt(v: Any) -> str:
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e12:
        return str(int(v))
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def main(argv: list[str] | None = None) -> int:
    names = [c.name for c in CHECKS]
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--reference", type=Path, required=True, help="checkout of irom-princeton/dppo")
    ap.add_argument("--batch", type=int, default=256, help="inputs per check")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", action="append", choices=names, metavar="NAME", help=f"run only these: {names}")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    add_reference(args.reference, "model/diffusion/unet.py")
    for module in ("model.diffusion.unet", "model.common.transformer", "model.rl.gaussian_ppo", "model.rl.gmm_ppo"):
        importlib.import_module(module)
        check_imported_from(module, args.reference)
    torch.set_num_threads(1)

    results, ok = [], True
    for check in CHECKS:
        if args.only and check.name not in args.only:
            continue
        rows = check.run(args.batch, args.seed)
        print(f"\n## {check.name}: {check.title}, batch {args.batch}\n")
        print("| quantity | reference | ours | max abs diff | relative | agree |")
        print("|---|---|---|---:|---:|---|")
        for r in rows:
            r["agree"] = r["rel_diff"] <= RTOL
            ok &= r["agree"]
            print(
                f"| {r['quantity']} | {fmt(r['reference'])} | {fmt(r['ours'])} | "
                f"{r['max_abs_diff']:.2e} | {r['rel_diff']:.2e} | {'yes' if r['agree'] else 'NO'} |"
            )
        results.append({"name": check.name, "title": check.title, "rows": rows})
    print(f"\n{'every quantity agrees' if ok else 'DISAGREEMENT'} (relative tolerance {RTOL:g})")
    if args.json:

        def finite(v: Any) -> Any:
            return None if isinstance(v, float) and not math.isfinite(v) else v

        plain = [{**r, "rows": [{k: finite(v) for k, v in row.items()} for row in r["rows"]]} for r in results]
        args.json.write_text(json.dumps(plain, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
