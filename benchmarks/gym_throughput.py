"""How much the harness costs on top of the simulator, on a Gym task.

    python benchmarks/gym_throughput.py --run results/gym_mini/dppo_hopper_s0 [--envs 40] [--seconds 20]

(1) bare vectorised stepping: gymnasium's SyncVectorEnv of `--envs` raw MuJoCo
    envs with random actions (no policy, no wrappers), env steps per second;
(2) the whole fine-tuning loop of a finished run: env steps / wall-clock of
    its last metrics row (everything: sampling, stepping through the wrappers,
    updates and evaluations), with the split of that time;
and their ratio. Both on this machine, measured one after the other.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from envs.tasks import get_task


def bare_steps_per_second(env_id: str, n_envs: int, seconds: float) -> float:
    venv = gym.vector.SyncVectorEnv([lambda: gym.make(env_id)] * n_envs)
    venv.reset(seed=0)
    rng = np.random.default_rng(0)
    low, high = venv.single_action_space.low, venv.single_action_space.high
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        venv.step(rng.uniform(low, high, size=(n_envs, *low.shape)).astype(np.float32))
        steps += n_envs
    rate = steps / (time.perf_counter() - t0)
    venv.close()
    return rate


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a finished fine-tuning run directory")
    p.add_argument("--envs", type=int, default=None, help="default: the run's train.n_envs")
    p.add_argument("--seconds", type=float, default=20.0)
    args = p.parse_args()
    run = Path(args.run)
    cfg = json.loads((run / "config.json").read_text())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    task = get_task(cfg["task"])
    env_id = task.make_raw_env().spec.id
    n_envs = args.envs or cfg["train"]["n_envs"]

    loop_rate = rows[-1]["env_steps"] / rows[-1]["wall_time"]
    split = {k: float(np.sum([r[k] for r in rows])) for k in ("time_sample", "time_env", "time_update")}
    total = rows[-1]["wall_time"]
    bare = bare_steps_per_second(env_id, n_envs, args.seconds)
    print(f"run {run} ({cfg['method']} {cfg['task']}, {len(rows)} iterations, {rows[-1]['env_steps']} env steps)")
    print(f"| measure | env steps / s |\n|---|---:|\n| bare {env_id} x{n_envs}, random actions | {bare:,.0f} |")
    print(f"| whole fine-tuning loop | {loop_rate:,.0f} |")
    print(f"\nratio bare / loop: {bare / loop_rate:.1f}x")
    shares = ", ".join(f"{k[5:]} {v / total:.0%}" for k, v in split.items())
    rest = 1 - sum(split.values()) / total
    print(f"loop wall-clock {total / 60:.1f} min: {shares}, evaluation and the rest {rest:.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
