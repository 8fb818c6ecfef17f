"""Scripted demonstrators for the Robomimic tasks: one module a task, each a
generator `script(s: Scripter)` yielding actions (see base.py)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator

import numpy as np

from envs.data.demonstrators.base import Scripter

SCRIPTED_TASKS = ("lift", "can", "square", "transport")


def get_script(task: str) -> Callable[[Scripter], Iterator[np.ndarray]]:
    if task not in SCRIPTED_TASKS:
        from common.names import unknown

        raise unknown("scripted task", task, SCRIPTED_TASKS)
    return importlib.import_module(f"envs.data.demonstrators.{task}").script
