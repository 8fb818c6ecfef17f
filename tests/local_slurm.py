"""A throw-away single-node Slurm cluster on this machine, for tests and benchmarks.

    python tests/local_slurm.py start /tmp/slurm     # prints the SLURM_CONF to export
    python tests/local_slurm.py stop /tmp/slurm

Everything lives in one directory: a munge key and socket, `slurm.conf` for
localhost (one partition `debug`, consumable cores so runs share the node),
state and spool directories, and the daemons' logs. Needs Debian's `slurm-wlm`
and `munge` packages and root (slurmd launches jobs as their owner).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")


class SlurmUnavailable(RuntimeError):
    """The daemons are missing or would not start; the message says why."""


class PortTaken(SlurmUnavailable):
    """Another process took a port between its pick and the daemon's bind."""


def _which(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )


def _memory_mb() -> int:
    with open("/proc/meminfo") as f:
        kb = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    return kb // 1024 - 1024  # leave the OS a GiB


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(root: Path, cpus: int) -> Path:
    host = socket.gethostname()
    sock = root / "munge" / "munge.socket"
    lines = [
        "ClusterName=local",
        f"SlurmctldHost={host}",
        "SlurmUser=root",
        "SlurmdUser=root",
        # cred_expire also sets how long a requeued job waits before it may start again (default 120 s)
        f"AuthInfo=socket={sock},cred_expire=10",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'slurmd.log'}",
        # containers rarely give us cgroups: track processes by parent pid, no task binding
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "MpiDefault=none",
        "ReturnToService=2",
        "SchedulerType=sched/backfill",
        "SchedulerParameters=sched_interval=2",
        "MinJobAge=300",
        "KillWait=5",
        "InactiveLimit=0",
        f"SlurmctldPort={_free_port()}",  # not 6817/6818: another cluster may be running here
        f"SlurmdPort={_free_port()}",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={_memory_mb()} State=UNKNOWN",
        f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO",
    ]
    conf = root / "slurm.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def start(root: Path, cpus: int | None = None, timeout: float = 120.0, tries: int = 3) -> dict[str, str]:
    """Start munged, slurmctld and slurmd under `root`; returns the env vars clients need.

    The daemons' ports are picked free, but another process may take one before a daemon binds it:
    then everything is stopped and started again on other ports, up to `tries` times.
    """
    missing = [d for d in DAEMONS if _which(d) is None]
    if missing:
        raise SlurmUnavailable(f"{', '.join(missing)} not installed (apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        raise SlurmUnavailable("a local Slurm needs root to start slurmd")
    root = Path(root).resolve()
    for attempt in range(1, tries + 1):
        try:
            return _start_once(root, cpus or os.cpu_count() or 1, timeout)
        except PortTaken:
            stop(root)
            if attempt == tries:
                raise
    raise AssertionError("unreachable")


def _start_once(root: Path, cpus: int, timeout: float) -> dict[str, str]:
    stop(root)
    for log in (root / "slurmctld.log", root / "slurmd.log", root / "munge" / "munged.log"):
        log.unlink(missing_ok=True)  # the daemons append; an earlier try's errors must not be read as this one's
    for sub in ("munge", "state", "spool"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    key = root / "munge" / "munge.key"
    key.unlink(missing_ok=True)
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    conf = write_config(root, cpus)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    munge = root / "munge"
    _spawn(
        [
            _which("munged"),
            "--force",
            f"--key-file={key}",
            f"--socket={munge / 'munge.socket'}",
            f"--pid-file={munge / 'munged.pid'}",
            f"--log-file={munge / 'munged.log'}",
            f"--seed-file={munge / 'munged.seed'}",
        ],
        env,
        root / "munge" / "munged.out",
    )
    _wait(lambda: (munge / "munge.socket").exists(), timeout, "munged", root / "munge" / "munged.log")
    _spawn([_which("slurmctld"), "-c", "-i"], env, root / "slurmctld.out")
    _spawn([_which("slurmd"), "-c"], env, root / "slurmd.out")

    def node_idle() -> bool:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
        return out.returncode == 0 and out.stdout.strip() in ("idle", "mixed")  # "idle*": not responding yet

    _wait(node_idle, timeout, "slurmd", root / "slurmd.log", root / "slurmctld.log")
    return {"SLURM_CONF": str(conf)}


def _spawn(cmd: list[str], env: dict[str, str], out: Path) -> None:
    with open(out, "w") as f:
        proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=30)
    if proc.returncode != 0:
        raise SlurmUnavailable(f"{' '.join(cmd[:1])} exited with {proc.returncode}: {out.read_text()[-500:]}")


def _wait(ready, timeout: float, what: str, *logs: Path) -> None:
    """Poll `ready` until it holds; fail at once if a daemon could not bind its port, else after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for log in logs:  # before asking: a client waits its whole message timeout on a dead daemon
            if log.is_file() and "Address already in use" in log.read_text():
                raise PortTaken(f"{what}: a port was taken before it could bind it ({log})")
        if ready():
            return
        time.sleep(0.5)
    tails = "\n".join(f"--- {p}\n{p.read_text()[-1500:]}" for p in logs if p.is_file())
    raise SlurmUnavailable(f"{what} not ready after {timeout:.0f}s\n{tails}")


def stop(root: Path, timeout: float = 60.0) -> None:
    """Cancel the cluster's jobs and stop the daemons started under `root`; a no-op when none run.

    Each daemon gets SIGTERM and `timeout` seconds to exit, then SIGKILL.
    """
    root = Path(root).resolve()
    conf = root / "slurm.conf"
    if _alive(root / "slurmctld.pid") and conf.is_file():
        # no job of a failed test may go on running (and taking cores) once its cluster is gone
        env = {**os.environ, "SLURM_CONF": str(conf)}
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(["scancel", "--user", "root"], env=env, capture_output=True, timeout=30)
            # slurmd kills the jobs' processes only after the controller tells it to: wait for that
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                queue = subprocess.run(["squeue", "-h"], env=env, capture_output=True, text=True, timeout=30)
                if queue.returncode != 0 or not queue.stdout.strip():
                    break
                time.sleep(0.5)
    for pid_file in (root / "slurmd.pid", root / "slurmctld.pid", root / "munge" / "munged.pid"):
        try:
            pid = int(pid_file.read_text().strip())
            os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError):
            continue
        if not _exited(pid, timeout):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            _exited(pid, timeout)
        pid_file.unlink(missing_ok=True)


def _alive(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text().strip()), 0)
    except (OSError, ValueError):
        return False
    return True


def _exited(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return True
        time.sleep(0.1)
    return False


if __name__ == "__main__":
    what, where = sys.argv[1], Path(sys.argv[2])
    if what == "start":
        env = start(where)
        print(f"export SLURM_CONF={env['SLURM_CONF']}")
    elif what == "stop":
        stop(where)
    else:
        raise SystemExit("usage: python tests/local_slurm.py start|stop DIR")
