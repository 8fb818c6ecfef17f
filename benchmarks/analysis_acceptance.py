"""Acceptance check of analysis/make_tables.py (issue 5).

    python benchmarks/analysis_acceptance.py [--repeats 3] [--quickstart DIR]

1. Builds every table and figure from the committed fixture (tests/fixtures/records) in a fresh
   interpreter, `--repeats` times, and reports the median wall-clock. Target: <= 30 s on 2 cores.
2. With --quickstart DIR (the --results of a finished `python run_all.py --grid quickstart`), builds
   the tables from those records and checks that the Avoid final-performance table, its learning
   curves and the wall-clock table for DPPO and Gaussian PPO are there; prints them.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "records"


def make_tables(results: Path, out: Path) -> float:
    t0 = time.perf_counter()
    cmd = [sys.executable, "analysis/make_tables.py", "--results", str(results), "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"make_tables failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return elapsed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quickstart", type=Path, default=None, help="results folder of a finished quickstart grid")
    args = p.parse_args()
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        times = [make_tables(FIXTURE, Path(tmp) / f"fixture{i}") for i in range(args.repeats)]
        tables = sorted(f.stem for f in (Path(tmp) / "fixture0" / "tables").glob("*.csv"))
        median = statistics.median(times)
        print(f"fixture: {len(tables)} tables; wall-clock per build {', '.join(f'{t:.1f}' for t in times)} s")
        print(f"  median {median:.1f} s (target <= 30 s) -> {'OK' if median <= 30 else 'FAIL'}")
        ok &= median <= 30
        if args.quickstart is not None:
            out = Path(tmp) / "quickstart"
            print(f"quickstart records ({args.quickstart}): built in {make_tables(args.quickstart, out):.1f} s")
            wanted = [
                out / "tables" / "final_performance_avoid_m2.md",
                out / "tables" / "wallclock_d3il.md",
                out / "figures" / "learning_curves_avoid_m2.png",
                out / "figures" / "avoid_trajectories_avoid_m2.png",
            ]
            for path in wanted:
                print(f"  {'OK  ' if path.is_file() else 'MISSING'} {path.relative_to(out)}")
                ok &= path.is_file()
            wall = (out / "tables" / "wallclock_d3il.md").read_text() if wanted[1].is_file() else ""
            methods_ok = "| dppo |" in wall and "| gaussian_ppo |" in wall
            print(f"  wall-clock rows for dppo and gaussian_ppo: {'OK' if methods_ok else 'MISSING'}")
            ok &= methods_ok
            for path in wanted[:2]:
                if path.is_file():
                    print("\n" + path.read_text())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
