"""Every registered method, on one task of every suite, through what a user does with it: pre-train (tiny),
fine-tune 2 iterations with a kill and a resume in between, and `experiments.evaluate` on the saved policy,
which must reproduce the run's own final evaluation. A method added to the registry is tested here without
writing a test. Also: what the trainer does with a method's bad metrics."""

import json
import math
from pathlib import Path

import pytest

from envs.tasks import TASKS
from experiments.checkpoints import CheckpointError
from experiments.config import build_config, resolve
from experiments.evaluate import evaluate_checkpoint
from experiments.run import run
from experiments.trainer import MetricClashError, NonFiniteLossError
from methods import METHODS
from tests.test_cli import read_rows, run_cli
from tests.waiting import attempts, kill_at_pause_point

REPO = Path(__file__).resolve().parents[1]
# The first task of each suite. Robomimic's is left out: its 300-step robosuite episodes make each of these runs
# minutes long; tests/test_robomimic.py runs its pre-train -> fine-tune -> video path end to end, and
# tests/test_config.py resolves every method's Robomimic presets.
SUITE_TASK = {t.suite: name for name, t in reversed(TASKS.items()) if t.suite != "robomimic"}
TINY_PRETRAIN = ["pretrain.n_steps=50", "pretrain.n_epochs=null", "policy.hidden=[32,32,32]"]
TINY_RUN = ["train.n_envs=2", "train.eval_episodes=2", "progress=false"]
TINY_FINETUNE = ["train.n_iterations=2", "train.save_every=1", "train.n_steps=4", "train.eval_every=0"]


