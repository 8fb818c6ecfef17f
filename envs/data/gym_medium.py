"""D4RL-style "medium" datasets for the Gym locomotion tasks, made here.

D4RL's medium data came from a SAC policy trained online and stopped at about
a third of expert return, rolled out with its stochastic actions. We do the
same with Stable-Baselines3's SAC on gymnasium's MuJoCo v5 envs:

    python -m envs.data.gym_medium --task hopper                   # regenerate from the committed policy
    python -m envs.data.gym_medium --task hopper --transitions 1000000
    python -m envs.data.gym_medium --task hopper --train           # retrain the behaviour policy (slow)

The behaviour policies (SAC actors, a few hundred kB each) are committed under
`envs/data/behaviour_policies/`, so regeneration needs neither SB3 nor training.
Outputs, in `data/<task>/` by default: `<task>-medium.hdf5` (D4RL layout),
`train.npz` + `normalization.npz` (the reference's layout) and `provenance.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from envs.data.loaders import DatasetError

POLICY_DIR = Path(__file__).resolve().parent / "behaviour_policies"
SAC_ENVS, SAC_GRADIENT_STEPS = 4, 2
SCREEN_EPISODES, CONFIRM_EPISODES = 10, 30


@dataclass(frozen=True)
class MediumSpec:
    env_id: str
    target_return: float  # D4RL medium dataset's mean episode return (v2)
    accept: tuple[float, float]  # acceptable mean return of the generated data
    max_train_steps: int


MEDIUM = {
    "hopper": MediumSpec("Hopper-v5", 1420.0, (1200.0, 1800.0), 400_000),
    "walker2d": MediumSpec("Walker2d-v5", 2850.0, (2400.0, 3400.0), 800_000),
    "halfcheetah": MediumSpec("HalfCheetah-v5", 4770.0, (4000.0, 5500.0), 400_000),
}


class SquashedGaussianActor(nn.Module):
    """SB3's SAC actor (2x256 ReLU, tanh-squashed Gaussian), rebuilt so the committed
    weights run with torch alone."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256):
        super().__init__()
        self.latent = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.mu = nn.Linear(hidden, act_dim)
        self.log_std = nn.Linear(hidden, act_dim)

    @torch.no_grad()
    def act(self, obs: np.ndarray, rng: torch.Generator, deterministic: bool = False) -> np.ndarray:
        h = self.latent(torch.as_tensor(obs, dtype=torch.float32))
        mu = self.mu(h)
        if deterministic:
            return torch.tanh(mu).numpy()
        std = self.log_std(h).clamp(-20, 2).exp()
        return torch.tanh(mu + std * torch.randn(mu.shape, generator=rng)).numpy()

    @classmethod
    def from_sb3(cls, model) -> SquashedGaussianActor:
        actor = model.policy.actor
        obs_dim = model.observation_space.shape[0]
        act_dim = model.action_space.shape[0]
        net = cls(obs_dim, act_dim)
        net.latent[0].load_state_dict(actor.latent_pi[0].state_dict())
        net.latent[2].load_state_dict(actor.latent_pi[2].state_dict())
        net.mu.load_state_dict(actor.mu.state_dict())
        net.log_std.load_state_dict(actor.log_std.state_dict())
        return net


def policy_path(task: str) -> Path:
    return POLICY_DIR / f"{task}_sac_medium.pt"


def load_behaviour_policy(task: str) -> tuple[SquashedGaussianActor, dict]:
    path = policy_path(task)
    if not path.is_file():
        raise DatasetError(
            f"no behaviour policy for {task} at {path}; "
            f"train one with: python -m envs.data.gym_medium --task {task} --train"
        )
    payload = torch.load(path, map_location="cpu", weights_only=False)
    net = SquashedGaussianActor(payload["obs_dim"], payload["act_dim"])
    net.load_state_dict(payload["state_dict"])
    return net.eval(), payload["meta"]


def evaluate(actor: SquashedGaussianActor, env_id: str, episodes: int, seed: int) -> tuple[float, float]:
    env = gym.make(env_id)
    rng = torch.Generator().manual_seed(seed)
    returns = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        total, done = 0.0, False
        while not done:
            obs, r, term, trunc, _ = env.step(actor.act(obs, rng))
            total += float(r)
            done = term or trunc
        returns.append(total)
    env.close()
    return float(np.mean(returns)), float(np.std(returns))


def confidently_within(mean: float, std: float, n: int, bounds: tuple[float, float]) -> bool:
    """Is `mean` (of `n` episodes) inside `bounds` by at least one standard error?"""
    se = std / np.sqrt(n)
    return bounds[0] + se <= mean <= bounds[1] - se


