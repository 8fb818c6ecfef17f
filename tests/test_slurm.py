"""The Slurm launcher against a real single-node Slurm (slurmctld + slurmd + munged) started here."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from experiments.faults import PAUSE_AFTER_ITR
from tests.local_slurm import SlurmUnavailable, start, stop
from tests.waiting import deliver_when_signalled, wait_for, wait_until_paused

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


def squeue(env, fmt: str | None = None) -> str:
    cmd = ["squeue", "-h", "-r", *(["-o", fmt] if fmt else [])]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout.strip()


def job_states(env, job: str) -> list[str]:
    """The queue states of the array job `job`'s tasks (empty once it has left the queue)."""
    lines = [line.split() for line in squeue(env, "%i %T").splitlines()]
    return [state for task, state in lines if task.split("_")[0] == job]


def scontrol(env, *args: str) -> str:
    out = subprocess.run(["scontrol", *args], env=env, capture_output=True, text=True)
    assert out.returncode == 0, f"scontrol {' '.join(args)}: {out.stderr}"
    return out.stdout


@contextmanager
def scheduling_held(env):
    """No job starts inside the block (the partition is down: jobs queue but don't run); all resume after it."""
    scontrol(env, "update", "PartitionName=debug", "State=DOWN")
    try:
        yield
    finally:
        scontrol(env, "update", "PartitionName=debug", "State=UP")


def job_run_time_s(env, job: str) -> int:
    """How long `job` has been running, from `scontrol show job` (RunTime=[days-]HH:MM:SS)."""
    text = scontrol(env, "show", "job", job)
    days, h, m, s = re.search(r"RunTime=(?:(\d+)-)?(\d+):(\d+):(\d+)", text).groups()
    return ((int(days or 0) * 24 + int(h)) * 60 + int(m)) * 60 + int(s)


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
    env = {**slurm, PAUSE_AFTER_ITR: "3"}
    with scheduling_held(slurm):  # both runs stay queued while the launcher is asked twice more
        out = run_all(env, *args, f"train.n_iterations={n}")
        assert out.returncode == 0, out.stdout + out.stderr
        # A second submission while the grid is queued is refused; --resume leaves queued runs alone.
        dup = run_all(env, *args, f"train.n_iterations={n}")
        assert dup.returncode == 2 and "already in the Slurm queue" in dup.stderr
        res = run_all(env, *args, "--resume", f"train.n_iterations={n}")
        assert res.returncode == 0 and res.stdout.count("already queued") == 2, res.stdout

    run = tmp_path / "smoke_dppo" / "dppo_avoid_m2_s0"
    pid = wait_until_paused(run)  # after iteration 3 and its checkpoint: the run is mid-way whatever the speed
    job = json.loads((tmp_path / "smoke_dppo" / "slurm_jobs.json").read_text())[1]["job_id"]
    subprocess.run(["scancel", "--signal=USR2", job], env=slurm, check=True)  # what Slurm sends before preempting
    deliver_when_signalled(pid, "USR2 from scancel")

    wait_for(lambda: not squeue(slurm), 600, "the grid to leave the Slurm queue")
    summary = json.loads((run / "summary.json").read_text())
    attempts = summary["attempts"]
    assert len(attempts) == 2 and attempts[1]["slurm_restart_count"] == 1
    assert attempts[1]["start_itr"] == 4  # continued from the checkpoint of iteration 3, not from scratch
    assert metrics_itrs(run) == list(range(n))  # none lost, none duplicated
    err = "".join(p.read_text() for p in (run / "logs").glob("*.err"))
    assert "this job is preempted" in err


def test_run_past_its_time_limit_is_requeued_until_done(slurm, tmp_path):
    # Slurm's own time-limit signal (USR2, which submitit asks for 90 s before the limit; with a limit of at
    # most 10 minutes submitit takes any USR2 as a time-out). The run pauses after iteration 3, so it is
    # provably still going when the signal comes; only then is its limit brought near, to keep the test short.
    n = 12
    env = {**slurm, PAUSE_AFTER_ITR: "3"}
    args = ["--grid", "smoke_dppo", "--launcher", "slurm", "--results", str(tmp_path), "--time", "10", "--wait"]
    launcher = subprocess.Popen(
        [sys.executable, "run_all.py", *args, f"train.n_iterations={n}"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        run = tmp_path / "smoke_dppo" / "dppo_avoid_m2_s0"
        pid = wait_until_paused(run)
        job = json.loads((tmp_path / "smoke_dppo" / "slurm_jobs.json").read_text())[1]["job_id"]
        with scheduling_held(slurm):  # the requeued attempt may start only once its full limit is back
            limit_min = math.ceil((job_run_time_s(slurm, job) + 100) / 60)  # ends 100-160 s from now
            scontrol(slurm, "update", f"JobId={job}", f"TimeLimit={limit_min}")
            deliver_when_signalled(pid, "Slurm's time-limit signal (USR2)", timeout=300)
            wait_for(lambda: job_states(slurm, job) == ["PENDING"], 300, f"job {job} to be requeued")
            scontrol(slurm, "update", f"JobId={job}", "TimeLimit=10")
        output, _ = launcher.communicate(timeout=600)
    finally:
        launcher.kill()
    assert launcher.returncode == 0, output
    attempts = json.loads((run / "summary.json").read_text())["attempts"]
    assert len(attempts) >= 2 and attempts[1]["start_itr"] == 4
    assert all(0 < a["start_itr"] < n for a in attempts[1:])
    assert metrics_itrs(run) == list(range(n))
    err = "".join(p.read_text() for p in (run / "logs").glob("*.err"))
    assert "this job is timed-out" in err


def test_resume_resubmits_a_cancelled_run_after_its_still_queued_dependency(slurm, tmp_path):
    args = ["--grid", "smoke_dppo", "--launcher", "slurm", "--results", str(tmp_path)]
    with scheduling_held(slurm):  # the pre-training is still queued when the fine-tune is lost and resubmitted
        assert run_all(slurm, *args).returncode == 0
        first = json.loads((tmp_path / "smoke_dppo" / "slurm_jobs.json").read_text())
        pre_job, ft_job = (next(iter(sub["tasks"])) for sub in first)
        subprocess.run(["scancel", ft_job], env=slurm, check=True)  # lost fine-tune; pre-training still queued
        wait_for(lambda: ft_job not in squeue(slurm, "%i").split(), 60, f"cancelled job {ft_job} to leave the queue")
        res = run_all(slurm, *args, "--resume")
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"skip   pretrain_diffusion_avoid_m2 (already queued as {pre_job})" in res.stdout, res.stdout
        latest = json.loads((tmp_path / "smoke_dppo" / "slurm_jobs.json").read_text())[-1]
        assert list(latest["tasks"].values()) == ["dppo_avoid_m2_s0"]
        assert latest["after"] == [pre_job]
    done = run_all(slurm, *args, "--resume", "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
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
