"""Exact-likelihood diffusion policy gradient (methods/exact_pg.py, paper B.5): the probability-flow ODE's
log-likelihood against a closed form, Hutchinson's estimator against the autograd trace, the gradient through the
solver against finite differences, PPO updates that favour rewarded chunks, and the method through the CLI."""

import json
import math

import pytest
import torch
from torch import nn

from experiments.config import ConfigError, resolve
from experiments.run import run
from methods.base import MethodContext, Rollout
from methods.exact_pg import ExactPG, ExactPGConfig, ProbabilityFlowLikelihood, hutchinson_probes, hutchinson_trace
from methods.policies.diffusion import DiffusionPolicy, DiffusionPolicyConfig
from tests.test_cli import assert_clean_error, read_rows, run_cli


class GaussianEps(nn.Module):
    """The exact eps-prediction of the DDPM for data a ~ N(m, s^2) (per element, independent of obs): at step k,
    x_k ~ N(sqrt(abar_k) m, abar_k s^2 + 1 - abar_k), and eps = -sqrt(1 - abar_k) * score. m and log s are
    parameters, so that a method can fine-tune this policy."""

    def __init__(self, policy: DiffusionPolicy, m: torch.Tensor, s: torch.Tensor):
        super().__init__()
        self.policy = [policy]  # not a submodule
        self.m, self.log_s = nn.Parameter(m.clone()), nn.Parameter(s.log())

    def forward(self, x, k, obs):
        sqrt_abar = self.policy[0].sqrt_abar[k].view(-1, 1, 1)
        sigma = self.policy[0].sqrt_one_minus_abar[k].view(-1, 1, 1)
        var = sqrt_abar**2 * self.log_s.exp() ** 2 + sigma**2
        return sigma * (x - sqrt_abar * self.m) / var


def gaussian_policy(K: int, m=(0.3, -0.5), s=(0.2, 0.5)):
    """A diffusion policy over (2, 2) chunks whose data model is N(m, s^2) per action dim, at both chunk steps."""
    policy = DiffusionPolicy(2, 2, 2, DiffusionPolicyConfig(denoising_steps=K, hidden=[8]))
    m, s = torch.tensor([m]), torch.tensor([s])
    policy.network = GaussianEps(policy, m, s)
    return policy, m, s


@pytest.mark.parametrize(
    "K, method, mean_tol, max_tol",
    [
        (1000, "euler", 0.03, 0.3),  # one Euler step per denoising step, as the reference integrates (K = 20 there)
        (200, "rk4", 0.1, 0.8),
        (100, "dopri5", 0.2, 1.5),  # adaptive (rtol = atol = 1e-4)
        (20, "euler", 0.6, 5.0),  # the defaults at the paper's K: coarse (20 noise levels), but see the correlation
    ],
)
def test_ode_log_likelihood_matches_the_closed_form_gaussian_density(K, method, mean_tol, max_tol):
    torch.manual_seed(0)
    policy, m, s = gaussian_policy(K)
    actions = m + s * torch.randn(200, 2, 2)
    lik = ProbabilityFlowLikelihood(policy, method=method)
    with torch.no_grad():
        logp = lik(torch.zeros(200, 2), actions)
    exact = (-0.5 * ((actions - m) / s) ** 2 - torch.log(s) - 0.5 * math.log(2 * math.pi)).sum(dim=(1, 2))
    err = (logp - exact).abs()
    assert err.mean() < mean_tol and err.max() < max_tol, (err.mean(), err.max())
    assert torch.corrcoef(torch.stack([logp, exact]))[0, 1] > 0.93
    # the density's scale is right: N(m, s^2) has log-density -sum(log s) - D/2 log(2 pi e) on average
    assert logp.mean().item() == pytest.approx(exact.mean().item(), abs=mean_tol)


