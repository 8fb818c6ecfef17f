"""Robomimic's four low-dim tasks on robosuite 1.5 (paper Sec. 5.1, SPEC 5).

Panda arms under the OSC pose controller robomimic's datasets were recorded
with (delta pose in the robot base frame, 20 Hz), low-dim observations made
of exactly SPEC 5's keys, reward 1 on every step the task is solved, success
sticky once reached, and episodes that end only at the task's step limit.
"""

from __future__ import annotations

import copy
import functools
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

# robosuite 1.5.2 builds and steps these tasks with MuJoCo 3.4 up to 3.9.x; 3.10 raises a TypeError and
# 3.13 on trip a joint-type assertion inside robosuite (checked here, see the README).
MUJOCO_RANGE = ((3, 4), (3, 10))  # [low, high)
ROBOSUITE_RANGE = ((1, 5), (1, 6))


class UnsupportedVersionError(RuntimeError):
    """The installed MuJoCo or robosuite is outside the range the Robomimic suite runs on."""


@dataclass(frozen=True)
class RobomimicTask:
    name: str
    env_name: str  # robosuite's class name, as robomimic's env_args record it
    robots: tuple[str, ...]
    obs_keys: tuple[str, ...]  # robomimic's low-dim keys, in SPEC 5's order
    obs_dim: int
    act_dim: int
    max_episode_steps: int
    act_steps: int  # Ta


def _keys(n_robots: int) -> tuple[str, ...]:
    per_robot = ("eef_pos", "eef_quat", "gripper_qpos")
    return tuple(f"robot{i}_{k}" for i in range(n_robots) for k in per_robot) + ("object",)


ROBOMIMIC_TASKS: dict[str, RobomimicTask] = {
    t.name: t
    for t in (
        RobomimicTask("lift", "Lift", ("Panda",), _keys(1), 19, 7, 300, 4),
        RobomimicTask("can", "PickPlaceCan", ("Panda",), _keys(1), 23, 7, 300, 4),
        RobomimicTask("square", "NutAssemblySquare", ("Panda",), _keys(1), 23, 7, 400, 4),
        RobomimicTask("transport", "TwoArmTransport", ("Panda", "Panda"), _keys(2), 59, 14, 800, 8),
    )
}

# robosuite's default OSC_POSE arm controller (controllers/config/default/parts/osc_pose.json), which is
# what robomimic's datasets record in env_args: +-5 cm and +-0.5 rad per step at full input.
OSC_POSE = {
    "type": "OSC_POSE",
    "input_max": 1,
    "input_min": -1,
    "output_max": [0.05, 0.05, 0.05, 0.5, 0.5, 0.5],
    "output_min": [-0.05, -0.05, -0.05, -0.5, -0.5, -0.5],
    "kp": 150,
    "damping_ratio": 1,
    "impedance_mode": "fixed",
    "kp_limits": [0, 300],
    "damping_ratio_limits": [0, 10],
    "position_limits": None,
    "orientation_limits": None,
    "uncouple_pos_ori": True,
    "input_type": "delta",
    "input_ref_frame": "base",
    "interpolation": None,
    "ramp_ratio": 0.2,
    "gripper": {"type": "GRIP"},
}


def controller_config() -> dict[str, Any]:
    """robosuite 1.5's BASIC composite controller with one OSC_POSE arm, in the flattened form
    `load_composite_controller_config` returns and robomimic 1.5-era datasets store."""
    return {"type": "BASIC", "body_parts": {"right": copy.deepcopy(OSC_POSE)}}


def env_kwargs(task: RobomimicTask) -> dict[str, Any]:
    """The keyword arguments robosuite.make gets, recorded verbatim in HDF5 `env_args`."""
    return {
        "robots": list(task.robots),
        "controller_configs": controller_config(),
        "has_renderer": False,
        "has_offscreen_renderer": False,
        "ignore_done": True,
        "use_object_obs": True,
        "use_camera_obs": False,
        "camera_depths": False,
        "control_freq": 20,
        "reward_shaping": False,
        "reward_scale": 1.0,
        "hard_reset": False,
        "lite_physics": True,
    }


def _version(text: str) -> tuple[int, int]:
    major, minor = text.split(".")[:2]
    return int(major), int(minor)


def check_versions(installed: dict[str, str] | None = None) -> None:
    """One clear error when MuJoCo or robosuite (`installed`, default: this environment's) is outside the range
    robosuite 1.5.2 runs the tasks on."""
    import importlib.metadata as md

    for package, (low, high) in (("mujoco", MUJOCO_RANGE), ("robosuite", ROBOSUITE_RANGE)):
        wanted = f"{package}>={'.'.join(map(str, low))},<{'.'.join(map(str, high))}"
        try:
            have = installed[package] if installed is not None else md.version(package)
        except (KeyError, md.PackageNotFoundError):
            raise UnsupportedVersionError(
                f"the Robomimic tasks need {wanted}, which is not installed; pip install -e . installs it"
            ) from None
        if not low <= _version(have) < high:
            raise UnsupportedVersionError(
                f"{package} {have} is installed, but the Robomimic tasks run on {wanted} "
                f"(robosuite 1.5.2 fails on MuJoCo 3.10 and later); pip install '{wanted}'"
            )


