"""The entry points as a user runs them: a short end-to-end fine-tune, resume
after a kill, and the errors bad input must produce."""

import json
import os
import shutil
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import pytest
import torch

from envs.normalizer import MinMaxNormalizer
from experiments.checkpoints import save_policy
from methods.policies import DiffusionPolicy, DiffusionPolicyConfig
from tests.waiting import kill_at_pause_point

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "pretrain.n_steps=50",
    "policy.hidden=[64,64,64]",
    "train.n_envs=4",
    "train.eval_episodes=4",
    "train.n_iterations=2",
    "train.save_every=1",
    "progress=false",
]


def run_cli(*args: str, module: str = "experiments.run", timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", module, *args] if module else [sys.executable, *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def read_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    proc = run_cli("method=dppo", "task=avoid_m2", "seed=0", f"results_dir={results}", *TINY)
    assert proc.returncode == 0, proc.stderr
    return results / "dppo_avoid_m2_s0"


def test_end_to_end_fine_tune_leaves_a_complete_record(finished_run):
    d = finished_run
    for name in ("config.json", "metrics.jsonl", "initial_eval.json", "summary.json"):
        assert (d / name).is_file(), name
    for name in ("pretrained.pt", "state.pt", "final.pt"):
        assert (d / "checkpoints" / name).is_file(), name
    assert (d / "plots" / "rollouts_initial.png").stat().st_size > 0
    for name in ("rollouts_initial.json", "rollouts_final.json"):  # the paths behind the plots, for analysis/
        rollouts = json.loads((d / name).read_text())
        assert len(rollouts["paths"]) == len(rollouts["success"]) > 0
        assert all(len(p) > 1 and len(p[0]) == 2 for p in rollouts["paths"])
    rows = read_rows(d)
    assert [r["itr"] for r in rows] == [0, 1]
    for key in (
        "env_steps",
        "wall_time",
        "time_sample",
        "time_env",
        "time_update",
        "train_return",
        "train_success",
        "pg_loss",
        "v_loss",
        "clipfrac",
        "approx_kl",
    ):
        assert key in rows[0], key
    assert rows[1]["env_steps"] > rows[0]["env_steps"] > 0
    assert "eval_success" in rows[-1]
    summary = json.loads((d / "summary.json").read_text())
    assert summary["final_eval"]["eval_episodes"] == 4
    assert summary["env_steps"] == rows[-1]["env_steps"]
    assert summary["hardware"]["cpu_count"] >= 1
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert summary["harness"]["commit"] == (head or None)
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["method"] == "dppo" and cfg["policy"]["hidden"] == [64, 64, 64]


def test_fine_tuned_checkpoint_can_start_another_run(finished_run, tmp_path):
    ckpt = finished_run / "checkpoints" / "final.pt"
    proc = run_cli(
        "method=dppo", "task=avoid_m2", "stage=finetune", f"checkpoint={ckpt}", f"results_dir={tmp_path}", *TINY[2:]
    )
    assert proc.returncode == 0, proc.stderr


def test_resume_after_kill_has_no_lost_or_duplicated_rows(tmp_path):
    args = [
        "method=gaussian_ppo",
        "task=avoid_m2",
        f"results_dir={tmp_path}",
        *TINY[:-2],
        "train.n_iterations=12",
        "train.save_every=2",
        "progress=false",
    ]
    # the run stops itself after iteration 4's row (its last checkpoint, at save_every 2, is before it)
    kill_at_pause_point(args, after_itr=4, cwd=REPO)
    run_dir = tmp_path / "gaussian_ppo_avoid_m2_s0"
    assert not (run_dir / "summary.json").exists()
    assert [r["itr"] for r in read_rows(run_dir)] == [0, 1, 2, 3, 4]
    assert torch.load(run_dir / "checkpoints" / "state.pt", weights_only=False)["next_itr"] == 4

    again = run_cli(*args)
    assert again.returncode == 2 and "--resume" in again.stderr  # refuses to overwrite silently
    resumed = run_cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    itrs = [r["itr"] for r in read_rows(run_dir)]
    assert itrs == list(range(12))
    steps = [r["env_steps"] for r in read_rows(run_dir)]
    assert all(b > a for a, b in pairwise(steps))
    assert (run_dir / "summary.json").is_file()


def assert_clean_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    err = proc.stderr.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err


@pytest.mark.parametrize(
    "args, needles",
    [
        (["method=dpo"], ["unknown method 'dpo'", "dppo"]),
        (["task=avoid_m9"], ["unknown task 'avoid_m9'", "avoid_m2"]),
        (["train.n_iteration=3"], ["unknown config key 'train.n_iteration'", "train.n_iterations"]),
        (["train.n_iterations=many"], ["train.n_iterations expects int"]),
        (["stage=finetune"], ["checkpoint="]),
        (["checkpoint=/nonexistent/policy.pt"], ["does not exist"]),
        (["dataset=/nonexistent/train.npz"], ["does not exist"]),
        (["algo.logprob_reduction=mean"], ["algo.logprob_reduction must be", "mean_clamped"]),
        (["policy.use_ddim=true", "policy.ddim_steps=3"], ["policy.ddim_steps=3 must divide"]),
    ],
)
def test_bad_input_gives_one_clear_error(args, needles, tmp_path):
    proc = run_cli("method=dppo", "task=avoid_m2", f"results_dir={tmp_path}", *TINY, *args)
    assert_clean_error(proc, *needles)
    assert not list(tmp_path.rglob("summary.json"))
    assert not list(tmp_path.iterdir())  # nothing created at all


def test_checkpoint_of_another_kind_or_dims_is_refused(finished_run, tmp_path):
    diffusion_ckpt = finished_run / "checkpoints" / "pretrained.pt"
    proc = run_cli(
        "method=gaussian_ppo", "task=avoid_m2", f"checkpoint={diffusion_ckpt}", f"results_dir={tmp_path}", *TINY[2:]
    )
    assert_clean_error(proc, "holds a diffusion policy", "gaussian")

    wrong = DiffusionPolicy(5, 2, 4, DiffusionPolicyConfig(hidden=[16]))
    norm = MinMaxNormalizer([0] * 5, [1] * 5, [0, 0], [1, 1])
    save_policy(tmp_path / "wrong.pt", wrong, "other_task", norm, {})
    proc = run_cli(
        "method=dppo",
        "task=avoid_m2",
        f"checkpoint={tmp_path / 'wrong.pt'}",
        f"results_dir={tmp_path / 'r'}",
        *TINY[2:],
    )
    assert_clean_error(proc, "obs dim 5", "needs 4")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    proc = run_cli(
        "method=dppo", "task=avoid_m2", f"checkpoint={tmp_path / 'junk.pt'}", f"results_dir={tmp_path / 'r'}", *TINY[2:]
    )
    assert_clean_error(proc, "not a readable checkpoint")
    assert not (tmp_path / "r").exists()


def test_existing_run_directory_is_refused_without_resume_or_force(finished_run):
    results = finished_run.parent
    proc = run_cli("method=dppo", "task=avoid_m2", "seed=0", f"results_dir={results}", *TINY)
    assert_clean_error(proc, "already exists", "--resume", "--force")
    assert torch.load(finished_run / "checkpoints" / "final.pt", weights_only=False)["kind"] == "diffusion"


def test_run_all_rejects_unknown_grid_and_lists_grids():
    proc = run_cli("run_all.py", "--grid", "quickstrat", module="")
    assert_clean_error(proc, "unknown grid 'quickstrat'", "quickstart")
    listing = run_cli("run_all.py", "--list", module="")
    assert listing.returncode == 0 and "quickstart" in listing.stdout


def test_run_all_dry_run_lists_runs_and_creates_nothing(tmp_path):
    proc = run_cli("run_all.py", "--grid", "quickstart", "--dry-run", "--results", str(tmp_path), module="")
    assert proc.returncode == 0, proc.stderr
    assert "8 runs" in proc.stdout
    assert proc.stdout.count("stage=finetune") == 6 and proc.stdout.count("stage=pretrain") == 2
    assert not list(tmp_path.iterdir())


def test_run_all_smoke_grid_end_to_end_and_resume(tmp_path):
    proc = run_cli("run_all.py", "--grid", "smoke", "--results", str(tmp_path), "--jobs", "2", module="")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| dppo | avoid_m2 | 1 |" in proc.stdout and "| gaussian_ppo | avoid_m2 | 1 |" in proc.stdout
    summaries = sorted(p.parent.name for p in (tmp_path / "smoke").rglob("summary.json"))
    assert summaries == [
        "dppo_avoid_m2_s0",
        "gaussian_ppo_avoid_m2_s0",
        "pretrain_diffusion_avoid_m2",
        "pretrain_gaussian_avoid_m2",
    ]
    again = run_cli("run_all.py", "--grid", "smoke", "--results", str(tmp_path), module="")
    assert_clean_error(again, "already exist", "--resume")
    resumed = run_cli("run_all.py", "--grid", "smoke", "--results", str(tmp_path), "--resume", module="")
    assert resumed.returncode == 0 and resumed.stdout.count("skip") == 4

    # A failed pre-training is rerun on --resume, and the fine-tunings waiting on it then run (not "blocked").
    grid = tmp_path / "smoke"
    (grid / "pretrain_diffusion_avoid_m2" / "summary.json").unlink()
    (grid / "pretrain_diffusion_avoid_m2" / "error.txt").write_text("RuntimeError: node died\n")
    shutil.rmtree(grid / "dppo_avoid_m2_s0")
    rerun = run_cli("run_all.py", "--grid", "smoke", "--results", str(tmp_path), "--resume", module="")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "block" not in rerun.stdout and (grid / "dppo_avoid_m2_s0" / "summary.json").is_file()
    # how a run is executed (threads) may change between a run and its resumption; hyperparameters may not
    (grid / "dppo_avoid_m2_s0" / "summary.json").unlink()
    threads = run_cli("run_all.py", "--grid", "smoke", "--results", str(tmp_path), "--resume", "threads=2", module="")
    assert threads.returncode == 0, threads.stdout + threads.stderr
    (grid / "dppo_avoid_m2_s0" / "summary.json").unlink()
    lr = run_cli(
        "run_all.py", "--grid", "smoke", "--results", str(tmp_path), "--resume", "algo.actor_lr=0.1", module=""
    )
    log = (grid / "logs" / "dppo_avoid_m2_s0.log").read_text()
    assert lr.returncode == 1 and "different config (keys algo.actor_lr" in log


def test_wandb_logs_offline_without_a_key(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.run",
            "method=gaussian_ppo",
            "task=avoid_m2",
            f"results_dir={tmp_path}",
            *TINY,
            "wandb.enabled=true",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    runs = list((tmp_path / "gaussian_ppo_avoid_m2_s0" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("*.wandb")), "no offline wandb log written"
