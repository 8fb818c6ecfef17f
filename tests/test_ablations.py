"""What the paper's ablations need (Appendix B): DPPO's other advantage estimators, pre-training on part of the
demonstrations, fine-tuning from scratch and DDIM fine-tuning, each through the command line where a user meets it.
That each estimator learns is in tests/test_learning.py."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.ablations import ABLATIONS, families
from analysis.records import Cell, Run, hyperparameters
from envs.tasks import get_task
from experiments.evaluate import evaluate_checkpoint
from experiments.run import main
from methods.base import MethodContext, Rollout
from methods.dppo import DPPO, DPPOConfig
from methods.dppo_advantage import full_state_gae
from methods.policies import DiffusionPolicy, DiffusionPolicyConfig
from methods.pretrain import PretrainConfig, episodes_to_use
from tests.test_cli import run_cli
from tests.test_methods import TINY_FINETUNE, TINY_PRETRAIN, TINY_RUN


def full_state_dppo() -> DPPO:
    policy = DiffusionPolicy(3, 2, 4, DiffusionPolicyConfig(denoising_steps=10, hidden=[32, 32, 32]))
    cfg = DPPOConfig(ft_denoising_steps=4, advantage="full_state", gamma=0.9, gamma_denoise=0.8, gae_lambda=0.7)
    return DPPO(cfg, MethodContext.standalone(policy, torch.device("cpu"), act_steps=4))


def test_full_state_advantages_match_a_per_env_loop_over_the_denoising_mdp():
    torch.manual_seed(0)
    m = full_state_dppo()
    T, N, K = 5, 3, 4
    terminated = torch.zeros(T, N, dtype=torch.bool)
    truncated = torch.zeros(T, N, dtype=torch.bool)
    terminated[1, 0], truncated[2, 1] = True, True
    rollout = Rollout(
        obs=torch.randn(T, N, 3),
        next_obs=torch.randn(T, N, 3),
        rewards=torch.randn(T, N),
        terminated=terminated,
        truncated=truncated,
        firsts=torch.zeros(T, N, dtype=torch.bool),
        kept={"chain": torch.randn(T, N, K + 1, 4, 2)},
    )
    fresh_starts = {}

    def chain_start(obs):  # what the frozen steps would sample, remembered for the loop below
        x = torch.randn(len(obs), 4, 2)
        for o, xi in zip(obs, x):
            fresh_starts[tuple(o.tolist())] = xi
        return x

    m.chain_start = chain_start
    adv, ret, values = full_state_gae(m, rollout, rollout.rewards)

    def V(o, x, i):
        with torch.no_grad():
            return m.critic(o[None], x[None], torch.tensor([i])).item()

    c = m.cfg
    for n in range(N):
        # the flattened MDP of env n: step j = (t, i), reward only when a chain ends
        seq = [(t, i) for t in range(T) for i in range(K)]
        expected = {}
        running = 0.0
        for t, i in reversed(seq):
            obs, chain = rollout.obs[t, n], rollout.kept["chain"][t, n]
            v = V(obs, chain[i], i)
            if i < K - 1:
                delta = c.gamma_denoise * V(obs, chain[i + 1], i + 1) - v
                running = delta + c.gamma_denoise * running
            else:
                ended = bool(terminated[t, n] or truncated[t, n])
                if ended or t == T - 1:
                    start = fresh_starts[tuple(rollout.next_obs[t, n].tolist())]
                else:
                    start = rollout.kept["chain"][t + 1, n, 0]
                boot = 0.0 if terminated[t, n] else c.gamma * V(rollout.next_obs[t, n], start, 0)
                delta = rollout.rewards[t, n].item() + boot - v
                running = delta + (0.0 if ended else c.gamma * c.gae_lambda * running)
            expected[(t, i)] = (running, v)
        for (t, i), (a, v) in expected.items():
            assert adv[t, n, i].item() == pytest.approx(a, abs=1e-5), (t, n, i)
            assert values[t, n, i].item() == pytest.approx(v, abs=1e-5)
            assert ret[t, n, i].item() == pytest.approx(a + v, abs=1e-5)
    # within a chain the target is the chain end's, discounted: DPPO's gamma_denoise^(K'-1-i) weighting
    discount = c.gamma_denoise ** torch.arange(K - 1, -1, -1, dtype=torch.float32)
    torch.testing.assert_close(ret, ret[..., -1:] * discount, rtol=1e-4, atol=1e-5)


def test_q_advantage_is_the_learned_q_of_the_executed_chunk_and_resumes():
    torch.manual_seed(0)
    policy = DiffusionPolicy(3, 2, 4, DiffusionPolicyConfig(denoising_steps=10, hidden=[32, 32, 32]))
    cfg = DPPOConfig(ft_denoising_steps=4, advantage="q", q_batch_size=16, q_replay_ratio=2.0, critic_hidden=[16, 16])
    m = DPPO(cfg, MethodContext.standalone(policy, torch.device("cpu"), act_steps=2))
    T, N = 4, 8
    obs = torch.randn(T, N, 3)
    actions, kept = m.act(obs.reshape(T * N, 3), deterministic=False)
    one = torch.ones(T, N, dtype=torch.bool)
    rollout = Rollout(obs, torch.randn(T, N, 3), torch.randn(T, N), one, ~one, one,
                      {k: v.reshape(T, N, *v.shape[1:]) for k, v in kept.items()})  # fmt: skip
    adv, ret, val = m.estimate_advantages(rollout, rollout.rewards)
    assert ret is None and val is None
    with torch.no_grad():
        q = torch.min(*m.critic(obs.reshape(T * N, 3), actions[:, :2].reshape(T * N, -1)))
    torch.testing.assert_close(adv.reshape(-1), q)
    stats = m.update(rollout, itr=0)
    assert np.isfinite(stats["q_loss"]) and stats["v_loss"] == 0.0 and np.isnan(stats["explained_var"])
    # the Q critic's buffer and target come back on resume
    again = DPPO(cfg, MethodContext.standalone(policy, torch.device("cpu"), act_steps=2))
    again.load_state_dict(m.state_dict())
    assert len(again.q_estimator.buffer) == len(m.q_estimator.buffer) == 2 * T * N
    for a, b in zip(again.q_estimator.target.parameters(), m.q_estimator.target.parameters()):
        assert torch.equal(a, b)


def test_episode_subsets_are_fixed_by_the_seed():
    cfg = PretrainConfig(max_episodes=10)
    a, b, other = episodes_to_use(100, cfg, 3), episodes_to_use(100, cfg, 3), episodes_to_use(100, cfg, 4)
    assert len(a) == 10 and len(set(a)) == 10 and list(a) == sorted(a) and a.max() < 100
    assert np.array_equal(a, b) and not np.array_equal(a, other)
    assert len(episodes_to_use(100, PretrainConfig(episode_fraction=0.25), 0)) == 25
    assert len(episodes_to_use(3, PretrainConfig(episode_fraction=0.01), 0)) == 1
    assert episodes_to_use(100, PretrainConfig(), 0) is None


def test_pretraining_on_part_of_the_demonstrations(data_dir, tmp_path):
    proc = run_cli("method=dppo", "task=avoid_m2", f"results_dir={tmp_path}", "stage=pretrain", "name=pre", "seed=2",
                   "pretrain.max_episodes=7", *TINY_PRETRAIN, *TINY_RUN)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "pre" / "summary.json").read_text())["pretrain"]
    assert summary["n_episodes"] == 7
    assert summary["episodes"] == episodes_to_use(100, PretrainConfig(max_episodes=7), 2).tolist()
    # the pre-training saw only those episodes' chunks of 4
    lengths = get_task("avoid_m2").load_dataset().traj_lengths[summary["episodes"]]
    assert summary["n_samples"] == sum(max(0, int(n) - 3) for n in lengths)


def test_fine_tuning_from_scratch(data_dir, tmp_path):
    proc = run_cli("method=gaussian_ppo", "task=hopper", f"results_dir={tmp_path}", "name=scratch", "pretrained=false",
                   "horizon=1", "policy.hidden=[16,16,16]", *TINY_RUN, *TINY_FINETUNE)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "scratch"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["pretrain"] is None and not (run / "checkpoints" / "pretrained.pt").exists()
    assert (run / "checkpoints" / "final.pt").is_file()
    config = json.loads((run / "config.json").read_text())
    assert hyperparameters(config)["pretrained"] is False


def test_ddim_fine_tuning_of_a_ddpm_pretrained_policy(data_dir, tmp_path, capsys):
    common = ["method=dppo", "task=avoid_m2", f"results_dir={tmp_path}", *TINY_RUN]
    assert main([*common, *TINY_PRETRAIN, "stage=pretrain", "name=pre"]) == 0
    ckpt = tmp_path / "pre" / "checkpoints" / "pretrained.pt"
    ddim = ["policy.use_ddim=true", "policy.ddim_steps=5", "algo.ft_denoising_steps=5"]
    proc = run_cli(*common, *TINY_FINETUNE, "stage=finetune", f"checkpoint={ckpt}", "name=ft", *ddim)
    assert proc.returncode == 0, proc.stderr
    final = torch.load(tmp_path / "ft" / "checkpoints" / "final.pt", weights_only=False)
    assert final["policy_config"]["use_ddim"] and final["policy_config"]["ddim_steps"] == 5
    assert final["n_base_steps"] == 0  # all 5 DDIM steps fine-tuned
    # evaluating the saved policy (DDIM, eta 0) repeats the run's own final evaluation, path for path
    ran = json.loads((tmp_path / "ft" / "rollouts_final.json").read_text())
    again = evaluate_checkpoint(tmp_path / "ft" / "checkpoints" / "final.pt", out_dir=tmp_path / "eval")
    assert again["success"] == json.loads((tmp_path / "ft" / "summary.json").read_text())["final_eval"]["eval_success"]
    assert json.loads((tmp_path / "eval" / "rollouts_eval.json").read_text()) == ran
    # a policy DPPO fine-tuned with its first steps frozen keeps its own sampling
    ddpm_ft = tmp_path / "ft3" / "checkpoints" / "final.pt"
    ft3 = [*common, *TINY_FINETUNE, "stage=finetune", f"checkpoint={ckpt}", "name=ft3", "algo.ft_denoising_steps=3"]
    assert main(ft3) == 0
    assert main([*common, *TINY_FINETUNE, "stage=finetune", "name=again", *ddim, f"checkpoint={ddpm_ft}"]) == 2
    assert "its own policy.use_ddim and policy.ddim_steps" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, needle",
    [
        (["algo.advantage=vs"], "algo.advantage must be one of state, full_state, q, got 'vs'"),
        (["pretrain.episode_fraction=0"], "pretrain.episode_fraction=0.0 is out of range: it must be in (0, 1]"),
        (["pretrain.episode_fraction=1.5"], "pretrain.episode_fraction=1.5 is out of range: it must be in (0, 1]"),
        (["pretrain.max_episodes=101"], "pretrain.max_episodes=101 exceeds the dataset's 100 episodes"),
        (["pretrain.max_episodes=5", "pretrain.episode_fraction=0.5"], "set one of pretrain.max_episodes and"),
        (["policy.use_ddim=true", "policy.ddim_steps=3"], "must divide policy.denoising_steps=20: one of 1, 2, 4, 5,"),
        (["pretrained=false", "stage=pretrain"], "pretrained=false fine-tunes a randomly initialised policy"),
        (["pretrained=false", "checkpoint=/nonexistent.pt"], "drop checkpoint="),
        (["algo.advantage=q", "algo.q_batch_size=100", "algo.q_buffer_size=10"], "algo.q_buffer_size=10 is smaller"),
    ],
)
def test_bad_ablation_settings_are_refused_in_one_line_before_the_run_starts(args, needle, data_dir, tmp_path, capsys):
    assert main(["method=dppo", "task=avoid_m2", f"results_dir={tmp_path}", "name=bad", *args, *TINY_RUN]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "bad").exists()


def cell(folder: str, method: str = "dppo", seed: int = 0, **hparams) -> Cell:
    run = Run(Path("/results") / folder / f"{method}_s{seed}", {"method": method, "seed": seed}, "finished")
    return Cell("avoid_m2", method, method, {"algo.clip": 0.1, **hparams}, "v1", [run])


def test_an_ablation_family_is_one_grid_differing_only_in_the_ablated_value_and_what_goes_with_it():
    by_name = {ab.name: ab for ab in ABLATIONS}
    cells = [
        cell("ddim_mini", **{"policy.use_ddim": False, "policy.ddim_steps": 5, "algo.ft_denoising_steps": 10}),
        cell("ddim_mini", seed=1, **{"policy.use_ddim": True, "policy.ddim_steps": 5, "algo.ft_denoising_steps": 5}),
        # the same configs in another grid: a family of its own, never mixed with the first
        cell("other", **{"policy.use_ddim": False, "policy.ddim_steps": 5, "algo.ft_denoising_steps": 10}),
        cell("other", **{"policy.use_ddim": True, "policy.ddim_steps": 5, "algo.ft_denoising_steps": 5}),
        # one more key differs: no family
        cell("third", **{"policy.use_ddim": False, "algo.ft_denoising_steps": 10}),
        cell("third", **{"policy.use_ddim": True, "algo.ft_denoising_steps": 5, "algo.clip": 0.2}),
    ]
    fams = families(cells, by_name["ddim"])
    assert sorted(k[3] for k in fams) == ["ddim_mini", "other"]
    assert [c.hparams["policy.use_ddim"] for c in fams[("avoid_m2", "dppo", "v1", "ddim_mini")]] == [False, True]
    assert families(cells, by_name["ft_denoising_steps"]) == {}  # use_ddim changes with K' here
    # the exact-likelihood comparison is between methods, whatever their hyperparameters
    methods = [cell("x", "dppo", **{"algo.gamma_denoise": 0.9}), cell("x", "exact_pg", **{"algo.ode_t0": 1e-4})]
    compared = families(methods, by_name["exact_likelihood"])[("avoid_m2", "dppo/exact_pg", "v1", "x")]
    assert [c.method for c in compared] == ["dppo", "exact_pg"]
