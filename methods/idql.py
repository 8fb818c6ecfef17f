"""IDQL: implicit diffusion Q-learning (SPEC 4, paper D.3 eqs. A7-A9).

V(s) regresses min(Q1, Q2) of the target critic by the expectile loss (tau); Q regresses
r + gamma (1 - terminated) V(s'); the actor fits every buffer action with the unweighted diffusion loss.
Acting samples `n_candidates` chunks per observation and scores them with the target critic: evaluation
takes the argmax of Q; training selects one at random by `exploration`:

- "expectile" (the reference, model/diffusion/diffusion_idql.py): probability proportional to
  `exploration_tau` where Q - V > 0, else 1 - exploration_tau;
- "boltzmann" (the paper's D.3 text): softmax((Q - V) / temperature);
- "greedy": the argmax, as in evaluation.

Defaults: irom-princeton/dppo cfg/gym/finetune/hopper-v2/ft_idql_diffusion_mlp.yaml (the expectile,
0.8, is the reference's `expectile_loss` default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from common.limits import AT_LEAST_ONE, FRACTION, POSITIVE, Range
from methods.base import MethodContext
from methods.diffusion_rl import OffPolicyConfig, OffPolicyMethod, bellman_target, double_q_loss, step

EXPLORATIONS = ("expectile", "boltzmann", "greedy")


@dataclass
class IDQLConfig(OffPolicyConfig):
    expectile: float = 0.8
    """tau of V's expectile regression on Q - V (the reference's expectile_loss default)."""
    critic_tau: float = 0.001
    """Polyak rate of the target Q critic, each gradient step (reference: critic_tau)."""
    n_candidates: int = 20
    """Chunks sampled per observation to choose from, in training and evaluation (reference: eval_sample_num)."""
    exploration: str = "expectile"
    """How training picks a candidate: "expectile" (reference), "boltzmann" (paper) or "greedy"."""
    exploration_tau: float = 0.7
    """"expectile" exploration: weight of candidates with Q > V (others 1 - this; reference: critic_hyperparam)."""
    temperature: float = 1.0
    """"boltzmann" exploration: softmax temperature on Q - V (in the buffer's scaled-reward units)."""
    eval_deterministic: bool = True
    """Evaluation samples candidates with the deterministic sampler and takes the argmax; False: evaluation acts as
    training does (stochastic candidates, `exploration`), as the reference's eval_deterministic: False."""
    replay_ratio: float = 128.0
    """Gradient steps per iteration = int(new transitions / batch_size * replay_ratio) (reference)."""

    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"exploration": EXPLORATIONS}
    LIMITS: ClassVar[dict[str, Range]] = {
        **OffPolicyConfig.LIMITS,
        "expectile": Range(0, 1, lo_open=True, hi_open=True),
        "critic_tau": FRACTION,
        "n_candidates": AT_LEAST_ONE,
        "exploration_tau": FRACTION,
        "temperature": POSITIVE,
    }


def expectile_loss(diff: torch.Tensor, tau: float) -> torch.Tensor:
    """|tau - 1(diff < 0)| diff^2, element-wise: tau for diff > 0, 1 - tau otherwise."""
    return torch.where(diff > 0, tau, 1 - tau) * diff**2


class IDQL(OffPolicyMethod):
    name = "idql"
    config_cls = IDQLConfig

    def __init__(self, cfg: IDQLConfig, ctx: MethodContext):
        super().__init__(cfg, ctx)
        self.critic_q = self.double_q()
        self.target_q = self.add_critic("critic_q", self.critic_q, target=True)
        self.critic_v = self.value_critic()
        self.add_critic("critic_v", self.critic_v)

    # ------------------------------------------------------------ acting
    def selection_probs(self, q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Training's probability of each candidate (S, B) from its Q and the state's V."""
        c = self.cfg
        if c.exploration == "boltzmann":
            return torch.softmax((q - v) / c.temperature, dim=0)
        if c.exploration == "expectile":
            w = torch.where(q - v > 0, c.exploration_tau, 1 - c.exploration_tau)
            return w / w.sum(0)
        return torch.nn.functional.one_hot(q.argmax(0), q.shape[0]).T.float()

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool):
        S, B = self.cfg.n_candidates, obs.shape[0]
        deterministic = deterministic and self.cfg.eval_deterministic
        many = obs.repeat(S, 1)  # candidate s of observation b at row s * B + b
        candidates, _ = self.policy.sample(many, deterministic, min_std=self.cfg.min_sampling_std)
        q = torch.min(*self.target_q(many, self.executed(candidates))).view(S, B)
        if deterministic:
            pick = q.argmax(0)
        else:
            probs = self.selection_probs(q, self.critic_v(many).view(S, B))
            pick = torch.multinomial(probs.T, 1).squeeze(1)
        actions = candidates.view(S, B, *candidates.shape[1:])[pick, torch.arange(B, device=obs.device)]
        return actions, ({} if deterministic else {"actions": actions})

    def acting_state(self) -> dict[str, Any]:
        return {"target_q": self.target_q.state_dict(), "critic_v": self.critic_v.state_dict()}

    def load_acting_state(self, state: dict[str, Any]) -> None:
        self.target_q.load_state_dict(state["target_q"])
        self.critic_v.load_state_dict(state["critic_v"])

    # ------------------------------------------------------------ learning
    def gradient_step(self, itr: int) -> None:
        c = self.cfg
        b = self.buffer.get(self.buffer.sample_indices(c.batch_size))
        a = self.executed(b["actions"])
        with torch.no_grad():
            q_target = torch.min(*self.target_q(b["obs"], a))
        v = self.critic_v(b["obs"])
        v_loss = expectile_loss(q_target - v, c.expectile).mean()
        step(self.optimizers["critic_v"], v_loss)

        with torch.no_grad():
            target = bellman_target(b["rewards"], b["terminated"], c.gamma, self.critic_v(b["next_obs"]))
        q1, q2 = self.critic_q(b["obs"], a)
        q_loss = double_q_loss(q1, q2, target)
        step(self.optimizers["critic_q"], q_loss)
        self.soft_update("critic_q", c.critic_tau)

        actor_loss = self.policy.noise_prediction_error(b["obs"], b["actions"]).mean()
        self.actor_step(actor_loss, itr)
        self.log(
            v_loss=v_loss,
            q_loss=q_loss,
            actor_loss=actor_loss,
            q_mean=q1,
            q_std=q1.std(),
            v_mean=v,
            adv_positive=(q_target > v).float(),
        )
