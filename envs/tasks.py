"""Task registry: what each task is (paper Table A6), how to build its env
and where its dataset comes from. Adding a task = one `TaskSpec` entry."""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np

from common.names import UnknownNameError, unknown
from envs.data.loaders import DatasetError, Trajectories, load_dataset
from envs.normalizer import MinMaxNormalizer
from envs.robomimic import ROBOMIMIC_TASKS, RobomimicTask
from envs.wrappers import ActionChunkWrapper, NormalizeWrapper, RecordFrames

REPO_ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    return Path(os.environ.get("DPPO_DATA_DIR", REPO_ROOT / "data"))


@dataclass(frozen=True)
class TaskSpec:
    name: str
    suite: str
    obs_dim: int
    act_dim: int
    max_episode_steps: int
    horizon: int  # Ta predicted
    act_steps: int  # Ta executed
    sparse_reward: bool
    eval_episodes: int
    eval_deterministic: bool  # SPEC 5: Avoid evaluates with the training noise
    make_raw_env: Callable[[], gym.Env]
    make_dataset: Callable[[Path], None]  # writes train.npz + normalization.npz into a folder
    plot_rollouts: Callable[[dict, Path, str], None] | None = None  # {"paths", "success"} -> PNG
    score: Callable[[float], float] | None = None  # episode return -> normalised score (D4RL)
    pixel_obs: str = "-"
    robomimic: RobomimicTask | None = None  # Robomimic tasks: robosuite env, robots, default obs keys
    obs_keys: tuple[str, ...] | None = None  # Robomimic: the low-dim keys the policy sees (None: SPEC 5's)
    dataset_file: str = "train.npz"

    @property
    def steps_slowly(self) -> bool:
        """Env steps dominate an iteration (robosuite: ~50x slower than Gym), so `vector_env=auto` uses subprocesses."""
        return self.robomimic is not None

    @property
    def subprocess_memory_gb(self) -> float:
        """One env's memory in its own process (spawned workers import the run's modules, torch included):
        ~0.65 GB measured (USS) for a robosuite Can env, ~0.2 GB for the others' torch import."""
        return 0.65 if self.robomimic is not None else 0.2

    @property
    def video_fps(self) -> int:
        return 20 if self.robomimic is not None else 30

    def default_dataset(self) -> Path:
        return data_dir() / self.name / self.dataset_file

    def with_obs_keys(self, keys: list[str] | tuple[str, ...] | None) -> TaskSpec:
        """This task observing `keys` (Robomimic only); None or the default keys give the task unchanged."""
        if keys is None or (self.robomimic is None and not keys):
            return self
        if self.robomimic is None:
            raise ValueError(f"obs_keys= applies to the Robomimic tasks; {self.name!r} has a fixed observation")
        keys = tuple(keys)
        if keys == self.robomimic.obs_keys:
            return self
        from envs.robomimic import obs_key_dims

        dims = obs_key_dims(self.robomimic.name)
        unknown_keys = [k for k in keys if k not in dims]
        if unknown_keys or not keys:
            raise ValueError(f"task {self.name!r} has no observation keys {unknown_keys}; its keys are {sorted(dims)}")
        return dataclasses.replace(
            self,
            obs_dim=sum(dims[k] for k in keys),
            obs_keys=keys,
            make_raw_env=functools.partial(_robomimic_env, self.robomimic.name, keys),
        )

    def load_dataset(self, path: str | Path | None = None) -> Trajectories:
        """Load `path`, or the task's default dataset, generating it on first use."""
        if path is None:
            path = self.default_dataset()
            if not (path.parent / "provenance.json").is_file():
                self.make_dataset(path.parent)
        return load_dataset(path, self.obs_dim, self.act_dim, self.robomimic, self.obs_keys)

    def make_env(self, normalizer: MinMaxNormalizer, video_size: int = 0, init_range: float = 1.0) -> gym.Env:
        """The env the policy acts in; `video_size` > 0 renders the first episode after each seeded reset
        into its last info's `frames` (RecordFrames); `init_range` scales the initial-state randomisation
        (`widen_initial_states`)."""
        if video_size:
            choose_offscreen_gl()
            raw = RecordFrames(self.make_raw_env(render_size=video_size))
        else:
            raw = self.make_raw_env()
        if init_range != 1.0:
            widen_initial_states(raw.unwrapped, init_range)
        return ActionChunkWrapper(NormalizeWrapper(raw, normalizer), self.horizon, self.act_steps)


def widen_initial_states(env: gym.Env, scale: float) -> None:
    """Scale the half-width of the env's initial-state randomisation by `scale` about its centre: Avoid's start
    box, Gym's `reset_noise_scale` (qpos and qvel noise), Robomimic's object placement ranges (robosuite's
    uniform samplers; the robot's joint noise is left alone). Other envs refuse."""
    from envs.avoid import AvoidEnv

    if isinstance(env, AvoidEnv):
        env.start_noise = env.start_noise * scale
    elif hasattr(env, "_reset_noise_scale"):  # gymnasium's MuJoCo v5 locomotion envs
        env._reset_noise_scale *= scale
    elif hasattr(env, "env") and hasattr(env.env, "placement_initializer"):
        from envs.robomimic import widen_placements

        widen_placements(env.env.placement_initializer, scale)
    else:
        raise ValueError(f"{type(env).__name__} has no initial-state range to widen; leave train.init_range at 1")


