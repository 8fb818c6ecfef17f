"""Dataset loading: the reference implementation's processed `train.npz`
(`states, actions, traj_lengths`, already normalised to [-1, 1], with the
min/max statistics in a sibling `normalization.npz`)."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from envs.normalizer import MinMaxNormalizer


class DatasetError(ValueError):
    """A dataset is missing or does not fit the task."""


@dataclass
class Trajectories:
    states: np.ndarray  # (sum T, Do), normalised
    actions: np.ndarray  # (sum T, Da), normalised
    traj_lengths: np.ndarray  # (n,)
    normalizer: MinMaxNormalizer
    path: Path

    @property
    def n_transitions(self) -> int:
        return int(self.traj_lengths.sum())

    @property
    def n_episodes(self) -> int:
        return len(self.traj_lengths)

    def episodes(self, keep: np.ndarray) -> Trajectories:
        """Only the trajectories at indices `keep` (in the dataset's order); the normaliser stays the dataset's."""
        keep = np.sort(np.asarray(keep, dtype=int))
        starts = np.concatenate([[0], np.cumsum(self.traj_lengths)[:-1]])
        rows = np.concatenate([np.arange(starts[i], starts[i] + self.traj_lengths[i]) for i in keep])
        return dataclasses.replace(
            self, states=self.states[rows], actions=self.actions[rows], traj_lengths=self.traj_lengths[keep]
        )

    def chunks(self, horizon: int) -> tuple[np.ndarray, np.ndarray]:
        """(obs_t, actions_{t..t+Ta-1}) for every t whose chunk fits inside its trajectory."""
        obs, acts = [], []
        start = 0
        for T in self.traj_lengths:
            for t in range(start, start + int(T) - horizon + 1):
                obs.append(self.states[t])
                acts.append(self.actions[t : t + horizon])
            start += int(T)
        if not obs:
            raise DatasetError(f"{self.path}: no trajectory is at least {horizon} steps long")
        return np.stack(obs).astype(np.float32), np.stack(acts).astype(np.float32)


def load_npz(path: str | Path, obs_dim: int, act_dim: int) -> Trajectories:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset file {path} does not exist; pass dataset=/path/to/train.npz or generate it")
    norm_path = path.with_name("normalization.npz")
    if not norm_path.is_file():
        raise DatasetError(
            f"{path} needs {norm_path.name} beside it (keys obs_min, obs_max, action_min, action_max), "
            "as the reference's processed datasets have"
        )
    with np.load(path) as f:
        missing = {"states", "actions", "traj_lengths"} - set(f.files)
        if missing:
            raise DatasetError(
                f"{path} lacks keys {sorted(missing)}; expected states (N, {obs_dim}), "
                f"actions (N, {act_dim}), traj_lengths (n_traj,)"
            )
        states, actions, lengths = f["states"], f["actions"], f["traj_lengths"].astype(np.int64)
    if states.ndim != 2 or states.shape[1] != obs_dim or actions.ndim != 2 or actions.shape[1] != act_dim:
        raise DatasetError(
            f"{path} has states {states.shape} and actions {actions.shape}; "
            f"this task needs states (N, {obs_dim}) and actions (N, {act_dim})"
        )
    if lengths.sum() != len(states) or len(states) != len(actions):
        raise DatasetError(f"{path}: traj_lengths sum to {lengths.sum()} but there are {len(states)} states")
    normalizer = MinMaxNormalizer.from_npz(norm_path)
    if normalizer.obs_dim != obs_dim or normalizer.act_dim != act_dim:
        raise DatasetError(f"{norm_path} has statistics for obs {normalizer.obs_dim} / action {normalizer.act_dim}")
    return Trajectories(states.astype(np.float32), actions.astype(np.float32), lengths, normalizer, path)


def split_trajectories(
    observations: np.ndarray, actions: np.ndarray, terminals: np.ndarray, timeouts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut D4RL's flat arrays into trajectories at terminals and timeouts.

    A trailing piece with neither (a rollout cut off by the dataset's size) is kept as a trajectory.
    Returns (states, actions, traj_lengths) with the states and actions unchanged in order.
    """
    ends = np.flatnonzero(np.asarray(terminals, bool) | np.asarray(timeouts, bool))
    bounds = [*(ends + 1).tolist()]
    if not bounds or bounds[-1] != len(observations):
        bounds.append(len(observations))
    lengths = np.diff([0, *bounds]).astype(np.int64)
    return observations, actions, lengths[lengths > 0]


def write_reference_npz(
    out_dir: str | Path,
    states: np.ndarray,
    actions: np.ndarray,
    traj_lengths: np.ndarray,
    extra: dict[str, np.ndarray] | None = None,
) -> MinMaxNormalizer:
    """Write `train.npz` (normalised to [-1, 1] with the data's own min/max, plus any `extra`
    arrays) and `normalization.npz` in the reference's layout, each atomically."""
    out_dir = Path(out_dir)
    normalizer = MinMaxNormalizer(states.min(0), states.max(0), actions.min(0), actions.max(0))
    train = {
        "states": normalizer.normalize_obs(states),
        "actions": normalizer.normalize_action(actions),
        "traj_lengths": np.asarray(traj_lengths, np.int64),
        **(extra or {}),
    }
    for name, arrays in (("normalization.npz", normalizer_arrays(normalizer)), ("train.npz", train)):
        tmp = out_dir / (name + ".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, out_dir / name)
    return normalizer


def write_provenance(out_dir: str | Path, provenance: dict) -> None:
    """Written last and atomically: a dataset folder with provenance.json is complete."""
    path = Path(out_dir) / "provenance.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(provenance, indent=2) + "\n")
    os.replace(tmp, path)


def normalizer_arrays(n: MinMaxNormalizer) -> dict[str, np.ndarray]:
    return {"obs_min": n.obs_min, "obs_max": n.obs_max, "action_min": n.action_min, "action_max": n.action_max}


D4RL_KEYS = ("observations", "actions", "terminals", "timeouts")


def load_d4rl_hdf5(path: str | Path, obs_dim: int, act_dim: int) -> Trajectories:
    """D4RL's HDF5 (`observations, actions, rewards, terminals, timeouts`), normalised with its own min/max."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset file {path} does not exist; pass dataset=/path/to/<task>-medium-v2.hdf5")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DatasetError(f"{path} is not a readable HDF5 file ({e})") from None
    with f:
        missing = [k for k in D4RL_KEYS if k not in f]
        if missing:
            raise DatasetError(
                f"{path} lacks D4RL keys {missing}; expected observations (N, {obs_dim}), actions (N, {act_dim}), "
                "rewards (N,), terminals (N,), timeouts (N,)"
            )
        obs, act = f["observations"][:], f["actions"][:]
        terminals, timeouts = f["terminals"][:], f["timeouts"][:]
    if obs.ndim != 2 or obs.shape[1] != obs_dim or act.ndim != 2 or act.shape[1] != act_dim or len(obs) != len(act):
        raise DatasetError(
            f"{path} has observations {obs.shape} and actions {act.shape}; "
            f"this task needs observations (N, {obs_dim}) and actions (N, {act_dim})"
        )
    states, actions, lengths = split_trajectories(obs, act, terminals, timeouts)
    normalizer = MinMaxNormalizer(states.min(0), states.max(0), actions.min(0), actions.max(0))
    return Trajectories(
        normalizer.normalize_obs(states), normalizer.normalize_action(actions), lengths, normalizer, path
    )


REGENERATE = "if it is a task's default dataset, delete its folder and the next run generates it again"


def _is_robomimic_hdf5(path: str | Path) -> bool:
    import h5py

    from envs.data.robomimic_hdf5 import is_robomimic_file

    if not Path(path).is_file():
        return False
    with h5py.File(path, "r") as f:
        return is_robomimic_file(f)


def load_dataset(path: str | Path, obs_dim: int, act_dim: int, robomimic=None, obs_keys=None) -> Trajectories:
    """Dispatch on the file: robomimic HDF5 (a `data` group with `env_args`; needs the task's `robomimic`
    spec, `obs_keys` choose the observation), D4RL HDF5 (.hdf5/.h5) or the reference's train.npz. A file
    that can't be read, or holds NaN or infinite values, is a DatasetError naming it and how to get a good one."""
    suffix = Path(path).suffix.lower()
    if suffix not in (".hdf5", ".h5", ".npz"):
        raise DatasetError(
            f"{path}: unknown dataset format {suffix!r}; use a robomimic or D4RL .hdf5 or the reference's train.npz"
        )
    try:
        if suffix == ".npz":
            data = load_npz(path, obs_dim, act_dim)
        elif _is_robomimic_hdf5(path):
            if robomimic is None:
                raise DatasetError(f"{path} is a robomimic dataset; use it with a Robomimic task (lift, can, ...)")
            from envs.data.robomimic_hdf5 import load_robomimic_hdf5

            data = load_robomimic_hdf5(path, robomimic, obs_keys)
            if data.states.shape[1] != obs_dim:
                raise DatasetError(f"{path}: keys {obs_keys} give {data.states.shape[1]} dims, expected {obs_dim}")
        else:
            data = load_d4rl_hdf5(path, obs_dim, act_dim)
    except DatasetError:
        raise
    except Exception as e:  # truncated, empty or foreign files fail inside numpy, zipfile or h5py
        raise DatasetError(f"{path} can't be read ({type(e).__name__}: {e}); {REGENERATE}") from None
    for name, values in (("states", data.states), ("actions", data.actions)):
        bad = int(np.size(values) - np.isfinite(values).sum())
        if bad:
            raise DatasetError(f"{path} has {bad} non-finite (NaN or infinite) values in its {name}; {REGENERATE}")
    return data
