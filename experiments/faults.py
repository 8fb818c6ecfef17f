"""Pause points for fault-injection tests and benchmarks.

With `DPPO_BENCH_PAUSE_AFTER_ITR=K` in its environment, a fine-tuning run stops
itself (SIGSTOP) right after iteration K's metrics row and checkpoint are
written. A test can then kill it, or have a signal delivered to it, at a known
point whatever the machine's speed, and let it go on with SIGCONT. An attempt
that resumes past iteration K doesn't stop. Unset, nothing happens.
"""

from __future__ import annotations

import os
import signal

PAUSE_AFTER_ITR = "DPPO_BENCH_PAUSE_AFTER_ITR"


def pause_point(itr: int) -> None:
    """Stop this process if the environment asks to pause after iteration `itr`."""
    want = os.environ.get(PAUSE_AFTER_ITR)
    if want is None:
        return
    try:
        k = int(want)
    except ValueError:
        raise ValueError(f"{PAUSE_AFTER_ITR} must be an iteration number, got {want!r}") from None
    if itr == k:
        os.kill(os.getpid(), signal.SIGSTOP)
