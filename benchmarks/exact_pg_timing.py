"""Wall-clock of one actor log-likelihood + backward on a minibatch: exact_pg (probability-flow ODE, paper B.5)
vs DPPO's per-denoising-step Gaussian log-likelihood, on the same env steps of a Hopper diffusion policy.

    python benchmarks/exact_pg_timing.py CHECKPOINT [--batch 500] [--repeats 5] [--threads 1]

CHECKPOINT: a Hopper diffusion pretrained.pt. B env steps: exact_pg solves the ODE for B chunks (the gym preset:
Euler, one step per denoising step, 2 Rademacher probes); DPPO evaluates B x K' (env step, denoising step) pairs
(K' = 10, the gym preset), and for reference also B pairs. Prints the median of the repeats.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from envs.tasks import get_task
from experiments.checkpoints import load_policy
from experiments.config import resolve
from methods.base import MethodContext
from methods.dppo import DPPO
from methods.exact_pg import ExactPG


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    task = get_task("hopper")
    policy, _, _ = load_policy(args.checkpoint, "diffusion", task.obs_dim, task.act_dim, task.horizon, "cpu")
    obs_all, _ = task.load_dataset(None).chunks(task.horizon)
    obs = torch.as_tensor(obs_all[torch.randperm(len(obs_all))[: args.batch]]).float()

    exact = ExactPG(resolve({"method": "exact_pg", "task": "hopper"})[0].algo, MethodContext.standalone(policy))
    dppo = DPPO(resolve({"method": "dppo", "task": "hopper"})[0].algo, MethodContext.standalone(copy.deepcopy(policy)))
    actions, chain = dppo.act(obs, deterministic=False)
    chain = chain["chain"]  # (B, K' + 1, Ta, Da)
    B, n_ft = args.batch, dppo.n_ft

    def exact_step():
        exact.actor_optimizer.zero_grad(set_to_none=True)
        exact.log_prob(obs, actions).sum().backward()

    def dppo_step(pairs: int):
        env = torch.arange(B).repeat_interleave(n_ft)[:pairs]
        ft = torch.arange(n_ft).repeat(B)[:pairs]

        def step():
            dppo.actor_optimizer.zero_grad(set_to_none=True)
            logp = dppo.step_log_prob(obs[env], chain[env, ft], chain[env, ft + 1], ft)
            dppo.reduce_log_prob(logp).sum().backward()

        return step

    hidden = policy.cfg.hidden
    print(f"Hopper diffusion policy K={policy.cfg.denoising_steps} MLP {hidden}, {B} env steps, "
          f"{args.threads} thread(s), median of {args.repeats}")  # fmt: skip
    t_exact = median_time(exact_step, args.repeats)
    t_dppo_all = median_time(dppo_step(B * n_ft), args.repeats)
    t_dppo_b = median_time(dppo_step(B), args.repeats)
    print(f"exact_pg  ODE log-lik + backward, {B} chunks:           {t_exact * 1e3:9.1f} ms")
    print(f"dppo      step log-lik + backward, {B * n_ft} pairs (K'={n_ft}):  {t_dppo_all * 1e3:9.1f} ms")
    print(f"dppo      step log-lik + backward, {B} pairs:            {t_dppo_b * 1e3:9.1f} ms")
    print(f"ratio exact / dppo (same env steps): {t_exact / t_dppo_all:.1f}x; per sample: {t_exact / t_dppo_b:.1f}x")


if __name__ == "__main__":
    main()
