"""Acceptance figures of the SLURM launcher (issue 4), against a local single-node Slurm.

    python benchmarks/slurm_acceptance.py [--results /tmp/slurm_acc]

Starts slurmctld/slurmd/munged under <results>/cluster (tests/local_slurm.py),
then measures: (1) the 6-run `smoke` grid (seeds 0,1) through Slurm, (2) the
2-run `smoke_dppo` grid with its fine-tuning task preempted (scancel
--signal=USR2) while paused after iteration 3, (3) `--dry-run` of the
paper-scale `gym` grid, timed over 5 calls. Prints a table and exits non-zero on any miss.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from experiments.faults import PAUSE_AFTER_ITR  # noqa: E402
from tests.local_slurm import start, stop  # noqa: E402
from tests.waiting import deliver_when_signalled, wait_for, wait_until_paused  # noqa: E402


def run_all(env, *args):
    return subprocess.run([sys.executable, "run_all.py", *args], cwd=REPO, env=env, capture_output=True, text=True)


def itrs(run: Path) -> list[int]:
    return [json.loads(x)["itr"] for x in (run / "metrics.jsonl").read_text().splitlines()]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default="/tmp/slurm_acc")
    args = p.parse_args()
    root = Path(args.results)
    shutil.rmtree(root, ignore_errors=True)
    env = {**os.environ, **start(root / "cluster")}
    rows, ok = [], True
    try:
        t0 = time.perf_counter()
        out = run_all(env, "--grid", "smoke", "--launcher", "slurm", "--seeds", "0,1", "--results", str(root), "--wait")
        wall = time.perf_counter() - t0
        done = [d for d in (root / "smoke").iterdir() if (d / "summary.json").is_file()]
        passed = out.returncode == 0 and len(done) == 6
        ok &= passed
        rows.append(("6-run grid (smoke, seeds 0,1)", f"{len(done)}/6 complete records in {wall:.0f} s", passed))

        n = 12
        grid = ["--grid", "smoke_dppo", "--launcher", "slurm", "--results", str(root), "--time", "60"]
        t0 = time.perf_counter()
        run_all({**env, PAUSE_AFTER_ITR: "3"}, *grid, f"train.n_iterations={n}")
        run = root / "smoke_dppo" / "dppo_avoid_m2_s0"
        pid = wait_until_paused(run)  # after iteration 3: preempted mid-way, however fast the machine
        killed_at = len(itrs(run))
        job = json.loads((root / "smoke_dppo" / "slurm_jobs.json").read_text())[1]["job_id"]
        subprocess.run(["scancel", "--signal=USR2", job], env=env, check=True)
        deliver_when_signalled(pid, "USR2 from scancel")
        queue = ["squeue", "-h"]
        wait_for(
            lambda: not subprocess.run(queue, env=env, capture_output=True, text=True).stdout.strip(),
            600,
            "the grid to leave the Slurm queue",
        )
        wall = time.perf_counter() - t0
        both = [d for d in (root / "smoke_dppo").iterdir() if (d / "summary.json").is_file()]
        summary = run / "summary.json"
        attempts = json.loads(summary.read_text())["attempts"] if summary.is_file() else []
        got = itrs(run)
        passed = len(both) == 2 and got == list(range(n)) and len(attempts) == 2
        ok &= passed
        resumed = attempts[1]["start_itr"] if len(attempts) > 1 else None
        rows.append(
            (
                "2-run grid, fine-tune preempted",
                f"{len(both)}/2 complete; killed after {killed_at} rows, resumed at iteration {resumed}; "
                f"metrics itr {got[0]}..{got[-1]}, {len(got)} rows, {len(set(got))} distinct; {wall:.0f} s",
                passed,
            )
        )
    finally:
        stop(root / "cluster")

    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        out = run_all(env, "--grid", "gym", "--launcher", "slurm", "--dry-run", "--results", str(root))
        times.append(time.perf_counter() - t0)
    first = out.stdout.splitlines()[0]
    passed = out.returncode == 0 and statistics.median(times) < 5
    ok &= passed
    rows.append(("--dry-run of gym", f"median {statistics.median(times):.2f} s over 5: {first}", passed))

    print("| check | measured | pass |\n|---|---|---|")
    for name, measured, passed in rows:
        print(f"| {name} | {measured} | {'PASS' if passed else 'FAIL'} |")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
