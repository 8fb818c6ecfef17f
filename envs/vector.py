"""Vectorised envs: gymnasium's sync or async vector env with same-step
autoreset, so the true final observation of an episode is available for
bootstrapping at truncation (`infos["final_obs"]`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import gymnasium as gym
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

VECTOR_KINDS = ("sync", "async")


def make_vector_env(env_fns: Sequence[Callable[[], gym.Env]], kind: str = "sync") -> gym.vector.VectorEnv:
    if kind == "sync":
        return SyncVectorEnv(env_fns, autoreset_mode=AutoresetMode.SAME_STEP)
    if kind == "async":
        return AsyncVectorEnv(env_fns, autoreset_mode=AutoresetMode.SAME_STEP, context="spawn")
    raise ValueError(f"unknown vector env kind {kind!r}; choose one of {VECTOR_KINDS}")
