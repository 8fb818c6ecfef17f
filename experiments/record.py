"""The run record: one directory per run.

config.json         the resolved config (written once, checked on resume)
config.yaml         the same as YAML, each value commented with its source: `config=` reruns it
metrics.jsonl       append-only, one JSON row per iteration
initial_eval.json   evaluation of the starting policy
checkpoints/        pretrained.pt, state.pt (resumable), final.pt
plots/              rollout plots and learning curve
rollouts_*.json     end-effector paths and success of evaluation episodes (tasks that report them)
attempts.jsonl      one row per start of fine-tuning: iteration it started from, host, pid, Slurm job, harness
summary.json        written atomically at the very end: its presence means "finished"
error.txt           the message of a run that failed (removed when it is resumed)
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import platform
import shutil
import sys
from pathlib import Path
from typing import Any


class RunDirError(RuntimeError):
    """The run directory is in a state the requested action can't use."""


class RunHeldError(RunDirError):
    """Another live process is writing the run."""


class RunLock:
    """One writer per run: an exclusive OS lock (flock) on `<results_dir>/.<run>.lock`, beside the run directory
    so that --force can delete the directory while holding it. The kernel drops the lock when its process ends,
    however it ends; the file records who holds it (pid, host, since) for the message others get.
    (flock is reliable on local disks and on NFS with Linux >= 2.6.12; not on every network file system.)"""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir.parent / f".{self.run_dir.name}.lock"
        self.fd: int | None = None

    def holder(self) -> str | None:
        """Who holds the lock ("pid 12 on host since ..."), or None if nobody does."""
        if not self.path.is_file():
            return None
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        except BlockingIOError:
            return os.pread(fd, 300, 0).decode(errors="replace").strip() or "another process"
        finally:
            os.close(fd)

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunDirError(
                f"can't write in {self.path.parent} ({e.strerror}); pass results_dir=<a writable folder>"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = os.pread(fd, 300, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunHeldError(
                f"{self.run_dir} is being written by {who}; wait for it to finish, or stop it and use --resume"
            ) from None
        from datetime import UTC, datetime

        os.ftruncate(fd, 0)
        since = datetime.now(UTC).isoformat(timespec="seconds")
        os.pwrite(fd, f"pid {os.getpid()} on {platform.node()} since {since}".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write `path` whole or not at all: a file that exists is complete; a failed write (a full disk) leaves
    nothing behind and raises the OSError."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def save_torch_atomic(obj: Any, path: Path) -> None:
    """torch.save, atomically; serialised in memory first, since torch.save reports a full disk as an
    unspecific RuntimeError and plain file writes report it as OSError(ENOSPC)."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def write_json_atomic(path: Path, data: Any, indent: int | None = 2) -> None:
    write_text_atomic(path, json.dumps(_clean(data), indent=indent, default=str))


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted keys: {"algo": {"clip": 0.1}} -> {"algo.clip": 0.1}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    """Append one row durably; a last line left cut off by a kill is ended first, so it can't swallow this one."""
    with open(path, "ab+") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
        f.write((json.dumps(_clean(row)) + "\n").encode())
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path, required: str | None = None) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
    """The rows of an append-only JSON-lines file, and its corrupted lines as (line number, text): lines that
    aren't a JSON object (with key `required`). A missing file has none."""
    rows, bad = [], []
    if not path.is_file():
        return rows, bad
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict) and (required is None or required in row):
            rows.append(row)
        elif line.strip():
            bad.append((n, line))
    return rows, bad


def read_json(path: Path) -> Any:
    with open(path) as f:
        return json.load(f)


def harness() -> dict[str, Any]:
    """Which code made a record: package version and, in a git checkout, the commit (and whether edited)."""
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    try:
        info: dict[str, Any] = {"version": version("dppo-bench")}
    except PackageNotFoundError:
        info = {"version": None}
    repo = Path(__file__).resolve().parents[1]
    try:
        git = ["git", "-C", str(repo)]
        info["commit"] = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
        info["dirty"] = bool(dirty.stdout.strip())
    except OSError:
        info["commit"], info["dirty"] = None, None
    if not info["commit"]:  # not a git checkout
        info["commit"], info["dirty"] = None, None
    return info


def hardware() -> dict[str, Any]:
    import torch

    info = {
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["processor"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


class RunRecord:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.metrics_path = self.path / "metrics.jsonl"
        self.ckpt_dir = self.path / "checkpoints"
        self.plot_dir = self.path / "plots"

    # --------------------------------------------------------------- state
    @property
    def finished(self) -> bool:
        return (self.path / "summary.json").is_file()

    def prepare(self, config: dict[str, Any], resume: bool, force: bool, config_yaml: str | None = None) -> bool:
        """Create the directory (with config.json, and config.yaml when given); True when resuming a run."""
        cfg_path, yaml_path = self.path / "config.json", self.path / "config.yaml"
        if self.path.exists() and any(self.path.iterdir()):
            if force:
                shutil.rmtree(self.path)
            elif not resume:
                raise RunDirError(
                    f"run directory {self.path} already exists; pass --resume to continue it, "
                    "--force to overwrite it, or name=<other> for a new one"
                )
            elif cfg_path.is_file():
                old = _without_runtime(read_json(cfg_path))
                new = _without_runtime(json.loads(json.dumps(config, default=str)))
                if _clean(old) != _clean(new):
                    diff = sorted(_diff_keys(old, new))
                    raise RunDirError(
                        f"{self.path} holds a run with a different config (keys {', '.join(diff[:5])}); "
                        "use --force to overwrite it or name=<other> for a new run"
                    )
                (self.path / "error.txt").unlink(missing_ok=True)
                if config_yaml is not None and not yaml_path.is_file():  # a record from before config.yaml
                    write_text_atomic(yaml_path, config_yaml)
                return True
        self.path.mkdir(parents=True, exist_ok=True)
        self.ckpt_dir.mkdir(exist_ok=True)
        write_json_atomic(cfg_path, config)
        if config_yaml is not None:
            write_text_atomic(yaml_path, config_yaml)
        return False

    # --------------------------------------------------------------- metrics
    def append(self, row: dict[str, Any]) -> None:
        append_jsonl(self.metrics_path, row)

    def rows(self) -> list[dict[str, Any]]:
        """Every valid metrics row (a corrupted line is skipped: see `truncate_metrics`)."""
        return read_jsonl(self.metrics_path, required="itr")[0]

    def truncate_metrics(self, n_iterations: int) -> None:
        """Keep the valid rows of iterations < n_iterations (those covered by the checkpoint). Corrupted lines
        move to metrics.corrupt.jsonl, with a warning; every valid row around them stays."""
        rows, bad = read_jsonl(self.metrics_path, required="itr")
        if bad:
            quarantine = self.path / "metrics.corrupt.jsonl"
            with open(quarantine, "a") as f:
                f.writelines(f"{line}\n" for _, line in bad)
            lines = ", ".join(str(n) for n, _ in bad[:5])
            print(f"warning: {self.metrics_path} line(s) {lines} corrupted; moved to {quarantine}", file=sys.stderr)
        tmp = self.metrics_path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            for r in rows:
                if r["itr"] < n_iterations:
                    f.write(json.dumps(r) + "\n")
        os.replace(tmp, self.metrics_path)

    def add_attempt(self, start_itr: int) -> list[dict[str, Any]]:
        """Note one (re)start of fine-tuning; returns every attempt so far."""
        from datetime import UTC, datetime

        job = os.environ.get("SLURM_ARRAY_JOB_ID")
        job = f"{job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if job else os.environ.get("SLURM_JOB_ID")
        row = {
            "start_itr": start_itr,
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "host": platform.node(),
            "slurm_job": job,
            "slurm_restart_count": int(os.environ.get("SLURM_RESTART_COUNT", 0)),
            "pid": os.getpid(),  # with host: lets analysis/ tell a running run from a stopped one
            "harness": harness(),
        }
        path = self.path / "attempts.jsonl"
        append_jsonl(path, row)
        return read_jsonl(path, required="start_itr")[0]

    def write(self, name: str, data: Any, indent: int | None = 2) -> None:
        write_json_atomic(self.path / name, data, indent)

    def fail(self, message: str) -> None:
        """Record why the run stopped; if even that can't be written (a full disk), say so on stderr."""
        if self.path.is_dir():
            try:
                write_text_atomic(self.path / "error.txt", message + "\n")
            except OSError as e:
                if e.errno != errno.ENOSPC:  # a full disk is the run's own one-line error already
                    print(f"error: {message} (and error.txt could not be written: {e.strerror})", file=sys.stderr)


# How a run is executed, not what it computes: may change between a run and its resumption
# (another launcher, --cpus-per-run, working directory), so resume doesn't compare them.
RUNTIME_KEYS = ("threads", "progress", "results_dir", "device")


def _without_runtime(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in RUNTIME_KEYS}


def _diff_keys(a: Any, b: Any, prefix: str = "") -> set[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: set[str] = set()
        for k in set(a) | set(b):
            out |= _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return set() if _clean(a) == _clean(b) else {prefix.rstrip(".")}
