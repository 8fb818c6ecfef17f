"""Env wrappers every task goes through: normalisation and action chunks."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from envs.normalizer import MinMaxNormalizer


class NonFiniteError(RuntimeError):
    """An observation or action contained NaN or inf."""


class NormalizeWrapper(gym.Wrapper):
    """The policy sees observations in [-1, 1] and emits actions in [-1, 1];
    the wrapped env gets raw actions."""

    def __init__(self, env: gym.Env, normalizer: MinMaxNormalizer):
        super().__init__(env)
        self.normalizer = normalizer
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (normalizer.obs_dim,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (normalizer.act_dim,), np.float32)

    def _obs(self, obs: np.ndarray) -> np.ndarray:
        if not np.all(np.isfinite(obs)):
            raise NonFiniteError(
                f"{self.env.spec.id if self.env.spec else type(self.env.unwrapped).__name__} "
                f"returned a non-finite observation {obs}; check the simulator state and the task's dataset"
            )
        return self.normalizer.normalize_obs(obs)

    def reset(self, **kwargs) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        return self._obs(obs), info

    def step(self, action: np.ndarray):
        if not np.all(np.isfinite(action)):
            raise NonFiniteError(f"policy produced a non-finite action {action}; the policy has diverged")
        obs, reward, terminated, truncated, info = self.env.step(self.normalizer.unnormalize_action(action))
        return self._obs(obs), reward, terminated, truncated, info


class ActionChunkWrapper(gym.Wrapper):
    """Executes the first `act_steps` actions of a chunk (Ta_pred, Da) as one step.

    Rewards are summed; the chunk stops early at termination or truncation and
    the info of the last executed step is returned, with `chunk_steps` added.
    """

    def __init__(self, env: gym.Env, horizon: int, act_steps: int):
        super().__init__(env)
        if not 1 <= act_steps <= horizon:
            raise ValueError(f"act_steps must be in [1, horizon={horizon}], got {act_steps}")
        self.act_steps = act_steps
        inner = env.action_space
        self.action_space = gym.spaces.Box(
            np.repeat(inner.low[None], horizon, 0), np.repeat(inner.high[None], horizon, 0), dtype=inner.dtype
        )

    def step(self, chunk: np.ndarray):
        total = 0.0
        for j in range(self.act_steps):
            obs, reward, terminated, truncated, info = self.env.step(chunk[j])
            total += float(reward)
            if terminated or truncated:
                break
        info = dict(info, chunk_steps=j + 1)
        return obs, total, terminated, truncated, info


class RecordFrames(gym.Wrapper):
    """Renders every step of the first episode after a seeded reset (an evaluation's start) and hands the
    frames over in that episode's last info as `frames` (T+1, H, W, 3) uint8."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.frames: list[np.ndarray] | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.frames = [self.env.render()] if seed is not None else None
        return obs, info

    def step(self, action: np.ndarray):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self.frames is not None:
            self.frames.append(self.env.render())
            if terminated or truncated:
                info = dict(info, frames=np.stack(self.frames))
                self.frames = None
        return obs, reward, terminated, truncated, info
