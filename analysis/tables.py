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
    best_value,
    curve_metric,
    eval_curve,
    final_value,
    fmt_value,
    iteration_seconds,
    method_order,
    pretraining_of,
    steps_per_iteration,
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
            row["best during training"] = summarise([best_value(r, key) for r in fin], digits)
            steps = [s for r in fin if (s := _number(r.summary.get("env_steps"))) is not None]
            row["final env steps"] = _steps(float(np.median(steps))) if steps else "–"
            rows.append(row)
        notes = [
            f"{YLABEL[key]}; mean ± std over the seeds of finished runs. 'at N steps': each run's latest evaluation "
            "within N env steps (0: the pre-trained policy, before fine-tuning). 'final': each run's last evaluation, "
            "at the median env steps beside it. 'best during training': each run's best evaluation after fine-tuning "
            "started (the highest eval value of its metrics rows; the pre-trained policy's evaluation is not counted). "
            "'(n=k of m)': only k of the m finished runs have a value there (the others ended before N steps or have "
            "no evaluation recorded).",
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


def by_hardware(runs: list[Run]) -> dict[str, list[Run]]:
    """Runs grouped by the machine they ran on (different machines never share a wall-clock row)."""
    groups: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        groups[_hardware(r)].append(r)
    return dict(sorted(groups.items()))


def pretrain_seconds(run: Run) -> float | None:
    """Pre-training time of a run that pre-trained (stage pretrain or all): the training itself."""
    summary = run.summary or {}
    return _number((summary.get("pretrain") or {}).get("wall_time")) or _number(summary.get("total_wall_time"))


def wallclock_tables(cells: list[Cell], runs: list[Run]) -> list[Table | Missing]:
    """Per suite: time per run and seconds per iteration split into sampling, env stepping and updates."""
    by_suite: dict[str, list[dict[str, Any]]] = defaultdict(list)
    hardware: dict[str, set[str]] = defaultdict(set)
    for c in cells:
        for hw, rs in by_hardware(c.finished).items():
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


# ----------------------------------------------------------------------------- wall-clock relative to DPPO

# Paper Appendix C, Tables A1 (Gym: Hopper-v2, Walker2D-v2, HalfCheetah-v2) and A2 (Robomimic, state input: Lift, Can,
# Square, Transport): wall-clock of fine-tuning each task, per method. Our copy of the text has no units; only the
# ratios to DPPO are used. Keys are this harness's method and task names.
PAPER_TIMES: dict[str, tuple[str, tuple[str, ...], dict[str, tuple[float, ...]]]] = {
    "gym": (
        "Table A1",
        ("hopper", "walker2d", "halfcheetah"),
        {
            "drwr": (11.3, 12.7, 10.4),
            "dawr": (30.4, 30.7, 27.1),
            "dipo": (27.8, 27.9, 26.0),
            "idql": (16.3, 16.1, 15.5),
            "dql": (20.5, 20.5, 17.6),
            "qsm": (64.4, 65.7, 68.3),
            "dppo": (16.6, 18.3, 16.8),
        },
    ),
    "robomimic": (
        "Table A2",
        ("lift", "can", "square", "transport"),
        {
            "drwr": (32.5, 39.5, 59.8, 346.1),
            "dawr": (38.6, 46.0, 70.5, 354.3),
            "dipo": (43.9, 51.6, 73.3, 359.7),
            "idql": (33.8, 41.7, 63.7, 349.9),
            "dql": (36.9, 44.4, 68.5, 353.5),
            "qsm": (64.4, 72.4, 107.6, 391.2),
            "dppo": (35.2, 42.0, 65.6, 350.3),
        },
    ),
}

# Paper Appendix C's text on Gym, as (faster, slower, p): "on average DPPO trains 74%, 41%, 37%, and 12% faster than
# QSM, DAWR, DIPO, and DQL, respectively ... DRWR and IDQL trains 33% and 7% faster than DPPO, respectively".
PAPER_FASTER: dict[str, tuple[tuple[str, str, float], ...]] = {
    "gym": (
        ("dppo", "qsm", 0.74),
        ("dppo", "dawr", 0.41),
        ("dppo", "dipo", 0.37),
        ("dppo", "dql", 0.12),
        ("drwr", "dppo", 0.33),
        ("idql", "dppo", 0.07),
    ),
}

# How the text's percentages are turned into ratios (Gym), or why they are not (Robomimic): a note under each table.
PAPER_TEXT_NOTES = {
    "gym": "'paper ratio (text, mean over tasks)': the paper's text gives percentages ('A trains p faster than B'); "
    "we read them as t_A = (1 - p) × t_B, A saving the fraction p of B's time, a reading under which all six Gym "
    "percentages match Table A1's mean times (e.g. QSM: 1 - 17.2 / 66.1 = 0.74; DRWR: 1 - 11.5 / 17.2 = 0.33; the "
    "other common reading, (t_B - t_A) / t_A, gives 284% for QSM, not 74%). The ratio to DPPO is then "
    "1 / (1 - p) for a method DPPO is faster than and 1 - p for one faster than DPPO.",
    "robomimic": "The paper's text percentages for Robomimic follow another reading than Gym's (QSM's '29% faster' is "
    "(t_QSM - t_DPPO) / t_DPPO of Table A2's summed times), so only the table's ratios are shown.",
}


def paper_ratio(suite: str, method: str, task: str) -> float | None:
    """The method's wall-clock over DPPO's on the task, in the paper's table for the suite."""
    _, tasks, times = PAPER_TIMES.get(suite, ("", (), {}))
    if task not in tasks or method not in times:
        return None
    i = tasks.index(task)
    return times[method][i] / times["dppo"][i]


def paper_text_ratio(suite: str, method: str) -> float | None:
    """The method's wall-clock over DPPO's that the paper's text implies (its average over the suite's tasks)."""
    for faster, slower, p in PAPER_FASTER.get(suite, ()):
        if (faster, slower) == ("dppo", method):
            return 1 / (1 - p)
        if (faster, slower) == (method, "dppo"):
            return 1 - p
    return 1.0 if method == "dppo" and suite in PAPER_FASTER else None


Timed = tuple[Cell, str, list[Run]]  # a cell's finished runs on one machine


def dppo_reference(timed: list[Timed], cell: Cell, hardware: str) -> list[Run] | None:
    """The DPPO runs a cell's time is compared with: same task, machine and scale; the main DPPO variant if it is
    there, else the one with the most runs."""
    where = (cell.task, hardware, cell.hparams.get("scale"))
    same = [(c, rs) for c, hw, rs in timed if c.method == "dppo" and (c.task, hw, c.hparams.get("scale")) == where]
    return min(same, key=lambda x: (x[0].label != "dppo", -len(x[1])))[1] if same else None


def _mean(values: list[float | None]) -> float | None:
    there = [v for v in values if v is not None]
    return float(np.mean(there)) if there else None


def _ratio(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def _ratio_row(cell: Cell, hardware: str, runs: list[Run], dppo: list[Run]) -> dict[str, Any]:
    suite = task_info(cell.task)[0]
    seconds = [iteration_seconds(r) for r in runs]
    mine, reference = _mean(seconds), _mean([iteration_seconds(r) for r in dppo])
    steps = [s for r in runs if (s := steps_per_iteration(r)) is not None]
    row: dict[str, Any] = {
        "task": cell.task,
        "method": cell.label,
        "runs": len(runs),
        "s/itr": summarise(seconds, 3),
        "env steps/itr": _steps(float(round(np.median(steps)))) if steps else "–",
        "ratio to dppo": _ratio(mine / reference if mine is not None and reference else None),
    }
    if suite in PAPER_TIMES:
        row[f"paper ratio ({PAPER_TIMES[suite][0]})"] = _ratio(paper_ratio(suite, cell.method, cell.task))
    if suite in PAPER_FASTER:
        row["paper ratio (text, mean over tasks)"] = _ratio(paper_text_ratio(suite, cell.method))
    return row | {"hardware": hardware}


def _ratio_notes(suite: str, hardware: set[str], unmatched: list[str]) -> list[str]:
    paper = PAPER_TIMES.get(suite, ("",))[0]
    notes = [
        "s/itr: each run's median time_iteration over its metrics rows (one rollout and one update, evaluations "
        "excluded), then mean ± std over the finished seeds. 'ratio to dppo': the mean s/itr over DPPO's on the "
        "same task, machine and scale (its main variant). It compares like with like only where the methods take "
        f"the same env steps per iteration ('env steps/itr'). Hardware: {'; '.join(sorted(hardware))}",
    ]
    if paper:
        notes.append(
            f"'paper ratio ({paper})': the method's fine-tuning wall-clock over DPPO's on the task in paper {paper} "
            "(whole runs there, per iteration here)."
        )
    notes += [PAPER_TEXT_NOTES[suite]] if suite in PAPER_TEXT_NOTES else []
    if unmatched:
        notes.append(f"Left out, no DPPO runs on the same task, machine and scale: {'; '.join(unmatched)}.")
    return notes


def wallclock_ratio_tables(cells: list[Cell]) -> list[Table | Missing]:
    """Per suite, like paper Tables A1-A2: each method's seconds per fine-tuning iteration and its ratio to DPPO's on
    the same task and machine, beside the ratio in the paper."""
    timed = [(c, hw, rs) for c in cells for hw, rs in by_hardware(c.finished).items()]
    by_suite: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    unmatched: dict[str, list[str]] = defaultdict(list)
    for c, hw, rs in sorted(timed, key=lambda t: (t[0].task, method_order(t[0].method), t[0].label, t[1])):
        suite, dppo = task_info(c.task)[0], dppo_reference(timed, c, hw)
        if dppo is None:
            unmatched[suite].append(f"{c.label} on {c.task} ({hw})")
        else:
            by_suite[suite].append((c.method, _ratio_row(c, hw, rs, dppo)))
    by_suite = {s: rows for s, rows in by_suite.items() if any(m != "dppo" for m, _ in rows)}
    if not by_suite:
        return [Missing("wallclock_vs_dppo", "no task has finished runs of DPPO and of another method on one machine")]
    out: list[Table | Missing] = []
    for suite, rows in sorted(by_suite.items()):
        paper = PAPER_TIMES.get(suite, ("",))[0]
        title = f"Wall-clock per iteration relative to DPPO, {suite}" + (f" (cf. paper {paper})" if paper else "")
        notes = _ratio_notes(suite, {r["hardware"] for _, r in rows}, unmatched[suite])
        out.append(Table(f"wallclock_vs_dppo_{suite}", title, pd.DataFrame([r for _, r in rows]), notes))
    for suite, (paper, _, _) in PAPER_TIMES.items():
        if suite not in by_suite:
            why = f"{paper}: no {suite} task has finished runs of DPPO and of another method on one machine"
            out.append(Missing(f"wallclock_vs_dppo_{suite}", why))
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
