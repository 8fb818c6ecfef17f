"""The six diffusion-RL baselines (DRWR, DAWR, DIPO, IDQL, DQL, QSM) and their shared pieces, each checked
against an independent computation on a tiny problem: tiny real policies, critics replaced by modules with
known values where the check needs known values, and every expected number worked out here by a direct
formula or a plain loop."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from experiments.config import ConfigError, build_config
from experiments.run import run
from methods.base import MethodContext, Rollout, TaskInfo, TrainingBudget
from methods.dawr import DAWR, DAWRConfig, td_lambda_targets
from methods.diffusion_rl import bellman_target
from methods.dipo import DIPO, DIPOConfig
from methods.dql import DQL, DQLConfig
from methods.drwr import complete_episodes, exp_weights, reward_to_go
from methods.idql import IDQL, IDQLConfig, expectile_loss
from methods.policies.diffusion import DiffusionPolicy, DiffusionPolicyConfig
from methods.qsm import QSM, QSMConfig, qsm_target
from methods.replay import ReplayBuffer

OBS, ACT, HORIZON = 3, 2, 4
SMALL = {"critic_hidden": [8, 8, 8], "batch_size": 8, "buffer_size": 64}  # every off-policy method's tiny config


def tiny_policy(horizon: int = HORIZON, **cfg) -> DiffusionPolicy:
    torch.manual_seed(0)
    return DiffusionPolicy(OBS, ACT, horizon, DiffusionPolicyConfig(hidden=[16, 16, 16], denoising_steps=5, **cfg))


def build(method_cls, cfg, horizon: int = HORIZON, act_steps: int = 2, policy: DiffusionPolicy | None = None):
    policy = policy if policy is not None else tiny_policy(horizon)
    return method_cls(cfg, MethodContext.standalone(policy, act_steps=act_steps))


def fill(buffer: ReplayBuffer, T: int, seed: int = 0) -> None:
    """T rows of random transitions, actions uniform in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    N, (Ta, Da) = buffer.n_envs, buffer.data["actions"].shape[2:]
    buffer.add(
        obs=torch.randn(T, N, OBS, generator=g),
        next_obs=torch.randn(T, N, OBS, generator=g),
        actions=torch.rand(T, N, Ta, Da, generator=g) * 2 - 1,
        rewards=torch.randn(T, N, generator=g),
        terminated=torch.rand(T, N, generator=g) < 0.2,
        truncated=torch.rand(T, N, generator=g) < 0.2,
    )


class QuadraticQ(nn.Module):
    """Q1 = Q2 = -||a - a*||^2 on the flattened executed chunk. Its one parameter (zero) only lets a critic
    loss on it back-propagate; no optimiser holds it."""

    def __init__(self, a_star: torch.Tensor):
        super().__init__()
        self.register_buffer("a_star", a_star.flatten())
        self.zero = nn.Parameter(torch.zeros(()))

    def forward(self, obs, actions):
        q = -((actions.reshape(len(actions), -1) - self.a_star) ** 2).sum(-1) + self.zero
        return q, q.clone()


def quadratic(actions: torch.Tensor, a_star: torch.Tensor) -> np.ndarray:
    """-||a - a*||^2 per row, in float64."""
    d = actions.double().reshape(len(actions), -1).numpy() - a_star.double().flatten().numpy()
    return -(d**2).sum(axis=1)


# ---------------------------------------------------------------------------------------------------- DIPO
A_STAR = torch.tensor([[0.3, -0.2], [0.5, 0.1]])  # maximiser of the quadratic Q over the 2 executed steps


def dipo(**algo) -> DIPO:
    method = build(DIPO, DIPOConfig(**{**SMALL, "n_critic_warmup_itr": 0, **algo}))
    method.critic = QuadraticQ(A_STAR)
    return method


def test_dipo_moves_sampled_buffer_actions_uphill_and_writes_back_only_those():
    method = dipo(action_lr=0.02, action_steps=5)
    fill(method.buffer, 32)
    before = method.buffer.data["actions"].clone().flatten(0, 1)  # (32, Ta, Da) by flat index
    written = []
    set_actions = method.buffer.set_actions

    def record(idx, actions):
        written.append((idx.clone(), actions.clone()))
        set_actions(idx, actions)

    method.buffer.set_actions = record
    torch.manual_seed(1)
    method.gradient_step(itr=0)

    assert len(written) == 1
    idx, moved = written[0]
    after = method.buffer.data["actions"].flatten(0, 1)
    old = before[idx]
    # Each moved chunk scores higher on Q, stays in [-1, 1], and keeps its unexecuted steps.
    q_old, q_new = quadratic(old[:, :2], A_STAR), quadratic(moved[:, :2], A_STAR)
    assert (q_new > q_old).all(), (q_old, q_new)
    assert moved.abs().max() <= 1.0
    torch.testing.assert_close(moved[:, 2:], old[:, 2:], rtol=0, atol=0)
    # Written back at the sampled indices, and nowhere else.
    torch.testing.assert_close(after[idx], moved, rtol=0, atol=0)
    untouched = torch.ones(len(before), dtype=torch.bool)
    untouched[idx] = False
    assert untouched.any()
    torch.testing.assert_close(after[untouched], before[untouched], rtol=0, atol=0)
    changed = set(torch.nonzero((after != before).flatten(1).any(1)).flatten().tolist())
    assert changed and changed <= set(idx.tolist())


