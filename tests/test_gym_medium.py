"""Regenerating a medium dataset from a committed behaviour policy."""

import json

import h5py
import numpy as np
import pytest

from envs.data.gym_medium import (
    MEDIUM,
    confidently_within,
    episode_returns,
    load_behaviour_policy,
    policy_path,
    write_dataset,
)
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


def test_sac_stops_only_when_the_mean_is_inside_the_range_by_a_standard_error():
    walker = MEDIUM["walker2d"].accept  # (2400, 3400)
    # the committed policy's confirmation: 2964 ± 827 over 30 episodes (se 151)
    assert confidently_within(2964.0, 827.0, 30, walker)
    # the earlier, rejected checkpoint at 240k steps: 2400 ± 1061 (se 194) sits on the edge
    assert not confidently_within(2400.0, 1061.0, 30, walker)
    assert not confidently_within(2505.0, 888.0, 30, walker)  # 2505 < 2400 + 162
    assert not confidently_within(3300.0, 900.0, 30, walker)  # 3300 > 3400 - 164
    assert confidently_within(3300.0, 900.0, 10_000, walker)  # more episodes, smaller margin
