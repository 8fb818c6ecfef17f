"""The one trainer: rollouts, evaluation, timing, logging and checkpoints for
every method. Methods only act and update (see `methods/base.py`)."""

from __future__ import annotations

import contextlib
import functools
import os
import random
import resource
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from envs.normalizer import MinMaxNormalizer
from envs.tasks import TaskSpec
from envs.vector import make_vector_env
from experiments.config import RunConfig
from experiments.faults import pause_point
from experiments.record import RunRecord, read_json, save_torch_atomic
from methods.base import Method, MethodContext, Rollout, TaskInfo, TrainingBudget


def peak_memory_mb() -> float:
    """Peak resident memory of this process and its (finished or waited-for) children, MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + kids) / 1024.0


def rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(s: dict[str, Any]) -> None:
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])


@contextlib.contextmanager
def seeded(seed: int, device: torch.device):
    """Run a block from `seed` and leave the surrounding random streams as they were: an evaluation from
    a seed samples the same episodes during training and from `experiments.evaluate` on the saved policy."""
    saved = rng_state()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        yield
    set_rng_state(saved)


def method_context(
    cfg: RunConfig, task: TaskSpec, policy: torch.nn.Module | None, device: torch.device, dataset=None
) -> MethodContext:
    """What a method of this run is built from (`dataset`: a zero-argument loader of the offline data)."""
    info = TaskInfo(task.name, task.obs_dim, task.act_dim, task.horizon, task.act_steps, task.max_episode_steps)
    budget = TrainingBudget(
        n_iterations=cfg.train.n_iterations,
        n_envs=cfg.train.n_envs,
        n_steps=cfg.train.n_steps or task.max_episode_steps // task.act_steps,
        env_step_budget=cfg.train.env_step_budget,
    )
    return MethodContext(policy, device, info, budget, cfg.seed, dataset)


EVAL_SEED_OFFSET = 10_000  # evaluation episodes never share env seeds with training ones


class MetricClashError(RuntimeError):
    """A method's metric has the name of one of the trainer's columns."""


class NonFiniteLossError(FloatingPointError):
    """A loss a method reported became NaN or infinite."""


# Columns the trainer writes to every metrics row (and the prefixes of its episode and timing columns).
TRAINER_COLUMNS = ("itr", "env_steps", "wall_time")
TRAINER_PREFIXES = ("train_", "eval_", "time_")


def check_method_stats(method: Method, stats: dict[str, float], itr: int) -> None:
    """A method's metrics may not shadow the trainer's columns, and none of its losses (keys containing
    "loss") or Q statistics (keys starting "q_") may be non-finite."""
    for k, v in stats.items():
        if k in TRAINER_COLUMNS or k.startswith(TRAINER_PREFIXES):
            raise MetricClashError(
                f"method {method.name!r} reports a metric {k!r}, which is the trainer's column {k!r} "
                f"(the trainer owns {', '.join(TRAINER_COLUMNS)} and {'*, '.join(TRAINER_PREFIXES)}*); "
                f"rename it in {type(method).__name__}.update()"
            )
        if ("loss" in k or k.startswith("q_")) and not np.isfinite(v):
            raise NonFiniteLossError(
                f"method {method.name!r}: {k} became {v} at iteration {itr}; {method.nonfinite_advice(k)}"
            )


@dataclass
class Episodes:
    """Episodes that finished during a rollout or an evaluation."""

    returns: list[float] = field(default_factory=list)
    successes: list[bool] = field(default_factory=list)
    final_infos: list[dict[str, Any]] = field(default_factory=list)
    frames: np.ndarray | None = None  # (T, H, W, 3) of the first evaluation episode, with train.video

    def add(self, ret: float, info: dict[str, Any]) -> None:
        self.returns.append(ret)
        self.successes.append(bool(info.get("success", False)))
        self.final_infos.append(info)

    def summary(self, prefix: str, score: Callable[[float], float] | None = None) -> dict[str, float]:
        n = len(self.returns)
        out = {
            f"{prefix}_return": float(np.mean(self.returns)) if n else float("nan"),
            f"{prefix}_success": float(np.mean(self.successes)) if n else float("nan"),
            f"{prefix}_episodes": n,
        }
        if score is not None:
            out[f"{prefix}_score"] = score(out[f"{prefix}_return"]) if n else float("nan")
        return out


def final_info(infos: dict[str, Any], i: int) -> dict[str, Any]:
    """The info of env i's last step, from gymnasium's same-step autoreset layout."""
    fi = infos["final_info"]
    return {k: v[i] for k, v in fi.items() if not k.startswith("_") and fi.get("_" + k, np.ones(i + 1, bool))[i]}


class Trainer:
    def __init__(
        self,
        cfg: RunConfig,
        task: TaskSpec,
        method: Method,
        normalizer: MinMaxNormalizer,
        record: RunRecord,
        device: torch.device,
    ):
        self.cfg, self.task, self.method, self.record, self.device = cfg, task, method, record, device
        self.normalizer = normalizer
        tc = cfg.train
        self.n_steps = method.ctx.budget.n_steps
        self.n_eval = tc.eval_episodes or task.eval_episodes
        self.eval_seed = cfg.seed + EVAL_SEED_OFFSET  # every evaluation of the run starts from it
        self.make_env = functools.partial(task.make_env, normalizer, init_range=tc.init_range)
        self.noise_itr: int | None = None  # the iteration whose action noise applies; None: the full noise
        self.venv = None
        self.eval_venv = None
        self.obs: np.ndarray | None = None
        self.done = np.ones(tc.n_envs, dtype=bool)
        self.ep_return = np.zeros(tc.n_envs)
        self.env_steps = 0
        self.wandb = None

    # ----------------------------------------------------------------- helpers
    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x), dtype=torch.float32, device=self.device)

    def noise_limits(self) -> tuple[float, float]:
        """The action noise's [low, high] at iteration `noise_itr` (train.action_noise_*), in full when None."""
        tc = self.cfg.train
        lo, hi = tc.action_noise
        if self.noise_itr is None or hi == 0:
            return lo, hi
        done = self.noise_itr - tc.action_noise_start + 1
        frac = 0.0 if done <= 0 else 1.0 if tc.action_noise_ramp == 0 else min(1.0, done / tc.action_noise_ramp)
        return lo * frac, hi * frac

    def perturb(self, actions: np.ndarray) -> np.ndarray:
        """Actions as the env executes them: with the action noise added (drawn from numpy's global stream,
        which is seeded and checkpointed), unchanged without."""
        lo, hi = self.noise_limits()
        if hi == 0:
            return actions
        magnitude = np.random.uniform(lo, hi, size=actions.shape)
        sign = np.where(np.random.random_sample(actions.shape) < 0.5, -1.0, 1.0)
        return (actions + sign * magnitude).astype(actions.dtype)

    def _train_envs(self):
        if self.venv is None:
            self.venv = make_vector_env(
                [self.make_env] * self.cfg.train.n_envs,
                self.cfg.train.vector_env,
                self.task.steps_slowly,
                self.task.subprocess_memory_gb,
            )
        return self.venv

    def _eval_envs(self):
        if self.eval_venv is None:
            tc = self.cfg.train
            n = min(self.n_eval, tc.n_envs)
            first = functools.partial(self.make_env, video_size=tc.video_size) if tc.video else self.make_env
            self.eval_venv = make_vector_env(
                [first] + [self.make_env] * (n - 1),
                tc.vector_env,
                self.task.steps_slowly,
                self.task.subprocess_memory_gb,
            )
        return self.eval_venv

    def close(self) -> None:
        for v in (self.venv, self.eval_venv):
            if v is not None:
                v.close()
        if self.wandb is not None:
            self.wandb.finish()

    # ----------------------------------------------------------------- rollouts
    def collect(self) -> tuple[Rollout, Episodes, dict[str, float]]:
        venv, T, N = self._train_envs(), self.n_steps, self.cfg.train.n_envs
        timing = {"time_sample": 0.0, "time_env": 0.0}
        if self.obs is None or self.cfg.train.reset_every_iteration:
            self.obs, _ = venv.reset(seed=int(np.random.randint(2**31)))
            self.done[:] = True
            self.ep_return[:] = 0
        obs_buf = np.zeros((T, N, self.task.obs_dim), np.float32)
        next_buf = np.zeros_like(obs_buf)
        rew = np.zeros((T, N), np.float32)
        term = np.zeros((T, N), bool)
        trunc = np.zeros((T, N), bool)
        firsts = np.zeros((T, N), bool)
        kept: dict[str, list[torch.Tensor]] = {}
        episodes = Episodes()
        for t in range(T):
            t0 = time.perf_counter()
            with torch.no_grad():
                chunk, keep = self.method.act(self._tensor(self.obs), deterministic=False)
            actions = chunk.cpu().numpy()
            t1 = time.perf_counter()
            next_obs, reward, terminated, truncated, infos = venv.step(self.perturb(actions))
            timing["time_sample"] += t1 - t0
            timing["time_env"] += time.perf_counter() - t1
            obs_buf[t], rew[t], term[t], trunc[t], firsts[t] = self.obs, reward, terminated, truncated, self.done
            for k, v in keep.items():
                kept.setdefault(k, []).append(v)
            done = terminated | truncated
            next_buf[t] = next_obs
            self.ep_return += reward
            for i in np.flatnonzero(done):
                next_buf[t, i] = infos["final_obs"][i]
                episodes.add(float(self.ep_return[i]), final_info(infos, i))
                self.ep_return[i] = 0
            self.done = done
            self.obs = next_obs
            self.env_steps += int(sum(self._chunk_steps(infos, done, i) for i in range(N)))
        rollout = Rollout(
            obs=self._tensor(obs_buf),
            next_obs=self._tensor(next_buf),
            rewards=self._tensor(rew),
            terminated=torch.as_tensor(term, device=self.device),
            truncated=torch.as_tensor(trunc, device=self.device),
            firsts=torch.as_tensor(firsts, device=self.device),
            kept={k: torch.stack(v) for k, v in kept.items()},
        )
        return rollout, episodes, timing

    def _chunk_steps(self, infos: dict[str, Any], done: np.ndarray, i: int) -> int:
        src = infos["final_info"] if done[i] else infos
        return int(src["chunk_steps"][i]) if "chunk_steps" in src else self.task.act_steps

    @torch.no_grad()
    def evaluate(self, seed: int) -> Episodes:
        """`n_eval` episodes with the task's protocol; each env runs its share, all from `seed`."""
        with seeded(seed, self.device):
            return self._evaluate(seed)

    def _evaluate(self, seed: int) -> Episodes:
        venv = self._eval_envs()
        n_envs = venv.num_envs
        quota = np.full(n_envs, self.n_eval // n_envs)
        quota[: self.n_eval % n_envs] += 1
        obs, _ = venv.reset(seed=seed)
        ret = np.zeros(n_envs)
        episodes = Episodes()
        while quota.sum() > 0:
            chunk, _ = self.method.act(self._tensor(obs), deterministic=self.task.eval_deterministic)
            obs, reward, terminated, truncated, infos = venv.step(self.perturb(chunk.cpu().numpy()))
            ret += reward
            for i in np.flatnonzero(terminated | truncated):
                if quota[i] > 0:
                    info = final_info(infos, i)
                    if info.get("frames") is not None:
                        episodes.frames = info.pop("frames")
                    episodes.add(float(ret[i]), info)
                    quota[i] -= 1
                ret[i] = 0
        return episodes

    # ----------------------------------------------------------------- checkpoints
    def save_state(self, next_itr: int, wall_time: float) -> None:
        state = {
            "next_itr": next_itr,
            "env_steps": self.env_steps,
            "wall_time": wall_time,
            "method": self.method.state_dict(),
            "rng": rng_state(),
        }
        save_torch_atomic(state, self.record.ckpt_dir / "state.pt")

    def save_snapshot(self, n_iterations: int) -> None:
        """The policy after `n_iterations` as a standalone checkpoint (train.snapshot_every)."""
        from experiments.checkpoints import save_policy

        path = self.record.ckpt_dir / f"policy_itr{n_iterations:04d}.pt"
        save_policy(path, self.method.exported_policy(), self.task.name, self.normalizer, {"iteration": n_iterations})

    def load_state(self) -> tuple[int, float]:
        path = self.record.ckpt_dir / "state.pt"
        if not path.is_file():
            return 0, 0.0
        s = torch.load(path, map_location=self.device, weights_only=False)
        self.method.load_state_dict(s["method"])
        set_rng_state(s["rng"])
        self.env_steps = s["env_steps"]
        return s["next_itr"], s["wall_time"]

    # ----------------------------------------------------------------- main loop
    def _start_wandb(self) -> None:
        if not self.cfg.wandb.enabled:
            return
        import wandb

        id_path = self.record.path / "wandb_id.txt"
        if not id_path.is_file():
            id_path.write_text(uuid.uuid4().hex[:12])
        self.wandb = wandb.init(
            project=self.cfg.wandb.project,
            entity=self.cfg.wandb.entity,
            name=self.record.path.name,
            id=id_path.read_text().strip(),
            dir=str(self.record.path),
            config=self.cfg.to_dict(),
            mode="online" if os.environ.get("WANDB_API_KEY") else "offline",
            resume="allow",
        )

    def save_rollouts(self, episodes: Episodes, name: str, title: str) -> None:
        """Record the evaluation episodes' end-effector paths (envs that report `info["ee_path"]`), and plot them."""
        kept = [info for info in episodes.final_infos if "ee_path" in info]
        if not kept:
            return
        rollouts = {
            "paths": [np.round(np.asarray(info["ee_path"], dtype=float), 4).tolist() for info in kept],
            "success": [bool(info.get("success", False)) for info in kept],
        }
        self.record.write(f"{name}.json", rollouts, indent=None)
        if self.cfg.train.plot_rollouts and self.task.plot_rollouts is not None:
            self.record.plot_dir.mkdir(exist_ok=True)
            self.task.plot_rollouts(rollouts, self.record.plot_dir / f"{name}.png", title)

    def save_video(self, episodes: Episodes, name: str) -> None:
        """The evaluation's first episode as videos/<name>.mp4 (with train.video), and to wandb when enabled."""
        if episodes.frames is None:
            return
        import imageio.v2 as imageio

        path = self.record.path / "videos" / f"{name}.mp4"
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_suffix(".tmp.mp4")
        imageio.mimwrite(tmp, list(episodes.frames), fps=self.task.video_fps, macro_block_size=1)
        os.replace(tmp, path)
        if self.wandb is not None:
            import wandb

            self.wandb.log({"eval_video": wandb.Video(str(path), format="mp4")}, commit=False)

    def fit(self) -> dict[str, Any]:
        cfg, tc = self.cfg, self.cfg.train
        start_itr, wall_before = self.load_state()
        self.record.truncate_metrics(start_itr)
        attempts = self.record.add_attempt(start_itr)
        self._start_wandb()
        self.noise_itr = start_itr
        initial_path = self.record.path / "initial_eval.json"
        if initial_path.is_file():
            initial = read_json(initial_path)
        else:
            ep = self.evaluate(seed=self.eval_seed)
            initial = ep.summary("eval", self.task.score)
            self.record.write("initial_eval.json", initial)
            self.save_video(ep, "eval_initial")
            self.save_rollouts(ep, "rollouts_initial", f"{cfg.method} {cfg.task}: before fine-tuning")

        t_start = time.perf_counter() - wall_before
        bar = tqdm(
            range(start_itr, tc.n_iterations),
            initial=start_itr,
            total=tc.n_iterations,
            desc=f"{cfg.method} {cfg.task} s{cfg.seed}",
            disable=not cfg.progress,
        )
        last_eval: Episodes | None = None
        for itr in bar:
            self.noise_itr = itr
            t0 = time.perf_counter()
            rollout, episodes, timing = self.collect()
            t1 = time.perf_counter()
            stats = self.method.update(rollout, itr)
            t_update = time.perf_counter() - t1
            check_method_stats(self.method, stats, itr)
            row = {
                "itr": itr,
                "env_steps": self.env_steps,
                "wall_time": time.perf_counter() - t_start,
                "time_iteration": time.perf_counter() - t0,
                **timing,
                "time_update": t_update,
                **episodes.summary("train", self.task.score),
                **stats,
            }
            is_last = itr == tc.n_iterations - 1 or (tc.env_step_budget and self.env_steps >= tc.env_step_budget)
            if is_last or (tc.eval_every and (itr + 1) % tc.eval_every == 0):
                last_eval = self.evaluate(seed=self.eval_seed)
                row.update(last_eval.summary("eval", self.task.score))
                self.save_video(last_eval, f"eval_itr{itr + 1:04d}")
            self.record.append(row)
            if self.wandb is not None:
                self.wandb.log(row, step=itr)
            bar.set_postfix(
                succ=f"{row['train_success']:.2f}",
                ret=f"{row['train_return']:.2f}",
                kl=f"{stats.get('approx_kl', 0):.3f}",
            )
            if tc.snapshot_every and (itr + 1) % tc.snapshot_every == 0:
                self.save_snapshot(itr + 1)
            if is_last or (itr + 1) % tc.save_every == 0:
                self.save_state(itr + 1, row["wall_time"])
            pause_point(itr, attempt=len(attempts))
            if is_last:
                break
        bar.close()

        rows = self.record.rows()
        if last_eval is None:  # resumed after the last iteration had already run
            last_eval = self.evaluate(seed=self.eval_seed)
        final = last_eval.summary("eval", self.task.score)
        self.save_rollouts(last_eval, "rollouts_final", f"{cfg.method} {cfg.task}: after fine-tuning")
        plot_learning_curve(
            rows, initial, self.record.plot_dir / "learning_curve.png", f"{cfg.method} {cfg.task} s{cfg.seed}"
        )
        summary = {
            "initial_eval": initial,
            "final_eval": final,
            "n_iterations": len(rows),
            "env_steps": self.env_steps,
            "wall_time": rows[-1]["wall_time"] if rows else 0.0,
            "time_per_iteration": {
                k: float(np.median([r[k] for r in rows])) if rows else None
                for k in ("time_iteration", "time_sample", "time_env", "time_update")
            },
            "peak_memory_mb": peak_memory_mb(),
            "attempts": attempts,
        }
        return summary


def plot_learning_curve(rows: list[dict[str, Any]], initial: dict[str, float], out_png, title: str) -> None:
    """Evaluation (and training) return against env steps, with the starting policy at 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    train = [(r["env_steps"], r["train_return"]) for r in rows if r.get("train_return") is not None]
    evals = [(0, initial.get("eval_return"))] + [(r["env_steps"], r["eval_return"]) for r in rows if "eval_return" in r]
    if train:
        ax.plot(*zip(*train), color="0.6", lw=1, label="train episodes")
    ax.plot(*zip(*evals), marker="o", lw=2, label="evaluation")
    ax.set_xlabel("env steps")
    ax.set_ylabel("episode return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
