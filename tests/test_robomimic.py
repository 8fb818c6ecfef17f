"""The Robomimic suite on robosuite: the envs, the scripted demonstrations, robomimic's HDF5 layout and
the bad input each must refuse."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import imageio.v2 as imageio
import numpy as np
import pytest

from common.names import UnknownNameError
from envs.data.loaders import DatasetError, load_dataset
from envs.data.robomimic_demos import generate
from envs.data.robomimic_hdf5 import load_robomimic_hdf5
from envs.robomimic import ROBOMIMIC_TASKS, RobomimicEnv, UnsupportedVersionError, check_versions
from envs.tasks import get_task

REPO = Path(__file__).resolve().parents[1]
SPEC5 = {"lift": (19, 7, 300), "can": (23, 7, 300), "square": (23, 7, 400), "transport": (59, 14, 800)}


@pytest.mark.parametrize("task", sorted(SPEC5))
def test_task_dimensions_and_seeded_resets(task: str) -> None:
    obs_dim, act_dim, max_steps = SPEC5[task]
    spec = get_task(task)
    assert (spec.obs_dim, spec.act_dim, spec.max_episode_steps) == (obs_dim, act_dim, max_steps)
    assert spec.suite == "robomimic"
    env = RobomimicEnv(task)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (5, act_dim))
    runs = []
    for seed in (7, 7, 8):
        obs, _ = env.reset(seed=seed)
        assert obs.shape == (obs_dim,)
        state = env.sim_state()
        runs.append((state, np.stack([env.step(a)[0] for a in actions])))
    (s7, o7), (s7b, o7b), (s8, _) = runs
    np.testing.assert_array_equal(s7, s7b)  # a seed reproduces the placement and the arm's initial noise
    np.testing.assert_array_equal(o7, o7b)  # and the episode
    assert not np.array_equal(s7, s8)
    env.close()


def test_episode_runs_to_its_step_limit_with_sparse_reward() -> None:
    env = RobomimicEnv("lift")
    env.reset(seed=0)
    rewards, ends = [], []
    for _ in range(300):
        _, reward, terminated, truncated, info = env.step(np.zeros(7))
        rewards.append(reward)
        ends.append((terminated, truncated))
    assert ends[-1] == (False, True) and not any(t or u for t, u in ends[:-1])
    assert set(rewards) == {0.0} and info["success"] is False  # doing nothing lifts nothing


def test_observation_is_the_spec_keys_in_order() -> None:
    env = RobomimicEnv("can")
    obs, _ = env.reset(seed=1)
    raw = env.raw_obs()
    expected = np.concatenate(
        [raw["robot0_eef_pos"], raw["robot0_eef_quat"], raw["robot0_gripper_qpos"], raw["object-state"]]
    )
    np.testing.assert_allclose(obs, expected)


def test_version_range_is_enforced() -> None:
    check_versions({"mujoco": "3.9.0", "robosuite": "1.5.2"})
    with pytest.raises(UnsupportedVersionError, match=r"mujoco 3\.17\.0 is installed.*mujoco>=3\.4,<3\.10"):
        check_versions({"mujoco": "3.17.0", "robosuite": "1.5.2"})
    with pytest.raises(UnsupportedVersionError, match=r"robosuite 1\.4\.1 is installed"):
        check_versions({"mujoco": "3.9.0", "robosuite": "1.4.1"})


def test_task_name_typo_names_the_task() -> None:
    with pytest.raises(UnknownNameError, match=r"Did you mean can\?"):
        get_task("cann")


# ---------------------------------------------------------------------------------------- demonstrations
@pytest.fixture(scope="module")
def lift_demos(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lift")
    generate("lift", out, n_demos=3, workers=1, progress=False)
    return out


def test_demos_are_written_in_robomimic_and_reference_layouts(lift_demos: Path) -> None:
    prov = json.loads((lift_demos / "provenance.json").read_text())
    assert prov["demos"] == 3 and prov["task"] == "lift" and 0 < prov["scripted_success_rate"] <= 1
    assert prov["versions"]["robosuite"].startswith("1.5") and prov["versions"]["mujoco"].startswith("3.")
    with h5py.File(lift_demos / "demo.hdf5", "r") as f:
        env_args = json.loads(f["data"].attrs["env_args"])
        assert env_args["env_name"] == "Lift" and env_args["type"] == 1
        assert env_args["env_kwargs"]["controller_configs"]["body_parts"]["right"]["type"] == "OSC_POSE"
        assert env_args["env_kwargs"]["control_freq"] == 20
        total = 0
        for i in range(3):
            demo = f[f"data/demo_{i}"]
            n = demo.attrs["num_samples"]
            total += n
            assert demo["actions"].shape == (n, 7) and np.abs(demo["actions"][:]).max() <= 1
            assert demo["rewards"][-1] == 1.0 and demo["dones"][-1] == 1 and demo["dones"][:-1].sum() == 0
            assert demo["obs/object"].shape == (n, 10) and demo["obs/robot0_eef_pos"].shape == (n, 3)
            assert demo["states"].shape[0] == n
        assert f["data"].attrs["total"] == total
    with np.load(lift_demos / "train.npz") as npz:
        assert npz["states"].shape == (total, 19) and int(npz["traj_lengths"].sum()) == total
        assert np.abs(npz["states"]).max() <= 1.0 + 1e-6


def test_replaying_a_demo_reproduces_it(lift_demos: Path) -> None:
    """The recorded actions, replayed from the recorded seed, give the recorded observations and success."""
    with h5py.File(lift_demos / "demo.hdf5", "r") as f:
        demo = f["data/demo_1"]
        seed, actions, eef = int(demo.attrs["seed"]), demo["actions"][:], demo["obs/robot0_eef_pos"][:]
        first_state = demo["states"][0]
    env = RobomimicEnv("lift")
    env.reset(seed=seed)
    np.testing.assert_array_equal(env.sim_state(), first_state)
    seen = []
    for a in actions:
        seen.append(env.raw_obs()["robot0_eef_pos"])
        _, reward, *_ = env.step(a)
    np.testing.assert_allclose(np.stack(seen), eef, atol=1e-9)
    assert reward == 1.0


def test_hdf5_loader_default_and_chosen_keys(lift_demos: Path) -> None:
    spec = get_task("lift")
    data = load_dataset(lift_demos / "demo.hdf5", 19, 7, spec.robomimic)
    with np.load(lift_demos / "train.npz") as npz:
        np.testing.assert_allclose(data.states, npz["states"], atol=1e-5)  # the npz holds the same SPEC 5 obs
    custom = spec.with_obs_keys(["robot0_eef_pos", "robot0_joint_pos", "object"])
    assert custom.obs_dim == 3 + 7 + 10
    assert custom.load_dataset(lift_demos / "demo.hdf5").states.shape[1] == 20


def _copy_with(src: Path, dst: Path, edit) -> Path:
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        edit(f)
    return dst


def _set_env_args(f, change) -> None:
    args = json.loads(f["data"].attrs["env_args"])
    change(args)
    f["data"].attrs["env_args"] = json.dumps(args)


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda f: _set_env_args(f, lambda a: a.update(env_name="PickPlaceCan")), "recorded on 'PickPlaceCan'"),
        (lambda f: _set_env_args(f, lambda a: a["env_kwargs"].update(robots=["Sawyer"])), "robots ['Sawyer']"),
        (
            lambda f: _set_env_args(f, lambda a: a["env_kwargs"].update(controller_configs={"type": "JOINT_VELOCITY"})),
            "JOINT_VELOCITY",
        ),
        (lambda f: [f[f"data/demo_{i}/rewards"].__setitem__(slice(None), 0.0) for i in range(3)], "success reward"),
        (lambda f: f["data/demo_0/obs"].__delitem__("object"), "no observation keys ['object']"),
    ],
    ids=["other_env", "other_robot", "other_controller", "no_success", "missing_key"],
)
def test_hdf5_loader_refuses_mismatched_files(lift_demos: Path, tmp_path: Path, edit, needle: str) -> None:
    bad = _copy_with(lift_demos / "demo.hdf5", tmp_path / "bad.hdf5", edit)
    with pytest.raises(DatasetError) as e:
        load_robomimic_hdf5(bad, ROBOMIMIC_TASKS["lift"])
    assert needle in str(e.value)


def test_robomimic_file_with_a_gym_task_is_refused(lift_demos: Path) -> None:
    with pytest.raises(DatasetError, match="Robomimic task"):
        get_task("hopper").load_dataset(lift_demos / "demo.hdf5")


def test_unknown_obs_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="no observation keys \\['robot0_eef_vel'\\]"):
        get_task("lift").with_obs_keys(["robot0_eef_vel"])
    with pytest.raises(ValueError, match="Robomimic"):
        get_task("hopper").with_obs_keys(["robot0_eef_pos"])


# ---------------------------------------------------------------------------------------- end to end
def test_pretrain_finetune_with_async_envs_and_video(lift_demos: Path, tmp_path: Path) -> None:
    """A tiny run on the generated Lift demos: subprocess envs, and the evaluations' first episodes as MP4."""
    common = [
        "task=lift",
        f"results_dir={tmp_path}",
        "progress=false",
        "policy.hidden=[32,32,32]",
        "train.n_envs=2",
        "train.n_steps=3",
        "train.n_iterations=1",
        "train.eval_episodes=1",
        "train.vector_env=async",
        "train.video=true",
        "train.video_size=32",
        f"dataset={lift_demos / 'demo.hdf5'}",
        "pretrain.n_steps=20",
        "pretrain.n_epochs=null",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.run", "method=dppo", "name=run", *common],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["env_steps"] == 2 * 3 * 4
    videos = sorted((run / "videos").glob("*.mp4"))
    assert [v.name for v in videos] == ["eval_initial.mp4", "eval_itr0001.mp4"]
    frames = imageio.mimread(videos[0])
    assert len(frames) == 301 and frames[0].shape == (32, 32, 3)  # reset + 300 steps of the one episode


def test_demo_generator_cli_refuses_a_typo() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "envs.data.robomimic_demos", "--task", "lfit"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "invalid choice: 'lfit'" in proc.stderr


def test_auto_vector_env_uses_subprocesses_only_for_slow_envs_on_several_cpus() -> None:
    from envs.vector import resolve_kind, usable_cpus

    several = usable_cpus() > 1
    assert resolve_kind("auto", 8, slow_env=True) == ("async" if several else "sync")
    assert resolve_kind("auto", 8, slow_env=False) == "sync"
    assert resolve_kind("auto", 1, slow_env=True) == "sync"
    assert resolve_kind("sync", 8, slow_env=True) == "sync" and resolve_kind("async", 1, slow_env=False) == "async"
    assert get_task("can").steps_slowly and not get_task("hopper").steps_slowly
