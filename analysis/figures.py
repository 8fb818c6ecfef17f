"""Figures, one colour per method in all: learning curves per task (like the paper's Figs. 5-7), Avoid paths."""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from pathlib import Path

import matplotlib
import matplotlib.ticker
import matplotlib.transforms

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axis import Axis
from matplotlib.figure import Figure

from analysis.records import Cell, curve_metric, eval_points, method_order, task_info
from analysis.tables import YLABEL

FORMATS = ("png", "pdf")
DPI = 120  # figures are laid out (tick labels fitted) at the resolution they are saved with
TICK_GAP = 0.5  # the least space between two tick labels, in font sizes (less and they read as one)


def _save(fig, out_dir: Path, stem: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in FORMATS:
        path = out_dir / f"{stem}.{ext}"
        fig.savefig(path, dpi=DPI, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


# One colour per method, the same in every figure this tool draws (seaborn's "deep" palette, so DPPO and Gaussian PPO
# keep the blue and orange of the earlier figures). DPPO is also drawn thicker and on top.
METHOD_COLOURS: dict[str, str] = {
    "dppo": "#4C72B0",
    "gaussian_ppo": "#DD8452",
    "drwr": "#55A868",
    "dawr": "#C44E52",
    "dipo": "#8172B3",
    "idql": "#937860",
    "dql": "#DA8BC3",
    "qsm": "#64B5CD",
}
OTHER_COLOURS = ("#8C8C8C", "#CCB974", "#2F4B7C", "#A05195", "#665191")  # methods not named above, by name's hash
VARIANT_STYLES = ("-", "--", ":", "-.")  # a method's main variant solid, its other variants dashed


def method_colour(method: str) -> str:
    """The method's colour in every figure."""
    if method in METHOD_COLOURS:
        return METHOD_COLOURS[method]
    return OTHER_COLOURS[int(hashlib.sha1(method.encode()).hexdigest(), 16) % len(OTHER_COLOURS)]


def cell_curve(cell: Cell, key: str) -> pd.DataFrame:
    """The finished runs' evaluations (env steps, value, seed). Runs of a cell evaluate at the same iterations but
    not at exactly the same env steps, so each evaluation is placed at its iteration's mean env steps over seeds."""
    points = {r.seed: eval_points(r, key) for r in cell.finished}
    steps: dict[int, list[float]] = defaultdict(list)
    for itr, x, _ in (p for pts in points.values() for p in pts):
        steps[itr].append(x)
    rows = [(float(np.mean(steps[itr])), v, seed) for seed, pts in points.items() for itr, _, v in pts]
    return pd.DataFrame(rows, columns=["env steps", "value", "seed"])


def mean_curve(curve: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds (numpy's, ddof 0, as in the tables) at each env-step point."""
    return curve.groupby("env steps")["value"].agg(mean="mean", std=lambda v: float(np.std(v))).reset_index()


def tick_labels_overlap(fig: Figure, axis: Axis, gap: float = TICK_GAP) -> bool:
    """Whether any two of the axis's drawn tick labels overlap, or come within `gap` font sizes of each other (their
    boxes as the renderer lays them out)."""
    lo, hi = sorted(axis.get_view_interval())
    ticks = [t for t in axis.get_major_ticks(len(axis.get_majorticklocs())) if lo <= t.get_loc() <= hi]
    renderer = fig.canvas.get_renderer()
    boxes = []
    for t in (t for t in ticks if t.label1.get_visible() and t.label1.get_text()):
        box, pad = t.label1.get_window_extent(renderer), gap / 2 * t.label1.get_fontsize() * fig.dpi / 72
        boxes.append(matplotlib.transforms.Bbox.from_extents(box.x0 - pad, box.y0, box.x1 + pad, box.y1))
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def fit_ticks(fig: Figure, axis: Axis, most: int = 6) -> None:
    """At most `most` round tick intervals, fewer until no two tick labels overlap once drawn."""
    axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    for n in range(most, 0, -1):
        axis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=n, steps=[1, 2, 2.5, 5, 10]))
        fig.canvas.draw()
        if not tick_labels_overlap(fig, axis):
            return


def _line_styles(cells: list[Cell]) -> dict[str, str]:
    """Cell label -> line style: each method's main variant solid, its others dashed, dotted, ..."""
    styles: dict[str, str] = {}
    seen: Counter[str] = Counter()
    for c in sorted(cells, key=lambda c: (c.label != c.method, c.label)):
        styles[c.label] = VARIANT_STYLES[seen[c.method] % len(VARIANT_STYLES)]
        seen[c.method] += 1
    return styles


def curves_figure(cells: list[Cell], task: str) -> Figure | None:
    """The task's learning curves on one axis, or None without finished runs: per cell the mean over seeds and a
    ±1 std band, against env steps in millions, in the method's colour."""
    key = curve_metric(task)
    drawn = [(c, mean_curve(df)) for c in cells if c.task == task and not (df := cell_curve(c, key)).empty]
    if not drawn:
        return None
    styles = _line_styles([c for c, _ in drawn])
    fig, ax = plt.subplots(figsize=(4.5, 3.4), dpi=DPI)
    for c, curve in sorted(drawn, key=lambda d: (method_order(d[0].method), d[0].label)):
        x, mean, std = curve["env steps"] / 1e6, curve["mean"], curve["std"]
        colour, main = method_colour(c.method), c.method == "dppo"
        label = f"{c.label} (n={len(c.finished)})"
        ax.plot(x, mean, color=colour, ls=styles[c.label], lw=2.2 if main else 1.4, marker="o", ms=3, label=label,
                zorder=3 if main else 2)  # fmt: skip
        ax.fill_between(x, mean - std, mean + std, color=colour, alpha=0.15, lw=0, zorder=1)
    ax.set_xlabel("env steps (M)")
    ax.set_ylabel(YLABEL[key])
    ax.set_title(task)
    if key == "eval_success":
        ax.set_ylim(-0.02, 1.02)
    sns.despine(fig)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize="small")
    fit_ticks(fig, ax.xaxis)
    return fig


def learning_curves(cells: list[Cell], out_dir: Path) -> tuple[list[Path], list[str]]:
    """One figure per task (like the paper's Figs. 5-7): every method on one axis, mean over seeds and ±1 std."""
    written, missing = [], []
    sns.set_theme(style="whitegrid", context="paper")
    for task in sorted({c.task for c in cells}):
        fig = curves_figure(cells, task)
        if fig is None:
            missing.append(f"learning_curves_{task}: no finished runs")
            continue
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
            ax.title.set_color(method_colour(c.method))
        fig.tight_layout()
        written += _save(fig, out_dir, f"avoid_trajectories_{task}")
    return written, missing
