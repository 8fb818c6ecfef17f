"""Policy parameterisations (paper Sec. 5.2 and 6): GMM and Transformer policies, the BC-regularised Gaussian PPO,
DPPO-UNet with a longer predicted than executed chunk, and the action-noise and initial-state options used to
perturb them. Numbers against independent computations; learning on the bandit of tests/test_learning.py."""

import json
import math

import numpy as np
import pytest
import torch

from envs.avoid import START_CENTRE, START_NOISE, AvoidEnv
from envs.tasks import get_task, widen_initial_states
from experiments.config import build_config
from experiments.trainer import Trainer
from methods.base import MethodContext
from methods.gaussian_ppo import GaussianPPO, GaussianPPOConfig
from methods.gmm_ppo import GMMPPO, GMMPPOConfig
from methods.policies import GaussianPolicy, GaussianPolicyConfig, GMMPolicy, GMMPolicyConfig
from methods.pretrain import PretrainConfig, pretrain
from tests.test_cli import assert_clean_error, read_rows, run_cli
from tests.test_learning import FAST_PPO, bimodal_data, train_on_bandit
from tests.test_methods import TINY_FINETUNE, TINY_PRETRAIN, TINY_RUN

OBS, ACT, H = 3, 2, 4


def normal_logpdf(x, mu, std):
    return -0.5 * ((x - mu) / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)


@pytest.mark.parametrize("backbone", ["mlp", "transformer"])
def test_gmm_log_prob_is_the_mixture_density_and_its_marginal_over_executed_steps(backbone):
    torch.manual_seed(0)
    cfg = GMMPolicyConfig(backbone=backbone, hidden=[16, 16, 16], n_modes=3, transformer_embed_dim=16)
    policy = GMMPolicy(OBS, ACT, H, cfg)
    with torch.no_grad():
        policy.logvar.copy_(2 * torch.log(torch.tensor([[0.05, 0.1], [0.2, 0.15], [0.1, 0.3]])))  # 0.3 clamps to 0.2
    obs, actions = torch.randn(5, OBS), 0.3 * torch.randn(5, H, ACT)
    means, logits = policy.components(obs)
    stds = np.array([[0.05, 0.1], [0.2, 0.15], [0.1, 0.2]])
    for steps in (None, 2):
        got = policy.log_prob(obs, actions, steps=steps)
        n = H if steps is None else steps
        for b in range(5):
            w = torch.softmax(logits[b], -1).detach().numpy()
            dens = [
                w[m]
                * math.exp(
                    sum(
                        normal_logpdf(actions[b, t, d].item(), means[b, m, t, d].item(), stds[m, d])
                        for t in range(n)
                        for d in range(ACT)
                    )
                )
                for m in range(3)
            ]
            assert got[b].item() == pytest.approx(math.log(sum(dens)), rel=1e-4, abs=1e-4)


def test_a_one_mode_gmm_has_the_gaussian_density_and_gmm_ppo_clamps_the_joint_log_density():
    torch.manual_seed(0)
    gmm = GMMPolicy(OBS, ACT, H, GMMPolicyConfig(hidden=[16, 16, 16], n_modes=1))
    obs = torch.randn(64, OBS)
    mean = gmm.components(obs)[0][:, 0]
    actions = mean + 0.1 * torch.randn_like(mean) * torch.linspace(0.2, 8, 64)[:, None, None]  # near and far
    expected = torch.distributions.Normal(mean, 0.1).log_prob(actions).sum(dim=(-1, -2))
    assert torch.allclose(gmm.log_prob(obs, actions), expected, atol=1e-4)
    method = GMMPPO(GMMPPOConfig(), MethodContext.standalone(gmm))
    got = method.log_prob(obs, actions)
    assert torch.allclose(got, expected.clamp(-5, 2), atol=1e-4)
    assert (got == 2).any() and (got == -5).any() and ((got > -5) & (got < 2)).any()


def test_sampled_chunks_stay_within_randn_clip_stds_of_a_mode_and_modes_follow_their_weights():
    torch.manual_seed(0)
    policy = GMMPolicy(OBS, ACT, H, GMMPolicyConfig(hidden=[16, 16, 16], n_modes=2, randn_clip=1.5))
    obs = torch.zeros(4000, OBS)
    means, logits = policy.components(obs[:1])
    samples = policy.sample(obs, deterministic=False)
    dist = (samples[:, None] - means).abs().amax(dim=(-1, -2))  # (N, M): farthest coordinate from each mode
    assert (dist.min(dim=1).values <= 1.5 * 0.1 + 1e-5).all()
    nearest = dist.argmin(dim=1).float()
    assert nearest.mean().item() == pytest.approx(torch.softmax(logits[0], -1)[1].item(), abs=0.03)


