"""The replay buffer of recent experience that the off-policy baselines (DAWR, DIPO, IDQL, DQL, QSM) share.

It keeps the last `capacity` env-step transitions from N parallel envs as rows of N, on the run's device:
observation, the next observation (the true final one where an episode ended, so truncation can be
bootstrapped), the action chunk the policy sampled, the (scaled) reward, and termination and truncation
kept apart. Rows stay in time order per env (`in_time_order`), which DAWR's TD(lambda) needs; sampling is
uniform over transitions, with replacement, as the reference samples (`np.random.choice`).
"""

from __future__ import annotations

from typing import Any

import torch

FIELDS = ("obs", "next_obs", "actions", "rewards", "terminated", "truncated")


class ReplayBuffer:
    def __init__(
        self, capacity: int, n_envs: int, obs_dim: int, horizon: int, act_dim: int, device: torch.device | str
    ):
        """`capacity` in transitions; it holds `capacity // n_envs` (at least 1) rows of `n_envs`."""
        self.n_envs, self.device = n_envs, torch.device(device)
        self.rows = max(1, capacity // n_envs)
        shape = (self.rows, n_envs)
        self.data = {
            "obs": torch.zeros(*shape, obs_dim, device=self.device),
            "next_obs": torch.zeros(*shape, obs_dim, device=self.device),
            "actions": torch.zeros(*shape, horizon, act_dim, device=self.device),
            "rewards": torch.zeros(*shape, device=self.device),
            "terminated": torch.zeros(*shape, dtype=torch.bool, device=self.device),
            "truncated": torch.zeros(*shape, dtype=torch.bool, device=self.device),
        }
        self.next_row = 0  # where the next row is written
        self.filled = 0  # rows written so far, up to self.rows

    def __len__(self) -> int:
        return self.filled * self.n_envs

    def add(self, **rows: torch.Tensor) -> None:
        """Append T rows: each field (T, N, ...), all of FIELDS. Beyond capacity the oldest rows go."""
        if set(rows) != set(FIELDS):
            raise ValueError(f"ReplayBuffer.add needs exactly {FIELDS}, got {sorted(rows)}")
        T = rows["obs"].shape[0]
        start = max(0, T - self.rows)  # more rows than fit: only the last self.rows matter
        for t in range(start, T):
            for k in FIELDS:
                self.data[k][self.next_row] = rows[k][t]
            self.next_row = (self.next_row + 1) % self.rows
        self.filled = min(self.rows, self.filled + T - start)

    def sample_indices(self, batch_size: int) -> torch.Tensor:
        """Flat transition indices, uniform with replacement over what the buffer holds."""
        if not len(self):
            raise RuntimeError("sampling from an empty replay buffer")
        return torch.randint(0, len(self), (batch_size,), device=self.device)

    def get(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """The transitions at flat indices `idx` (from `sample_indices`): each field (B, ...)."""
        return {k: v.flatten(0, 1)[idx] for k, v in self.data.items()}

    def set_actions(self, idx: torch.Tensor, actions: torch.Tensor) -> None:
        """Overwrite the stored action chunks at flat indices `idx` (DIPO writes its moved actions back)."""
        self.data["actions"].view(-1, *self.data["actions"].shape[2:])[idx] = actions

    def in_time_order(self) -> dict[str, torch.Tensor]:
        """Every field as (rows held, N, ...), oldest row first."""
        if self.filled < self.rows:
            return {k: v[: self.filled] for k, v in self.data.items()}
        order = torch.arange(self.next_row, self.next_row + self.rows, device=self.device) % self.rows
        return {k: v[order] for k, v in self.data.items()}

    def state_dict(self) -> dict[str, Any]:
        # The rows as stored (not re-ordered), so sampled indices after a resume pick the same transitions.
        held = {k: v[: self.filled].clone() for k, v in self.data.items()}
        return {"fields": held, "rows": self.rows, "n_envs": self.n_envs, "next_row": self.next_row}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (state["rows"], state["n_envs"]) != (self.rows, self.n_envs):
            raise ValueError(
                f"the saved replay buffer holds {state['rows']} rows of {state['n_envs']} envs, this run's "
                f"{self.rows} of {self.n_envs}: resume with the run's own algo.buffer_size and train.n_envs"
            )
        held = state["fields"]
        self.filled, self.next_row = held["obs"].shape[0], state["next_row"]
        for k in FIELDS:
            self.data[k][: self.filled] = held[k].to(self.device)
