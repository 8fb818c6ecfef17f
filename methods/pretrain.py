"""Behaviour-cloning pre-training and the standalone policy checkpoint.

Pre-training: AdamW, linear warm-up then cosine decay of the LR, EMA weights
(the reference's pre-training recipe, e.g. irom-princeton/dppo
cfg/d3il/pretrain/avoid_m2/pre_diffusion_mlp.yaml: lr 1e-4 -> 1e-5, weight
decay 1e-6, EMA decay 0.995, batch 16; we use larger batches and fewer
steps so the CPU quick start fits its budget).

A policy checkpoint is a dict that records the policy kind, its config, the
task dims and the normaliser, so a mismatch is caught before any training.
"""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from envs.normalizer import MinMaxNormalizer
from methods.policies import POLICIES
from methods.ppo import cosine_warmup_lr

CHECKPOINT_FORMAT = "dppo-bench/policy/1"


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt or does not fit the run."""


@dataclass
class PretrainConfig:
    n_steps: int = 6000
    n_epochs: int | None = None  # if set, overrides n_steps: epochs x dataset size / batch size
    batch_size: int = 128
    lr: float = 1e-4
    min_lr: float = 1e-5
    warmup_steps: int = 100
    weight_decay: float = 1e-6
    ema_decay: float = 0.995


def pretrain(
    policy: torch.nn.Module,
    obs: np.ndarray,
    actions: np.ndarray,
    cfg: PretrainConfig,
    device: torch.device,
    seed: int = 0,
    progress: bool = True,
) -> tuple[torch.nn.Module, list[float]]:
    """Fit `policy.bc_loss` on (obs, action-chunk) pairs; returns the EMA policy and the loss curve."""
    n_steps = cfg.n_steps if cfg.n_epochs is None else max(1, cfg.n_epochs * len(obs) // cfg.batch_size)
    gen = torch.Generator().manual_seed(seed)
    obs_t = torch.as_tensor(obs, device=device)
    act_t = torch.as_tensor(actions, device=device)
    policy.to(device).train()
    ema = copy.deepcopy(policy).requires_grad_(False)
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    losses: list[float] = []
    bar = tqdm(range(n_steps), desc="pre-train", disable=not progress, mininterval=1.0)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = cosine_warmup_lr(step, cfg.lr, cfg.min_lr, cfg.warmup_steps, n_steps)
        idx = torch.randint(0, len(obs_t), (cfg.batch_size,), generator=gen).to(device)
        loss = policy.bc_loss(obs_t[idx], act_t[idx])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"pre-training loss became {loss.item()} at step {step}; lower pretrain.lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), policy.parameters()):
                pe.lerp_(p, 1 - cfg.ema_decay)
        losses.append(loss.item())
        if step % 100 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-100:]):.4f}")
    return ema.eval(), losses


def save_policy(path: Path, policy: torch.nn.Module, task: str, normalizer: MinMaxNormalizer, extra: dict) -> None:
    """Write atomically: a checkpoint file that exists is complete."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "kind": policy.kind,
        "policy_config": asdict(policy.cfg),
        "task": task,
        "obs_dim": policy.obs_dim,
        "act_dim": policy.act_dim,
        "horizon": policy.horizon,
        "normalizer": normalizer.to_dict(),
        "state_dict": policy.state_dict(),
        **extra,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_policy(
    path: str | Path, kind: str, obs_dim: int, act_dim: int, horizon: int, device: torch.device
) -> tuple[torch.nn.Module, MinMaxNormalizer, dict[str, Any]]:
    """Load a policy checkpoint and check it fits the method (kind) and the task (dims)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; omit checkpoint= to pre-train first")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=False)
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a dppo-bench policy checkpoint (format {CHECKPOINT_FORMAT})")
    if ckpt["kind"] != kind:
        raise CheckpointError(
            f"{path} holds a {ckpt['kind']} policy but this method fine-tunes a {kind} policy; "
            f"pass a {kind} checkpoint or omit checkpoint= to pre-train one"
        )
    got = (ckpt["obs_dim"], ckpt["act_dim"], ckpt["horizon"])
    if got != (obs_dim, act_dim, horizon):
        raise CheckpointError(
            f"{path} was trained for obs dim {got[0]}, action dim {got[1]}, chunk {got[2]} "
            f"(task {ckpt['task']}); this task needs {obs_dim}, {act_dim}, {horizon}"
        )
    policy_cls, cfg_cls = POLICIES[kind]
    cfg = cfg_cls(**ckpt["policy_config"])
    policy = policy_cls(obs_dim, act_dim, horizon, cfg).to(device)
    policy.load_state_dict(ckpt["state_dict"])
    return policy, MinMaxNormalizer.from_dict(ckpt["normalizer"]), ckpt
