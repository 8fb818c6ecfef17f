"""The diffusion policy's schedule, reverse steps and DPPO's likelihood,
checked against independent computations."""

import math

import numpy as np
import pytest
import torch

from methods.base import MethodContext
from methods.dppo import DPPO, DPPOConfig, clip_schedule
from methods.policies.diffusion import DiffusionPolicy, DiffusionPolicyConfig, cosine_betas
from methods.policies.networks import DiffusionMLP


def reference_abar(K: int, s: float = 0.008) -> list[float]:
    """alpha-bar_k = prod_{j<=k} (1 - beta_j), with betas from the cosine formula, in plain Python."""
    f = [math.cos(((i / K) + s) / (1 + s) * math.pi / 2) ** 2 for i in range(K + 1)]
    abar, prod = [], 1.0
    for k in range(K):
        beta = min(max(1 - f[k + 1] / f[k], 0.0), 0.999)
        prod *= 1 - beta
        abar.append(prod)
    return abar


@pytest.mark.parametrize("K", [5, 20, 100])
def test_cosine_schedule_matches_closed_form(K):
    betas = cosine_betas(K)
    abar = np.cumprod(1 - betas)
    np.testing.assert_allclose(abar, reference_abar(K), rtol=1e-12)
    # Before the 0.999 cap bites, alpha-bar equals the normalised cosine directly.
    f0 = math.cos(0.008 / 1.008 * math.pi / 2) ** 2
    direct = [math.cos(((k + 1) / K + 0.008) / 1.008 * math.pi / 2) ** 2 / f0 for k in range(K - 1)]
    np.testing.assert_allclose(abar[:-1], direct, rtol=1e-10)
    assert betas[-1] == pytest.approx(0.999)


class ConstantEps(torch.nn.Module):
    """A 'network' that predicts a fixed eps, so every step can be computed by hand."""

    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, x, k, obs):
        return torch.full_like(x, self.value)


def test_ddpm_step_matches_posterior_formula():
    K = 10
    policy = DiffusionPolicy(3, 2, 4, DiffusionPolicyConfig(denoising_steps=K, hidden=[16]))
    abar = reference_abar(K)
    x = torch.linspace(-0.8, 0.8, 8).view(1, 4, 2)
    eps = 0.3
    for pos in range(K):
        k = K - 1 - pos
        a, a_prev = abar[k], (abar[k - 1] if k > 0 else 1.0)
        beta = 1 - a / a_prev
        x0 = (math.sqrt(1 / a) * x - math.sqrt(1 / a - 1) * eps).clamp(-1, 1)
        mu = beta * math.sqrt(a_prev) / (1 - a) * x0 + (1 - a_prev) * math.sqrt(1 - beta) / (1 - a) * x
        sigma = math.sqrt(max(beta * (1 - a_prev) / (1 - a), 1e-20))
        got_mu, got_sigma = policy.step_mean_std(ConstantEps(eps), x, torch.tensor([pos]), torch.zeros(1, 3))
        torch.testing.assert_close(got_mu, mu.float(), rtol=1e-5, atol=1e-6)
        assert got_sigma.flatten()[0].item() == pytest.approx(sigma, rel=1e-5)
        assert policy.net_k[pos].item() == k


def test_ddim_step_matches_formula_with_leading_spacing():
    K, S = 20, 5
    policy = DiffusionPolicy(
        3, 2, 4, DiffusionPolicyConfig(denoising_steps=K, hidden=[16], use_ddim=True, ddim_steps=S)
    )
    abar = reference_abar(K)
    assert policy.net_k.tolist() == [16, 12, 8, 4, 0]
    x = torch.linspace(-0.5, 0.9, 8).view(1, 4, 2)
    for pos, t in enumerate([16, 12, 8, 4, 0]):
        a = abar[t]
        a_prev = abar[t - 4] if t > 0 else 1.0
        for eta in (0.0, 1.0):
            x0 = ((x - math.sqrt(1 - a) * 0.7) / math.sqrt(a)).clamp(-1, 1)
            eps = (x - math.sqrt(a) * x0) / math.sqrt(1 - a)
            sigma = eta * math.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
            mu = math.sqrt(a_prev) * x0 + math.sqrt(max(0.0, 1 - a_prev - sigma**2)) * eps
            got_mu, got_sigma = policy.step_mean_std(ConstantEps(0.7), x, torch.tensor([pos]), torch.zeros(1, 3), eta)
            torch.testing.assert_close(got_mu, mu.float(), rtol=1e-5, atol=1e-5)
            assert got_sigma.flatten()[0].item() == pytest.approx(sigma, abs=1e-6)


def test_ddim_step_keeps_float64_precision_where_a_prev_nears_one():
    # K = 100, 5 DDIM steps: at position 3, a_prev = 0.99937 and 1 - a_prev - sigma^2 is a difference of
    # nearly equal numbers. Float32 inputs to it put the mean 3.3e-5 sigma off; float64 coefficients 2.2e-6.
    K, S = 100, 5
    policy = DiffusionPolicy(
        3, 2, 4, DiffusionPolicyConfig(denoising_steps=K, hidden=[16], use_ddim=True, ddim_steps=S)
    )
    abar = reference_abar(K)
    x = torch.linspace(-0.5, 0.5, 8, dtype=torch.float64).view(1, 4, 2)
    for pos, t in enumerate(policy.net_k.tolist()[:-1]):  # the last step has sigma 0
        a, a_prev = abar[t], abar[t - K // S]
        x0 = ((x - math.sqrt(1 - a) * 0.3) / math.sqrt(a)).clamp(-1, 1)
        eps = (x - math.sqrt(a) * x0) / math.sqrt(1 - a)
        sigma = math.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
        mu = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev - sigma**2) * eps
        got_mu, got_sigma = policy.step_mean_std(ConstantEps(0.3), x.float(), torch.tensor([pos]), torch.zeros(1, 3))
        assert (got_mu.double() - mu).abs().max().item() < 5e-6 * sigma, pos
        assert got_sigma.flatten()[0].item() == pytest.approx(sigma, rel=1e-6)


