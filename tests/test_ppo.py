"""PPO pieces against hand-worked numbers."""

import numpy as np
import pytest
import torch

from methods.optim import cosine_warmup_lr
from methods.ppo import RunningRewardScaler, clipped_surrogate, gae


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


def gaussian_ppo(horizon: int, act_steps: int, **algo):
    from methods.base import MethodContext
    from methods.gaussian_ppo import GaussianPPO, GaussianPPOConfig
    from methods.policies import GaussianPolicy, GaussianPolicyConfig

    torch.manual_seed(0)
    policy = GaussianPolicy(3, 2, horizon, GaussianPolicyConfig(hidden=[8, 8, 8], fixed_std=0.02))
    return GaussianPPO(GaussianPPOConfig(**algo), MethodContext.standalone(policy, act_steps=act_steps))


def numpy_log_density(method, obs: torch.Tensor, actions: torch.Tensor) -> np.ndarray:
    """Per-dim log N(a; mean, std^2) in float64, (B, Ta, Da), the std from the log-variance as the reference."""
    with torch.no_grad():
        mean = method.policy.mean(obs).double().numpy()
        logvar = method.policy.logvar.double().numpy()
    std = np.exp(0.5 * np.clip(logvar, 2 * np.log(0.01), 2 * np.log(0.2)))
    a = actions.double().numpy()
    return -((a - mean) ** 2) / (2 * std**2) - np.log(std) - 0.5 * np.log(2 * np.pi)


def test_gaussian_ppo_log_prob_is_the_chunk_mean_clamped_to_the_reference_range():
    method = gaussian_ppo(horizon=8, act_steps=4)
    obs = torch.randn(6, 3)
    with torch.no_grad():
        mean = method.policy.mean(obs)
    # std 0.02: rows 0-1 near the mean (mean log-density above 2: clamped), 2-3 inside, 4-5 far off (clamped at -5)
    offsets = torch.tensor([0.0, 0.01, 0.03, 0.04, 0.5, 1.0]).view(6, 1, 1)
    actions = mean + offsets * torch.randn(6, 8, 2).sign()
    per_dim = numpy_log_density(method, obs, actions)
    expected = np.clip(per_dim.mean(axis=(1, 2)), -5, 2)  # over all 8 x 2 entries, the 4 unexecuted steps too
    got = method.log_prob(obs, actions).detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert got[0] == got[1] == 2.0 and got[4] == got[5] == -5.0 and -5 < got[3] < got[2] < 2
    # the former reduction, kept as an option: exact density of the 4 executed steps
    summed = gaussian_ppo(horizon=8, act_steps=4, logprob_reduction="sum").log_prob(obs, actions)
    np.testing.assert_allclose(summed.detach().numpy(), per_dim[:, :4].sum(axis=(1, 2)), rtol=1e-5)


def test_gaussian_ppo_learns_the_log_variance_only_when_asked():
    fixed = gaussian_ppo(horizon=4, act_steps=4)
    assert not fixed.policy.logvar.requires_grad
    assert all(p is not fixed.policy.logvar for p in fixed.actor_parameters())
    torch.testing.assert_close(fixed.policy.std(), torch.full((2,), 0.02))
    learned = gaussian_ppo(horizon=4, act_steps=4, learn_std=True)
    assert any(p is learned.policy.logvar for p in learned.actor_parameters())
    with torch.no_grad():
        learned.policy.logvar.copy_(torch.tensor([2 * np.log(0.5), 2 * np.log(0.05)]))
    torch.testing.assert_close(learned.policy.std(), torch.tensor([0.2, 0.05]))  # clamped to std_max = 0.2
    with pytest.raises(ValueError, match="logprob_reduction must be one of mean_clamped, sum"):
        gaussian_ppo(horizon=4, act_steps=4, logprob_reduction="mean")


def test_gaussian_checkpoint_with_a_log_std_loads_as_log_variance():
    from methods.policies import GaussianPolicy, GaussianPolicyConfig

    policy = GaussianPolicy(3, 2, 4, GaussianPolicyConfig(hidden=[8, 8, 8]))
    state = {k: v for k, v in policy.state_dict().items() if k != "logvar"}
    state["log_std"] = torch.log(torch.tensor([0.05, 0.15]))
    policy.load_state_dict(state)
    torch.testing.assert_close(policy.std(), torch.tensor([0.05, 0.15]))