@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
def test_hutchinson_estimate_averages_to_the_autograd_jacobian_trace(kind):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 6), nn.Unflatten(1, (2, 3)))
    x0 = torch.randn(1, 2, 3)
    exact = torch.autograd.functional.jacobian(lambda x: net(x).flatten(), x0).reshape(6, 6).trace()
    n = 20000  # copies of x0, each with its own probe
    x = x0.expand(n, 2, 3).clone().requires_grad_(True)
    probes = hutchinson_probes(1, x, kind).transpose(0, 1)
    if kind == "rademacher":
        assert set(probes.unique().tolist()) == {-1.0, 1.0}
    estimates = hutchinson_trace(net(x), x, probes, create_graph=False)
    stderr = estimates.std() / math.sqrt(n)
    assert abs(estimates.mean() - exact) < 4 * stderr, (estimates.mean(), exact, stderr)
    assert estimates.std() > 0.01  # a real estimator: the probes matter (off-diagonal Jacobian terms)


def tiny_method(**algo) -> ExactPG:
    torch.manual_seed(0)
    policy = DiffusionPolicy(2, 2, 2, DiffusionPolicyConfig(denoising_steps=5, hidden=[16, 16, 16], time_dim=4))
    cfg = ExactPGConfig(**{"logprob_reduction": "sum", "n_critic_warmup_itr": 0, **algo})
    return ExactPG(cfg, MethodContext.standalone(policy))


def test_gradient_through_the_ode_matches_finite_differences():
    method = tiny_method()
    policy = method.policy.double()
    method.likelihood = ProbabilityFlowLikelihood(policy, method="rk4")
    obs, actions = torch.randn(3, 2, dtype=torch.float64), 0.5 * torch.randn(3, 2, 2, dtype=torch.float64)
    probes = hutchinson_probes(2, actions, "rademacher")
    weight = [p for p in policy.network.parameters() if p.dim() == 2][-1]  # the output layer's
    direction = torch.randn_like(weight)
    logp = method.likelihood(obs, actions, probes).sum()
    (grad,) = torch.autograd.grad(logp, weight)
    h = 1e-5
    with torch.no_grad():
        weight += h * direction
        up = method.likelihood(obs, actions, probes).sum()
        weight -= 2 * h * direction
        down = method.likelihood(obs, actions, probes).sum()
        weight += h * direction
    fd = (up - down) / (2 * h)
    assert (grad * direction).sum().item() == pytest.approx(fd.item(), rel=1e-4, abs=1e-8)


def test_a_minibatch_step_raises_the_likelihood_of_the_advantaged_chunk():
    method = tiny_method(clip=10.0, actor_lr=1e-3, actor_min_lr=1e-3, hutchinson_fixed=True)
    obs = torch.zeros(2, 2)
    actions = torch.tensor([[[0.5, 0.5], [0.5, 0.5]], [[-0.5, -0.5], [-0.5, -0.5]]])
    probes = hutchinson_probes(2, actions, "rademacher")
    with torch.no_grad():
        before = method.log_prob(obs, actions, probes)
    mb = {"obs": obs, "actions": actions, "probes": probes, "old_logp": before}
    mb.update(advantages=torch.tensor([1.0, -1.0]), returns=torch.zeros(2), values=torch.zeros(2))
    for _ in range(3):
        stats = method.minibatch_step(mb)
    with torch.no_grad():
        after = method.log_prob(obs, actions, probes)
    assert after[0] > before[0] + 0.05 and after[1] < before[1] - 0.05, (before, after)
    assert stats["approx_kl"] > 0


