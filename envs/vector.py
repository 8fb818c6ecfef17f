"""Vectorised envs: gymnasium's sync or async vector env with same-step
autoreset, so the true final observation of an episode is available for
bootstrapping at truncation (`infos["final_obs"]`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import gymnasium as gym
import psutil
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

VECTOR_KINDS = ("auto", "sync", "async")


class EnvMemoryError(RuntimeError):
    """Subprocess envs would not fit in the memory left; raised before any is started."""


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def resolve_kind(kind: str, n_envs: int, slow_env: bool) -> str:
    """`auto`: subprocess envs where stepping dominates (slow envs), there are several, and several CPUs."""
    if kind != "auto":
        return kind
    return "async" if slow_env and n_envs > 1 and usable_cpus() > 1 else "sync"


def check_memory(n_envs: int, gb_per_env: float, available_gb: float | None = None) -> None:
    """Refuse `n_envs` subprocess envs of ~`gb_per_env` each where less memory than that is available: the
    kernel would otherwise kill workers mid-run, which surfaces as broken pipes."""
    if available_gb is None:
        available_gb = psutil.virtual_memory().available / 2**30
    need = n_envs * gb_per_env
    if need > available_gb:
        raise EnvMemoryError(
            f"{n_envs} subprocess envs need ~{need:.0f} GB (~{gb_per_env:g} GB each) but {available_gb:.0f} GB "
            "is available; lower train.n_envs (scale=cpu uses 8), or train.eval_episodes for the evaluation envs"
        )


def make_vector_env(
    env_fns: Sequence[Callable[[], gym.Env]], kind: str = "sync", slow_env: bool = False, gb_per_env: float = 0.0
) -> gym.vector.VectorEnv:
    """`gb_per_env`: one subprocess env's memory, checked against what is available before async envs start."""
    kind = resolve_kind(kind, len(env_fns), slow_env)
    if kind == "sync":
        return SyncVectorEnv(env_fns, autoreset_mode=AutoresetMode.SAME_STEP)
    if kind == "async":
        check_memory(len(env_fns), gb_per_env)
        return AsyncVectorEnv(env_fns, autoreset_mode=AutoresetMode.SAME_STEP, context="spawn")
    raise ValueError(f"unknown vector env kind {kind!r}; choose one of {VECTOR_KINDS}")