def test_gmm_ppo_moves_the_mixture_toward_the_rewarded_mode():
    torch.manual_seed(0)
    obs, actions = bimodal_data()
    policy = GMMPolicy(2, 1, 1, GMMPolicyConfig(hidden=[32, 32, 32], n_modes=2, fixed_std=0.05))
    policy, _ = pretrain(
        policy, obs, actions, PretrainConfig(n_steps=600, batch_size=128, lr=3e-3), torch.device("cpu"), progress=False
    )
    method = GMMPPO(GMMPPOConfig(**FAST_PPO), MethodContext.standalone(policy, act_steps=1, n_iterations=10))
    before, after = train_on_bandit(method)
    assert 0.3 < before < 0.7, before  # both modes pre-trained
    assert after > before + 0.2, (before, after)


def test_bc_regulariser_pulls_the_policy_back_toward_the_pre_trained_one():
    """With no advantage to follow, the actor's only gradient is eq. A14's: -alpha log pi(a_bc | s) with a_bc
    from the frozen pre-trained policy, so a drifted policy moves back, and the reported term is that value."""
    torch.manual_seed(0)
    base = GaussianPolicy(OBS, ACT, H, GaussianPolicyConfig(hidden=[16, 16, 16]))
    method = GaussianPPO(
        GaussianPPOConfig(bc_coef=0.5, actor_lr=1e-2, actor_min_lr=1e-2, n_critic_warmup_itr=0),
        MethodContext.standalone(base),
    )
    with torch.no_grad():  # the fine-tuned policy drifts away from the frozen copy
        for p in method.policy.network.parameters():
            p.add_(0.2 * torch.randn_like(p))
    obs = torch.randn(256, OBS)
    mb = {
        "obs": obs,
        "actions": method.policy.sample(obs, deterministic=False),
        "advantages": torch.zeros(256),
        "returns": torch.zeros(256),
        "values": torch.zeros(256),
    }
    with torch.no_grad():
        mb["old_logp"] = method.log_prob(obs, mb["actions"])

    def gap() -> float:
        with torch.no_grad():
            return (method.policy.mean(obs) - method.bc_policy.mean(obs)).abs().mean().item()

    torch.manual_seed(5)
    a_bc = method.bc_policy.sample(obs, deterministic=False)
    expected = -0.5 * method.log_prob(obs, a_bc).mean().item()
    torch.manual_seed(5)
    assert method.actor_regularisers(mb)["bc_loss"].item() == pytest.approx(expected, rel=1e-5)
    start = gap()
    for _ in range(30):
        stats = method.minibatch_step(mb)
    assert "bc_loss" in stats and gap() < 0.5 * start, (start, gap())


def test_action_noise_ramps_from_its_start_iteration_and_keeps_its_limits():
    cfg = build_config({"train.action_noise": [0.1, 0.2], "train.action_noise_start": 5, "train.action_noise_ramp": 5})
    trainer = Trainer.__new__(Trainer)
    trainer.cfg = cfg
    limits = {}
    for itr in (0, 4, 5, 7, 9, 10, 30, None):
        trainer.noise_itr = itr
        limits[itr] = trainer.noise_limits()
    assert limits[0] == limits[4] == (0.0, 0.0)
    assert limits[5] == pytest.approx((0.02, 0.04)) and limits[7] == pytest.approx((0.06, 0.12))
    assert limits[9] == limits[10] == limits[30] == limits[None] == pytest.approx((0.1, 0.2))
    np.random.seed(0)
    actions = np.zeros((20000, 4, 2), np.float32)
    moved = trainer.perturb(actions) - actions
    assert moved.dtype == np.float32 and np.abs(moved).min() >= 0.1 - 1e-6 and np.abs(moved).max() <= 0.2 + 1e-6
    assert abs(np.abs(moved).mean() - 0.15) < 0.002 and abs((moved > 0).mean() - 0.5) < 0.01
    trainer.cfg = build_config({})
    assert trainer.perturb(actions) is actions  # no noise: nothing drawn, runs reproduce as before


