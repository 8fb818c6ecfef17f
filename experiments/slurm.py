"""The SLURM launcher: a grid becomes submitit array jobs, one task per run.

Runs that need the same earlier runs share one array: all pre-trainings form
the first array, and the fine-tunings of each pre-trained policy another,
which starts only once that pre-training's own array task has succeeded
(`afterok:<array>_<task>`), so a failed pre-training holds back only its own
fine-tunings. Each array task runs `experiments.run` in-process with
`--resume`, so a task that Slurm preempts or that nears its time limit
(submitit's USR2, 90 s before the limit) is requeued and continues from its
last `state.pt`. The submitted job ids go to `<results>/<grid>/slurm_jobs.json`,
and each run's Slurm logs are linked under `<run>/logs/`.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from experiments.grids import GridRun
from experiments.record import read_json, write_json_atomic

JOBS_FILE = "slurm_jobs.json"
MAX_TIMEOUT_REQUEUES = 30  # a paper-scale run may need many time slices


class SlurmError(RuntimeError):
    """Slurm is missing or refused something; the message is Slurm's own where it has one."""


@dataclass
class Resources:
    partition: str | None = None
    time_min: int = 60
    gpus_per_run: int = 0
    cpus_per_run: int = 1
    mem_gb: float = 4.0
    array_parallelism: int = 256

    def describe(self) -> str:
        gpus = f", {self.gpus_per_run} GPU" if self.gpus_per_run else ""
        part = self.partition or "default partition"
        return f"{self.cpus_per_run} CPU{gpus}, {self.mem_gb:g} GB, {self.time_min} min, {part}"


def require_sbatch() -> None:
    missing = [c for c in ("sbatch", "squeue", "scontrol", "scancel") if shutil.which(c) is None]
    if missing:
        raise SlurmError(
            f"--launcher slurm needs the Slurm client commands, but `{'`, `'.join(missing)}` "
            f"{'is' if len(missing) == 1 else 'are'} not on PATH "
            "(load your cluster's slurm module, or use --launcher local)"
        )


def check_partition(name: str) -> None:
    out = subprocess.run(["scontrol", "show", "partition", name], capture_output=True, text=True)
    if out.returncode != 0:
        raise SlurmError(f"Slurm: {(out.stderr or out.stdout).strip()} (see `sinfo -s` for the partitions)")


def arrays(runs: list[GridRun]) -> list[list[GridRun]]:
    """Group runs into arrays of runs with the same dependencies, every array after those it needs.

    Dependencies outside `runs` are left to the caller (already finished, or queued earlier).
    """
    names = {r.name for r in runs}
    placed: set[str] = set()
    out: list[list[GridRun]] = []
    remaining = list(runs)
    while remaining:
        ready = [r for r in remaining if all(d not in names or d in placed for d in r.after)]
        if not ready:
            raise ValueError(f"grid has a dependency cycle among {[r.name for r in remaining]}")
        groups: dict[tuple[str, ...], list[GridRun]] = {}
        for r in ready:
            groups.setdefault(tuple(sorted(r.after)), []).append(r)
        out += groups.values()
        placed |= {r.name for r in ready}
        remaining = [r for r in remaining if r.name not in placed]
    return out


class GridTask:
    """One grid run as a submitit callable; requeued with itself on preemption or timeout."""

    def __init__(self, run_args: list[str], run_dir: str):
        self.run_args = run_args
        self.run_dir = run_dir

    def __call__(self) -> str:
        import submitit

        from experiments.run import main

        env = submitit.JobEnvironment()
        logs = Path(self.run_dir) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for src, suffix in ((env.paths.stdout, "out"), (env.paths.stderr, "err")):
            link = logs / f"slurm-{env.job_id}.{suffix}"
            if not link.is_symlink():
                link.symlink_to(Path(src).resolve())
        rc = main([*self.run_args, "--resume"])
        if rc != 0:
            error = Path(self.run_dir) / "error.txt"
            if not error.is_file():  # refused before the run record existed: keep the reason with the run
                sys.stderr.flush()
                lines = Path(env.paths.stderr).read_text().strip().splitlines()
                reason = next((x for x in reversed(lines) if x.startswith("error:")), f"exited with {rc}")
                error.write_text(reason.removeprefix("error: ") + "\n")
            raise RuntimeError(error.read_text().strip())
        return self.run_dir

    def checkpoint(self):
        import submitit

        # The run saves its own state periodically; the requeued task resumes from it.
        return submitit.helpers.DelayedSubmission(self)


