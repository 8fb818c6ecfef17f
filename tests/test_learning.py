"""Learning, not shapes: on a one-step bandit whose reward prefers one of two
demonstrated modes, a few PPO updates must shift the policy toward it."""

import numpy as np
import pytest
import torch

from methods.base import MethodContext, Rollout
from methods.dppo import DPPO, DPPOConfig
from methods.gaussian_ppo import GaussianPPO, GaussianPPOConfig
from methods.policies import DiffusionPolicy, DiffusionPolicyConfig, GaussianPolicy, GaussianPolicyConfig
from methods.pretrain import PretrainConfig, pretrain

FAST_PPO = dict(
    actor_lr=1e-3,
    actor_min_lr=1e-3,
    critic_lr=1e-2,
    critic_min_lr=1e-2,
    n_critic_warmup_itr=0,
    reward_scale_running=False,
    update_epochs=4,
    target_kl=None,
    critic_hidden=[32, 32, 32],
)


def bandit_rollout(method, n: int) -> tuple[Rollout, float]:
    obs = torch.zeros(n, 2)
    actions, kept = method.act(obs, deterministic=False)
    reward = (actions[:, 0, 0] > 0).float()
    one = torch.ones(1, n, dtype=torch.bool)
    rollout = Rollout(
        obs=obs[None],
        next_obs=obs[None],
        rewards=reward[None],
        terminated=one,
        truncated=~one,
        firsts=one,
        kept={k: v[None] for k, v in kept.items()},
    )
    return rollout, reward.mean().item()


def train_on_bandit(method, iterations: int = 10, n: int = 256) -> tuple[float, float]:
    torch.manual_seed(1)
    _, before = bandit_rollout(method, 2000)
    for itr in range(iterations):
        rollout, _ = bandit_rollout(method, n)
        stats = method.update(rollout, itr)
        assert np.isfinite(stats["pg_loss"]) and np.isfinite(stats["v_loss"]), stats
    _, after = bandit_rollout(method, 2000)
    return before, after


def bimodal_data(n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    actions = np.where(rng.random(n) < 0.5, -0.5, 0.5) + rng.normal(0, 0.05, n)
    return np.zeros((n, 2), np.float32), actions.reshape(n, 1, 1).astype(np.float32)


# paper B.1's estimators: each must learn here (the q estimator's critic from a replay buffer by TD)
ADVANTAGES = {"state": {}, "full_state": {}, "q": {"q_batch_size": 128, "q_replay_ratio": 8.0}}


@pytest.mark.parametrize("advantage", sorted(ADVANTAGES))
def test_dppo_moves_a_bimodal_diffusion_policy_toward_the_rewarded_mode(advantage):
    torch.manual_seed(0)
    obs, actions = bimodal_data()
    policy = DiffusionPolicy(2, 1, 1, DiffusionPolicyConfig(denoising_steps=5, hidden=[64, 64, 64]))
    policy, _ = pretrain(
        policy, obs, actions, PretrainConfig(n_steps=800, batch_size=128, lr=3e-3), torch.device("cpu"), progress=False
    )
    cfg = DPPOConfig(
        ft_denoising_steps=5, min_sampling_std=0.05, advantage=advantage, **ADVANTAGES[advantage], **FAST_PPO
    )
    method = DPPO(cfg, MethodContext.standalone(policy, act_steps=1, n_iterations=10))
    before, after = train_on_bandit(method)
    assert 0.3 < before < 0.7, before  # pre-training captured both modes
    assert after > before + 0.2, (before, after)


def test_gaussian_ppo_moves_the_mean_toward_reward():
    torch.manual_seed(0)
    obs, actions = bimodal_data()
    actions = np.full_like(actions, -0.05)  # demonstrations just left of the rewarded side
    policy = GaussianPolicy(2, 1, 1, GaussianPolicyConfig(hidden=[32, 32, 32]))
    policy, _ = pretrain(
        policy, obs, actions, PretrainConfig(n_steps=300, batch_size=128, lr=3e-3), torch.device("cpu"), progress=False
    )
    method = GaussianPPO(
        GaussianPPOConfig(**FAST_PPO),
        MethodContext.standalone(policy, act_steps=1, n_iterations=10),
    )
    before, after = train_on_bandit(method)
    assert before < 0.45, before
    assert after > before + 0.2, (before, after)