def train(task: str, seed: int = 0, eval_every: int = 10_000, log=print) -> Path:
    """Train SAC until its stochastic return reaches the D4RL medium level; save the actor."""
    from stable_baselines3 import SAC
    from stable_baselines3.common.env_util import make_vec_env

    spec = MEDIUM[task]
    torch.set_num_threads(1)
    env = gym.make(spec.env_id)
    # 4 envs and 2 gradient steps per vector step (replay ratio 0.5): about 2x faster on a CPU
    # than SB3's one-env default, and sample efficiency matters little for a medium-level policy.
    venv = make_vec_env(spec.env_id, n_envs=SAC_ENVS, seed=seed)
    model = SAC("MlpPolicy", venv, seed=seed, verbose=0, device="cpu", gradient_steps=SAC_GRADIENT_STEPS)
    steps, t0 = 0, time.time()
    history = []
    while steps < spec.max_train_steps:
        model.learn(eval_every, reset_num_timesteps=False, progress_bar=False)
        steps += eval_every
        actor = SquashedGaussianActor.from_sb3(model)
        mean, std = evaluate(actor, spec.env_id, episodes=SCREEN_EPISODES, seed=10_000 + steps)
        history.append((steps, mean))
        log(f"{task}: {steps} SAC steps, stochastic return {mean:.0f} ± {std:.0f} ({time.time() - t0:.0f}s)")
        if not spec.accept[0] <= mean <= spec.accept[1]:
            continue
        # A 10-episode screen is noisy (Walker2d's std is ~1000 from falls), so confirm on more
        # episodes and ask for the mean to sit inside the range by one standard error.
        mean, std = evaluate(actor, spec.env_id, episodes=CONFIRM_EPISODES, seed=20_000 + steps)
        log(f"{task}: confirm over {CONFIRM_EPISODES} episodes: {mean:.0f} ± {std:.0f}")
        if confidently_within(mean, std, CONFIRM_EPISODES, spec.accept):
            break
    else:
        raise RuntimeError(f"{task}: SAC did not reach the medium range {spec.accept} in {spec.max_train_steps} steps")
    POLICY_DIR.mkdir(parents=True, exist_ok=True)
    meta = {
        "agent": f"stable-baselines3 SAC (MlpPolicy defaults; {SAC_ENVS} envs, gradient_steps {SAC_GRADIENT_STEPS})",
        "env_id": spec.env_id,
        "seed": seed,
        "training_steps": steps,
        "eval_return_mean": mean,
        "eval_return_std": std,
        "eval_history": history,
        "train_wall_time_s": time.time() - t0,
    }
    payload = {
        "obs_dim": env.observation_space.shape[0],
        "act_dim": env.action_space.shape[0],
        "state_dict": actor.state_dict(),
        "meta": meta,
    }
    torch.save(payload, policy_path(task))
    return policy_path(task)


def collect(task: str, n_transitions: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Roll the behaviour policy out (stochastic actions) for `n_transitions` steps, D4RL-style."""
    spec = MEDIUM[task]
    actor, _ = load_behaviour_policy(task)
    env = gym.make(spec.env_id)
    rng = torch.Generator().manual_seed(seed)
    buf = {k: [] for k in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")}
    obs, _ = env.reset(seed=seed)
    episode = 0
    for _ in range(n_transitions):
        action = actor.act(obs, rng)
        next_obs, r, term, trunc, _ = env.step(action)
        for k, v in zip(buf, (obs, action, r, next_obs, term, trunc)):
            buf[k].append(v)
        obs = next_obs
        if term or trunc:
            episode += 1
            obs, _ = env.reset(seed=seed + episode)
    buf["timeouts"][-1] = not buf["terminals"][-1]  # the last, cut-off episode ends by timeout
    env.close()
    return {
        "observations": np.asarray(buf["observations"], np.float32),
        "actions": np.asarray(buf["actions"], np.float32),
        "rewards": np.asarray(buf["rewards"], np.float32),
        "next_observations": np.asarray(buf["next_observations"], np.float32),
        "terminals": np.asarray(buf["terminals"], bool),
        "timeouts": np.asarray(buf["timeouts"], bool),
    }


def episode_returns(data: dict[str, np.ndarray]) -> list[float]:
    """Returns of the complete episodes (the last, cut-off one excluded)."""
    ends = np.flatnonzero(data["terminals"] | data["timeouts"])
    returns, start = [], 0
    for end in ends[:-1] if not data["terminals"][-1] else ends:
        returns.append(float(data["rewards"][start : end + 1].sum()))
        start = end + 1
    return returns


def write_dataset(task: str, out_dir: str | Path, n_transitions: int = 200_000, seed: int = 0) -> Path:
    import h5py

    from envs.data.loaders import split_trajectories, write_provenance, write_reference_npz

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "provenance.json").unlink(missing_ok=True)
    t0 = time.time()
    data = collect(task, n_transitions, seed)
    h5_path = out_dir / f"{task}-medium.hdf5"
    tmp = h5_path.with_suffix(".tmp")
    with h5py.File(tmp, "w") as f:
        for k, v in data.items():
            f.create_dataset(k, data=v, compression="gzip")
    os.replace(tmp, h5_path)
    trajs = split_trajectories(data["observations"], data["actions"], data["terminals"], data["timeouts"])
    write_reference_npz(out_dir, *trajs)
    returns = episode_returns(data)
    _, meta = load_behaviour_policy(task)
    provenance = {
        "generator": "envs.data.gym_medium",
        "task": task,
        "env_id": MEDIUM[task].env_id,
        "seed": seed,
        "behaviour_policy": {"file": str(policy_path(task).name), **meta},
        "transitions": int(n_transitions),
        "episodes": len(returns),
        "episode_return_mean": float(np.mean(returns)) if returns else None,
        "episode_return_std": float(np.std(returns)) if returns else None,
        "d4rl_medium_return_mean": MEDIUM[task].target_return,
        "generation_wall_time_s": time.time() - t0,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    write_provenance(out_dir, provenance)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", required=True, choices=sorted(MEDIUM))
    p.add_argument("--transitions", type=int, default=200_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="default: $DPPO_DATA_DIR/<task> or data/<task>")
    p.add_argument("--train", action="store_true", help="retrain the behaviour policy with SAC first")
    args = p.parse_args(argv)
    if args.train:
        print(f"trained {train(args.task, args.seed)}")
    from envs.tasks import data_dir

    out = write_dataset(args.task, args.out or data_dir() / args.task, args.transitions, args.seed)
    prov = json.loads((out / "provenance.json").read_text())
    print(
        f"{args.task}: {prov['transitions']} transitions, {prov['episodes']} episodes, "
        f"return {prov['episode_return_mean']:.0f} ± {prov['episode_return_std']:.0f} -> {out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
