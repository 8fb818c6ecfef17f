"""Method registry. Adding a method: one file with a `Method` subclass, one entry here."""

from methods.base import Method, Rollout
from methods.dppo import DPPO
from methods.gaussian_ppo import GaussianPPO

METHODS: dict[str, type[Method]] = {m.name: m for m in (DPPO, GaussianPPO)}


def get_method(name: str) -> type[Method]:
    from envs.tasks import unknown

    if name not in METHODS:
        raise unknown("method", name, METHODS)
    return METHODS[name]


__all__ = ["METHODS", "Method", "Rollout", "get_method"]
