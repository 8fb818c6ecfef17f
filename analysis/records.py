"""Reading run records into runs and cells.

A cell is what one line of a table may average over: fine-tuning runs of the
same task and method, with the same hyperparameters (seed and where things
live aside) and made by the same harness version. Runs that are not finished
belong to their cell too, so tables can count them, but never enter its
numbers.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.record import flatten, read_json

FINISHED, FAILED, RUNNING, STOPPED = "finished", "failed", "running", "stopped"

# Where and how a run executed, or which seed it drew: not part of what a cell compares.
NOT_HYPERPARAMETERS = {"seed", "name", "results_dir", "checkpoint", "dataset", "threads", "progress", "device"}
NOT_HYPERPARAMETER_PREFIXES = ("wandb.",)
NOT_HYPERPARAMETERS_TRAIN = {"train.plot_rollouts"}


class ResultsError(RuntimeError):
    """The results folder can't be read at all (missing, or holds no run records)."""


def hyperparameters(config: dict[str, Any]) -> dict[str, Any]:
    """The flattened config keys that decide what a run computes."""
    flat = flatten(config)
    hp = {
        k: v
        for k, v in flat.items()
        if k not in NOT_HYPERPARAMETERS
        and k not in NOT_HYPERPARAMETERS_TRAIN
        and not k.startswith(NOT_HYPERPARAMETER_PREFIXES)
    }
    hp["pretrained"] = bool(config.get("pretrained", True)) and (
        bool(config.get("checkpoint")) or config.get("stage") == "all"
    )
    return hp


def fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list):
        return "[" + ", ".join(fmt_value(x) for x in v) + "]"
    return "null" if v is None else str(v)


def harness_label(h: dict[str, Any] | None) -> str:
    if not h or not (h.get("version") or h.get("commit")):
        return "unknown"
    label = f"v{h.get('version')}"
    if h.get("commit"):
        label += f"+{h['commit'][:7]}" + ("*" if h.get("dirty") else "")
    return label


@dataclass
class Run:
    path: Path
    config: dict[str, Any]
    status: str
    summary: dict[str, Any] | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    initial: dict[str, Any] | None = None
    error: str | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # shown beside the run; the run is still used where valid

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def method(self) -> str:
        return str(self.config.get("method"))

    @property
    def task(self) -> str:
        return str(self.config.get("task"))

    @property
    def seed(self) -> int:
        seed = self.config.get("seed")
        return int(seed) if isinstance(seed, (int, float)) and math.isfinite(seed) else -1

    @property
    def stage(self) -> str:
        return str(self.config.get("stage"))

    @property
    def finetunes(self) -> bool:
        return self.stage in ("finetune", "all")

    @property
    def harness(self) -> str:
        """Which harness made the run: the summary's, or for an unfinished run that of its last start."""
        if self.summary and "harness" in self.summary:
            return harness_label(self.summary["harness"])
        return harness_label(self.attempts[-1].get("harness") if self.attempts else None)

    @property
    def planned_iterations(self) -> int | None:
        return (self.config.get("train") or {}).get("n_iterations") if self.finetunes else None


def _read_json(path: Path) -> Any | None:
    """The file's JSON, or None when it is missing or unreadable."""
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], str | None]:
    """The rows of metrics.jsonl that parse, and which lines didn't, if any."""
    if not path.is_file():
        return [], None
    lines = path.read_text().splitlines()
    rows, bad = [], []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or "itr" not in row:
                raise ValueError
        except ValueError:
            bad.append(i + 1)
            continue
        rows.append(row)
    if not bad:
        return rows, None
    if bad == [len(lines)]:
        what = f"line {bad[0]} is not a complete row (cut off mid-write?)"
        return rows, f"metrics.jsonl {what}; used the {len(rows)} rows before it"
    what = f"line(s) {', '.join(map(str, bad))} not valid rows"
    return rows, f"metrics.jsonl {what}; skipped them, used the other {len(rows)} rows"


