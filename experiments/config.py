"""Typed run configuration with `key=value` overrides.

A run's config is one `RunConfig` dataclass; its `policy` and `algo` sections
are the dataclasses of the chosen method. Values are resolved in this order:
dataclass defaults -> the task suite's preset for the method (`PRESETS`,
each value citing the reference config it came from) -> command-line
overrides. An unknown key or a value of the wrong type is an error that
names the valid keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml

from envs.tasks import get_task
from methods import get_method
from methods.policies import POLICIES
from methods.pretrain import PretrainConfig


class ConfigError(ValueError):
    """A config key or value the user got wrong."""


@dataclass
class TrainConfig:
    n_iterations: int = 40
    env_step_budget: int | None = None  # also stop once this many env steps are done (the last eval is there)
    n_envs: int = 50
    n_steps: int | None = None  # chunk steps per env per iteration; None: one episode (max steps / Ta)
    reset_every_iteration: bool = True
    eval_every: int = 10  # iterations between evaluations (0: only before and after fine-tuning)
    eval_episodes: int | None = None  # None: the task's protocol (SPEC 5)
    save_every: int = 5  # iterations between resumable checkpoints
    vector_env: str = "sync"  # sync | async
    plot_rollouts: bool = True


@dataclass
class WandbConfig:
    enabled: bool = False
    project: str = "dppo-bench"
    entity: str | None = None


@dataclass
class RunConfig:
    method: str = "dppo"
    task: str = "avoid_m2"
    seed: int = 0
    stage: str = "all"  # pretrain | finetune | all
    scale: str = "paper"  # paper: the reference's values; cpu: the suite's 2-core preset (CPU_PRESETS)
    checkpoint: str | None = None  # pre-trained policy; None pre-trains one first
    dataset: str | None = None  # None: the task's default (generated on first use)
    device: str = "auto"
    threads: int = 1  # torch intra-op threads per run
    results_dir: str = "results"
    name: str | None = None  # run directory name under results_dir
    progress: bool = True
    train: TrainConfig = field(default_factory=TrainConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    policy: Any = None
    algo: Any = None
    wandb: WandbConfig = field(default_factory=WandbConfig)

    @property
    def run_name(self) -> str:
        if self.name:
            return self.name
        if self.stage == "pretrain":
            return f"pretrain_{get_method(self.method).policy_kind}_{self.task}_s{self.seed}"
        return f"{self.method}_{self.task}_s{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


STAGES = ("pretrain", "finetune", "all")
SCALES = ("paper", "cpu")

# The reference pre-trains Avoid policies for 10-15k epochs at batch 16 (cfg/d3il/pretrain/avoid_m2/*.yaml,
# paper D.8); on 2 CPU cores we take 10k steps at batch 256 with a 10x higher learning rate.
_AVOID_PRETRAIN = {"pretrain.n_steps": 10000, "pretrain.batch_size": 256, "pretrain.lr": 1e-3, "pretrain.min_lr": 1e-4}

# Per (suite, method) values that differ from the dataclass defaults.
PRESETS: dict[tuple[str, str], dict[str, Any]] = {
    # cfg/d3il/pretrain/avoid_m2/pre_diffusion_mlp.yaml: K 20, MLP 512x3 residual ReLU, time_dim 16
    # cfg/d3il/finetune/avoid_m2/ft_ppo_diffusion_mlp.yaml: K' 10, gamma_denoising 0.95, clip 0.1 (base 0.1,
    # rate 1), min sampling/logprob std 0.1, 50 envs, 10 epochs, actor lr 1e-5, critic lr 1e-3
    ("d3il", "dppo"): {
        **_AVOID_PRETRAIN,
        # The reference uses 0.1. In our kinematic Avoid the routes clear the obstacles by ~2 cm, and a
        # 0.1 floor on all 20 steps (~7 cm of accumulated action noise) makes 60-70% of the pre-trained
        # policy's rollouts collide; 0.03 keeps it splitting between its two modes (README, Avoid).
        "algo.min_sampling_std": 0.03,
    },
    # cfg/d3il/{pretrain,finetune}/avoid_m2/*_gaussian_mlp.yaml: 256x3 residual ReLU, fixed std 0.1, kept
    # fixed in fine-tuning (learn_fixed_std: False); log-probs averaged over the chunk and clamped to [-5, 2]
    # (model/rl/gaussian_ppo.py)
    ("d3il", "gaussian_ppo"): {
        **_AVOID_PRETRAIN,
        "policy.fixed_std": 0.1,
        "algo.learn_std": False,
        "algo.logprob_reduction": "mean_clamped",
    },
    # Paper scale, identical for hopper, walker2d and halfcheetah in the reference:
    # cfg/gym/pretrain/hopper-medium-v2/pre_diffusion_mlp.yaml: 200 epochs, batch 128, lr 1e-3 -> 1e-4,
    #   weight decay 1e-6, EMA 0.995, K 20, MLP 512x3 residual ReLU
    # cfg/gym/finetune/hopper-v2/ft_ppo_diffusion_mlp.yaml (and walker2d-v2, halfcheetah-v2): 40 envs,
    #   500 chunk steps per iteration without resets, 1000 iterations, K' 10, gamma_denoising 0.99,
    #   clip 0.01 (base 0.01, rate 3), min stds 0.1, actor lr 1e-4, critic lr 1e-3 (warm-up 10, cycle 1000),
    #   no critic warm-up, batch 50000, 5 epochs, target KL 1, eval every 10 iterations
    ("gym", "dppo"): {
        "pretrain.n_epochs": 200,
        "pretrain.batch_size": 128,
        "pretrain.lr": 1e-3,
        "pretrain.min_lr": 1e-4,
        "pretrain.warmup_steps": 1,
        "train.n_envs": 40,
        "train.n_steps": 500,
        "train.reset_every_iteration": False,
        "train.n_iterations": 1000,
        "train.eval_every": 10,
        "algo.ft_denoising_steps": 10,
        "algo.gamma_denoise": 0.99,
        "algo.clip": 0.01,
        "algo.clip_base": 0.01,
        "algo.clip_rate": 3.0,
        "algo.actor_lr": 1e-4,
        "algo.actor_min_lr": 1e-4,
        "algo.actor_lr_cycle": 1000,
        "algo.critic_lr_cycle": 1000,
        "algo.n_critic_warmup_itr": 0,
        "algo.batch_size": 50000,
        "algo.update_epochs": 5,
    },
}

# `scale=cpu`: applied after the paper-scale preset, for a 2-core machine.
CPU_PRESETS: dict[str, dict[str, Any]] = {
    # 25 iterations x 40 envs x 500 chunk steps x 4 = 2M env steps; pre-training ~3% of the paper's.
    "gym": {
        "pretrain.n_epochs": None,
        "pretrain.n_steps": 40000,
        "pretrain.batch_size": 256,
        "pretrain.warmup_steps": 100,
        "train.n_iterations": 25,
        "train.eval_every": 5,
    },
}


def _strip_optional(tp):
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp, True
    return tp, False


def _coerce(value: Any, tp, key: str) -> Any:
    tp, optional = _strip_optional(tp)
    if value is None:
        if optional or tp is Any:
            return None
        raise ConfigError(f"{key} cannot be null")
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key} expects a list like [256,256], got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, key) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        try:  # YAML 1.1 reads "1e-3" as a string
            return float(value)
        except (TypeError, ValueError):
            pass
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is str:
        return str(value)
    raise ConfigError(f"{key} expects {getattr(tp, '__name__', tp)}, got {value!r}")


def all_keys(cfg: Any, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            keys += all_keys(v, f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def set_key(cfg: RunConfig, key: str, value: Any) -> None:
    obj, parts = cfg, key.split(".")
    for i, part in enumerate(parts):
        names = {f.name for f in dataclasses.fields(obj)}
        if part not in names:
            close = difflib.get_close_matches(key, all_keys(cfg), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(
                f"unknown config key {key!r}.{hint} See the keys with: python -m experiments.run --show-config"
            )
        if i == len(parts) - 1:
            hints = typing.get_type_hints(type(obj))
            if dataclasses.is_dataclass(getattr(obj, part)):
                raise ConfigError(f"{key} is a section; set one of its keys, e.g. {key}.<name>=...")
            setattr(obj, part, _coerce(value, hints[part], key))
        else:
            obj = getattr(obj, part)
            if not dataclasses.is_dataclass(obj):
                raise ConfigError(f"{'.'.join(parts[: i + 1])} is not a section")


def parse_overrides(args: list[str]) -> dict[str, Any]:
    out = {}
    for a in args:
        if "=" not in a:
            raise ConfigError(f"expected key=value, got {a!r}")
        k, v = a.split("=", 1)
        try:
            out[k.strip()] = yaml.safe_load(v) if v != "" else None
        except yaml.YAMLError:
            out[k.strip()] = v
    return out


def build_config(overrides: dict[str, Any]) -> RunConfig:
    """Defaults, then the suite preset, then `overrides` (dotted keys)."""
    overrides = dict(overrides)
    cfg = RunConfig()
    for key in ("method", "task"):
        if key in overrides:
            setattr(cfg, key, str(overrides.pop(key)))
    method_cls = get_method(cfg.method)
    task = get_task(cfg.task)
    cfg.policy = POLICIES[method_cls.policy_kind][1]()
    cfg.algo = method_cls.config_cls()
    scale = str(overrides.pop("scale", "paper"))
    if scale not in SCALES:
        raise ConfigError(f"scale must be one of {SCALES}, got {scale!r}")
    cfg.scale = scale
    cpu = CPU_PRESETS.get(task.suite, {}) if scale == "cpu" else {}
    for k, v in {**PRESETS.get((task.suite, cfg.method), {}), **cpu, **overrides}.items():
        set_key(cfg, k, v)
    if cfg.stage not in STAGES:
        raise ConfigError(f"stage must be one of {STAGES}, got {cfg.stage!r}")
    if cfg.train.vector_env not in ("sync", "async"):
        raise ConfigError(f"train.vector_env must be sync or async, got {cfg.train.vector_env!r}")
    return cfg


def config_from_dict(d: dict[str, Any]) -> RunConfig:
    """Rebuild a RunConfig from its `to_dict()` (a run record's config.json)."""
    from experiments.record import flatten

    return build_config(flatten(d))
