"""The paper's ablations (Appendix B; SPEC 3): one table and one figure each, from whichever runs vary the ablated
value (the `*_mini` grids on 2 CPU cores, their paper-scale twins, or a user's own runs).

A family is the runs of one task (and method, for a hyperparameter ablation) whose hyperparameters are equal except
the ablated key and the keys that go with it (`Ablation.ignore`); a family with two or more values is a block of
rows and a panel of the figure. Fig. A4 puts wall-clock time on the x-axis and draws each run, as the paper does.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from analysis.records import (
    Cell,
    Run,
    _number,
    curve_metric,
    eval_points,
    final_value,
    fmt_value,
    iteration_seconds,
    value_at_budget,
)
from analysis.tables import Missing, Table, _digits, summarise

WALL_CLOCK = "wall-clock"


@dataclass(frozen=True)
class Ablation:
    name: str
    what: str  # caption
    paper: str  # the paper's figure and its finding, for the notes
    key: str  # the hyperparameter (hyperparameters() name) whose values the rows compare; "method": methods
    ignore: tuple[str, ...] = ()  # keys (or prefixes ending in ".") that change with it and don't split a family
    methods: tuple[str, ...] = ()  # key "method": the methods compared
    x_axis: str = "env steps"  # or WALL_CLOCK: each run against its fine-tuning time


ABLATIONS = (
    Ablation(
        "advantage_estimator",
        "advantage estimator: V(s) (DPPO's), V(s, x_k) over the denoising MDP or an off-policy double-Q Q(s, a)",
        "B.1, Fig. A1: V(s) trains best on the harder tasks, the action-dependent estimators can lead on Hopper",
        "algo.advantage",
        ignore=("algo.q_",),
    ),
    Ablation(
        "gamma_denoise",
        "denoising discount γ_denoise",
        "B.1, Fig. A2: γ_denoise near 1 is more efficient on Gym; manipulation is robust to it",
        "algo.gamma_denoise",
    ),
    Ablation(
        "eps_min_exp",
        "exploration noise floor ε_min_exp",
        "B.1, Fig. A3: a higher floor keeps Square from collapsing; Can is insensitive",
        "algo.min_sampling_std",
    ),
    Ablation(
        "ft_denoising_steps",
        "fine-tuned denoising steps K'",
        "B.1, Figs. A4, A7: K' = 10 gives the best efficiency in wall-clock time; too few (3) is slower and lower",
        "algo.ft_denoising_steps",
        x_axis=WALL_CLOCK,
    ),
    Ablation(
        "expert_data",
        "fraction of the expert demonstrations used in pre-training",
        "B.2, Fig. A5: DPPO uses the data better than Gaussian and fine-tunes well from little of it",
        "pretrain.episode_fraction",
    ),
    Ablation(
        "from_scratch",
        "fine-tuning from scratch (no pre-training) vs. from a pre-trained policy",
        "B.2, Fig. A6: from scratch, Gaussian trains faster than DPPO, which still reaches reasonable returns",
        "pretrained",
        ignore=("pretrain.", "stage"),  # from scratch: stage=all without pre-training; else stage=finetune
    ),
    Ablation(
        "ddim",
        "DDPM sampling (the preset's K') vs. DDIM in ddim_steps, all fine-tuned (eta 1 fine-tuning, 0 evaluating)",
        "Sec. 4.3 / D: the reference fine-tunes pixel and Furniture tasks with 5 DDIM steps",
        "policy.use_ddim",
        ignore=("policy.ddim_steps", "algo.ft_denoising_steps"),
    ),
    Ablation(
        "exact_likelihood",
        "DPPO vs. policy gradient with the exact likelihood from the probability-flow ODE",
        "B.5, Fig. A9: exact-likelihood PG improves Hopper less than DPPO, takes longer, and collapses on Can",
        "method",
        methods=("dppo", "exact_pg"),
    ),
)


def _ignored(key: str, ab: Ablation) -> bool:
    return key == ab.key or any(key == i or (i.endswith(("_", ".")) and key.startswith(i)) for i in ab.ignore)


def _sortable(v: Any) -> tuple[int, Any]:
    return (0, v) if isinstance(v, (int, float)) else (1, repr(v))


def by_folder(cells: list[Cell]) -> list[tuple[str, Cell]]:
    """Each cell split by the folder its runs sit in (a grid's): an ablation compares runs of one grid, which share
    a pre-training and ran on one machine at one time, though another grid may run the same config."""
    out = []
    for c in cells:
        folders: dict[str, list[Run]] = defaultdict(list)
        for r in c.runs:
            folders[r.path.parent.name].append(r)
        out += [(folder, dataclasses.replace(c, runs=runs)) for folder, runs in sorted(folders.items())]
    return out


def families(cells: list[Cell], ab: Ablation) -> dict[tuple[str, ...], list[Cell]]:
    """(task, method, harness, folder) -> its cells, sorted by the ablated value; only families with two or more
    values."""
    groups: dict[tuple[str, ...], list[Cell]] = defaultdict(list)
    for folder, c in by_folder(cells):
        if ab.key == "method":
            if c.method in ab.methods:
                groups[(c.task, "/".join(ab.methods), c.harness, folder)].append(c)
            continue
        rest = {k: v for k, v in c.hparams.items() if not _ignored(k, ab)}
        groups[(c.task, c.method, c.harness, folder, repr(sorted(rest.items())))].append(c)
    out = {}
    for k, cs in sorted(groups.items()):
        if len({repr(value(c, ab)) for c in cs}) >= 2:
            out[k[:4]] = sorted(cs, key=lambda c: (_sortable(value(c, ab)), c.label))
    return out


def value(cell: Cell, ab: Ablation) -> Any:
    return cell.method if ab.key == "method" else cell.hparams.get(ab.key)


def finetune_minutes(run: Run) -> float | None:
    s = _number((run.summary or {}).get("wall_time"))
    return None if s is None else s / 60


def ablation_tables(cells: list[Cell]) -> list[Table | Missing]:
    out: list[Table | Missing] = []
    for ab in ABLATIONS:
        rows = []
        for (task, method, harness, folder), cs in families(cells, ab).items():
            key, digits = curve_metric(task), _digits(task)
            for c in cs:
                fin = c.finished
                rows.append(
                    {
                        "task": task,
                        "method": c.method if ab.key == "method" else method,
                        **({} if ab.key == "method" else {ab.key: fmt_value(value(c, ab))}),
                        "runs": c.counts(),
                        "before": summarise([value_at_budget(r, key, 0) for r in fin], digits),
                        "final": summarise([final_value(r, key) for r in fin], digits),
                        "metric": key.removeprefix("eval_"),
                        "s/itr": summarise([iteration_seconds(r) for r in fin], 2),
                        "fine-tune (min)": summarise([finetune_minutes(r) for r in fin], 1),
                        "harness": harness,
                        "results": folder,
                    }
                )
        if not rows:
            why = (
                f"no finished runs of {' and '.join(ab.methods)} on one task"
                if ab.key == "method"
                else f"no two runs of one task and method differ only in {ab.key}"
            )
            out.append(Missing(f"ablation_{ab.name}", why))
            continue
        notes = [
            f"Paper {ab.paper}.",
            f"Mean ± std over the finished seeds; rows of a family differ only in {ab.key}"
            + (f" (and {', '.join(ab.ignore)})" if ab.ignore else "")
            + ". s/itr: median seconds per fine-tuning iteration; fine-tune: wall-clock per run; results: the"
            " folder (grid) of the runs, as a family never mixes folders.",
        ]
        out.append(Table(f"ablation_{ab.name}", f"Ablation: {ab.what}", pd.DataFrame(rows), notes))
    return out


def _run_curve(run: Run, key: str, x_axis: str) -> tuple[np.ndarray, np.ndarray]:
    """One run's evaluations against env steps (M) or its fine-tuning wall-clock (min) at each evaluation."""
    pts = eval_points(run, key)
    if x_axis != WALL_CLOCK:
        return np.array([x for _, x, _ in pts]) / 1e6, np.array([v for _, _, v in pts])
    clock = {row.get("itr"): _number(row.get("wall_time")) for row in run.rows}
    xs, ys = [], []
    for itr, _, v in pts:
        t = 0.0 if itr == -1 else clock.get(itr)
        if t is not None:
            xs.append(t / 60)
            ys.append(v)
    return np.array(xs), np.array(ys)


def ablation_figures(cells: list[Cell], out_dir: Path) -> tuple[list[Path], list[str]]:
    """One figure per ablation, a panel per family: the mean over seeds per value against env steps (±1 std), or
    for K' each run against wall-clock time."""
    from analysis.figures import _save

    written, missing = [], []
    sns.set_theme(style="whitegrid", context="paper")
    for ab in ABLATIONS:
        fams = families(cells, ab)
        if not fams:
            varied = " vs ".join(ab.methods) if ab.key == "method" else ab.key
            missing.append(f"ablation_{ab.name}: no runs vary {varied}")
            continue
        fig, axes = plt.subplots(1, len(fams), figsize=(4.2 * len(fams), 3.3), squeeze=False)
        for ax, ((task, method, _, folder), cs) in zip(axes[0], fams.items()):
            key = curve_metric(task)
            palette = sns.color_palette("viridis", len(cs))
            for colour, c in zip(palette, cs):
                label = f"{ab.key.rsplit('.', 1)[-1]}={fmt_value(value(c, ab))} (n={len(c.finished)})"
                curves = [_run_curve(r, key, ab.x_axis) for r in c.finished]
                curves = [(x, y) for x, y in curves if len(x)]
                if not curves:
                    continue
                if ab.x_axis == WALL_CLOCK:  # runs' clocks don't align: each run on its own
                    for i, (x, y) in enumerate(curves):
                        ax.plot(x, y, color=colour, lw=1.3, marker="o", ms=2.5, label=label if i == 0 else None)
                    continue
                n = min(len(x) for x, _ in curves)
                x = np.mean([x[:n] for x, _ in curves], axis=0)
                ys = np.array([y[:n] for _, y in curves])
                ax.plot(x, ys.mean(0), color=colour, lw=1.5, marker="o", ms=3, label=label)
                ax.fill_between(x, ys.mean(0) - ys.std(0), ys.mean(0) + ys.std(0), color=colour, alpha=0.15, lw=0)
            ax.set_title(f"{task}, {method} ({folder})", fontsize="medium")
            ax.set_xlabel("fine-tuning wall-clock (min)" if ab.x_axis == WALL_CLOCK else "env steps (M)")
            ax.set_ylabel(key.removeprefix("eval_"))
            if key == "eval_success":
                ax.set_ylim(-0.02, 1.02)
            ax.legend(fontsize="x-small", frameon=False)
        fig.suptitle(f"Ablation: {ab.what}", fontsize="small")
        sns.despine(fig)
        fig.tight_layout()
        written += _save(fig, out_dir, f"ablation_{ab.name}")
    return written, missing
