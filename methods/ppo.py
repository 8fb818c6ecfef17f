"""What every PPO-family method shares: GAE, running reward scaling, the
cosine-with-warmup LR schedule and the epoch/minibatch update loop.

A subclass says what one training sample is (an env step for a Gaussian
policy, an (env step, denoising step) pair for DPPO) and how its log-ratio
and clip range are computed; everything else lives here once.

Defaults are the reference's Avoid fine-tuning values
(irom-princeton/dppo cfg/d3il/finetune/avoid_m2/ft_ppo_diffusion_mlp.yaml).
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from common.limits import AT_LEAST_ONE, DISCOUNT, FRACTION, NON_NEGATIVE, POSITIVE, Range
from methods.base import Method, MethodContext, Rollout
from methods.optim import ActorOptim, CriticOptim, adamw, check_lr_schedules, scheduled_lr, set_lr
from methods.policies.networks import ValueCritic, serial_rows


@dataclass
class PPOConfig(ActorOptim, CriticOptim):
    gamma: float = 0.99
    """Discount factor per env step, i.e. per executed action chunk (reference: gamma)."""
    gae_lambda: float = 0.95
    """GAE lambda over env (chunk) steps (reference: gae_lambda)."""
    update_epochs: int = 10
    """Passes over the iteration's training samples per update (reference: update_epochs)."""
    batch_size: int | None = None
    """Minibatch size in samples (DPPO: env x denoising steps); None: half the iteration's samples (reference Avoid)."""
    clip: float = 0.1
    """PPO clip range of the likelihood ratio (DPPO: at the last fine-tuned denoising step)."""
    clip_value: float | None = None
    """Value-loss clip range around the rollout's values (PPO2-style max); None: off (reference: clip_vloss_coef)."""
    vf_coef: float = 0.5
    """Weight of the value loss (0.5 x MSE to the GAE returns) in the total loss (reference: vf_coef)."""
    target_kl: float | None = 1.0
    """End the whole update once a minibatch's approx KL exceeds this; None: never (reference: target_kl)."""
    norm_adv: bool = True
    """Normalise advantages to zero mean, unit std within each minibatch (reference: norm_adv)."""
    adv_clip_quantiles: list[float] = field(default_factory=lambda: [0.0, 1.0])
    """[lower, upper] quantiles a minibatch's advantages are clamped to after normalising; [0, 1]: no clamp."""
    n_critic_warmup_itr: int = 1
    """First iterations that train only the critic; the actor LR schedule starts after them (reference name)."""
    reward_scale_running: bool = True
    """Divide rewards by the running std of the discounted return (no mean shift), then clip them to +-10."""
    reward_scale_const: float = 1.0
    """Constant multiplier on rewards, applied after any running scaling (reference: reward_scale_const)."""

    LIMITS: ClassVar[dict[str, Range]] = {
        **ActorOptim.LIMITS,
        **CriticOptim.LIMITS,
        "gamma": DISCOUNT,
        "gae_lambda": FRACTION,
        "update_epochs": AT_LEAST_ONE,
        "batch_size": AT_LEAST_ONE,
        "clip": POSITIVE,
        "clip_value": POSITIVE,
        "vf_coef": NON_NEGATIVE,
        "target_kl": POSITIVE,
        "adv_clip_quantiles": FRACTION,
        "n_critic_warmup_itr": NON_NEGATIVE,
        "reward_scale_const": POSITIVE,
    }


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    gamma: float | torch.Tensor,
    lam: float | torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over (T, N) tensors.

    Bootstraps from `next_values` except after termination; the recursion stops
    at any episode end (termination or truncation) and at the rollout's end.
    `gamma` and `lam` may also be (T, N) tensors: a discount and lambda per step.
    """
    not_term = 1.0 - terminated.float()
    not_done = 1.0 - (terminated | truncated).float()
    adv = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    per_step = isinstance(gamma, torch.Tensor) or isinstance(lam, torch.Tensor)
    gammas = torch.broadcast_to(torch.as_tensor(gamma, dtype=rewards.dtype, device=rewards.device), rewards.shape)
    lams = torch.broadcast_to(torch.as_tensor(lam, dtype=rewards.dtype, device=rewards.device), rewards.shape)
    for t in reversed(range(rewards.shape[0])):
        g, gl = (gammas[t], gammas[t] * lams[t]) if per_step else (gamma, gamma * lam)
        delta = rewards[t] + g * next_values[t] * not_term[t] - values[t]
        running = delta + gl * not_done[t] * running
        adv[t] = running
    return adv, adv + values


class RunningRewardScaler:
    """Divide rewards by the running std of the discounted return (no mean shift),
    clipped to +-10: the reference's `reward_scale_running`."""

    def __init__(self, n_envs: int, gamma: float, clip: float = 10.0, eps: float = 1e-8):
        self.gamma, self.clip, self.eps = gamma, clip, eps
        self.ret = np.zeros(n_envs)
        self.mean, self.var, self.count = 0.0, 1.0, 1e-4

    def __call__(self, rewards: np.ndarray, firsts: np.ndarray) -> np.ndarray:
        """rewards, firsts: (T, N)."""
        rets = np.empty_like(rewards, dtype=np.float64)
        for t in range(rewards.shape[0]):
            self.ret = rewards[t] + (1.0 - firsts[t]) * self.gamma * self.ret
            rets[t] = self.ret
        self._update(rets.reshape(-1))
        return np.clip(rewards / np.sqrt(self.var + self.eps), -self.clip, self.clip)

    def _update(self, x: np.ndarray) -> None:
        n, mean, var = len(x), float(x.mean()), float(x.var())
        total = self.count + n
        delta = mean - self.mean
        m2 = self.var * self.count + var * n + delta**2 * self.count * n / total
        self.mean += delta * n / total
        self.var = m2 / (total - 1)
        self.count = total

    def state_dict(self) -> dict[str, Any]:
        return {"ret": self.ret.copy(), "mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.ret, self.mean, self.var, self.count = np.array(s["ret"]), s["mean"], s["var"], s["count"]


# How a method reduces per-dim log-densities to one per sample: "mean_clamped" as the reference's Gaussian and
# diffusion PPO do (the mean, clamped to [-5, 2]; which entries enter the mean is the method's), "sum_clamped" as
# its GMM PPO does (the chunk's joint log-density, clamped), "sum" the exact log-density of the executed actions.
LOGPROB_REDUCTIONS = ("mean_clamped", "sum_clamped", "sum")


def check_logprob_reduction(value: str, allowed: tuple[str, ...] = LOGPROB_REDUCTIONS) -> None:
    if value not in allowed:
        raise ValueError(f"algo.logprob_reduction must be one of {', '.join(allowed)}, got {value!r}")


def clipped_surrogate(
    logratio: torch.Tensor, adv: torch.Tensor, clip: torch.Tensor | float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO's clipped objective (as a loss), approximate KL `(r-1) - log r`, clip fraction; on CPU computed in pieces
    of `serial_rows` samples, their means weighted by size (the same means, up to float rounding)."""
    n, rows = len(logratio), serial_rows(logratio)
    if n <= rows:
        return _clipped_surrogate(logratio, adv, clip)
    clips = clip.split(rows) if isinstance(clip, torch.Tensor) and clip.dim() else [clip] * -(-n // rows)
    parts = [
        [len(lr) / n * m for m in _clipped_surrogate(lr, a, c)]
        for lr, a, c in zip(logratio.split(rows), adv.split(rows), clips, strict=True)
    ]
    loss, approx_kl, clipfrac = (sum(ms) for ms in zip(*parts, strict=True))
    return loss, approx_kl, clipfrac


def _clipped_surrogate(
    logratio: torch.Tensor, adv: torch.Tensor, clip: torch.Tensor | float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ratio = logratio.exp()
    loss = torch.max(-adv * ratio, -adv * torch.clamp(ratio, 1 - clip, 1 + clip)).mean()
    with torch.no_grad():
        approx_kl = ((ratio - 1) - logratio).mean()
        clipfrac = ((ratio - 1).abs() > clip).float().mean()
    return loss, approx_kl, clipfrac


class PPOMethod(Method):
    config_cls = PPOConfig

    @classmethod
    def check_config(cls, cfg: PPOConfig, policy=None) -> None:
        lo_hi = cfg.adv_clip_quantiles
        if len(lo_hi) != 2 or lo_hi[0] > lo_hi[1]:
            raise ValueError(f"algo.adv_clip_quantiles must be [low, high] with low <= high, got {lo_hi}")
        check_lr_schedules(cfg)

    def __init__(self, cfg: PPOConfig, ctx: MethodContext):
        super().__init__(cfg, ctx)
        self.critic = self.make_critic().to(self.device)
        self.actor_optimizer = adamw(self.actor_parameters(), cfg, "actor")
        self.critic_optimizer = adamw(self.critic.parameters(), cfg, "critic")
        self.reward_scaler: RunningRewardScaler | None = None

    def nonfinite_advice(self, loss: str) -> str:
        if loss == "v_loss":
            return "lower algo.critic_lr (or set algo.clip_value)"
        return "lower algo.actor_lr (or set algo.max_grad_norm)"

    # ------------------------------------------------------------ subclass hooks
    @abstractmethod
    def actor_parameters(self) -> list[torch.nn.Parameter]:
        """What the actor optimiser trains; called in `PPOMethod.__init__`, so it may use only `self.policy`
        and `self.cfg`."""

    @abstractmethod
    def make_samples(self, rollout: Rollout, advantages: torch.Tensor, returns: torch.Tensor, values: torch.Tensor):
        """Flat dict of training samples, each value with the sample index first;
        must contain `obs`, `advantages`, `returns`, `values`."""

    @abstractmethod
    def log_ratio_and_clip(self, mb: dict[str, torch.Tensor], adv: torch.Tensor):
        """Return (logratio, advantages to use, clip range) for a minibatch."""

    def make_critic(self) -> torch.nn.Module:
        """The critic the critic optimiser trains (default: the state-only V(s)); called in `__init__`."""
        c = self.cfg
        return ValueCritic(self.ctx.task.obs_dim, c.critic_hidden, c.critic_activation, c.critic_residual)

    def estimate_advantages(
        self, rollout: Rollout, rewards: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(advantages, value targets, values) of the rollout's samples, from the (scaled) rewards (T, N).
        Default: GAE over env steps with V(s), each (T, N). None targets: the critic is not regressed by PPO."""
        T, N = rollout.n_steps, rollout.n_envs
        with torch.no_grad():
            values = self.critic(rollout.obs.reshape(T * N, -1)).view(T, N)
            next_values = self.critic(rollout.next_obs.reshape(T * N, -1)).view(T, N)
        c = self.cfg
        advantages, returns = gae(
            rewards, values, next_values, rollout.terminated, rollout.truncated, c.gamma, c.gae_lambda
        )
        return advantages, returns, values

    def predict_values(self, mb: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The critic's prediction for a minibatch, regressed to mb["returns"]; None: no value loss.

        Samples with equal `mb["env_index"]`, where given, are of one env step and share its observation (DPPO's
        K' denoising steps of a step): the critic runs once per distinct step, gathered back per sample."""
        if "env_index" not in mb:
            return self.critic(mb["obs"])
        index = mb["env_index"]
        # one sample (any) per distinct step, without torch.unique's sort (4x slower on CPU at 50,000 samples)
        first = index.new_full((int(index.max()) + 1,), -1).scatter_(
            0, index, torch.arange(len(index), device=index.device)
        )
        present = first >= 0
        return self.critic(mb["obs"][first[present]])[(torch.cumsum(present, 0) - 1)[index]]

    def actor_regularisers(self, mb: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Weighted loss terms added to the actor's loss on a minibatch, by metric name (none by default)."""
        return {}

    # ------------------------------------------------------------ the update
    def _lrs(self, itr: int) -> tuple[float, float]:
        actor_step = max(0, itr - self.cfg.n_critic_warmup_itr)  # the actor's schedule starts after warm-up
        return scheduled_lr(self.cfg, "actor", actor_step), scheduled_lr(self.cfg, "critic", itr)

    def update(self, rollout: Rollout, itr: int) -> dict[str, float]:
        c = self.cfg
        actor_lr, critic_lr = self._lrs(itr)
        set_lr(self.actor_optimizer, actor_lr)
        set_lr(self.critic_optimizer, critic_lr)

        N = rollout.n_envs
        rewards = rollout.rewards.cpu().numpy().astype(np.float64)
        if c.reward_scale_running:
            if self.reward_scaler is None:
                self.reward_scaler = RunningRewardScaler(N, c.gamma)
            rewards = self.reward_scaler(rewards, rollout.firsts.cpu().numpy().astype(np.float64))
        rewards = torch.as_tensor(rewards * c.reward_scale_const, dtype=torch.float32, device=self.device)
        advantages, returns, values = self.estimate_advantages(rollout, rewards)
        samples = self.make_samples(rollout, advantages, returns, values)
        n = samples["obs"].shape[0]
        batch_size = c.batch_size or max(1, n // 2)
        train_actor = itr >= c.n_critic_warmup_itr

        stats: dict[str, list[float]] = {k: [] for k in ("pg_loss", "v_loss", "approx_kl", "clipfrac")}
        stopped_early = False
        for _ in range(c.update_epochs):
            perm = torch.randperm(n, device=self.device)
            for b in range(max(1, n // batch_size)):  # the last partial batch is skipped
                idx = perm[b * batch_size : (b + 1) * batch_size]
                step = self.minibatch_step({k: v[idx] for k, v in samples.items()}, train_actor)
                for k, v in step.items():
                    stats.setdefault(k, []).append(v)
                if c.target_kl is not None and step["approx_kl"] > c.target_kl:
                    stopped_early = True
                    break
            if stopped_early:
                break

        var_y = 0.0 if returns is None else torch.var(returns.flatten()).item()
        out = {k: float(np.mean(vals)) if vals else float("nan") for k, vals in stats.items()}
        out.update(
            actor_lr=actor_lr,
            critic_lr=critic_lr,
            kl_stopped=float(stopped_early),
            explained_var=float("nan") if var_y == 0 else 1 - torch.var((returns - values).flatten()).item() / var_y,
        )
        return out

    def minibatch_step(self, mb: dict[str, torch.Tensor], train_actor: bool = True) -> dict[str, float]:
        """One gradient step of actor and critic on one minibatch."""
        c = self.cfg
        adv = mb["advantages"]
        if c.norm_adv and adv.numel() > 1:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        lo, hi = c.adv_clip_quantiles
        if (lo, hi) != (0.0, 1.0):
            adv = adv.clamp(torch.quantile(adv, lo), torch.quantile(adv, hi))

        logratio, adv, clip = self.log_ratio_and_clip(mb, adv)
        pg_loss, approx_kl, clipfrac = clipped_surrogate(logratio, adv, clip)

        new_v = self.predict_values(mb)
        if new_v is None:
            v_loss = torch.zeros((), device=self.device)
        elif c.clip_value is not None:
            v_clipped = mb["values"] + (new_v - mb["values"]).clamp(-c.clip_value, c.clip_value)
            v_loss = 0.5 * torch.max((new_v - mb["returns"]) ** 2, (v_clipped - mb["returns"]) ** 2).mean()
        else:
            v_loss = 0.5 * ((new_v - mb["returns"]) ** 2).mean()

        extra = self.actor_regularisers(mb) if train_actor else {}
        loss = c.vf_coef * v_loss + (pg_loss + sum(extra.values()) if train_actor else 0.0)
        self.actor_optimizer.zero_grad(set_to_none=True)
        self.critic_optimizer.zero_grad(set_to_none=True)
        if loss.requires_grad:  # not when neither actor nor a PPO-regressed critic trains (a Q critic's warm-up)
            loss.backward()
        if train_actor:
            if c.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(self.actor_parameters(), c.max_grad_norm)
            self.actor_optimizer.step()
        self.critic_optimizer.step()
        return {
            "pg_loss": pg_loss.item(),
            "v_loss": v_loss.item(),
            "approx_kl": approx_kl.item(),
            "clipfrac": clipfrac.item(),
            **{k: v.item() for k, v in extra.items()},
        }

    # ------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "critic": self.critic.state_dict(),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "reward_scaler": self.reward_scaler.state_dict() if self.reward_scaler else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.critic.load_state_dict(state["critic"])
        self.actor_optimizer.load_state_dict(state["actor_optimizer"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        if state["reward_scaler"] is not None:
            n = len(state["reward_scaler"]["ret"])
            self.reward_scaler = RunningRewardScaler(n, self.cfg.gamma)
            self.reward_scaler.load_state_dict(state["reward_scaler"])
