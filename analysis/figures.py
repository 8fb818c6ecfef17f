"""Figures: learning curves per task (seaborn, like the paper's Figs. 5-7) and Avoid paths (like Fig. 9)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from analysis.records import Cell, curve_metric, eval_points, task_info
from analysis.tables import YLABEL

FORMATS = ("png", "pdf")


def _save(fig, out_dir: Path, stem: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in FORMATS:
        path = out_dir / f"{stem}.{ext}"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def curve_frame(cells: list[Cell], task: str) -> pd.DataFrame:
    """Long table of the finished runs' evaluations. Runs of a cell evaluate at the same iterations but not at
    exactly the same env steps, so each evaluation is placed at its iteration's mean env steps over the seeds."""
    key = curve_metric(task)
    frames = []
    for c in (c for c in cells if c.task == task):
        runs = c.finished
        points = [eval_points(r, key) for r in runs]
        steps: dict[int, list[float]] = defaultdict(list)
        for itr, x, _ in (p for pts in points for p in pts):
            steps[itr].append(x)
        label = f"{c.label} (n={len(runs)})"
        for pts in points:
            if pts:
                x = [float(np.mean(steps[itr])) for itr, _, _ in pts]
                frames.append(pd.DataFrame({"env steps": x, "value": [v for *_, v in pts], "method": label}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def learning_curves(cells: list[Cell], out_dir: Path) -> tuple[list[Path], list[str]]:
    """One figure per task: mean over seeds and a ±1 std band, one line per method."""
    written, missing = [], []
    sns.set_theme(style="whitegrid", context="paper")
    for task in sorted({c.task for c in cells}):
        df = curve_frame(cells, task)
        if df.empty:
            missing.append(f"learning_curves_{task}: no finished runs")
            continue
        fig, ax = plt.subplots(figsize=(4.5, 3.4))
        sns.lineplot(df, x="env steps", y="value", hue="method", errorbar="sd", marker="o", ax=ax)
        ax.xaxis.set_major_formatter(matplotlib.ticker.EngFormatter())
        ax.set_ylabel(YLABEL[curve_metric(task)])
        ax.set_title(task)
        if curve_metric(task) == "eval_success":
            ax.set_ylim(-0.02, 1.02)
        sns.despine(fig)
        ax.legend(title=None, fontsize="small")
        written += _save(fig, out_dir, f"learning_curves_{task}")
    return written, missing


def _rollouts(cell: Cell, stage: str, unreadable: list[str]) -> tuple[list[np.ndarray], list[bool]]:
    paths, success = [], []
    for r in cell.finished:
        f = r.path / f"rollouts_{stage}.json"
        if not f.is_file():
            continue
        try:
            data = json.loads(f.read_text())
            new_paths = [np.asarray(p, dtype=float).reshape(-1, 2) for p in data["paths"]]
            new_success = [bool(s) for s in data["success"]]
            if len(new_paths) != len(new_success):
                raise ValueError("paths and success differ in length")
        except (OSError, ValueError, KeyError, TypeError) as e:
            unreadable.append(f"{f} is unreadable ({e}); left out of the Avoid paths figure")
            continue
        paths += new_paths
        success += new_success
    return paths, success


def avoid_trajectories(cells: list[Cell], out_dir: Path) -> tuple[list[Path], list[str]]:
    """Per Avoid task: each method's evaluation paths before and after fine-tuning, all seeds overlaid."""
    from envs.plot_avoid import demo_paths_from_dataset, draw_avoid
    from envs.tasks import data_dir

    written, missing = [], []
    for task in sorted({c.task for c in cells if task_info(c.task)[0] == "d3il"}):
        panels = [(c, stage) for c in cells if c.task == task for stage in ("initial", "final")]
        panels = [(c, s, *_rollouts(c, s, missing)) for c, s in panels]
        panels = [p for p in panels if p[2]]
        if not panels:
            missing.append(f"avoid_trajectories_{task}: no finished run recorded rollouts_*.json")
            continue
        demo_dir = data_dir() / task
        demos = demo_paths_from_dataset(demo_dir) if (demo_dir / "train.npz").is_file() else None
        fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 4.4), squeeze=False)
        for ax, (c, stage, paths, success) in zip(axes[0], panels):
            when = "before" if stage == "initial" else "after"
            title = f"{c.label}, {when}\n{np.mean(success):.2f} success, {len(paths)} episodes"
            draw_avoid(ax, paths, demo_paths=demos, successes=success, title=title)
        fig.tight_layout()
        written += _save(fig, out_dir, f"avoid_trajectories_{task}")
    return written, missing
