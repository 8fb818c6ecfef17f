"""Fault injection: runs killed with SIGKILL at random moments and resumed must end exactly as uninterrupted runs.

    python benchmarks/fault_injection.py [--runs 5] [--kills-per-run 12] [--seed 0] [--out DIR] [--methods dppo,dql]

For each of `--runs` tiny Avoid runs (stage=all: pre-training, then one of `--methods` in turn, by default DPPO and
Gaussian PPO; off-policy ones with a small buffer and batch, so that their replay buffer is part of what resumes;
each its own seed):
1. an uninterrupted reference run;
2. the same run started, SIGKILLed at a random moment (uniform up to 70% of its reference wall-clock left, so kills
   land in start-up, pre-training, the switch to fine-tuning, rollouts, updates, checkpoint writes and the final
   evaluation), resumed with --resume, killed again, ... `--kills-per-run` times, then resumed to the end;
3. one kill right after the last checkpoint, before the summary (the run pauses there: experiments/faults.py);
4. kills aimed at the moment pretrained.pt appears, and at a checkpoint file being written (if one is seen).
Then a grid: its launcher SIGKILLed mid-grid (its runs die with it), and two launchers started at once with --resume.

Every run must end with metrics rows (timings aside), evaluation episodes (rollouts_*.json) and summary evaluations
identical to its reference, with each iteration exactly once. Prints one line per run and the totals; exit 1 on any
difference.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from experiments.faults import PAUSE_AFTER_ITR  # noqa: E402
from tests.waiting import process_state  # noqa: E402

TINY = [
    "task=avoid_m2",
    "pretrain.n_steps=300",
    "policy.hidden=[64,64,64]",
    "train.n_envs=4",
    "train.eval_episodes=8",
    "train.n_iterations=10",
    "train.save_every=2",
    "train.eval_every=3",
    "progress=false",
]
# Off-policy methods: a small buffer and batch, so each iteration takes gradient steps from its replay buffer.
OFF_POLICY_TINY = [
    "algo.batch_size=32",
    "algo.buffer_size=1000",
    "algo.replay_ratio=4",
    "algo.critic_hidden=[32,32,32]",
]
TIMINGS = {"wall_time", "time_iteration", "time_sample", "time_env", "time_update"}


def run_args(results: Path, name: str, method: str, seed: int) -> list[str]:
    from methods import get_method

    extra = OFF_POLICY_TINY if hasattr(get_method(method).config_cls, "buffer_size") else []
    return [f"method={method}", f"seed={seed}", f"name={name}", f"results_dir={results}", *TINY, *extra]


def start(args: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "experiments.run", *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def fingerprint(run_dir: Path) -> dict:
    """What must not change with interruptions: rows without timings, evaluation episodes, summary evaluations."""
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "rows": [{k: v for k, v in r.items() if k not in TIMINGS} for r in rows],
        "episodes": {p.name: json.loads(p.read_text()) for p in sorted(run_dir.glob("rollouts_*.json"))},
        "summary": {k: summary.get(k) for k in ("initial_eval", "final_eval", "n_iterations", "env_steps")},
        "pretrain_loss": (summary.get("pretrain") or {}).get("final_loss"),
    }


def compare(name: str, got: Path, ref: Path) -> list[str]:
    a, b = fingerprint(got), fingerprint(ref)
    itrs = [r["itr"] for r in a["rows"]]
    problems = [] if itrs == list(range(len(b["rows"]))) else [f"iterations {itrs}"]
    problems += [f"{k} differ" for k in a if a[k] != b[k]]
    return [f"{name}: {p}" for p in problems]


def phase(run_dir: Path) -> str:
    """Where a run was when it was killed, from what its record held then."""
    ckpt = run_dir / "checkpoints"
    if any(ckpt.glob("*.tmp")):
        return "writing a checkpoint"
    if not (ckpt / "pretrained.pt").is_file():
        return "start-up or pre-training"
    if not (run_dir / "initial_eval.json").is_file():
        return "between pre-training and fine-tuning"
    rows = len((run_dir / "metrics.jsonl").read_text().splitlines()) if (run_dir / "metrics.jsonl").is_file() else 0
    return "after the last iteration" if rows >= 10 else "fine-tuning"


def killed_and_resumed(
    results: Path, name: str, method: str, seed: int, kills: int, span: float, rng, phases: Counter
) -> int:
    """Kill the run `kills` times at random moments, resuming each time, then let it finish. Returns kills done."""
    args, done = run_args(results, name, method, seed), 0
    first = True
    while True:
        proc = start(args if first else [*args, "--resume"])
        first = False
        if done < kills:
            rows = results / name / "metrics.jsonl"
            left = 1 - (len(rows.read_text().splitlines()) / 10 if rows.is_file() else 0)  # of the run's work
            deadline = time.monotonic() + rng.uniform(0.3, max(3.0, 0.7 * span * left))
            while time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.02)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
                phases[phase(results / name)] += 1
                done += 1
                continue
        proc.wait()
        if (results / name / "summary.json").is_file():
            return done
        if proc.returncode not in (0, -9):
            raise RuntimeError(f"{name} failed: {proc.stderr.read()[-2000:]}")


def killed_after_last_checkpoint(results: Path, name: str, method: str, seed: int) -> None:
    args = run_args(results, name, method, seed)
    proc = start(args, {PAUSE_AFTER_ITR: "9"})  # the last iteration: its checkpoint is written, no summary yet
    run_dir = results / name
    while process_state(proc.pid) != "T":
        if proc.poll() is not None:
            raise RuntimeError(f"{name} ended before its pause point")
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    assert not (run_dir / "summary.json").exists()
    if subprocess.run(
        [sys.executable, "-m", "experiments.run", *args, "--resume"], cwd=REPO, capture_output=True
    ).returncode:
        raise RuntimeError(f"{name}: resume after the last checkpoint failed")


def kill_when(proc: subprocess.Popen, seen) -> bool:
    """SIGKILL `proc` as soon as `seen()` holds (polled every millisecond); False if it ended first."""
    while proc.poll() is None:
        if seen():
            proc.kill()
            proc.wait()
            return True
        time.sleep(0.001)
    return False


def killed_in_windows(results: Path, name: str, method: str, seed: int) -> list[str]:
    """Kills aimed at two short windows: right after pretrained.pt is written (before fine-tuning starts), and
    while a checkpoint file is being written (caught only if a write lasts long enough to be seen)."""
    args, ckpt = run_args(results, name, method, seed), results / name / "checkpoints"
    hit = []
    if kill_when(start(args), lambda: (ckpt / "pretrained.pt").is_file()):
        hit.append("right after pre-training")
    if kill_when(start([*args, "--resume"]), lambda: any(ckpt.glob("*.tmp"))):
        hit.append("writing a checkpoint")
    if subprocess.run(
        [sys.executable, "-m", "experiments.run", *args, "--resume"], cwd=REPO, capture_output=True
    ).returncode:
        raise RuntimeError(f"{name}: the last resume failed")
    return hit


def grid(results: Path, rng: random.Random) -> tuple[list[str], int]:
    """smoke_dppo (pre-training + 2 fine-tunings): reference; launcher killed mid-grid; two launchers at once."""
    cmd = [sys.executable, "run_all.py", "--grid", "smoke_dppo", "--seeds", "0,1"]
    subprocess.run([*cmd, "--results", str(results / "ref")], cwd=REPO, check=True, capture_output=True)
    t0 = time.monotonic()
    launcher = subprocess.Popen([*cmd, "--results", str(results / "hit")], cwd=REPO, stdout=subprocess.DEVNULL)
    time.sleep(rng.uniform(3, 12))
    launcher.kill()  # SIGKILL: its runs get SIGTERM from the kernel (PR_SET_PDEATHSIG)
    launcher.wait()
    killed_at = time.monotonic() - t0
    grid_dir = results / "hit" / "smoke_dppo"
    finished = sorted(d.name for d in grid_dir.iterdir() if (d / "summary.json").is_file()) if grid_dir.is_dir() else []
    both = [
        subprocess.Popen([*cmd, "--results", str(results / "hit"), "--resume"], cwd=REPO, stdout=subprocess.PIPE)
        for _ in range(2)
    ]
    codes = [p.wait() for p in both]
    problems = [f"grid: launcher exited {c}" for c in codes if c != 0]
    for run in ("pretrain_diffusion_avoid_m2", "dppo_avoid_m2_s0", "dppo_avoid_m2_s1"):
        got, ref = results / "hit" / "smoke_dppo" / run, results / "ref" / "smoke_dppo" / run
        if run.startswith("pretrain"):
            same = (
                json.loads((got / "summary.json").read_text())["final_eval"]
                == json.loads((ref / "summary.json").read_text())["final_eval"]
            )
            problems += [] if same else [f"grid {run}: evaluation differs"]
        else:
            problems += compare(f"grid {run}", got, ref)
    verdict = "identical" if not problems else "DIFFERENT"
    print(
        f"grid smoke_dppo: launcher killed after {killed_at:.1f} s (finished then: {finished or 'none'}), "
        f"then 2 launchers at once with --resume (exit {codes}): {verdict}"
    )
    return problems, 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--kills-per-run", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--methods", default="dppo,gaussian_ppo", help="comma-separated; runs cycle through them")
    args = p.parse_args()
    methods = args.methods.split(",")
    rng = random.Random(args.seed)
    results = args.out or Path(tempfile.mkdtemp(prefix="fault-injection-"))
    problems, kills, t_start, phases = [], 0, time.monotonic(), Counter()
    for i in range(args.runs):
        method = methods[i % len(methods)]
        t0 = time.monotonic()
        ref = subprocess.run([sys.executable, "-m", "experiments.run", *run_args(results, f"ref{i}", method, i)],
                             cwd=REPO, capture_output=True, text=True)  # fmt: skip
        if ref.returncode:
            raise RuntimeError(ref.stderr[-2000:])
        span = time.monotonic() - t0
        n = killed_and_resumed(results, f"hit{i}", method, i, args.kills_per_run, span, rng, phases)
        killed_after_last_checkpoint(results, f"late{i}", method, i)
        aimed = killed_in_windows(results, f"aim{i}", method, i)
        phases.update(f"aimed: {a}" for a in aimed)
        kills += n + 1 + len(aimed)
        found = compare(f"hit{i}", results / f"hit{i}", results / f"ref{i}")
        found += compare(f"late{i}", results / f"late{i}", results / f"ref{i}")
        found += compare(f"aim{i}", results / f"aim{i}", results / f"ref{i}")
        attempts = len((results / f"hit{i}" / "attempts.jsonl").read_text().splitlines())
        verdict = "identical" if not found else "DIFFERENT: " + "; ".join(found)
        print(
            f"run {i} ({method}, seed {i}): reference {span:.1f} s; {n} random kills ({attempts} fine-tuning "
            f"attempts) + 1 after the last checkpoint + aimed at: {', '.join(aimed) or 'none caught'}: {verdict}"
        )
        problems += found
    found, launcher_kills = grid(results, rng)
    problems += found
    minutes = (time.monotonic() - t_start) / 60
    print(
        f"\n{kills} run kills over {args.runs} runs and {launcher_kills} launcher kill + 2 concurrent launchers "
        f"in {minutes:.1f} min: {len(problems)} difference(s); records in {results}"
    )
    print("kills by where the run was: " + ", ".join(f"{k} {v}" for k, v in phases.most_common()))
    for problem in problems:
        print(f"  {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
