"""Method registry. Adding a method: one file with a `Method` subclass, one entry here."""

from common.names import unknown
from methods.base import Method, MethodContext, Rollout, TaskInfo, TrainingBudget
from methods.dawr import DAWR
from methods.dipo import DIPO
from methods.dppo import DPPO
from methods.dql import DQL
from methods.drwr import DRWR
from methods.exact_pg import ExactPG
from methods.gaussian_ppo import GaussianPPO
from methods.gmm_ppo import GMMPPO
from methods.idql import IDQL
from methods.qsm import QSM

METHODS: dict[str, type[Method]] = {
    m.name: m for m in (DPPO, GaussianPPO, GMMPPO, DRWR, DAWR, DIPO, IDQL, DQL, QSM, ExactPG)
}


def get_method(name: str) -> type[Method]:
    if name not in METHODS:
        raise unknown("method", name, METHODS)
    return METHODS[name]


__all__ = ["METHODS", "Method", "MethodContext", "Rollout", "TaskInfo", "TrainingBudget", "get_method"]
