"""Env plumbing: action chunks, normalisation, vector envs."""

import gymnasium as gym
import numpy as np
import pytest

from envs.normalizer import MinMaxNormalizer
from envs.vector import EnvMemoryError, check_memory, make_vector_env
from envs.wrappers import ActionChunkWrapper, NonFiniteError, NormalizeWrapper


class CountingEnv(gym.Env):
    """Reward t at step t (1-based); terminates at step `end`, truncates at `limit`."""

    def __init__(self, end=6, limit=100, nan_at=None):
        self.end, self.limit, self.nan_at = end, limit, nan_at
        self.observation_space = gym.spaces.Box(-10, 10, (2,), np.float32)
        self.action_space = gym.spaces.Box(-10, 10, (1,), np.float32)
        self.actions = []

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        self.actions.append(float(action[0]))
        obs = np.full(2, self.t, np.float32)
        if self.t == self.nan_at:
            obs[0] = np.nan
        return obs, float(self.t), self.t == self.end, self.t == self.limit, {"t": self.t}


def test_chunk_sums_rewards_and_stops_at_termination():
    env = ActionChunkWrapper(CountingEnv(end=6), horizon=4, act_steps=4)
    env.reset()
    _, r, term, trunc, info = env.step(np.arange(4, dtype=np.float32)[:, None])
    assert (r, term, trunc, info["chunk_steps"]) == (1 + 2 + 3 + 4, False, False, 4)
    _, r, term, trunc, info = env.step(np.zeros((4, 1), np.float32))
    assert (r, term, trunc, info["chunk_steps"], info["t"]) == (5 + 6, True, False, 2, 6)


def test_chunk_stops_at_truncation_and_executes_only_act_steps():
    inner = CountingEnv(end=100, limit=3)
    env = ActionChunkWrapper(inner, horizon=4, act_steps=2)
    env.reset()
    _, r, _, _, _ = env.step(np.array([[1.0], [2.0], [3.0], [4.0]], np.float32))
    assert r == 1 + 2 and inner.actions == [1.0, 2.0]
    _, r, term, trunc, info = env.step(np.array([[5.0], [6.0], [7.0], [8.0]], np.float32))
    assert (r, term, trunc, info["chunk_steps"]) == (3, False, True, 1)
    assert inner.actions == [1.0, 2.0, 5.0]


def test_normalize_wrapper_maps_both_ways_and_rejects_nan():
    norm = MinMaxNormalizer([0, 0], [10, 10], [-2], [2])
    env = NormalizeWrapper(CountingEnv(nan_at=2), norm)
    obs, _ = env.reset()
    np.testing.assert_allclose(obs, [-1, -1], atol=1e-6)
    obs, *_ = env.step(np.array([0.5], np.float32))
    assert env.env.actions[0] == pytest.approx(1.0, abs=1e-5)  # 0.5 in [-1,1] -> 1.0 in [-2,2]
    np.testing.assert_allclose(obs, [-0.8, -0.8], atol=1e-5)
    with pytest.raises(NonFiniteError, match="non-finite observation"):
        env.step(np.array([0.0], np.float32))
    with pytest.raises(NonFiniteError, match="non-finite action"):
        env.step(np.array([np.nan], np.float32))


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_vector_env_keeps_final_observation(kind):
    venv = make_vector_env([lambda: CountingEnv(end=2)] * 2, kind)
    venv.reset(seed=0)
    venv.step(np.zeros((2, 1), np.float32))
    obs, _, term, _, info = venv.step(np.zeros((2, 1), np.float32))
    assert term.all()
    np.testing.assert_allclose(obs, 0)  # already reset
    np.testing.assert_allclose(np.stack(info["final_obs"]), 2)  # the true last observation
    venv.close()


def test_subprocess_envs_refused_when_memory_would_run_out():
    check_memory(3, 0.5, available_gb=2.0)  # 1.5 GB fits
    with pytest.raises(EnvMemoryError, match=r"3 subprocess envs need ~6 GB .* 2 GB is available; lower train.n_envs"):
        check_memory(3, 2.0, available_gb=2.0)
    # make_vector_env checks before starting any worker, against the memory actually available
    with pytest.raises(EnvMemoryError):
        make_vector_env([lambda: CountingEnv(end=2)] * 2, "async", gb_per_env=1e9)
    make_vector_env([lambda: CountingEnv(end=2)] * 2, "sync", gb_per_env=1e9).close()  # in-process: no check
