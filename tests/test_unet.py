"""The 1-D temporal UNet noise predictor: shapes, its horizon constraint, FiLM conditioning and that it learns.
Agreement with the reference's `Unet1D` is checked by benchmarks/policies_vs_reference.py."""

import pytest
import torch

from methods.policies.unet import UNet1D

CAN = {"obs_dim": 23, "act_dim": 7, "horizon": 4}
FURNITURE = {"obs_dim": 58, "act_dim": 10, "horizon": 16, "dim": 64, "dim_mults": (1, 2, 4), "groupnorm_eps": 1e-4}


def inputs(net: UNet1D, obs_dim: int, batch: int = 5, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, net.horizon, net.act_dim, generator=gen)
    k = torch.randint(0, 20, (batch,), generator=gen)
    obs = torch.randn(batch, obs_dim, generator=gen)
    return x, k, obs


@pytest.mark.parametrize("kwargs", [CAN, FURNITURE], ids=["horizon4", "horizon16"])
def test_output_shape(kwargs):
    torch.manual_seed(0)
    net = UNet1D(**kwargs)
    x, k, obs = inputs(net, kwargs["obs_dim"])
    eps = net(x, k, obs.view(5, 1, -1))  # an observation history is flattened
    assert eps.shape == x.shape
    assert torch.isfinite(eps).all()


def test_horizon_must_be_divisible_by_the_downsampling():
    with pytest.raises(ValueError, match=r"horizon 6 must be divisible by 4"):
        UNet1D(obs_dim=3, act_dim=2, horizon=6, dim=16, dim_mults=(1, 2, 4))
    UNet1D(obs_dim=3, act_dim=2, horizon=6, dim=16, dim_mults=(1, 2))  # halved once: fine


def test_widths_must_be_divisible_by_groups():
    with pytest.raises(ValueError, match="n_groups"):
        UNet1D(obs_dim=3, act_dim=2, horizon=4, dim=12, n_groups=8)


def test_output_depends_on_obs_and_step():
    torch.manual_seed(0)
    net = UNet1D(**CAN)
    x, k, obs = inputs(net, CAN["obs_dim"])
    with torch.no_grad():
        eps = net(x, k, obs)
        assert not torch.allclose(eps, net(x, k, obs + 1.0), atol=1e-4)
        assert not torch.allclose(eps, net(x, (k + 7) % 20, obs), atol=1e-4)
        # each sample is conditioned on its own observation only
        other = obs.clone()
        other[1:] += 1.0
        assert torch.allclose(eps[0], net(x, k, other)[0], atol=1e-6)


def test_overfits_a_fixed_batch():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net = UNet1D(**CAN, dim=16)  # 117k parameters: 300 steps in about 7 s on one slow core
        x, k, obs = inputs(net, CAN["obs_dim"], batch=16, seed=1)
        target = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        losses = []
        for _ in range(300):
            loss = (net(x, k, obs) - target).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    finally:
        torch.set_num_threads(threads)
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])
