"""The Slurm launcher against a real single-node Slurm (slurmctld + slurmd + munged) started here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.local_slurm import SlurmUnavailable, start, stop

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    root = tmp_path_factory.mktemp("slurm")
    try:
        env = start(root)
    except SlurmUnavailable as e:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Slurm tests, but the local cluster did not start: {e}")
        pytest.skip(f"local Slurm unavailable: {e}")
    yield {**os.environ, **env}
    stop(root)


def run_all(env, *args, timeout=600):
    return subprocess.run(
        [sys.executable, "run_all.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def metrics_itrs(run_dir: Path) -> list[int]:
    return [json.loads(line)["itr"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def squeue(env) -> str:
    return subprocess.run(["squeue", "-h"], env=env, capture_output=True, text=True).stdout.strip()


def test_six_run_grid_completes_through_slurm(slurm, tmp_path):
    out = run_all(
        slurm, "--grid", "smoke", "--launcher", "slurm", "--seeds", "0,1", "--results", str(tmp_path), "--wait"
    )
    assert out.returncode == 0, out.stdout + out.stderr
    grid = tmp_path / "smoke"
    runs = [d for d in grid.iterdir() if (d / "config.json").is_file()]
    assert len(runs) == 6
    for d in runs:
        assert (d / "summary.json").is_file(), d
        assert list((d / "logs").glob("slurm-*.out")), f"no Slurm log linked under {d}"
        if "pretrain" not in d.name:
            assert metrics_itrs(d) == [0, 1]
    submissions = json.loads((grid / "slurm_jobs.json").read_text())
    # one array of both pre-trainings, then each policy's fine-tunings after its own pre-training task
    assert len(submissions) == 3 and submissions[0]["after"] == []
    pre_task = {name: job for job, name in submissions[0]["tasks"].items()}
    for sub in submissions[1:]:
        (kind,) = {name.split("_avoid")[0] for name in sub["tasks"].values()}
        pre = {"dppo": "pretrain_diffusion_avoid_m2", "gaussian_ppo": "pretrain_gaussian_avoid_m2"}[kind]
        assert sub["after"] == [pre_task[pre]] and len(sub["tasks"]) == 2
    status = run_all(slurm, "--grid", "smoke", "--seeds", "0,1", "--results", str(tmp_path), "--status")
    assert "6 done" in status.stdout, status.stdout
    again = run_all(
        slurm, "--grid", "smoke", "--launcher", "slurm", "--seeds", "0,1", "--results", str(tmp_path), "--resume"
    )
    assert again.returncode == 0 and "nothing to submit" in again.stdout


def test_preempted_run_is_requeued_and_finishes_from_its_checkpoint(slurm, tmp_path):
    n = 12
    args = ["--grid", "smoke_dppo", "--launcher", "slurm", "--results", str(tmp_path), "--time", "60"]
    out = run_all(slurm, *args, f"train.n_iterations={n}")
    assert out.returncode == 0, out.stdout + out.stderr
    # A second submission while the grid is queued is refused; --resume leaves queued runs alone.
    dup = run_all(slurm, *args, f"train.n_iterations={n}")
    assert dup.returncode == 2 and "already in the Slurm queue" in dup.stderr
    res = run_all(slurm, *args, "--resume", f"train.n_iterations={n}")
    assert res.returncode == 0 and res.stdout.count("already queued") == 2, res.stdout

    run = tmp_path / "smoke_dppo" / "dppo_avoid_m2_s0"
    t0 = time.time()
    while not (run / "metrics.jsonl").is_file() or len(metrics_itrs(run)) < 4:
        assert time.time() - t0 < 300, "fine-tuning never got going"
        time.sleep(0.5)
    job = json.loads((tmp_path / "smoke_dppo" / "slurm_jobs.json").read_text())[1]["job_id"]
    subprocess.run(["scancel", "--signal=USR2", job], env=slurm, check=True)  # what Slurm sends before preempting

    while squeue(slurm):
        assert time.time() - t0 < 300, f"grid still queued: {squeue(slurm)}"
        time.sleep(1)
    summary = json.loads((run / "summary.json").read_text())
    attempts = summary["attempts"]
    assert len(attempts) == 2 and attempts[1]["slurm_restart_count"] == 1
    assert 1 <= attempts[1]["start_itr"] < n  # continued from a checkpoint, not from scratch
    assert metrics_itrs(run) == list(range(n))  # none lost, none duplicated
    err = "".join(p.read_text() for p in (run / "logs").glob("*.err"))
    assert "this job is preempted" in err


def test_run_past_its_time_limit_is_requeued_until_done(slurm, tmp_path):
    # With --time 3, Slurm sends USR2 90 s before the limit, which its event loop may bring forward by up to
    # 60 s: 30-90 s in. (With --time 2 it can arrive before Python is up.) 240 tiny iterations outlast that.
    n = 240
    args = ["--grid", "smoke_dppo", "--launcher", "slurm", "--results", str(tmp_path), "--time", "3", "--wait"]
    out = run_all(slurm, *args, f"train.n_iterations={n}")
    assert out.returncode == 0, out.stdout + out.stderr
    run = tmp_path / "smoke_dppo" / "dppo_avoid_m2_s0"
    attempts = json.loads((run / "summary.json").read_text())["attempts"]
    assert len(attempts) >= 2 and all(0 < a["start_itr"] < n for a in attempts[1:])
    assert metrics_itrs(run) == list(range(n))
    err = "".join(p.read_text() for p in (run / "logs").glob("*.err"))
    assert "this job is timed-out" in err


def test_resume_resubmits_a_cancelled_run_after_its_still_queued_dependency(slurm, tmp_path):
    args = ["--grid", "smoke_dppo", "--launcher", "slurm", "--results", str(tmp_path)]
    assert run_all(slurm, *args).returncode == 0
    first = json.loads((tmp_path / "smoke_dppo" / "slurm_jobs.json").read_text())
    pre_job, ft_job = (next(iter(sub["tasks"])) for sub in first)
    subprocess.run(["scancel", ft_job], env=slurm, check=True)  # lost fine-tune; pre-training still queued
    res = run_all(slurm, *args, "--resume", "--wait")
    assert res.returncode == 0, res.stdout + res.stderr
    latest = json.loads((tmp_path / "smoke_dppo" / "slurm_jobs.json").read_text())[-1]
    assert list(latest["tasks"].values()) == ["dppo_avoid_m2_s0"]
    # pre-training takes seconds, so it is normally still queued; if it already finished, no dependency is needed
    if "skip   pretrain_diffusion_avoid_m2 (already queued" in res.stdout:
        assert latest["after"] == [pre_job]
    else:
        assert "skip   pretrain_diffusion_avoid_m2 (finished)" in res.stdout and latest["after"] == []
    assert all(
        (tmp_path / "smoke_dppo" / r / "summary.json").is_file()
        for r in ("pretrain_diffusion_avoid_m2", "dppo_avoid_m2_s0")
    )


def test_failed_run_shows_its_error_and_blocks_its_dependents(slurm, tmp_path):
    args = ["--grid", "smoke_dppo", "--launcher", "slurm", "--results", str(tmp_path)]
    out = run_all(slurm, *args, "--wait", f"dataset={tmp_path / 'missing.npz'}")
    assert out.returncode == 1
    status = run_all(slurm, "--grid", "smoke_dppo", "--results", str(tmp_path), "--status").stdout
    pre = next(line for line in status.splitlines() if line.startswith("| pretrain_"))
    assert "| failed |" in pre and "missing.npz" in pre, status
    ft = next(line for line in status.splitlines() if line.startswith("| dppo_"))
    assert "| not run |" in ft, status


def test_unknown_partition_is_refused_with_slurms_words(slurm, tmp_path):
    out = run_all(slurm, "--grid", "smoke", "--launcher", "slurm", "--partition", "nope", "--results", str(tmp_path))
    assert out.returncode == 2
    assert "Partition nope not found" in out.stderr
    assert not (tmp_path / "smoke" / "slurm_jobs.json").exists() and not squeue(slurm)


def test_slurm_launcher_without_sbatch_is_refused(tmp_path):
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}
    out = run_all(env, "--grid", "smoke", "--launcher", "slurm", "--results", str(tmp_path))
    assert out.returncode == 2
    assert (
        "`sbatch`, `squeue`, `scontrol`, `scancel` are not on PATH" in out.stderr and "--launcher local" in out.stderr
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--launcher", "slurm", "--jobs", "2"], "--jobs is for --launcher local"),
        (["--partition", "gpu"], "--partition only apply with --launcher slurm"),
        (["--status", "--force"], "--status only reads"),
        (["--launcher", "slurm", "--time", "0"], "--time must be positive"),
        (["--seeds", "0,x"], "--seeds takes comma-separated integers"),
        (["train.n_iterations"], "overrides must look like key=value"),
        (["seed=3"], "the grid sets name, seed"),
        (["--seeds", "0,0"], "lists a seed twice"),
    ],
)
def test_conflicting_flags_are_refused(tmp_path, args, message):
    out = run_all(dict(os.environ), "--grid", "smoke", "--results", str(tmp_path), *args)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert not (tmp_path / "smoke").exists()


def test_dry_run_prints_runs_and_resources_without_submitting(tmp_path):
    out = run_all(dict(os.environ), "--grid", "gym", "--launcher", "slurm", "--dry-run", "--results", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "12 runs in 4 array job(s)" in out.stdout  # the pre-trainings, then one per task
    assert "4 CPU, 1 GPU, 16 GB, 1440 min" in out.stdout
    assert out.stdout.count("threads=4") == 12
    assert not (tmp_path / "gym").exists()
