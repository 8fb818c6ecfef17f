"""Acceptance figures of the Robomimic suite (issue 16), on this machine.

    python benchmarks/robomimic_acceptance.py demos [--tasks lift can square transport] [--demos 300] [--workers 2]
    python benchmarks/robomimic_acceptance.py pretrained RUN_DIR [RUN_DIR ...]
    python benchmarks/robomimic_acceptance.py grid --results results   # after: python run_all.py --grid robomimic_mini

`demos` generates each task's demonstrations (data/<task>/, or $DPPO_DATA_DIR),
timing them, and checks the scripted demonstrator's success rate (>= 0.9 on
Lift, Can, Square; >= 0.6 on Transport) and the time (<= 30 min for Lift and
Can). `pretrained` reads finished pre-training runs, e.g. those of
`python -m experiments.run method=dppo task=<task> stage=pretrain scale=cpu results_dir=results/robomimic_pretrain`
(add `pretrain.n_steps=5000` on Can, whose 2-core preset pre-trains 1000 steps for the fine-tuning grid), and
checks the diffusion policies' success (50 deterministic episodes; Lift >= 0.6, Can >= 0.3). `grid` reads a
`robomimic_mini` grid: DPPO's and Gaussian PPO's fine-tuning on Can (DPPO: +0.2 absolute over its pre-trained
policy) and draws the Can learning curves into docs/.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from envs.data.robomimic_demos import generate  # noqa: E402
from envs.robomimic import ROBOMIMIC_TASKS  # noqa: E402
from envs.tasks import data_dir  # noqa: E402
from methods import get_method  # noqa: E402

SCRIPTED_TARGET = {"lift": 0.9, "can": 0.9, "square": 0.9, "transport": 0.6}
TIME_TARGET_S = {"lift": 1800, "can": 1800}
PRETRAINED_TARGET = {"lift": 0.6, "can": 0.3}


def demos(tasks: list[str], n_demos: int, workers: int | None) -> bool:
    ok = True
    print("| task | demos | scripted success | mean length | env steps | workers | wall-clock (min) | target |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for task in tasks:
        t0 = time.perf_counter()
        prov = generate(task, data_dir() / task, n_demos, workers)
        wall = time.perf_counter() - t0
        passed = prov["scripted_success_rate"] >= SCRIPTED_TARGET[task] and wall <= TIME_TARGET_S.get(task, 1e9)
        ok &= passed
        target = f">= {SCRIPTED_TARGET[task]}"
        if task in TIME_TARGET_S:
            target += f", <= {TIME_TARGET_S[task] // 60} min"
        print(
            f"| {task} | {prov['demos']} | {prov['scripted_success_rate']:.3f} ({prov['episodes_tried']} tried) "
            f"| {prov['mean_length']:.0f} | {prov['env_steps']} | {prov['workers']} | {wall / 60:.1f} | {target} "
            f"{'PASS' if passed else 'FAIL'} |"
        )
    return ok


def _finished(g: Path, runs: list[tuple[str, str, str]]):
    """(first column, second column, summary) of each finished run; a row saying so for the others."""
    for a, b, name in runs:
        path = g / name / "summary.json"
        if path.is_file():
            yield a, b, json.loads(path.read_text())
        else:
            print(f"| {a} | {b} | (not finished) |")


def pretrained(runs: list[Path]) -> bool:
    ok = True
    print("| task | policy | pre-training steps | wall-clock (min) | success (50 ep., deterministic) | target |")
    print("|---|---|---:|---:|---:|---|")
    for run in runs:
        if not (run / "summary.json").is_file():
            print(f"| {run} | (not finished) |")
            continue
        s, c = (json.loads((run / f).read_text()) for f in ("summary.json", "config.json"))
        task, kind = s["task"], get_method(s["method"]).policy_kind
        success = s["final_eval"]["eval_success"]
        target = PRETRAINED_TARGET.get(task) if kind == "diffusion" else None
        passed = target is None or success >= target
        ok &= passed
        mark = f">= {target} {'PASS' if passed else 'FAIL'}" if target else ""
        print(
            f"| {task} | {kind} | {c['pretrain']['n_steps']} | {s['pretrain']['wall_time'] / 60:.1f} "
            f"| {success:.2f} | {mark} |"
        )
    return ok


def grid(results: Path) -> bool:
    ok = True
    g = results / "robomimic_mini"
    print("| method | task | pre-trained success | fine-tuned success | change | env steps | wall-clock (min) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    finetuned = [(m, "can", f"{m}_can_s0") for m in ("dppo", "gaussian_ppo")]
    for method, task, f in _finished(g, finetuned):
        before, after = f["initial_eval"]["eval_success"], f["final_eval"]["eval_success"]
        if method == "dppo" and task == "can":
            ok &= after - before >= 0.2
        print(
            f"| {method} | {task} | {before:.2f} | {after:.2f} | {after - before:+.2f} | {f['env_steps']} "
            f"| {f['wall_time'] / 60:.1f} |"
        )
    plot_can(g)
    return ok


def plot_can(g: Path) -> None:
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for method, colour in (("dppo", "tab:red"), ("gaussian_ppo", "tab:blue")):
        run = g / f"{method}_can_s0"
        if not (run / "metrics.jsonl").is_file():
            continue
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        initial = json.loads((run / "initial_eval.json").read_text())["eval_success"]
        points = [(0, initial)] + [(r["env_steps"], r["eval_success"]) for r in rows if "eval_success" in r]
        ax.plot([p[0] / 1e3 for p in points], [p[1] for p in points], "o-", color=colour, label=f"{method}: evaluation")
        steps = np.array([r["env_steps"] for r in rows]) / 1e3
        train = np.array([r["train_success"] for r in rows])
        smooth = np.convolve(train, np.ones(5) / 5, mode="valid")  # 8 noisy training episodes an iteration
        ax.plot(steps[4:], smooth, "--", color=colour, alpha=0.6, label=f"{method}: training (5-iteration mean)")
    ax.set_xlabel("env steps (thousands)")
    ax.set_ylabel("success")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Can, robomimic_mini (2 CPU cores)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = REPO / "docs" / "robomimic_mini_can_learning_curves.png"
    fig.savefig(out, dpi=120)
    print(f"\nwrote {out.relative_to(REPO)}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demos")
    d.add_argument("--tasks", nargs="+", default=list(ROBOMIMIC_TASKS), choices=list(ROBOMIMIC_TASKS))
    d.add_argument("--demos", type=int, default=300)
    d.add_argument("--workers", type=int, default=None)
    t = sub.add_parser("pretrained")
    t.add_argument("runs", nargs="+", type=Path)
    r = sub.add_parser("grid")
    r.add_argument("--results", type=Path, default=REPO / "results")
    args = p.parse_args()
    if args.cmd == "demos":
        ok = demos(args.tasks, args.demos, args.workers)
    elif args.cmd == "pretrained":
        ok = pretrained(args.runs)
    else:
        ok = grid(args.results)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
