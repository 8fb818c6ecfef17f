"""Run records that can't be corrupted or silently wrong: one writer per run, resume that never changes a
result, and salvage of damaged append-only files."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from envs.tasks import data_dir, get_task
from experiments.faults import PAUSE_AFTER_ITR
from experiments.grids import get_grid
from experiments.run import HELD_EXIT_CODE
from tests.test_cli import TINY as CLI_TINY
from tests.test_cli import assert_clean_error, read_rows, run_cli
from tests.waiting import attempts, kill_at_pause_point, wait_for, wait_until_paused

REPO = Path(__file__).resolve().parents[1]
TINY = ["method=dppo", "task=avoid_m2", *CLI_TINY, "train.eval_every=2"]  # later keys win: tests add their own
TIMINGS = ("wall_time", "time_iteration", "time_sample", "time_env", "time_update")


def without_timings(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in rows]


def test_a_run_another_process_writes_is_refused_and_the_launcher_waits_for_it(tmp_path):
    results = tmp_path / "smoke_dppo"
    pre, ft = get_grid("smoke_dppo", results, [0])
    assert run_cli(*pre.args(results), "progress=false").returncode == 0
    writer = subprocess.Popen(
        [sys.executable, "-m", "experiments.run", *ft.args(results), "progress=false"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, PAUSE_AFTER_ITR: "0"},
    )
    run_dir = results / ft.name
    try:
        assert wait_until_paused(run_dir) == writer.pid
        second = run_cli(*ft.args(results), "progress=false", "--resume")
        assert second.returncode == HELD_EXIT_CODE
        assert second.stderr.strip() == (
            f"error: {run_dir} is being written by pid {writer.pid} on {os.uname().nodename} since "
            + second.stderr.split(" since ")[1].strip()
        )
        out = tmp_path / "launcher.out"
        with open(out, "w") as f:
            launcher = subprocess.Popen(
                [sys.executable, "-u", "run_all.py", "--grid", "smoke_dppo", "--results", str(tmp_path), "--resume"],
                cwd=REPO,
                stdout=f,
                stderr=subprocess.STDOUT,
            )
        wait_for(lambda: f"held   {ft.name}: pid {writer.pid}" in out.read_text(), 120, "the launcher to see the lock")
        os.kill(writer.pid, signal.SIGCONT)
        assert launcher.wait(timeout=300) == 0, out.read_text()
        assert writer.wait(timeout=60) == 0
    finally:
        for p in (writer, locals().get("launcher")):
            if p is not None and p.poll() is None:
                p.kill()
    assert f"done   {ft.name} (written by another process)" in out.read_text()
    assert [r["itr"] for r in read_rows(run_dir)] == [0, 1] and len(attempts(run_dir)) == 1


def test_resume_never_changes_a_result(tmp_path):
    # stage=all, uninterrupted
    whole = run_cli(*TINY, f"results_dir={tmp_path}", "name=whole", "train.n_iterations=4")
    assert whole.returncode == 0, whole.stderr
    summary = (tmp_path / "whole" / "summary.json").read_bytes()
    # --resume on a finished run leaves it as it is
    again = run_cli(*TINY, f"results_dir={tmp_path}", "name=whole", "train.n_iterations=4", "--resume")
    assert again.returncode == 0 and "finished already" in again.stderr
    assert (tmp_path / "whole" / "summary.json").read_bytes() == summary

    # Fine-tuning continues exactly as it would have after pre-training in the same process: what a stage=all run
    # resumed after its pre-training does (it loads pretrained.pt), and what stage=finetune on that file does.
    ckpt = tmp_path / "whole" / "checkpoints" / "pretrained.pt"
    split = run_cli(*TINY, f"results_dir={tmp_path}", "name=split", "train.n_iterations=4", f"checkpoint={ckpt}")
    assert split.returncode == 0, split.stderr
    assert without_timings(read_rows(tmp_path / "split")) == without_timings(read_rows(tmp_path / "whole"))
    finals = [json.loads((tmp_path / n / "summary.json").read_text())["final_eval"] for n in ("whole", "split")]
    assert finals[0] == finals[1]

    # Killed after its last checkpoint, before its summary: the resumed run evaluates to the same result.
    args = [*TINY, f"results_dir={tmp_path}", "name=late", "train.n_iterations=4", f"checkpoint={ckpt}"]
    kill_at_pause_point(args, after_itr=3, cwd=REPO)
    assert not (tmp_path / "late" / "summary.json").exists()
    assert run_cli(*args, "--resume").returncode == 0
    assert json.loads((tmp_path / "late" / "summary.json").read_text())["final_eval"] == finals[1]
    assert without_timings(read_rows(tmp_path / "late")) == without_timings(read_rows(tmp_path / "split"))


def test_resume_keeps_valid_rows_around_a_corrupted_one_and_survives_torn_lines(tmp_path):
    args = [*TINY, f"results_dir={tmp_path}", "name=r", "train.n_iterations=8", "train.save_every=2"]
    kill_at_pause_point(args, after_itr=4, cwd=REPO)  # rows 0..4; state.pt at next_itr 4
    run_dir = tmp_path / "r"
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    lines[1] = lines[1][: len(lines[1]) // 2] + "#garbage"  # iteration 1's row, damaged in the middle of the file
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with open(run_dir / "attempts.jsonl", "a") as f:
        f.write('{"start_itr": 9, "torn')  # a last line cut off by a kill

    resumed = run_cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "metrics.jsonl line(s) 2 corrupted; moved to" in resumed.stderr
    assert (run_dir / "metrics.corrupt.jsonl").read_text() == lines[1] + "\n"
    assert [r["itr"] for r in read_rows(run_dir)] == [0, 2, 3, 4, 5, 6, 7]  # row 4 was after the checkpoint: redone
    assert [a["start_itr"] for a in attempts(run_dir)] == [0, 4]


@pytest.mark.parametrize(
    "arg, message",
    [
        ("train.eval_episodes=0", "train.eval_episodes=0 is out of range: it must be >= 1"),
        ("train.n_steps=0", "train.n_steps=0 is out of range: it must be >= 1"),
        ("algo.batch_size=0", "algo.batch_size=0 is out of range: it must be >= 1"),
        ("train.eval_every=-1", "train.eval_every=-1 is out of range: it must be >= 0"),
        ("algo.actor_lr=-1", "algo.actor_lr=-1.0 is out of range: it must be >= 0"),
        ("train.n_iterations=0", "train.n_iterations=0 is out of range: it must be >= 1"),
        ("algo.update_epochs=0", "algo.update_epochs=0 is out of range: it must be >= 1"),
        ("device=tpu", "device=tpu is not a torch device; use auto, cpu, cuda or cuda:N"),
        ("threads=0", "threads=0 is out of range: it must be >= 1"),
        ("seed=-1", "seed=-1 is out of range: it must be in [0, 4294967295]"),
        ("train.n_envs=0", "train.n_envs=0 is out of range: it must be >= 1"),
        ("train.save_every=0", "train.save_every=0 is out of range: it must be >= 1"),
        ("algo.ft_denoising_steps=0", "algo.ft_denoising_steps=0 is out of range: it must be >= 1"),
        ("algo.ft_denoising_steps=21", "algo.ft_denoising_steps must be in [1, 20] (the policy's sampling steps)"),
        ("policy.hidden=[16,0,16]", "policy.hidden=[16, 0, 16] is out of range: it must be >= 1 (each)"),
        ("pretrain.ema_decay=1", "pretrain.ema_decay=1.0 is out of range: it must be in [0, 1)"),
        ("algo.actor_lr_warmup=100", "algo.actor_lr_warmup=100 must be shorter than algo.actor_lr_cycle=100"),
        ("algo.adv_clip_quantiles=[0.9,0.1]", "algo.adv_clip_quantiles must be [low, high] with low <= high"),
    ],
)
def test_every_bad_value_is_one_line_before_anything_is_written(arg, message, tmp_path):
    proc = run_cli(*TINY, f"results_dir={tmp_path / 'r'}", arg)
    assert_clean_error(proc, message)
    assert not (tmp_path / "r").exists()


def test_policy_overrides_against_a_checkpoint_and_bad_evaluate_arguments_are_one_line(tmp_path):
    pre = run_cli(*TINY, f"results_dir={tmp_path}", "stage=pretrain", "name=pre")
    assert pre.returncode == 0, pre.stderr
    ckpt = tmp_path / "pre" / "checkpoints" / "pretrained.pt"
    proc = run_cli(*TINY, f"results_dir={tmp_path / 'r'}", f"checkpoint={ckpt}", "policy.hidden=[16,16,16]")
    assert_clean_error(proc, "policy.* overrides", "conflict with the checkpoint's")
    assert not (tmp_path / "r").exists()
    for arg, message in (("episodes=0", "episodes=0 is out of range"), ("episodes=abc", "episodes expects int")):
        assert_clean_error(run_cli(f"checkpoint={ckpt}", arg, module="experiments.evaluate"), message)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "can't be read (EOFError"),
        (b"PK\x03\x04 truncated", "can't be read (BadZipFile"),
        (b"not a numpy file at all", "can't be read"),
        (None, "has 3 non-finite (NaN or infinite) values in its states"),
    ],
)
def test_a_damaged_dataset_is_one_line_naming_it_and_the_fix(content, message, tmp_path):
    get_task("avoid_m2").load_dataset()  # the default one, generated if missing; the test damages a copy
    data = tmp_path / "data"
    shutil.copytree(data_dir() / "avoid_m2", data / "avoid_m2")
    train = data / "avoid_m2" / "train.npz"
    if content is None:
        with np.load(train) as f:
            arrays = dict(f)
        arrays["states"][:3, 0] = np.nan
        np.savez(train, **arrays)
    else:
        train.write_bytes(content)
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.run", *TINY, f"results_dir={tmp_path / 'r'}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "DPPO_DATA_DIR": str(data)},
    )
    assert_clean_error(proc, f"{train} ", message, "delete its folder and the next run generates it again")
    assert not (tmp_path / "r").exists()


def test_make_tables_flags_uninterpretable_records_and_writes_nothing_without_runs(tmp_path, capsys):
    from analysis.make_tables import main as make_tables

    results = tmp_path / "results"
    (results / "odd").mkdir(parents=True)
    (results / "odd" / "config.json").write_text("{}")
    assert make_tables(["--results", str(results)]) == 1
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "holds no run records" in err and "odd: config.json is unreadable or not" in err
    assert sorted(p.name for p in results.iterdir()) == ["odd"]  # no analysis/ folder written into it


def test_an_unwritable_results_folder_is_one_line_everywhere(tmp_path, capsys):
    blocker = tmp_path / "a_file"  # a file where a folder should be: unwritable even for root
    blocker.write_text("not a folder")
    assert_clean_error(run_cli(*TINY, f"results_dir={blocker / 'sub'}"), "can't write in", "results_dir=")
    proc = subprocess.run(
        [sys.executable, "run_all.py", "--grid", "smoke_dppo", "--results", str(blocker / "sub")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "can't write in" in proc.stderr

    from analysis.make_tables import main as make_tables

    records = REPO / "tests" / "fixtures" / "records"
    assert make_tables(["--results", str(records), "--out", str(blocker / "out"), "--bootstrap-reps", "10"]) == 1
    err = capsys.readouterr().err
    assert "can't write" in err and "--out" in err and "Traceback" not in err
    assert blocker.read_text() == "not a folder"


@pytest.fixture
def small_disk(tmp_path):
    """A 24 KiB file system (tmpfs; needs root, as the Slurm tests do), grown to 16 MiB by calling the result."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24k", "tmpfs", str(mnt)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"can't mount a small tmpfs here ({mounted.stderr.decode().strip()}); needs root")
    grow = lambda: subprocess.run(["mount", "-o", "remount,size=16m", str(mnt)], check=True)  # noqa: E731
    yield mnt, grow
    subprocess.run(["umount", str(mnt)], check=True)


def test_a_full_disk_is_one_line_and_the_run_resumes_once_there_is_space(small_disk):
    disk, grow = small_disk
    args = [*TINY, f"results_dir={disk}", "train.n_iterations=2"]
    full = run_cli(*args)
    assert_clean_error(full, "No space left on device", "free space or pass results_dir=")
    run_dir = disk / "dppo_avoid_m2_s0"
    assert not list(run_dir.rglob("*.tmp")) and not list(run_dir.rglob("*.pt"))  # nothing half-written left
    assert not (run_dir / "summary.json").exists()
    grow()
    resumed = run_cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert [r["itr"] for r in read_rows(run_dir)] == [0, 1] and (run_dir / "summary.json").is_file()
