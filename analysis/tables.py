"""The tables: each builder takes the run records and returns tables, or says why it can't.

Spread is the standard deviation over seeds (numpy's, ddof 0), as in the paper.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.records import (
    Cell,
    Run,
    _number,
    curve_metric,
    eval_curve,
    final_value,
    fmt_value,
    pretraining_of,
    task_info,
    value_at_budget,
)


@dataclass
class Table:
    name: str  # file stem
    title: str
    df: pd.DataFrame
    notes: list[str] = field(default_factory=list)


@dataclass
class Missing:
    """A table the records can't fill, and why."""

    name: str
    reason: str


def mean_std(values: list[float], digits: int = 3) -> str:
    if not values:
        return "–"
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"


YLABEL = {"eval_success": "success rate", "eval_return": "episode return"}


def _digits(task: str) -> int:
    return 3 if curve_metric(task) == "eval_success" else 1


# ----------------------------------------------------------------------------- runs


def runs_table(runs: list[Run]) -> Table:
    """Every record found and its state: the ledger the other tables are counted against."""
    rows = []
    for r in sorted(runs, key=lambda r: (r.task, r.stage != "pretrain", r.method, r.seed, str(r.path))):
        done = len(r.rows)
        planned = r.planned_iterations
        note = "; ".join(([r.error.splitlines()[-1]] if r.error else []) + r.problems)
        rows.append(
            {
                "run": r.name,
                "task": r.task,
                "method": r.method,
                "stage": r.stage,
                "seed": r.seed,
                "status": r.status,
                "iterations": f"{done}/{planned}" if planned else "–",
                "env steps": int(r.rows[-1].get("env_steps") or 0) if r.rows else "–",
                "harness": r.harness,
                "note": note,
            }
        )
    df = pd.DataFrame(rows)
    counts = df["status"].value_counts()
    summary = ", ".join(f"{counts[s]} {s}" for s in counts.index)
    return Table("runs", f"Run records ({len(df)}: {summary})", df)


# ----------------------------------------------------------------------------- A6


def task_table() -> Table:
    """Paper Table A6, from the task registry."""
    from envs.tasks import TASKS

    rows = [
        {
            "suite": t.suite,
            "task": t.name,
            "obs dim (state)": t.obs_dim,
            "pixel obs": t.pixel_obs,
            "act dim": t.act_dim,
            "max steps": t.max_episode_steps,
            "sparse reward": "yes" if t.sparse_reward else "no",
            "Ta": t.act_steps,
            "eval episodes": t.eval_episodes,
        }
        for t in TASKS.values()
    ]
    return Table("A6_tasks", "Table A6: tasks (from the task registry, envs/tasks.py)", pd.DataFrame(rows))


# ----------------------------------------------------------------------------- performance


def default_budgets(cells: list[Cell], task: str, most: int = 3) -> list[float]:
    """0, then the env steps by which every finished run of the task evaluating on its main variant's schedule
    had made its k-th evaluation (up to `most` of them, evenly spread; the last evaluation is 'final')."""
    task_cells = [c for c in cells if c.task == task]
    main = max(task_cells, key=lambda c: len(c.finished))
    schedule = lambda hp: (hp.get("train.eval_every"), hp.get("train.n_iterations"))  # noqa: E731
    runs = [r for c in task_cells if schedule(c.hparams) == schedule(main.hparams) for r in c.finished]
    key = curve_metric(task)
    curves = [[x for x, _ in eval_curve(r, key) if x > 0][:-1] for r in runs]  # interim evaluations only
    counts = Counter(len(cv) for cv in curves if cv)
    if not counts:
        return [0.0]
    n = counts.most_common(1)[0][0]  # runs with gaps in their evaluations don't choose the budgets
    curves = [cv for cv in curves if len(cv) == n]
    picks = sorted({round(i * (n - 1) / max(most - 1, 1)) for i in range(most)}) if n > most else range(n)
    return [0.0] + [max(cv[i] for cv in curves) for i in picks]


def _steps(x: float) -> str:
    for unit, div in (("M", 1e6), ("k", 1e3)):
        if x >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:g}"