def test_dipo_clamps_moved_actions_to_the_action_range():
    method = dipo(action_lr=0.5, action_steps=1)  # Adam's first step, lr x sign(grad) = 0.5, overshoots the edge
    a_star = torch.full((2, ACT), 0.95)
    method.critic = QuadraticQ(a_star)
    actions = torch.rand(16, HORIZON, ACT) * 2 - 1
    actions[:, :2] = 0.8
    moved = method.moved_actions(torch.randn(16, OBS), actions)
    assert moved.abs().max() <= 1.0
    assert (moved[:, :2] == 1.0).all()  # 0.8 + 0.5, clamped
    assert (quadratic(moved[:, :2], a_star) > quadratic(actions[:, :2], a_star)).all()
    torch.testing.assert_close(moved[:, 2:], actions[:, 2:], rtol=0, atol=0)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize(
    "eta, a_star, start, regime",
    [
        (0.3, A_STAR, A_STAR + 0.01 * torch.randn(4, 2, ACT, generator=torch.Generator().manual_seed(0)), "free"),
        (0.3, A_STAR, torch.rand(6, 2, ACT, generator=torch.Generator().manual_seed(1)) * 2 - 1, "norm clipped"),
        (2.0, torch.full((2, ACT), 0.95), torch.full((1, 2, ACT), 0.85), "leaves [-1, 1]"),
    ],
)
def test_dipo_action_step_by_hand(optimizer, eta, a_star, start, regime):
    method = dipo(action_optimizer=optimizer, action_lr=eta, action_steps=1)
    method.critic = QuadraticQ(a_star)
    B = len(start)
    actions = torch.cat([start, torch.zeros(B, HORIZON - 2, ACT)], dim=1)
    moved = method.moved_actions(torch.randn(B, OBS), actions)
    # grad_a of sum_b -||a_b - a*||^2 is 2 (a* - a); clipped to global norm 0.1 x act_dim x act_steps = 0.4,
    # as torch's clip_grad_norm_ scales: by max_norm / (norm + 1e-6) when that is below 1.
    a = start.double().reshape(B, -1).numpy()
    g = 2 * (a_star.double().flatten().numpy() - a)
    norm = np.sqrt((g**2).sum())
    coef = min(1.0, 0.4 / (norm + 1e-6))
    assert (coef < 0.99) == (regime == "norm clipped")
    g = coef * g
    # SGD (the paper's eq. A4): a + eta g. Adam's first step, bias-corrected: a + eta g / (|g| + eps), eps 1e-5.
    step = eta * g if optimizer == "sgd" else eta * g / (np.abs(g) + 1e-5)
    assert ((np.abs(a + step) > 1).any()) == (regime == "leaves [-1, 1]")
    expected = np.clip(a + step, -1, 1)
    np.testing.assert_allclose(moved[:, :2].reshape(B, -1).double().numpy(), expected, rtol=1e-5, atol=1e-6)
    assert (moved[:, 2:] == 0).all()


# ---------------------------------------------------------------------------------------------------- IDQL
@pytest.mark.parametrize("tau", [0.1, 0.5, 0.8, 0.9])
def test_expectile_loss_is_the_asymmetric_square(tau):
    diffs = [-2.0, -0.5, -1e-3, 0.0, 1e-3, 0.7, 3.0]
    got = expectile_loss(torch.tensor(diffs, dtype=torch.float64), tau).tolist()
    expected = [abs(tau - (1.0 if u < 0 else 0.0)) * u * u for u in diffs]
    assert got == pytest.approx(expected, rel=1e-6, abs=0)  # the weights tau, 1 - tau are float32


