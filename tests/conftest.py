"""Every in-process test computes with one torch thread, as runs do by default (`threads=1`): float
reductions then add up in the same order on any machine, whatever its core count."""

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, monkeypatch_module):
    """Datasets generated here, small: the Gym ones from 2,000 transitions of the behaviour policy."""
    path = tmp_path_factory.mktemp("data")
    monkeypatch_module.setenv("DPPO_DATA_DIR", str(path))
    monkeypatch_module.setenv("DPPO_GYM_TRANSITIONS", "2000")
    return path


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp
