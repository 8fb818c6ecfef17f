"""Run a named grid of experiments, locally or on SLURM: `python run_all.py --grid quickstart`.

    python run_all.py --list
    python run_all.py --grid quickstart [--jobs N] [--seeds 0,1,2] [--dry-run] [--resume | --force] [key=value ...]
    python run_all.py --grid gym --launcher slurm [--partition P] [--time MIN] [--gpus-per-run N] [--wait] ...
    python run_all.py --grid gym --status

The local launcher runs the grid's runs as parallel `python -m experiments.run`
processes (each with one torch thread), respecting the order pre-train ->
fine-tune, logs each run to `<results>/<grid>/logs/<run>.log`, and prints a
table of pre-trained vs fine-tuned success at the end. The SLURM launcher is
`experiments/slurm.py`.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from envs.tasks import UnknownNameError
from experiments.grids import GRID_RESOURCES, GRIDS, GridRun, get_grid
from experiments.record import RunLock, read_json
from experiments.run import HELD_EXIT_CODE

REPO = Path(__file__).resolve().parent


def run_state(results: Path, run: GridRun) -> str:
    d = results / run.name
    if RunLock(d).holder():
        return "held"  # another live process is writing it
    if (d / "summary.json").is_file():
        return "done"
    if (d / "error.txt").is_file():
        return "failed"
    if d.is_dir() and any(d.iterdir()):
        return "unfinished"
    return "new"


def launch(
    results: Path, runs: list[GridRun], jobs: int, resume: bool, force: bool, overrides: list[str]
) -> dict[str, str]:
    """Run everything not yet done; returns the final state of every run."""
    logs = results / "logs"
    try:
        logs.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SystemExit(f"error: can't write in {results} ({e.strerror}); pass --results <writable folder>") from None
    state = {r.name: run_state(results, r) for r in runs}
    by_name = {r.name: r for r in runs}
    pending = [r for r in runs if state[r.name] != "done" or force]
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    elsewhere: set[str] = set()  # runs another live process is writing: wait for it, never run them twice
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    for r in runs:
        if r.name not in {p.name for p in pending}:
            print(f"  skip   {r.name} (finished)")
    t_start = time.perf_counter()
    while pending or running or elsewhere:
        for name in list(elsewhere):
            if RunLock(results / name).holder() is None:
                elsewhere.discard(name)
                state[name] = "done" if run_state(results, by_name[name]) == "done" else "failed"
                print(f"  {state[name]:6s} {name} (written by another process)")
        for r in list(pending):
            if state[r.name] == "held" or RunLock(results / r.name).holder():
                pending.remove(r)
                elsewhere.add(r.name)
                state[r.name] = "held"
                print(
                    f"  held   {r.name}: {RunLock(results / r.name).holder() or 'another process'} writes it; waiting"
                )
                continue
            if len(running) >= jobs:
                break
            deps = [state[d] for d in r.after]  # "held" and "running" both mean: wait
            if any(s in ("failed", "blocked") for s in deps):
                state[r.name] = "blocked"
                pending.remove(r)
                print(f"  block  {r.name} (a run it needs failed)")
                continue
            if any(s != "done" for s in deps):
                continue
            flag = ["--force"] if force else (["--resume"] if resume else [])
            cmd = [sys.executable, "-m", "experiments.run", *r.args(results), "progress=false", *overrides, *flag]
            log = open(logs / f"{r.name}.log", "a")  # appended: a run another launcher holds keeps its log whole
            log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} run_all.py pid {os.getpid()}: {' '.join(cmd[1:])}\n")
            log.flush()
            running[r.name] = (
                subprocess.Popen(
                    cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env, preexec_fn=die_with_parent
                ),
                time.time(),
            )
            pending.remove(r)
            state[r.name] = "running"  # not its old "failed": runs waiting on it must wait, not block
            print(f"  start  {r.name}")
        time.sleep(0.5)
        for name, (proc, t0) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[name]
            if proc.returncode == HELD_EXIT_CODE:  # another process took the run first
                elsewhere.add(name)
                state[name] = "held"
                print(f"  held   {name}: another process writes it; waiting")
                continue
            state[name] = "done" if proc.returncode == 0 else "failed"
            tail = ""
            if proc.returncode:
                lines = (logs / f"{name}.log").read_text().strip().splitlines()
                tail = f": {lines[-1] if lines else 'no output'} (log: {logs / f'{name}.log'})"
            elapsed = time.perf_counter() - t_start
            print(f"  {state[name]:6s} {name} in {time.time() - t0:.0f}s [{elapsed / 60:.1f} min]{tail}")
    return state


def die_with_parent() -> None:
    """In a run's process: SIGTERM it when the launcher dies, however it dies (Linux's PR_SET_PDEATHSIG), so no
    run goes on unwatched; a later --resume continues it from its checkpoint."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    except OSError:  # not Linux: runs outlive the launcher; their locks still stop a second writer
        pass


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


