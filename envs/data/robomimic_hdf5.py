"""Read robomimic's HDF5 demonstrations (`data/demo_i/{obs/<key>, actions,
rewards, dones}`, `data.attrs["env_args"]`) into trajectories of chosen
low-dim keys, refusing files recorded on another env, robot or controller."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from envs.data.loaders import DatasetError, Trajectories
from envs.normalizer import MinMaxNormalizer
from envs.robomimic import RobomimicTask


def is_robomimic_file(f) -> bool:
    return "data" in f and "env_args" in f["data"].attrs


def _controller_types(controller: dict[str, Any]) -> list[str]:
    """Arm controller types in either robosuite layout: <=1.4's flat {"type": "OSC_POSE", ...} or 1.5's
    composite {"type": "BASIC", "body_parts": {"right": {...}}} (or body_parts.arms.right)."""
    if "body_parts" not in controller:
        return [controller.get("type")]
    parts = controller["body_parts"]
    arms = parts.get("arms", parts)
    return [arms[side].get("type") for side in ("right", "left") if side in arms]


def check_env_args(env_args: dict[str, Any], task: RobomimicTask, path: Path) -> None:
    name = env_args.get("env_name")
    if name != task.env_name:
        raise DatasetError(f"{path} was recorded on {name!r}; task {task.name!r} needs a {task.env_name!r} dataset")
    kwargs = env_args.get("env_kwargs", {})
    robots = kwargs.get("robots")
    robots = [robots] if isinstance(robots, str) else list(robots or [])
    if robots != list(task.robots):
        raise DatasetError(f"{path} was recorded with robots {robots}; task {task.name!r} needs {list(task.robots)}")
    controller = kwargs.get("controller_configs") or {}
    types = _controller_types(controller)
    if not types or any(t != "OSC_POSE" for t in types):
        raise DatasetError(
            f"{path} was recorded with arm controller(s) {types}; task {task.name!r} acts through OSC_POSE "
            "(delta end-effector pose), as robomimic's datasets do"
        )
    delta = controller.get("control_delta", True) if "body_parts" not in controller else True
    if not delta:
        raise DatasetError(f"{path} records absolute OSC_POSE actions; task {task.name!r} takes delta actions")
    if int(kwargs.get("control_freq", 20)) != 20:
        raise DatasetError(f"{path} was recorded at {kwargs.get('control_freq')} Hz; task {task.name!r} runs at 20 Hz")


def _demo_order(name: str) -> int:
    match = re.fullmatch(r"demo_(\d+)", name)
    return int(match.group(1)) if match else -1


def load_robomimic_hdf5(path: str | Path, task: RobomimicTask, obs_keys: tuple[str, ...] | None = None) -> Trajectories:
    """Every demo of `path`, observations concatenated from `obs_keys` (default: SPEC 5's), normalised to
    [-1, 1] with the data's own min/max."""
    import h5py

    path, obs_keys = Path(path), tuple(obs_keys or task.obs_keys)
    with h5py.File(path, "r") as f:
        if not is_robomimic_file(f):
            raise DatasetError(f"{path} is not a robomimic dataset (no data group with env_args)")
        check_env_args(json.loads(f["data"].attrs["env_args"]), task, path)
        names = sorted((n for n in f["data"] if _demo_order(n) >= 0), key=_demo_order)
        if not names:
            raise DatasetError(f"{path} holds no demo_<i> groups")
        states, actions, lengths, successes = [], [], [], 0
        for name in names:
            demo = f["data"][name]
            have = sorted(demo["obs"].keys())
            missing = [k for k in obs_keys if k not in demo["obs"]]
            if missing:
                raise DatasetError(
                    f"{path}: {name} has no observation keys {missing}; its keys are {have}. "
                    f"Task {task.name!r} uses {list(task.obs_keys)} by default (obs_keys= to choose others)"
                )
            states.append(
                np.concatenate([np.asarray(demo["obs"][k]).reshape(len(demo["actions"]), -1) for k in obs_keys], 1)
            )
            actions.append(np.asarray(demo["actions"], np.float64))
            lengths.append(len(actions[-1]))
            successes += bool(np.max(demo["rewards"], initial=0.0) >= 1.0) if "rewards" in demo else 1
    if successes == 0:
        raise DatasetError(
            f"{path}: none of its {len(names)} demos reaches the task's success reward (1); "
            "pre-training needs successful demonstrations"
        )
    act = np.concatenate(actions)
    if act.shape[1] != task.act_dim:
        raise DatasetError(f"{path} has {act.shape[1]}-dim actions; task {task.name!r} takes {task.act_dim}")
    obs = np.concatenate(states)
    normalizer = MinMaxNormalizer(obs.min(0), obs.max(0), act.min(0), act.max(0))
    return Trajectories(
        normalizer.normalize_obs(obs).astype(np.float32),
        normalizer.normalize_action(act).astype(np.float32),
        np.asarray(lengths, np.int64),
        normalizer,
        path,
    )