class CandidateQ(nn.Module):
    """Target critic for IDQL's candidates: each observation's candidates, in the order they reach the critic,
    get Q1 = q1[k], Q2 = q2[k] (k = 0, 1, ...). Candidates are i.i.d. samples, so which one gets which value
    does not matter; it records what it scored."""

    def __init__(self, q1: list[float], q2: list[float]):
        super().__init__()
        self.q1, self.q2 = torch.tensor(q1), torch.tensor(q2)

    def forward(self, obs, actions):
        _, group = torch.unique(obs, dim=0, return_inverse=True)
        order = torch.argsort(group, stable=True)  # rows grouped by observation, each group in arrival order
        counts = torch.bincount(group)
        k = torch.empty_like(group)
        k[order] = torch.arange(len(group)) - (counts.cumsum(0) - counts)[group[order]]
        self.obs, self.actions, self.k = obs.clone(), actions.clone(), k
        return self.q1[k], self.q2[k]

    def picked(self, obs: torch.Tensor, chosen: torch.Tensor) -> list[int]:
        """For each observation, the k of its candidate whose executed part `chosen` is."""
        scored = {(o.numpy().tobytes(), a.numpy().tobytes()): int(k) for o, a, k in zip(self.obs, self.actions, self.k)}
        return [scored[(o.numpy().tobytes(), a.contiguous().numpy().tobytes())] for o, a in zip(obs, chosen)]


class ConstantV(nn.Module):
    def __init__(self, v: float):
        super().__init__()
        self.v = v

    def forward(self, obs):
        return torch.full((len(obs),), self.v)


Q1, Q2 = [3.0, 0.0, 1.0, 5.0], [0.0, 2.0, 1.5, -1.0]  # min: [0, 0, 1, -1]; argmax of min 2, of Q1 3, of Q2 1


def idql(B: int, **algo) -> tuple[IDQL, torch.Tensor]:
    method = build(IDQL, IDQLConfig(**{**SMALL, "n_candidates": len(Q1), **algo}))
    method.target_q, method.critic_v = CandidateQ(Q1, Q2), ConstantV(0.25)
    return method, torch.randn(B, OBS, generator=torch.Generator().manual_seed(3))


def test_idql_evaluation_takes_the_candidate_with_the_largest_min_q():
    method, obs = idql(B=5)
    torch.manual_seed(0)
    actions, keep = method.act(obs, deterministic=True)
    assert keep == {} and actions.shape == (5, HORIZON, ACT)
    assert len(method.target_q.actions) == 5 * len(Q1)
    best = max(range(len(Q1)), key=lambda k: min(Q1[k], Q2[k]))
    assert best == 2
    assert method.target_q.picked(obs, actions[:, :2]) == [best] * 5


def chi_square(counts: list[int], probs: list[float]) -> float:
    n = sum(counts)
    return sum((c - n * p) ** 2 / (n * p) for c, p in zip(counts, probs))


CHI2_3DOF_P001 = 16.27  # chi-square quantile 0.999 at 3 degrees of freedom


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_idql_boltzmann_exploration_samples_softmax_of_advantage(temperature):
    method, obs = idql(B=3000, exploration="boltzmann", temperature=temperature)
    q = [min(a, b) for a, b in zip(Q1, Q2)]
    weights = [math.exp((x - 0.25) / temperature) for x in q]
    probs = [w / sum(weights) for w in weights]
    # selection_probs on its own, for (S, B) inputs
    got = method.selection_probs(torch.tensor(q)[:, None].repeat(1, 2), torch.full((len(q), 2), 0.25))
    np.testing.assert_allclose(got.numpy(), np.array([probs, probs]).T, rtol=1e-6)
    # and by sampling: 3000 independent selections
    torch.manual_seed(0)
    actions, keep = method.act(obs, deterministic=False)
    torch.testing.assert_close(keep["actions"], actions)
    picks = method.target_q.picked(obs, actions[:, :2])
    counts = [picks.count(k) for k in range(len(q))]
    assert chi_square(counts, probs) < CHI2_3DOF_P001, (counts, probs)


def test_idql_expectile_exploration_weights_tau_above_v_and_one_minus_tau_below():
    method, obs = idql(B=3000, exploration="expectile", exploration_tau=0.8)
    q = [min(a, b) for a, b in zip(Q1, Q2)]  # [0, 0, 1, -1], V = 0.25: only candidate 2 above V
    weights = [0.8 if x - 0.25 > 0 else 0.2 for x in q]
    probs = [w / sum(weights) for w in weights]
    assert probs == pytest.approx([0.2 / 1.4, 0.2 / 1.4, 0.8 / 1.4, 0.2 / 1.4])
    qs = torch.tensor([[0.0, 1.0], [0.0, -1.0], [1.0, 2.0], [-1.0, 0.0]])  # (S, B), a second column with other signs
    v = torch.tensor([[0.25, 0.9]]).expand(4, 2)
    w2 = [0.8 if x - 0.9 > 0 else 0.2 for x in qs[:, 1].tolist()]
    expected = np.array([probs, [w / sum(w2) for w in w2]]).T
    np.testing.assert_allclose(method.selection_probs(qs, v).numpy(), expected, rtol=1e-6)
    torch.manual_seed(0)
    actions, _ = method.act(obs, deterministic=False)
    picks = method.target_q.picked(obs, actions[:, :2])
    counts = [picks.count(k) for k in range(len(q))]
    assert chi_square(counts, probs) < CHI2_3DOF_P001, (counts, probs)