def _alive(attempt: dict[str, Any]) -> bool | None:
    """Whether the process of an attempt still runs: None when this machine can't tell (another host)."""
    if attempt.get("host") != platform.node() or not attempt.get("pid"):
        return None
    from datetime import datetime

    import psutil

    try:
        proc = psutil.Process(int(attempt["pid"]))
        started = datetime.fromisoformat(attempt["started"]).timestamp()
        return proc.create_time() <= started + 5  # the same process, not a later one given the same pid
    except (psutil.Error, KeyError, ValueError):
        return False


def _unfinished_status(path: Path, attempts: list[dict[str, Any]], stale_after_s: float) -> str:
    alive = _alive(attempts[-1]) if attempts else None
    if alive is not None:
        return RUNNING if alive else STOPPED
    newest = max((p.stat().st_mtime for p in path.rglob("*") if p.is_file()), default=0.0)
    return RUNNING if time.time() - newest < stale_after_s else STOPPED


def load_run(path: Path, stale_after_s: float = 3600.0) -> Run | None:
    config = _read_json(path / "config.json")
    if not isinstance(config, dict) or not all(isinstance(config.get(k), str) for k in ("method", "task")):
        return None  # unreadable, or not a run's config: the caller reports it
    attempts = []
    if (path / "attempts.jsonl").is_file():
        for line in (path / "attempts.jsonl").read_text().splitlines():
            try:
                attempt = json.loads(line)
            except json.JSONDecodeError:
                break
            if isinstance(attempt, dict):
                attempts.append(attempt)
    summary = _read_json(path / "summary.json")
    rows, problem = read_metrics(path / "metrics.jsonl")
    error = (path / "error.txt").read_text().strip() if (path / "error.txt").is_file() else None
    if isinstance(summary, dict):
        status = FINISHED
    elif error is not None:
        status = FAILED
    else:
        status = _unfinished_status(path, attempts, stale_after_s)
    run = Run(path, config, status, summary if isinstance(summary, dict) else None, rows, None, error, attempts)
    run.initial = _read_json(path / "initial_eval.json")
    if problem:
        run.problems.append(problem)
    if (path / "summary.json").is_file() and run.summary is None:
        run.problems.append("summary.json is unreadable")
    return run


def no_results_folder(results: Path) -> str:
    return (
        f"results folder {results} does not exist; run a grid first (python run_all.py --grid quickstart) "
        "or pass --results DIR"
    )


def load_runs(results: Path, stale_after_s: float = 3600.0, exclude: Path | None = None) -> tuple[list[Run], list[str]]:
    """Every run record (a folder with config.json) under `results`, and warnings about folders left out."""
    results = Path(results)
    if not results.is_dir():
        raise ResultsError(no_results_folder(results))
    runs, warnings = [], []
    for cfg in sorted(results.rglob("config.json")):
        if exclude is not None and exclude.resolve() in cfg.resolve().parents:
            continue
        run = load_run(cfg.parent.resolve(), stale_after_s)
        if run is None:
            warnings.append(
                f"{cfg.parent}: config.json is unreadable or not a run's config (no method and task); "
                "this run is left out of every table"
            )
        else:
            runs.append(run)
    if not runs:
        broken = f" ({len(warnings)} broken: {warnings[0]})" if warnings else ""
        raise ResultsError(f"{results} holds no run records (folders with a config.json){broken}; pass --results DIR")
    return runs, warnings


# ----------------------------------------------------------------------------- metrics


def task_info(task: str) -> tuple[str, bool, bool]:
    """(suite, sparse reward, has a normalised score) from the registry; unknown tasks are 'other'."""
    from envs.tasks import TASKS

    spec = TASKS.get(task)
    if spec is None:
        return "other", False, False
    return spec.suite, spec.sparse_reward, spec.score is not None


def curve_metric(task: str) -> str:
    """What the paper's curves show: success rate for sparse-reward tasks, episode return otherwise."""
    return "eval_success" if task_info(task)[1] else "eval_return"


