"""A throw-away single-node Slurm cluster on this machine, for tests and benchmarks.

    python tests/local_slurm.py start /tmp/slurm     # prints the SLURM_CONF to export
    python tests/local_slurm.py stop /tmp/slurm

Everything lives in one directory: a munge key and socket, `slurm.conf` for
localhost (one partition `debug`, consumable cores so runs share the node),
state and spool directories, and the daemons' logs. Needs Debian's `slurm-wlm`
and `munge` packages and root (slurmd launches jobs as their owner).
"""

from __future__ import annotations

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


def start(root: Path, cpus: int | None = None, timeout: float = 60.0) -> dict[str, str]:
    """Start munged, slurmctld and slurmd under `root`; returns the env vars clients need."""
    missing = [d for d in DAEMONS if _which(d) is None]
    if missing:
        raise SlurmUnavailable(f"{', '.join(missing)} not installed (apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        raise SlurmUnavailable("a local Slurm needs root to start slurmd")
    root = Path(root).resolve()
    stop(root)
    for sub in ("munge", "state", "spool"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    conf = write_config(root, cpus or os.cpu_count() or 1)
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
        return out.returncode == 0 and out.stdout.strip().rstrip("*") in ("idle", "mixed")

    _wait(node_idle, timeout, "slurmd", root / "slurmd.log", root / "slurmctld.log")
    return {"SLURM_CONF": str(conf)}


def _spawn(cmd: list[str], env: dict[str, str], out: Path) -> None:
    with open(out, "w") as f:
        proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=30)
    if proc.returncode != 0:
        raise SlurmUnavailable(f"{' '.join(cmd[:1])} exited with {proc.returncode}: {out.read_text()[-500:]}")


def _wait(ready, timeout: float, what: str, *logs: Path) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if ready():
            return
        time.sleep(0.5)
    tails = "\n".join(f"--- {p}\n{p.read_text()[-1500:]}" for p in logs if p.is_file())
    raise SlurmUnavailable(f"{what} not ready after {timeout:.0f}s\n{tails}")


def stop(root: Path) -> None:
    """Stop the daemons started under `root` (by their pid files); a no-op when none run."""
    root = Path(root).resolve()
    for pid_file in (root / "slurmd.pid", root / "slurmctld.pid", root / "munge" / "munged.pid"):
        try:
            pid = int(pid_file.read_text().strip())
            os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError):
            continue
        for _ in range(50):
            try:
                os.kill(pid, 0)
            except OSError:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
        pid_file.unlink(missing_ok=True)


if __name__ == "__main__":
    what, where = sys.argv[1], Path(sys.argv[2])
    if what == "start":
        env = start(where)
        print(f"export SLURM_CONF={env['SLURM_CONF']}")
    elif what == "stop":
        stop(where)
    else:
        raise SystemExit("usage: python tests/local_slurm.py start|stop DIR")
