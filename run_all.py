"""Run a named grid of experiments: `python run_all.py --grid quickstart [--jobs N] [--dry-run] [--resume]`.

The local launcher runs the grid's runs as parallel `python -m experiments.run`
processes (each with one torch thread), respecting the order pre-train ->
fine-tune, logs each run to `<results>/<grid>/logs/<run>.log`, and prints a
table of pre-trained vs fine-tuned success at the end.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from envs.tasks import UnknownNameError
from experiments.grids import GRIDS, GridRun, get_grid
from experiments.record import read_json

REPO = Path(__file__).resolve().parent


def run_state(results: Path, run: GridRun) -> str:
    d = results / run.name
    if (d / "summary.json").is_file():
        return "done"
    if (d / "error.txt").is_file():
        return "failed"
    if d.is_dir() and any(d.iterdir()):
        return "unfinished"
    return "new"


def launch(results: Path, runs: list[GridRun], jobs: int, resume: bool, force: bool) -> dict[str, str]:
    """Run everything not yet done; returns the final state of every run."""
    logs = results / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    state = {r.name: run_state(results, r) for r in runs}
    pending = [r for r in runs if state[r.name] != "done" or force]
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    for r in runs:
        if r.name not in {p.name for p in pending}:
            print(f"  skip   {r.name} (finished)")
    t_start = time.perf_counter()
    while pending or running:
        for r in list(pending):
            if len(running) >= jobs:
                break
            deps = [state[d] for d in r.after]
            if any(s in ("failed", "blocked") for s in deps):
                state[r.name] = "blocked"
                pending.remove(r)
                print(f"  block  {r.name} (a run it needs failed)")
                continue
            if any(s != "done" for s in deps):
                continue
            flag = ["--force"] if force else (["--resume"] if resume else [])
            cmd = [sys.executable, "-m", "experiments.run", *r.args(results), "progress=false", *flag]
            log = open(logs / f"{r.name}.log", "w")
            running[r.name] = (
                subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env),
                time.time(),
            )
            pending.remove(r)
            print(f"  start  {r.name}")
        time.sleep(0.5)
        for name, (proc, t0) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[name]
            state[name] = "done" if proc.returncode == 0 else "failed"
            tail = ""
            if proc.returncode:
                lines = (logs / f"{name}.log").read_text().strip().splitlines()
                tail = f": {lines[-1] if lines else 'no output'} (log: {logs / f'{name}.log'})"
            elapsed = time.perf_counter() - t_start
            print(f"  {state[name]:6s} {name} in {time.time() - t0:.0f}s [{elapsed / 60:.1f} min]{tail}")
    return state


def fmt(values: list[float]) -> str:
    v = np.array([x for x in values if x is not None], dtype=float)
    if len(v) == 0:
        return "-"
    return f"{v.mean():.3f} ± {v.std():.3f}" if len(v) > 1 else f"{v[0]:.3f}"


def report(results: Path, runs: list[GridRun]) -> str:
    """Mean ± std over seeds of evaluation success before and after fine-tuning."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in runs:
        path = results / r.name / "summary.json"
        if r.overrides.get("stage") == "pretrain" or not path.is_file():
            continue
        s = read_json(path)
        groups.setdefault((s["method"], s["task"]), []).append(s)
    lines = [
        "| method | task | seeds | pre-trained success | fine-tuned success | pre-trained return | fine-tuned return "
        "| env steps | wall-clock (min) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (method, task), ss in sorted(groups.items()):

        def col(when: str, key: str, ss=ss) -> str:
            return fmt([s[when].get(key) for s in ss])

        lines.append(
            f"| {method} | {task} | {len(ss)} | {col('initial_eval', 'eval_success')} | "
            f"{col('final_eval', 'eval_success')} | {col('initial_eval', 'eval_return')} | "
            f"{col('final_eval', 'eval_return')} | {int(np.mean([s['env_steps'] for s in ss]))} | "
            f"{np.mean([s['total_wall_time'] for s in ss]) / 60:.1f} |"
        )
    missing = [r.name for r in runs if not (results / r.name / "summary.json").is_file()]
    if missing:
        lines.append(f"\n{len(missing)} run(s) not finished: {', '.join(missing)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", help=f"one of: {', '.join(GRIDS)}")
    p.add_argument("--list", action="store_true", help="list the grids and exit")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="runs in parallel (default: CPU count)")
    p.add_argument("--results", default="results", help="results root; the grid writes to <results>/<grid>")
    p.add_argument("--dry-run", action="store_true", help="print the runs and exit")
    p.add_argument("--resume", action="store_true", help="skip finished runs, continue unfinished ones")
    p.add_argument("--force", action="store_true", help="delete existing runs of this grid and start over")
    args = p.parse_args(argv)

    if args.list:
        for name, fn in GRIDS.items():
            print(f"{name:12s} {fn.__doc__.strip().splitlines()[0]}")
        return 0
    if not args.grid:
        p.error("--grid NAME is required (see --list)")
    if args.resume and args.force:
        p.error("--resume and --force contradict each other; pick one")
    if args.jobs < 1:
        p.error("--jobs must be at least 1")
    results = Path(args.results) / args.grid
    try:
        runs = get_grid(args.grid, results)
    except UnknownNameError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    if args.dry_run:
        print(f"grid {args.grid}: {len(runs)} runs, {args.jobs} at a time, 1 CPU thread each, into {results}")
        for r in runs:
            after = f"  (after {', '.join(r.after)})" if r.after else ""
            print(f"  [{run_state(results, r)}] {r.name}: {' '.join(r.args(results))}{after}")
        return 0

    existing = [r.name for r in runs if run_state(results, r) != "new"]
    if existing and not (args.resume or args.force):
        print(
            f"error: {len(existing)} run(s) of grid {args.grid} already exist in {results} "
            f"({', '.join(existing[:3])}{'...' if len(existing) > 3 else ''}); "
            "pass --resume to continue them or --force to start over",
            file=sys.stderr,
        )
        return 2
    print(f"grid {args.grid}: {len(runs)} runs, {args.jobs} at a time -> {results}")
    t0 = time.perf_counter()
    state = launch(results, runs, args.jobs, args.resume, args.force)
    print(f"\ngrid {args.grid} took {(time.perf_counter() - t0) / 60:.1f} min\n")
    print(report(results, runs))
    failed = [n for n, s in state.items() if s in ("failed", "blocked")]
    if failed:
        print(
            f"\n{len(failed)} run(s) failed or blocked: {', '.join(failed)}; fix and rerun with --resume",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
