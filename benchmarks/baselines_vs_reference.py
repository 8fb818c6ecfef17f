"""The six diffusion-RL baselines against the official implementation's, on identical weights, batches and draws.

Usage:
    python benchmarks/baselines_vs_reference.py --reference /path/to/dppo [--seed 0] [--json OUT]

`--reference` is a checkout of irom-princeton/dppo. Its `model.*` and the module-level `td_values` of
agent/finetune/train_awr_diffusion_agent.py are imported from there; the agent module imports hydra,
omegaconf and wandb, which only its `TrainAgent` uses at run time, so whichever of them is not installed is
stubbed. Nothing of the reference is copied here.

Setting: the Hopper configs (cfg/gym/finetune/hopper-v2/ft_{rwr,awr,dipo,idql,dql,qsm}_diffusion_mlp.yaml)
at small sizes: obs 11, act 3, horizon 4 = act_steps 4, K = 20 DDPM steps on the cosine schedule, the
denoised x0 clipped to 1 and the sampling noise to 3, min sampling std 0.1; actor DiffusionMLP [64, 64, 64]
residual ReLU; critics [64, 64, 64] Mish, V residual, Q plain (the reference's `CriticObsAct` drops the
configs' `residual_style`). Our methods run their default configs, except for sizes: batch 64, a buffer of
one iteration, and a replay ratio giving one gradient step (DAWR: four actor steps and one critic step).

For each method the reference model is built and initialised by the reference, and ours gets copies of its
weights: actor, critics, and target networks, the targets first moved off the online networks so that using
one in place of the other shows. One synthetic iteration (32 steps of 4 envs, with terminations,
truncations and episodes crossing the iteration's ends) goes through our `update()` as the trainer calls it,
and through the reference agent's update for one batch: `run()`'s loop body, reproduced here since it is not
a function (each function below names the file and lines), calling the reference model's own losses.

Both sides see the same batch indices and the same random draws: the reference's torch draws (randn,
randn_like, randint, multinomial) are recorded and replayed to ours, in order per kind, each checked to be
the same request (shape, range), so a different draw count, shape or index range is reported; the
reference's numpy draws (batch indices, DRWR's shuffle, DQL's coin flip) are chosen here and given to both.

Compared, to float tolerance: the noise schedule (then ours is given the reference's float32 rounding of it,
see `share_schedule`), acting (chunks sampled in training and in evaluation; IDQL's selection
probabilities), every loss an optimiser steps on, the critic targets, the gradient of each loss with respect
to every parameter its optimiser steps (the largest relative difference over parameter tensors), the
weights after the step and the target networks after their soft update.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(REPO))
from reference_impl import add_reference, check_imported_from, copy_parameters  # noqa: E402

from methods.base import Method, MethodContext, Rollout, TaskInfo, TrainingBudget  # noqa: E402
from methods.dawr import DAWR, DAWRConfig  # noqa: E402
from methods.dipo import DIPO, DIPOConfig  # noqa: E402
from methods.dql import DQL, DQLConfig  # noqa: E402
from methods.drwr import DRWR, DRWRConfig  # noqa: E402
from methods.idql import IDQL, IDQLConfig  # noqa: E402
from methods.policies.diffusion import DiffusionPolicy, DiffusionPolicyConfig  # noqa: E402
from methods.qsm import QSM, QSMConfig  # noqa: E402

Tensor = torch.Tensor

OBS_DIM, ACT_DIM, HORIZON, ACT_STEPS, K = 11, 3, 4, 4, 20
N_STEPS, N_ENVS, BATCH = 32, 4, 64
N_TRANSITIONS = N_STEPS * N_ENVS
ACTOR_DIMS, CRITIC_DIMS = [64, 64, 64], [64, 64, 64]
GAMMA, SCALE_REWARD = 0.99, 0.01  # the Hopper configs' gamma and scale_reward_factor
ACTOR_LR, CRITIC_LR = 1e-4, 1e-3  # the Hopper configs' (constant) learning rates
ITR = 10  # an iteration past every method's critic warm-up (n_critic_warmup_itr <= 5)
ONE_STEP = BATCH / N_TRANSITIONS  # replay_ratio for int(T N / batch * ratio) = 1 gradient step
N_ACTING = 8  # observations acted on
RTOL, ATOL = 1e-4, 1e-6
IMPORT_TIME_ONLY = ("hydra", "omegaconf", "wandb")  # the reference agents' imports that only TrainAgent uses

# Where each env's episodes end in the synthetic iteration, (step, how): an episode of one step (env 1,
# which the RWR agent skips), episodes cut by the iteration's start (env 2 continues one) and end (envs 1, 3).
EPISODE_ENDS = {
    0: [(9, "terminated"), (20, "truncated"), (31, "terminated")],
    1: [(0, "terminated"), (15, "truncated"), (27, "terminated")],
    2: [(5, "truncated"), (18, "terminated"), (30, "truncated")],
    3: [(12, "terminated"), (25, "truncated")],
}
STARTS_AT_ZERO = [True, True, False, True]  # env 2 is mid-episode when the iteration starts


# ------------------------------------------------------------------------------------------ comparing
@dataclass
class Row:
    method: str
    quantity: str
    max_abs: float
    max_rel: float
    ok: bool


def as_tensors(x: Tensor | Sequence[Tensor]) -> list[Tensor]:
    return [x] if isinstance(x, Tensor) else list(x)


def compare(method: str, quantity: str, ref: Tensor | Sequence[Tensor], ours: Tensor | Sequence[Tensor]) -> Row:
    """Max |ref - ours| over all tensors, and over tensors the largest max |ref - ours| / max |ref|; it agrees
    when every tensor does to ATOL + RTOL * max |ref| (each parameter tensor on its own scale)."""
    refs, ourss = as_tensors(ref), as_tensors(ours)
    if len(refs) != len(ourss):
        return Row(method, f"{quantity} ({len(refs)} tensors vs {len(ourss)})", math.inf, math.inf, False)
    worst_abs, worst_rel, ok = 0.0, 0.0, True
    for a, b in zip(refs, ourss):
        if a.shape != b.shape:
            return Row(method, f"{quantity} (shapes {tuple(a.shape)} vs {tuple(b.shape)})", math.inf, math.inf, False)
        if not a.numel():
            continue
        a, b = a.detach().double(), b.detach().double()
        diff, scale = (a - b).abs().max().item(), a.abs().max().item()
        worst_abs = max(worst_abs, diff)
        worst_rel = max(worst_rel, diff / scale if scale > 0 else (0.0 if diff == 0 else math.inf))
        ok = ok and diff <= ATOL + RTOL * scale
    return Row(method, quantity, worst_abs, worst_rel, ok)


def params(module: nn.Module) -> list[Tensor]:
    return list(module.parameters())


def detached(x: Any) -> Any:
    if isinstance(x, Tensor):
        return x.detach().clone()
    if isinstance(x, (tuple, list)):
        return type(x)(detached(v) for v in x)
    return x


# ------------------------------------------------------------------------------------------ shared draws
DRAW_KINDS = ("randn", "randn_like", "randint", "randperm", "rand", "multinomial")


class DrawMismatch(AssertionError):
    """Our code asked for a random draw the reference did not make (or made one it did not)."""


def shape_of(args: tuple[Any, ...]) -> tuple[int, ...]:
    if len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size)):
        return tuple(args[0])
    return tuple(args)


def request(kind: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """What a call asks for, which ours must ask for too: a shape, and randint's range, randperm's n."""
    if kind == "randn_like":
        return tuple(args[0].shape)
    if kind == "randint":  # randint(high, size) or randint(low, high, size)
        low, high, size = (0, *args) if len(args) == 2 else args[:3]
        return (int(low), int(high), tuple(size))
    if kind == "randperm":
        return (int(args[0]),)
    if kind == "multinomial":
        return (tuple(args[0].shape), int(args[1]))
    return shape_of(args)


@dataclass
class Draw:
    value: Tensor
    request: tuple[Any, ...]
    probabilities: Tensor | None = None  # multinomial: what it drew from


@dataclass
class Draws:
    """torch draws recorded from the reference, replayed to ours in order per kind (a kind's order must match,
    not the interleaving of kinds: QSM draws its noise before its step index in the reference, after it in ours)."""

    queues: dict[str, list[Draw]] = field(default_factory=lambda: {k: [] for k in DRAW_KINDS})
    our_probabilities: list[Tensor] = field(default_factory=list)

    def add(self, kind: str, value: Tensor | np.ndarray | float, request: tuple[Any, ...]) -> None:
        """A draw the reference makes with numpy, given to ours as the torch draw it makes instead."""
        self.queues[kind].append(Draw(torch.as_tensor(value).clone(), request))

    @contextmanager
    def recording(self) -> Iterator[None]:
        def recorder(kind: str, original: Callable[..., Tensor]) -> Callable[..., Tensor]:
            def draw(*args: Any, **kwargs: Any) -> Tensor:
                out = original(*args, **kwargs)
                probs = args[0].detach().clone() if kind == "multinomial" else None
                self.queues[kind].append(Draw(out.detach().clone(), request(kind, args), probs))
                return out

            return draw

        with ExitStack() as stack:
            for kind in DRAW_KINDS:
                stack.enter_context(mock.patch.object(torch, kind, recorder(kind, getattr(torch, kind))))
            yield

    @contextmanager
    def replaying(self) -> Iterator[None]:
        queues = {k: list(q) for k, q in self.queues.items()}

        def replayer(kind: str) -> Callable[..., Tensor]:
            def draw(*args: Any, **kwargs: Any) -> Tensor:
                want = request(kind, args)
                if not queues[kind]:
                    raise DrawMismatch(f"ours draws torch.{kind}{want} where the reference drew no more")
                d = queues[kind].pop(0)
                if d.request != want:
                    raise DrawMismatch(f"ours draws torch.{kind}{want} where the reference drew {d.request}")
                if kind == "multinomial":
                    self.our_probabilities.append(args[0].detach().clone())
                return d.value.clone()

            return draw

        with ExitStack() as stack:
            for kind in DRAW_KINDS:
                stack.enter_context(mock.patch.object(torch, kind, replayer(kind)))
            yield
        left = {k: len(q) for k, q in queues.items() if q}
        if left:
            raise DrawMismatch(f"ours made fewer draws than the reference: {left} left over")

    def reference_probabilities(self) -> list[Tensor]:
        return [d.probabilities for d in self.queues["multinomial"] if d.probabilities is not None]


# ------------------------------------------------------------------------------------------ losses, gradients
@dataclass
class Trace:
    """Each optimiser step's loss and that loss's gradient w.r.t. the parameters the optimiser steps, by name."""

    losses: dict[str, list[Tensor]] = field(default_factory=dict)
    grads: dict[str, list[Tensor]] = field(default_factory=dict)  # the steps' gradients, concatenated

    def record(self, name: str, loss: Tensor, parameters: Sequence[Tensor]) -> None:
        grads = torch.autograd.grad(loss, list(parameters), retain_graph=True, allow_unused=True)
        self.losses.setdefault(name, []).append(loss.detach().clone())
        self.grads.setdefault(name, []).extend(
            torch.zeros_like(p) if g is None else g.detach().clone() for p, g in zip(parameters, grads)
        )

    def rows(self, method: str, ours: Trace, name: str, label: str, ref_name: str | None = None) -> list[Row]:
        ref_name = ref_name or name
        steps = len(self.losses[ref_name])
        label += f" ({steps} steps)" if steps > 1 else ""
        return [
            compare(method, f"{label}: loss", self.losses[ref_name], ours.losses.get(name, [])),
            compare(
                method,
                f"{label}: gradients ({len(self.grads[ref_name]) // steps} tensors)",
                self.grads[ref_name],
                ours.grads.get(name, []),
            ),
        ]


def optimiser_params(optimizer: torch.optim.Optimizer) -> list[Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def agent_step(trace: Trace, name: str, optimizer: torch.optim.Optimizer, loss: Tensor) -> None:
    """The reference agents' `optimizer.zero_grad(); loss.backward(); optimizer.step()` (max_grad_norm is None
    in the Hopper configs), recording the loss and its gradients first."""
    trace.record(name, loss, optimiser_params(optimizer))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def adamw(module: nn.Module, lr: float) -> torch.optim.AdamW:
    """The reference agents' optimisers: AdamW at the config's lr, weight decay 0 (e.g. train_dipo L38-57)."""
    return torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=0)


def method_modules(method: Method) -> list[types.ModuleType]:
    """The modules of our method's class and its bases: where the functions it calls are bound."""
    names = dict.fromkeys(c.__module__ for c in type(method).__mro__ if c.__module__.startswith("methods."))
    return [sys.modules[n] for n in names]


