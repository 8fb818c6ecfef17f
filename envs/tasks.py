"""Task registry: what each task is (paper Table A6), how to build its env
and where its dataset comes from. Adding a task = one `TaskSpec` entry."""

from __future__ import annotations

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
from envs.wrappers import ActionChunkWrapper, NormalizeWrapper

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

    def default_dataset(self) -> Path:
        return data_dir() / self.name / "train.npz"

    def load_dataset(self, path: str | Path | None = None) -> Trajectories:
        """Load `path`, or the task's default dataset, generating it on first use."""
        if path is None:
            path = self.default_dataset()
            if not (path.parent / "provenance.json").is_file():
                self.make_dataset(path.parent)
        return load_dataset(path, self.obs_dim, self.act_dim)

    def make_env(self, normalizer: MinMaxNormalizer) -> gym.Env:
        env = NormalizeWrapper(self.make_raw_env(), normalizer)
        return ActionChunkWrapper(env, self.horizon, self.act_steps)


def _avoid_env(setting: str) -> gym.Env:
    from envs.avoid import AvoidEnv

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


def _gym_env(env_id: str) -> gym.Env:
    return gym.make(env_id)  # v5 envs carry their 1000-step TimeLimit


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


TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        _avoid("avoid_m1"),
        _avoid("avoid_m2"),
        _avoid("avoid_m3"),
        _gym("hopper", "Hopper-v5", 11, 3),
        _gym("walker2d", "Walker2d-v5", 17, 6),
        _gym("halfcheetah", "HalfCheetah-v5", 17, 6),
    )
}


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise unknown("task", name, TASKS)
    return TASKS[name]


__all__ = ["TASKS", "DatasetError", "TaskSpec", "UnknownNameError", "data_dir", "get_task"]
