"""One run: `python -m experiments.run method=dppo task=avoid_m2 seed=0 [key=value ...]`.

Pre-trains the method's policy by behaviour cloning unless `checkpoint=` is
given, then fine-tunes it (`stage=pretrain` stops after pre-training,
`stage=finetune` requires a checkpoint; `pretrained=false` fine-tunes a randomly
initialised policy). `config=FILE.yaml` applies a YAML file of
config keys before the command line's (a run's recorded config.yaml reruns it).
Flags: `--resume`, `--force`, `--show-config` (print the resolved config as YAML,
each value with its source and doc, and exit).
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import functools
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.names import UnknownNameError
from envs.data.loaders import DatasetError
from envs.robomimic import UnsupportedVersionError
from envs.vector import EnvMemoryError
from envs.wrappers import NonFiniteError
from experiments.checkpoints import CheckpointError, load_policy, save_policy
from experiments.config import DEFAULT, PRESET_SOURCE, ConfigError, RunConfig, parse_overrides, render, resolve
from experiments.record import RunDirError, RunHeldError, RunLock, RunRecord, hardware, harness, read_json
from experiments.trainer import Trainer, method_context, peak_memory_mb
from methods import get_method
from methods.policies import POLICIES
from methods.pretrain import episodes_to_use, pretrain

USER_ERRORS = (
    ConfigError,
    UnknownNameError,
    DatasetError,
    CheckpointError,
    RunDirError,
    NonFiniteError,
    FloatingPointError,
    UnsupportedVersionError,
    EnvMemoryError,
)


# A full disk or quota, a read-only file system, no permission: the user's to fix, so one line, no traceback.
STORAGE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)

# Exit status of a run another live process is writing (EX_TEMPFAIL): launchers wait for that process instead.
HELD_EXIT_CODE = 75


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but no CUDA device is available; use device=cpu or device=auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name} is not a torch device; use auto, cpu, cuda or cuda:N") from None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def adopt_checkpoint_policy(cfg: RunConfig, policy_cfg: Any, sources: dict[str, str] | None) -> dict[str, str]:
    """The architecture is the checkpoint's, and the record must say so: `policy.*` values the user set (on the
    command line or in a config= file; the presets' don't count) that differ from it are an error; returns the
    sources with `policy.*` coming from the checkpoint."""
    if sources is None:
        user_set = [] if cfg.policy == type(cfg.policy)() else [f.name for f in dataclasses.fields(cfg.policy)]
    else:
        user_set = [
            k.removeprefix("policy.")
            for k, src in sources.items()
            if k.startswith("policy.") and src != DEFAULT and not src.startswith(PRESET_SOURCE)
        ]
    sampling = getattr(type(policy_cfg), "SAMPLING_KEYS", ())
    conflicts = [
        f"policy.{k}={getattr(cfg.policy, k)} (checkpoint: {getattr(policy_cfg, k)})"
        for k in user_set
        if getattr(cfg.policy, k) != getattr(policy_cfg, k) and k not in sampling
    ]
    if conflicts:
        raise ConfigError(
            f"policy.* overrides conflict with the checkpoint's architecture: {', '.join(conflicts)}; "
            "drop them (the architecture comes from the checkpoint)"
        )
    resampled = {k: getattr(cfg.policy, k) for k in user_set if k in sampling}
    cfg.policy = dataclasses.replace(policy_cfg, **resampled)
    from_ckpt = {k: "checkpoint" for k in (sources or {}) if k.startswith("policy.") and k[7:] not in resampled}
    return {**(sources or {}), **from_ckpt}


def resample_policy(policy: torch.nn.Module, policy_cfg: Any) -> torch.nn.Module:
    """The checkpoint's policy sampling as `policy_cfg` says (its SAMPLING_KEYS differ; the weights stay)."""
    if policy_cfg == policy.cfg:
        return policy
    type(policy).check_config(policy_cfg)
    if getattr(policy, "n_base_steps", 0):
        raise ConfigError(
            f"this checkpoint was fine-tuned with {policy.n_sampling_steps} sampling steps, its first "
            f"{policy.n_base_steps} frozen: fine-tune it with its own policy.use_ddim and policy.ddim_steps "
            "(or start from the pre-trained checkpoint)"
        )
    new = type(policy)(policy.obs_dim, policy.act_dim, policy.horizon, policy_cfg).to(next(policy.parameters()).device)
    new.load_state_dict(policy.state_dict())
    return new


