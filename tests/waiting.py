"""Waiting on conditions, never on the clock: what tests use to follow runs and daemons.

A wait polls a condition until it holds or a generous timeout passes, then
fails saying what it waited for. Runs are stopped at known points with
`experiments.faults` (the run SIGSTOPs itself after a given iteration), so a
test can kill or signal them there however fast or busy the machine is.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float, what: str, poll: float = 0.2) -> T:
    """Poll `condition` until it returns something truthy (returned); fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def process_state(pid: int) -> str | None:
    """The kernel's one-letter state of `pid` (R, S, T for stopped, Z, ...), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]  # the command name may itself hold spaces or ')'


def signal_pending(pid: int, sig: signal.Signals) -> bool:
    """Whether `sig` was sent to `pid` and not yet handled (it stays pending while the process is stopped)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    masks = [int(line.split()[1], 16) for line in status.splitlines() if line.startswith(("SigPnd:", "ShdPnd:"))]
    return any(m & (1 << (sig - 1)) for m in masks)


def attempts(run_dir: Path) -> list[dict]:
    """The run's attempt rows; a line still being written (or torn by a kill) is left out."""
    from experiments.record import read_jsonl

    return read_jsonl(run_dir / "attempts.jsonl", required="start_itr")[0]


def paused_run_pid(run_dir: Path) -> int | None:
    """The pid of the run's latest attempt if that process is stopped (at its pause point), else None."""
    rows = attempts(run_dir)
    if rows and process_state(rows[-1]["pid"]) == "T":
        return rows[-1]["pid"]
    return None


def wait_until_paused(run_dir: Path, timeout: float = 600) -> int:
    return wait_for(lambda: paused_run_pid(run_dir), timeout, f"{run_dir.name} to pause at its pause point")


def deliver_when_signalled(pid: int, what: str, timeout: float = 120) -> None:
    """Let the paused run `pid` go on once USR2 is pending on it, so it handles the signal before anything else.

    Slurm's time-limit warning also sends SIGCONT right after the signal: then the run is already going.
    """
    wait_for(lambda: signal_pending(pid, signal.SIGUSR2) or process_state(pid) != "T", timeout, what)
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)


def kill_at_pause_point(args: list[str], after_itr: int, cwd: Path, timeout: float = 300) -> None:
    """Run `python -m experiments.run *args` until it pauses after iteration `after_itr`, then SIGKILL it there."""
    from experiments.faults import PAUSE_AFTER_ITR

    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.run", *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, PAUSE_AFTER_ITR: str(after_itr)},
    )
    try:
        wait_for(
            lambda: process_state(proc.pid) in ("T", "Z", None), timeout, f"the run to pause after itr {after_itr}"
        )
        assert proc.poll() is None, f"the run exited with {proc.returncode} before its pause point"
    finally:
        proc.kill()
        proc.wait()
