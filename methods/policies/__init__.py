"""Policy parameterisations, by kind."""

from methods.policies.diffusion import DiffusionPolicy, DiffusionPolicyConfig
from methods.policies.gaussian import GaussianPolicy, GaussianPolicyConfig

POLICIES = {
    "diffusion": (DiffusionPolicy, DiffusionPolicyConfig),
    "gaussian": (GaussianPolicy, GaussianPolicyConfig),
}

__all__ = ["POLICIES", "DiffusionPolicy", "DiffusionPolicyConfig", "GaussianPolicy", "GaussianPolicyConfig"]
