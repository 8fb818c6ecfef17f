"""Gaussian PPO against the official implementation's `PPO_Gaussian` on identical weights and minibatches.

Usage:
    python benchmarks/gaussian_vs_reference.py --reference /path/to/dppo [--batch 2048] [--seed 0] [--json OUT]

`--reference` is a checkout of irom-princeton/dppo; `model.*` is imported from there (torch and einops
only). Nothing of it is copied here.

Two configurations, each with a chunk longer than what is executed (horizon 8, 4 steps executed), where
the reference's reduction (mean over the whole chunk) and a sum over the executed steps differ most:
- fixed std: cfg/d3il/finetune/avoid_m2/ft_ppo_gaussian_mlp.yaml (obs 4, act 2, Gaussian_MLP 256x3
  residual ReLU, fixed_std 0.1, learn_fixed_std False, clip_ploss_coef 0.1), horizon 8 instead of 4;
- learned std: cfg/robomimic/finetune/can/ft_ppo_gaussian_mlp.yaml (obs 23, act 7, Gaussian_MLP 512x3
  residual Mish, fixed_std 0.1, learn_fixed_std True, std in [0.01, 0.2], clip_ploss_coef 0.01), horizon
  8 instead of 4, with the log-variances spread so that two lie outside the range (clamped: no gradient).
Both critics: CriticObs 256x3 residual Mish; vf_coef 0.5, advantages normalised, no value clipping.

For each: the reference's networks are built and initialised by the reference, and ours get copies of
their weights. Actions are sampled from the reference policy and their old log-probs taken by each side.
Then both actors are perturbed by the same noise, so the new policy differs from the old one as after a
few updates, and one PPO minibatch is run on each side: the reference's `loss(...)` as its agent
(agent/finetune/train_ppo_gaussian_agent.py) combines it, then backward; ours `minibatch_step` at
learning rate 0, so the gradients it computed are still there to read. Compared: old and new
log-probs, log-ratio, pg loss, value loss, clip fraction, approx KL, std, and every actor and critic
gradient. The same minibatch with `algo.logprob_reduction=sum` (what this harness computed before)
is printed beside them, to show what the difference did.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(REPO))
from reference_impl import add_reference, check_imported_from, copy_parameters, inspection_ppo_config  # noqa: E402

from methods.base import MethodContext  # noqa: E402
from methods.gaussian_ppo import GaussianPPO, GaussianPPOConfig  # noqa: E402
from methods.policies import GaussianPolicy, GaussianPolicyConfig  # noqa: E402

HORIZON, ACT_STEPS, VF_COEF = 8, 4, 0.5
CRITIC_DIMS, CRITIC_ACTIVATION = [256, 256, 256], "Mish"


@dataclass
class Setup:
    name: str
    source: str
    obs_dim: int
    act_dim: int
    mlp_dims: list[int]
    activation: str
    learn_std: bool
    std_min: float
    std_max: float
    clip: float
    fixed_std: float = 0.1
    perturb: float = 0.0  # noise added to every actor weight between the old and the new policy


SETUPS = [
    Setup("fixed std", "avoid_m2", 4, 2, [256, 256, 256], "ReLU", False, 0.01, 1.0, 0.1, perturb=0.003),
    Setup("learned std", "robomimic can", 23, 7, [512, 512, 512], "Mish", True, 0.01, 0.2, 0.01, perturb=0.0001),
]

# float32 on both sides, summed in different orders: agreement to rounding, relative to each quantity's scale
RTOL = 1e-4


def accept_zero_dropout() -> None:
    """Let the reference build a residual Gaussian_MLP.

    At irom-lab/dppo 7b10df6, `Gaussian_MLP` passes `dropout=` to `ResidualMLP`, whose constructor
    takes none, so every residual Gaussian config (Avoid's and Robomimic's among them) fails with a
    TypeError (irom-princeton/dppo cc7234a has it fixed; then this does nothing). Dropout is 0 in
    all of them, so a `ResidualMLP` that accepts and ignores `dropout=0` builds exactly the network
    those configs describe.
    """
    import inspect

    from model.common import mlp_gaussian

    base = mlp_gaussian.ResidualMLP
    if "dropout" in inspect.signature(base.__init__).parameters:
        return  # a later reference fixed it

    class ResidualMLPIgnoringZeroDropout(base):
        def __init__(self, *args, dropout: float = 0.0, **kwargs):
            if dropout:
                raise ValueError(f"the reference's ResidualMLP has no dropout; got {dropout}")
            super().__init__(*args, **kwargs)

    mlp_gaussian.ResidualMLP = ResidualMLPIgnoringZeroDropout


def build_reference(s: Setup) -> Any:
    from model.common.critic import CriticObs
    from model.common.mlp_gaussian import Gaussian_MLP
    from model.rl.gaussian_ppo import PPO_Gaussian

    accept_zero_dropout()

    actor = Gaussian_MLP(
        action_dim=s.act_dim,
        horizon_steps=HORIZON,
        cond_dim=s.obs_dim,
        mlp_dims=list(s.mlp_dims),
        activation_type=s.activation,
        residual_style=True,
        fixed_std=s.fixed_std,
        learn_fixed_std=s.learn_std,
        std_min=s.std_min,
        std_max=s.std_max,
    )
    critic = CriticObs(
        cond_dim=s.obs_dim, mlp_dims=list(CRITIC_DIMS), activation_type=CRITIC_ACTIVATION, residual_style=True
    )
    model = PPO_Gaussian(
        actor=actor,
        critic=critic,
        clip_ploss_coef=s.clip,
        clip_vloss_coef=None,
        norm_adv=True,
        horizon_steps=HORIZON,
        device="cpu",
        randn_clip_value=3,
    )
    if s.learn_std:  # spread the stds over [0.005, 0.3]: the first and last dims are clamped
        with torch.no_grad():
            model.actor_ft.logvar.copy_(2 * torch.log(torch.linspace(0.005, 0.3, s.act_dim)))
    return model


def build_ours(reference: Any, s: Setup, reduction: str) -> GaussianPPO:
    policy = GaussianPolicy(
        s.obs_dim,
        s.act_dim,
        HORIZON,
        GaussianPolicyConfig(
            hidden=list(s.mlp_dims),
            activation=s.activation.lower(),
            residual=True,
            fixed_std=s.fixed_std,
            std_min=s.std_min,
            std_max=s.std_max,
            randn_clip=3.0,
            tanh_mean=True,
        ),
    )
    copy_parameters(reference.actor_ft.mlp_mean, policy.network)
    if s.learn_std:
        with torch.no_grad():
            policy.logvar.copy_(reference.actor_ft.logvar)
    cfg = inspection_ppo_config(
        GaussianPPOConfig, CRITIC_DIMS, CRITIC_ACTIVATION.lower(), learn_std=s.learn_std,
        logprob_reduction=reduction, clip=s.clip, vf_coef=VF_COEF,
    )  # fmt: skip
    method = GaussianPPO(cfg, MethodContext.standalone(policy, act_steps=ACT_STEPS))
    copy_parameters(reference.critic, method.critic)
    return method


def actor_pairs(reference: Any, method: GaussianPPO, s: Setup) -> list[tuple[torch.Tensor, torch.Tensor]]:
    pairs = list(zip(reference.actor_ft.mlp_mean.parameters(), method.policy.network.parameters(), strict=True))
    if s.learn_std:
        pairs.append((reference.actor_ft.logvar, method.policy.logvar))
    return pairs


def rel_diff(a: torch.Tensor | float, b: torch.Tensor | float) -> tuple[float, float]:
    """Max |a - b| and that divided by max(|a|) (the quantity's scale)."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    diff = (a - b).abs().max().item()
    scale = a.abs().max().item()
    return diff, diff / scale if scale > 0 else diff


def compare(s: Setup, batch: int, seed: int) -> dict[str, Any]:
    torch.manual_seed(seed)
    reference = build_reference(s)
    ours = build_ours(reference, s, "mean_clamped")
    former = build_ours(reference, s, "sum")

    gen = torch.Generator().manual_seed(seed + 1)
    obs = torch.randn(batch, s.obs_dim, generator=gen)
    cond = {"state": obs.view(batch, 1, s.obs_dim)}
    with torch.no_grad():
        actions = reference(cond=cond, deterministic=False)  # (B, H, Da), the reference's sampler
        old_ref = reference.get_logprobs(cond, actions)[0]  # its loss clamps the old log-probs itself
        old_ours = ours.log_prob(obs, actions)
        old_former = former.log_prob(obs, actions)
        # the same perturbation of all three actors: the policy after some updates
        pairs = zip(actor_pairs(reference, ours, s), actor_pairs(reference, former, s), strict=True)
        for (p_ref, p_ours), (_, p_former) in pairs:
            noise = s.perturb * torch.randn(p_ref.shape, generator=gen)
            for p in (p_ref, p_ours, p_former):
                p.add_(noise)
    returns, values, advantages = (torch.randn(batch, generator=gen) for _ in range(3))

    # reference: the agent's loss and backward
    reference.actor_ft.zero_grad(set_to_none=True)
    reference.critic.zero_grad(set_to_none=True)
    pg_loss, entropy_loss, v_loss, clipfrac, approx_kl, _ratio, _bc, std = reference.loss(
        cond, actions, returns, values, advantages, old_ref
    )
    (pg_loss + 0.0 * entropy_loss + VF_COEF * v_loss).backward()
    with torch.no_grad():
        new_ref = reference.get_logprobs(cond, actions)[0].clamp(-5, 2)
    ref = {
        "old log-prob": old_ref.clamp(-5, 2),
        "new log-prob": new_ref,
        "log-ratio": new_ref - old_ref.clamp(-5, 2),
        "pg_loss": pg_loss.item(),
        "v_loss": v_loss.item(),
        "clipfrac": clipfrac,
        "approx_kl": approx_kl,
        "std (mean)": std,
    }

    def run_ours(method: GaussianPPO, old: torch.Tensor) -> tuple[dict[str, Any], dict[str, float]]:
        mb = {"obs": obs, "actions": actions, "old_logp": old, "advantages": advantages, "returns": returns}
        mb["values"] = values
        with torch.no_grad():
            new = method.log_prob(obs, actions)
        stats = method.minibatch_step(mb, train_actor=True)
        std_mean = method.policy.std().repeat(HORIZON).mean().item()
        got = {"old log-prob": old, "new log-prob": new, "log-ratio": new - old, **stats, "std (mean)": std_mean}
        return got, stats

    got, _ = run_ours(ours, old_ours)
    former_got, _ = run_ours(former, old_former)

    rows = []
    for key, value in ref.items():
        diff, rel = rel_diff(value, got[key])
        rows.append({"quantity": key, "reference": value, "ours": got[key], "max_abs_diff": diff, "rel_diff": rel})
    ref_actor = [p.grad for p, _ in actor_pairs(reference, ours, s)]
    our_actor = [p.grad for _, p in actor_pairs(reference, ours, s)]
    for label, a, b in (
        ("actor gradients", ref_actor, our_actor),
        (
            "critic gradients",
            [p.grad for p in reference.critic.parameters()],
            [p.grad for p in ours.critic.parameters()],
        ),
    ):
        flat_a, flat_b = torch.cat([g.flatten() for g in a]), torch.cat([g.flatten() for g in b])
        diff, rel = rel_diff(flat_a, flat_b)
        rows.append(
            {
                "quantity": label,
                "reference": flat_a.norm().item(),
                "ours": flat_b.norm().item(),
                "max_abs_diff": diff,
                "rel_diff": rel,
            }
        )
    if s.learn_std:  # outside [std_min, std_max] the clamp passes no gradient, on both sides
        clamped = [0, s.act_dim - 1]
        g_ref = reference.actor_ft.logvar.grad[clamped].abs().max().item()
        g_ours = ours.policy.logvar.grad[clamped].abs().max().item()
        rows.append(
            {
                "quantity": "logvar gradient of the 2 clamped dims",
                "reference": g_ref,
                "ours": g_ours,
                "max_abs_diff": abs(g_ref - g_ours),
                "rel_diff": 0.0 if g_ref == g_ours == 0.0 else 1.0,
            }
        )
    for r in rows:
        r["agree"] = r["rel_diff"] <= RTOL
    former_rows = {k: former_got[k] for k in ("pg_loss", "clipfrac", "approx_kl")}
    former_rows["log-ratio std"] = former_got["log-ratio"].std().item()
    former_rows["reference log-ratio std"] = ref["log-ratio"].std().item()
    return {"setup": s.__dict__, "rows": rows, "former_sum_reduction": former_rows}


def fmt(v: Any) -> str:
    if isinstance(v, torch.Tensor):
        v = v.abs().max().item() if v.numel() > 1 else v.item()
        return f"max abs {v:.4g}"
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--reference", type=Path, required=True, help="checkout of irom-princeton/dppo")
    ap.add_argument("--batch", type=int, default=2048, help="minibatch size (env steps)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    add_reference(args.reference, "model/rl/gaussian_ppo.py")
    import model.rl.gaussian_ppo  # noqa: F401

    check_imported_from("model.rl.gaussian_ppo", args.reference)
    torch.set_num_threads(1)

    results, ok = [], True
    for s in SETUPS:
        r = compare(s, args.batch, args.seed)
        results.append(r)
        print(
            f"\n## {s.name}: {s.source} dims (obs {s.obs_dim}, act {s.act_dim}), horizon {HORIZON}, "
            f"{ACT_STEPS} executed, clip {s.clip}, batch {args.batch}\n"
        )
        print("| quantity | reference | ours | max abs diff | relative | agree |")
        print("|---|---|---|---:|---:|---|")
        for row in r["rows"]:
            ok &= row["agree"]
            print(
                f"| {row['quantity']} | {fmt(row['reference'])} | {fmt(row['ours'])} | "
                f"{row['max_abs_diff']:.2e} | {row['rel_diff']:.2e} | {'yes' if row['agree'] else 'NO'} |"
            )
        f = r["former_sum_reduction"]
        print(
            f"\nThe same minibatch with the former reduction (sum over the executed steps): log-ratio std "
            f"{f['log-ratio std']:.4g} vs the reference's {f['reference log-ratio std']:.4g} "
            f"({f['log-ratio std'] / f['reference log-ratio std']:.1f}x); clipfrac {f['clipfrac']:.3f}, "
            f"pg_loss {f['pg_loss']:.4g}, approx_kl {f['approx_kl']:.4g}"
        )
    print(f"\n{'every quantity agrees' if ok else 'DISAGREEMENT'} (relative tolerance {RTOL:g})")
    if args.json:

        def plain(x: Any) -> Any:
            if isinstance(x, torch.Tensor):
                return x.tolist()
            if isinstance(x, dict):
                return {k: plain(v) for k, v in x.items()}
            if isinstance(x, list):
                return [plain(v) for v in x]
            return x if not isinstance(x, float) or math.isfinite(x) else None

        args.json.write_text(json.dumps(plain(results), indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