def test_deterministic_ddpm_sampling_is_noise_free_at_the_last_step():
    torch.manual_seed(0)
    policy = DiffusionPolicy(3, 2, 4, DiffusionPolicyConfig(denoising_steps=5, hidden=[16]))
    obs = torch.zeros(2, 3)
    a, _ = policy.sample(obs, deterministic=True)
    assert a.shape == (2, 4, 2)
    # sampling with min_std floors: the recorded chain has S - r + 1 states
    _, chain = policy.sample(obs, deterministic=False, min_std=0.1, record_from=2)
    assert chain.shape == (2, 4, 4, 2)
    _, chain = policy.sample(obs, deterministic=False, min_std=0.1, record_from=0)
    assert chain.shape == (2, 6, 4, 2)


def make_dppo(**kw) -> DPPO:
    policy = DiffusionPolicy(3, 2, 4, DiffusionPolicyConfig(denoising_steps=10, hidden=[32, 32, 32]))
    cfg = DPPOConfig(ft_denoising_steps=4, **kw)
    return DPPO(cfg, MethodContext.standalone(policy, torch.device("cpu"), act_steps=4, n_iterations=1))


def test_dppo_step_log_prob_equals_torch_normal():
    torch.manual_seed(1)
    m = make_dppo(min_logprob_std=0.1)
    obs, x_prev, x_next = torch.randn(6, 3), torch.randn(6, 4, 2), torch.randn(6, 4, 2)
    ft = torch.tensor([0, 1, 2, 3, 3, 0])
    logp = m.step_log_prob(obs, x_prev, x_next, ft)
    with torch.no_grad():
        mu, sigma = m.policy.step_mean_std(m.policy.network, x_prev, ft + m.first_ft, obs)
    expected = torch.distributions.Normal(mu, sigma.clamp(min=0.1)).log_prob(x_next)
    torch.testing.assert_close(logp, expected, rtol=1e-5, atol=1e-5)
    # Later steps have sigma below the floor: their std is exactly the floor.
    assert sigma[3].max().item() < 0.1


def test_dppo_log_prob_reductions():
    m = make_dppo()
    logp = torch.tensor([[[-7.0, 1.0], [3.0, 0.0], [-1.0, -1.0], [0.5, 0.5]]])
    assert m.reduce_log_prob(logp).item() == pytest.approx((-5 + 1 + 2 + 0 - 1 - 1 + 0.5 + 0.5) / 8)
    m.cfg.logprob_reduction = "sum"
    assert m.reduce_log_prob(logp).item() == pytest.approx(-7 + 1 + 3 + 0 - 1 - 1 + 0.5 + 0.5)


def test_clip_schedule_end_points_and_shape():
    clips = clip_schedule(10, base=0.001, final=0.1, rate=3.0)
    assert clips[0].item() == pytest.approx(0.001)
    assert clips[-1].item() == pytest.approx(0.1)
    assert torch.all(clips[1:] > clips[:-1])
    mid = 0.001 + 0.099 * (math.exp(3 * 4 / 9) - 1) / (math.exp(3) - 1)
    assert clips[4].item() == pytest.approx(mid, rel=1e-6)
    assert clip_schedule(1, 0.001, 0.1, 3.0).tolist() == pytest.approx([0.1])


def test_dppo_frozen_network_runs_the_early_steps():
    m = make_dppo()
    nets = m.networks
    assert nets[:6] == [m.frozen] * 6 and nets[6:] == [m.policy.network] * 4
    assert not any(p.requires_grad for p in m.frozen.parameters())
    assert all(p.requires_grad for p in m.policy.network.parameters())
    # Updating the trainable copy leaves the frozen one at the pre-trained weights.
    before = [p.clone() for p in m.frozen.parameters()]
    for p in m.policy.network.parameters():
        p.data.add_(1.0)
    assert all(torch.equal(a, b) for a, b in zip(before, m.frozen.parameters()))
    assert m.denoise_discount.tolist() == pytest.approx([0.95**3, 0.95**2, 0.95, 1.0])


def test_dppo_resumes_a_state_saved_before_policies_kept_their_base_network():
    trained, fresh = make_dppo(), make_dppo()
    old_style = trained.state_dict()
    old_style["policy"] = {k: v for k, v in old_style["policy"].items() if not k.startswith("base_network.")}
    base = {k: v.clone() for k, v in fresh.frozen.state_dict().items()}
    fresh.load_state_dict(old_style)
    # the fine-tuned network is the saved one; the base stays the pre-trained copy DPPO made when it started
    assert all(
        torch.equal(a, b) for a, b in zip(fresh.policy.network.parameters(), trained.policy.network.parameters())
    )
    assert all(torch.equal(base[k], v) for k, v in fresh.frozen.state_dict().items())


@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize("batch", [1, 8, 33])  # 8: the batch equals the thin output layer's width
def test_the_sampling_fast_path_equals_the_network_forward(residual, batch):
    torch.manual_seed(0)
    net = DiffusionMLP(3, 2, 4, [32, 32, 32], residual=residual, n_steps=10)
    obs, x = torch.randn(batch, 3), torch.randn(batch, 4, 2)
    eps = net.conditioned(obs, range(10))
    for k in (0, 4, 9):
        with torch.no_grad():
            expected = net(x, torch.full((batch,), k), obs)
        torch.testing.assert_close(eps(x, k).clone(), expected, rtol=1e-5, atol=1e-5)
