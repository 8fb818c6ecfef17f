"""Min/max normaliser to [-1, 1]; saved inside every checkpoint so a policy
always sees observations scaled the way it was trained."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

_EPS = 1e-6  # the reference's processed datasets use the same guard


@dataclass
class MinMaxNormalizer:
    obs_min: np.ndarray
    obs_max: np.ndarray
    action_min: np.ndarray
    action_max: np.ndarray

    def __post_init__(self):
        for name in ("obs_min", "obs_max", "action_min", "action_max"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.float32))

    @property
    def obs_dim(self) -> int:
        return int(self.obs_min.shape[-1])

    @property
    def act_dim(self) -> int:
        return int(self.action_min.shape[-1])

    def normalize_obs(self, obs: np.ndarray) -> np.ndarray:
        return (2 * (obs - self.obs_min) / (self.obs_max - self.obs_min + _EPS) - 1).astype(np.float32)

    def unnormalize_obs(self, obs: np.ndarray) -> np.ndarray:
        return ((obs + 1) / 2 * (self.obs_max - self.obs_min + _EPS) + self.obs_min).astype(np.float32)

    def normalize_action(self, action: np.ndarray) -> np.ndarray:
        span = self.action_max - self.action_min + _EPS
        return (2 * (action - self.action_min) / span - 1).astype(np.float32)

    def unnormalize_action(self, action: np.ndarray) -> np.ndarray:
        span = self.action_max - self.action_min + _EPS
        return ((action + 1) / 2 * span + self.action_min).astype(np.float32)

    def to_dict(self) -> dict[str, list[float]]:
        return {k: getattr(self, k).tolist() for k in ("obs_min", "obs_max", "action_min", "action_max")}

    @classmethod
    def from_dict(cls, d: dict) -> MinMaxNormalizer:
        return cls(d["obs_min"], d["obs_max"], d["action_min"], d["action_max"])

    @classmethod
    def from_npz(cls, path: str | Path) -> MinMaxNormalizer:
        with np.load(path) as f:
            return cls(f["obs_min"], f["obs_max"], f["action_min"], f["action_max"])