@pytest.mark.parametrize("suite", sorted(SUITE_TASK))
@pytest.mark.parametrize("method", sorted(METHODS))
def test_registered_method_pretrains_finetunes_resumes_and_evaluates(method, suite, data_dir, tmp_path):
    task = SUITE_TASK[suite]
    common = [f"method={method}", f"task={task}", f"results_dir={tmp_path}", "seed=1", *TINY_RUN]
    pre = run_cli(*common, *TINY_PRETRAIN, "stage=pretrain", "name=pre")
    assert pre.returncode == 0, pre.stderr
    ckpt = tmp_path / "pre" / "checkpoints" / "pretrained.pt"
    shown = run_cli(*common, f"checkpoint={ckpt}", "policy.hidden=[32,32,32]", "--show-config")
    assert "  hidden: [32, 32, 32]  # checkpoint | " in shown.stdout, shown.stdout + shown.stderr

    finetune = [*common, *TINY_FINETUNE, "stage=finetune", f"checkpoint={ckpt}", "name=ft"]
    run_dir = tmp_path / "ft"
    kill_at_pause_point(finetune, after_itr=0, cwd=REPO)
    assert [r["itr"] for r in read_rows(run_dir)] == [0] and not (run_dir / "summary.json").exists()
    resumed = run_cli(*finetune, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert [r["itr"] for r in read_rows(run_dir)] == [0, 1]
    assert [a["start_itr"] for a in attempts(run_dir)] == [0, 1]

    # The recorded config.yaml resolves back to the run's config.
    recorded = json.loads((run_dir / "config.json").read_text())
    assert resolve({"config": str(run_dir / "config.yaml")})[0].to_dict() == recorded

    # experiments.evaluate on the saved policy, with the run's seed, repeats the run's final evaluation.
    other_kind = [m for m, cls in METHODS.items() if cls.policy_kind != METHODS[method].policy_kind]
    if other_kind:  # evaluated by a method of another policy kind: the checkpoint's kind is the error
        with pytest.raises(CheckpointError, match=f"holds a {METHODS[method].policy_kind} policy"):
            evaluate_checkpoint(run_dir / "checkpoints" / "final.pt", method=other_kind[0])

    # Where returns are all 0 (tiny Avoid policies), the episodes' paths must match point for point.
    final = json.loads((run_dir / "summary.json").read_text())["final_eval"]
    again = evaluate_checkpoint(run_dir / "checkpoints" / "final.pt", seed=1, out_dir=tmp_path / "eval")
    assert (again["method"], again["task"], again["episodes"]) == (method, task, final["eval_episodes"])
    assert again["return"] == pytest.approx(final["eval_return"], rel=1e-9, abs=1e-9)
    assert again["success"] == pytest.approx(final["eval_success"], abs=1e-12)
    if (run_dir / "rollouts_final.json").is_file():
        ran = json.loads((run_dir / "rollouts_final.json").read_text())
        assert json.loads((tmp_path / "eval" / "rollouts_eval.json").read_text()) == ran
        assert sum(len(p) for p in ran["paths"]) > 2 * len(ran["paths"])  # episodes that went somewhere


def test_evaluate_command_line_repeats_the_runs_final_evaluation(data_dir, tmp_path):
    proc = run_cli("method=dppo", "task=avoid_m2", f"results_dir={tmp_path}", *TINY_PRETRAIN, *TINY_RUN,
                   *TINY_FINETUNE, "train.eval_episodes=6", "train.n_envs=3", "name=r", "seed=2")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    final = json.loads((tmp_path / "r" / "summary.json").read_text())["final_eval"]
    out = run_cli(f"checkpoint={tmp_path / 'r' / 'checkpoints' / 'final.pt'}", module="experiments.evaluate")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("dppo on avoid_m2, seed 2: 6 episodes: ")
    assert f"success {final['eval_success']:.3f}" in out.stdout and f"return {final['eval_return']:.3f}" in out.stdout


def _tiny_run_config(tmp_path):
    return build_config(
        {
            "method": "gaussian_ppo",
            "task": "avoid_m2",
            "results_dir": str(tmp_path),
            "pretrain.n_steps": 20,
            "policy.hidden": [16, 16, 16],
            "train.n_envs": 2,
            "train.eval_episodes": 2,
            "train.n_iterations": 3,
            "progress": False,
        }
    )


@pytest.mark.parametrize(
    "stats, error, needles",
    [
        (
            {"pg_loss": math.nan},
            NonFiniteLossError,
            ["gaussian_ppo", "pg_loss became nan at iteration 0", "actor_lr"],
        ),
        ({"v_loss": math.inf}, NonFiniteLossError, ["'gaussian_ppo'", "v_loss became inf at iteration 0", "critic_lr"]),
        ({"train_return": 1.0}, MetricClashError, ["'gaussian_ppo'", "'train_return'", "GaussianPPO.update()"]),
        ({"itr": 1.0}, MetricClashError, ["'gaussian_ppo'", "'itr'", "the trainer's column"]),
    ],
)
def test_a_bad_method_metric_stops_the_run_with_error_txt(stats, error, needles, tmp_path, monkeypatch, data_dir):
    monkeypatch.setattr(METHODS["gaussian_ppo"], "update", lambda self, rollout, itr: dict(stats))
    with pytest.raises(error) as e:
        run(_tiny_run_config(tmp_path))
    written = (tmp_path / "gaussian_ppo_avoid_m2_s0" / "error.txt").read_text()
    for needle in needles:
        assert needle in str(e.value) and needle in written
    assert not (tmp_path / "gaussian_ppo_avoid_m2_s0" / "summary.json").exists()


@pytest.mark.parametrize("method", ["dql", "idql"])
def test_an_off_policy_critic_that_diverges_stops_the_run_naming_the_loss(method, data_dir, tmp_path):
    """Rewards scaled past float32's range make the critic's targets infinite: the run stops at iteration 0
    with error.txt naming the method, the loss and the advice, and writes no summary."""
    common = [f"method={method}", "task=hopper", f"results_dir={tmp_path}", *TINY_RUN]
    assert run_cli(*common, *TINY_PRETRAIN, "stage=pretrain", "name=pre").returncode == 0
    ckpt = tmp_path / "pre" / "checkpoints" / "pretrained.pt"
    proc = run_cli(*common, *TINY_FINETUNE, "stage=finetune", f"checkpoint={ckpt}", "name=ft", "algo.batch_size=4",
                   "algo.replay_ratio=4", "algo.critic_hidden=[8,8,8]", "algo.scale_reward=1e39")  # fmt: skip
    assert proc.returncode != 0
    written = (tmp_path / "ft" / "error.txt").read_text()
    assert f"method {method!r}" in written and "at iteration 0" in written and "algo.critic_lr" in written, written
    assert "loss became" in written or "q_mean became" in written, written
    assert not (tmp_path / "ft" / "summary.json").exists()
