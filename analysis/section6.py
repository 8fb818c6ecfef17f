"""The paper's Section 6 on Avoid, as figures from the records of the `avoid_parameterisation` and
`avoid_robustness` grids (any runs that match count):

    (a) section6_first_rollouts   Fig. 9: the pre-trained DPPO, Gaussian and GMM policies' sampled paths (their
                                  first fine-tuning rollouts) on M1, M2, M3
    (b) section6_action_noise     Fig. 10 left: fine-tuning on M2 with action noise added from iteration 5
    (c) section6_chunk_sizes      Fig. 10 right: fine-tuning on M2 with action chunks of 4, 8 and 16
    (d) section6_denoising        Fig. 11: DPPO's denoising chain at snapshots of fine-tuning
    (e) section6_robustness       Fig. 12: fine-tuned policies under test-time action noise and wider starts
    (f) section6_kprime           Fig. A7: DPPO with K' in {1, 2, 4, 10} against Gaussian and GMM on M1-M3

Curves are the training episodes' success (50 envs, one episode each per iteration): what the reference plots
on Avoid, where it evaluates with the training noise. (e) evaluates each fine-tuned policy once per condition
(`experiments.evaluate`'s `action_noise` and `init_range`) and keeps the results beside it, in robustness.json.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from analysis.records import FINISHED, Run

AVOID = ("avoid_m1", "avoid_m2", "avoid_m3")
KIND_LABEL = {"dppo": "DPPO", "gaussian_ppo": "Gaussian", "gmm_ppo": "GMM"}
KIND_COLOUR = {"dppo": "#4C72B0", "gaussian_ppo": "#DD8452", "gmm_ppo": "#55A868"}
KPRIME_SHADES = {1: "#B5C7E6", 2: "#8AA6D6", 4: "#6185C4", 10: "#2A4D8F"}
# Fig. 12's conditions: the magnitude of the noise on every action (normalised units), and the start box's scale
ROBUSTNESS_NOISE = (0.0, 0.05, 0.1, 0.2, 0.3)
ROBUSTNESS_INIT = (1.0, 2.0, 3.0, 4.0)
DEFAULT_CHUNK = 4  # Avoid's (envs/tasks.py)


def _get(config: dict[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def chunk(run: Run) -> int:
    return int(_get(run.config, "horizon") or DEFAULT_CHUNK)


def kprime(run: Run) -> int | None:
    return int(_get(run.config, "algo.ft_denoising_steps")) if run.method == "dppo" else None


def noisy(run: Run) -> bool:
    return max(_get(run.config, "train.action_noise", [0.0, 0.0]) or [0.0]) > 0


def label(run: Run) -> str:
    k = kprime(run)
    return KIND_LABEL.get(run.method, run.method) + (f" K'={k}" if k is not None else "")


def colour(run: Run) -> str:
    k = kprime(run)
    return KPRIME_SHADES.get(k, KIND_COLOUR["dppo"]) if k is not None else KIND_COLOUR.get(run.method, "0.5")


def _finished_finetunes(runs: list[Run], task: str, **want: Any) -> list[Run]:
    """Finished fine-tuning runs on `task` of the Section 6 methods whose chunk / noise match `want`."""
    out = []
    for r in runs:
        if r.status != FINISHED or not r.finetunes or r.task != task or r.method not in KIND_LABEL:
            continue
        if "chunk" in want and chunk(r) != want["chunk"]:
            continue
        if "noisy" in want and noisy(r) != want["noisy"]:
            continue
        out.append(r)
    return out


def _by_label(runs: list[Run]) -> dict[str, list[Run]]:
    groups: dict[str, list[Run]] = defaultdict(list)
    for r in sorted(runs, key=lambda r: (list(KIND_LABEL).index(r.method), kprime(r) or 0, r.seed)):
        groups[label(r)].append(r)
    return groups


def _curve(runs: list[Run]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean env steps, mean and std over seeds of the training success, per iteration (the common iterations)."""
    n = min(len(r.rows) for r in runs)
    steps = np.mean([[row["env_steps"] for row in r.rows[:n]] for r in runs], axis=0)
    success = np.array([[row.get("train_success", np.nan) for row in r.rows[:n]] for r in runs], dtype=float)
    return steps, np.nanmean(success, axis=0), np.nanstd(success, axis=0)


