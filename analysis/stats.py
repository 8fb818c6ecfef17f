"""Aggregate statistics across tasks with rliable (Agarwal et al., 2021): IQM and mean with stratified-bootstrap
confidence intervals, and the probability of improvement between methods."""

from __future__ import annotations

import hashlib
import json
import warnings
from collections import defaultdict
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from analysis.records import Cell, final_value, hyperparameters, normalised_metric, variant_label
from analysis.tables import Missing, Table, mean_std


def harness_defaults(cell: Cell) -> dict[str, Any] | None:
    """The hyperparameters this harness would give the cell's method and task with no overrides."""
    from experiments.config import build_config

    overrides = {"method": cell.method, "task": cell.task, "scale": cell.hparams.get("scale", "paper")}
    try:
        return hyperparameters(build_config(overrides).to_dict())
    except Exception:  # a method or task this checkout doesn't know
        return None


# Differ between tasks by their nature, like the task presets: never a reason to keep tasks apart.
PER_TASK = ("method", "task", "pretrain.checkpoint")


def departures(cell: Cell) -> dict[str, Any]:
    """Where the cell's hyperparameters differ from the harness defaults for its task ("absent": a key it lacks)."""
    defaults = harness_defaults(cell)
    if defaults is None:
        return {k: v for k, v in cell.hparams.items() if k not in PER_TASK}
    missing = object()
    keys = (set(cell.hparams) | set(defaults)) - set(PER_TASK)
    return {k: cell.hparams.get(k, "absent") for k in keys if cell.hparams.get(k, missing) != defaults.get(k, missing)}


def score_matrices(cells: list[Cell]) -> tuple[dict[str, dict[str, list[float]]], list[str]]:
    """Aggregate label -> task -> final normalised scores of its finished runs (by seed), and what was left out.

    Cells of different tasks pool into one aggregate when they depart from the harness's defaults for their task
    in the same way (task presets differ by design; overrides must not)."""
    pools: dict[tuple[str, ...], dict[str, list[float]]] = defaultdict(dict)
    overrides: dict[tuple[str, ...], dict[str, Any]] = {}
    left_out = []
    for c in cells:
        metric = normalised_metric(c.task)
        if metric is None:
            left_out.append(f"{c.task}: no normalised score (neither success rate nor D4RL score)")
            continue
        key, divisor = metric
        values = [v / divisor for r in c.finished if (v := final_value(r, key)) is not None]
        if not values:
            continue
        departs = departures(c)
        pool: tuple[str, ...] = (c.method, json.dumps(departs, sort_keys=True, default=str), c.harness)
        if c.task in pools[pool]:  # two cells of one task alike but for a per-task value: keep them apart
            pool = (*pool, json.dumps(c.hparams, sort_keys=True, default=str))
        overrides[pool] = departs
        pools[pool][c.task] = values
    labels: dict[tuple[str, ...], str] = {}
    for method in {p[0] for p in pools}:
        # the pool with the most runs (then the fewest departures) is plain `method`; others say how they differ
        mine = sorted(
            (p for p in pools if p[0] == method), key=lambda p: (-sum(map(len, pools[p].values())), len(overrides[p]))
        )
        several_harnesses = len({p[2] for p in mine}) > 1
        for p in mine:
            label = variant_label(method, overrides[p], overrides[mine[0]], absent="default")
            label += f" @{p[2]}" if several_harnesses else ""
            if label in labels.values():
                label += f" #{hashlib.sha1(repr(p).encode()).hexdigest()[:6]}"
            labels[p] = label
    return {labels[p]: per_task for p, per_task in pools.items()}, sorted(set(left_out))


def as_matrix(per_task: dict[str, list[float]], tasks: list[str]) -> np.ndarray:
    """(runs x tasks), keeping the first n runs of every task where n is the fewest any task has."""
    n = min(len(per_task[t]) for t in tasks)
    return np.array([per_task[t][:n] for t in tasks]).T


def statistics_tables(cells: list[Cell], reps: int = 2000, seed: int = 0) -> list[Table | Missing]:
    with warnings.catch_warnings():  # rliable 1.2 hands arch a RandomState, which arch 7 deprecates
        warnings.filterwarnings("ignore", "random_state is deprecated", FutureWarning)
        return _statistics_tables(cells, reps, seed)


def _statistics_tables(cells: list[Cell], reps: int, seed: int) -> list[Table | Missing]:
    from rliable import library as rly
    from rliable import metrics

    scores, left_out = score_matrices(cells)
    if not scores:
        return [Missing("statistics", "no finished runs with a normalised score")]
    rng = np.random.RandomState(seed)
    rows, matrices, notes = [], {}, []
    for label, per_task in sorted(scores.items()):
        tasks = sorted(per_task)
        m = as_matrix(per_task, tasks)
        matrices[label] = (tasks, per_task)
        if any(len(per_task[t]) > m.shape[0] for t in tasks):
            notes.append(f"{label}: {m.shape[0]} runs per task used (the fewest any of its tasks has)")
        point, ci = rly.get_interval_estimates(
            {label: m},
            lambda x: np.array([metrics.aggregate_mean(x), metrics.aggregate_iqm(x)]),
            reps=reps,
            random_state=rng,
        )
        p, lo_hi = point[label], ci[label]
        rows.append(
            {
                "method": label,
                "tasks": len(tasks),
                "runs per task": m.shape[0],
                "mean ± std (paper)": mean_std(list(m.mean(axis=1)), 3),
                "mean [95% CI]": f"{p[0]:.3f} [{lo_hi[0, 0]:.3f}, {lo_hi[1, 0]:.3f}]",
                "IQM [95% CI]": f"{p[1]:.3f} [{lo_hi[0, 1]:.3f}, {lo_hi[1, 1]:.3f}]",
            }
        )
    notes.insert(
        0,
        "Final normalised score per run (success rate; D4RL score / 100 for Gym), over the tasks each method has. "
        "'mean ± std (paper)': std over runs of the run's mean across tasks. IQM: interquartile mean over all "
        f"runs × tasks. CIs: stratified bootstrap over runs within tasks, {reps} replications (rliable).",
    )
    notes += [f"left out: {x}" for x in left_out]
    title = "Aggregate performance across tasks (rliable)"
    out: list[Table | Missing] = [Table("statistics", title, pd.DataFrame(rows), notes)]

    pairs = []
    for x, y in combinations(sorted(matrices), 2):  # P(Y > X) is 1 - P(X > Y)
        common = sorted(set(matrices[x][0]) & set(matrices[y][0]))
        if common:
            pairs.append((x, y, common))
    if not pairs:
        out.append(Missing("probability_of_improvement", "fewer than two methods share a task"))
        return out
    rows = []
    for x, y, common in pairs:
        mx, my = as_matrix(matrices[x][1], common), as_matrix(matrices[y][1], common)
        point, ci = rly.get_interval_estimates(
            {"p": [mx, my]}, metrics.probability_of_improvement, reps=reps, random_state=rng
        )
        lo, hi = np.ravel(ci["p"])
        rows.append(
            {
                "X": x,
                "Y": y,
                "tasks": ", ".join(common),
                "P(X > Y) [95% CI]": f"{float(np.ravel(point['p'])[0]):.3f} [{lo:.3f}, {hi:.3f}]",
            }
        )
    notes = [
        "Probability that a run of X scores above a run of Y on a task, averaged over the tasks both have "
        f"(ties count half); stratified-bootstrap 95% CI, {reps} replications (rliable)."
    ]
    out.append(Table("probability_of_improvement", "Probability of improvement (rliable)", pd.DataFrame(rows), notes))
    return out