# what makes a grid run the run it is; overrides may not change these
GRID_KEYS = ("name", "seed", "method", "task", "stage", "checkpoint", "results_dir")
SLURM_FLAGS = ("partition", "time", "gpus_per_run", "cpus_per_run", "mem", "array_parallelism", "wait")


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes comma-separated integers, e.g. 0,1,2; got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("--seeds needs at least one seed")
    if len(set(seeds)) < len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds lists a seed twice: {text}")
    return seeds


def status_table(results: Path, runs: list[GridRun]) -> tuple[str, dict[str, str]]:
    """Every run's state from its record and, for Slurm runs, the queue (and sacct where it works)."""
    from experiments import slurm

    jobs = slurm.recorded_jobs(results)
    warning = ""
    try:
        queued = slurm.queue_states(list(jobs.values()))
    except slurm.SlurmError as e:
        queued, warning = None, f"\nwarning: the Slurm queue could not be read, so queued runs may show as new: {e}"
    final = slurm.accounting([j for j in jobs.values() if j not in (queued or {})]) if queued is not None else {}
    lines = ["| run | state | iterations | slurm job | detail |", "|---|---|---|---|---|"]
    states = {}
    for r in runs:
        state = run_state(results, r)
        job = jobs.get(r.name, "")
        detail = ""
        if state == "held":
            state, detail = "running", f"held by {RunLock(results / r.name).holder()}"
        elif state != "done" and job in (queued or {}):
            state, _, detail = queued[job].partition(" ")
        elif state == "failed":
            detail = (results / r.name / "error.txt").read_text().strip().splitlines()[-1]
        elif job and queued is not None and state in ("new", "unfinished"):
            # its latest job left the queue with neither a summary nor an error of the run's own
            slurm_state = f"slurm: {final[job].lower()}" if job in final else ""
            if not (results / r.name / "config.json").is_file():
                state = "not run"
                detail = f"job {job} left the queue before the run started; " + (
                    slurm_state or "did a run it needs fail?"
                )
            else:
                state = "failed"
                log = read_jsonl(results / r.name / "logs" / f"slurm-{job}.err")
                detail = slurm_state or (log[-1] if log else f"job {job} left the queue unfinished")
        rows = len(read_jsonl(results / r.name / "metrics.jsonl"))
        cfg = results / r.name / "config.json"
        total = read_json(cfg)["train"]["n_iterations"] if cfg.is_file() else ""
        its = "-" if r.overrides.get("stage") == "pretrain" else f"{rows}/{total}" if total else str(rows)
        states[r.name] = state
        lines.append(f"| {r.name} | {state} | {its} | {job} | {detail.strip('() ')} |")
    counts = {s: list(states.values()).count(s) for s in dict.fromkeys(states.values())}
    lines.append("\n" + ", ".join(f"{n} {s}" for s, n in counts.items()) + warning)
    return "\n".join(lines), states