def _curves(ax, runs: list[Run], title: str) -> None:
    for name, group in _by_label(runs).items():
        steps, mean, std = _curve(group)
        ax.plot(steps, mean, color=colour(group[0]), lw=2 if group[0].method == "dppo" else 1.5, label=name)
        ax.fill_between(steps, mean - std, mean + std, color=colour(group[0]), alpha=0.15, lw=0)
    ax.set_title(title)
    ax.set_xlabel("env steps")
    ax.set_ylabel("success rate (training episodes)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)


def _save(fig, out_dir: Path, stem: str) -> list[Path]:
    from analysis.figures import _save as save

    return save(fig, out_dir, stem)


def _seeds_note(runs: list[Run]) -> str:
    n = sorted({len(g) for g in _by_label(runs).values()})
    return f"{'/'.join(map(str, n))} seed{'s' if n != [1] else ''}"


# ----------------------------------------------------------------------------- (a) Fig. 9
def first_rollouts(runs: list[Run], out_dir: Path) -> tuple[list[Path], list[str]]:
    from envs.plot_avoid import demo_paths_from_dataset, draw_avoid
    from envs.tasks import data_dir
    from methods import METHODS

    kinds = {"diffusion": "DPPO", "gaussian": "Gaussian", "gmm": "GMM"}
    found: dict[tuple[str, str], Run] = {}
    for r in runs:
        if r.status != FINISHED or r.stage != "pretrain" or r.task not in AVOID or chunk(r) != DEFAULT_CHUNK:
            continue
        kind = METHODS[r.method].policy_kind if r.method in METHODS else None
        if kind in kinds and (r.path / "rollouts_pretrained.json").is_file():
            found.setdefault((r.task, kind), r)
    tasks = [t for t in AVOID if any((t, k) in found for k in kinds)]
    if not tasks:
        return [], ["section6_first_rollouts: no finished Avoid pre-training recorded rollouts_pretrained.json"]
    fig, axes = plt.subplots(len(tasks), 3, figsize=(9.6, 4.4 * len(tasks)), squeeze=False)
    for row, task in zip(axes, tasks):
        demo_dir = data_dir() / task
        demos = demo_paths_from_dataset(demo_dir) if (demo_dir / "train.npz").is_file() else None
        for ax, (kind, name) in zip(row, kinds.items()):
            run = found.get((task, kind))
            if run is None:
                ax.set_axis_off()
                ax.set_title(f"{name}, {task}: no pre-training")
                continue
            data = json.loads((run.path / "rollouts_pretrained.json").read_text())
            paths = [np.asarray(p, dtype=float).reshape(-1, 2) for p in data["paths"]]
            draw_avoid(ax, paths, demos, [bool(s) for s in data["success"]], f"{name}, {task.replace('avoid_', '')}")
    fig.suptitle("Pre-trained policies' sampled paths (the first fine-tuning iteration's exploration)")
    fig.tight_layout()
    return _save(fig, out_dir, "section6_first_rollouts"), []


# ----------------------------------------------------------------------------- (b) Fig. 10 left
def action_noise(runs: list[Run], out_dir: Path) -> tuple[list[Path], list[str]]:
    chosen = _finished_finetunes(runs, "avoid_m2", chunk=DEFAULT_CHUNK, noisy=True)
    if not chosen:
        return [], ["section6_action_noise: no finished avoid_m2 fine-tuning with train.action_noise"]
    levels = sorted({tuple(_get(r.config, "train.action_noise")) for r in chosen}, reverse=True)
    fig, axes = plt.subplots(1, len(levels), figsize=(6 * len(levels), 4), squeeze=False, sharey=True)
    for ax, level in zip(axes[0], levels):
        group = [r for r in chosen if tuple(_get(r.config, "train.action_noise")) == level]
        _curves(ax, group, f"M2, action noise U{list(level)} from iteration 5 ({_seeds_note(group)})")
        r = group[0]
        start, ramp = _get(r.config, "train.action_noise_start", 0), _get(r.config, "train.action_noise_ramp", 0)
        per_itr = r.rows[-1]["env_steps"] / len(r.rows)
        ax.axvspan(start * per_itr, (start + ramp) * per_itr, color="0.85", zorder=0, label="noise ramping up")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out_dir, "section6_action_noise"), []


