"""Regenerating a medium dataset from a committed behaviour policy."""

import json

import h5py
import numpy as np
import pytest

from envs.data.gym_medium import MEDIUM, episode_returns, load_behaviour_policy, policy_path, write_dataset
from envs.data.loaders import DatasetError, load_dataset

COMMITTED = [t for t in MEDIUM if policy_path(t).is_file()]


@pytest.mark.parametrize("task", COMMITTED)
def test_regenerated_dataset_has_both_layouts_and_provenance(task, tmp_path):
    write_dataset(task, tmp_path, n_transitions=1500, seed=3)
    prov = json.loads((tmp_path / "provenance.json").read_text())
    assert prov["transitions"] == 1500 and prov["behaviour_policy"]["training_steps"] > 0
    with h5py.File(tmp_path / f"{task}-medium.hdf5") as f:
        data = {k: f[k][:] for k in f}
    assert len(data["observations"]) == 1500
    np.testing.assert_allclose(
        data["observations"][1:][~(data["terminals"] | data["timeouts"])[:-1]],
        data["next_observations"][:-1][~(data["terminals"] | data["timeouts"])[:-1]],
    )
    from_h5 = load_dataset(tmp_path / f"{task}-medium.hdf5", *data["observations"].shape[1:], data["actions"].shape[1])
    from_npz = load_dataset(tmp_path / "train.npz", data["observations"].shape[1], data["actions"].shape[1])
    assert from_h5.traj_lengths.tolist() == from_npz.traj_lengths.tolist()
    np.testing.assert_allclose(from_h5.states, from_npz.states, atol=1e-6)
    assert prov["episodes"] == len(episode_returns(data))
    # deterministic for a seed
    write_dataset(task, tmp_path / "again", n_transitions=1500, seed=3)
    with h5py.File(tmp_path / "again" / f"{task}-medium.hdf5") as f:
        np.testing.assert_array_equal(f["actions"][:], data["actions"])


def test_missing_behaviour_policy_names_the_fix(monkeypatch, tmp_path):
    import envs.data.gym_medium as gm

    monkeypatch.setattr(gm, "POLICY_DIR", tmp_path)
    with pytest.raises(DatasetError, match="--train"):
        load_behaviour_policy("hopper")