def read_jsonl(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.is_file() else []


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("overrides", nargs="*", help="key=value config overrides applied to every run of the grid")
    p.add_argument("--grid", help=f"one of: {', '.join(GRIDS)}")
    p.add_argument("--list", action="store_true", help="list the grids and exit")
    p.add_argument("--launcher", choices=("local", "slurm"), default="local")
    p.add_argument("--seeds", type=parse_seeds, help="fine-tuning seeds, e.g. 0,1,2 (default: the grid's)")
    p.add_argument("--results", default="results", help="results root; the grid writes to <results>/<grid>")
    p.add_argument("--dry-run", action="store_true", help="print the runs and their resources, submit nothing")
    p.add_argument("--resume", action="store_true", help="skip finished runs, continue unfinished, rerun failed")
    p.add_argument("--force", action="store_true", help="cancel and delete this grid's runs and start over")
    p.add_argument("--status", action="store_true", help="print every run's state and exit")
    local = p.add_argument_group("local launcher")
    local.add_argument("--jobs", type=int, help="runs in parallel (default: CPU count)")
    sl = p.add_argument_group("slurm launcher (defaults: the grid's, see --dry-run)")
    sl.add_argument("--partition")
    sl.add_argument("--time", type=int, metavar="MIN", help="time limit per run; longer runs are requeued")
    sl.add_argument("--gpus-per-run", type=int)
    sl.add_argument("--cpus-per-run", type=int)
    sl.add_argument("--mem", type=float, metavar="GB", help="memory per run")
    sl.add_argument("--array-parallelism", type=int, help="tasks of each array running at once")
    sl.add_argument("--wait", action="store_true", help="block until the submitted runs leave the queue")
    args = p.parse_args(argv)

    if args.list:
        width = max(map(len, GRIDS))
        for name, fn in GRIDS.items():
            # the docstring's first sentence ("Fig. 5" and "Sec. 6" don't end one)
            summary = re.split(r"(?<!Fig)(?<!Sec)\. ", " ".join(fn.__doc__.split()))[0].rstrip(".")
            print(f"{name:{width}s}  {summary}")
        return 0
    if not args.grid:
        p.error("--grid NAME is required (see --list)")
    if args.resume and args.force:
        p.error("--resume and --force contradict each other; pick one")
    if args.status and (args.resume or args.force or args.dry_run):
        p.error("--status only reads; drop --resume/--force/--dry-run")
    slurm_given = [f"--{f.replace('_', '-')}" for f in SLURM_FLAGS if getattr(args, f) not in (None, False)]
    if args.launcher == "local" and slurm_given:
        p.error(f"{', '.join(slurm_given)} only apply with --launcher slurm")
    if args.launcher == "slurm" and args.jobs is not None:
        p.error("--jobs is for --launcher local; with slurm use --array-parallelism")
    for flag in ("jobs", "time", "cpus_per_run", "mem", "array_parallelism"):
        if getattr(args, flag) is not None and getattr(args, flag) <= 0:
            p.error(f"--{flag.replace('_', '-')} must be positive")
    if args.gpus_per_run is not None and args.gpus_per_run < 0:
        p.error("--gpus-per-run must be 0 or more")
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        p.error(f"overrides must look like key=value; got {' '.join(bad)}")
    fixed = [o for o in args.overrides if o.split("=", 1)[0] in GRID_KEYS]
    if fixed:
        p.error(
            f"{', '.join(fixed)}: the grid sets {', '.join(GRID_KEYS)} per run (use --seeds, --results or another grid)"
        )
    # absolute: local runs start in the repo and Slurm jobs anywhere, whatever the caller's directory
    results = (Path(args.results) / args.grid).resolve()
    try:
        runs = get_grid(args.grid, results, args.seeds)
    except UnknownNameError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    if args.status:
        print(status_table(results, runs)[0])
        return 0
    if args.launcher == "slurm":
        return launch_slurm(args, results, runs)

    jobs = args.jobs or os.cpu_count() or 1
    if args.dry_run:
        print(f"grid {args.grid}: {len(runs)} runs, {jobs} at a time, 1 CPU thread each, into {results}")
        print_runs(results, runs, args.overrides)
        return 0
    if refuse_existing(args, results, runs):
        return 2
    print(f"grid {args.grid}: {len(runs)} runs, {jobs} at a time -> {results}")
    t0 = time.perf_counter()
    state = launch(results, runs, jobs, args.resume, args.force, args.overrides)
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


def print_runs(results: Path, runs: list[GridRun], extra: list[str]) -> None:
    """--dry-run: each run's state, its command-line overrides and what it waits for."""
    for r in runs:
        after = f"  (after {', '.join(r.after)})" if r.after else ""
        print(f"  [{run_state(results, r)}] {r.name}: {' '.join(r.args(results) + extra)}{after}")


def refuse_existing(args: argparse.Namespace, results: Path, runs: list[GridRun]) -> bool:
    existing = [r.name for r in runs if run_state(results, r) != "new"]
    if existing and not (args.resume or args.force):
        print(
            f"error: {len(existing)} run(s) of grid {args.grid} already exist in {results} "
            f"({', '.join(existing[:3])}{'...' if len(existing) > 3 else ''}); "
            "pass --resume to continue them or --force to start over",
            file=sys.stderr,
        )
        return True
    return False


def launch_slurm(args: argparse.Namespace, results: Path, runs: list[GridRun]) -> int:
    from experiments import slurm

    given = {
        "partition": args.partition,
        "time_min": args.time,
        "gpus_per_run": args.gpus_per_run,
        "cpus_per_run": args.cpus_per_run,
        "mem_gb": args.mem,
        "array_parallelism": args.array_parallelism,
    }
    res = slurm.Resources(**{**GRID_RESOURCES.get(args.grid, {}), **{k: v for k, v in given.items() if v is not None}})
    # one torch thread per CPU the run asked for, unless the user set threads= themselves
    extra = list(args.overrides)
    if not any(o.startswith("threads=") for o in extra):
        extra.append(f"threads={res.cpus_per_run}")
    if args.dry_run:
        n_arrays = len(slurm.arrays(runs))
        print(f"grid {args.grid}: {len(runs)} runs in {n_arrays} array job(s), each run: {res.describe()}")
        print_runs(results, runs, extra)
        return 0
    try:
        slurm.require_sbatch()
        if res.partition:
            slurm.check_partition(res.partition)
        jobs = slurm.recorded_jobs(results)
        queued = slurm.queue_states([jobs[r.name] for r in runs if r.name in jobs])
        in_queue = [r.name for r in runs if jobs.get(r.name) in queued]
        if args.force:
            # wait for them to go: a cancelled task may still write to the directory about to be deleted
            slurm.cancel(sorted({jobs[n].split("_")[0] for n in in_queue}), wait_s=120)
            for r in runs:
                shutil.rmtree(results / r.name, ignore_errors=True)
            (results / slurm.JOBS_FILE).unlink(missing_ok=True)
            in_queue = []
        elif in_queue and not args.resume:
            print(
                f"error: {len(in_queue)} run(s) of grid {args.grid} are already in the Slurm queue "
                f"({', '.join(in_queue[:3])}); see --status, or pass --force to cancel and start over",
                file=sys.stderr,
            )
            return 2
        if refuse_existing(args, results, runs):
            return 2
        todo = [r for r in runs if run_state(results, r) != "done" and r.name not in in_queue]
        for r in runs:
            if r.name in in_queue:
                print(f"  skip   {r.name} (already queued as {jobs[r.name]})")
            elif r not in todo:
                print(f"  skip   {r.name} (finished)")
        if not todo:
            print(f"grid {args.grid}: nothing to submit")
        else:
            print(f"grid {args.grid}: submitting {len(todo)} run(s) ({res.describe()} each) -> {results}")
            slurm.submit(args.grid, results, todo, extra, res, queued={n: jobs[n] for n in in_queue})
        if not args.wait:
            print(f"follow with: python run_all.py --grid {args.grid} --results {args.results} --status")
            return 0
        slurm.wait(results, [r.name for r in runs])
    except slurm.SlurmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    table, states = status_table(results, runs)
    print(table + "\n\n" + report(results, runs))
    return 0 if all(s == "done" for s in states.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