def test_idql_greedy_exploration_picks_the_argmax_in_training_too():
    method, obs = idql(B=4, exploration="greedy")
    torch.manual_seed(0)
    actions, _ = method.act(obs, deterministic=False)
    assert method.target_q.picked(obs, actions[:, :2]) == [2] * 4


# ---------------------------------------------------------------------------------------------------- DQL
class LinearQ(nn.Module):
    """Q_i(s, a) = <w_i, a> + c_i on the flattened executed chunk; two different heads. Records its inputs."""

    def __init__(self, w1, w2, c1=0.0, c2=0.0):
        super().__init__()
        self.register_buffer("w1", torch.as_tensor(w1, dtype=torch.float32).flatten())
        self.register_buffer("w2", torch.as_tensor(w2, dtype=torch.float32).flatten())
        self.c1, self.c2 = c1, c2

    def forward(self, obs, actions):
        self.actions = actions
        a = actions.reshape(len(actions), -1)
        return a @ self.w1 + self.c1, a @ self.w2 + self.c2


def hooked_outputs(network: nn.Module) -> tuple[list[torch.Tensor], torch.utils.hooks.RemovableHandle]:
    """Every output of `network`, in call order, with its gradient kept."""
    outs: list[torch.Tensor] = []

    def hook(module, inputs, out):
        if out.requires_grad:
            out.retain_grad()
        outs.append(out)

    return outs, network.register_forward_hook(hook)


@pytest.mark.parametrize("denoised_clip", [1.0, None])
def test_dql_q_term_gradient_reaches_the_first_denoising_step(denoised_clip):
    policy = tiny_policy(denoised_clip=denoised_clip)
    method = build(DQL, DQLConfig(**SMALL, alpha=1.0), policy=policy)
    w1 = torch.linspace(-1, 1, 4)
    method.critic = LinearQ(w1, -w1.flip(0), c1=2.0, c2=3.0)
    B, S = 128, policy.n_sampling_steps
    g = torch.Generator().manual_seed(4)
    b = {"obs": torch.randn(B, OBS, generator=g), "actions": torch.rand(B, HORIZON, ACT, generator=g) * 2 - 1}
    outs, handle = hooked_outputs(policy.network)
    torch.manual_seed(0)
    total, bc, q_term = method.actor_loss(b)
    handle.remove()
    assert len(outs) == S + 1  # S sampling positions, then the BC term's noise prediction

    # q_term is -Q_i / mean|Q_j| of one head over the other, at the chunks the actor sampled
    a = method.critic.actions.detach().reshape(B, -1).double()
    q1, q2 = a @ w1.double() + 2.0, a @ -w1.flip(0).double() + 3.0
    options = [(-q1.mean() / q2.abs().mean()).item(), (-q2.mean() / q1.abs().mean()).item()]
    assert min(abs(q_term.item() - o) for o in options) < 1e-5, (q_term.item(), options)
    assert total.item() == pytest.approx(bc.item() + q_term.item(), rel=1e-6)

    # The Q term alone moves the network, and its gradient reaches the noisiest (first) sampling step.
    policy.network.zero_grad(set_to_none=True)
    q_term.backward()
    grads = [p.grad for p in policy.network.parameters()]
    assert all(gr is not None for gr in grads) and sum(gr.abs().sum() for gr in grads) > 0
    first = outs[0].grad
    assert first is not None and first.abs().sum() > 0
    assert outs[S].grad is None  # the BC term's call is not on the Q term's path
    # With the reference clip (x0 in [-1, 1]) the first step's x0 = 103 x_K - ... is clamped for most entries,
    # which cuts their gradient; without it every entry gets one.
    if denoised_clip is None:
        assert (first != 0).all()