def submit(
    grid: str,
    results: Path,
    runs: list[GridRun],
    extra_args: list[str],
    res: Resources,
    queued: dict[str, str] | None = None,
    log=print,
) -> list[dict[str, Any]]:
    """Submit `runs` as dependent array jobs; on any refusal, cancel what was submitted and raise.

    queued: run name -> job id of runs still in the queue from an earlier submission,
    which runs in `runs` may depend on.
    """
    import submitit

    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")) if p
    )
    job_of = dict(queued or {})
    submitted: list[dict[str, Any]] = []
    try:
        for group in arrays(runs):
            ex = submitit.SlurmExecutor(folder=results / "slurm" / "%j", max_num_timeout=MAX_TIMEOUT_REQUEUES)
            params: dict[str, Any] = dict(
                job_name=f"{grid}-{len(submitted)}",
                time=res.time_min,
                cpus_per_task=res.cpus_per_run,
                mem=f"{int(res.mem_gb * 1024)}MB",
                array_parallelism=res.array_parallelism,
            )
            if res.partition:
                params["partition"] = res.partition
            if res.gpus_per_run:
                params["gpus_per_node"] = res.gpus_per_run
            needs = sorted({job_of[d] for d in group[0].after if d in job_of})  # the rest have finished
            if needs:
                params["dependency"] = "afterok:" + ":".join(needs)
                params["additional_parameters"] = {"kill-on-invalid-dep": "yes"}
            ex.update_parameters(**params)
            tasks = [GridTask([*r.args(results), "progress=false", *extra_args], str(results / r.name)) for r in group]
            with ex.batch():
                jobs = [ex.submit(t) for t in tasks]
            job_of.update({r.name: j.job_id for r, j in zip(group, jobs)})
            array_id = jobs[0].job_id.split("_")[0]
            submitted.append(
                {
                    "job_id": array_id,
                    "after": needs,
                    "submitted": datetime.now(UTC).isoformat(timespec="seconds"),
                    "resources": asdict(res),
                    "tasks": {j.job_id: r.name for j, r in zip(jobs, group)},
                }
            )
            after = f", after {', '.join(needs)}" if needs else ""
            log(f"  submitted {array_id}: {len(group)} run(s){after}")
    except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError) as e:
        cancel([s["job_id"] for s in submitted])
        raise SlurmError(f"sbatch refused the submission:\n{e}") from None
    except BaseException:
        cancel([s["job_id"] for s in submitted])
        raise
    path = results / JOBS_FILE
    history = read_json(path) if path.is_file() else []
    write_json_atomic(path, history + submitted)
    return submitted


def cancel(job_ids: list[str], wait_s: float = 0.0) -> None:
    """scancel `job_ids`; with `wait_s`, also wait (up to that long) until they have left the queue."""
    if not job_ids:
        return
    subprocess.run(["scancel", *job_ids], capture_output=True)
    t0 = time.time()
    while wait_s and time.time() - t0 < wait_s:
        arrays = set(job_ids)
        if not any(j.split("_")[0] in arrays for j in my_queue()):
            return
        time.sleep(1)
    if wait_s:
        raise SlurmError(f"cancelled jobs {', '.join(job_ids)} are still in the queue after {wait_s:.0f} s")


def recorded_jobs(results: Path) -> dict[str, str]:
    """run name -> the Slurm job id of its latest submission."""
    path = results / JOBS_FILE
    out: dict[str, str] = {}
    for sub in read_json(path) if path.is_file() else []:
        for job_id, name in sub["tasks"].items():
            out[name] = job_id
    return out


def my_queue() -> dict[str, str]:
    """Every job of this user in the Slurm queue (`A_i` for array tasks) -> its state."""
    out = subprocess.run(
        ["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T|%r"], capture_output=True, text=True
    )
    if out.returncode != 0:  # an empty answer here would look like "nothing queued" and invite resubmission
        raise SlurmError(f"squeue failed: {(out.stderr or out.stdout).strip()}")
    states = {}
    for line in out.stdout.splitlines():
        job, state, reason = [*line.split("|"), "", ""][:3]
        states[job] = state.lower() + (f" ({reason})" if reason and reason != "None" else "")
    return states


def queue_states(job_ids: list[str]) -> dict[str, str]:
    """Those of `job_ids` still in the queue -> state. (`squeue -j` fails outright when one id has aged out.)"""
    wanted = set(job_ids)
    if not wanted or shutil.which("squeue") is None:
        return {}
    return {job: state for job, state in my_queue().items() if job in wanted}


def wait(results: Path, names: list[str], poll_s: float = 2.0, progress: bool = True) -> None:
    """Block until none of `names` has a job in the Slurm queue."""
    from tqdm import tqdm

    jobs = recorded_jobs(results)
    ids = [jobs[n] for n in names if n in jobs]
    bar = tqdm(total=len(ids), desc="slurm runs", unit="run", disable=not progress)
    while True:
        queued = queue_states(ids)
        bar.n = len(ids) - len(queued)
        bar.set_postfix(running=sum(s.startswith("running") for s in queued.values()))
        if not queued:
            break
        time.sleep(poll_s)
    bar.close()


def accounting(job_ids: list[str]) -> dict[str, str]:
    """Final states from sacct where accounting is enabled; empty where it isn't."""
    if not job_ids or shutil.which("sacct") is None:
        return {}
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(sorted({j.split("_")[0] for j in job_ids}))],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        return {}
    return dict(line.split("|", 1) for line in out.stdout.splitlines() if "|" in line)
