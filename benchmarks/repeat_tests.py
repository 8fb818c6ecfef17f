"""Run tests several times in a row, optionally with the cores kept busy, to show they don't flake.

    python benchmarks/repeat_tests.py tests/test_slurm.py --runs 5
    python benchmarks/repeat_tests.py tests/test_slurm.py --runs 2 --busy 2   # 2 spinning processes beside

Each run is a fresh `python -m pytest -q -p no:cacheprovider <paths>`. Prints one row per run (result,
wall-clock, pytest's summary line) and the median; exits non-zero if any run failed.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def spin() -> None:
    while True:
        pass


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="+", help="test files or node ids, as pytest takes them")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--busy", type=int, default=0, help="processes spinning on a core each for the whole time")
    args = p.parse_args()
    spinners = [mp.Process(target=spin, daemon=True) for _ in range(args.busy)]
    for s in spinners:
        s.start()
    rows, walls = [], []
    try:
        for i in range(args.runs):
            t0 = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args.paths],
                cwd=REPO,
                capture_output=True,
                text=True,
            )
            wall = time.perf_counter() - t0
            walls.append(wall)
            last = (out.stdout.strip().splitlines() or ["(no output)"])[-1]
            # all skipped (e.g. no Slurm outside CI) exits 0 too, but proves nothing
            ok = out.returncode == 0 and " passed" in last
            rows.append((i + 1, "pass" if ok else f"FAIL ({out.returncode}: {last})", wall, last))
            print(f"| {i + 1} | {rows[-1][1]} | {wall:.0f} s | {last} |", flush=True)
            if not ok:
                print(out.stdout[-4000:], flush=True)
    finally:
        for s in spinners:
            s.terminate()
    failed = sum(r[1] != "pass" for r in rows)
    print(
        f"\n{args.runs - failed}/{args.runs} passed with {args.busy} busy process(es); "
        f"median {statistics.median(walls):.0f} s"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
