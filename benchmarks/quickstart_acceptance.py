"""Acceptance check of the quick start: runs the `quickstart` grid from scratch
and reports its wall-clock, each run's peak memory, and pre-trained vs
fine-tuned success on avoid_m2.

    python benchmarks/quickstart_acceptance.py [--results DIR] [--jobs 2]

Targets (issue 2): whole grid <= 20 min on 2 cores, peak memory per run <= 2 GiB,
pre-trained diffusion success in [0.3, 0.7], DPPO fine-tuned success >= 0.9
(mean of 3 seeds).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default="/tmp/dppo-bench-quickstart")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--keep-data", action="store_true", help="reuse data/avoid_m2 instead of regenerating it")
    args = p.parse_args()
    results = Path(args.results)
    shutil.rmtree(results, ignore_errors=True)
    if not args.keep_data:
        shutil.rmtree(REPO / "data" / "avoid_m2", ignore_errors=True)

    t0 = time.perf_counter()
    cmd = [sys.executable, "run_all.py", "--grid", "quickstart", "--results", str(results), "--jobs", str(args.jobs)]
    proc = subprocess.run(cmd, cwd=REPO)
    wall = time.perf_counter() - t0

    grid = results / "quickstart"
    rows = []
    for summary_path in sorted(grid.glob("*/summary.json")):
        s = json.loads(summary_path.read_text())
        rows.append((summary_path.parent.name, s))
    print("\n| run | peak memory (MiB) | wall-clock (s) | success before | success after |")
    print("|---|---|---|---|---|")
    for name, s in rows:
        before = s.get("initial_eval", {}).get("eval_success", float("nan"))
        after = s["final_eval"]["eval_success"]
        print(f"| {name} | {s['peak_memory_mb']:.0f} | {s['total_wall_time']:.0f} | {before:.2f} | {after:.2f} |")

    def success(prefix: str, key: str) -> list[float]:
        return [s[key]["eval_success"] for n, s in rows if n.startswith(prefix) and key in s]

    pre_diff = success("pretrain_diffusion", "final_eval")
    dppo_before = success("dppo_", "initial_eval")
    dppo_after = success("dppo_", "final_eval")
    gauss_before = success("gaussian_ppo_", "initial_eval")
    gauss_after = success("gaussian_ppo_", "final_eval")
    peak = max((s["peak_memory_mb"] for _, s in rows), default=float("nan"))
    checks = {
        f"grid wall-clock {wall / 60:.1f} min <= 20": wall <= 20 * 60 and proc.returncode == 0,
        f"peak memory per run {peak:.0f} MiB <= 2048": peak <= 2048,
        f"pre-trained diffusion success {np.mean(pre_diff):.2f} (pre-train eval), "
        f"{np.mean(dppo_before):.2f} (fine-tune start, mean of seeds) in [0.3, 0.7]": 0.3
        <= np.mean(dppo_before)
        <= 0.7,
        f"DPPO fine-tuned success {np.mean(dppo_after):.2f} (seeds {dppo_after}) >= 0.9": np.mean(dppo_after) >= 0.9,
    }
    print(f"\nGaussian PPO: {np.mean(gauss_before):.2f} -> {np.mean(gauss_after):.2f} (seeds {gauss_after})")

    # 50-episode evaluations carry +-0.07 of binomial noise; re-measure the pre-trained policy on 500.
    sys.path.insert(0, str(REPO))
    from experiments.evaluate import evaluate_checkpoint

    pre_ckpt = grid / "pretrain_diffusion_avoid_m2" / "checkpoints" / "pretrained.pt"
    if pre_ckpt.is_file():
        precise = evaluate_checkpoint(pre_ckpt, "dppo", "avoid_m2", episodes=500, seed=123)
        print(f"pre-trained diffusion policy over {precise['episodes']} episodes: success {precise['success']:.3f}")
        checks[f"pre-trained diffusion success over 500 episodes {precise['success']:.2f} in [0.3, 0.7]"] = (
            0.3 <= precise["success"] <= 0.7
        )
    for text, ok in checks.items():
        print(f"[{'PASS' if ok else 'FAIL'}] {text}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
