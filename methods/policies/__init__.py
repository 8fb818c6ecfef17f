"""Policy parameterisations, by kind."""

from methods.policies.diffusion import DiffusionPolicy, DiffusionPolicyConfig
from methods.policies.gaussian import GaussianPolicy, GaussianPolicyConfig
from methods.policies.gmm import GMMPolicy, GMMPolicyConfig

POLICIES = {
    "diffusion": (DiffusionPolicy, DiffusionPolicyConfig),
    "gaussian": (GaussianPolicy, GaussianPolicyConfig),
    "gmm": (GMMPolicy, GMMPolicyConfig),
}

__all__ = [
    "POLICIES",
    "DiffusionPolicy",
    "DiffusionPolicyConfig",
    "GMMPolicy",
    "GMMPolicyConfig",
    "GaussianPolicy",
    "GaussianPolicyConfig",
]