def summarise(values: list[float | None], digits: int) -> str:
    """mean ± std of the values there are, marking how many runs had none."""
    there = [v for v in values if v is not None]
    text = mean_std(there, digits)
    return text + (f" (n={len(there)} of {len(values)})" if there and len(there) < len(values) else "")


def performance_tables(cells: list[Cell], budgets: list[float] | None) -> list[Table | Missing]:
    """Per task: mean ± std over seeds at fixed env-step budgets and at the end (the curves of Figs. 5, 6, 7, A8)."""
    if not cells:
        return [Missing("final_performance", "no fine-tuning runs")]
    out: list[Table | Missing] = []
    for task in sorted({c.task for c in cells}):
        key, digits = curve_metric(task), _digits(task)
        task_budgets = budgets if budgets is not None else default_budgets(cells, task)
        rows = []
        for c in (c for c in cells if c.task == task):
            fin = c.finished
            row: dict[str, Any] = {"method": c.label, "runs": c.counts()}
            for b in task_budgets:
                row[f"at {b:,.0f} steps" if b == int(b) else f"at {b:g} steps"] = summarise(
                    [value_at_budget(r, key, b) for r in fin], digits
                )
            row["final"] = summarise([final_value(r, key) for r in fin], digits)
            steps = [s for r in fin if (s := _number(r.summary.get("env_steps"))) is not None]
            row["final env steps"] = _steps(float(np.median(steps))) if steps else "–"
            rows.append(row)
        notes = [
            f"{YLABEL[key]}; mean ± std over the seeds of finished runs. 'at N steps': each run's latest evaluation "
            "within N env steps (0: the policy before fine-tuning). 'final': each run's last evaluation, at the "
            "median env steps beside it. '(n=k of m)': only k of the m finished runs have a value there (the others "
            "ended before N steps or have no evaluation recorded).",
            "Runs not finished (failed, running, stopped) are counted in 'runs' and left out of every number.",
        ]
        out.append(Table(f"final_performance_{task}", f"Final performance, {task}", pd.DataFrame(rows), notes))
    return out


# ----------------------------------------------------------------------------- wall-clock

PAPER_WALLCLOCK = {"gym": "Table A1", "robomimic": "Tables A2-A4", "furniture": "Table A5"}

TIMES = (("time_sample", "sample"), ("time_env", "env"), ("time_update", "update"), ("time_iteration", "iteration"))


def _wallclock_columns(unit: str) -> list[str]:
    times = [f"{label} (s/itr)" for _, label in TIMES]
    return ["task", "method", "runs", f"fine-tune ({unit})", f"pre-train ({unit})", *times, "env steps",
            "peak memory (MB)", "hardware"]  # fmt: skip


def _hardware(run: Run) -> str:
    summary = run.summary or {}
    hw = summary.get("hardware") or {}
    text = f"{hw.get('processor', '?')} ×{hw.get('cpu_count', '?')}"
    if hw.get("cuda") and str(summary.get("device", "cuda")).startswith("cuda"):
        text += f", {hw['cuda']}"
    return text + f", torch {hw.get('torch', '?')}"


def pretrain_seconds(run: Run) -> float | None:
    """Pre-training time of a run that pre-trained (stage pretrain or all): the training itself."""
    summary = run.summary or {}
    return _number((summary.get("pretrain") or {}).get("wall_time")) or _number(summary.get("total_wall_time"))


