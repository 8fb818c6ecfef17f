"""Vectorised envs: gymnasium's sync or async vector env with same-step
autoreset, so the true final observation of an episode is available for
bootstrapping at truncation (`infos["final_obs"]`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import gymnasium as gym
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

VECTOR_KINDS = ("auto", "sync", "async")


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def resolve_kind(kind: str, n_envs: int, slow_env: bool) -> str:
    """`auto`: subprocess envs where stepping dominates (slow envs), there are several, and several CPUs."""
    if kind != "auto":
        return kind
    return "async" if slow_env and n_envs > 1 and usable_cpus() > 1 else "sync"


def make_vector_env(
    env_fns: Sequence[Callable[[], gym.Env]], kind: str = "sync", slow_env: bool = False
) -> gym.vector.VectorEnv:
    kind = resolve_kind(kind, len(env_fns), slow_env)
    if kind == "sync":
        return SyncVectorEnv(env_fns, autoreset_mode=AutoresetMode.SAME_STEP)
    if kind == "async":
        return AsyncVectorEnv(env_fns, autoreset_mode=AutoresetMode.SAME_STEP, context="spawn")
    raise ValueError(f"unknown vector env kind {kind!r}; choose one of {VECTOR_KINDS}")