def check_chunk(task, kind: str, policy_cfg: Any) -> None:
    """A policy that can't execute part of its chunk must execute all of it."""
    if task.act_steps == task.horizon or POLICIES[kind][0].executes_part_of_chunk(policy_cfg):
        return
    raise ConfigError(
        f"act_steps={task.act_steps} < horizon={task.horizon}: a {kind} policy with policy.backbone="
        f"{policy_cfg.backbone} executes the whole chunk it predicts (the paper found MLPs unstable when "
        f"pre-training and fine-tuning chunks differ, Sec. 4.2); set act_steps={task.horizon}, or predict a longer "
        "chunk than you execute with a diffusion policy on policy.backbone=unet"
    )


def run(
    cfg: RunConfig, resume: bool = False, force: bool = False, sources: dict[str, str] | None = None
) -> dict[str, Any]:
    """Execute one run and return its summary (also written to the run record).

    `sources` (from `experiments.config.resolve`) says where each value came from, for config.yaml."""
    task = cfg.task_spec()
    method_cls = get_method(cfg.method)
    kind = method_cls.policy_kind
    device = resolve_device(cfg.device)
    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    record = RunRecord(Path(cfg.results_dir) / cfg.run_name)

    # Recorded absolute, so a run resumed from another directory has the same config.
    cfg.checkpoint = str(Path(cfg.checkpoint).resolve()) if cfg.checkpoint else cfg.checkpoint
    cfg.dataset = str(Path(cfg.dataset).resolve()) if cfg.dataset else cfg.dataset

    # Everything a user can get wrong is checked before the run directory is touched.
    fresh = policy = normalizer = dataset = None  # fresh: the policy to pre-train, built now to check it
    try:
        if not cfg.pretrained and (cfg.checkpoint or cfg.stage == "pretrain"):
            raise ConfigError(
                "pretrained=false fine-tunes a randomly initialised policy: drop "
                + ("checkpoint=" if cfg.checkpoint else "stage=pretrain (use stage=all)")
            )
        if cfg.checkpoint:
            policy, normalizer, _ = load_policy(cfg.checkpoint, kind, task.obs_dim, task.act_dim, task.horizon, device)
            sources = adopt_checkpoint_policy(cfg, policy.cfg, sources)
            policy = resample_policy(policy, cfg.policy)
        elif cfg.stage == "finetune" and cfg.pretrained:
            raise ConfigError(
                "stage=finetune needs checkpoint=/path/to/policy.pt (or use stage=all to pre-train first)"
            )
        else:
            POLICIES[kind][0].check_config(cfg.policy)
            fresh = POLICIES[kind][0](task.obs_dim, task.act_dim, task.horizon, cfg.policy)
        method_cls.check_config(cfg.algo, policy if policy is not None else fresh)
        check_chunk(task, kind, cfg.policy)
    except ValueError as e:
        if isinstance(e, USER_ERRORS):
            raise
        raise ConfigError(str(e)) from None
    if fresh is not None:
        dataset = task.load_dataset(cfg.dataset)
        try:
            keep = episodes_to_use(dataset.n_episodes, cfg.pretrain, cfg.seed) if cfg.pretrained else None
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if keep is not None:
            dataset = dataset.episodes(keep)
    lock = RunLock(record.path)  # one writer per run, for as long as this process runs it
    lock.acquire()
    try:
        if resume and record.finished:  # resuming never changes a finished result
            print(f"{record.path} finished already; nothing to resume", file=sys.stderr)
            return read_json(record.path / "summary.json")
        resuming = record.prepare(cfg.to_dict(), resume=resume, force=force, config_yaml=render(cfg, sources))

        t0 = time.perf_counter()
        trainer = None
        try:
            summary: dict[str, Any] = {}
            if policy is None:
                pre_path = record.ckpt_dir / "pretrained.pt"
                if not cfg.pretrained:
                    policy, normalizer = fresh.to(device).eval(), dataset.normalizer
                    summary["pretrain"] = None
                elif resuming and pre_path.is_file():
                    policy, normalizer, ckpt = load_policy(
                        pre_path, kind, task.obs_dim, task.act_dim, task.horizon, device
                    )
                    summary["pretrain"] = ckpt["pretrain"]
                else:
                    obs, actions = dataset.chunks(task.horizon)
                    tp = time.perf_counter()
                    policy, losses = pretrain(fresh, obs, actions, cfg.pretrain, device, cfg.seed, cfg.progress)
                    normalizer = dataset.normalizer
                    summary["pretrain"] = {
                        "final_loss": float(np.mean(losses[-100:])),
                        "wall_time": time.perf_counter() - tp,
                        "n_samples": len(obs),
                        "n_episodes": dataset.n_episodes,
                        "episodes": None if keep is None else keep.tolist(),
                        "dataset": str(dataset.path),
                    }
                    save_policy(
                        pre_path,
                        policy,
                        task.name,
                        normalizer,
                        {"pretrain": summary["pretrain"], "run_config": cfg.to_dict()},
                    )

            # Fine-tuning's random stream starts from the seed whether or not this process pre-trained first, so
            # stage=all resumed after its pre-training (and stage=finetune on the same policy) continues identically.
            seed_everything(cfg.seed)
            offline = functools.cache(lambda: dataset if dataset is not None else task.load_dataset(cfg.dataset))
            method = method_cls(cfg.algo, method_context(cfg, task, policy, device, offline))
            trainer = Trainer(cfg, task, method, normalizer, record, device)
            if cfg.stage == "pretrain":
                episodes = trainer.evaluate(seed=trainer.eval_seed)
                trainer.save_rollouts(episodes, "rollouts_pretrained", f"pre-trained {kind} policy, {cfg.task}")
                summary["final_eval"] = episodes.summary("eval", task.score)
                summary["peak_memory_mb"] = peak_memory_mb()
            else:
                summary.update(trainer.fit())
                save_policy(
                    record.ckpt_dir / "final.pt",
                    method.exported_policy(),
                    task.name,
                    normalizer,
                    {"fine_tuned": cfg.method, "run_config": cfg.to_dict(), "acting_state": method.acting_state()},
                )
            summary.update(
                method=cfg.method,
                task=cfg.task,
                seed=cfg.seed,
                stage=cfg.stage,
                total_wall_time=time.perf_counter() - t0,
                hardware=hardware(),
                harness=harness(),
                device=str(device),
            )
            record.write("summary.json", summary)
            return summary
        except KeyboardInterrupt:
            record.fail("interrupted")
            raise
        except Exception as e:
            record.fail(f"{type(e).__name__}: {e}")
            raise
        finally:
            if trainer is not None:
                trainer.close()
    finally:
        lock.release()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.run",
        description="Pre-train and/or fine-tune one policy. Example: method=dppo task=avoid_m2 seed=0",
    )
    parser.add_argument(
        "overrides", nargs="*", help="key=value config overrides (train.n_iterations=20), config=FILE.yaml"
    )
    parser.add_argument("--resume", action="store_true", help="continue an existing run from its last checkpoint")
    parser.add_argument("--force", action="store_true", help="delete an existing run directory and start over")
    parser.add_argument(
        "--show-config", action="store_true", help="print the resolved config (YAML: value, source, doc) and exit"
    )
    args = parser.parse_args(argv)
    if args.resume and args.force:
        print("error: --resume and --force contradict each other; pick one", file=sys.stderr)
        return 2
    try:
        cfg, sources = resolve(parse_overrides(args.overrides))
        if args.show_config and cfg.checkpoint:
            spec, kind = cfg.task_spec(), get_method(cfg.method).policy_kind
            pol = load_policy(cfg.checkpoint, kind, spec.obs_dim, spec.act_dim, spec.horizon, torch.device("cpu"))[0]
            sources = adopt_checkpoint_policy(cfg, pol.cfg, sources)
        if args.show_config:
            print(render(cfg, sources), end="")
            return 0
        summary = run(cfg, resume=args.resume, force=args.force, sources=sources)
    except RunHeldError as e:
        print(f"error: {e}", file=sys.stderr)
        return HELD_EXIT_CODE
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in STORAGE_ERRORS:
            raise
        print(
            f"error: {e.strerror} writing {e.filename or cfg.results_dir}; free space or pass results_dir=",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("interrupted; continue with --resume", file=sys.stderr)
        return 130
    final = summary.get("final_eval", {})
    print(
        f"done: {cfg.run_name}  success {final.get('eval_success', float('nan')):.3f}  "
        f"return {final.get('eval_return', float('nan')):.3f}  -> {Path(cfg.results_dir) / cfg.run_name}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
