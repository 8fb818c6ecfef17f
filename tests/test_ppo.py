"""PPO pieces against hand-worked numbers."""

import numpy as np
import pytest
import torch

from methods.ppo import RunningRewardScaler, clipped_surrogate, cosine_warmup_lr, gae


def test_gae_with_termination_truncation_and_rollout_end():
    # t:        0    1    2    3    4
    r = torch.tensor([[1.0], [2.0], [0.0], [1.0], [3.0]])
    v = torch.tensor([[0.5], [1.0], [0.2], [0.4], [0.1]])
    v_next = torch.tensor([[1.0], [9.0], [0.4], [5.0], [2.0]])  # V of the true next obs
    term = torch.tensor([[False], [True], [False], [False], [False]])
    trunc = torch.tensor([[False], [False], [False], [True], [False]])
    adv, ret = gae(r, v, v_next, term, trunc, gamma=0.9, lam=0.8)
    # t=4: 3 + .9*2 - .1 = 4.7 (rollout end: bootstrap, nothing after)
    # t=3: truncated -> bootstrap from V(final obs)=5, recursion cut: 1 + 4.5 - .4 = 5.1
    # t=2: .36 - .2 = .16, + .72 * 5.1
    # t=1: terminated -> no bootstrap, recursion cut: 2 - 1 = 1
    # t=0: 1 + .9 - .5 = 1.4, + .72 * 1
    expected = [2.12, 1.0, 0.16 + 0.72 * 5.1, 5.1, 4.7]
    np.testing.assert_allclose(adv.squeeze(1).numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(ret.squeeze(1).numpy(), np.array(expected) + v.squeeze(1).numpy(), rtol=1e-6)


def test_running_reward_scaler_divides_by_std_of_discounted_return():
    rng = np.random.default_rng(0)
    rewards = rng.normal(1.0, 2.0, size=(50, 3))
    firsts = np.zeros((50, 3))
    firsts[0] = 1
    firsts[20, 1] = 1
    scaler = RunningRewardScaler(n_envs=3, gamma=0.9)
    out = scaler(rewards, firsts)
    rets = np.zeros_like(rewards)
    running = np.zeros(3)
    for t in range(50):
        running = rewards[t] + (1 - firsts[t]) * 0.9 * running
        rets[t] = running
    # Prior of the running statistics: mean 0, var 1 with weight 1e-4.
    x = rets.reshape(-1)
    n, c = len(x), 1e-4
    mean = x.mean()
    var = (1.0 * c + x.var() * n + mean**2 * c * n / (c + n)) / (c + n - 1)
    np.testing.assert_allclose(out, np.clip(rewards / np.sqrt(var + 1e-8), -10, 10), rtol=1e-10)


def test_clipped_surrogate_and_kl():
    logratio = torch.log(torch.tensor([1.5, 0.5, 1.05]))
    adv = torch.tensor([1.0, 1.0, -2.0])
    loss, kl, clipfrac = clipped_surrogate(logratio, adv, 0.2)
    # ratio 1.5 with A>0 is clipped to 1.2; 0.5 with A>0 is not (min); 1.05 inside
    expected = -(1.2 * 1 + 0.5 * 1 + 1.05 * -2) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    r = torch.tensor([1.5, 0.5, 1.05])
    assert kl.item() == pytest.approx(((r - 1) - torch.log(r)).mean().item(), rel=1e-6)
    assert clipfrac.item() == pytest.approx(2 / 3)


def test_cosine_warmup_lr():
    assert cosine_warmup_lr(0, 1e-3, 1e-5, 10, 100) == pytest.approx(1e-5)
    assert cosine_warmup_lr(5, 1e-3, 1e-5, 10, 100) == pytest.approx(1e-5 + (1e-3 - 1e-5) / 2)
    assert cosine_warmup_lr(10, 1e-3, 1e-5, 10, 100) == pytest.approx(1e-3)
    assert cosine_warmup_lr(55, 1e-3, 1e-5, 10, 100) == pytest.approx(1e-5 + (1e-3 - 1e-5) / 2)
    assert cosine_warmup_lr(100, 1e-3, 1e-5, 10, 100) == pytest.approx(1e-5)  # restart