def test_dql_sampling_chain_gives_every_positions_network_a_gradient():
    policy = tiny_policy()
    method = build(DQL, DQLConfig(**SMALL), policy=policy)
    method.critic = LinearQ(torch.ones(4), torch.linspace(-1, 1, 4))
    copies = [copy.deepcopy(policy.network) for _ in range(policy.n_sampling_steps)]
    obs = torch.randn(128, OBS, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(0)
    actions, _ = policy.sample(obs, deterministic=False, min_std=0.1, networks=copies, grad=True)
    (-torch.min(*method.critic(obs, method.executed(actions))).mean()).backward()
    for i, net in enumerate(copies):
        assert sum(p.grad.abs().sum() for p in net.parameters()) > 0, f"sampling position {i} got no gradient"


# ---------------------------------------------------------------------------------------------------- QSM
class ConstantNet(nn.Module):
    """eps_theta(x, k, s) = a learnable constant chunk."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.value = nn.Parameter(value.clone())

    def forward(self, x, k, obs):
        return self.value.expand(len(x), *self.value.shape)


C = torch.tensor([[0.5, -1.0], [2.0, 0.25]])  # Q's gradient in the (2-step, executed) chunk


def qsm(eps: torch.Tensor, alpha: float = 0.3) -> QSM:
    policy = tiny_policy(horizon=2)
    policy.network = ConstantNet(eps)
    cfg = QSMConfig(**SMALL, alpha=alpha, actor_lr=0.01, actor_min_lr=0.01, n_critic_warmup_itr=0)
    method = build(QSM, cfg, horizon=2, act_steps=2, policy=policy)
    method.critic = LinearQ(C, C, c1=1.0, c2=-2.0)
    return method


def test_qsm_target_is_alpha_times_the_action_gradient():
    x = torch.randn(5, 2, ACT)
    obs = torch.randn(5, OBS)
    got = qsm_target(LinearQ(C, C, c1=1.0, c2=-2.0), obs, x, alpha=0.3)
    torch.testing.assert_close(got, (0.3 * C).expand(5, 2, ACT))
    # two heads with different gradients: their mean
    c2 = torch.tensor([[1.0, 1.0], [-2.0, 0.0]])
    got = qsm_target(LinearQ(C, c2), obs, x, alpha=2.0)
    torch.testing.assert_close(got, (2.0 * (C + c2) / 2).expand(5, 2, ACT))


def test_qsm_actor_loss_vanishes_exactly_at_eps_equal_minus_alpha_grad_q():
    alpha = 0.3
    b = {"obs": torch.randn(6, OBS), "actions": torch.rand(6, 2, ACT) * 2 - 1}
    loss, target = qsm(-alpha * C, alpha).actor_loss(b)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    torch.testing.assert_close(target, (alpha * C).expand(6, 2, ACT))
    for eps in (alpha * C, torch.zeros(2, ACT), -alpha * C + 0.1):
        loss, _ = qsm(eps, alpha).actor_loss(b)
        expected = ((-eps.double() - alpha * C.double()) ** 2).mean().item()
        assert loss.item() == pytest.approx(expected, rel=1e-6) and loss.item() > 0


def test_qsm_actor_step_moves_eps_toward_minus_alpha_grad_q():
    alpha, start = 0.3, torch.tensor([[1.0, -1.0], [0.0, 0.5]])
    method = qsm(start, alpha)
    b = {"obs": torch.randn(6, OBS), "actions": torch.rand(6, 2, ACT) * 2 - 1}
    goal = -alpha * C
    before = (method.policy.network.value.detach() - goal).abs()
    loss, _ = method.actor_loss(b)
    method.actor_step(loss, itr=0)
    after = (method.policy.network.value.detach() - goal).abs()
    assert (after < before).all(), (before, after)


# ---------------------------------------------------------------------------------------------------- DRWR / DAWR
def test_exp_weights_are_exp_of_beta_x_capped_at_max():
    xs = [-3.0, -0.1, 0.0, 0.2, 0.45, 0.5, 1.0, 4.0]
    for beta, cap in ((10.0, 100.0), (2.0, 3.0), (0.5, 1e6)):
        got = exp_weights(torch.tensor(xs, dtype=torch.float64), beta, cap).tolist()
        assert got == pytest.approx([min(math.exp(beta * x), cap) for x in xs], rel=1e-12)
    assert exp_weights(torch.tensor([1.0]), 10.0, 100.0).item() == 100.0  # e^10 > 100: clipped


def rollout_with(firsts: list[list[int]], terminated: list[list[int]], truncated: list[list[int]]) -> Rollout:
    """A Rollout from per-env lists of steps (T = 8) where each flag is set."""
    T, N = 8, len(firsts)

    def flags(per_env):
        out = torch.zeros(T, N, dtype=torch.bool)
        for e, steps in enumerate(per_env):
            out[steps, e] = True
        return out

    return Rollout(
        obs=torch.zeros(T, N, OBS),
        next_obs=torch.zeros(T, N, OBS),
        rewards=torch.arange(T * N, dtype=torch.float32).view(T, N),
        terminated=flags(terminated),
        truncated=flags(truncated),
        firsts=flags(firsts),
        kept={},
    )


def test_drwr_keeps_the_episodes_that_start_and_end_in_the_rollout_and_last_two_steps():
    rollout = rollout_with(
        firsts=[[0, 3, 7], [2, 3], [0], [0, 4, 6]],
        terminated=[[2], [1, 2], [], [3]],
        truncated=[[6], [7], [], [5, 7]],
    )
    # env 0: 0-2 (terminated), 3-6 (truncated); 7 starts one that does not end here
    # env 1: 0-1 started before the rollout; 2-2 lasts one step; 3-7 truncated at the last step
    # env 2: never ends; env 3: 0-3, 4-5, 6-7
    expected = [(0, 0, 2), (0, 3, 6), (1, 3, 7), (3, 0, 3), (3, 4, 5), (3, 6, 7)]
    assert sorted(complete_episodes(rollout)) == expected


def test_reward_to_go_is_the_discounted_sum_to_the_episode_end():
    rewards = torch.tensor([1.0, -2.0, 0.5, 3.0, 0.0, 1.5])
    gamma = 0.9
    got = reward_to_go(rewards, gamma).tolist()
    r = rewards.tolist()
    expected = [sum(gamma ** (j - t) * r[j] for j in range(t, len(r))) for t in range(len(r))]
    assert got == pytest.approx(expected, rel=1e-12)


def td_lambda_brute_force(values, next_values, rewards, terminated, cut, gamma, lam, alpha):
    """target_i = V_i + sum_{j >= i} alpha delta_j (gamma lam)^(j - i) prod_{i <= m < j} (1 - cut_m), with
    delta_j = r_j + gamma (1 - term_j) V'_j - V_j: the recursion unrolled, per env, in float64."""
    T, N = values.shape
    out = np.zeros((T, N))
    for e in range(N):
        for i in range(T):
            total, alive = 0.0, 1.0
            for j in range(i, T):
                delta = rewards[j, e] + gamma * (1 - terminated[j, e]) * next_values[j, e] - values[j, e]
                total += alpha * delta * (gamma * lam) ** (j - i) * alive
                alive *= 1 - cut[j, e]
            out[i, e] = values[i, e] + total
    return out


def test_td_lambda_targets_match_the_unrolled_recursion():
    rng = np.random.default_rng(0)
    T, N = 7, 3
    values, next_values, rewards = rng.normal(size=(T, N)), rng.normal(size=(T, N)), rng.normal(size=(T, N))
    terminated = np.zeros((T, N), dtype=bool)
    terminated[3, 0] = terminated[1, 2] = terminated[6, 1] = True  # mid-rollout, and at the last row
    truncated = np.zeros((T, N), dtype=bool)
    truncated[4, 1] = True
    t = lambda x: torch.as_tensor(x, dtype=torch.float64)  # noqa: E731
    for cut in (terminated, terminated | truncated):
        got = td_lambda_targets(
            t(values), t(next_values), t(rewards), torch.as_tensor(terminated), torch.as_tensor(cut), 0.9, 0.8, 0.7
        )
        expected = td_lambda_brute_force(values, next_values, rewards, terminated, cut, 0.9, 0.8, 0.7)
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-7, atol=1e-7)  # its 0/1 flags are float32


