"""What the benchmarks that run the official implementation (irom-princeton/dppo) share.

The reference's packages are imported from a checkout the user names (`--reference`); nothing
of it is copied here.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn


def add_reference(path: Path, needs: str) -> None:
    """Put the checkout at `path` first on sys.path; exit with a clear message if `needs` isn't in it."""
    path = path.resolve()
    if not (path / needs).is_file():
        sys.exit(f"{path} does not look like an irom-princeton/dppo checkout (no {needs})")
    sys.path.insert(0, str(path))


def check_imported_from(module_name: str, path: Path) -> None:
    module_file = Path(sys.modules[module_name].__file__ or "").resolve()
    if not module_file.is_relative_to(path.resolve()):
        sys.exit(f"imported the reference from {module_file}, not from {path}")


def copy_parameters(src: nn.Module, dst: nn.Module) -> None:
    """Copy parameters in registration order; both modules must have the same tensor shapes in that order."""
    src_params, dst_params = list(src.parameters()), list(dst.parameters())
    shapes = [tuple(p.shape) for p in src_params], [tuple(p.shape) for p in dst_params]
    if shapes[0] != shapes[1]:
        raise AssertionError(f"parameter layouts differ:\nreference {shapes[0]}\nours      {shapes[1]}")
    with torch.no_grad():
        for s, d in zip(src_params, dst_params, strict=True):
            d.copy_(s)


def inspection_ppo_config(cfg_cls: type, critic_hidden: list[int], critic_activation: str, **algo: Any) -> Any:
    """A PPO config for comparing one minibatch: learning rates 0 (the step leaves the weights as they were and the
    gradients readable), no critic warm-up, no KL stop, no value clipping, advantages normalised."""
    return cfg_cls(
        norm_adv=True,
        clip_value=None,
        target_kl=None,
        n_critic_warmup_itr=0,
        actor_lr=0.0,
        actor_min_lr=0.0,
        critic_lr=0.0,
        critic_min_lr=0.0,
        critic_hidden=list(critic_hidden),
        critic_activation=critic_activation,
        critic_residual=True,
        **algo,
    )
