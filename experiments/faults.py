"""Pause points for fault-injection tests and benchmarks.

With `DPPO_BENCH_PAUSE_AFTER_ITR=K` in its environment, a fine-tuning run's
first attempt stops itself (SIGSTOP) right after iteration K's metrics row is
written, and its checkpoint when that iteration saves one. A test can then
kill it, or have a signal delivered to it, at a known point whatever the
machine's speed, and let it go on with SIGCONT. Later attempts (resumptions,
Slurm requeues, which keep the environment) never stop. Unset, nothing happens.
"""

from __future__ import annotations

import os
import signal

PAUSE_AFTER_ITR = "DPPO_BENCH_PAUSE_AFTER_ITR"


def pause_point(itr: int, attempt: int) -> None:
    """Stop this process if the environment asks to pause after iteration `itr` and this is attempt 1."""
    want = os.environ.get(PAUSE_AFTER_ITR)
    if want is None or attempt != 1:
        return
    try:
        k = int(want)
    except ValueError:
        raise ValueError(f"{PAUSE_AFTER_ITR} must be an iteration number, got {want!r}") from None
    if itr == k:
        os.kill(os.getpid(), signal.SIGSTOP)