def normalised_metric(task: str) -> tuple[str, float] | None:
    """A score comparable across tasks (for aggregates), as (key, divisor): success, or D4RL score / 100."""
    _, sparse, scored = task_info(task)
    if sparse:
        return "eval_success", 1.0
    if scored:
        return "eval_score", 100.0
    return None


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def eval_points(run: Run, key: str) -> list[tuple[int, float, float]]:
    """(iteration, env steps, evaluation): the starting policy as iteration -1 at 0 steps, then every evaluation."""
    points = []
    start = _number((run.initial or {}).get(key))
    if start is not None:
        points.append((-1, 0.0, start))
    for row in run.rows:
        v, x, itr = _number(row.get(key)), _number(row.get("env_steps")), row.get("itr")
        if v is not None and x is not None and isinstance(itr, int):
            points.append((itr, x, v))
    return points


def eval_curve(run: Run, key: str) -> list[tuple[float, float]]:
    return [(x, v) for _, x, v in eval_points(run, key)]


def final_value(run: Run, key: str) -> float | None:
    return _number(((run.summary or {}).get("final_eval") or {}).get(key))


def best_value(run: Run, key: str) -> float | None:
    """The best evaluation made during fine-tuning: the highest of the metrics rows' values (the starting policy's
    evaluation, in initial_eval.json, is not one of them)."""
    values = [v for row in run.rows if (v := _number(row.get(key))) is not None]
    return max(values) if values else None


def iteration_seconds(run: Run) -> float | None:
    """The median wall-clock of one fine-tuning iteration over the run's metrics rows (evaluations excluded)."""
    times = [t for row in run.rows if (t := _number(row.get("time_iteration"))) is not None]
    return statistics.median(times) if times else None


def steps_per_iteration(run: Run) -> float | None:
    """Env steps per fine-tuning iteration: the last metrics row's env steps over the number of rows."""
    steps = _number(run.rows[-1].get("env_steps")) if run.rows else None
    return steps / len(run.rows) if steps is not None else None


def value_at_budget(run: Run, key: str, budget: float) -> float | None:
    """The latest evaluation made within `budget` env steps; None if the run never got that far."""
    reached = _number(run.rows[-1].get("env_steps")) if run.rows else 0.0
    if budget > (reached or 0.0):
        return None
    points = [v for x, v in eval_curve(run, key) if x <= budget]
    return points[-1] if points else None


# ----------------------------------------------------------------------------- cells


@dataclass
class Cell:
    task: str
    method: str
    label: str  # method, plus what differs from the task's main variant, plus harness when several
    hparams: dict[str, Any]
    harness: str
    runs: list[Run]

    @property
    def finished(self) -> list[Run]:
        return sorted((r for r in self.runs if r.status == FINISHED), key=lambda r: r.seed)

    def counts(self) -> str:
        """'3 finished' or '2 finished; 1 failed, 1 stopped'."""
        c = Counter(r.status for r in self.runs)
        others = [f"{c[s]} {s}" for s in (FAILED, RUNNING, STOPPED) if c[s]]
        seeds = Counter(r.seed for r in self.finished)
        dup = [f"seed {s} ×{n}" for s, n in sorted(seeds.items()) if n > 1]
        text = f"{c[FINISHED]} finished" + ("; " + ", ".join(others) if others else "")
        return text + (f" (repeated: {', '.join(dup)})" if dup else "")


# The paper's diffusion-based methods (Fig. 5, Tables A1-A2) in its order, then the other policy parameterisations.
METHOD_ORDER = ("dppo", "drwr", "dawr", "dipo", "idql", "dql", "qsm", "gaussian_ppo")


def method_order(method: str) -> tuple[int, str]:
    """Sort key: DPPO, the paper's baselines in its order, Gaussian PPO, then any other method by name."""
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


def _key(hp: dict[str, Any]) -> str:
    return json.dumps(hp, sort_keys=True, default=str)


_ABSENT = object()


def _differences(hp: dict[str, Any], ref: dict[str, Any], absent: str) -> list[str]:
    """`k=v` for each key whose value differs (a key one side lacks differs too; it shows as `absent`)."""
    keys = sorted(k for k in set(hp) | set(ref) if hp.get(k, _ABSENT) != ref.get(k, _ABSENT))
    return [f"{k}={absent if k not in hp else fmt_value(hp[k])}" for k in keys]


