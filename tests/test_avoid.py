"""Behavioural tests for the Avoid env, its demonstration generator and plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from envs.avoid import SETTINGS, AvoidEnv, gap_index
from envs.data.avoid_demos import generate_demos, write_dataset
from envs.plot_avoid import demo_paths_from_dataset, plot_avoid

START = (0.5, -0.3)
# Waypoints through gaps (1, 0, 0): right of level 1, left of level 2, leftmost at level 3.
REWARDED_ROUTE = [
    (0.59, -0.16),
    (0.59, -0.04),
    (0.375, 0.02),
    (0.375, 0.14),
    (0.29, 0.2),
    (0.29, 0.42),
]
# Same start, but through the level-3 gap between the two right-hand obstacles.
OTHER_ROUTE = [
    (0.59, -0.16),
    (0.59, -0.04),
    (0.375, 0.02),
    (0.375, 0.14),
    (0.575, 0.2),
    (0.575, 0.42),
]


def follow(env: AvoidEnv, waypoints: list[tuple[float, float]]) -> tuple[list[float], dict]:
    """Command each waypoint in turn (the env rate-limits the motion) until the episode ends."""
    obs, info = env.reset(options={"start": START})
    rewards, i = [], 0
    while True:
        target = np.asarray(waypoints[i])
        if i < len(waypoints) - 1 and np.linalg.norm(obs[2:] - target) < 0.015:
            i += 1
            target = np.asarray(waypoints[i])
        obs, reward, terminated, truncated, info = env.step(target)
        rewards.append(reward)
        if terminated or truncated:
            return rewards, info


def test_straight_into_level1_obstacle_collides() -> None:
    env = AvoidEnv()
    env.reset(options={"start": START})
    for _ in range(100):
        _, reward, terminated, truncated, info = env.step(np.array([0.5, 0.1]))
        assert reward == 0.0
        if terminated or truncated:
            break
    assert terminated and not truncated
    assert info["collided"] and not info["success"] and not info["reached_goal"]
    assert info["mode"] == (-1, -1, -1)
    assert np.asarray(info["ee_path"])[-1, 1] < -0.1


def test_collision_detected_along_step_segment() -> None:
    # One step jumps straight over the level-1 obstacle; only the segment test sees it.
    env = AvoidEnv(tracking_gain=1.0, max_desired_step=1.0)
    env.reset(options={"start": START})
    _, _, terminated, _, info = env.step(np.array([0.5, 0.0]))
    assert terminated and info["collided"]


def test_rewarded_gap_gives_reward_and_success() -> None:
    rewards, info = follow(AvoidEnv("avoid_m2"), REWARDED_ROUTE)
    assert rewards[-1] == 1.0 and sum(rewards) == 1.0
    assert info["success"] and info["reached_goal"] and not info["collided"]
    assert info["mode"] == (1, 0, 0)
    assert np.asarray(info["ee_path"])[-1, 1] > 0.35
    assert np.asarray(info["ee_path"]).shape == (len(rewards) + 1, 2)


def test_other_mode_reaches_goal_without_reward() -> None:
    rewards, info = follow(AvoidEnv("avoid_m2"), OTHER_ROUTE)
    assert sum(rewards) == 0.0
    assert info["reached_goal"] and not info["success"] and not info["collided"]
    assert info["mode"] == (1, 0, 2)


def test_standing_still_is_truncated() -> None:
    env = AvoidEnv(max_episode_steps=30)
    obs, _ = env.reset(seed=3)
    for t in range(30):
        obs, reward, terminated, truncated, info = env.step(obs[:2])
        assert reward == 0.0 and not terminated
        assert truncated == (t == 29)
    assert np.asarray(info["ee_path"]).shape == (31, 2)
    assert np.asarray(info["ee_path"]).dtype == np.float32


def test_desired_step_is_limited() -> None:
    env = AvoidEnv(max_desired_step=0.03)
    obs, _ = env.reset(seed=0)
    for _ in range(5):
        new_obs, *_ = env.step(np.array([0.8, 0.45]))
        assert np.linalg.norm(new_obs[:2] - obs[:2]) == pytest.approx(0.03, abs=1e-6)
        obs = new_obs


def test_current_tracks_desired_with_lag() -> None:
    env = AvoidEnv(tracking_gain=0.6)
    obs, _ = env.reset(seed=1)
    for target in [(0.52, -0.28), (0.55, -0.25), (0.55, -0.25), (0.48, -0.3)]:
        new_obs, *_ = env.step(np.array(target))
        expected = obs[2:] + 0.6 * (new_obs[:2] - obs[2:])
        np.testing.assert_allclose(new_obs[2:], expected, atol=1e-6)
        obs = new_obs


def test_random_start_is_seeded_and_bounded() -> None:
    env = AvoidEnv()
    a, _ = env.reset(seed=7)
    b, _ = env.reset(seed=7)
    np.testing.assert_array_equal(a, b)
    assert abs(a[2] - 0.5) <= 0.02 and abs(a[3] + 0.3) <= 0.01
    np.testing.assert_array_equal(a[:2], a[2:])


def test_gap_index_and_unknown_setting() -> None:
    assert [gap_index(1, x) for x in (0.4, 0.5)] == [0, 1]
    assert [gap_index(2, x) for x in (0.4, 0.425, 0.6)] == [0, 1, 2]
    assert [gap_index(3, x) for x in (0.3, 0.4, 0.6, 0.7)] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="avoid_m1"):
        AvoidEnv("nope")


@pytest.fixture(scope="module")
def demos() -> dict:
    return generate_demos("avoid_m2", n_demos=12, seed=0)


def test_demos_replay_successfully_in_their_mode(demos: dict) -> None:
    env = AvoidEnv("avoid_m2")
    bounds = np.cumsum(demos["traj_lengths"])[:-1]
    states = np.split(demos["states"], bounds)
    actions = np.split(demos["actions"], bounds)
    for s, a, mode in zip(states, actions, demos["modes"], strict=True):
        obs, _ = env.reset(options={"start": s[0, 2:]})
        np.testing.assert_array_equal(obs, s[0])
        for t, action in enumerate(a):
            np.testing.assert_array_equal(obs, s[t])
            obs, _, terminated, truncated, info = env.step(action)
            assert terminated == (t == len(a) - 1) and not truncated
        assert info["reached_goal"] and not info["collided"]
        assert info["mode"] == tuple(mode)
    modes = [tuple(m) for m in demos["modes"]]
    for mode in SETTINGS["avoid_m2"].demo_modes:
        assert modes.count(mode) == 6


def test_demos_are_deterministic_per_seed(demos: dict) -> None:
    again = generate_demos("avoid_m2", n_demos=12, seed=0)
    other = generate_demos("avoid_m2", n_demos=12, seed=1)
    for key in ("states", "actions", "traj_lengths", "modes"):
        assert again[key].tobytes() == demos[key].tobytes()
    assert other["states"].shape != demos["states"].shape or not np.array_equal(other["states"], demos["states"])


def test_written_dataset_is_normalised_and_plots(tmp_path: Path) -> None:
    out = write_dataset("avoid_m1", tmp_path / "avoid_m1", n_demos=6, seed=0)
    assert (out / "provenance.json").exists()
    with np.load(out / "train.npz") as train:
        for key in ("states", "actions"):
            assert train[key].min() >= -1.0 and train[key].max() <= 1.0
        assert train["traj_lengths"].sum() == len(train["states"]) == len(train["rewards"])
    paths = demo_paths_from_dataset(out)
    assert len(paths) == 6
    # States stop one step before the goal crossing, so the last one is just below it.
    assert all(0.3 < p[-1, 1] <= 0.35 and p[0, 1] < -0.28 for p in paths)

    png = plot_avoid(paths[:2], tmp_path / "plot.png", demo_paths=paths, successes=[True, False])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