def wallclock_tables(cells: list[Cell], runs: list[Run]) -> list[Table | Missing]:
    """Per suite: time per run and seconds per iteration split into sampling, env stepping and updates."""
    by_suite: dict[str, list[dict[str, Any]]] = defaultdict(list)
    hardware: dict[str, set[str]] = defaultdict(set)
    for c in cells:
        by_hw: dict[str, list[Run]] = defaultdict(list)
        for r in c.finished:
            by_hw[_hardware(r)].append(r)
        for hw, rs in sorted(by_hw.items()):  # different machines never share a row
            suite = task_info(c.task)[0]
            hardware[suite].add(hw)
            pre = {p.path: p for r in rs if (p := pretraining_of(r, runs)) is not None and p.summary}
            pre_own = [pretrain_seconds(r) for r in rs if r.stage == "all"]  # pre-trained within the run
            row: dict[str, Any] = {"task": c.task, "method": c.label, "runs": len(rs)}
            row["fine-tune"] = [_number(r.summary.get("wall_time")) for r in rs]  # summed over attempts
            row["pre-train"] = [pretrain_seconds(p) for p in pre.values()] + pre_own
            for key, label in TIMES:
                per_itr = [_number((r.summary.get("time_per_iteration") or {}).get(key)) for r in rs]
                row[f"{label} (s/itr)"] = summarise(per_itr, 3)
            steps = [s for r in rs if (s := _number(r.summary.get("env_steps"))) is not None]
            row["env steps"] = _steps(float(np.median(steps))) if steps else "–"
            memory = [m for r in rs if (m := _number(r.summary.get("peak_memory_mb"))) is not None]
            row["peak memory (MB)"] = f"{np.median(memory):.0f}" if memory else "–"
            row["hardware"] = hw
            by_suite[suite].append(row)
    if not by_suite:
        return [Missing("wallclock", "no finished fine-tuning runs")]
    out: list[Table | Missing] = []
    for suite, rows in sorted(by_suite.items()):
        longest = max((t for r in rows for t in r["fine-tune"] + r["pre-train"] if t is not None), default=0)
        unit, div = ("h", 3600) if longest >= 3600 else ("min", 60)  # hours as in the paper, unless all are short
        for r in rows:
            for k in ("fine-tune", "pre-train"):
                r[f"{k} ({unit})"] = summarise([None if t is None else t / div for t in r.pop(k)], 2)
        rows = [{k: r[k] for k in _wallclock_columns(unit)} for r in rows]
        paper = PAPER_WALLCLOCK.get(suite)
        title = f"Wall-clock, {suite}" + (f" (cf. paper {paper})" if paper else " (no paper table)")
        notes = [
            "Mean ± std over seeds. 'fine-tune': the fine-tuning loop, summed over a run's attempts (resumptions); "
            "'pre-train': the pre-training the runs started from. Seconds per iteration: each run's median; "
            "'iteration' is the whole iteration (sample + env + update + bookkeeping), evaluations excluded.",
            "Hardware: " + "; ".join(sorted(hardware[suite])),
        ]
        out.append(Table(f"wallclock_{suite}", title, pd.DataFrame(rows), notes))
    for suite, paper in PAPER_WALLCLOCK.items():
        if suite not in by_suite:
            out.append(Missing(f"wallclock_{suite}", f"{paper}: no finished {suite} fine-tuning runs"))
    return out


# ----------------------------------------------------------------------------- hyperparameters

PAPER_HYPERPARAMETERS = {
    ("gym", "dppo"): "Table A7",
    ("gym", "*"): "Table A8",
    ("robomimic", "*"): "Tables A9-A10",
    ("furniture", "*"): "Table A11",
}


def hyperparameter_tables(cells: list[Cell]) -> list[Table | Missing]:
    """Per suite and method: every hyperparameter the runs used (rows) for each task variant (columns)."""
    by: dict[tuple[str, str], list[Cell]] = defaultdict(list)
    for c in cells:
        by[(task_info(c.task)[0], c.method)].append(c)
    out: list[Table | Missing] = []
    for (suite, method), cs in sorted(by.items()):
        columns: dict[str, dict[str, Any]] = {}
        for c in cs:  # pre-training values are already the pre-training run's own (cell_hyperparameters)
            header = c.task if c.label == c.method else f"{c.task}: {c.label.removeprefix(method).strip()}"
            columns[header] = {k: fmt_value(v) for k, v in c.hparams.items()}
        keys = sorted({k for col in columns.values() for k in col}, key=_section_order)
        table = {h: [col.get(k, "–") for k in keys] for h, col in columns.items()}
        df = pd.DataFrame({"hyperparameter": keys, **table})
        paper = PAPER_HYPERPARAMETERS.get((suite, method)) or PAPER_HYPERPARAMETERS.get((suite, "*"))
        title = f"Hyperparameters, {method} on {suite}" + (f" (cf. paper {paper})" if paper else "")
        notes = ["Straight from the config.json of the runs (pre-training values from the pre-training run's record)."]
        out.append(Table(f"hyperparameters_{suite}_{method}", title, df, notes))
    if not out:
        out.append(Missing("hyperparameters", "no fine-tuning runs"))
    return out


