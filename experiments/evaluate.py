"""Evaluate a policy checkpoint with the task's protocol:

    python -m experiments.evaluate checkpoint=results/.../final.pt method=dppo task=avoid_m2 [episodes=500] [seed=0]

`method` decides how the policy acts (e.g. DPPO's sampling-noise floor); the
episodes are run in batches of the task's protocol size (50 for Avoid).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from envs.tasks import get_task
from experiments.config import ConfigError, build_config, parse_overrides
from experiments.record import RunRecord
from experiments.run import USER_ERRORS, resolve_device
from experiments.trainer import Trainer
from methods import get_method
from methods.pretrain import load_policy


def evaluate_checkpoint(
    checkpoint: str | Path, method: str, task: str, episodes: int, seed: int = 0, overrides: dict | None = None
) -> dict[str, float]:
    cfg = build_config({"method": method, "task": task, **(overrides or {})})
    spec, method_cls, device = get_task(task), get_method(method), resolve_device(cfg.device)
    torch.manual_seed(seed)
    np.random.seed(seed)
    policy, normalizer, _ = load_policy(
        checkpoint, method_cls.policy_kind, spec.obs_dim, spec.act_dim, spec.horizon, device
    )
    agent = method_cls(policy, cfg.algo, device, 1, spec.act_steps)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, spec, agent, normalizer, RunRecord(Path(tmp)), device)
        try:
            batches = []
            for b in range(max(1, episodes // trainer.n_eval)):
                batches.append(trainer.evaluate(seed=seed + 1000 * b))
        finally:
            trainer.close()
    successes = [s for ep in batches for s in ep.successes]
    returns = [r for ep in batches for r in ep.returns]
    per_batch = [float(np.mean(ep.successes)) for ep in batches]
    return {
        "episodes": len(successes),
        "success": float(np.mean(successes)),
        "success_std_over_batches": float(np.std(per_batch)),
        "return": float(np.mean(returns)),
    }


def main(argv: list[str] | None = None) -> int:
    try:
        ov = parse_overrides(sys.argv[1:] if argv is None else argv)
        missing = [k for k in ("checkpoint", "method", "task") if k not in ov]
        if missing:
            raise ConfigError(f"missing {', '.join(k + '=' for k in missing)}; see the module docstring")
        result = evaluate_checkpoint(
            ov.pop("checkpoint"),
            ov.pop("method"),
            ov.pop("task"),
            int(ov.pop("episodes", 50)),
            int(ov.pop("seed", 0)),
            ov,
        )
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"{result['episodes']} episodes: success {result['success']:.3f} "
        f"(std over batches {result['success_std_over_batches']:.3f}), return {result['return']:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
