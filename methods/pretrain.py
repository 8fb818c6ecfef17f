"""Behaviour-cloning pre-training (the policy checkpoint it ends in: experiments/checkpoints.py).

Pre-training: AdamW, linear warm-up then cosine decay of the LR, EMA weights
(the reference's pre-training recipe, e.g. irom-princeton/dppo
cfg/d3il/pretrain/avoid_m2/pre_diffusion_mlp.yaml: lr 1e-4 -> 1e-5, weight
decay 1e-6, EMA decay 0.995, batch 16; we use larger batches and fewer
steps so the CPU quick start fits its budget).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from tqdm import tqdm

from common.limits import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, Range
from methods.optim import cosine_warmup_lr


@dataclass
class PretrainConfig:
    n_steps: int = 6000
    """Gradient steps of behaviour cloning, also the LR schedule's length; ignored when n_epochs is set."""
    n_epochs: int | None = None
    """If set, overrides n_steps with n_epochs x dataset size // batch_size (at least 1); None: use n_steps."""
    batch_size: int = 128
    """(obs, action chunk) pairs per gradient step, drawn uniformly with replacement."""
    lr: float = 1e-4
    """Peak AdamW LR, reached at the end of the warm-up."""
    min_lr: float = 1e-5
    """LR at the start of the linear warm-up and at the end of the cosine decay."""
    warmup_steps: int = 100
    """Gradient steps of linear warm-up from min_lr to lr, before the cosine decay back to min_lr."""
    weight_decay: float = 1e-6
    """AdamW weight decay."""
    ema_decay: float = 0.995
    """Per-step decay of the EMA of the weights; the EMA policy is what pre-training returns and saves."""
    max_episodes: int | None = None
    """Pre-train on this many of the dataset's demonstrations, a subset fixed by the seed (paper B.2, Fig. A5);
    None: all of them (or episode_fraction)."""
    episode_fraction: float | None = None
    """Pre-train on this fraction of the demonstrations (rounded, at least 1), fixed by the seed; None: all."""

    LIMITS: ClassVar[dict[str, Range]] = {
        "n_steps": AT_LEAST_ONE,
        "n_epochs": AT_LEAST_ONE,
        "batch_size": AT_LEAST_ONE,
        "lr": POSITIVE,
        "min_lr": NON_NEGATIVE,
        "warmup_steps": NON_NEGATIVE,
        "weight_decay": NON_NEGATIVE,
        "ema_decay": Range(0, 1, hi_open=True),
        "max_episodes": AT_LEAST_ONE,
        "episode_fraction": Range(0, 1, lo_open=True),
    }


def episodes_to_use(n_episodes: int, cfg: PretrainConfig, seed: int) -> np.ndarray | None:
    """Which demonstrations pre-training uses (None: all): `max_episodes` or `episode_fraction` of them, a subset
    drawn once from the seed, so every run with that seed pre-trains on the same episodes."""
    if cfg.max_episodes is not None and cfg.episode_fraction is not None:
        raise ValueError("set one of pretrain.max_episodes and pretrain.episode_fraction, not both")
    if cfg.max_episodes is not None and cfg.max_episodes > n_episodes:
        raise ValueError(
            f"pretrain.max_episodes={cfg.max_episodes} exceeds the dataset's {n_episodes} episodes; "
            f"use at most {n_episodes} (or null for all)"
        )
    if cfg.max_episodes is None and cfg.episode_fraction is None:
        return None
    n = cfg.max_episodes or max(1, round(cfg.episode_fraction * n_episodes))
    return np.sort(np.random.default_rng(seed).permutation(n_episodes)[:n])


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