def test_wider_initial_states_scale_each_suites_start_randomisation():
    env = AvoidEnv("avoid_m2")
    widen_initial_states(env, 3.0)
    starts = np.array([env.reset(seed=s)[0][2:] for s in range(400)])
    offset = np.abs(starts - START_CENTRE)
    assert (offset <= 3 * START_NOISE + 1e-6).all() and (offset > START_NOISE).any(axis=0).all()

    hopper = get_task("hopper").make_raw_env()
    base = hopper.unwrapped._reset_noise_scale
    widen_initial_states(hopper.unwrapped, 4.0)
    qpos = np.array([hopper.reset(seed=s)[0][:5] for s in range(200)])  # the observed joint positions
    init = hopper.unwrapped.init_qpos[1:6]
    assert hopper.unwrapped._reset_noise_scale == pytest.approx(4 * base)
    assert np.abs(qpos - init).max() > 1.5 * base and np.abs(qpos - init).max() <= 4 * base + 1e-9


@pytest.mark.parametrize(
    "overrides, needles",
    [
        (["horizon=8", "act_steps=4"], ["act_steps=4 < horizon=8", "policy.backbone=mlp", "policy.backbone=unet"]),
        (["method=gaussian_ppo", "horizon=8", "act_steps=4"], ["gaussian policy", "set act_steps=8"]),
        (["act_steps=8"], ["act_steps=8 exceeds horizon=4"]),
        (["method=gmm_ppo", "policy.n_modes=0"], ["policy.n_modes=0", ">= 1"]),
        (["method=gmm_ppo", "policy.backbone=unet"], ["policy.backbone must be one of mlp, transformer"]),
        (["policy.backbone=transformer"], ["policy.backbone must be one of mlp, unet"]),
        (
            ["method=gaussian_ppo", "policy.backbone=transformer", "policy.transformer_heads=5"],
            ["transformer_embed_dim=96", "divisible by policy.transformer_heads=5"],
        ),
        (["policy.backbone=unet", "horizon=5", "act_steps=4"], ["horizon 5 must be divisible by 2"]),
        (["train.action_noise=[0.2,0.1]"], ["train.action_noise must be [low, high]"]),
    ],
)
def test_unsupported_parameterisations_are_refused_with_what_works_instead(overrides, needles, tmp_path):
    proc = run_cli("task=avoid_m2", f"results_dir={tmp_path}", "stage=pretrain", *overrides)
    assert_clean_error(proc, *needles)
    assert not any(tmp_path.iterdir())  # refused before the run directory was made


TINY_TRANSFORMER = ["policy.transformer_embed_dim=16", "policy.transformer_layers=1"]
BACKBONE_RUNS = {
    "gaussian_transformer": ["method=gaussian_ppo", "policy.backbone=transformer", *TINY_TRANSFORMER],
    "gmm_transformer": ["method=gmm_ppo", "policy.backbone=transformer", *TINY_TRANSFORMER],
    "dppo_unet_predict8_execute4": [
        "method=dppo",
        "policy.backbone=unet",
        "horizon=8",
        "act_steps=4",
        "policy.unet_dim=8",
    ],
}


# each backbone once, the two suites between them (the MLPs: tests/test_methods.py, on both)
@pytest.mark.parametrize(
    "variant, task",
    [("gaussian_transformer", "hopper"), ("gmm_transformer", "avoid_m2"), ("dppo_unet_predict8_execute4", "hopper")],
)
def test_each_backbone_pretrains_fine_tunes_and_evaluates_under_perturbation(variant, task, data_dir, tmp_path):
    args = [*BACKBONE_RUNS[variant], f"task={task}", f"results_dir={tmp_path}", "name=run"]
    args += [*TINY_PRETRAIN, *TINY_RUN, *TINY_FINETUNE, "train.action_noise=[0.05,0.1]", "train.action_noise_start=1"]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["n_iterations"] == 2 and summary["env_steps"] > 0
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "final.pt", weights_only=False)
    assert ckpt["horizon"] == (8 if "unet" in variant else 4)
    assert ckpt["policy_config"]["backbone"] == BACKBONE_RUNS[variant][1].split("=")[1]
    if "unet" in variant:  # executes 4 of its 8: an iteration of 2 envs x 4 chunk steps is at most 32 env steps
        rows = read_rows(tmp_path / "run")
        assert 16 < rows[0]["env_steps"] <= 32 and rows[1]["env_steps"] - rows[0]["env_steps"] <= 32
    shown = run_cli(
        f"checkpoint={tmp_path / 'run' / 'checkpoints' / 'final.pt'}", "action_noise=0.1", "init_range=2",
        "episodes=2", module="experiments.evaluate",
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "action noise [0.1, 0.1], initial-state range x2" in shown.stdout, shown.stdout