def test_updates_on_a_bandit_move_the_policy_toward_the_reward():
    # The policy is the exact DDPM of N(m, s^2), so its DDPM samples and its ODE likelihood describe the same
    # distribution; reward -|a - target|^2 should pull m toward the target and shrink s.
    torch.manual_seed(0)
    target = torch.tensor([0.5, 0.2])
    policy, m0, _ = gaussian_policy(10, m=(0.0, 0.0), s=(0.3, 0.3))
    cfg = ExactPGConfig(
        logprob_reduction="sum", hutchinson_fixed=True, actor_lr=1e-2, actor_min_lr=1e-2, n_critic_warmup_itr=0,
        clip=0.2, update_epochs=4, batch_size=64, reward_scale_running=False, min_sampling_std=0.0,
    )  # fmt: skip
    method = ExactPG(cfg, MethodContext.standalone(policy))
    obs = torch.zeros(128, 2)
    for itr in range(5):
        chunks, kept = method.act(obs, deterministic=False)
        reward = -((chunks - target) ** 2).sum(dim=(1, 2))
        done = torch.ones(1, 128, dtype=torch.bool)
        rollout = Rollout(obs[None], obs[None], reward[None], done, ~done, done, {k: v[None] for k, v in kept.items()})
        stats = method.update(rollout, itr)
        assert math.isfinite(stats["pg_loss"]) and stats["clipfrac"] < 1
    net = policy.network
    assert ((net.m.detach() - target) ** 2).sum() < 0.5 * ((m0 - target) ** 2).sum(), net.m
    chunks, _ = method.act(obs, deterministic=False)
    assert ((chunks.mean(dim=(0, 1)) - target) ** 2).sum() < 0.5 * (target**2).sum()


# ------------------------------------------------------------------------------------------ through the CLI
TINY = ["task=hopper", "seed=1", "train.n_envs=2", "train.eval_episodes=1", "progress=false"]
TINY += ["pretrain.n_steps=50", "pretrain.n_epochs=null", "policy.hidden=[32,32,32]"]
TINY += ["train.n_iterations=2", "train.n_steps=4", "train.eval_every=0", "algo.batch_size=4"]


def test_a_tiny_hopper_run_fine_tunes_with_the_gym_preset(data_dir, tmp_path):
    proc = run_cli("method=exact_pg", f"results_dir={tmp_path}", *TINY, "algo.hutchinson_fixed=true", "name=r")
    assert proc.returncode == 0, proc.stderr
    rows = read_rows(tmp_path / "r")
    assert [r["itr"] for r in rows] == [0, 1]
    assert all(math.isfinite(r["pg_loss"]) and math.isfinite(r["approx_kl"]) for r in rows)
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["method"] == "exact_pg"
    assert (cfg["algo"]["clip"], cfg["algo"]["update_epochs"], cfg["algo"]["ode_method"]) == (0.01, 5, "euler")

    shown = run_cli("method=exact_pg", "task=hopper", "--show-config").stdout
    assert "clip: 0.01  # experiments/configs/gym/exact_pg.yaml | " in shown, shown
    assert "hutchinson_samples: 2  # default | " in shown


@pytest.mark.parametrize(
    "args, needles",
    [
        (["algo.ode_method=RK45"], ["algo.ode_method must be one of euler,", "dopri5", "got 'RK45'"]),
        (["algo.ft_denoising_steps=5"], ["unknown config key 'algo.ft_denoising_steps'"]),
    ],
)
def test_bad_options_give_one_clear_error_on_the_command_line(args, needles, tmp_path):
    proc = run_cli("method=exact_pg", f"results_dir={tmp_path}", *TINY, *args)
    assert_clean_error(proc, *needles)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "overrides, needles",
    [
        ({"algo.hutchinson_noise": "normal"}, ["algo.hutchinson_noise must be one of rademacher, gaussian, got"]),
        ({"algo.logprob_reduction": "mean_clamped"}, ["algo.logprob_reduction must be one of bits_per_dim_clamped"]),
        ({"algo.gamma_denoise": 0.9}, ["unknown config key 'algo.gamma_denoise'"]),
        ({"algo.hutchinson_samples": 0}, ["algo.hutchinson_samples", ">= 1"]),
        ({"algo.ode_t0": 1.0}, ["algo.ode_t0", "[0, 1)"]),
        ({"algo.ode_step_size": 0.0}, ["algo.ode_step_size", "(0, 1]"]),
        ({"policy.use_ddim": True}, ["set policy.use_ddim=false"]),
    ],
)
def test_bad_options_are_refused_before_the_run_starts(overrides, needles, tmp_path):
    with pytest.raises(ConfigError) as e:
        cfg, sources = resolve({"method": "exact_pg", "task": "avoid_m2", "results_dir": str(tmp_path), **overrides})
        run(cfg, sources=sources)
    for needle in needles:
        assert needle in str(e.value), str(e.value)
    assert not list(tmp_path.iterdir())