def variant_label(method: str, hp: dict[str, Any], ref: dict[str, Any], most: int = 3, absent: str = "absent") -> str:
    """`method [k=v, ...]`: what differs from `ref`; a short hash keeps labels that are cut short unique."""
    diff = _differences(hp, ref, absent)
    if not diff:
        return method
    if len(diff) > most:
        digest = hashlib.sha1(_key(hp).encode()).hexdigest()[:6]
        diff = [*diff[:most], f"… #{digest}"]
    return f"{method} [{', '.join(diff)}]"


def cell_hyperparameters(run: Run, runs: list[Run]) -> dict[str, Any]:
    """A fine-tuning run's hyperparameters. The pre-training's are taken from its own record where that is here
    (the fine-tuning config only repeats pre-training defaults); where it isn't, the checkpoint path stands in."""
    hp = hyperparameters(run.config)
    if not hp["pretrained"]:  # from scratch: no pre-training to describe
        return {k: v for k, v in hp.items() if not k.startswith("pretrain.")}
    if run.stage == "all":  # pre-trained within the run, on its own dataset
        hp["pretrain.dataset"] = run.config.get("dataset")
        return hp
    pre = pretraining_of(run, runs)
    if pre is None:
        hp["pretrain.checkpoint"] = run.config.get("checkpoint")
        return hp
    hp = {k: v for k, v in hp.items() if not k.startswith("pretrain.")}
    hp.update({k: v for k, v in hyperparameters(pre.config).items() if k.startswith("pretrain.")})
    hp["pretrain.dataset"] = pre.config.get("dataset")
    return hp


def make_cells(runs: list[Run]) -> list[Cell]:
    """Group fine-tuning runs into cells; label each variant by how it differs from the task's main one."""
    groups: dict[tuple[str, str], dict[tuple[str, str], list[Run]]] = {}
    hps: dict[str, dict[str, Any]] = {}
    for run in runs:
        if not run.finetunes:
            continue
        hp = cell_hyperparameters(run, runs)
        hps[_key(hp)] = hp
        groups.setdefault((run.task, run.method), {}).setdefault((_key(hp), run.harness), []).append(run)
    cells = []
    for (task, method), by_variant in sorted(groups.items(), key=lambda g: (g[0][0], method_order(g[0][1]))):
        _adopt_unknown_harness(by_variant)
        per_hp: Counter[str] = Counter()
        for (hk, _), rs in by_variant.items():
            per_hp[hk] += sum(r.status == FINISHED for r in rs) * 1000 + len(rs)
        main = max(sorted(per_hp), key=lambda k: per_hp[k])  # most finished runs, then most runs
        several_harnesses = len({h for _, h in by_variant}) > 1
        for (hk, h), rs in sorted(by_variant.items()):
            label = variant_label(method, hps[hk], hps[main]) + (f" @{h}" if several_harnesses else "")
            cells.append(Cell(task, method, label, hps[hk], h, sorted(rs, key=lambda r: (r.seed, r.name))))
    return cells


def _adopt_unknown_harness(by_variant: dict[tuple[str, str], list[Run]]) -> None:
    """Unfinished runs that never noted their harness (those that failed before fine-tuning started, or ran a
    harness too old to note it at start) belong to the task and method's one known harness, if there is one."""
    known = {h for _, h in by_variant if h != "unknown"}
    if len(known) != 1:
        return
    (harness,) = known
    for hk, h in [k for k in by_variant if k[1] == "unknown"]:
        unfinished = [r for r in by_variant[(hk, h)] if r.status != FINISHED]
        finished = [r for r in by_variant.pop((hk, h)) if r.status == FINISHED]
        by_variant.setdefault((hk, harness), []).extend(unfinished)
        if finished:
            by_variant[(hk, h)] = finished


def pretraining_of(run: Run, runs: list[Run]) -> Run | None:
    """The pre-training run whose checkpoint a fine-tuning run started from, if its record is here."""
    ckpt = run.config.get("checkpoint")
    if not ckpt:
        return None
    ckpt_dir = Path(ckpt).parent
    for other in runs:
        if other.stage == "pretrain" and (other.path / "checkpoints") == ckpt_dir:
            return other
    name = ckpt_dir.parent.name  # the record may have moved with its results folder: match by run name
    same_name = [o for o in runs if o.stage == "pretrain" and o.name == name and o.path.parent == run.path.parent]
    return same_name[0] if same_name else None
