"""PPO with a Gaussian-mixture policy over action chunks (paper Sec. 5.2 and 6): Gaussian PPO with the GMM
policy's log-density. As the reference computes it (irom-princeton/dppo model/rl/gmm_vpg.py `get_logprobs`,
model/rl/gmm_ppo.py `loss`), a sample's log-probability is the mixture's joint log-density of the whole
predicted chunk, clamped to [-5, 2] (`logprob_reduction: sum_clamped`).

Defaults: cfg/d3il/finetune/avoid_m2/ft_ppo_gmm_mlp.yaml (PPO values as Gaussian PPO's there: clip 0.1, actor
lr 1e-5, critic lr 1e-3, 10 epochs, target KL 1; std fixed at 0.1).
"""

from __future__ import annotations

from dataclasses import dataclass

from methods.gaussian_ppo import GaussianPPO, GaussianPPOConfig


@dataclass
class GMMPPOConfig(GaussianPPOConfig):
    logprob_reduction: str = "sum_clamped"
    """sum_clamped (reference GMM): the whole chunk's mixture log-density, clamped to [-5, 2]; mean_clamped: that
    divided by horizon x action dims, clamped; sum: exact mixture log-density of the executed actions."""


class GMMPPO(GaussianPPO):
    name = "gmm_ppo"
    policy_kind = "gmm"
    config_cls = GMMPPOConfig
