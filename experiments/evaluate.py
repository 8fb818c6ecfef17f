"""Evaluate a policy checkpoint with the task's protocol:

    python -m experiments.evaluate checkpoint=results/<run>/checkpoints/final.pt [episodes=500] [seed=0]
        [out=DIR] [config=FILE.yaml] [key=value ...]

The run's own config comes with the checkpoint (method, task, the method's sampling settings such as
DPPO's noise floor, the number of envs), so a checkpoint evaluates exactly as its run evaluated it:
episodes run in batches of the run's evaluation size (`train.eval_episodes`, by default the task's
protocol: 50 for Avoid), `episodes` rounded down to whole batches; batch b starts from seed
`seed + 10000 + 1000 b`, so with the run's seed the first batch repeats the run's own final evaluation.
`method=`, `task=`, `config=FILE` and any config key override the recorded values (a checkpoint without a
recorded config needs `method=` and `task=`). `out=DIR` writes the first batch's episodes there
(`rollouts_eval.json` and a plot, for tasks that record paths).

Robustness (paper Fig. 12), on any task: `action_noise=X` moves every executed action by +-X (normalised
units, random sign; `action_noise=[LOW,HIGH]`: a magnitude drawn from U(LOW, HIGH)), a perturbed controller;
`init_range=S` scales the half-width of the task's initial-state randomisation by S (Avoid's start box, Gym's
reset noise, Robomimic's object placement). They are `train.action_noise` and `train.init_range`, applied in
full here.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from experiments.checkpoints import load_policy, read_checkpoint
from experiments.config import ConfigError, parse_overrides, resolve
from experiments.record import RUNTIME_KEYS, RunRecord, flatten
from experiments.run import USER_ERRORS, resolve_device
from experiments.trainer import Trainer, method_context
from methods import get_method


def recorded_config(ckpt: dict[str, Any], method: str | None) -> dict[str, Any]:
    """The dotted keys of the run that wrote a checkpoint, less how it ran (device, threads, ...) and, when
    another `method` evaluates it, less the recorded method's own `algo.*` and `policy.*` keys."""
    recorded = flatten(ckpt.get("run_config") or {})
    same_method = method is None or method == recorded.get("method")
    return {
        k: v
        for k, v in recorded.items()
        if k.split(".")[0] not in RUNTIME_KEYS and (same_method or k.split(".")[0] not in ("algo", "policy"))
    }


def evaluate_checkpoint(
    checkpoint: str | Path,
    method: str | None = None,
    task: str | None = None,
    episodes: int | None = None,
    seed: int | None = None,
    overrides: dict | None = None,
    out_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate `checkpoint` as its run would (see the module docstring); with `out_dir`, also write the first
    batch's episodes there as `rollouts_eval.json` (and its plot) for tasks that record paths."""
    ckpt = read_checkpoint(checkpoint, fix="pass a run's checkpoints/final.pt or pretrained.pt")
    chosen = {k: v for k, v in (("method", method), ("task", task), ("seed", seed)) if v is not None}
    layer = recorded_config(ckpt, method)
    for key in ("method", "task"):
        if key not in chosen and key not in layer:
            raise ConfigError(f"{checkpoint} records no run config; pass {key}=")
    cfg, _ = resolve({**chosen, **(overrides or {})}, recorded=(f"the run of {checkpoint}", layer))
    spec, method_cls, device = cfg.task_spec(), get_method(cfg.method), resolve_device(cfg.device)
    policy, normalizer, _ = load_policy(
        checkpoint, method_cls.policy_kind, spec.obs_dim, spec.act_dim, spec.horizon, device
    )
    if ckpt.get("fine_tuned") == "dppo" and "n_base_steps" not in ckpt:
        print(
            f"warning: {checkpoint} predates checkpoints that keep DPPO's frozen pre-trained network; all its "
            "sampling steps run the fine-tuned one, so this evaluation differs from its run's",
            file=sys.stderr,
        )
    try:
        method_cls.check_config(cfg.algo, policy)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    agent = method_cls(cfg.algo, method_context(cfg, spec, policy, device))
    if ckpt.get("fine_tuned") == cfg.method and ckpt.get("acting_state"):
        agent.load_acting_state(ckpt["acting_state"])  # e.g. IDQL's critics, which choose its actions
    with tempfile.TemporaryDirectory() as tmp:
        record = RunRecord(Path(out_dir or tmp))
        record.path.mkdir(parents=True, exist_ok=True)
        trainer = Trainer(cfg, spec, agent, normalizer, record, device)
        try:
            n_batches = max(1, (episodes or trainer.n_eval) // trainer.n_eval)
            batches = [trainer.evaluate(seed=trainer.eval_seed + 1000 * b) for b in range(n_batches)]
            if out_dir is not None:
                trainer.save_rollouts(batches[0], "rollouts_eval", f"{cfg.method} {cfg.task}: {Path(checkpoint).name}")
        finally:
            trainer.close()
    successes = [s for ep in batches for s in ep.successes]
    returns = [r for ep in batches for r in ep.returns]
    per_batch = [float(np.mean(ep.successes)) for ep in batches]
    return {
        "method": cfg.method,
        "task": cfg.task,
        "seed": cfg.seed,
        "episodes": len(successes),
        "success": float(np.mean(successes)),
        "success_std_over_batches": float(np.std(per_batch)),
        "return": float(np.mean(returns)),
        "action_noise": list(cfg.train.action_noise),
        "init_range": cfg.train.init_range,
    }


def _int(ov: dict[str, Any], key: str) -> int | None:
    if key not in ov:
        return None
    value = ov.pop(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{key} expects int, got {value!r}")
    if value < (1 if key == "episodes" else 0):
        raise ConfigError(f"{key}={value} is out of range: it must be >= {1 if key == 'episodes' else 0}")
    return value


def robustness_overrides(ov: dict[str, Any]) -> dict[str, Any]:
    """`action_noise=X` (or [LOW, HIGH]) and `init_range=S` as the config keys they stand for."""
    if "action_noise" in ov:
        noise = ov.pop("action_noise")
        ov["train.action_noise"] = (
            [noise, noise] if isinstance(noise, (int, float)) and not isinstance(noise, bool) else noise
        )
    if "init_range" in ov:
        ov["train.init_range"] = ov.pop("init_range")
    return ov


def main(argv: list[str] | None = None) -> int:
    try:
        ov = robustness_overrides(parse_overrides(sys.argv[1:] if argv is None else argv))
        if "checkpoint" not in ov:
            raise ConfigError("missing checkpoint=path/to/policy.pt; see the module docstring")
        result = evaluate_checkpoint(
            ov.pop("checkpoint"),
            ov.pop("method", None),
            ov.pop("task", None),
            _int(ov, "episodes"),
            _int(ov, "seed"),
            ov,
            ov.pop("out", None),
        )
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    perturbed = [f"action noise {result['action_noise']}"] if max(result["action_noise"]) > 0 else []
    perturbed += [f"initial-state range x{result['init_range']:g}"] if result["init_range"] != 1 else []
    print(
        f"{result['method']} on {result['task']}, seed {result['seed']}"
        f"{' (' + ', '.join(perturbed) + ')' if perturbed else ''}: {result['episodes']} episodes: "
        f"success {result['success']:.3f} (std over batches {result['success_std_over_batches']:.3f}), "
        f"return {result['return']:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