@contextmanager
def tracing(method: Method, trace: Trace) -> Iterator[None]:
    """Record every optimiser step of ours: `step(optimizer, loss)` (methods/diffusion_rl.py, wherever the
    method's modules call it) and the method's `actor_step`."""
    names = {id(o): k for k, o in getattr(method, "optimizers", {}).items()}
    with ExitStack() as stack:
        for module in method_modules(method):
            if hasattr(module, "step"):
                stack.enter_context(mock.patch.object(module, "step", traced_step(module.step, names, trace)))
        original_actor_step = method.actor_step

        def traced_actor_step(loss: Tensor, itr: int) -> None:
            trace.record("actor", loss, params(method.policy.network))
            original_actor_step(loss, itr)

        stack.enter_context(mock.patch.object(method, "actor_step", traced_actor_step))
        yield


@contextmanager
def calls_of(owners: Any, name: str) -> Iterator[list[tuple[tuple[Any, ...], Any]]]:
    """(args, result) of every call of `name` through any of `owners` that has it (modules whose function it is or
    that imported it, or an object whose method it is), in call order."""
    seen: list[tuple[tuple[Any, ...], Any]] = []

    def recorder(original: Callable[..., Any]) -> Callable[..., Any]:
        def recorded(*args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            seen.append((detached(args), detached(out)))
            return out

        return recorded

    having = [o for o in (owners if isinstance(owners, list) else [owners]) if hasattr(o, name)]
    if not having:
        raise AttributeError(f"none of {owners} has {name}")
    with ExitStack() as stack:
        for owner in having:
            stack.enter_context(mock.patch.object(owner, name, recorder(getattr(owner, name))))
        yield seen


@contextmanager
def outputs_of(module: nn.Module) -> Iterator[list[Any]]:
    """The output of every forward call of `module`."""
    seen: list[Any] = []
    handle = module.register_forward_hook(lambda _m, _args, out: seen.append(detached(out)))
    try:
        yield seen
    finally:
        handle.remove()


def traced_step(original: Callable[..., None], names: dict[int, str], trace: Trace) -> Callable[..., None]:
    def step(optimizer: torch.optim.Optimizer, loss: Tensor) -> None:
        trace.record(names[id(optimizer)], loss, optimiser_params(optimizer))
        original(optimizer, loss)

    return step


# ------------------------------------------------------------------------------------------ building
def reference_kwargs() -> dict[str, Any]:
    """The Hopper configs' diffusion settings; denoised_clip_value (1.0) and final_action_clip_value (None)
    are the reference's defaults, which those configs keep."""
    return {
        "horizon_steps": HORIZON,
        "obs_dim": OBS_DIM,
        "action_dim": ACT_DIM,
        "device": "cpu",
        "denoising_steps": K,
        "randn_clip_value": 3,
        "min_sampling_denoising_std": 0.1,
    }


def reference_actor() -> nn.Module:
    from model.diffusion.mlp_diffusion import DiffusionMLP

    return DiffusionMLP(
        action_dim=ACT_DIM,
        horizon_steps=HORIZON,
        cond_dim=OBS_DIM,
        time_dim=16,
        mlp_dims=list(ACTOR_DIMS),
        activation_type="ReLU",
        residual_style=True,
    )


def reference_q() -> nn.Module:
    from model.common.critic import CriticObsAct

    # residual_style as the configs pass it: CriticObsAct's keyword is `residual_tyle`, so this is dropped
    return CriticObsAct(
        cond_dim=OBS_DIM,
        mlp_dims=list(CRITIC_DIMS),
        action_dim=ACT_DIM,
        action_steps=ACT_STEPS,
        activation_type="Mish",
        residual_style=True,
    )


def reference_v() -> nn.Module:
    from model.common.critic import CriticObs

    return CriticObs(cond_dim=OBS_DIM, mlp_dims=list(CRITIC_DIMS), activation_type="Mish", residual_style=True)


def our_policy(actor: nn.Module) -> DiffusionPolicy:
    cfg = DiffusionPolicyConfig(
        denoising_steps=K,
        hidden=list(ACTOR_DIMS),
        time_dim=16,
        activation="relu",
        residual=True,
        denoised_clip=1.0,
        randn_clip=3.0,
        final_action_clip=None,
    )
    policy = DiffusionPolicy(OBS_DIM, ACT_DIM, HORIZON, cfg)
    copy_parameters(actor, policy.network)
    return policy


def context(actor: nn.Module) -> MethodContext:
    task = TaskInfo("hopper-sized", OBS_DIM, ACT_DIM, HORIZON, ACT_STEPS, 1000)
    budget = TrainingBudget(n_iterations=1, n_envs=N_ENVS, n_steps=N_STEPS)
    return MethodContext(our_policy(actor), torch.device("cpu"), task, budget)


def off_policy_sizes(replay_ratio: float = ONE_STEP) -> dict[str, Any]:
    return {
        "batch_size": BATCH,
        "buffer_size": N_TRANSITIONS,
        "replay_ratio": replay_ratio,
        "critic_hidden": list(CRITIC_DIMS),
    }


def move_off(module: nn.Module, gen: torch.Generator, scale: float = 0.02) -> None:
    """Move a target network's weights off its online network's (as after some updates)."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))


# Our policy's DDPM coefficients (per sampling position i = 0..K-1, the noisiest first) and the reference's (per
# step t = K-1-i): ours are computed in float64 and rounded once, the reference's in float32.
SCHEDULE = {
    "sqrt_recip_abar": "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_abar": "sqrt_recipm1_alphas_cumprod",
    "mu_c1": "ddpm_mu_coef1",
    "mu_c2": "ddpm_mu_coef2",
}
FORWARD_SCHEDULE = {"sqrt_abar": "sqrt_alphas_cumprod", "sqrt_one_minus_abar": "sqrt_one_minus_alphas_cumprod"}


def reference_schedule(model: nn.Module) -> dict[str, Tensor]:
    """The reference's coefficients under our names; the std as its sampler takes it, exp(logvar / 2)."""
    out = {ours: getattr(model, theirs).flip(0) for ours, theirs in SCHEDULE.items()}
    out |= {ours: getattr(model, theirs) for ours, theirs in FORWARD_SCHEDULE.items()}
    return out | {"ddpm_sigma": torch.exp(0.5 * model.ddpm_logvar_clipped).flip(0)}


def share_schedule(method: str, model: nn.Module, policy: DiffusionPolicy) -> Row:
    """Compare our noise schedule with the reference's, then give ours the reference's float32 rounding of it.

    The two differ by up to 6.5e-6 relative (the reference's float32 cumulative product of alphas is least exact
    at the noisiest step), and a sampling chain turns that into differences of about 4e-6 that, where an x0 lands
    on the denoised clip or a pre-activation on a ReLU's kink, switch a gradient path on or off on one side only
    (up to 5e-4 relative in DQL's gradients through the chain, over 25 seeds).
    The schedule is compared here; everything after runs on the same coefficients.
    """
    theirs = reference_schedule(model)
    row = compare(
        method,
        f"noise schedule ({len(theirs)} coefficient arrays)",
        list(theirs.values()),
        [getattr(policy, name) for name in theirs],
    )
    with torch.no_grad():
        for name, value in theirs.items():
            getattr(policy, name).copy_(value)
    return row


# ------------------------------------------------------------------------------------------ data
@dataclass
class Data:
    """One iteration of N_STEPS steps of N_ENVS envs."""

    obs: Tensor  # (T, N, Do)
    next_obs: Tensor  # (T, N, Do): the true final observation where an episode ended
    actions: Tensor  # (T, N, Ta, Da)
    rewards: Tensor  # (T, N), unscaled
    terminated: Tensor  # (T, N) bool
    truncated: Tensor  # (T, N) bool
    firsts: Tensor  # (T, N) bool

    def rollout(self) -> Rollout:
        kept = {"actions": self.actions}
        return Rollout(self.obs, self.next_obs, self.rewards, self.terminated, self.truncated, self.firsts, kept)

    def flat(self, name: str) -> Tensor:
        return getattr(self, name).flatten(0, 1)

    def ours(self, idx: np.ndarray) -> dict[str, Tensor]:
        """Transitions `idx` (flat, step-major) as our replay buffer returns them."""
        batch = {k: self.flat(k)[idx] for k in ("obs", "next_obs", "actions", "terminated", "truncated")}
        return {**batch, "rewards": self.flat("rewards")[idx] * SCALE_REWARD}

    def reference(self, idx: np.ndarray) -> dict[str, Any]:
        """Transitions `idx` as the reference agents build a batch from their buffers (e.g. train_dql L224-230):
        observations as {"state": (B, 1, Do)}, rewards scaled in float64 then cast, `terminated` as float."""
        rewards = (self.flat("rewards").double().numpy() * SCALE_REWARD)[idx]
        return {
            "obs": {"state": self.flat("obs")[idx][:, None]},
            "next_obs": {"state": self.flat("next_obs")[idx][:, None]},
            "actions": self.flat("actions")[idx],
            "rewards": torch.from_numpy(rewards).float(),
            "terminated": self.flat("terminated")[idx].float(),
        }


def make_data(seed: int) -> Data:
    gen = torch.Generator().manual_seed(seed)
    T, N = N_STEPS, N_ENVS
    terminated, truncated = torch.zeros(T, N, dtype=torch.bool), torch.zeros(T, N, dtype=torch.bool)
    for env, ends in EPISODE_ENDS.items():
        for t, how in ends:
            (terminated if how == "terminated" else truncated)[t, env] = True
    done = terminated | truncated
    firsts = torch.cat([torch.tensor([STARTS_AT_ZERO]), done[:-1]])
    obs = torch.randn(T, N, OBS_DIM, generator=gen)
    following = torch.cat([obs[1:], torch.randn(1, N, OBS_DIM, generator=gen)])
    finals = torch.randn(T, N, OBS_DIM, generator=gen)
    return Data(
        obs=obs,
        next_obs=torch.where(done[..., None], finals, following),
        actions=torch.rand(T, N, HORIZON, ACT_DIM, generator=gen) * 2 - 1,
        rewards=torch.rand(T, N, generator=gen) * 3,
        terminated=terminated,
        truncated=truncated,
        firsts=firsts,
    )


# ------------------------------------------------------------------------------------------ acting
def compare_acting(
    method: str, reference_act: Callable[[dict[str, Tensor], bool], Tensor], ours: Method, obs: Tensor
) -> list[Row]:
    """Chunks sampled in training and in evaluation on the same draws (and what IDQL draws its pick from)."""
    rows = []
    for deterministic, label in ((False, "training"), (True, "evaluation")):
        draws = Draws()
        with torch.no_grad(), draws.recording():
            ref = reference_act({"state": obs[:, None]}, deterministic)
        with draws.replaying():
            got, _ = ours.act(obs, deterministic)
        rows.append(compare(method, f"acting, {label}: sampled chunks", ref, got))
        if draws.reference_probabilities():
            rows.append(
                compare(
                    method,
                    f"acting, {label}: selection probabilities",
                    draws.reference_probabilities(),
                    draws.our_probabilities,
                )
            )
    return rows


def acting_obs(seed: int) -> Tensor:
    return torch.randn(N_ACTING, OBS_DIM, generator=torch.Generator().manual_seed(seed + 7))


def weights_after(method: str, label: str, ref: nn.Module, ours: nn.Module) -> Row:
    return compare(method, label, params(ref), params(ours))


def bellman_target(batch: dict[str, Any], next_q: tuple[Tensor, Tensor] | Tensor) -> Tensor:
    """The reference's `rewards + gamma * next_q * mask`, mask = 1 - terminated, next_q the min of the two heads
    (diffusion_dipo.py L68, diffusion_dql.py L66, diffusion_qsm.py L88) or V (diffusion_idql.py L81)."""
    next_value = torch.min(*next_q) if isinstance(next_q, tuple) else next_q
    return batch["rewards"] + GAMMA * next_value.view(-1) * (1 - batch["terminated"])


# ------------------------------------------------------------------------------------------ DRWR
def reference_rwr_weights(data: Data, cfg: DRWRConfig) -> tuple[list[tuple[int, int, int]], Tensor, Tensor]:
    """agent/finetune/train_rwr_diffusion_agent.py: complete episodes (L140-148), their reward-to-go (L164-180),
    normalised and exponentiated (L223-234). Returns the episodes, the normalised returns and the weights."""
    firsts_trajs = torch.cat([data.firsts[:1], data.terminated | data.truncated]).double().numpy()
    episodes_start_end = []
    for env_ind in range(N_ENVS):
        env_steps = np.where(firsts_trajs[:, env_ind] == 1)[0]
        for i in range(len(env_steps) - 1):
            start, end = env_steps[i], env_steps[i + 1]
            if end - start > 1:
                episodes_start_end.append((env_ind, int(start), int(end - 1)))
    reward_trajs = data.rewards.double().numpy()
    returns_trajs_split = []
    for env_ind, start, end in episodes_start_end:
        traj_rewards = reward_trajs[start : end + 1, env_ind]
        traj_returns, prev_return = np.zeros_like(traj_rewards), 0.0
        for t in range(len(traj_rewards)):
            traj_returns[-t - 1] = traj_rewards[-t - 1] + cfg.gamma * prev_return
            prev_return = traj_returns[-t - 1]
        returns_trajs_split.append(traj_returns)
    returns = np.concatenate(returns_trajs_split)
    returns = (returns - np.mean(returns)) / (returns.std() + 1e-3)
    rewards_k = torch.tensor(returns).float().reshape(-1)
    weights = torch.exp(cfg.beta * rewards_k)
    weights.clamp_(max=cfg.max_weight)
    return episodes_start_end, rewards_k, weights


def compare_drwr(data: Data, seed: int) -> list[Row]:
    from model.diffusion.diffusion_rwr import RWRDiffusion

    torch.manual_seed(seed)
    ref = RWRDiffusion(network=reference_actor(), **reference_kwargs())
    cfg = DRWRConfig(batch_size=BATCH, update_epochs=1)
    ours = DRWR(cfg, context(ref.network))
    rows = [share_schedule("DRWR", ref, ours.policy)]
    rows += compare_acting("DRWR", lambda cond, det: ref(cond, deterministic=det), ours, acting_obs(seed))

    episodes, returns, weights = reference_rwr_weights(data, cfg)
    obs_k = torch.cat([data.obs[s : e + 1, env] for env, s, e in episodes])[:, None]
    samples_k = torch.cat([data.actions[s : e + 1, env] for env, s, e in episodes])
    inds_k = np.random.default_rng(seed).permutation(len(weights))  # np.random.shuffle's result (L241)
    draws, ref_trace, our_trace = Draws(), Trace(), Trace()
    draws.add("randperm", inds_k, (len(inds_k),))
    with draws.recording():  # L243-263, one epoch: batches of batch_size, the last partial one skipped
        for b in range(max(1, len(weights) // cfg.batch_size)):
            inds_b = inds_k[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            loss = ref.loss(samples_k[inds_b], {"state": obs_k[inds_b]}, weights[inds_b])
            agent_step(ref_trace, "actor", adamw(ref, ACTOR_LR), loss)  # L29-33: AdamW on model.parameters()
    with draws.replaying(), tracing(ours, our_trace), calls_of(method_modules(ours), "exp_weights") as weighting:
        ours.update(data.rollout(), ITR)
    (our_returns, *_), our_weights = weighting[0]
    return [
        *rows,
        compare(
            "DRWR", f"normalised reward-to-go ({len(returns)} steps of {len(episodes)} episodes)", returns, our_returns
        ),
        compare("DRWR", "reward weights min(exp(beta R), max)", weights, our_weights),
        *ref_trace.rows("DRWR", our_trace, "actor", "reward-weighted diffusion loss"),
        weights_after("DRWR", "actor weights after the step", ref.network, ours.policy.network),
    ]


# ------------------------------------------------------------------------------------------ DAWR
@dataclass
class AWRChoices:
    critic: list[np.ndarray]
    actor: list[np.ndarray]


def reference_awr_update(
    model: nn.Module, td_values: Callable[..., np.ndarray], data: Data, choices: AWRChoices, draws: Draws, trace: Trace
) -> tuple[Tensor, Tensor]:
    """agent/finetune/train_awr_diffusion_agent.py L242-338 with the buffer holding this iteration's rows (the critic
    loss as the agent computes it: see NOTES). Returns the TD(lambda) targets before and after the critic's steps."""
    obs_trajs = data.obs.numpy()[:, :, None]  # np.array(obs_buffer): (rows, N, 1, Do)
    reward_trajs = data.rewards.double().numpy() * SCALE_REWARD
    terminated_trajs = data.terminated.numpy()
    actor_optimizer, critic_optimizer = adamw(model.actor, ACTOR_LR), adamw(model.critic, CRITIC_LR)

    def targets() -> tuple[np.ndarray, np.ndarray]:  # L244-257, L273-290
        obs_t = torch.from_numpy(obs_trajs).float().flatten(0, 1)
        values_trajs = np.array(model.critic({"state": obs_t}).detach().cpu().numpy()).reshape(-1, N_ENVS)
        return td_values(obs_trajs, reward_trajs, terminated_trajs, values_trajs), values_trajs

    td_trajs, _ = targets()
    td_before = torch.from_numpy(td_trajs.flatten()).float()
    obs_t = torch.from_numpy(obs_trajs).float().flatten(0, 1)
    for inds in choices.critic:  # L263-270
        draws.add("randint", inds, (0, len(obs_trajs), (BATCH,)))
        loss_critic = model.loss_critic({"state": obs_t[inds]}, td_before[inds])
        agent_step(trace, "critic", critic_optimizer, loss_critic)

    td_trajs, values_trajs = targets()
    advantages_trajs = (td_trajs - values_trajs).reshape(-1)
    obs_flat, samples_flat = data.flat("obs")[:, None], data.flat("actions")
    for inds in choices.actor:  # L303-337
        draws.add("randint", inds, (0, len(obs_flat), (BATCH,)))
        advantages_b = torch.from_numpy(advantages_trajs[inds]).float()
        advantages_b = (advantages_b - advantages_b.mean()) / (advantages_b.std() + 1e-6)
        advantages_b_scaled = torch.exp(10 * advantages_b)  # beta 10
        advantages_b_scaled.clamp_(max=100)  # max_adv_weight 100
        loss_actor = model.loss(samples_flat[inds], {"state": obs_flat[inds]}, advantages_b_scaled.detach())
        agent_step(trace, "actor", actor_optimizer, loss_actor)
    return td_before, torch.from_numpy(td_trajs.flatten())


def compare_dawr(data: Data, seed: int, td_values: Callable[..., np.ndarray]) -> list[Row]:
    from model.diffusion.diffusion_awr import AWRDiffusion

    torch.manual_seed(seed)
    ref = AWRDiffusion(actor=reference_actor(), critic=reference_v(), **reference_kwargs())
    cfg = DAWRConfig(**off_policy_sizes(replay_ratio=4 * ONE_STEP))
    ours = DAWR(cfg, context(ref.actor))
    copy_parameters(ref.critic, ours.critic)
    rows = [share_schedule("DAWR", ref, ours.policy)]
    rows += compare_acting("DAWR", lambda cond, det: ref(cond, deterministic=det), ours, acting_obs(seed))

    rng = np.random.default_rng(seed)
    n_actor = int(N_TRANSITIONS / cfg.batch_size * cfg.replay_ratio)
    choices = AWRChoices(
        critic=[rng.choice(N_STEPS, BATCH) for _ in range(n_actor // cfg.critic_update_ratio)],
        actor=[rng.choice(N_TRANSITIONS, BATCH) for _ in range(n_actor)],
    )
    draws, ref_trace, our_trace = Draws(), Trace(), Trace()
    with draws.recording():
        td_before, td_after = reference_awr_update(ref, td_values, data, choices, draws, ref_trace)
    with draws.replaying(), tracing(ours, our_trace), calls_of(method_modules(ours), "td_lambda_targets") as td:
        ours.update(data.rollout(), ITR)
    return [
        *rows,
        compare("DAWR", "TD(lambda) targets, before the critic steps", td_before, td[0][1].flatten()),
        compare("DAWR", "TD(lambda) targets, after the critic steps", td_after, td[1][1].flatten()),
        *ref_trace.rows("DAWR", our_trace, "critic", "critic (V against every target of the batch)"),
        *ref_trace.rows("DAWR", our_trace, "actor", "actor (advantage-weighted diffusion loss)"),
        weights_after("DAWR", "critic weights after its steps", ref.critic, ours.critic),
        weights_after("DAWR", "actor weights after its steps", ref.actor, ours.policy.network),
    ]


# ------------------------------------------------------------------------------------------ DIPO
def reference_guided_actions(model: nn.Module, obs_b: dict[str, Tensor], actions_b: Tensor) -> Tensor:
    """agent/finetune/train_dipo_diffusion_agent.py L267-295: action_gradient_steps (10) Adam steps (lr action_lr
    1e-4, eps 1e-5) up min(Q1, Q2), the gradient clipped to action_dim * act_steps * 0.1 (L87), then clamped."""
    actions_flat = actions_b.clone().reshape(len(actions_b), -1)
    actions_optim = torch.optim.Adam([actions_flat], lr=1e-4, eps=1e-5)
    for _ in range(10):
        actions_flat.requires_grad_(True)
        q_values_1, q_values_2 = model.critic(obs_b, actions_flat)
        q_values = torch.min(q_values_1, q_values_2)
        action_opt_loss = -q_values.sum()
        actions_optim.zero_grad()
        action_opt_loss.backward(torch.ones_like(action_opt_loss))
        torch.nn.utils.clip_grad_norm_([actions_flat], max_norm=ACT_DIM * ACT_STEPS * 0.1, norm_type=2)
        actions_optim.step()
        actions_flat.requires_grad_(False)
        actions_flat.clamp_(-1.0, 1.0)
    return actions_flat.reshape(len(actions_flat), HORIZON, ACT_DIM)


def compare_dipo(data: Data, seed: int) -> list[Row]:
    from model.diffusion.diffusion_dipo import DIPODiffusion

    torch.manual_seed(seed)
    ref = DIPODiffusion(actor=reference_actor(), critic=reference_q(), **reference_kwargs())
    gen = torch.Generator().manual_seed(seed + 1)
    move_off(ref.critic_target, gen)
    move_off(ref.actor_target, gen)
    ours = DIPO(DIPOConfig(**off_policy_sizes()), context(ref.actor))
    for src, dst in ((ref.critic, ours.critic), (ref.critic_target, ours.critic_target)):
        copy_parameters(src, dst)
    copy_parameters(ref.actor_target, ours.actor_target)
    rows = [share_schedule("DIPO", ref, ours.policy)]
    rows += compare_acting("DIPO", lambda cond, det: ref(cond, deterministic=det), ours, acting_obs(seed))

    rng = np.random.default_rng(seed)
    critic_inds = rng.choice(N_TRANSITIONS, BATCH)
    actor_inds = rng.choice(N_TRANSITIONS, BATCH, replace=False)  # distinct: both write moved actions back
    draws, ref_trace, our_trace = Draws(), Trace(), Trace()
    actor_optimizer, critic_optimizer = adamw(ref.actor, ACTOR_LR), adamw(ref.critic, CRITIC_LR)
    with draws.recording(), outputs_of(ref.critic_target) as next_q:  # L228-315
        draws.add("randint", critic_inds, (0, N_TRANSITIONS, (BATCH,)))
        b = data.reference(critic_inds)
        loss_critic = ref.loss_critic(b["obs"], b["next_obs"], b["actions"], b["rewards"], b["terminated"], GAMMA)
        agent_step(ref_trace, "critic", critic_optimizer, loss_critic)
        draws.add("randint", actor_inds, (0, N_TRANSITIONS, (BATCH,)))
        a = data.reference(actor_inds)
        guided_action = reference_guided_actions(ref, a["obs"], a["actions"])
        agent_step(ref_trace, "actor", actor_optimizer, ref.loss(guided_action.detach(), a["obs"]))
        ref.update_target_critic(0.005)
        ref.update_target_actor(0.005)
    with (
        draws.replaying(),
        tracing(ours, our_trace),
        calls_of(method_modules(ours), "double_q_loss") as q_loss,
        calls_of(ours, "moved_actions") as moved,
    ):
        ours.update(data.rollout(), ITR)
    written_back = ours.buffer.get(torch.as_tensor(actor_inds))["actions"]
    return [
        *rows,
        compare(
            "DIPO",
            "critic target r + gamma (1 - term) min Q_target(s', a' ~ target actor)",
            bellman_target(b, next_q[0]),
            q_loss[0][0][2],
        ),
        *ref_trace.rows("DIPO", our_trace, "critic", "critic (double-Q Bellman)"),
        compare("DIPO", "actions after the 10 Adam steps up min Q", guided_action, moved[0][1]),
        compare("DIPO", "moved actions written back to the buffer", guided_action, written_back),
        *ref_trace.rows("DIPO", our_trace, "actor", "actor (diffusion loss on moved actions)"),
        weights_after("DIPO", "critic weights after the step", ref.critic, ours.critic),
        weights_after("DIPO", "actor weights after the step", ref.actor, ours.policy.network),
        weights_after("DIPO", "target critic after the soft update", ref.critic_target, ours.critic_target),
        weights_after("DIPO", "target actor after the soft update", ref.actor_target, ours.actor_target),
    ]


# ------------------------------------------------------------------------------------------ IDQL
def compare_idql(data: Data, seed: int) -> list[Row]:
    from model.diffusion.diffusion_idql import IDQLDiffusion

    torch.manual_seed(seed)
    ref = IDQLDiffusion(actor=reference_actor(), critic_q=reference_q(), critic_v=reference_v(), **reference_kwargs())
    move_off(ref.target_q, torch.Generator().manual_seed(seed + 1))
    cfg = IDQLConfig(**off_policy_sizes())
    ours = IDQL(cfg, context(ref.actor))
    for src, dst in ((ref.critic_q, ours.critic_q), (ref.target_q, ours.target_q), (ref.critic_v, ours.critic_v)):
        copy_parameters(src, dst)

    def reference_act(cond: dict[str, Tensor], deterministic: bool) -> Tensor:
        # as train_idql_diffusion_agent.py L151-156 calls it (deterministic: eval_mode and eval_deterministic, which
        # is True; critic_hyperparam left at its default, 0.7), with eval_sample_num 20 and expectile exploration
        return ref(cond, deterministic=deterministic, num_sample=20, use_expectile_exploration=True)

    rows = [share_schedule("IDQL", ref, ours.policy)]
    rows += compare_acting("IDQL", reference_act, ours, acting_obs(seed))

    inds = np.random.default_rng(seed).choice(N_TRANSITIONS, BATCH)
    draws, ref_trace, our_trace = Draws(), Trace(), Trace()
    optimizers = {"actor": adamw(ref.actor, ACTOR_LR), "q": adamw(ref.critic_q, CRITIC_LR)}
    optimizers["v"] = adamw(ref.critic_v, CRITIC_LR)
    with draws.recording(), outputs_of(ref.target_q) as ref_tq, outputs_of(ref.critic_v) as ref_v:  # L255-310
        draws.add("randint", inds, (0, N_TRANSITIONS, (BATCH,)))
        b = data.reference(inds)
        agent_step(ref_trace, "critic_v", optimizers["v"], ref.loss_critic_v(b["obs"], b["actions"]))
        loss_q = ref.loss_critic_q(b["obs"], b["next_obs"], b["actions"], b["rewards"], b["terminated"], GAMMA)
        agent_step(ref_trace, "critic_q", optimizers["q"], loss_q)
        ref.update_target_critic(0.001)  # critic_tau
        agent_step(ref_trace, "actor", optimizers["actor"], ref.loss(b["actions"], b["obs"]))
    with (
        draws.replaying(),
        tracing(ours, our_trace),
        outputs_of(ours.target_q) as our_tq,
        calls_of(method_modules(ours), "double_q_loss") as q_loss,
    ):
        ours.update(data.rollout(), ITR)
    return [
        *rows,
        compare("IDQL", "V target min Q_target(s, a)", torch.min(*ref_tq[0]), torch.min(*our_tq[0])),
        *ref_trace.rows("IDQL", our_trace, "critic_v", "V (expectile 0.8)"),
        compare("IDQL", "Q target r + gamma (1 - term) V(s')", bellman_target(b, ref_v[1]), q_loss[0][0][2]),
        *ref_trace.rows("IDQL", our_trace, "critic_q", "Q (double-Q)"),
        *ref_trace.rows("IDQL", our_trace, "actor", "actor (diffusion loss on buffer actions)"),
        weights_after("IDQL", "V weights after the step", ref.critic_v, ours.critic_v),
        weights_after("IDQL", "Q weights after the step", ref.critic_q, ours.critic_q),
        weights_after("IDQL", "actor weights after the step", ref.actor, ours.policy.network),
        weights_after("IDQL", "target Q after the soft update", ref.target_q, ours.target_q),
    ]


# ------------------------------------------------------------------------------------------ DQL
COINS = {"-Q1 / mean abs Q2": 0.9, "-Q2 / mean abs Q1": 0.1}  # the coin flip's value: > 0.5 takes Q1's branch


@contextmanager
def coin(draws: Draws, value: float) -> Iterator[None]:
    """The reference flips `np.random.uniform() > 0.5`, ours `torch.rand(()) > 0.5`: both get `value`."""
    draws.add("rand", torch.tensor(value), ())
    with mock.patch.object(np.random, "uniform", lambda *args, **kwargs: value):
        yield


def compare_dql_branches(ref: nn.Module, ours: DQL, data: Data, inds: np.ndarray) -> list[Row]:
    """The actor loss on each side of the coin flip, before any step (model/diffusion/diffusion_dql.py L74-88)."""
    rows = []
    for branch, value in COINS.items():
        draws, ref_trace, our_trace = Draws(), Trace(), Trace()
        with draws.recording(), coin(draws, value):
            ref_trace.record("actor", ref.loss_actor(data.reference(inds)["obs"], 1.0, ACT_STEPS), params(ref.actor))
        with draws.replaying():
            our_trace.record("actor", ours.actor_loss(data.ours(inds))[0], params(ours.policy.network))
        rows += ref_trace.rows("DQL", our_trace, "actor", f"actor, branch {branch}")
    return rows


def compare_dql(data: Data, seed: int) -> list[Row]:
    from model.diffusion.diffusion_dql import DQLDiffusion

    torch.manual_seed(seed)
    ref = DQLDiffusion(actor=reference_actor(), critic=reference_q(), **reference_kwargs())
    move_off(ref.critic_target, torch.Generator().manual_seed(seed + 1))
    ours = DQL(DQLConfig(**off_policy_sizes()), context(ref.actor))
    for src, dst in ((ref.critic, ours.critic), (ref.critic_target, ours.critic_target)):
        copy_parameters(src, dst)
    rows = [share_schedule("DQL", ref, ours.policy)]
    rows += compare_acting("DQL", lambda cond, det: ref(cond, deterministic=det), ours, acting_obs(seed))

    inds = np.random.default_rng(seed).choice(N_TRANSITIONS, BATCH)
    rows += compare_dql_branches(ref, ours, data, inds)
    draws, ref_trace, our_trace = Draws(), Trace(), Trace()
    actor_optimizer, critic_optimizer = adamw(ref.actor, ACTOR_LR), adamw(ref.critic, CRITIC_LR)
    branch = next(iter(COINS))
    with draws.recording(), coin(draws, COINS[branch]), outputs_of(ref.critic_target) as next_q:  # L222-260
        draws.add("randint", inds, (0, N_TRANSITIONS, (BATCH,)))
        b = data.reference(inds)
        loss_critic = ref.loss_critic(b["obs"], b["next_obs"], b["actions"], b["rewards"], b["terminated"], GAMMA)
        agent_step(ref_trace, "critic", critic_optimizer, loss_critic)
        agent_step(ref_trace, "actor", actor_optimizer, ref.loss_actor(b["obs"], 1.0, ACT_STEPS))  # eta 1
        ref.update_target_critic(0.005)
    with draws.replaying(), tracing(ours, our_trace), calls_of(method_modules(ours), "double_q_loss") as q_loss:
        ours.update(data.rollout(), ITR)
    return [
        *rows,
        compare(
            "DQL",
            "critic target r + gamma (1 - term) min Q_target(s', a' ~ actor)",
            bellman_target(b, next_q[0]),
            q_loss[0][0][2],
        ),
        *ref_trace.rows("DQL", our_trace, "critic", "critic (double-Q Bellman)"),
        *ref_trace.rows("DQL", our_trace, "actor", f"actor in the step, branch {branch}"),
        weights_after("DQL", "critic weights after the step", ref.critic, ours.critic),
        weights_after("DQL", "actor weights after the step", ref.actor, ours.policy.network),
        weights_after("DQL", "target critic after the soft update", ref.critic_target, ours.critic_target),
    ]


# ------------------------------------------------------------------------------------------ QSM
def compare_qsm(data: Data, seed: int) -> list[Row]:
    from model.diffusion.diffusion_qsm import QSMDiffusion

    torch.manual_seed(seed)
    ref = QSMDiffusion(actor=reference_actor(), critic=reference_q(), **reference_kwargs())
    move_off(ref.target_q, torch.Generator().manual_seed(seed + 1))
    ours = QSM(QSMConfig(**off_policy_sizes()), context(ref.actor))
    for src, dst in ((ref.critic_q, ours.critic), (ref.target_q, ours.critic_target)):
        copy_parameters(src, dst)
    rows = [share_schedule("QSM", ref, ours.policy)]
    rows += compare_acting("QSM", lambda cond, det: ref(cond, deterministic=det), ours, acting_obs(seed))

    inds = np.random.default_rng(seed).choice(N_TRANSITIONS, BATCH)
    draws, ref_trace, our_trace = Draws(), Trace(), Trace()
    actor_optimizer, critic_optimizer = adamw(ref.actor, ACTOR_LR), adamw(ref.critic_q, CRITIC_LR)
    with draws.recording(), outputs_of(ref.target_q) as next_q:  # train_qsm_diffusion_agent.py L229-275
        draws.add("randint", inds, (0, N_TRANSITIONS, (BATCH,)))
        b = data.reference(inds)
        loss_critic = ref.loss_critic(b["obs"], b["next_obs"], b["actions"], b["rewards"], b["terminated"], GAMMA)
        agent_step(ref_trace, "critic", critic_optimizer, loss_critic)
        agent_step(ref_trace, "actor", actor_optimizer, ref.loss_actor(b["obs"], b["actions"], 10))  # q_grad_coeff
        ref.update_target_critic(0.005)  # critic_tau
    with draws.replaying(), tracing(ours, our_trace), calls_of(method_modules(ours), "double_q_loss") as q_loss:
        ours.update(data.rollout(), ITR)
    return [
        *rows,
        compare(
            "QSM",
            "critic target r + gamma (1 - term) min Q_target(s', a' ~ actor)",
            bellman_target(b, next_q[0]),
            q_loss[0][0][2],
        ),
        *ref_trace.rows("QSM", our_trace, "critic", "critic (double-Q Bellman)"),
        *ref_trace.rows("QSM", our_trace, "actor", "actor (score matching to alpha grad Q at x_k)"),
        weights_after("QSM", "critic weights after the step", ref.critic_q, ours.critic),
        weights_after("QSM", "actor weights after the step", ref.actor, ours.policy.network),
        weights_after("QSM", "target critic after the soft update", ref.target_q, ours.critic_target),
    ]


# ------------------------------------------------------------------------------------------ main
NOTES = [
    "Noise schedule: ours is computed in float64 and rounded once, the reference's in float32 (up to 6.5e-6 apart, "
    "at the noisiest step where the reference's float32 cumulative product is least exact: the first row of each "
    "method); the rest runs on the reference's rounding, as such differences switch gradient paths on or off at the "
    "denoised clip and at ReLU kinks on one side only (share_schedule).",
    "DAWR critic: the reference's AWRDiffusion.loss_critic (model/diffusion/diffusion_awr.py L28-34) subtracts the "
    "(B,) TD targets from CriticObs's (B, 1) output, which broadcasts to (B, B): every V(s_i) regresses every target "
    "in the batch, i.e. the batch mean. Ours does the same by default (algo.v_regression=reference); "
    "v_regression=per_sample regresses each V(s_i) on its own target.",
    "QSM: the reference draws the noise before the step index (diffusion_qsm.py L42-45), ours the index first "
    "(methods/qsm.py QSM.actor_loss); the same distribution, and here the same values (draws are replayed per kind).",
    "DQL: the coin flip is forced to each side for the actor loss; the gradient step takes the first.",
    "DIPO: the actor batch's indices are distinct, as moved actions are written back to both buffers.",
]


def stub_import_time_only() -> list[str]:
    """Stub whichever of IMPORT_TIME_ONLY isn't installed: the agent module imports them, but only its
    `TrainAgent` (never built here) uses them. `from omegaconf import OmegaConf` then gets None."""

    def nothing(attr: str) -> None:
        if attr.startswith("__"):
            raise AttributeError(attr)

    stubbed = []
    for name in IMPORT_TIME_ONLY:
        if importlib.util.find_spec(name) is None:
            module = types.ModuleType(name)
            module.__getattr__ = nothing  # type: ignore[method-assign]
            sys.modules[name] = module
            stubbed.append(name)
    return stubbed


def run_all(seed: int, td_values: Callable[..., np.ndarray]) -> list[Row]:
    data = make_data(seed)
    comparisons: list[tuple[str, Callable[[], list[Row]]]] = [
        ("DRWR", lambda: compare_drwr(data, seed)),
        ("DAWR", lambda: compare_dawr(data, seed, td_values)),
        ("DIPO", lambda: compare_dipo(data, seed)),
        ("IDQL", lambda: compare_idql(data, seed)),
        ("DQL", lambda: compare_dql(data, seed)),
        ("QSM", lambda: compare_qsm(data, seed)),
    ]
    rows: list[Row] = []
    for name, run in comparisons:
        try:
            rows += run()
        except DrawMismatch as e:
            rows.append(Row(name, f"random draws: {e}", math.inf, math.inf, False))
    return rows


def print_table(rows: list[Row]) -> None:
    print("| method | quantity | max abs diff | max rel diff | ok |")
    print("|---|---|---:|---:|---|")
    for r in rows:
        print(f"| {r.method} | {r.quantity} | {r.max_abs:.2e} | {r.max_rel:.2e} | {'yes' if r.ok else 'NO'} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--reference", type=Path, required=True, help="checkout of irom-princeton/dppo")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    add_reference(args.reference, "model/diffusion/diffusion_qsm.py")
    stubbed = stub_import_time_only()
    import model.diffusion.diffusion_rwr  # noqa: F401
    from agent.finetune.train_awr_diffusion_agent import td_values

    for name in ("model.diffusion.diffusion_rwr", "agent.finetune.train_awr_diffusion_agent"):
        check_imported_from(name, args.reference)
    torch.set_num_threads(1)

    rows = run_all(args.seed, td_values)
    print(
        f"Six baselines vs {args.reference}: obs {OBS_DIM}, act {ACT_DIM}, horizon {HORIZON} = act_steps {ACT_STEPS}, "
        f"K {K}, {N_STEPS} steps x {N_ENVS} envs, batch {BATCH}, seed {args.seed}"
        + (f"; stubbed at import: {', '.join(stubbed)}" if stubbed else "")
        + "\n"
    )
    print_table(rows)
    print("\nNotes:\n" + "\n".join(f"- {n}" for n in NOTES))
    bad = [r for r in rows if not r.ok]
    print(
        f"\n{'every quantity agrees' if not bad else f'{len(bad)} of {len(rows)} quantities DISAGREE'} "
        f"(tolerance {ATOL:g} + {RTOL:g} x max |reference|, per tensor)"
    )
    if args.json:
        plain = [
            {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in asdict(r).items()}
            for r in rows
        ]
        args.json.write_text(json.dumps({"rows": plain, "notes": NOTES}, indent=1))
    return 0 if not bad else 1


if __name__ == "__main__":
    raise SystemExit(main())
