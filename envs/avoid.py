"""Kinematic re-implementation of the D3IL "Avoid" task.

A point end-effector starts near the bottom of the table and has to reach the goal
line (``y > GOAL_Y``) by weaving through three levels of round obstacles.  Which gap
it takes at each level defines its *mode*; the reward only pays for crossing the goal
through one particular level-3 gap, so a multi-modal demonstration set must be
fine-tuned towards a single mode (the DPPO paper's Avoid experiments, Fig. 9).

The policy commands absolute desired positions; the desired position is rate limited
and the actual end-effector follows it with a first-order lag.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

OBSTACLES = np.array(
    [
        [0.5, -0.1],  # level 1
        [0.425, 0.08],  # level 2
        [0.575, 0.08],
        [0.35, 0.26],  # level 3
        [0.5, 0.26],
        [0.65, 0.26],
    ],
    dtype=np.float64,
)
OBSTACLE_RADIUS = 0.03
EE_RADIUS = 0.01
COLLISION_DISTANCE = OBSTACLE_RADIUS + EE_RADIUS
GOAL_Y = 0.35
LEVEL_Y = (-0.1, 0.08, 0.26)
# Obstacle x positions per level; a gap index is the number of these left of x.
_LEVEL_OBSTACLE_X = ((0.5,), (0.425, 0.575), (0.35, 0.5, 0.65))

WORKSPACE_LOW = np.array([0.2, -0.35], dtype=np.float64)
WORKSPACE_HIGH = np.array([0.8, 0.45], dtype=np.float64)
START_CENTRE = np.array([0.5, -0.3], dtype=np.float64)
START_NOISE = np.array([0.02, 0.01], dtype=np.float64)

Mode = tuple[int, int, int]


@dataclass(frozen=True)
class AvoidSetting:
    """Which two modes the demonstrations cover and which level-3 gap is rewarded."""

    demo_modes: tuple[Mode, Mode]
    rewarded_gap: int


# These mirror the reference implementation's settings d56_r12, d57_r12 and d58_r12
# with env "avoiding-m5" (cfg/d3il/finetune/avoid_m{1,2,3}/ft_ppo_diffusion_mlp.yaml
# in irom-princeton/dppo): demonstrations in level-3 modes 5 and 6/7/8, required
# modes 1 and 2 (here g1=1, g2=0), reward only through mode 5 (here level-3 gap 0).
SETTINGS: dict[str, AvoidSetting] = {
    "avoid_m1": AvoidSetting(demo_modes=((1, 0, 0), (1, 0, 1)), rewarded_gap=0),
    "avoid_m2": AvoidSetting(demo_modes=((1, 0, 0), (1, 0, 2)), rewarded_gap=0),
    "avoid_m3": AvoidSetting(demo_modes=((1, 0, 0), (1, 0, 3)), rewarded_gap=0),
}


def get_setting(name: str) -> AvoidSetting:
    """Look up a setting by name, raising ``ValueError`` listing the valid names."""
    try:
        return SETTINGS[name]
    except KeyError:
        valid = ", ".join(sorted(SETTINGS))
        raise ValueError(f"unknown Avoid setting {name!r}; valid settings: {valid}") from None


def gap_index(level: int, x: float) -> int:
    """Index of the gap at ``level`` (1, 2 or 3) that horizontal position ``x`` lies in."""
    if level not in (1, 2, 3):
        raise ValueError(f"level must be 1, 2 or 3, got {level}")
    return sum(1 for ox in _LEVEL_OBSTACLE_X[level - 1] if x >= ox)


def segment_point_distance(a: np.ndarray, b: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Distance from the segment ``a``-``b`` to each point in ``p`` (shape (..., 2))."""
    ab = b - a
    denom = float(ab @ ab)
    if denom == 0.0:
        return np.linalg.norm(p - a, axis=-1)
    t = np.clip(((p - a) @ ab) / denom, 0.0, 1.0)
    closest = a + t[..., None] * ab
    return np.linalg.norm(p - closest, axis=-1)


