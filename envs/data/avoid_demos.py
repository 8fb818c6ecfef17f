"""Scripted, multi-modal demonstrations for the Avoid task.

Each demo is a smooth desired-position path through per-mode waypoints, replayed in
:class:`envs.avoid.AvoidEnv` so that observations and actions are exactly what the
environment produces.  The output follows the reference implementation's processed
layout (``train.npz`` + ``normalization.npz``) plus a ``provenance.json``.

Usage: ``python -m envs.data.avoid_demos --setting avoid_m2 [--out DIR] [--n-demos N] [--seed S]``
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from envs.avoid import (
    LEVEL_Y,
    SETTINGS,
    START_CENTRE,
    START_NOISE,
    AvoidEnv,
    Mode,
    get_setting,
)
from envs.data.loaders import write_provenance, write_reference_npz

# Gap centre x per level, indexed by gap. Routes keep at least ~2 cm beyond the
# collision distance, so demonstrations replayed with the fine-tuning noise
# (std 0.1 in normalised units, about 2.5 cm) mostly stay collision-free.
GAP_X: tuple[dict[int, float], ...] = (
    {0: 0.41, 1: 0.59},
    {0: 0.34, 1: 0.5, 2: 0.66},
    {0: 0.27, 1: 0.425, 2: 0.575, 3: 0.73},
)
APPROACH_OFFSET = 0.06  # waypoints this far below and above each level's y
FINAL_Y = 0.40
WAYPOINT_NOISE_STD = np.array([0.006, 0.004])
SPEED_RANGE = (0.009, 0.013)  # metres of desired-position travel per step
CHAIKIN_ITERATIONS = 3
MAX_ATTEMPTS_PER_DEMO = 100


def mode_waypoints(mode: Mode, start: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Noisy polyline start -> (approach, crossing, exit) per level -> final point.

    The exit point above each level keeps the path vertical while it passes the
    obstacles, so smoothing and the next diagonal leg do not clip the obstacle next
    to the gap (e.g. going left of level 2 and then right at level 3).
    """
    points = [np.asarray(start, dtype=np.float64)]
    for level, (gap, level_y) in enumerate(zip(mode, LEVEL_Y, strict=True)):
        shift = rng.normal(0.0, WAYPOINT_NOISE_STD)
        x = GAP_X[level][gap] + shift[0]
        y = level_y + shift[1]
        points += [
            np.array([x, y - APPROACH_OFFSET]),
            np.array([x, y]),
            np.array([x, y + APPROACH_OFFSET]),
        ]
    points.append(np.array([points[-1][0], FINAL_Y]))
    return np.stack(points)


def chaikin(points: np.ndarray, iterations: int = CHAIKIN_ITERATIONS) -> np.ndarray:
    """Chaikin corner cutting, keeping both end points."""
    for _ in range(iterations):
        a, b = points[:-1], points[1:]
        cut = np.empty((2 * len(a), 2))
        cut[0::2] = 0.75 * a + 0.25 * b
        cut[1::2] = 0.25 * a + 0.75 * b
        points = np.concatenate([points[:1], cut, points[-1:]])
    return points


def resample(points: np.ndarray, spacing: float) -> np.ndarray:
    """Points along the polyline at constant arc-length ``spacing`` (end point included)."""
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    s = np.arange(0.0, arc[-1], spacing)
    if arc[-1] - s[-1] > 1e-9:
        s = np.append(s, arc[-1])
    return np.stack([np.interp(s, arc, points[:, 0]), np.interp(s, arc, points[:, 1])], axis=1)


def _rollout(
    env: AvoidEnv, start: np.ndarray, actions: np.ndarray
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]] | None:
    """Replay ``actions`` from ``start``; return (states, actions, info) up to the goal, else None."""
    obs, info = env.reset(options={"start": start})
    states = []
    for t, action in enumerate(actions):
        states.append(obs)
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            if info["reached_goal"]:
                return np.stack(states), actions[: t + 1], info
            return None
    return None