def choose_offscreen_gl() -> None:
    """MuJoCo renders offscreen through EGL where there is a GPU and OSMesa (software) elsewhere, unless the
    user chose with MUJOCO_GL, and only where that library is installed (OSMesa: Debian's libosmesa6). Set
    before robosuite is imported, which reads it once."""
    import ctypes.util

    if "MUJOCO_GL" in os.environ:
        return
    gpu = Path("/dev/nvidia0").exists() and ctypes.util.find_library("EGL")
    backend = "egl" if gpu else "osmesa" if ctypes.util.find_library("OSMesa") else None
    if backend:
        os.environ["MUJOCO_GL"] = backend
        os.environ.setdefault("PYOPENGL_PLATFORM", backend)


def _avoid_env(setting: str, render_size: int = 0) -> gym.Env:
    from envs.avoid import AvoidEnv

    if render_size:
        raise ValueError("Avoid has no renderer for video; its evaluation paths are plotted (plots/rollouts_*.png)")
    return AvoidEnv(setting=setting, max_episode_steps=100)


def _avoid_dataset(setting: str, out_dir: Path) -> None:
    from envs.data.avoid_demos import write_dataset

    write_dataset(setting, out_dir)


def _avoid_plot(setting: str, rollouts: dict, out_png: Path, title: str) -> None:
    """Rollouts over the demonstrations, like the paper's Fig. 9."""
    from envs.plot_avoid import demo_paths_from_dataset, plot_avoid

    demo_dir = data_dir() / setting
    demos = demo_paths_from_dataset(demo_dir) if (demo_dir / "train.npz").is_file() else None
    paths = [np.asarray(p) for p in rollouts["paths"]]
    plot_avoid(paths, out_png, demo_paths=demos, successes=rollouts["success"], title=title)


def _avoid(setting: str) -> TaskSpec:
    return TaskSpec(
        name=setting,
        suite="d3il",
        obs_dim=4,
        act_dim=2,
        max_episode_steps=100,
        horizon=4,
        act_steps=4,
        sparse_reward=True,
        eval_episodes=50,
        eval_deterministic=False,
        make_raw_env=functools.partial(_avoid_env, setting),
        make_dataset=functools.partial(_avoid_dataset, setting),
        plot_rollouts=functools.partial(_avoid_plot, setting),
    )


def _gym_env(env_id: str, render_size: int = 0) -> gym.Env:
    if render_size:  # v5 envs carry their 1000-step TimeLimit
        return gym.make(env_id, render_mode="rgb_array", width=render_size, height=render_size)
    return gym.make(env_id)


def _gym_dataset(task: str, out_dir: Path) -> None:
    from envs.data.gym_medium import write_dataset

    n = int(os.environ.get("DPPO_GYM_TRANSITIONS", 200_000))
    write_dataset(task, out_dir, n_transitions=n)


# D4RL's reference returns (random, expert) for its normalised score, d4rl/infos.py REF_MIN/MAX_SCORE.
# Our envs are gymnasium's v5, not D4RL's v2, so scores computed with them are approximate.
D4RL_REFERENCE_RETURNS = {
    "hopper": (-20.272305, 3234.3),
    "walker2d": (1.629008, 4592.3),
    "halfcheetah": (-280.178953, 12135.0),
}


def d4rl_score(task: str, episode_return: float) -> float:
    lo, hi = D4RL_REFERENCE_RETURNS[task]
    return 100.0 * (episode_return - lo) / (hi - lo)


def _gym(task: str, env_id: str, obs_dim: int, act_dim: int) -> TaskSpec:
    return TaskSpec(
        name=task,
        suite="gym",
        obs_dim=obs_dim,
        act_dim=act_dim,
        max_episode_steps=1000,
        horizon=4,
        act_steps=4,
        sparse_reward=False,
        eval_episodes=40,
        eval_deterministic=True,
        make_raw_env=functools.partial(_gym_env, env_id),
        make_dataset=functools.partial(_gym_dataset, task),
        score=functools.partial(d4rl_score, task),
    )


def _robomimic_env(task: str, obs_keys: tuple[str, ...] | None = None, render_size: int = 0) -> gym.Env:
    from envs.robomimic import RobomimicEnv

    return RobomimicEnv(task, obs_keys, render_size=render_size)


def _robomimic_dataset(task: str, out_dir: Path) -> None:
    from envs.data.robomimic_demos import generate

    generate(task, out_dir, n_demos=int(os.environ.get("DPPO_ROBOMIMIC_DEMOS", 300)))


def _robomimic(spec: RobomimicTask) -> TaskSpec:
    return TaskSpec(
        name=spec.name,
        suite="robomimic",
        obs_dim=spec.obs_dim,
        act_dim=spec.act_dim,
        max_episode_steps=spec.max_episode_steps,
        horizon=spec.act_steps,
        act_steps=spec.act_steps,
        sparse_reward=True,
        eval_episodes=50,
        eval_deterministic=True,
        make_raw_env=functools.partial(_robomimic_env, spec.name),
        make_dataset=functools.partial(_robomimic_dataset, spec.name),
        pixel_obs={"lift": "9 + 96x96", "can": "9 + 96x96", "square": "9 + 96x96"}.get(spec.name, "18 + 2x96x96"),
        robomimic=spec,
        dataset_file="demo.hdf5",
    )


TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        _avoid("avoid_m1"),
        _avoid("avoid_m2"),
        _avoid("avoid_m3"),
        _gym("hopper", "Hopper-v5", 11, 3),
        _gym("walker2d", "Walker2d-v5", 17, 6),
        _gym("halfcheetah", "HalfCheetah-v5", 17, 6),
        *(_robomimic(spec) for spec in ROBOMIMIC_TASKS.values()),
    )
}


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise unknown("task", name, TASKS)
    return TASKS[name]


__all__ = ["TASKS", "DatasetError", "TaskSpec", "UnknownNameError", "data_dir", "get_task"]