def import_robosuite():
    check_versions()
    from envs.tasks import choose_offscreen_gl

    choose_offscreen_gl()  # robosuite picks its render backend once, at import
    # On import robosuite warns about optional parts these tasks don't use (a private macro file, extra robot
    # models, whole-body IK for humanoids), in every env subprocess; keep only its errors there, and its
    # warnings and errors after.
    log = logging.getLogger("robosuite_logs")

    def errors_only(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR

    log.addFilter(errors_only)
    try:
        import robosuite
    finally:
        log.removeFilter(errors_only)
    log.setLevel(logging.WARNING)
    for handler in log.handlers:
        handler.setLevel(logging.WARNING)
    return robosuite


def versions() -> dict[str, str]:
    import importlib.metadata as md

    return {p: md.version(p) for p in ("mujoco", "robosuite", "numpy")}


@functools.cache
def obs_key_dims(task: str) -> dict[str, int]:
    """Every low-dim observation key of `task` (robomimic's names) and its size, from one built env."""
    from envs.data.robomimic_demos import lowdim_obs

    env = RobomimicEnv(task)
    try:
        return {k: int(np.size(v)) for k, v in lowdim_obs(env.raw_obs()).items()}
    finally:
        env.close()


def widen_placements(sampler, scale: float) -> None:
    """Scale every uniform placement sampler's x and y ranges about their centres (robosuite's
    UniformRandomSampler, directly or inside a SequentialCompositeSampler)."""
    for s in getattr(sampler, "samplers", {sampler.name: sampler}).values():
        if hasattr(s, "samplers"):
            widen_placements(s, scale)
            continue
        for attr in ("x_range", "y_range"):
            lo, hi = getattr(s, attr)
            mid, half = (lo + hi) / 2, (hi - lo) / 2 * scale
            setattr(s, attr, [mid - half, mid + half])


class RobomimicEnv(gym.Env):
    """One robosuite task as a gymnasium env with a flat low-dim observation.

    `reset(seed=s)` reseeds robosuite's generator (object placement, the
    arms' initial joint noise, the hammer's flip), so a seed reproduces an
    episode exactly.
    `render_size` > 0 turns on offscreen rendering for `render()` (video).
    """

    metadata: ClassVar[dict] = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        task: str | RobomimicTask,
        obs_keys: tuple[str, ...] | None = None,
        render_size: int = 0,
        render_camera: str = "agentview",
    ):
        self.task = ROBOMIMIC_TASKS[task] if isinstance(task, str) else task
        self.obs_keys = tuple(obs_keys or self.task.obs_keys)
        robosuite = import_robosuite()
        kwargs = env_kwargs(self.task)
        if render_size:
            kwargs.update(has_offscreen_renderer=True)
        self.render_mode = "rgb_array" if render_size else None
        self.render_size, self.render_camera = render_size, render_camera
        # seed 0 at construction fixes what robosuite samples once per model (Transport's hammer size), so every
        # process builds the same task; reset(seed=) then draws placements from the same generator
        self.env = robosuite.make(self.task.env_name, horizon=self.task.max_episode_steps, seed=0, **kwargs)
        obs = self.env.reset()
        self._check_keys(obs)
        dim = int(sum(np.size(self._value(obs, k)) for k in self.obs_keys))
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (dim,), np.float64)
        low, high = self.env.action_spec
        self.action_space = gym.spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)
        self._t, self._success = 0, False

    @staticmethod
    def _value(obs: dict[str, np.ndarray], key: str) -> np.ndarray:
        return obs["object-state" if key == "object" else key]

    def _check_keys(self, obs: dict[str, np.ndarray]) -> None:
        known = sorted({"object" if k == "object-state" else k for k in obs})
        missing = [k for k in self.obs_keys if ("object-state" if k == "object" else k) not in obs]
        if missing:
            raise KeyError(f"task {self.task.name!r} has no observation keys {missing}; its low-dim keys are {known}")

    def _flat(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([np.ravel(self._value(obs, k)) for k in self.obs_keys]).astype(np.float64)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            # in place: the placement samplers and objects (Transport's hammer flips) hold this same generator
            self.env.rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state
        self.env.reset()
        self._canonical_quaternions()
        # robosuite's reset returns zeros for observables computed from others (Can's Can_to_robot0_eef_pos);
        # a forced update computes them, as every later step and the recorded demonstrations have them
        obs = self.env._get_observations(force_update=True)
        self._t, self._success = 0, False
        return self._flat(obs), {"success": False}

    def _canonical_quaternions(self) -> None:
        """Free bodies' quaternions with w >= 0. robosuite's Transport reset can place the hammer as q or -q
        depending on the previous episode; both are one pose, but a seed should give one observation."""
        model, data = self.env.sim.model._model, self.env.sim.data._data
        flipped = False
        for j in np.flatnonzero(model.jnt_type == 0):  # mjJNT_FREE: pos (3) then quaternion (w, x, y, z)
            q = data.qpos[model.jnt_qposadr[j] + 3 : model.jnt_qposadr[j] + 7]
            if q[0] < 0:
                q *= -1
                flipped = True
        if flipped:
            self.env.sim.forward()

    def step(self, action: np.ndarray):
        obs, _, _, _ = self.env.step(np.asarray(action, dtype=np.float64))
        self._t += 1
        solved = bool(self.env._check_success())
        self._success |= solved
        truncated = self._t >= self.task.max_episode_steps
        return self._flat(obs), float(solved), False, truncated, {"success": self._success}

    def sim_state(self) -> np.ndarray:
        """MuJoCo's flattened state (time, qpos, qvel), robomimic's `states` entry."""
        return np.asarray(self.env.sim.get_state().flatten())

    def raw_obs(self) -> dict[str, np.ndarray]:
        return self.env._get_observations(force_update=True)

    def render(self) -> np.ndarray:
        if not self.render_size:
            raise RuntimeError("RobomimicEnv was built without offscreen rendering; pass render_size > 0")
        image = self.env.sim.render(camera_name=self.render_camera, width=self.render_size, height=self.render_size)
        return np.ascontiguousarray(image[::-1])  # MuJoCo's offscreen buffer is bottom-up

    def close(self) -> None:
        self.env.close()