# ----------------------------------------------------------------------------- (c) Fig. 10 right
def chunk_sizes(runs: list[Run], out_dir: Path) -> tuple[list[Path], list[str]]:
    chosen = [
        r
        for r in _finished_finetunes(runs, "avoid_m2", noisy=False)
        if kprime(r) in (None, 10)  # DPPO with the paper's K' = 10
    ]
    sizes = sorted({chunk(r) for r in chosen})
    if len(sizes) < 2:
        return [], ["section6_chunk_sizes: finished avoid_m2 fine-tunings with fewer than 2 chunk sizes"]
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.2 * len(sizes), 3.8), squeeze=False, sharey=True)
    for ax, ta in zip(axes[0], sizes):
        group = [r for r in chosen if chunk(r) == ta]
        _curves(ax, group, f"M2, Ta = {ta} ({_seeds_note(group)})")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out_dir, "section6_chunk_sizes"), []


# ----------------------------------------------------------------------------- (d) Fig. 11
# Where M2's two demonstrated routes part, above the left gap of level 2: from this end-effector state (desired and
# current position) the pre-trained diffusion policy's chunks head right (to the unrewarded level-3 gap) about half
# the time (the avoid_parameterisation grid's pre-trained policy), so fine-tuning's choice of route shows.
FORK_STATE = (0.35, 0.10, 0.35, 0.10)


def denoising(runs: list[Run], out_dir: Path, n_samples: int = 200) -> tuple[list[Path], list[str]]:
    import torch

    from envs.plot_avoid import draw_avoid
    from experiments.checkpoints import load_policy

    candidates = [
        r
        for r in _finished_finetunes(runs, "avoid_m2", chunk=DEFAULT_CHUNK, noisy=False)
        if r.method == "dppo" and sorted((r.path / "checkpoints").glob("policy_itr*.pt"))
    ]
    if not candidates:
        return [], ["section6_denoising: no finished avoid_m2 DPPO run with snapshots (train.snapshot_every)"]
    run = max(candidates, key=lambda r: (kprime(r) or 0, -r.seed))  # the most fine-tuned steps, first seed
    snaps = [(0, Path(run.config["checkpoint"]))] + [
        (int(p.stem.removeprefix("policy_itr")), p) for p in sorted((run.path / "checkpoints").glob("policy_itr*.pt"))
    ]
    min_std = float(_get(run.config, "algo.min_sampling_std", 0.1))
    k_ft = kprime(run) or 1
    rows = []
    for itr, path in snaps:
        policy, normalizer, _ = load_policy(path, "diffusion", 4, 2, DEFAULT_CHUNK, torch.device("cpu"))
        obs = torch.as_tensor(normalizer.normalize_obs(np.array(FORK_STATE)), dtype=torch.float32)
        torch.manual_seed(0)
        S = policy.n_sampling_steps
        _, chain = policy.sample(obs.repeat(n_samples, 1), deterministic=False, min_std=min_std, record_from=S - k_ft)
        # each sample's chunk, in table coordinates: (chain states, samples, Ta, 2)
        rows.append((itr, normalizer.unnormalize_action(chain.numpy()).transpose(1, 0, 2, 3)))
    n_states = rows[0][1].shape[0]
    shown = np.unique(np.linspace(0, n_states - 1, min(5, n_states)).round().astype(int))
    fig, axes = plt.subplots(len(rows), len(shown), figsize=(2.6 * len(shown), 3.4 * len(rows)), squeeze=False)
    for (itr, chunks), ax_row in zip(rows, axes):
        for ax, i in zip(ax_row, shown):
            remaining = k_ft - i
            title = ("denoised" if remaining == 0 else f"{remaining} fine-tuned steps left") if itr == 0 else ""
            draw_avoid(ax, [], title=title)
            for c in chunks[i]:  # a chunk's actions (desired positions) joined in order
                ax.plot(c[:, 0], c[:, 1], color=KIND_COLOUR["dppo"], lw=0.6, alpha=0.35)
            ax.plot(FORK_STATE[2], FORK_STATE[3], marker="*", color="tab:red", ms=10, zorder=5)
            ax.set_xlabel("")
            right = np.mean(chunks[-1][:, -1, 0] > FORK_STATE[2] + 0.01)  # denoised chunks ending to the right
            ax.set_ylabel(f"iteration {itr}: {right:.0%} head right" if i == shown[0] else "")
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(
        f"DPPO K'={k_ft} on M2 ({run.name}): {n_samples} sampled chunks from the fork (star) through the fine-tuned "
        "denoising steps, over fine-tuning"
    )
    fig.tight_layout()
    return _save(fig, out_dir, "section6_denoising"), []


