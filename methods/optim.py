"""Optimiser settings every fine-tuning method shares: the actor's and the critic's AdamW learning rates,
their cosine-with-warm-up schedule (the reference's `CosineAnnealingWarmupRestarts` with `cycle_mult=1`,
`gamma=1`), weight decay, and the critic MLP's shape. Methods' configs inherit `ActorOptim` and, when
they learn a critic, `CriticOptim`.

Defaults are the reference's Avoid PPO values (irom-princeton/dppo
cfg/d3il/finetune/avoid_m2/ft_ppo_diffusion_mlp.yaml); each method's own config overrides them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from common.limits import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, Range


def cosine_warmup_lr(step: int, max_lr: float, min_lr: float, warmup: int, cycle: int) -> float:
    """Linear warm-up from min_lr to max_lr, then cosine decay back to min_lr; restarts every `cycle`."""
    s = step % cycle
    if s < warmup:
        return min_lr + (max_lr - min_lr) * s / warmup
    return min_lr + (max_lr - min_lr) * (1 + math.cos(math.pi * (s - warmup) / (cycle - warmup))) / 2


@dataclass
class ActorOptim:
    actor_lr: float = 1e-5
    """Actor's peak AdamW LR, reached after `actor_lr_warmup` iterations of each cycle."""
    actor_min_lr: float = 1e-5
    """Actor's LR at warm-up start and cosine-decay end; equal to actor_lr (the default) gives a constant LR."""
    actor_lr_warmup: int = 10
    """Iterations of linear actor-LR warm-up from actor_min_lr to actor_lr at the start of each cycle."""
    actor_lr_cycle: int = 100
    """Iterations per actor-LR warm-up + cosine-decay cycle (restarts)."""
    actor_weight_decay: float = 0.0
    """AdamW weight decay of the actor's parameters."""
    max_grad_norm: float | None = None
    """Clip the actor's gradient to this global norm (the critic's is not clipped); None disables."""

    LIMITS: ClassVar[dict[str, Range]] = {
        "actor_lr": NON_NEGATIVE,
        "actor_min_lr": NON_NEGATIVE,
        "actor_lr_warmup": NON_NEGATIVE,
        "actor_lr_cycle": AT_LEAST_ONE,
        "actor_weight_decay": NON_NEGATIVE,
        "max_grad_norm": POSITIVE,
    }


@dataclass
class CriticOptim:
    critic_lr: float = 1e-3
    """Critic's peak AdamW LR, reached after `critic_lr_warmup` iterations of each cycle."""
    critic_min_lr: float = 1e-3
    """Critic's LR at warm-up start and cosine-decay end; equal to critic_lr (the default) gives a constant LR."""
    critic_lr_warmup: int = 10
    """Iterations of linear critic-LR warm-up from critic_min_lr to critic_lr at the start of each cycle."""
    critic_lr_cycle: int = 100
    """Length in iterations of one critic-LR warm-up + cosine-decay cycle, counted from iteration 0."""
    critic_weight_decay: float = 0.0
    """AdamW weight decay of the critic's parameters."""
    critic_hidden: list[int] = field(default_factory=lambda: [256, 256, 256])
    """Hidden widths of the critic MLPs (residual: an odd number of equal widths)."""
    critic_activation: str = "mish"
    """Critic activation: relu, mish, tanh, elu or gelu."""
    critic_residual: bool = True
    """Build the critic from residual blocks (reference: residual_style) instead of a plain MLP."""

    LIMITS: ClassVar[dict[str, Range]] = {
        "critic_lr": NON_NEGATIVE,
        "critic_min_lr": NON_NEGATIVE,
        "critic_lr_warmup": NON_NEGATIVE,
        "critic_lr_cycle": AT_LEAST_ONE,
        "critic_weight_decay": NON_NEGATIVE,
        "critic_hidden": AT_LEAST_ONE,
    }


def check_lr_schedules(cfg: Any) -> None:
    """Each LR schedule's warm-up must fit in its cycle."""
    for who in ("actor", "critic"):
        if not hasattr(cfg, f"{who}_lr_cycle"):
            continue
        warmup, cycle = getattr(cfg, f"{who}_lr_warmup"), getattr(cfg, f"{who}_lr_cycle")
        if warmup >= cycle:
            raise ValueError(
                f"algo.{who}_lr_warmup={warmup} must be shorter than algo.{who}_lr_cycle={cycle} (iterations)"
            )


def scheduled_lr(cfg: Any, who: str, step: int) -> float:
    """The `who` ("actor" or "critic") learning rate at schedule step `step`."""
    return cosine_warmup_lr(
        step,
        getattr(cfg, f"{who}_lr"),
        getattr(cfg, f"{who}_min_lr"),
        getattr(cfg, f"{who}_lr_warmup"),
        getattr(cfg, f"{who}_lr_cycle"),
    )


def adamw(params, cfg: Any, who: str) -> torch.optim.AdamW:
    """AdamW for the `who` parameters, starting at the schedule's first LR."""
    return torch.optim.AdamW(params, lr=getattr(cfg, f"{who}_min_lr"), weight_decay=getattr(cfg, f"{who}_weight_decay"))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr
