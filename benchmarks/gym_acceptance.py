"""Acceptance figures of the Gym suite (issue 3), on this machine.

    python benchmarks/gym_acceptance.py datasets [--tasks hopper,walker2d,halfcheetah] [--transitions 200000]
    python benchmarks/gym_acceptance.py grid --results results      # after: python run_all.py --grid gym_mini

`datasets` regenerates each task's medium dataset from the committed behaviour
policy, timing it, and checks the mean episode return against the target range.
`grid` reads a finished (or partial) `gym_mini` grid: pre-trained return vs the
dataset's mean (target: within 25%), and DPPO's final vs pre-trained evaluation
return (target on Hopper: +15%).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from envs.data.gym_medium import MEDIUM, write_dataset  # noqa: E402
from envs.tasks import data_dir  # noqa: E402


def datasets(tasks: list[str], transitions: int) -> bool:
    ok = True
    print("| task | transitions | episodes | mean return ± std | target | regeneration (s) |")
    print("|---|---:|---:|---|---|---:|")
    for task in tasks:
        t0 = time.perf_counter()
        out = write_dataset(task, data_dir() / task, n_transitions=transitions)
        wall = time.perf_counter() - t0
        prov = json.loads((out / "provenance.json").read_text())
        lo, hi = MEDIUM[task].accept
        mean = prov["episode_return_mean"]
        passed = lo <= mean <= hi and wall <= 600
        ok &= passed
        print(
            f"| {task} | {prov['transitions']} | {prov['episodes']} | {mean:.0f} ± {prov['episode_return_std']:.0f} "
            f"| {lo:.0f}-{hi:.0f} | {wall:.0f} | {'PASS' if passed else 'FAIL'}"
        )
    return ok


def grid(results: Path) -> bool:
    ok = True
    g = results / "gym_mini"
    print(
        "| task | dataset mean return | pre-trained eval return | ratio | DPPO final eval return | change | env steps |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for task in MEDIUM:
        pre = g / f"pretrain_diffusion_{task}" / "summary.json"
        if not pre.is_file():
            print(f"| {task} | (pre-training not finished) |")
            continue
        s = json.loads(pre.read_text())
        prov = json.loads((Path(s["pretrain"]["dataset"]).parent / "provenance.json").read_text())
        data_mean = prov["episode_return_mean"]
        pre_ret = s["final_eval"]["eval_return"]
        ratio = pre_ret / data_mean
        ok &= abs(ratio - 1) <= 0.25
        ft = g / f"dppo_{task}_s0" / "summary.json"
        if ft.is_file():
            f = json.loads(ft.read_text())
            before, after = f["initial_eval"]["eval_return"], f["final_eval"]["eval_return"]
            change = f"{(after - before) / abs(before):+.0%}"
            if task == "hopper":
                ok &= after >= 1.15 * before
            tail = f"{after:.0f} | {change} | {f['env_steps']}"
        else:
            tail = "(not finished) | | "
        print(f"| {task} | {data_mean:.0f} | {pre_ret:.0f} | {ratio:.2f} | {tail} |")
    return ok


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    d = sub.add_parser("datasets")
    d.add_argument("--tasks", default="hopper,walker2d,halfcheetah")
    d.add_argument("--transitions", type=int, default=200_000)
    g = sub.add_parser("grid")
    g.add_argument("--results", default="results")
    args = p.parse_args()
    if args.what == "datasets":
        ok = datasets(args.tasks.split(","), args.transitions)
    else:
        ok = grid(Path(args.results))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
