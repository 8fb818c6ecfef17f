"""Generate Robomimic-style multi-operator demonstrations with scripted controllers.

    python -m envs.data.robomimic_demos --task can [--demos 300] [--workers N] [--out DIR]

Each episode draws an `Operator` (speed, path, pauses, corrections, noise),
runs the task's script on a seeded env and is kept only if the task succeeds.
Kept demos are written in robomimic's HDF5 layout (`demo.hdf5`: `data/demo_i/
{obs/<key>, actions, rewards, dones, states}`, `data.attrs["env_args"]`) and in
the reference's npz layout (`train.npz` + `normalization.npz`) with SPEC 5's
low-dim keys, then `provenance.json` last (a folder with it is complete).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from envs.data.loaders import DatasetError, write_provenance, write_reference_npz

# robomimic's HDF5 `env_args["type"]` for robosuite envs (robomimic/envs/env_base.py EnvType.ROBOSUITE_TYPE).
ROBOSUITE_ENV_TYPE = 1
# Steps a demonstrator keeps still after success, as robomimic's operators end their demos shortly after.
SETTLE_STEPS = 5


@dataclass
class Demo:
    seed: int
    obs: dict[str, np.ndarray]  # key -> (T, d), every low-dim key robosuite gives
    actions: np.ndarray  # (T, Da)
    rewards: np.ndarray  # (T,)
    states: np.ndarray  # (T, n_state) MuJoCo state before each action
    operator: dict[str, Any]

    def __len__(self) -> int:
        return len(self.actions)


def lowdim_obs(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """robosuite's observation dict under robomimic's names (`object-state` is `object`), images and the
    concatenated `*proprio-state` vectors left out."""
    out = {}
    for key, value in raw.items():
        if key.endswith("proprio-state") or key.endswith("_image") or key.endswith("_depth"):
            continue
        out["object" if key == "object-state" else key] = np.atleast_1d(np.asarray(value, np.float64))
    return out


def run_episode(task: str, seed: int, env=None) -> tuple[Demo | None, int]:
    """One scripted episode from `seed` (placement, operator and noise). Returns (demo or None, steps)."""
    from envs.data.demonstrators import get_script
    from envs.data.demonstrators.base import Operator, Scripter, with_pauses
    from envs.robomimic import RobomimicEnv

    env = env or RobomimicEnv(task)
    rng = np.random.default_rng([seed, 1])
    operator = Operator.sample(rng)
    env.reset(seed=seed)
    s = Scripter(len(env.task.robots), operator, rng, [np.asarray(r.base_ori) for r in env.env.robots])
    s.obs = env.raw_obs()
    actions_iter = with_pauses(get_script(task)(s), s)
    obs, acts, rews, states = [], [], [], []
    success_at = None
    for t in range(env.task.max_episode_steps):
        act = next(actions_iter, None)
        if act is None:
            act = np.zeros(env.action_space.shape)
            act[6::7] = s.grip
        obs.append(lowdim_obs(s.obs))
        states.append(env.sim_state())
        _, reward, _, _, info = env.step(act)
        acts.append(np.asarray(act, np.float64))
        rews.append(reward)
        s.obs = env.raw_obs()
        if info["success"] and success_at is None:
            success_at = t
        if success_at is not None and (t - success_at >= SETTLE_STEPS or reward == 0.0):
            break
    n = len(acts)
    if success_at is None or rews[-1] != 1.0:
        return None, n
    demo = Demo(
        seed=seed,
        obs={k: np.stack([o[k] for o in obs]) for k in obs[0]},
        actions=np.stack(acts),
        rewards=np.asarray(rews),
        states=np.stack(states),
        operator=operator.to_dict(),
    )
    return demo, n


_WORKER_ENVS: dict = {}  # one env per task in each worker process, built on its first job


def _worker(task: str, seeds: list[int]) -> list[tuple[int, Demo | None, int]]:
    from envs.robomimic import RobomimicEnv

    if task not in _WORKER_ENVS:
        _WORKER_ENVS[task] = RobomimicEnv(task)
    return [(seed, *run_episode(task, seed, _WORKER_ENVS[task])) for seed in seeds]


def env_args(task: str) -> dict[str, Any]:
    """robomimic's `data.attrs["env_args"]`: env name, type and the kwargs robosuite.make got."""
    from envs.robomimic import ROBOMIMIC_TASKS, env_kwargs, versions

    spec = ROBOMIMIC_TASKS[task]
    return {
        "env_name": spec.env_name,
        "env_version": versions()["robosuite"],
        "type": ROBOSUITE_ENV_TYPE,
        "env_kwargs": env_kwargs(spec),
    }


