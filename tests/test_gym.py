"""Gym locomotion: dataset loaders on files written here in D4RL's and the
reference's layouts, scores, and a short fine-tune on Hopper-v5."""

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from envs.data.loaders import DatasetError, load_d4rl_hdf5, load_dataset, split_trajectories, write_reference_npz
from envs.tasks import d4rl_score, get_task

REPO = Path(__file__).resolve().parents[1]


def write_d4rl(path: Path, n: int = 30, obs_dim: int = 11, act_dim: int = 3, keys=None) -> dict:
    rng = np.random.default_rng(0)
    data = {
        "observations": rng.normal(size=(n, obs_dim)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "terminals": np.zeros(n, bool),
        "timeouts": np.zeros(n, bool),
    }
    data["terminals"][9] = True  # episode of 10 ending by termination
    data["timeouts"][21] = True  # episode of 12 ending by timeout; 8 steps left over
    with h5py.File(path, "w") as f:
        for k in keys or data:
            f.create_dataset(k, data=data[k])
    return data


def test_split_trajectories_cuts_at_terminals_and_timeouts():
    obs = np.arange(30)[:, None]
    term = np.zeros(30, bool)
    tout = np.zeros(30, bool)
    term[9], tout[21] = True, True
    _, _, lengths = split_trajectories(obs, obs, term, tout)
    assert lengths.tolist() == [10, 12, 8]
    tout[29] = True
    assert split_trajectories(obs, obs, term, tout)[2].tolist() == [10, 12, 8]


def test_d4rl_hdf5_loader_splits_and_normalises(tmp_path):
    data = write_d4rl(tmp_path / "hopper-medium-v2.hdf5")
    traj = load_dataset(tmp_path / "hopper-medium-v2.hdf5", 11, 3)
    assert traj.traj_lengths.tolist() == [10, 12, 8]
    assert traj.states.min() == pytest.approx(-1, abs=1e-5) and traj.states.max() == pytest.approx(1, abs=1e-5)
    np.testing.assert_allclose(traj.normalizer.unnormalize_obs(traj.states), data["observations"], atol=1e-5)
    obs, acts = traj.chunks(horizon=4)
    assert len(obs) == (10 - 3) + (12 - 3) + (8 - 3)  # chunks never cross an episode boundary
    np.testing.assert_allclose(acts[7], traj.actions[10:14])  # first chunk of the 2nd episode


def test_d4rl_loader_names_missing_keys_and_wrong_dims(tmp_path):
    write_d4rl(tmp_path / "a.hdf5", keys=["observations", "actions", "rewards"])
    with pytest.raises(DatasetError, match=r"lacks D4RL keys \['terminals', 'timeouts'\].*observations \(N, 11\)"):
        load_d4rl_hdf5(tmp_path / "a.hdf5", 11, 3)
    write_d4rl(tmp_path / "b.hdf5", obs_dim=17, act_dim=6)
    with pytest.raises(DatasetError, match=r"observations \(30, 17\).*needs observations \(N, 11\)"):
        load_d4rl_hdf5(tmp_path / "b.hdf5", 11, 3)
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "missing.hdf5", 11, 3)
    with pytest.raises(DatasetError, match="unknown dataset format"):
        load_dataset(tmp_path / "data.csv", 11, 3)


def test_reference_npz_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    states, actions = rng.normal(size=(20, 17)), rng.uniform(-1, 1, size=(20, 6))
    write_reference_npz(tmp_path, states, actions, np.array([12, 8]))
    traj = load_dataset(tmp_path / "train.npz", 17, 6)
    assert traj.traj_lengths.tolist() == [12, 8]
    np.testing.assert_allclose(traj.normalizer.unnormalize_action(traj.actions), actions, atol=1e-5)
    with pytest.raises(DatasetError, match=r"needs states \(N, 11\) and actions \(N, 3\)"):
        load_dataset(tmp_path / "train.npz", 11, 3)


def test_d4rl_score_end_points():
    assert d4rl_score("hopper", -20.272305) == pytest.approx(0.0)
    assert d4rl_score("walker2d", 4592.3) == pytest.approx(100.0)
    assert d4rl_score("halfcheetah", (12135.0 - 280.178953) / 2) == pytest.approx(50.0)


def test_gym_tasks_match_table_a6():
    for name, obs, act in (("hopper", 11, 3), ("walker2d", 17, 6), ("halfcheetah", 17, 6)):
        t = get_task(name)
        assert (t.obs_dim, t.act_dim, t.max_episode_steps, t.act_steps, t.eval_episodes) == (obs, act, 1000, 4, 40)
        env = t.make_raw_env()
        assert env.observation_space.shape == (obs,) and env.action_space.shape == (act,)
        env.close()


def test_short_dppo_run_on_hopper_from_a_d4rl_file(tmp_path):
    """Pre-train on a tiny D4RL-layout file, fine-tune 2 iterations with the real Hopper-v5."""
    rng = np.random.default_rng(0)
    n = 400
    with h5py.File(tmp_path / "tiny.hdf5", "w") as f:
        f["observations"] = rng.normal(size=(n, 11)).astype(np.float32)
        f["actions"] = rng.uniform(-1, 1, size=(n, 3)).astype(np.float32)
        f["rewards"] = np.ones(n, np.float32)
        f["terminals"] = np.zeros(n, bool)
        f["timeouts"] = (np.arange(n) % 100) == 99
    args = [
        "method=dppo",
        "task=hopper",
        "scale=cpu",
        f"dataset={tmp_path / 'tiny.hdf5'}",
        f"results_dir={tmp_path}",
        "pretrain.n_steps=20",
        "policy.hidden=[32,32,32]",
        "train.n_envs=2",
        "train.n_steps=10",
        "train.n_iterations=2",
        "train.eval_episodes=2",
        "algo.batch_size=40",
        "progress=false",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.run", *args], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "dppo_hopper_s0"
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["itr"] for r in rows] == [0, 1]
    assert rows[0]["env_steps"] > 0 and "train_score" in rows[0]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["final_eval"]["eval_episodes"] == 2 and "eval_score" in summary["final_eval"]
    assert (run / "plots" / "learning_curve.png").stat().st_size > 0
    # the Hopper policy is refused by an Avoid run before anything is created
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.run",
            "method=dppo",
            "task=avoid_m2",
            f"checkpoint={run / 'checkpoints' / 'final.pt'}",
            f"results_dir={tmp_path / 'other'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "obs dim 11" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "other").exists()
