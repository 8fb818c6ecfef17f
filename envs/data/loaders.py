"""Dataset loading: the reference implementation's processed `train.npz`
(`states, actions, traj_lengths`, already normalised to [-1, 1], with the
min/max statistics in a sibling `normalization.npz`)."""

from __future__ import annotations

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