def write_hdf5(path: Path, task: str, demos: list[Demo], meta: dict[str, Any]) -> None:
    import h5py

    tmp = path.with_suffix(".hdf5.tmp")
    with h5py.File(tmp, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps(env_args(task))
        data.attrs["total"] = int(sum(len(d) for d in demos))
        data.attrs["generator"] = json.dumps(meta)
        for i, d in enumerate(demos):
            g = data.create_group(f"demo_{i}")
            g.attrs["num_samples"] = len(d)
            g.attrs["seed"] = d.seed
            g.attrs["operator"] = json.dumps(d.operator)
            for key, values in d.obs.items():
                g.create_dataset(f"obs/{key}", data=values, compression="gzip")
            g.create_dataset("actions", data=d.actions)
            g.create_dataset("rewards", data=d.rewards)
            dones = np.zeros(len(d), np.int64)
            dones[-1] = 1
            g.create_dataset("dones", data=dones)
            g.create_dataset("states", data=d.states, compression="gzip")
        mask = f.create_group("mask")
        mask.create_dataset("train", data=np.array([f"demo_{i}" for i in range(len(demos))], dtype="S"))
    os.replace(tmp, path)


def generate(
    task: str, out_dir: str | Path, n_demos: int = 300, workers: int | None = None, seed: int = 0, progress=True
) -> dict[str, Any]:
    """Run seeded episodes in `workers` processes until `n_demos` succeed; write the dataset; return provenance."""
    from tqdm import tqdm

    from envs.robomimic import ROBOMIMIC_TASKS, versions

    spec = ROBOMIMIC_TASKS[task]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    workers = workers or max(1, min(len(os.sched_getaffinity(0)), 8))
    batch = 4  # episodes per job: keeps the env build cost small and the progress bar moving
    start = time.time()
    kept: dict[int, Demo] = {}
    tried, steps, next_seed = 0, 0, seed * 1_000_000
    bar = tqdm(total=n_demos, desc=f"{task} demos", unit="demo", disable=not progress, file=sys.stderr)
    with ProcessPoolExecutor(workers) as pool:
        pending = set()
        while len(kept) < n_demos:
            while len(pending) < 2 * workers and tried + batch * len(pending) < 20 * n_demos + 100:
                pending.add(pool.submit(_worker, task, list(range(next_seed, next_seed + batch))))
                next_seed += batch
            if not pending:
                break
            done = next(as_completed(pending))
            pending.discard(done)
            for s, demo, n in done.result():
                tried += 1
                steps += n
                if demo is not None and len(kept) < n_demos:
                    kept[s] = demo
                    bar.update(1)
            bar.set_postfix(success=f"{len(kept) / max(tried, 1):.2f}")
        for f in pending:
            f.cancel()
    bar.close()
    if not kept:
        raise DatasetError(
            f"the scripted {task} demonstrator succeeded in none of {tried} episodes; no dataset written"
        )
    demos = [kept[s] for s in sorted(kept)]
    meta = {
        "generator": "envs.data.robomimic_demos (scripted multi-operator demonstrator)",
        "task": task,
        "env_name": spec.env_name,
        "seed": seed,
        "episodes_tried": tried,
        "scripted_success_rate": len(kept) / tried,
        "demos": len(demos),
        "mean_length": float(np.mean([len(d) for d in demos])),
        "obs_keys": list(spec.obs_keys),
        "versions": versions(),
        "workers": workers,
        "seconds": round(time.time() - start, 1),
        "env_steps": steps,
    }
    write_hdf5(out_dir / "demo.hdf5", task, demos, meta)
    states = np.concatenate([np.concatenate([d.obs[k] for k in spec.obs_keys], 1) for d in demos])
    write_reference_npz(
        out_dir, states, np.concatenate([d.actions for d in demos]), np.array([len(d) for d in demos], np.int64)
    )
    write_provenance(out_dir, meta)
    return meta


def main(argv: list[str] | None = None) -> None:
    from envs.robomimic import ROBOMIMIC_TASKS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True, choices=sorted(ROBOMIMIC_TASKS))
    p.add_argument("--demos", type=int, default=300)
    p.add_argument("--workers", type=int, default=None, help="processes (default: the CPUs this process may use)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="folder (default: $DPPO_DATA_DIR/<task>, i.e. data/<task>)")
    args = p.parse_args(argv)
    from envs.tasks import data_dir

    out = Path(args.out) if args.out else data_dir() / args.task
    meta = generate(args.task, out, args.demos, args.workers, args.seed)
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
