"""Top-down plots of Avoid paths (obstacles, goal line, demos and rollouts), cf. DPPO Fig. 9."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from envs.avoid import GOAL_Y, OBSTACLE_RADIUS, OBSTACLES, WORKSPACE_HIGH, WORKSPACE_LOW

SUCCESS_COLOR = "tab:green"
FAILURE_COLOR = "tab:red"
ROLLOUT_COLOR = "tab:blue"
DEMO_COLOR = "0.75"


def draw_avoid(
    ax,
    rollout_paths: list[np.ndarray],
    demo_paths: list[np.ndarray] | None = None,
    successes: list[bool] | None = None,
    title: str = "",
) -> None:
    """Draw end-effector paths (each (T, 2)) over the obstacle layout on a matplotlib Axes."""
    if successes is not None and len(successes) != len(rollout_paths):
        raise ValueError("successes must have one entry per rollout path")
    for path in demo_paths or []:
        xy = np.asarray(path)
        ax.plot(xy[:, 0], xy[:, 1], color=DEMO_COLOR, lw=0.8, zorder=1)
    for i, path in enumerate(rollout_paths):
        xy = np.asarray(path)
        if successes is None:
            color = ROLLOUT_COLOR
        else:
            color = SUCCESS_COLOR if successes[i] else FAILURE_COLOR
        ax.plot(xy[:, 0], xy[:, 1], color=color, lw=1.0, alpha=0.8, zorder=2)

    for centre in OBSTACLES:
        ax.add_patch(Circle(tuple(centre), OBSTACLE_RADIUS, color="0.2", zorder=3))
    ax.axhline(GOAL_Y, color="tab:orange", ls="--", lw=1.2, zorder=0, label="goal line")

    ax.set_xlim(WORKSPACE_LOW[0], WORKSPACE_HIGH[0])
    ax.set_ylim(WORKSPACE_LOW[1], WORKSPACE_HIGH[1])
    ax.set_aspect("equal")
    ax.set_xlabel("x [m]")
    ax.set_ylabel("y [m]")
    if title:
        ax.set_title(title)


def plot_avoid(
    rollout_paths: list[np.ndarray],
    out_png: str | Path,
    demo_paths: list[np.ndarray] | None = None,
    successes: list[bool] | None = None,
    title: str = "",
) -> Path:
    """`draw_avoid` on a figure of its own, saved as a PNG."""
    # A bare Figure with an Agg canvas avoids touching pyplot's global backend state.
    fig = Figure(figsize=(4.5, 6.0), dpi=120)
    FigureCanvasAgg(fig)
    draw_avoid(fig.add_subplot(), rollout_paths, demo_paths, successes, title)
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def demo_paths_from_dataset(dataset_dir: str | Path) -> list[np.ndarray]:
    """Current-position paths (T, 2) of every demo in a processed Avoid dataset folder."""
    from envs.data.loaders import load_npz

    traj = load_npz(Path(dataset_dir) / "train.npz", obs_dim=4, act_dim=2)
    raw = traj.normalizer.unnormalize_obs(traj.states)
    return [seg[:, 2:4] for seg in np.split(raw, np.cumsum(traj.traj_lengths)[:-1])]
