"""Acceptance figures of the seven-method comparison (paper Fig. 5, Table A1) on 2 CPU cores: runs the
`diffusion_rl_mini` grid (avoid_m2 and a short hopper run, DPPO and the six diffusion-RL baselines, 3 seeds,
one pre-trained policy per task), then prints per method and task

- evaluation before fine-tuning, at the end, and the best during training (mean +- std over seeds);
- the diagnostics a non-improving method needs: its losses and Q statistics at the first and last iteration;
- the median per-iteration wall-clock and its ratio to DPPO's, beside the paper's Table A1 ratios;

and the grid's wall-clock, then builds the make_tables report.

    python benchmarks/diffusion_rl_acceptance.py [--results DIR] [--jobs 2] [--no-run]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from analysis.tables import PAPER_TIMES  # noqa: E402
from experiments.grids import DIFFUSION_RL_METHODS  # noqa: E402

PAPER_TABLE_A1 = PAPER_TIMES["gym"][2]  # paper Table A1 (Gym; Hopper, Walker2d, HalfCheetah), its DPPO row included
DIAGNOSTICS = ("actor_loss", "critic_loss", "v_loss", "q_loss", "q_mean", "q_std", "weight_mean", "weight_clipped",
               "action_shift", "q_grad_norm", "approx_kl", "pg_loss", "v_loss")  # fmt: skip


def read_run(path: Path) -> dict | None:
    if not (path / "summary.json").is_file():
        return None
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {"summary": json.loads((path / "summary.json").read_text()), "rows": rows}


def fmt(values: list[float]) -> str:
    values = [v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return "-"
    return f"{np.mean(values):.3g} +- {np.std(values):.2g}"


def fmt_mean(values: list[float | None]) -> str:
    values = [v for v in values if v is not None and np.isfinite(v)]
    return f"{np.mean(values):.3g}" if values else "-"


def metric(task: str) -> str:
    return "eval_success" if task.startswith("avoid") else "eval_return"


def report(grid: Path, tasks: list[str]) -> None:
    for task in tasks:
        key = metric(task)
        print(f"\n## {task}: {key} (mean +- std over seeds)\n")
        header = (
            "method | seeds | before | final | best during training | s / iteration | ratio to DPPO | paper A1 ratio"
        )
        print(f"| {header} |")
        print("|---|---|---|---|---|---|---|---|")
        per_method = {}
        for m in DIFFUSION_RL_METHODS:
            runs = [r for r in (read_run(p) for p in sorted(grid.glob(f"{m}_{task}_s*"))) if r]
            per_method[m] = runs
        dppo_time = np.mean(
            [r["summary"]["time_per_iteration"]["time_iteration"] for r in per_method["dppo"]] or [np.nan]
        )
        paper_dppo = np.mean(PAPER_TABLE_A1["dppo"])
        for m, runs in per_method.items():
            before = [r["summary"]["initial_eval"][key] for r in runs]
            final = [r["summary"]["final_eval"][key] for r in runs]
            best = [max(row[key] for row in r["rows"] if key in row) for r in runs]
            times = [r["summary"]["time_per_iteration"]["time_iteration"] for r in runs]
            ratio = np.mean(times) / dppo_time if times else np.nan
            paper = np.mean(PAPER_TABLE_A1[m]) / paper_dppo
            print(f"| {m} | {len(runs)} | {fmt(before)} | {fmt(final)} | {fmt(best)} | {fmt(times)} | "
                  f"{ratio:.2f} | {paper:.2f} |")  # fmt: skip
        print(f"\n### {task}: losses and statistics, first -> last iteration (mean over seeds)\n")
        for m, runs in per_method.items():
            parts = []
            for k in DIAGNOSTICS:
                first = [r["rows"][0].get(k) for r in runs if r["rows"]]
                last = [r["rows"][-1].get(k) for r in runs if r["rows"]]
                if any(v is not None for v in first):
                    parts.append(f"{k} {fmt_mean(first)} -> {fmt_mean(last)}")
            print(f"- {m}: " + "; ".join(dict.fromkeys(parts)))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default="/tmp/dppo-bench-diffusion-rl")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--no-run", action="store_true", help="only report on the records already in --results")
    args = p.parse_args()
    results = Path(args.results)
    grid = results / "diffusion_rl_mini"
    rc = 0
    if not args.no_run:
        t0 = time.perf_counter()
        cmd = [sys.executable, "run_all.py", "--grid", "diffusion_rl_mini", "--results", str(results),
               "--jobs", str(args.jobs), "--resume"]  # fmt: skip
        rc = subprocess.run(cmd, cwd=REPO).returncode
        print(
            f"\ngrid diffusion_rl_mini: {(time.perf_counter() - t0) / 60:.1f} min wall-clock, {args.jobs} jobs, rc {rc}"
        )
    report(grid, ["avoid_m2", "hopper"])
    cmd = [sys.executable, "-m", "analysis.make_tables", "--results", str(grid), "--out", str(results / "report")]
    tables = subprocess.run(cmd, cwd=REPO)
    print(f"\nmake_tables report: {results / 'report'} (rc {tables.returncode})")
    return rc or tables.returncode


if __name__ == "__main__":
    sys.exit(main())
