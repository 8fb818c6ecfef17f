"""Robosuite's cost per core on each Robomimic task, and what the fine-tuning loop makes of it.

    python benchmarks/robomimic_throughput.py [--tasks lift can square transport] [--seconds 20] [--run RUN_DIR]

(1) per core: one RobomimicEnv in this process, random actions, env steps/s;
(2) all cores: `--workers` envs in subprocesses (gymnasium's AsyncVectorEnv, as
    train.vector_env=async/auto uses), env steps/s in all and per core;
(3) with --run, a finished fine-tuning run (e.g. Can): its env steps / wall-clock
    (sampling, stepping, updates and evaluations), the split of that time, and
    the ratio of the bare all-core rate to it.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from envs.robomimic import ROBOMIMIC_TASKS, RobomimicEnv
from envs.vector import make_vector_env, usable_cpus


def _steps_per_second(step, act_shape: tuple[int, ...], n_per_step: int, seconds: float) -> float:
    rng = np.random.default_rng(0)
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step(rng.uniform(-1, 1, act_shape))
        steps += n_per_step
    return steps / (time.perf_counter() - t0)


def one_core(task: str, seconds: float) -> float:
    env = RobomimicEnv(task)
    env.reset(seed=0)
    rate = _steps_per_second(env.step, env.action_space.shape, 1, seconds)
    env.close()
    return rate


def all_cores(task: str, workers: int, seconds: float) -> float:
    venv = make_vector_env([functools.partial(RobomimicEnv, task)] * workers, "async")
    venv.reset(seed=0)
    rate = _steps_per_second(venv.step, (workers, *venv.single_action_space.shape), workers, seconds)
    venv.close()
    return rate


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=list(ROBOMIMIC_TASKS), choices=list(ROBOMIMIC_TASKS))
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--workers", type=int, default=usable_cpus())
    p.add_argument("--run", default=None, help="a finished fine-tuning run directory to compare with")
    args = p.parse_args()
    print(f"{os.cpu_count()} CPUs, {usable_cpus()} usable; {args.seconds:.0f} s per measurement")
    print(f"| task | env steps/s, 1 core | all cores (x{args.workers} envs) | per core |\n|---|---:|---:|---:|")
    bare = {}
    for task in args.tasks:
        single = one_core(task, args.seconds)
        multi = all_cores(task, args.workers, args.seconds)
        bare[task] = multi
        print(f"| {task} | {single:,.0f} | {multi:,.0f} | {multi / args.workers:,.0f} |")
    if args.run:
        run = Path(args.run)
        cfg = json.loads((run / "config.json").read_text())
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        total = rows[-1]["wall_time"]
        loop = rows[-1]["env_steps"] / total
        split = {k: float(np.sum([r[k] for r in rows])) for k in ("time_sample", "time_env", "time_update")}
        shares = ", ".join(f"{k[5:]} {v / total:.0%}" for k, v in split.items())
        rest = 1 - sum(split.values()) / total
        print(
            f"\nrun {run} ({cfg['method']} {cfg['task']}, {len(rows)} iterations, {rows[-1]['env_steps']} env steps, "
            f"{cfg['train']['n_envs']} envs, vector_env={cfg['train']['vector_env']})"
        )
        print(f"whole fine-tuning loop: {loop:,.0f} env steps/s; {total / 60:.1f} min: {shares}, evaluation {rest:.0%}")
        if cfg["task"] in bare:
            print(f"ratio bare all-core / loop: {bare[cfg['task']] / loop:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
