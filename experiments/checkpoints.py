"""The standalone policy checkpoint (pretrained.pt, final.pt).

A checkpoint is a dict that records the policy kind, its config, the task dims and the normaliser, so a
mismatch is caught before any training. A fine-tuned diffusion policy whose first sampling steps stay with
the pre-trained network (DPPO's K' < K) carries that network too (`n_base_steps`), so evaluating the file
samples exactly as the fine-tuning run did.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from envs.normalizer import MinMaxNormalizer
from experiments.record import save_torch_atomic
from methods.policies import POLICIES

CHECKPOINT_FORMAT = "dppo-bench/policy/1"


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt or does not fit the run."""


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
        "n_base_steps": getattr(policy, "n_base_steps", 0),
        **extra,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_torch_atomic(payload, path)


def read_checkpoint(
    path: str | Path, device: torch.device | str = "cpu", fix: str = "omit checkpoint= to pre-train first"
) -> dict[str, Any]:
    """The checkpoint's payload; a missing, unreadable or foreign file is a CheckpointError (`fix`: what to do
    when it is missing)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; {fix}")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=False)
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a dppo-bench policy checkpoint (format {CHECKPOINT_FORMAT})")
    return ckpt


def load_policy(
    path: str | Path, kind: str, obs_dim: int, act_dim: int, horizon: int, device: torch.device
) -> tuple[torch.nn.Module, MinMaxNormalizer, dict[str, Any]]:
    """Load a policy checkpoint and check it fits the method (kind) and the task (dims)."""
    ckpt = read_checkpoint(path, device)
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
            + (f" (a chunk of {got[2]}: set horizon={got[2]})" if got[:2] == (obs_dim, act_dim) else "")
        )
    policy_cls, cfg_cls = POLICIES[kind]
    cfg = cfg_cls(**ckpt["policy_config"])
    policy = policy_cls(obs_dim, act_dim, horizon, cfg).to(device)
    if ckpt.get("n_base_steps"):
        policy.keep_base_network(ckpt["n_base_steps"])
    policy.load_state_dict(ckpt["state_dict"])
    return policy, MinMaxNormalizer.from_dict(ckpt["normalizer"]), ckpt
