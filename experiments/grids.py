"""Named experiment grids: lists of runs with stable names and dependencies.

A grid run is the overrides of one `python -m experiments.run` call. Runs
that fine-tune share a pre-trained checkpoint made by an earlier run of the
same grid (`after`), so seeds differ only in fine-tuning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.names import unknown
from methods import get_method


@dataclass
class GridRun:
    name: str
    overrides: dict[str, Any]
    after: list[str] = field(default_factory=list)

    def args(self, results_dir: Path) -> list[str]:
        def fmt(v: Any) -> str:
            if isinstance(v, bool):
                return str(v).lower()
            if v is None:
                return "null"
            if isinstance(v, list):
                return "[" + ",".join(fmt(x) for x in v) + "]"
            return str(v)

        ov = {**self.overrides, "name": self.name, "results_dir": str(results_dir)}
        return [f"{k}={fmt(v)}" for k, v in ov.items()]


def pretrain_then_finetune(
    task: str,
    methods: list[str],
    seeds: list[int],
    pretrain: dict[str, Any],
    finetune: dict[str, dict[str, Any]],
    results_dir: Path,
) -> list[GridRun]:
    """One pre-training per policy kind (by the first of `methods` that registers it), then every method
    fine-tunes the pre-trained policy of its kind over `seeds`."""
    runs = []
    pretrained: dict[str, str] = {}  # policy kind -> its pre-training run
    for method in methods:
        kind = get_method(method).policy_kind
        if kind not in pretrained:
            pretrained[kind] = f"pretrain_{kind}_{task}"
            runs.append(
                GridRun(pretrained[kind], {"method": method, "task": task, "stage": "pretrain", "seed": 0, **pretrain})
            )
        pre = pretrained[kind]
        ckpt = results_dir / pre / "checkpoints" / "pretrained.pt"
        for seed in seeds:
            runs.append(
                GridRun(
                    f"{method}_{task}_s{seed}",
                    {
                        "method": method,
                        "task": task,
                        "stage": "finetune",
                        "seed": seed,
                        "checkpoint": str(ckpt),
                        **finetune.get(method, {}),
                    },
                    after=[pre],
                )
            )
    return runs


def quickstart(results_dir: Path, seeds: list[int] | None = None) -> list[GridRun]:
    """Avoid M2 on 2 CPU cores in under 20 minutes: diffusion + DPPO and Gaussian + PPO, 3 seeds."""
    return pretrain_then_finetune(
        task="avoid_m2",
        methods=["dppo", "gaussian_ppo"],
        seeds=seeds or [0, 1, 2],
        pretrain={},
        finetune={
            "dppo": {"train.n_iterations": 15, "train.eval_every": 5},
            "gaussian_ppo": {"train.n_iterations": 15, "train.eval_every": 5},
        },
        results_dir=results_dir,
    )


SMOKE_PRETRAIN = {"pretrain.n_steps": 50, "policy.hidden": [64, 64, 64], "train.eval_episodes": 4, "train.n_envs": 4}
SMOKE_FINETUNE = {"train.n_envs": 4, "train.n_iterations": 2, "train.eval_episodes": 4, "train.save_every": 1}


def smoke(results_dir: Path, seeds: list[int] | None = None) -> list[GridRun]:
    """A seconds-long grid for tests: tiny pre-training and two fine-tuning iterations."""
    return pretrain_then_finetune(
        task="avoid_m2",
        methods=["dppo", "gaussian_ppo"],
        seeds=seeds or [0],
        pretrain=SMOKE_PRETRAIN,
        finetune={"dppo": SMOKE_FINETUNE, "gaussian_ppo": SMOKE_FINETUNE},
        results_dir=results_dir,
    )


def smoke_dppo(results_dir: Path, seeds: list[int] | None = None) -> list[GridRun]:
    """Two seconds-long runs for launcher tests: a tiny diffusion pre-training, then DPPO on it."""
    return pretrain_then_finetune(
        "avoid_m2", ["dppo"], seeds or [0], SMOKE_PRETRAIN, {"dppo": SMOKE_FINETUNE}, results_dir
    )


GYM_TASKS = ("hopper", "walker2d", "halfcheetah")


def gym(results_dir: Path, seeds: list[int] | None = None) -> list[GridRun]:
    """Paper scale (Fig. 5 top): DPPO on Hopper, Walker2d, HalfCheetah medium data, 3 seeds, 1000 iterations."""
    runs: list[GridRun] = []
    for task in GYM_TASKS:
        runs += pretrain_then_finetune(task, ["dppo"], seeds or [0, 1, 2], {}, {}, results_dir)
    return runs


def gym_mini(results_dir: Path, seeds: list[int] | None = None) -> list[GridRun]:
    """The Gym suite on 2 CPU cores (scale=cpu): 1 seed per task, 2M env steps of DPPO."""
    runs: list[GridRun] = []
    for task in GYM_TASKS:
        cpu = {"scale": "cpu"}
        runs += pretrain_then_finetune(task, ["dppo"], seeds or [0], cpu, {"dppo": cpu}, results_dir)
    return runs


DIFFUSION_RL_METHODS = ["dppo", "drwr", "dawr", "dipo", "idql", "dql", "qsm"]  # Fig. 5's seven


def diffusion_rl(results_dir: Path, seeds: list[int] | None = None) -> list[GridRun]:
    """Paper scale (Fig. 5, Table A1): DPPO and the six diffusion-RL baselines from one pre-trained policy per
    Gym task, 3 seeds, 1000 iterations each (the suite's presets)."""
    runs: list[GridRun] = []
    for task in GYM_TASKS:
        runs += pretrain_then_finetune(task, DIFFUSION_RL_METHODS, seeds or [0, 1, 2], {}, {}, results_dir)
    return runs


# diffusion_rl_mini: what 2 CPU cores fit in about an hour with every method at the reference's replay ratios
# (on one CPU thread a DQL gradient step, 20 differentiable denoising steps at batch 1000, takes seconds).
# Avoid M2 with the quick start's 50 envs x 25 chunk steps, 8 iterations (40k env steps); a short Hopper run:
# a 10k-step pre-training, then 10 envs x 100 chunk steps x 5 iterations (20k env steps). There the reference's
# 5 critic warm-up iterations (of 20k transitions each) would leave DIPO, IDQL, DQL and QSM no actor update, so
# their warm-up is 1 iteration (of 1k transitions).
MINI_AVOID = {"train.n_iterations": 8, "train.eval_every": 4}
MINI_HOPPER_PRETRAIN = {"scale": "cpu", "pretrain.n_steps": 10000}
MINI_HOPPER = {
    "train.n_envs": 10,
    "train.n_steps": 100,
    "train.n_iterations": 5,
    "train.eval_every": 2,
    "train.eval_episodes": 10,
}


def diffusion_rl_mini(results_dir: Path, seeds: list[int] | None = None) -> list[GridRun]:
    """The seven methods of Fig. 5 on 2 CPU cores: avoid_m2 and a short hopper run, 3 seeds, one pre-trained
    policy per task."""
    seeds = seeds or [0, 1, 2]
    avoid = {m: MINI_AVOID for m in DIFFUSION_RL_METHODS}
    short_warmup = {"algo.n_critic_warmup_itr": 1}
    hopper = {
        m: {**MINI_HOPPER, **(short_warmup if m in ("dipo", "idql", "dql", "qsm") else {})}
        for m in DIFFUSION_RL_METHODS
    }
    return pretrain_then_finetune(
        "avoid_m2", DIFFUSION_RL_METHODS, seeds, {}, avoid, results_dir
    ) + pretrain_then_finetune("hopper", DIFFUSION_RL_METHODS, seeds, MINI_HOPPER_PRETRAIN, hopper, results_dir)


ROBOMIMIC_TASKS = ("lift", "can", "square", "transport")


def robomimic_state(results_dir: Path, seeds: list[int] | None = None) -> list[GridRun]:
    """Paper scale (Fig. 6 state input, Table A3): DPPO (diffusion MLP) and Gaussian-MLP PPO on Lift, Can, Square
    and Transport, 3 seeds, each fine-tuning the pre-trained policy of its kind (the suite's presets)."""
    runs: list[GridRun] = []
    for task in ROBOMIMIC_TASKS:
        runs += pretrain_then_finetune(task, ["dppo", "gaussian_ppo"], seeds or [0, 1, 2], {}, {}, results_dir)
    return runs


def robomimic_mini(results_dir: Path, seeds: list[int] | None = None) -> list[GridRun]:
    """The Robomimic suite on 2 CPU cores (scale=cpu): DPPO and Gaussian PPO fine-tuning on Can, 1 seed."""
    cpu = {"scale": "cpu"}
    return pretrain_then_finetune(
        "can", ["dppo", "gaussian_ppo"], seeds or [0], cpu, {"dppo": cpu, "gaussian_ppo": cpu}, results_dir
    )


# ----------------------------------------------------------------------------- the paper's Section 6 on Avoid
AVOID_TASKS = ("avoid_m1", "avoid_m2", "avoid_m3")
PARAMETERISATIONS = ("dppo", "gaussian_ppo", "gmm_ppo")  # DPPO, Gaussian-MLP and GMM-MLP, each fine-tuned with PPO
SECTION6_KPRIME = (1, 2, 4, 10)  # Fig. A7's fine-tuned denoising steps (of K = 20)
SECTION6_CHUNKS = (4, 8, 16)  # Fig. 10 right: chunk sizes, predicted = executed
# 15 iterations (the quick start's) of 50 envs x one 100-step episode; the curves are the training episodes'
# success, as the reference plots Avoid (cfg/d3il/finetune/avoid_m2/*.yaml: val_freq past the end, force_train).
# Fine-tuned policies are snapshotted every 5 iterations for Fig. 11.
SECTION6_FINETUNE = {"train.n_iterations": 15, "train.eval_every": 5, "train.snapshot_every": 5}
# Fig. 10 left, paper D.8: noise on every action from iteration 5, its limits ramping to [0.1, 0.2] over 5. In our
# kinematic Avoid that is 1.7-3.5 cm in x and 3.3-6.7 cm in y per action (the actions' half-ranges are 17.5 and 33 cm)
# where the routes clear the obstacles by ~2 cm, so the grid also runs a third of it, [0.03, 0.06].
SECTION6_NOISE = {
    "train.n_iterations": 20,
    "train.eval_every": 5,
    "train.action_noise": [0.1, 0.2],
    "train.action_noise_start": 5,
    "train.action_noise_ramp": 5,
}
SECTION6_NOISE_SMALL = {**SECTION6_NOISE, "train.action_noise": [0.03, 0.06]}


ARCHITECTURE_KEYS = ("horizon", "act_steps", "config")  # with policy.*: what a pre-training must be given
PRETRAINING_PREFIXES = ("policy.", "pretrain.")  # keys only a pre-training takes (fine-tuning: the checkpoint's)


def _section6_runs(
    task: str, variants: dict[str, tuple[str, dict[str, Any]]], seeds: list[int], results_dir: Path, tag: str = ""
) -> list[GridRun]:
    """One pre-training per policy kind on `task` (`tag`: what sets it apart, e.g. a chunk size), then each variant
    (name -> (method, overrides)) fine-tunes its kind's policy over `seeds`. The overrides' architecture keys
    (`policy.*`, `horizon`, `act_steps`, and a variant's `config` file) go to the pre-training; the fine-tuning takes
    the architecture from its checkpoint (and the same `config` file)."""
    runs: list[GridRun] = []
    pretrained: dict[str, str] = {}
    for name, (method, overrides) in variants.items():
        kind = get_method(method).policy_kind
        arch = {k: v for k, v in overrides.items() if k.startswith(PRETRAINING_PREFIXES) or k in ARCHITECTURE_KEYS}
        if kind not in pretrained:
            pretrained[kind] = f"pretrain_{kind}{tag}_{task}"
            pre = {"method": method, "task": task, "stage": "pretrain", "seed": 0, **arch}
            runs.append(GridRun(pretrained[kind], pre))
        ckpt = results_dir / pretrained[kind] / "checkpoints" / "pretrained.pt"
        finetune = {k: v for k, v in overrides.items() if not k.startswith(PRETRAINING_PREFIXES)}
        for seed in seeds:
            ov = {"method": method, "task": task, "stage": "finetune", "seed": seed, "checkpoint": str(ckpt)}
            runs.append(GridRun(f"{name}_{task}_s{seed}", {**ov, **finetune}, after=[pretrained[kind]]))
    return runs


def _kprime_variants(extra: dict[str, Any], kprimes=SECTION6_KPRIME) -> dict[str, tuple[str, dict[str, Any]]]:
    variants = {f"dppo_k{k}": ("dppo", {**extra, "algo.ft_denoising_steps": k}) for k in kprimes}
    variants.update({m: (m, dict(extra)) for m in PARAMETERISATIONS[1:]})
    return variants


def avoid_parameterisation(results_dir: Path, seeds: list[int] | None = None) -> list[GridRun]:
    """The paper's Sec. 6 / Fig. 9, 10 right, 11 and A7 on 2 CPU cores: diffusion, Gaussian-MLP and GMM-MLP
    policies pre-trained on Avoid M1, M2 and M3 (their first rollouts: Fig. 9); DPPO with K' in {1, 2, 4, 10}
    against Gaussian and GMM PPO on each (Fig. A7, with Fig. 11's snapshots); on M2 also chunks of 8 and 16
    actions (Fig. 10 right). 2 seeds."""
    seeds = seeds or [0, 1]
    runs: list[GridRun] = []
    for task in AVOID_TASKS:
        runs += _section6_runs(task, _kprime_variants(SECTION6_FINETUNE), seeds, results_dir)
    for ta in SECTION6_CHUNKS[1:]:
        chunk = {**SECTION6_FINETUNE, "horizon": ta, "act_steps": ta}
        variants = {f"{m}_ta{ta}": (m, chunk) for m in PARAMETERISATIONS}
        runs += _section6_runs("avoid_m2", variants, seeds, results_dir, tag=f"_ta{ta}")
    return runs


def avoid_robustness(results_dir: Path, seeds: list[int] | None = None) -> list[GridRun]:
    """The paper's Sec. 6 / Fig. 10 left and 12 on Avoid M2, 2 CPU cores: fine-tuning with action noise added
    from iteration 5 (DPPO with K' in {2, 4, 10}, Gaussian and GMM PPO; the paper's level and a third of it), and
    clean fine-tuning whose policies `make_tables` then evaluates under test-time action noise and wider initial
    states (Fig. 12). 2 seeds."""
    seeds = seeds or [0, 1]
    noisy = {f"{name}_noise": v for name, v in _kprime_variants(SECTION6_NOISE, (2, 4, 10)).items()}
    small = {f"{name}_noise_small": v for name, v in _kprime_variants(SECTION6_NOISE_SMALL, (2, 4, 10)).items()}
    clean = {name: v for name, v in _kprime_variants(SECTION6_FINETUNE, (10,)).items()}
    return _section6_runs("avoid_m2", {**clean, **noisy, **small}, seeds, results_dir)


VARIANTS_DIR = Path(__file__).resolve().with_name("variants")


def robomimic_param(results_dir: Path, seeds: list[int] | None = None) -> list[GridRun]:
    """Paper scale (Fig. 6 / A8 state input, Table A3): Gaussian and GMM PPO with MLP and Transformer backbones and
    DPPO with MLP and UNet backbones on Lift, Can, Square and Transport, 3 seeds (the suite's presets, and where the
    reference's values differ by backbone, experiments/variants/robomimic_param/<task>_<variant>.yaml)."""
    seeds = seeds or [0, 1, 2]
    variants = {
        "dppo_mlp": ("dppo", {}),
        "dppo_unet": ("dppo", {"policy.backbone": "unet"}),
        "gaussian_mlp": ("gaussian_ppo", {}),
        "gaussian_transformer": ("gaussian_ppo", {"policy.backbone": "transformer"}),
        "gmm_mlp": ("gmm_ppo", {}),
        "gmm_transformer": ("gmm_ppo", {"policy.backbone": "transformer"}),
    }
    runs: list[GridRun] = []
    for task in ROBOMIMIC_TASKS:
        for name, (method, ov) in variants.items():
            own = VARIANTS_DIR / "robomimic_param" / f"{task}_{name}.yaml"
            ov = {**ov, **({"config": str(own)} if own.is_file() else {})}
            tag = "_" + name.split("_", 1)[1]  # the backbone: pretrain_gmm_transformer_can
            runs += _section6_runs(task, {name: (method, ov)}, seeds, results_dir, tag=tag)
    return runs


# ----------------------------------------------------------------------------- the paper's ablations (Appendix B)
# Each *_mini grid runs on 2 CPU cores on Avoid M2 (from scratch: a short Hopper run), 1 seed (2 for the advantage
# estimators) so that all of them fit in about an hour; its paper-scale twin runs the paper's tasks with the suites'
# presets, 3 seeds. `make_tables` draws each ablation's table and figure
# from whichever of them ran (analysis/ablations.py).
ABLATION_MINI = {"train.n_iterations": 10, "train.eval_every": 5}
KPRIME_MINI = (3, 5, 10, 20)  # Fig. A4, of Avoid's K = 20
GAMMA_DENOISE_MINI = (0.8, 0.95, 1.0)  # Fig. A2 (Avoid's preset: 0.95)
EPS_MIN_EXP_MINI = (0.01, 0.03, 0.1)  # Fig. A3 (Avoid's preset: 0.03)
EXPERT_FRACTIONS = (0.1, 0.3, 1.0)  # Fig. A5: of Avoid M2's 100 demonstrations, 10, 30 and 100
# advantage=q on Avoid: 1,250 new transitions an iteration, so ~20 TD steps of 256
Q_MINI = {"algo.q_batch_size": 256, "algo.q_replay_ratio": 4.0}
ADVANTAGES = {"state": {}, "full_state": {}, "q": {}}


def _sweep(task, key, values, seeds, results_dir, extra=None, name="dppo", method="dppo") -> list[GridRun]:
    """DPPO (or `method`) fine-tuning one pre-trained policy of `task` with each of `values` for `key`."""
    short = key.rsplit(".", 1)[-1]
    variants = {f"{name}_{short}{v:g}": (method, {**(extra or {}), key: v}) for v in values}
    return _section6_runs(task, variants, seeds, results_dir)


def kprime_mini(results_dir: Path, seeds: list[int] | None = None) -> list[GridRun]:
    """Fig. A4 on 2 CPU cores: DPPO on Avoid M2 fine-tuning the last K' in {3, 5, 10, 20} of its 20 denoising
    steps, 1 seed; `make_tables` plots success against wall-clock time."""
    return _sweep("avoid_m2", "algo.ft_denoising_steps", KPRIME_MINI, seeds or [0], results_dir, ABLATION_MINI)


def kprime(results_dir: Path, seeds: list[int] | None = None) -> list[GridRun]:
    """Paper scale (Fig. A4): DPPO on Hopper (K = 20) and Can (K = 100) with K' in {3, 5, 10, 20}, 3 seeds."""
    return [
        r
        for task in ("hopper", "can")
        for r in _sweep(task, "algo.ft_denoising_steps", (3, 5, 10, 20), seeds or [0, 1, 2], results_dir)
    ]


def gamma_denoise_mini(results_dir: Path, seeds: list[int] | None = None) -> list[GridRun]:
    """Fig. A2 on 2 CPU cores: DPPO on Avoid M2 with the denoising discount in {0.8, 0.95, 1}, 1 seed."""
    key = "algo.gamma_denoise"
    return _sweep("avoid_m2", key, GAMMA_DENOISE_MINI, seeds or [0], results_dir, ABLATION_MINI)


def gamma_denoise(results_dir: Path, seeds: list[int] | None = None) -> list[GridRun]:
    """Paper scale (Fig. A2): DPPO on Hopper, HalfCheetah, Can and Square with the denoising discount in
    {0.8, 0.9, 0.99, 1}, 3 seeds."""
    tasks = ("hopper", "halfcheetah", "can", "square")
    values = (0.8, 0.9, 0.99, 1.0)
    return [r for t in tasks for r in _sweep(t, "algo.gamma_denoise", values, seeds or [0, 1, 2], results_dir)]


def eps_min_exp_mini(results_dir: Path, seeds: list[int] | None = None) -> list[GridRun]:
    """Fig. A3 on 2 CPU cores: DPPO on Avoid M2 with the sampling std floor eps_min_exp in {0.01, 0.03, 0.1}
    (eps_min_prob kept at the preset's), 1 seed."""
    key = "algo.min_sampling_std"
    return _sweep("avoid_m2", key, EPS_MIN_EXP_MINI, seeds or [0], results_dir, ABLATION_MINI)


def eps_min_exp(results_dir: Path, seeds: list[int] | None = None) -> list[GridRun]:
    """Paper scale (Fig. A3): DPPO on Can and Square with eps_min_exp in {0.01, 0.05, 0.1, 0.2}, 3 seeds."""
    values = (0.01, 0.05, 0.1, 0.2)
    key, seeds = "algo.min_sampling_std", seeds or [0, 1, 2]
    return [r for t in ("can", "square") for r in _sweep(t, key, values, seeds, results_dir)]


def _advantage_runs(task, seeds, results_dir, extra, q_extra) -> list[GridRun]:
    variants = {
        f"dppo_adv_{a}": ("dppo", {**extra, "algo.advantage": a, **(q_extra if a == "q" else {})}) for a in ADVANTAGES
    }
    return _section6_runs(task, variants, seeds, results_dir)


def advantage_mini(results_dir: Path, seeds: list[int] | None = None) -> list[GridRun]:
    """Fig. A1 on 2 CPU cores: DPPO on Avoid M2 with its V(s) advantage, V(s, x_k) over the denoising MDP, and an
    off-policy double-Q Q(s, a) (algo.advantage = state, full_state, q), 2 seeds."""
    return _advantage_runs("avoid_m2", seeds or [0, 1], results_dir, ABLATION_MINI, Q_MINI)


def advantage(results_dir: Path, seeds: list[int] | None = None) -> list[GridRun]:
    """Paper scale (Fig. A1): the three advantage estimators on Hopper, HalfCheetah, Can and Square, 3 seeds (the
    Q critic's TD training: QSM's Gym values, the DPPOConfig defaults)."""
    tasks = ("hopper", "halfcheetah", "can", "square")
    return [r for t in tasks for r in _advantage_runs(t, seeds or [0, 1, 2], results_dir, {}, {})]


def _expert_data_runs(task, fractions, seeds, results_dir, extra) -> list[GridRun]:
    runs: list[GridRun] = []
    for f in fractions:
        ov = {**extra, "pretrain.episode_fraction": f}
        variants = {f"{m}_data{f:g}": (m, ov) for m in ("dppo", "gaussian_ppo")}
        runs += _section6_runs(task, variants, seeds, results_dir, tag=f"_data{f:g}")
    return runs


def expert_data_mini(results_dir: Path, seeds: list[int] | None = None) -> list[GridRun]:
    """Fig. A5 on 2 CPU cores: DPPO and Gaussian PPO on Avoid M2, each pre-trained on 10%, 30% and all of the
    demonstrations (a subset fixed by the pre-training's seed), 1 fine-tuning seed."""
    return _expert_data_runs("avoid_m2", EXPERT_FRACTIONS, seeds or [0], results_dir, ABLATION_MINI)


def expert_data(results_dir: Path, seeds: list[int] | None = None) -> list[GridRun]:
    """Paper scale (Fig. A5): DPPO and Gaussian PPO on Hopper and Square, pre-trained on 10%, 30% and all of the
    demonstrations, 3 seeds."""
    seeds = seeds or [0, 1, 2]
    return [r for t in ("hopper", "square") for r in _expert_data_runs(t, EXPERT_FRACTIONS, seeds, results_dir, {})]


def _from_scratch_runs(task, seeds, results_dir, extra) -> list[GridRun]:
    """DPPO and Gaussian PPO with single-action chunks from scratch (pretrained=false), and the same fine-tuning of a
    policy pre-trained on the demonstrations (the comparison's other arm)."""
    runs: list[GridRun] = []
    for method in ("dppo", "gaussian_ppo"):
        ov = {"config": str(VARIANTS_DIR / "from_scratch" / f"gym_{method}.yaml"), **extra}
        runs += _section6_runs(task, {f"{method}_pretrained": (method, ov)}, seeds, results_dir, tag="_ta1")
        for seed in seeds:
            scratch = {"method": method, "task": task, "stage": "all", "seed": seed, "pretrained": False, **ov}
            runs.append(GridRun(f"{method}_scratch_{task}_s{seed}", scratch))
    return runs


# Hopper from scratch on 2 CPU cores: 10 envs x 500 steps x 6 iterations (30k env steps of the reference's 301k)
SCRATCH_MINI = {"train.n_steps": 500, "train.n_iterations": 6, "train.eval_every": 3, "train.eval_episodes": 5}


def from_scratch_mini(results_dir: Path, seeds: list[int] | None = None) -> list[GridRun]:
    """Fig. A6 on 2 CPU cores: DPPO (10 denoising steps) and Gaussian PPO on Hopper with single actions, from scratch
    and from a pre-trained policy, 30k env steps, 1 seed."""
    pre = {"pretrain.n_epochs": None, "pretrain.n_steps": 5000}
    return _from_scratch_runs("hopper", seeds or [0], results_dir, {**SCRATCH_MINI, **pre})


def from_scratch(results_dir: Path, seeds: list[int] | None = None) -> list[GridRun]:
    """Paper scale (Fig. A6): DPPO and Gaussian PPO from scratch (and from pre-trained policies) on Hopper, Walker2d
    and HalfCheetah with single-action chunks, 3 seeds (cfg/gym/scratch/*)."""
    return [r for t in GYM_TASKS for r in _from_scratch_runs(t, seeds or [0, 1, 2], results_dir, {})]


DDIM = {"policy.use_ddim": True, "policy.ddim_steps": 5, "algo.ft_denoising_steps": 5}


def _ddim_runs(task, seeds, results_dir, extra) -> list[GridRun]:
    """DPPO fine-tuning one DDPM-pre-trained policy sampled by DDPM (its preset K') and by DDIM in 5 steps, all 5
    fine-tuned (eta 1 fine-tuning, eta 0 evaluating), as the reference's pixel and Furniture configs do
    (cfg/furniture/finetune/one_leg_low/ft_ppo_diffusion_mlp.yaml: use_ddim True, ddim_steps = ft_denoising_steps 5)."""
    ddpm = _section6_runs(task, {"dppo_ddpm": ("dppo", dict(extra))}, seeds, results_dir)
    ckpt = results_dir / ddpm[0].name / "checkpoints" / "pretrained.pt"
    finetune = {k: v for k, v in extra.items() if not k.startswith("pretrain.")}
    base = {"method": "dppo", "task": task, "stage": "finetune", "checkpoint": str(ckpt), **finetune, **DDIM}
    ddim = [GridRun(f"dppo_ddim_{task}_s{s}", {**base, "seed": s}, after=[ddpm[0].name]) for s in seeds]
    return ddpm + ddim


def ddim_mini(results_dir: Path, seeds: list[int] | None = None) -> list[GridRun]:
    """DDIM fine-tuning end to end on 2 CPU cores: DPPO on Avoid M2 and a short Hopper run, each sampling its
    DDPM-pre-trained policy by DDPM and by 5-step DDIM, 1 seed."""
    seeds = seeds or [0]
    avoid = _ddim_runs("avoid_m2", seeds, results_dir, ABLATION_MINI)
    short_pretrain = {"pretrain.n_epochs": None, "pretrain.n_steps": MINI_HOPPER_PRETRAIN["pretrain.n_steps"]}
    return avoid + _ddim_runs("hopper", seeds, results_dir, {**MINI_HOPPER, **short_pretrain})


def ddim(results_dir: Path, seeds: list[int] | None = None) -> list[GridRun]:
    """Paper scale: DPPO with DDPM and with 5-step DDIM sampling on Hopper and Can, 3 seeds."""
    return [r for t in ("hopper", "can") for r in _ddim_runs(t, seeds or [0, 1, 2], results_dir, {})]


def exact_likelihood_mini(results_dir: Path, seeds: list[int] | None = None) -> list[GridRun]:
    """Fig. A9 on 2 CPU cores: DPPO and policy gradient with the exact likelihood from the probability-flow ODE
    (`exact_pg`), fine-tuning one pre-trained policy on Avoid M2, 1 seed."""
    variants = {m: (m, dict(ABLATION_MINI)) for m in ("dppo", "exact_pg")}
    return _section6_runs("avoid_m2", variants, seeds or [0], results_dir)


def exact_likelihood(results_dir: Path, seeds: list[int] | None = None) -> list[GridRun]:
    """Paper scale (Fig. A9): DPPO and exact-likelihood policy gradient on Hopper and Can, 3 seeds."""
    variants = {m: (m, {}) for m in ("dppo", "exact_pg")}
    return [r for t in ("hopper", "can") for r in _section6_runs(t, variants, seeds or [0, 1, 2], results_dir)]


ABLATION_GRIDS = ("kprime", "gamma_denoise", "eps_min_exp", "advantage", "expert_data", "from_scratch", "ddim",
                  "exact_likelihood")  # fmt: skip

GRIDS: dict[str, Callable[..., list[GridRun]]] = {
    "quickstart": quickstart,
    "smoke": smoke,
    "smoke_dppo": smoke_dppo,
    "gym": gym,
    "gym_mini": gym_mini,
    "diffusion_rl": diffusion_rl,
    "diffusion_rl_mini": diffusion_rl_mini,
    "robomimic_state": robomimic_state,
    "robomimic_mini": robomimic_mini,
    "avoid_parameterisation": avoid_parameterisation,
    "avoid_robustness": avoid_robustness,
    "robomimic_param": robomimic_param,
    "kprime_mini": kprime_mini,
    "kprime": kprime,
    "gamma_denoise_mini": gamma_denoise_mini,
    "gamma_denoise": gamma_denoise,
    "eps_min_exp_mini": eps_min_exp_mini,
    "eps_min_exp": eps_min_exp,
    "advantage_mini": advantage_mini,
    "advantage": advantage,
    "expert_data_mini": expert_data_mini,
    "expert_data": expert_data,
    "from_scratch_mini": from_scratch_mini,
    "from_scratch": from_scratch,
    "ddim_mini": ddim_mini,
    "ddim": ddim,
    "exact_likelihood_mini": exact_likelihood_mini,
    "exact_likelihood": exact_likelihood,
}


# What one run of a grid asks a cluster for, by default (run_all.py's flags override it).
GRID_RESOURCES: dict[str, dict[str, Any]] = {
    # paper scale: one GPU per run, as the reference's cfg/gym/finetune configs (device cuda) assume
    "gym": {"gpus_per_run": 1, "cpus_per_run": 4, "mem_gb": 16, "time_min": 24 * 60},
    "gym_mini": {"cpus_per_run": 1, "mem_gb": 4, "time_min": 3 * 60},
    # the off-policy baselines keep up to 1M transitions on the GPU; QSM's 1000 iterations took the reference
    # ~65 h on Gym (paper Table A1), hence the long limit
    "diffusion_rl": {"gpus_per_run": 1, "cpus_per_run": 4, "mem_gb": 32, "time_min": 72 * 60},
    "diffusion_rl_mini": {"cpus_per_run": 1, "mem_gb": 4, "time_min": 2 * 60},
    # robosuite steps dominate Robomimic runs: the reference steps its 50 envs in subprocesses beside one GPU.
    # Measured: DPPO on Can at paper scale took 64 s an iteration (one H200, 16 cores), 151 iterations ~3 h;
    # Transport steps ~3x slower per env, and an iteration is 50 x 400 chunks of 8 (160k env steps): ~400 s at
    # ~25 steps/s a core, 201 iterations ~22 h.
    # Memory: each env subprocess holds ~0.65 GB (measured on Can: robosuite's model plus the imports), and a run
    # keeps its 50 training and 50 evaluation envs alive, ~65 GB with the trainer.
    "robomimic_state": {"gpus_per_run": 1, "cpus_per_run": 16, "mem_gb": 80, "time_min": 36 * 60},
    "robomimic_mini": {"cpus_per_run": 2, "mem_gb": 8, "time_min": 3 * 60},
    "robomimic_param": {"gpus_per_run": 1, "cpus_per_run": 16, "mem_gb": 80, "time_min": 48 * 60},
    "avoid_parameterisation": {"cpus_per_run": 1, "mem_gb": 2, "time_min": 60},
    "avoid_robustness": {"cpus_per_run": 1, "mem_gb": 2, "time_min": 60},
    "quickstart": {"cpus_per_run": 1, "mem_gb": 2, "time_min": 30},
    "smoke": {"cpus_per_run": 1, "mem_gb": 2, "time_min": 10},
    "smoke_dppo": {"cpus_per_run": 1, "mem_gb": 2, "time_min": 10},
    # the ablations: the *_mini grids on CPU, their paper-scale twins as the suites' grids above (Robomimic's
    # envs dominate: as robomimic_state)
    **{f"{g}_mini": {"cpus_per_run": 1, "mem_gb": 4, "time_min": 60} for g in ABLATION_GRIDS},
    **{g: {"gpus_per_run": 1, "cpus_per_run": 16, "mem_gb": 80, "time_min": 48 * 60} for g in ABLATION_GRIDS},
}


def get_grid(name: str, results_dir: Path, seeds: list[int] | None = None) -> list[GridRun]:
    if name not in GRIDS:
        raise unknown("grid", name, GRIDS)
    return GRIDS[name](results_dir, seeds)