# ----------------------------------------------------------------------------- (e) Fig. 12
def robustness_record(run: Run) -> dict[str, Any]:
    """The run's robustness.json, evaluating the conditions it lacks (50 episodes each, the task's protocol)."""
    from experiments.evaluate import evaluate_checkpoint

    path = run.path / "robustness.json"
    record = json.loads(path.read_text()) if path.is_file() else {}
    ckpt = run.path / "checkpoints" / "final.pt"
    conditions = [("action_noise", x) for x in ROBUSTNESS_NOISE] + [("init_range", s) for s in ROBUSTNESS_INIT]
    for key, value in conditions:
        name = f"{key}={value:g}"
        if name in record:
            continue
        ov = {"train.action_noise": [value, value]} if key == "action_noise" else {"train.init_range": value}
        ov.update(progress=False, device="cpu")
        record[name] = evaluate_checkpoint(ckpt, seed=run.seed, overrides=ov)["success"]
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1))
        tmp.replace(path)
    return record


def robustness(runs: list[Run], out_dir: Path) -> tuple[list[Path], list[str]]:
    chosen = [
        r
        for r in _finished_finetunes(runs, "avoid_m2", chunk=DEFAULT_CHUNK, noisy=False)
        if kprime(r) in (None, 10) and (r.path / "checkpoints" / "final.pt").is_file()
    ]
    if not chosen:
        return [], ["section6_robustness: no finished avoid_m2 fine-tuning (without training noise) with final.pt"]
    records = {r.path: robustness_record(r) for r in chosen}
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), sharey=True)
    for ax, (key, values, xlabel) in zip(
        axes,
        (
            ("action_noise", ROBUSTNESS_NOISE, "test-time action noise (each action moved by +-this)"),
            ("init_range", ROBUSTNESS_INIT, "initial-state range (x the task's)"),
        ),
    ):
        for name, group in _by_label(chosen).items():
            ys = np.array([[records[r.path][f"{key}={v:g}"] for v in values] for r in group])
            ax.errorbar(values, ys.mean(0), yerr=ys.std(0), color=colour(group[0]), marker="o", capsize=3, label=name)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("success rate (50 episodes)")
    axes[0].set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Fine-tuned policies on M2 under perturbations ({_seeds_note(chosen)})")
    fig.tight_layout()
    return _save(fig, out_dir, "section6_robustness"), []


# ----------------------------------------------------------------------------- (f) Fig. A7
def kprime_comparison(runs: list[Run], out_dir: Path) -> tuple[list[Path], list[str]]:
    per_task = {t: _finished_finetunes(runs, t, chunk=DEFAULT_CHUNK, noisy=False) for t in AVOID}
    tasks = [t for t, rs in per_task.items() if rs]
    if not tasks:
        return [], ["section6_kprime: no finished Avoid fine-tuning"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.4 * len(tasks), 3.8), squeeze=False, sharey=True)
    for ax, task in zip(axes[0], tasks):
        _curves(ax, per_task[task], f"{task.replace('avoid_', '').upper()} ({_seeds_note(per_task[task])})")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out_dir, "section6_kprime"), []


FIGURES = (
    ("section6_first_rollouts", first_rollouts),
    ("section6_action_noise", action_noise),
    ("section6_chunk_sizes", chunk_sizes),
    ("section6_denoising", denoising),
    ("section6_robustness", robustness),
    ("section6_kprime", kprime_comparison),
)