class AvoidEnv(gym.Env):
    """Point end-effector that must pass three obstacle levels to reach the goal line.

    Observation: ``[desired_x, desired_y, current_x, current_y]`` (float32).
    Action: the next desired position ``[x, y]`` in absolute table coordinates.

    ``reset(options={"start": (x, y)})`` places the end-effector (desired and current
    position) at the given point instead of the random start; demonstration
    generators use this to replay a path from its recorded start.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(
        self,
        setting: str = "avoid_m2",
        max_episode_steps: int = 100,
        tracking_gain: float = 0.6,
        max_desired_step: float = 0.03,
    ) -> None:
        if max_episode_steps < 1:
            raise ValueError("max_episode_steps must be positive")
        if not 0.0 < tracking_gain <= 1.0:
            raise ValueError("tracking_gain must be in (0, 1]")
        if max_desired_step <= 0.0:
            raise ValueError("max_desired_step must be positive")
        self.setting_name = setting
        self.setting = get_setting(setting)
        self.max_episode_steps = max_episode_steps
        self.tracking_gain = float(tracking_gain)
        self.max_desired_step = float(max_desired_step)

        low = WORKSPACE_LOW.astype(np.float32)
        high = WORKSPACE_HIGH.astype(np.float32)
        self.action_space = spaces.Box(low=low, high=high, dtype=np.float32)
        self.observation_space = spaces.Box(
            low=np.concatenate([low, low]),
            high=np.concatenate([high, high]),
            dtype=np.float32,
        )

        self.start_noise = START_NOISE.copy()  # half-width of the random start box (widened for robustness tests)
        self._desired = START_CENTRE.copy()
        self._current = START_CENTRE.copy()
        self._path: list[np.ndarray] = []
        self._gaps = [-1, -1, -1]
        self._steps = 0
        self._collided = False
        self._reached_goal = False
        self._success = False

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start a new episode; ``options["start"]`` overrides the random start."""
        super().reset(seed=seed)
        if options is not None and options.get("start") is not None:
            start = np.asarray(options["start"], dtype=np.float64).reshape(2)
            start = np.clip(start, WORKSPACE_LOW, WORKSPACE_HIGH)
        else:
            start = START_CENTRE + self.np_random.uniform(-1.0, 1.0, size=2) * self.start_noise
        self._desired = start.copy()
        self._current = start.copy()
        self._path = [self._current.copy()]
        self._gaps = [-1, -1, -1]
        self._steps = 0
        self._collided = False
        self._reached_goal = False
        self._success = False
        return self._obs(), self._info()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Move the desired position towards ``action`` and let the end-effector follow."""
        target = np.clip(
            np.asarray(action, dtype=np.float64).reshape(2),
            WORKSPACE_LOW,
            WORKSPACE_HIGH,
        )
        delta = target - self._desired
        dist = float(np.linalg.norm(delta))
        if dist > self.max_desired_step:
            delta *= self.max_desired_step / dist
        self._desired = self._desired + delta

        prev = self._current
        self._current = prev + self.tracking_gain * (self._desired - prev)
        self._path.append(self._current.copy())
        self._steps += 1

        self._record_gaps(prev, self._current)
        reward = 0.0
        if np.any(segment_point_distance(prev, self._current, OBSTACLES) < COLLISION_DISTANCE):
            self._collided = True
        elif self._current[1] > GOAL_Y:
            self._reached_goal = True
            if self._gaps[2] == self.setting.rewarded_gap:
                self._success = True
                reward = 1.0

        terminated = self._collided or self._reached_goal
        truncated = not terminated and self._steps >= self.max_episode_steps
        info = self._info()
        if terminated or truncated:
            # A list, not an array: paths differ in length, and gymnasium's vector
            # envs can only stack equal-shaped arrays into their batched infos.
            info["ee_path"] = [np.asarray(p, dtype=np.float32) for p in self._path]
        return self._obs(), reward, terminated, truncated, info

    @property
    def mode(self) -> Mode:
        """Gaps recorded so far at levels 1-3 (-1 where the level is not yet crossed)."""
        return (self._gaps[0], self._gaps[1], self._gaps[2])

    def _record_gaps(self, prev: np.ndarray, cur: np.ndarray) -> None:
        """Record the gap of every level first crossed upwards by the segment prev->cur."""
        for i, level_y in enumerate(LEVEL_Y):
            if self._gaps[i] == -1 and prev[1] < level_y <= cur[1]:
                # Use the x where the segment meets the level, not the end point.
                t = (level_y - prev[1]) / (cur[1] - prev[1])
                x = prev[0] + t * (cur[0] - prev[0])
                self._gaps[i] = gap_index(i + 1, float(x))

    def _obs(self) -> np.ndarray:
        return np.concatenate([self._desired, self._current]).astype(np.float32)

    def _info(self) -> dict[str, Any]:
        return {
            "success": self._success,
            "collided": self._collided,
            "reached_goal": self._reached_goal,
            "mode": self.mode,
        }
