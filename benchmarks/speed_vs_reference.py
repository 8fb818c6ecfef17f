"""Speed of our DPPO against the official implementation (irom-princeton/dppo) on the same machine.

Usage:
    python benchmarks/speed_vs_reference.py --reference /path/to/dppo [--repeats N] [--threads T]
        [--device cpu] [--json OUT]

`--reference` is a checkout of irom-princeton/dppo; its packages (`model`, `util`, ...) are imported
from there at run time (only `model.*` is needed: torch and einops). Nothing of it is copied here.

What is measured (Hopper fine-tuning dims from the reference's
cfg/gym/finetune/hopper-v2/ft_ppo_diffusion_mlp.yaml: obs 11, act 3, Ta = 4, K = 20 DDPM steps,
K' = 10 fine-tuned steps, actor DiffusionMLP [512, 512, 512] ReLU residual with time_dim 16,
critic CriticObs [256, 256, 256] Mish residual, AdamW for both):

(a) sample: one full, stochastic denoising chain for 40 envs with the last K' + 1 states recorded,
    as during fine-tuning rollouts. Reference: `model(cond={"state": (40, 1, 11)}, deterministic=False,
    return_chain=True)`; ours: `method.act((40, 11), deterministic=False)`.
(b) update: one PPO minibatch step on 50,000 (env step, denoising step) samples: policy + value loss,
    backward, AdamW steps of actor and critic. Reference: `PPODiffusion.loss(...)` with the argument
    layout of agent/finetune/train_ppo_diffusion_agent.py, then `pg_loss + 0.5 * v_loss`, backward,
    both optimizers stepped; ours: `method.minibatch_step(mb, train_actor=True)`.

Both sides get the same weights (ours are copied from the reference's freshly initialised networks;
speed does not depend on their values), the same observations, chains, advantages, returns, values and
old log-probs (the minibatch is built from a reference rollout of 5,000 env steps exactly as its agent
builds one; ours also gets which env step each sample is of, as DPPO.make_samples records it), and the same
torch thread count. Reported: the median wall-clock over `--repeats` calls after `--warmup` calls, the two
implementations alternating call by call so background load hits both.
Two extra untimed updates first check that identical weights and data give the same losses (to float
rounding), and chains sampled from the same seed the same states; the script prints both checks.

Also reported for (b): the FLOPs of one update of each, as torch.utils.flop_counter.FlopCounterMode counts them
(the matmuls of every linear layer, forward and backward; elementwise ops count 0; ours runs its critic on the
5,000 distinct env steps, see below), the achieved rate (FLOPs / median time), and that rate as a fraction of the
machine's dense matmul rate: the median of `torch.mm` of two `--mm-size` square float32 matrices (2 n^3 FLOP),
at the same thread count, one after each pair of timed updates (so under the same background load).

Why the two may differ (read from the reference at commit cc7234a, model/diffusion/diffusion_vpg.py and
diffusion_ppo.py):
- `VPGDiffusion.p_mean_var` always runs the frozen base network (`self.actor`) on the whole batch, then
  runs the fine-tuned copy (`self.actor_ft`) on the rows with `t < ft_denoising_steps`, gathered with
  `torch.where` and scattered back into the frozen output. In (a) that is 20 + 10 = 30 network passes
  per chain (ours: 20, each step runs exactly one network). In (b) every row is a fine-tuned step, so
  the frozen pass over all 50,000 rows is computed and thrown away, and the fine-tuned pass pays a
  gather of x and obs and a scatter of its output (ours: one pass of the fine-tuned network).
- `PPODiffusion.loss` builds the denoising discount with a Python loop over the 50,000 entries of
  `denoising_inds` (one 0-dim tensor op per sample, then `torch.tensor` of the list); ours indexes a
  precomputed (K',) tensor.
- The reference always runs two `torch.quantile` calls for advantage clipping, also with the
  hopper config's quantiles 0 and 1, where clipping is a no-op; ours skips them in that case.
- The reference forms the per-sample log-prob with `torch.distributions.Normal`; ours writes the
  Gaussian log-density out directly. Same maths.

What ours does beyond that to be faster (methods/policies/networks.py, diffusion.py, dppo.py, ppo.py), all the
same maths up to float rounding (the checks above):
- (a) Without gradients every row of a chain is at the same step, so `DiffusionPolicy._sample` evaluates an MLP
  through `DiffusionMLP.conditioned`: the first layer's observation part is one product per chain and its
  time-embedding part a lookup of per-step rows (the embedding MLP runs on the chain's steps, not on every row at
  every step), so a step multiplies only the 12-wide noisy chunk; the hidden layers are `addmm` against a transposed
  copy of the weight kept until the weight changes (40 x 512 @ 512 x 512 is ~1.4x faster in MKL than `linear`'s
  transposed operand); layer outputs go to a few reused buffers (fresh ones were paged in by the OS each step,
  ~40 us apiece) with ReLU in place; the 12-output last layer is 12 matrix-vector products, which BLAS does not
  thread (MKL threads even the 40 x 512 x 12 matmul, and a thread-pool wake-up costs ~8 ms when the cores are
  oversubscribed, e.g. by other jobs); the step's schedule coefficients are Python floats, not per-row gathers.
- (b) The critic runs once per distinct env step of the minibatch (`PPOMethod.predict_values` with the samples'
  `env_index`), gathered back per sample: here all K' = 10 samples of each of the 5,000 env steps are in the one
  minibatch, so it sees 5,000 rows instead of 50,000 (in training, a 50,000-sample minibatch of the hopper
  config's 200,000 samples per iteration holds ~18,900 distinct steps: a ~2.6x saving there). The actor's time
  embedding is computed for the K steps and looked up per row (`F.embedding`). The per-sample maths after the
  actor's network (DDPM mean, Gaussian log-density with its clamp and mean; the clipped surrogate) runs in pieces
  below torch's intra-op grain (32,768 elements), each op on one thread: ~75 fewer thread-pool wake-ups per update
  (102 ops are left above the grain, the reference has 239), each microseconds on an idle machine but ~8 ms on an
  oversubscribed one. The residual block's second ReLU and skip sum run in place (two fewer 100 MB activations,
  each paged in afresh by the OS per update).
- Tried and left out: forward/backward in chunks of a few thousand samples with the gradient accumulated keeps
  every activation in the allocator's reuse range and was ~1.4x faster single-threaded, but multiplies the
  thread-pool wake-ups by the number of chunks: 2.5x slower with 2 threads on oversubscribed cores.
Not measured: environment stepping, GAE, the recomputation of old log-probs and data shuffling.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_impl import add_reference, check_imported_from, copy_parameters  # noqa: E402

# Hopper fine-tuning setup: reference cfg/gym/finetune/hopper-v2/ft_ppo_diffusion_mlp.yaml
OBS_DIM, ACT_DIM, HORIZON, ACT_STEPS = 11, 3, 4, 4
DENOISING_STEPS, FT_DENOISING_STEPS = 20, 10
ACTOR_DIMS, TIME_DIM, ACTOR_ACTIVATION = [512, 512, 512], 16, "ReLU"
CRITIC_DIMS, CRITIC_ACTIVATION = [256, 256, 256], "Mish"
GAMMA_DENOISING = 0.99
CLIP_PLOSS_COEF, CLIP_PLOSS_COEF_BASE, CLIP_PLOSS_COEF_RATE = 0.01, 0.01, 3.0
RANDN_CLIP, MIN_SAMPLING_STD, MIN_LOGPROB_STD = 3.0, 0.1, 0.1
ACTOR_LR, CRITIC_LR, WEIGHT_DECAY, VF_COEF = 1e-4, 1e-3, 0.0, 0.5
N_ENVS, BATCH_SIZE = 40, 50_000
REWARD_HORIZON = ACT_STEPS

Step = Callable[[], Any]


# ---------------------------------------------------------------- the two implementations
def import_reference(path: Path) -> tuple[type, type, type]:
    """PPODiffusion, DiffusionMLP and CriticObs from a reference checkout, imported from `path` first."""
    add_reference(path, "model/diffusion/diffusion_ppo.py")
    from model.common.critic import CriticObs
    from model.diffusion.diffusion_ppo import PPODiffusion
    from model.diffusion.mlp_diffusion import DiffusionMLP

    check_imported_from(PPODiffusion.__module__, path)
    return PPODiffusion, DiffusionMLP, CriticObs


def build_reference(path: Path, device: torch.device) -> tuple[Any, torch.optim.Optimizer, torch.optim.Optimizer]:
    """The reference's PPODiffusion with the hopper config, and its agent's two AdamW optimizers."""
    PPODiffusion, DiffusionMLP, CriticObs = import_reference(path)
    actor = DiffusionMLP(
        action_dim=ACT_DIM,
        horizon_steps=HORIZON,
        cond_dim=OBS_DIM,
        time_dim=TIME_DIM,
        mlp_dims=list(ACTOR_DIMS),
        activation_type=ACTOR_ACTIVATION,
        residual_style=True,
    )
    critic = CriticObs(
        cond_dim=OBS_DIM, mlp_dims=list(CRITIC_DIMS), activation_type=CRITIC_ACTIVATION, residual_style=True
    )
    model = PPODiffusion(
        actor=actor,
        critic=critic,
        ft_denoising_steps=FT_DENOISING_STEPS,
        denoising_steps=DENOISING_STEPS,
        horizon_steps=HORIZON,
        obs_dim=OBS_DIM,
        action_dim=ACT_DIM,
        device=str(device),
        gamma_denoising=GAMMA_DENOISING,
        clip_ploss_coef=CLIP_PLOSS_COEF,
        clip_ploss_coef_base=CLIP_PLOSS_COEF_BASE,
        clip_ploss_coef_rate=CLIP_PLOSS_COEF_RATE,
        randn_clip_value=RANDN_CLIP,
        min_sampling_denoising_std=MIN_SAMPLING_STD,
        min_logprob_denoising_std=MIN_LOGPROB_STD,
    )
    # agent/finetune/train_ppo_agent.py
    actor_opt = torch.optim.AdamW(model.actor_ft.parameters(), lr=ACTOR_LR, weight_decay=WEIGHT_DECAY)
    critic_opt = torch.optim.AdamW(model.critic.parameters(), lr=CRITIC_LR, weight_decay=WEIGHT_DECAY)
    return model, actor_opt, critic_opt


def build_ours(reference: Any, device: torch.device) -> Any:
    """Our DPPO with the same sizes and hyper-parameters, starting from the reference's weights."""
    sys.path.insert(1, str(REPO))
    from methods.base import MethodContext
    from methods.dppo import DPPO, DPPOConfig
    from methods.policies.diffusion import DiffusionPolicy, DiffusionPolicyConfig

    policy = DiffusionPolicy(
        obs_dim=OBS_DIM,
        act_dim=ACT_DIM,
        horizon=HORIZON,
        cfg=DiffusionPolicyConfig(
            denoising_steps=DENOISING_STEPS,
            hidden=list(ACTOR_DIMS),
            time_dim=TIME_DIM,
            activation=ACTOR_ACTIVATION.lower(),
            residual=True,
            randn_clip=RANDN_CLIP,
        ),
    )
    copy_parameters(reference.actor_ft, policy.network)  # before DPPO makes its frozen copy
    cfg = DPPOConfig(
        ft_denoising_steps=FT_DENOISING_STEPS,
        gamma_denoise=GAMMA_DENOISING,
        clip=CLIP_PLOSS_COEF,
        clip_base=CLIP_PLOSS_COEF_BASE,
        clip_rate=CLIP_PLOSS_COEF_RATE,
        min_sampling_std=MIN_SAMPLING_STD,
        min_logprob_std=MIN_LOGPROB_STD,
        vf_coef=VF_COEF,
        batch_size=BATCH_SIZE,
        n_critic_warmup_itr=0,
        actor_lr=ACTOR_LR,
        actor_min_lr=ACTOR_LR,
        actor_weight_decay=WEIGHT_DECAY,
        critic_lr=CRITIC_LR,
        critic_min_lr=CRITIC_LR,
        critic_weight_decay=WEIGHT_DECAY,
        critic_hidden=list(CRITIC_DIMS),
        critic_activation=CRITIC_ACTIVATION.lower(),
        critic_residual=True,
    )
    method = DPPO(cfg, MethodContext.standalone(policy, device, act_steps=ACT_STEPS))
    copy_parameters(reference.critic, method.critic)
    return method


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------- inputs
def make_minibatch(reference: Any, device: torch.device, seed: int) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """A 50,000-sample minibatch in both layouts, built from a reference rollout as its agent builds one.

    Returns the reference's `loss(...)` keyword arguments and our `minibatch_step` dict.
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    n_steps = BATCH_SIZE // FT_DENOISING_STEPS  # env steps x envs in the rollout

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(device)

    obs_k = randn(n_steps, 1, OBS_DIM)
    torch.manual_seed(seed)
    with torch.no_grad():
        chains_k = reference(cond={"state": obs_k}, deterministic=False, return_chain=True).chains
        logprobs_k = reference.get_logprobs({"state": obs_k}, chains_k)
    logprobs_k = logprobs_k.reshape(n_steps, FT_DENOISING_STEPS, HORIZON, ACT_DIM)
    returns_k, values_k, advantages_k = randn(n_steps), randn(n_steps), randn(n_steps)

    inds = torch.randperm(n_steps * FT_DENOISING_STEPS, generator=gen).to(device)
    batch_inds = torch.div(inds, FT_DENOISING_STEPS, rounding_mode="floor")
    denoising_inds = inds % FT_DENOISING_STEPS
    ref_args = {
        "obs": {"state": obs_k[batch_inds]},
        "chains_prev": chains_k[batch_inds, denoising_inds],
        "chains_next": chains_k[batch_inds, denoising_inds + 1],
        "denoising_inds": denoising_inds,
        "returns": returns_k[batch_inds],
        "oldvalues": values_k[batch_inds],
        "advantages": advantages_k[batch_inds],
        "oldlogprobs": logprobs_k[batch_inds, denoising_inds],
        "use_bc_loss": False,
        "reward_horizon": REWARD_HORIZON,
    }
    old = ref_args["oldlogprobs"]
    ours = {
        "obs": ref_args["obs"]["state"].reshape(BATCH_SIZE, OBS_DIM),
        "x_prev": ref_args["chains_prev"],
        "x_next": ref_args["chains_next"],
        "ft_index": denoising_inds,
        "env_index": batch_inds,  # which env step each sample is of, as DPPO.make_samples records it
        # ours stores the reduced log-prob: the reference's clamp to [-5, 2] and mean over executed Ta x Da
        "old_logp": old[:, :REWARD_HORIZON].clamp(-5, 2).mean(dim=(-1, -2)),
        "advantages": ref_args["advantages"],
        "returns": ref_args["returns"],
        "values": ref_args["oldvalues"],
    }
    return ref_args, ours


# ---------------------------------------------------------------- timing
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_pair(
    ref: Step, ours: Step, warmup: int, repeats: int, device: torch.device, also: Step | None = None
) -> tuple[list[float], list[float], list[float]]:
    """Wall-clock ms of `repeats` calls of each after `warmup`, alternating which one goes first; `also`, if given,
    is timed after each pair (the same background load) and its times returned third."""
    for _ in range(warmup):
        ref()
        ours()
    times: dict[str, list[float]] = {"ref": [], "ours": [], "also": []}
    for r in range(repeats):
        order = [("ref", ref), ("ours", ours)]
        for name, fn in [*(order if r % 2 == 0 else reversed(order)), *([("also", also)] if also else [])]:
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(1e3 * (time.perf_counter() - t0))
    return times["ref"], times["ours"], times["also"]


def matmul_step(device: torch.device, n: int) -> Step:
    """One `torch.mm` of two n x n float32 matrices (2 n^3 FLOP) into a kept output, at the current thread count:
    timed alongside the updates, its median gives the machine's dense matmul rate."""
    a, b = (torch.randn(n, n, device=device) for _ in range(2))
    out = torch.mm(a, b)
    return lambda: torch.mm(a, b, out=out)