def _sample_demo(env: AvoidEnv, mode: Mode, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
    """Draw one demo in ``mode``.

    Returns None if it collides, does not reach the goal within the episode limit or
    passes through a different mode.
    """
    start = START_CENTRE + rng.uniform(-1.0, 1.0, size=2) * START_NOISE
    # Round-trip through float32 so the recorded first state replays bit-exactly.
    start = start.astype(np.float32).astype(np.float64)
    speed = rng.uniform(*SPEED_RANGE)
    path = resample(chaikin(mode_waypoints(mode, start, rng)), speed)
    # A few extra holds at the end let the lagging end-effector cross the goal line.
    path = np.concatenate([path, np.repeat(path[-1:], 10, axis=0)])
    actions = path[1:].astype(np.float32)
    result = _rollout(env, start, actions)
    if result is None or result[2]["mode"] != tuple(mode):
        return None
    return result[0], result[1]


def generate_demos(setting: str, n_demos: int = 100, seed: int = 0) -> dict[str, Any]:
    """Generate ``n_demos`` successful demos alternating between the setting's two modes.

    Returns raw (un-normalised) ``states`` (sum_T, 4) and ``actions`` (sum_T, 2) float32,
    ``traj_lengths`` (n,) int64, ``modes`` (n, 3) int64 and the ``rejected`` count.
    """
    if n_demos < 1:
        raise ValueError("n_demos must be positive")
    cfg = get_setting(setting)
    rng = np.random.default_rng(seed)
    # Demos must finish within the env's default episode limit, so slow draws that
    # would be truncated are rejected like collisions.
    env = AvoidEnv(setting=setting)
    states, actions, lengths, modes = [], [], [], []
    rejected = 0
    for i in range(n_demos):
        mode = cfg.demo_modes[i % 2]
        for _ in range(MAX_ATTEMPTS_PER_DEMO):
            demo = _sample_demo(env, mode, rng)
            if demo is not None:
                break
            rejected += 1
        else:
            raise RuntimeError(f"could not generate a valid demo for mode {mode}")
        states.append(demo[0])
        actions.append(demo[1])
        lengths.append(len(demo[1]))
        modes.append(mode)
    return {
        "setting": setting,
        "seed": seed,
        "states": np.concatenate(states).astype(np.float32),
        "actions": np.concatenate(actions).astype(np.float32),
        "traj_lengths": np.asarray(lengths, dtype=np.int64),
        "modes": np.asarray(modes, dtype=np.int64),
        "rejected": rejected,
    }


def write_dataset(setting: str, out_dir: str | Path, n_demos: int = 100, seed: int = 0) -> Path:
    """Generate demos and write ``train.npz``, ``normalization.npz``, ``provenance.json``."""
    demos = generate_demos(setting, n_demos=n_demos, seed=seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Remove a stale marker first so a half-rewritten folder never looks complete.
    (out / "provenance.json").unlink(missing_ok=True)

    states, actions = demos["states"], demos["actions"]
    extra = {"rewards": np.zeros(len(states), dtype=np.float32), "modes": demos["modes"]}
    write_reference_npz(out, states, actions, demos["traj_lengths"], extra)

    lengths = demos["traj_lengths"]
    cfg = get_setting(setting)
    provenance = {
        "generator": __name__ if __name__ != "__main__" else "envs.data.avoid_demos",
        "setting": setting,
        "seed": seed,
        "n_demos": n_demos,
        "demos_per_mode": {str(list(m)): int(np.all(demos["modes"] == m, axis=1).sum()) for m in cfg.demo_modes},
        "rejected": demos["rejected"],
        "transitions": int(lengths.sum()),
        "episode_length": {
            "mean": float(lengths.mean()),
            "min": int(lengths.min()),
            "max": int(lengths.max()),
        },
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "numpy_version": np.__version__,
    }
    write_provenance(out, provenance)
    return out


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", default="avoid_m2", choices=sorted(SETTINGS))
    parser.add_argument("--out", default=None, help="output folder (default: data/<setting>)")
    parser.add_argument("--n-demos", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    out = Path(args.out) if args.out else Path("data") / args.setting
    t0 = time.perf_counter()
    write_dataset(args.setting, out, n_demos=args.n_demos, seed=args.seed)
    prov = json.loads((out / "provenance.json").read_text())
    print(
        f"{args.setting}: {prov['n_demos']} demos, {prov['transitions']} transitions, "
        f"mean length {prov['episode_length']['mean']:.1f}, {prov['rejected']} rejected, "
        f"{time.perf_counter() - t0:.2f}s -> {out}"
    )


if __name__ == "__main__":
    main()