def _section_order(key: str) -> tuple[int, str]:
    order = ("method", "task", "stage", "scale", "pretrained", "policy.", "pretrain.", "train.", "algo.")
    for i, p in enumerate(order):
        if key.startswith(p):
            return i, key
    return len(order), key


# ----------------------------------------------------------------------------- ablations


@dataclass(frozen=True)
class Ablation:
    name: str
    what: str  # caption
    paper: str
    key: str  # a hyperparameter (hyperparameters() name) whose values the rows compare
    missing: str  # why no runs vary it, when the harness can't run the ablation yet


ABLATIONS = (
    Ablation(
        "advantage_estimator",
        "advantage estimator: V(s), V(s, x_k) or double-Q Q(s, a)",
        "B.1, Fig. A1",
        "algo.critic",
        "the harness has no critic option yet (DPPO's critic is V(s) only)",
    ),
    Ablation("gamma_denoise", "denoising discount γ_denoise", "B.1, Fig. A2", "algo.gamma_denoise", ""),
    Ablation("eps_min_exp", "exploration noise floor ε_min_exp", "B.1, Fig. A3", "algo.min_sampling_std", ""),
    Ablation("ft_denoising_steps", "fine-tuned denoising steps K'", "B.1, Figs. A4, A7", "algo.ft_denoising_steps", ""),
    Ablation(
        "expert_data",
        "amount of expert data in pre-training",
        "B.2, Fig. A5",
        "pretrain.max_episodes",
        "the harness can't limit the pre-training data yet",
    ),
    Ablation(
        "from_scratch",
        "fine-tuning from scratch vs. from a pre-trained policy",
        "B.2, Fig. A6",
        "pretrained",
        "the harness can't fine-tune without a pre-trained policy yet",
    ),
)


def _sortable(v: Any) -> tuple[int, Any]:
    return (0, v) if isinstance(v, (int, float)) else (1, repr(v))


def ablation_tables(cells: list[Cell]) -> list[Table | Missing]:
    """For each SPEC 3 ablation: variants of one task and method that differ only in the ablated value."""
    out: list[Table | Missing] = []
    for ab in ABLATIONS:
        families: dict[tuple[str, str, str, str], list[Cell]] = defaultdict(list)
        for c in cells:
            rest = {k: v for k, v in c.hparams.items() if k != ab.key}
            families[(c.task, c.method, c.harness, repr(sorted(rest.items())))].append(c)
        rows = []
        for (task, method, harness, _), cs in sorted(families.items()):
            if len({repr(c.hparams.get(ab.key)) for c in cs}) < 2:
                continue
            key, digits = curve_metric(task), _digits(task)
            for c in sorted(cs, key=lambda c: _sortable(c.hparams.get(ab.key))):
                fin = c.finished
                rows.append(
                    {
                        "task": task,
                        "method": method,
                        ab.key: fmt_value(c.hparams.get(ab.key)),
                        "runs": c.counts(),
                        "before": summarise([value_at_budget(r, key, 0) for r in fin], digits),
                        "final": summarise([final_value(r, key) for r in fin], digits),
                        "metric": key.removeprefix("eval_"),
                        "harness": harness,
                    }
                )
        if not rows:
            why = ab.missing or f"no two runs of one task and method differ only in {ab.key}"
            out.append(Missing(f"ablation_{ab.name}", why))
            continue
        notes = [f"Paper {ab.paper}. Mean ± std over the finished seeds; rows of a family differ only in {ab.key}."]
        out.append(Table(f"ablation_{ab.name}", f"Ablation: {ab.what}", pd.DataFrame(rows), notes))
    return out