class FirstCoordinateV(nn.Module):
    def forward(self, obs):
        return obs[:, 0].clone()


def reference_td_values(rewards, terminateds, state_values, gamma, alpha, lam):
    """irom-princeton/dppo train_awr_diffusion_agent.py `td_values`, transcribed for one env's rows."""
    n = len(rewards)
    tds = np.zeros(n)
    next_value = 0.0 if terminateds[-1] else state_values[-1]
    val = 0.0
    for i in range(n - 1, -1, -1):
        if i < n - 1:
            next_value = state_values[i + 1] * (1 - terminateds[i])
        error = rewards[i] + gamma * next_value - state_values[i]
        val = alpha * error + gamma * lam * (1 - terminateds[i]) * val
        tds[i] = val + state_values[i]
    return tds


@pytest.mark.parametrize("td_targets", ["reference", "episodic"])
def test_dawr_targets_over_the_wrapped_buffer(td_targets):
    policy = tiny_policy()
    ctx = MethodContext(
        policy, torch.device("cpu"), TaskInfo("t", OBS, ACT, HORIZON, 2, 10), TrainingBudget(1, n_envs=2, n_steps=4)
    )
    cfg = DAWRConfig(critic_hidden=[8, 8, 8], batch_size=4, buffer_size=12, td_targets=td_targets)
    method = DAWR(cfg, ctx)
    method.critic = FirstCoordinateV()
    fill(method.buffer, 9, seed=6)  # 6 rows kept of 9: wrapped
    held = method.buffer.in_time_order()
    td, values = method.targets(held)
    g, lam, alpha = cfg.gamma, cfg.lam, cfg.td_alpha
    V = held["obs"][..., 0].double().numpy()
    r, term = held["rewards"].double().numpy(), held["terminated"].numpy()
    if td_targets == "reference":
        expected = np.stack([reference_td_values(r[:, e], term[:, e], V[:, e], g, alpha, lam) for e in range(2)], 1)
    else:
        nxt = held["next_obs"][..., 0].double().numpy()
        expected = td_lambda_brute_force(V, nxt, r, term, term | held["truncated"].numpy(), g, lam, alpha)
    assert term.any()
    np.testing.assert_allclose(values.view(6, 2).double().numpy(), V, rtol=1e-6)
    np.testing.assert_allclose(td.view(6, 2).double().numpy(), expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------- double Q
def test_bellman_target_bootstraps_truncation_but_not_termination():
    rewards = torch.tensor([1.0, 1.0, 1.0, 1.0])
    terminated = torch.tensor([False, True, False, True])  # the third is truncated: still bootstraps
    next_value = torch.tensor([2.0, 2.0, 5.0, -3.0])
    got = bellman_target(rewards, terminated, 0.9, next_value).tolist()
    assert got == pytest.approx([1 + 0.9 * 2.0, 1.0, 1 + 0.9 * 5.0, 1.0])


class ObsQ(nn.Module):
    """Q heads that read only the observation: q1 = s_0 * m1, q2 = s_1 * m2."""

    def __init__(self, m1: float, m2: float):
        super().__init__()
        self.m1, self.m2 = m1, m2

    def forward(self, obs, actions):
        return obs[:, 0] * self.m1, obs[:, 1] * self.m2


@pytest.mark.parametrize(
    "method_cls, cfg_cls, horizon",
    [(DQL, DQLConfig, HORIZON), (DIPO, DIPOConfig, HORIZON), (QSM, QSMConfig, 2)],
)
def test_critic_loss_regresses_both_heads_on_the_min_of_the_target_heads(method_cls, cfg_cls, horizon):
    method = build(method_cls, cfg_cls(**SMALL, gamma=0.8), horizon=horizon, act_steps=2)
    method.critic, method.critic_target = ObsQ(1.0, -1.0), ObsQ(2.0, 3.0)
    B = 6
    g = torch.Generator().manual_seed(7)
    b = {
        "obs": torch.randn(B, OBS, generator=g),
        "next_obs": torch.randn(B, OBS, generator=g),
        "actions": torch.rand(B, horizon, ACT, generator=g) * 2 - 1,
        "rewards": torch.randn(B, generator=g),
        "terminated": torch.tensor([False, True, False, False, True, False]),
        "truncated": torch.tensor([False, False, True, False, False, True]),
    }
    loss, q = method.critic_loss(b)
    s, s2 = b["obs"].double().numpy(), b["next_obs"].double().numpy()
    t1, t2 = 2.0 * s2[:, 0], 3.0 * s2[:, 1]
    assert (t1 < t2).any() and (t1 > t2).any()  # min picks each head somewhere
    y = [
        b["rewards"][i].item() + (0.0 if b["terminated"][i] else 0.8 * min(t1[i], t2[i]))  # truncation bootstraps
        for i in range(B)
    ]
    q1, q2 = s[:, 0], -s[:, 1]
    expected = np.mean((q1 - y) ** 2) + np.mean((q2 - y) ** 2)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    with_max = b["rewards"].double().numpy() + 0.8 * ~b["terminated"].numpy() * np.maximum(t1, t2)
    assert abs(np.mean((q1 - with_max) ** 2) + np.mean((q2 - with_max) ** 2) - expected) > 1e-3
    np.testing.assert_allclose(q.numpy(), q1, rtol=1e-6)


# ---------------------------------------------------------------------------------------------------- replay
def rows(buffer: ReplayBuffer, start: int, T: int) -> None:
    """T rows whose every field encodes its row number start..start+T-1 (env e adds e / 10)."""
    N = buffer.n_envs
    ids = torch.arange(start, start + T, dtype=torch.float32)[:, None] + torch.arange(N) / 10  # (T, N)
    buffer.add(
        obs=ids[..., None].expand(T, N, OBS).clone(),
        next_obs=ids[..., None].expand(T, N, OBS).clone() + 0.5,
        actions=ids[..., None, None].expand(T, N, HORIZON, ACT).clone(),
        rewards=ids.clone(),
        terminated=(ids.long() % 3 == 0),
        truncated=(ids.long() % 4 == 0),
    )


def test_replay_buffer_ring_keeps_the_newest_rows_in_time_order():
    buffer = ReplayBuffer(10, 2, OBS, HORIZON, ACT, "cpu")  # 5 rows of 2 envs
    rows(buffer, 0, 3)
    assert len(buffer) == 6
    np.testing.assert_allclose(buffer.in_time_order()["rewards"][:, 0].numpy(), [0, 1, 2])
    rows(buffer, 3, 4)  # 7 rows written: rows 2..6 remain
    assert len(buffer) == 10
    held = buffer.in_time_order()
    np.testing.assert_allclose(held["rewards"].numpy(), [[r, r + 0.1] for r in range(2, 7)], rtol=1e-6)
    for k in ("obs", "next_obs", "actions"):  # every field kept in step with the rewards
        torch.testing.assert_close(held[k].flatten(2)[..., 0], held["rewards"] + (0.5 if k == "next_obs" else 0))
    assert held["terminated"][:, 0].tolist() == [r % 3 == 0 for r in range(2, 7)]
    assert held["truncated"][:, 0].tolist() == [r % 4 == 0 for r in range(2, 7)]
    rows(buffer, 7, 12)  # more rows at once than fit: the last 5 of them
    np.testing.assert_allclose(buffer.in_time_order()["rewards"][:, 1].numpy(), np.arange(14, 19) + 0.1, rtol=1e-6)
    # flat indices (what sample_indices returns) address row-major (row, env) transitions
    flat = buffer.get(torch.arange(10))["rewards"]
    torch.testing.assert_close(flat, buffer.data["rewards"].reshape(-1))


@pytest.mark.parametrize("T", [3, 8])  # partly filled, and wrapped
def test_replay_buffer_state_round_trips_and_samples_the_same(T):
    a = ReplayBuffer(10, 2, OBS, HORIZON, ACT, "cpu")
    rows(a, 0, T)
    b = ReplayBuffer(10, 2, OBS, HORIZON, ACT, "cpu")
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    assert len(b) == len(a) and b.next_row == a.next_row
    for k in a.data:
        torch.testing.assert_close(b.in_time_order()[k], a.in_time_order()[k], rtol=0, atol=0)
    torch.manual_seed(0)
    ia = a.sample_indices(32)
    torch.manual_seed(0)
    ib = b.sample_indices(32)
    for k, v in a.get(ia).items():
        torch.testing.assert_close(b.get(ib)[k], v, rtol=0, atol=0)
    rows(a, 100, 2), rows(b, 100, 2)  # writing goes on where it left off
    for k in a.data:
        torch.testing.assert_close(b.in_time_order()[k], a.in_time_order()[k], rtol=0, atol=0)


@pytest.mark.parametrize("capacity, n_envs", [(12, 2), (10, 1)])
def test_replay_buffer_refuses_a_state_of_another_shape(capacity, n_envs):
    a = ReplayBuffer(10, 2, OBS, HORIZON, ACT, "cpu")
    rows(a, 0, 3)
    with pytest.raises(ValueError, match="buffer_size"):
        ReplayBuffer(capacity, n_envs, OBS, HORIZON, ACT, "cpu").load_state_dict(a.state_dict())


# ---------------------------------------------------------------------------------------------------- bad input
def test_a_buffer_smaller_than_a_batch_is_refused_naming_both(tmp_path):
    cfg = build_config({"method": "dipo", "task": "avoid_m2", "algo.buffer_size": 10, "algo.batch_size": 20})
    with pytest.raises(ValueError, match=r"algo\.buffer_size=10 .*algo\.batch_size=20"):
        DIPO.check_config(cfg.algo)
    cfg = build_config(
        {
            "method": "idql",
            "task": "avoid_m2",
            "algo.buffer_size": 10,
            "algo.batch_size": 20,
            "results_dir": str(tmp_path),
        }
    )
    with pytest.raises(ConfigError, match=r"algo\.buffer_size=10 .*algo\.batch_size=20"):
        run(cfg)
    assert not any(tmp_path.iterdir())  # refused before the run directory was written


@pytest.mark.parametrize("value", [0, -1])
@pytest.mark.parametrize("method", ["dipo", "idql", "dawr"])
def test_a_replay_ratio_that_is_not_positive_is_refused(method, value):
    with pytest.raises(ConfigError, match=rf"algo\.replay_ratio={float(value)} is out of range: it must be > 0"):
        build_config({"method": method, "task": "avoid_m2", "algo.replay_ratio": value})


def test_an_unknown_exploration_is_refused(tmp_path):
    cfg = build_config({"method": "idql", "task": "avoid_m2", "algo.exploration": "softmax"})
    choices = r"algo\.exploration must be one of expectile, boltzmann, greedy, got 'softmax'"
    with pytest.raises(ValueError, match=choices):
        IDQL.check_config(cfg.algo)
    with pytest.raises(ValueError, match=r"algo\.exploration"):
        build(IDQL, IDQLConfig(**SMALL, exploration="softmax"))
    cfg = build_config(
        {"method": "idql", "task": "avoid_m2", "algo.exploration": "softmax", "results_dir": str(tmp_path)}
    )
    with pytest.raises(ConfigError, match=r"algo\.exploration must be one of"):
        run(cfg)
    assert not any(tmp_path.iterdir())