def count_flops(step: Step) -> int:
    """FLOPs of one call of `step`, forward and backward, as torch's FlopCounterMode counts them (the matmuls of
    every linear layer, which is all but a few percent of the work here; elementwise ops count 0)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# ---------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--reference", type=Path, required=True, help="checkout of irom-princeton/dppo")
    ap.add_argument("--repeats", type=int, default=10, help="timed PPO updates per implementation")
    ap.add_argument("--sample-repeats", type=int, default=None, help="timed chains (default: 10 x --repeats)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls of each operation first")
    ap.add_argument("--threads", type=int, default=default_threads(), help="torch threads (default: all cores)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mm-size", type=int, default=2048, help="n of the n x n float32 torch.mm rate measurement")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.warmup < 1:
        ap.error("--repeats and --warmup must be >= 1")
    sample_repeats = args.sample_repeats or 10 * args.repeats

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)

    reference, ref_actor_opt, ref_critic_opt = build_reference(args.reference.resolve(), device)
    method = build_ours(reference, device)
    params = {
        "actor_reference": n_params(reference.actor_ft),
        "actor_ours": n_params(method.policy.network),
        "critic_reference": n_params(reference.critic),
        "critic_ours": n_params(method.critic),
    }
    print(f"actor parameters:  reference {params['actor_reference']:,}  ours {params['actor_ours']:,}")
    print(f"critic parameters: reference {params['critic_reference']:,}  ours {params['critic_ours']:,}")
    assert params["actor_reference"] == params["actor_ours"], "actor sizes differ"
    assert params["critic_reference"] == params["critic_ours"], "critic sizes differ"

    # (a) one stochastic chain for N_ENVS envs, recorded
    obs = torch.randn(N_ENVS, OBS_DIM, device=device)
    ref_cond = {"state": obs.view(N_ENVS, 1, OBS_DIM)}

    def ref_sample() -> torch.Tensor:
        return reference(cond=ref_cond, deterministic=False, return_chain=True).chains

    def our_sample() -> torch.Tensor:
        return method.act(obs, deterministic=False)[1]["chain"]

    torch.manual_seed(args.seed + 1)
    ref_chain = ref_sample()
    torch.manual_seed(args.seed + 1)
    our_chain = our_sample()
    chain_shape = (N_ENVS, FT_DENOISING_STEPS + 1, HORIZON, ACT_DIM)
    assert ref_chain.shape == our_chain.shape == chain_shape, (ref_chain.shape, our_chain.shape)
    chain_diff = (ref_chain - our_chain).abs().max().item()

    # (b) one PPO minibatch update on BATCH_SIZE samples
    ref_args, our_mb = make_minibatch(reference, device, args.seed)

    def ref_update() -> tuple[float, float]:
        pg_loss, _entropy, v_loss, *_ = reference.loss(**ref_args)
        loss = pg_loss + VF_COEF * v_loss
        ref_actor_opt.zero_grad()
        ref_critic_opt.zero_grad()
        loss.backward()
        ref_actor_opt.step()
        ref_critic_opt.step()
        return pg_loss.item(), v_loss.item()

    def our_update() -> tuple[float, float]:
        stats = method.minibatch_step(our_mb, train_actor=True)
        return stats["pg_loss"], stats["v_loss"]

    # The first updates start from identical weights and data, so the losses must agree: the first one has
    # ratio 1 (pg_loss ~ 0), the second checks the policy loss after one step of each optimizer.
    check_updates = [(ref_update(), our_update()) for _ in range(2)]
    losses_agree = all(
        math.isclose(a, b, rel_tol=1e-2, abs_tol=1e-6)
        for ref_losses, our_losses in check_updates
        for a, b in zip(ref_losses, our_losses, strict=True)
    )
    print(f"same-seed chains: max |reference - ours| = {chain_diff:.2e}")
    for i, (ref_losses, our_losses) in enumerate(check_updates, 1):
        print(
            f"update {i} (pg_loss, v_loss): reference ({ref_losses[0]:.4e}, {ref_losses[1]:.6f})"
            f"  ours ({our_losses[0]:.4e}, {our_losses[1]:.6f})"
        )
    check = {
        "chain_max_abs_diff": chain_diff,
        "check_updates_pg_v_loss": [{"reference": r, "ours": o} for r, o in check_updates],
        "agree": chain_diff < 1e-3 and losses_agree,
    }
    if not check["agree"]:
        print("WARNING: the two implementations do not compute the same thing here; check before comparing speed")

    # FLOPs of one update of each (after the checks: each counted call is one more optimiser step)
    flops = {"reference": count_flops(ref_update), "ours": count_flops(our_update)}

    results: dict[str, dict[str, Any]] = {}
    mm, mm_ms = matmul_step(device, args.mm_size), []
    for name, (ref_fn, our_fn, repeats) in {
        "sample": (ref_sample, our_sample, sample_repeats),
        "update": (ref_update, our_update, args.repeats),
    }.items():
        also = mm if name == "update" else None  # the matmul rate, timed between the updates
        ref_ms, our_ms, also_ms = time_pair(ref_fn, our_fn, args.warmup, repeats, device, also)
        mm_ms = also_ms if also else mm_ms
        ref_med, our_med = statistics.median(ref_ms), statistics.median(our_ms)
        results[name] = {
            "repeats": repeats,
            "reference_median_ms": ref_med,
            "ours_median_ms": our_med,
            "ratio_reference_over_ours": ref_med / our_med,
            "reference_ms": ref_ms,
            "ours_ms": our_ms,
        }

    mm_flops = 2 * args.mm_size**3 / (statistics.median(mm_ms) / 1e3)
    update = results["update"]
    update["mm_ms"] = mm_ms
    for who in ("reference", "ours"):
        update[f"{who}_flops"] = flops[who]
        update[f"{who}_flop_rate"] = flops[who] / (update[f"{who}_median_ms"] / 1e3)
        update[f"{who}_fraction_of_mm_rate"] = update[f"{who}_flop_rate"] / mm_flops

    machine = {
        "cpu": cpu_model(),
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "mm_size": args.mm_size,
        "mm_flop_rate": mm_flops,
    }
    labels = {
        "sample": f"(a) sample one recorded chain, {N_ENVS} envs, K={DENOISING_STEPS}, K'={FT_DENOISING_STEPS}",
        "update": f"(b) PPO minibatch update, {BATCH_SIZE:,} samples",
    }
    print()
    print(
        f"Machine: {machine['cpu']}; device {machine['device']}; {machine['threads']} torch threads; "
        f"torch {machine['torch']}; warm-up {args.warmup}"
    )
    print()
    print("| operation | reference median (ms) | ours median (ms) | ratio (reference/ours) |")
    print("|---|---:|---:|---:|")
    for name, r in results.items():
        print(
            f"| {labels[name]} (n={r['repeats']}) | {r['reference_median_ms']:.2f} | {r['ours_median_ms']:.2f} "
            f"| {r['ratio_reference_over_ours']:.2f} |"
        )
    print()
    print(
        f"Dense matmul rate: torch.mm {args.mm_size}x{args.mm_size} float32, {machine['threads']} threads: "
        f"{mm_flops / 1e9:.1f} GFLOP/s"
    )
    for who in ("ours", "reference"):
        print(
            f"(b) {who:9s}: {update[f'{who}_flops'] / 1e9:6.1f} GFLOP per update (FlopCounterMode, forward + backward)"
            f" -> {update[f'{who}_flop_rate'] / 1e9:6.1f} GFLOP/s = {update[f'{who}_fraction_of_mm_rate']:.2f}"
            " of the torch.mm rate"
        )

    out = {
        "machine": machine,
        "reference": str(args.reference.resolve()),
        "warmup": args.warmup,
        "parameters": params,
        "check": check,
        "results": results,
    }
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
