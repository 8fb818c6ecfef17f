"""analysis/make_tables.py on the committed fixture of real run records (tests/fixtures/records).

Numbers are checked against the raw record files, read here with plain json, not through analysis/.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.make_tables import main

FIXTURE = Path(__file__).parent / "fixtures" / "records"


@pytest.fixture
def records(tmp_path) -> Path:
    """A private copy of the fixture, so a test may damage it."""
    shutil.copytree(FIXTURE, tmp_path / "records")
    return tmp_path / "records"


def make(records: Path, out: Path, *extra: str) -> int:
    # --stale-minutes 0: an unfinished run from another machine counts as stopped, whenever the clone was made
    return main(["--results", str(records), "--out", str(out), "--stale-minutes", "0", *extra])


def raw(run: Path) -> dict:
    """One record read directly: config, summary, initial eval and metrics rows (up to a cut-off row)."""
    rows = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    summary = run / "summary.json"
    return {
        "config": json.loads((run / "config.json").read_text()),
        "summary": json.loads(summary.read_text()) if summary.is_file() else None,
        "initial": json.loads((run / "initial_eval.json").read_text()),
        "rows": rows,
    }


def pm(values: list[float], digits: int = 3) -> str:
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"


def table(out: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(out / "tables" / f"{name}.csv", keep_default_na=False, dtype=str)


def row(df: pd.DataFrame, **match) -> pd.Series:
    hit = df
    for k, v in match.items():
        hit = hit[hit[k] == v]
    assert len(hit) == 1, f"{match}: {len(hit)} rows in\n{df}"
    return hit.iloc[0]


@pytest.fixture
def built(records, tmp_path) -> Path:
    out = tmp_path / "out"
    assert make(records, out, "--budgets", "0,800", "--bootstrap-reps", "500") == 0
    return out


def test_every_table_and_figure_is_written_in_every_format(built):
    tables = [
        "runs",
        "A6_tasks",
        "final_performance_avoid_m1",
        "final_performance_avoid_m2",
        "wallclock_d3il",
        "statistics",
        "probability_of_improvement",
        "hyperparameters_d3il_dppo",
        "hyperparameters_d3il_gaussian_ppo",
        "ablation_gamma_denoise",
    ]
    for name in tables:
        for ext in ("md", "tex", "csv"):
            assert (built / "tables" / f"{name}.{ext}").stat().st_size > 0, f"{name}.{ext}"
    tex = (built / "tables" / "final_performance_avoid_m2.tex").read_text()
    assert r"\begin{tabular}" in tex and r"$\pm$" in tex and "±" not in tex
    for stem in ("learning_curves_avoid_m1", "learning_curves_avoid_m2", "avoid_trajectories_avoid_m2"):
        for ext in ("png", "pdf"):
            assert (built / "figures" / f"{stem}.{ext}").stat().st_size > 5000, f"{stem}.{ext}"
    index = (built / "index.md").read_text()
    assert "### Final performance, avoid_m2" in index and "learning_curves_avoid_m2.png" in index
    # the tables it can't fill are listed with their reason
    assert "wallclock_gym: Table A1: no finished gym fine-tuning runs" in index
    assert "ablation_advantage_estimator: no two runs of one task and method differ only in algo.advantage" in index
    for ext in ("png", "pdf"):  # the one ablation these records vary
        assert (built / "figures" / f"ablation_gamma_denoise.{ext}").stat().st_size > 5000


def test_final_performance_matches_the_records(built, records):
    """Finished runs only, one cell per config: the numbers against the raw files."""
    df = table(built, "final_performance_avoid_m2")
    main_seeds = [raw(records / "smoke" / f"dppo_avoid_m2_s{s}") for s in (0, 1, 2)]

    def at(run: dict, budget: float) -> float:  # the latest evaluation within `budget` env steps
        points = [(0, run["initial"]["eval_success"])]
        points += [(r["env_steps"], r["eval_success"]) for r in run["rows"] if "eval_success" in r]
        return [v for x, v in points if x <= budget][-1]

    dppo = row(df, method="dppo")
    assert dppo["runs"] == "3 finished; 1 stopped"  # the SIGKILLed s5 is counted, not averaged in
    assert dppo["final"] == pm([r["summary"]["final_eval"]["eval_success"] for r in main_seeds])
    assert dppo["at 0 steps"] == pm([r["initial"]["eval_success"] for r in main_seeds])
    assert dppo["at 800 steps"] == pm([at(r, 800) for r in main_seeds])

    other = raw(records / "smoke" / "dppo_avoid_m2_s3")  # gamma_denoise 0.9 gets its own row
    variant = row(df, method="dppo [algo.gamma_denoise=0.9]")
    assert variant["runs"] == "1 finished"
    assert variant["final"] == pm([other["summary"]["final_eval"]["eval_success"]])

    failed = row(df, method="dppo [algo.actor_lr=1e+12]")
    assert failed["runs"] == "0 finished; 1 failed" and failed["final"] == "–"

    gauss = [raw(records / "smoke" / f"gaussian_ppo_avoid_m2_s{s}") for s in (0, 1, 2)]
    assert row(df, method="gaussian_ppo")["at 800 steps"] == pm([at(r, 800) for r in gauss])


def test_runs_table_marks_every_state(built):
    df = table(built, "runs").set_index("run")
    assert df.loc["dppo_avoid_m2_s0", "status"] == "finished"
    assert df.loc["dppo_avoid_m2_s4", "status"] == "failed"
    assert "pg_loss became nan" in df.loc["dppo_avoid_m2_s4", "note"]
    assert df.loc["dppo_avoid_m2_s5", "status"] == "stopped"
    assert df.loc["dppo_avoid_m2_s5", "iterations"] == "1/4"  # the row cut mid-write isn't counted
    assert "line 2 is not a complete row" in df.loc["dppo_avoid_m2_s5", "note"]


def test_a_run_still_going_is_marked_running(records, tmp_path):
    run = records / "smoke" / "dppo_avoid_m2_s5"
    attempt = json.loads((run / "attempts.jsonl").read_text().splitlines()[-1])
    attempt.update(host=platform.node(), pid=os.getpid(), started=datetime.now(UTC).isoformat(timespec="seconds"))
    (run / "attempts.jsonl").write_text(json.dumps(attempt) + "\n")  # as if this test process were the run
    out = tmp_path / "out"
    assert make(records, out) == 0
    assert table(out, "runs").set_index("run").loc["dppo_avoid_m2_s5", "status"] == "running"
    assert row(table(out, "final_performance_avoid_m2"), method="dppo")["runs"] == "3 finished; 1 running"


def test_records_of_another_harness_version_get_their_own_cell(records, tmp_path):
    run = records / "smoke" / "dppo_avoid_m2_s2"
    summary = json.loads((run / "summary.json").read_text())
    summary["harness"]["commit"] = "0123456789abcdef"
    (run / "summary.json").write_text(json.dumps(summary))
    out = tmp_path / "out"
    assert make(records, out, "--bootstrap-reps", "200") == 0
    df = table(out, "final_performance_avoid_m2")
    old = row(df, method="dppo @v0.1.0+0123456")
    assert old["runs"] == "1 finished"
    assert old["final"] == pm([summary["final_eval"]["eval_success"]])
    rest = df[df["method"].str.startswith("dppo @") & (df["method"] != "dppo @v0.1.0+0123456")]
    assert len(rest) == 1 and rest.iloc[0]["runs"].startswith("2 finished")
    finals = [raw(records / "smoke" / f"dppo_avoid_m2_s{s}")["summary"]["final_eval"]["eval_success"] for s in (0, 1)]
    assert rest.iloc[0]["final"] == pm(finals)


def test_wallclock_matches_the_records(built, records):
    df = table(built, "wallclock_d3il")
    runs = [raw(records / "smoke" / f"gaussian_ppo_avoid_m2_s{s}") for s in (0, 1, 2)]
    r = row(df, task="avoid_m2", method="gaussian_ppo")
    assert r["runs"] == "3"
    for key, col in (("time_sample", "sample"), ("time_env", "env"), ("time_update", "update")):
        assert r[f"{col} (s/itr)"] == pm([x["summary"]["time_per_iteration"][key] for x in runs])
    # the fine-tuning loop summed over attempts, in minutes since these runs are short
    assert r["fine-tune (min)"] == pm([x["summary"]["wall_time"] / 60 for x in runs], 2)
    pre = json.loads((records / "smoke" / "pretrain_gaussian_avoid_m2" / "summary.json").read_text())
    assert r["pre-train (min)"] == pm([pre["pretrain"]["wall_time"] / 60], 2)
    hw = runs[0]["summary"]["hardware"]
    assert r["hardware"].startswith(f"{hw['processor']} ×{hw['cpu_count']}")
    md = (built / "tables" / "wallclock_d3il.md").read_text()
    assert f"Hardware: {hw['processor']}" in md


def test_statistics_match_an_independent_computation(built, records):
    def finals(method: str, task: str, seeds) -> list[float]:
        grid = "m1" if task == "avoid_m1" else "smoke"
        return [raw(records / grid / f"{method}_{task}_s{s}")["summary"]["final_eval"]["eval_success"] for s in seeds]

    # gaussian_ppo has 2 runs on avoid_m1 and 3 on avoid_m2: the first 2 of each are used
    scores = np.array([finals("gaussian_ppo", "avoid_m1", (0, 1)), finals("gaussian_ppo", "avoid_m2", (0, 1))]).T
    flat = np.sort(scores.ravel())
    iqm = flat[1:3].mean()  # 4 scores: the interquartile mean drops one from each end
    stats = row(table(built, "statistics"), method="gaussian_ppo")
    assert stats["runs per task"] == "2" and stats["tasks"] == "2"
    point, lo, hi = (float(x) for x in stats["IQM [95% CI]"].replace("[", "").replace("]", "").replace(",", "").split())
    assert point == pytest.approx(iqm, abs=5e-4)
    assert flat.min() <= lo < hi <= flat.max()  # the scores vary, so the bootstrap interval has width
    assert stats["mean ± std (paper)"] == pm(list(scores.mean(axis=1)))

    x, y = finals("dppo", "avoid_m1", (0, 1)), finals("gaussian_ppo", "avoid_m1", (0, 1))
    p = np.mean([1.0 if a > b else 0.5 if a == b else 0.0 for a in x for b in y])
    poi = row(table(built, "probability_of_improvement"), X="dppo", Y="gaussian_ppo")
    assert poi["tasks"] == "avoid_m1, avoid_m2"
    x2 = finals("dppo", "avoid_m2", (0, 1, 2))
    y2 = finals("gaussian_ppo", "avoid_m2", (0, 1))  # the fewest runs across the shared tasks
    p2 = np.mean([1.0 if a > b else 0.5 if a == b else 0.0 for a in x2[:2] for b in y2])
    assert float(poi["P(X > Y) [95% CI]"].split()[0]) == pytest.approx((p + p2) / 2, abs=5e-4)


def test_hyperparameters_come_from_the_run_configs(records, tmp_path):
    pre_cfg = records / "smoke" / "pretrain_diffusion_avoid_m2" / "config.json"
    pre = json.loads(pre_cfg.read_text())
    pre["pretrain"]["lr"] = 0.00123  # not what the fine-tuning configs repeat: the table must take the record's
    pre_cfg.write_text(json.dumps(pre))
    built = tmp_path / "out"
    assert make(records, built, "--bootstrap-reps", "100") == 0
    df = table(built, "hyperparameters_d3il_dppo").set_index("hyperparameter")
    assert df.loc["pretrain.lr", "avoid_m2"] == "0.00123"
    config = raw(records / "smoke" / "dppo_avoid_m2_s3")["config"]
    assert df.loc["algo.gamma_denoise", "avoid_m2: [algo.gamma_denoise=0.9]"] == "0.9"
    assert df.loc["algo.gamma_denoise", "avoid_m2"] == "0.95"
    assert df.loc["algo.ft_denoising_steps", "avoid_m2"] == str(config["algo"]["ft_denoising_steps"])
    assert df.loc["pretrain.n_steps", "avoid_m2"] == str(pre["pretrain"]["n_steps"])
    m1 = raw(records / "m1" / "dppo_avoid_m1_s0")["config"]
    assert df.loc["policy.hidden", "avoid_m1"] == "[" + ", ".join(map(str, m1["policy"]["hidden"])) + "]"


def test_ablation_rows_differ_only_in_the_ablated_value(built, records):
    df = table(built, "ablation_gamma_denoise")
    assert list(df["algo.gamma_denoise"]) == ["0.9", "0.95"]
    main_seeds = [raw(records / "smoke" / f"dppo_avoid_m2_s{s}") for s in (0, 1, 2)]
    assert row(df, **{"algo.gamma_denoise": "0.95"})["final"] == pm(
        [r["summary"]["final_eval"]["eval_success"] for r in main_seeds]
    )


def test_a_corrupted_metrics_row_is_reported_and_the_tables_still_built(records, tmp_path, capsys):
    metrics = records / "smoke" / "dppo_avoid_m2_s0" / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join([*lines[:2], lines[2][:17], *lines[3:]]) + "\n")
    out = tmp_path / "out"
    assert make(records, out, "--bootstrap-reps", "200") == 0
    err = capsys.readouterr().err
    assert f"{metrics.parent}: metrics.jsonl line(s) 3 not valid rows; skipped them, used the other 3 rows" in err
    assert table(out, "runs").set_index("run").loc["dppo_avoid_m2_s0", "iterations"] == "3/4"
    seeds = [raw(records / "smoke" / f"dppo_avoid_m2_s{s}") for s in (0, 1, 2)]  # the finished run still counts
    assert row(table(out, "final_performance_avoid_m2"), method="dppo")["final"] == pm(
        [r["summary"]["final_eval"]["eval_success"] for r in seeds]
    )
    assert (out / "figures" / "learning_curves_avoid_m2.png").stat().st_size > 5000


@pytest.mark.parametrize("case", ["missing", "empty"])
def test_no_records_is_one_clear_error_and_the_task_table_still_made(tmp_path, capsys, case):
    results = tmp_path / "results"
    if case == "empty":
        results.mkdir()
    out = tmp_path / "out"
    assert make(results, out) == 1
    err = capsys.readouterr().err
    expected = "does not exist" if case == "missing" else "holds no run records"
    assert err.count("error:") == 1 and expected in err and "Traceback" not in err
    assert "| avoid_m2 |" in (out / "tables" / "A6_tasks.md").read_text()


def test_bad_options_are_refused(records, tmp_path, capsys):
    with pytest.raises(SystemExit, match="unknown --format docx"):
        make(records, tmp_path / "out", "--format", "md,docx")
    with pytest.raises(SystemExit, match="--budgets"):
        make(records, tmp_path / "out", "--budgets", "lots")


def test_default_budgets_are_the_evaluation_points(records, tmp_path):
    out = tmp_path / "out"
    assert make(records, out, "--bootstrap-reps", "100") == 0
    df = table(out, "final_performance_avoid_m2")
    finished = [raw(p) for p in sorted((records / "smoke").glob("*_avoid_m2_s*")) if (p / "summary.json").is_file()]
    # every finished run of the task evaluates at iterations 1 and 3: the budget is when all had made the first
    first = [next(r["env_steps"] for r in run["rows"] if "eval_success" in r) for run in finished]
    budget = max(first)
    columns = [
        "method",
        "runs",
        "at 0 steps",
        f"at {budget:,} steps",
        "final",
        "best during training",
        "final env steps",
    ]
    assert list(df.columns) == columns
    dppo = [raw(records / "smoke" / f"dppo_avoid_m2_s{s}") for s in (0, 1, 2)]
    firsts = [next(r["eval_success"] for r in run["rows"] if "eval_success" in r) for run in dppo]
    assert row(df, method="dppo")[f"at {budget:,} steps"] == pm(firsts)


def test_aggregates_pool_tasks_only_when_the_runs_depart_from_the_defaults_alike(records, tmp_path):
    for seed in (0, 1):  # avoid_m1's DPPO now has the avoid_m2 variant's gamma_denoise
        cfg = records / "m1" / f"dppo_avoid_m1_s{seed}" / "config.json"
        config = json.loads(cfg.read_text())
        config["algo"]["gamma_denoise"] = 0.9
        cfg.write_text(json.dumps(config))
    out = tmp_path / "out"
    assert make(records, out, "--bootstrap-reps", "100") == 0
    stats = table(out, "statistics").set_index("method")
    assert stats.loc["dppo", "tasks"] == "1"  # avoid_m2's three seeds at 0.95
    assert stats.loc["dppo [algo.gamma_denoise=0.9]", "tasks"] == "2"  # s3 on avoid_m2 with both avoid_m1 seeds


def test_old_odd_and_damaged_records_cost_only_what_they_break(records, tmp_path, capsys):
    smoke = records / "smoke"
    old = json.loads((smoke / "dppo_avoid_m2_s0" / "summary.json").read_text())
    del old["harness"], old["time_per_iteration"]  # as written before these fields existed
    (smoke / "dppo_avoid_m2_s0" / "summary.json").write_text(json.dumps(old))
    attempts = [json.loads(line) for line in (smoke / "dppo_avoid_m2_s0" / "attempts.jsonl").read_text().splitlines()]
    lines = [json.dumps({k: v for k, v in a.items() if k not in ("harness", "pid")}) for a in attempts]
    (smoke / "dppo_avoid_m2_s0" / "attempts.jsonl").write_text("\n".join(lines) + "\n")
    gauss = json.loads((smoke / "gaussian_ppo_avoid_m2_s0" / "summary.json").read_text())
    gauss["time_per_iteration"] = dict.fromkeys(gauss["time_per_iteration"])  # what a run with no rows writes
    (smoke / "gaussian_ppo_avoid_m2_s0" / "summary.json").write_text(json.dumps(gauss))
    (smoke / "gaussian_ppo_avoid_m2_s1" / "rollouts_final.json").write_text('{"paths": [[0.1, ')
    shutil.copytree(smoke / "gaussian_ppo_avoid_m2_s2", smoke / "other_task_run")
    other = json.loads((smoke / "other_task_run" / "config.json").read_text())
    (smoke / "other_task_run" / "config.json").write_text(json.dumps({**other, "task": "mystery_task"}))
    (smoke / "broken_run").mkdir()
    (smoke / "broken_run" / "config.json").write_text("{not json")

    out = tmp_path / "out"
    assert make(records, out, "--bootstrap-reps", "100") == 0
    err = capsys.readouterr().err
    assert f"{smoke / 'broken_run'}: config.json is unreadable" in err
    assert "rollouts_final.json is unreadable" in (out / "index.md").read_text()
    assert "Traceback" not in err and "could not build" not in err
    runs = table(out, "runs").set_index("run")
    assert runs.loc["other_task_run", "task"] == "mystery_task"
    assert (out / "tables" / "final_performance_mystery_task.csv").is_file()
    wall = row(table(out, "wallclock_d3il"), task="avoid_m2", method="gaussian_ppo")
    assert wall["sample (s/itr)"].endswith("(n=2 of 3)")  # the run without timings is marked, not averaged in
    perf = table(out, "final_performance_avoid_m2")
    assert perf["method"].str.endswith("@unknown").sum() == 1  # the record without a harness has its own row


def test_a_results_folder_of_pre_trainings_only(records, tmp_path):
    for run in (records / "smoke").iterdir():
        if not run.name.startswith("pretrain_"):
            shutil.rmtree(run)
    shutil.rmtree(records / "m1")
    out = tmp_path / "out"
    assert make(records, out) == 0
    assert len(table(out, "runs")) == 2
    index = (out / "index.md").read_text()
    assert "final_performance: no fine-tuning runs" in index and "statistics: no finished runs" in index


def test_no_finished_run_is_lost_from_the_aggregates(records):
    """A stage=all run is its own cell; every finished run's score still reaches exactly one aggregate."""
    from analysis.records import load_runs, make_cells
    from analysis.stats import score_matrices

    cfg = records / "smoke" / "gaussian_ppo_avoid_m2_s2" / "config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "stage": "all"}))
    runs, _ = load_runs(records, stale_after_s=0)
    scores, _ = score_matrices(make_cells(runs))
    pooled = sorted(
        v
        for label, per_task in scores.items()
        if label.startswith("gaussian_ppo")
        for vs in per_task.values()
        for v in vs
    )
    finals = sorted(
        raw(p)["summary"]["final_eval"]["eval_success"]
        for p in [*(records / "smoke").glob("gaussian_ppo_*"), *(records / "m1").glob("gaussian_ppo_*")]
    )
    assert pooled == finals
    assert len([label for label in scores if label.startswith("gaussian_ppo")]) == 2


def test_fine_tunings_of_unknown_pre_trainings_are_kept_apart(records, tmp_path):
    shutil.rmtree(records / "smoke" / "pretrain_diffusion_avoid_m2")  # its record is gone: only paths remain
    cfg = records / "smoke" / "dppo_avoid_m2_s2" / "config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "checkpoint": "/elsewhere/pretrained.pt"}))
    out = tmp_path / "out"
    assert make(records, out, "--bootstrap-reps", "100") == 0
    df = table(out, "final_performance_avoid_m2")
    assert row(df, method="dppo")["runs"] == "2 finished; 1 stopped"
    assert row(df, method="dppo [pretrain.checkpoint=/elsewhere/pretrained.pt]")["runs"] == "1 finished"


# ----------------------------------------------------------------------------- the paper's diffusion-RL comparison
# Synthetic records of the grids diffusion_rl: DPPO and the six diffusion-based baselines (paper Fig. 5, Table A1)
# on a Gym and an Avoid task, written here in the layout analysis/records.py reads, with numbers chosen so that
# each quantity is computed below by hand.

SEVEN = ("dppo", "drwr", "dawr", "dipo", "idql", "dql", "qsm")
STEPS_PER_ITR = {"hopper": 80_000, "avoid_m2": 12_345}
ELSEWHERE = ("dppo", "hopper", 3)  # a fourth seed, run on another machine


def seeds_of(method: str, task: str) -> tuple[int, ...]:
    return (0, 1, 2, 3) if (method, task) == ELSEWHERE[:2] else (0, 1, 2)


def seconds_of(k: int, seed: int) -> list[float]:
    """Per-iteration wall-clock of method number k: a slow first iteration, then a steady one (median != mean)."""
    return [40.0 + k] + [1.0 + k + 0.1 * seed + 0.01 * i for i in range(5)]


def evals_of(task: str, k: int, seed: int) -> dict[int, float]:
    """Evaluations at iterations 1, 3 and 5: the best in the middle, the last one lower."""
    if task == "hopper":
        return {1: 1000.0 + 100 * k + 10 * seed, 3: 2500.0 + 50 * seed + k, 5: 2000.0 + 20 * seed}
    return {1: 0.2 + 0.01 * k, 3: 0.9 - 0.1 * seed, 5: 0.5 + 0.05 * seed}


def initial_of(task: str, seed: int) -> float:
    """The pre-trained policy's evaluation; seed 0's beats every evaluation during training."""
    return (3000.0 if seed == 0 else 1500.0) if task == "hopper" else (0.95 if seed == 0 else 0.1)


def write_run(
    results: Path, method: str, task: str, seed: int, processor: str = "Test CPU", steps_per_itr: int | None = None
) -> Path:
    """A finished fine-tuning record of the grid diffusion_rl, made on `processor`."""
    k = SEVEN.index(method)
    run = results / "diffusion_rl" / f"{method}_{task}_s{seed}"
    run.mkdir(parents=True)
    steps_per_itr = steps_per_itr or STEPS_PER_ITR[task]
    key = "eval_return" if task == "hopper" else "eval_success"
    seconds, evals = seconds_of(k, seed), evals_of(task, k, seed)
    rows = [
        {"itr": i, "env_steps": (i + 1) * steps_per_itr, "time_iteration": t}
        | ({key: evals[i], "eval_episodes": 10} if i in evals else {})
        for i, t in enumerate(seconds)
    ]
    config = {"method": method, "task": task, "seed": seed, "stage": "finetune", "scale": "cpu", "checkpoint": None,
              "name": run.name, "train": {"n_iterations": len(rows), "eval_every": 2}}  # fmt: skip
    summary = {
        "initial_eval": {key: initial_of(task, seed)},
        "final_eval": {key: evals[max(evals)]},
        "n_iterations": len(rows),
        "env_steps": rows[-1]["env_steps"],
        "wall_time": sum(seconds),
        "hardware": {"processor": processor, "cpu_count": 2, "torch": "test"},
        "harness": {"version": "0.1.0", "commit": "0123456789abcdef", "dirty": False},
    }
    (run / "config.json").write_text(json.dumps(config))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "initial_eval.json").write_text(json.dumps({key: initial_of(task, seed)}))
    (run / "summary.json").write_text(json.dumps(summary))
    return run


@pytest.fixture(scope="module")
def diffusion_rl(tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("diffusion_rl")
    for task in STEPS_PER_ITR:
        for method in SEVEN:
            for seed in (0, 1, 2):
                write_run(results, method, task, seed)
    write_run(results, *ELSEWHERE, processor="Other CPU")  # in the tables' numbers; its own wall-clock row
    return results


@pytest.fixture(scope="module")
def diffusion_rl_built(diffusion_rl, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("diffusion_rl_out")
    assert make(diffusion_rl, out, "--bootstrap-reps", "50") == 0
    return out


def test_final_performance_reports_final_best_and_pre_trained_values(diffusion_rl_built):
    for task, digits in (("hopper", 1), ("avoid_m2", 3)):
        df = table(diffusion_rl_built, f"final_performance_{task}")
        assert list(df["method"][:7]) == list(SEVEN)  # DPPO, then the baselines in the paper's order
        cols = list(df.columns)
        assert cols.index("best during training") == cols.index("final") + 1
        for k, method in enumerate(SEVEN):
            r = row(df, method=method)
            evals = [evals_of(task, k, s) for s in seeds_of(method, task)]
            assert r["best during training"] == pm([max(e.values()) for e in evals], digits)  # initial not counted
            assert r["final"] == pm([e[5] for e in evals], digits)
            assert r["at 0 steps"] == pm([initial_of(task, s) for s in seeds_of(method, task)], digits)
    md = (diffusion_rl_built / "tables" / "final_performance_hopper.md").read_text()
    assert "the pre-trained policy's evaluation is not counted" in md


def test_wallclock_ratios_to_dppo_and_the_papers(diffusion_rl_built):
    df = table(diffusion_rl_built, "wallclock_vs_dppo_gym")
    test_cpu = df[df["hardware"].str.startswith("Test CPU")]
    assert list(test_cpu["method"]) == list(SEVEN)

    def mean_median(k: int) -> float:  # mean over seeds of each run's median seconds per iteration
        return float(np.mean([np.median(seconds_of(k, s)) for s in (0, 1, 2)]))

    # paper Table A1, Hopper-v2 column, and the text's 'X% faster' read as t_fast = (1 - p) t_slow
    table_a1 = {"dppo": 16.6, "drwr": 11.3, "dawr": 30.4, "dipo": 27.8, "idql": 16.3, "dql": 20.5, "qsm": 64.4}
    text = {"dppo": 1.0, "qsm": 1 / 0.26, "dawr": 1 / 0.59, "dipo": 1 / 0.63, "dql": 1 / 0.88, "drwr": 0.67,
            "idql": 0.93}  # fmt: skip
    for k, method in enumerate(SEVEN):
        r = row(test_cpu, method=method)
        assert r["runs"] == "3"
        assert r["s/itr"] == pm([float(np.median(seconds_of(k, s))) for s in (0, 1, 2)])
        assert r["ratio to dppo"] == f"{mean_median(k) / mean_median(0):.2f}"
        assert r["paper ratio (Table A1)"] == f"{table_a1[method] / table_a1['dppo']:.2f}"
        assert r["paper ratio (text, mean over tasks)"] == f"{text[method]:.2f}"
        assert r["env steps/itr"] == "80k"
    other = row(df, hardware="Other CPU ×2, torch test")  # DPPO's run on another machine is compared with itself
    assert other["method"] == "dppo" and other["runs"] == "1" and other["ratio to dppo"] == "1.00"
    md = (diffusion_rl_built / "tables" / "wallclock_vs_dppo_gym.md").read_text()
    assert "t_A = (1 - p) × t_B" in md and "Table A1" in md
    avoid = table(diffusion_rl_built, "wallclock_vs_dppo_d3il")  # no paper table for Avoid: no paper columns
    assert not any(c.startswith("paper") for c in avoid.columns)
    assert row(avoid, method="qsm")["ratio to dppo"] == f"{mean_median(6) / mean_median(0):.2f}"


def test_a_method_without_dppo_on_its_machine_has_no_ratio_and_is_named(records):
    from analysis.records import load_runs, make_cells
    from analysis.tables import wallclock_ratio_tables

    run = records / "smoke" / "gaussian_ppo_avoid_m2_s0"
    summary = json.loads((run / "summary.json").read_text())
    summary["hardware"]["processor"] = "Elsewhere CPU"
    (run / "summary.json").write_text(json.dumps(summary))
    (t, *_) = wallclock_ratio_tables(make_cells(load_runs(records, stale_after_s=0)[0]))
    assert t.name == "wallclock_vs_dppo_d3il"
    assert not t.df["hardware"].str.startswith("Elsewhere").any()
    assert (
        "Left out, no DPPO runs on the same task, machine and scale: gaussian_ppo on avoid_m2 (Elsewhere CPU"
        in (t.notes[-1])
    )
    gauss = [raw(records / "smoke" / f"gaussian_ppo_avoid_m2_s{s}") for s in (1, 2)]  # the two left on DPPO's machine
    dppo = [raw(records / "smoke" / f"dppo_avoid_m2_s{s}") for s in (0, 1, 2)]
    median = lambda run: float(np.median([r["time_iteration"] for r in run["rows"]]))  # noqa: E731
    r = row(t.df, task="avoid_m2", method="gaussian_ppo")
    assert r["runs"] == 2
    assert r["ratio to dppo"] == f"{np.mean([median(x) for x in gauss]) / np.mean([median(x) for x in dppo]):.2f}"


def test_the_paper_text_percentages_match_table_a1_under_the_stated_reading():
    """The reading of 'X% faster' the ratio table states reproduces every Gym percentage from Table A1's means."""
    from analysis.tables import PAPER_FASTER, PAPER_TIMES

    _, _, times = PAPER_TIMES["gym"]
    mean = {m: np.mean(t) for m, t in times.items()}
    for faster, slower, p in PAPER_FASTER["gym"]:
        assert 1 - mean[faster] / mean[slower] == pytest.approx(p, abs=0.005), (faster, slower)


def drawn_colours(fig) -> dict[str, str]:
    """Method -> colour of what a figure drew for it: legend lines of curves, panel titles of Avoid paths."""
    from matplotlib.colors import to_hex

    colours: dict[str, set[str]] = {}
    for ax in fig.axes:
        legend = ax.get_legend()
        for h, text in zip(legend.legend_handles, legend.get_texts()) if legend else ():
            colours.setdefault(text.get_text().split()[0], set()).add(to_hex(h.get_color()))
        if "before" in ax.get_title() or "after" in ax.get_title():
            colours.setdefault(ax.get_title().split(",")[0].split()[0], set()).add(to_hex(ax.title.get_color()))
    assert all(len(c) == 1 for c in colours.values()), colours  # one colour per method within a figure
    return {m: c.pop() for m, c in colours.items()}


@pytest.fixture
def drawn(monkeypatch) -> list:
    """Every figure the tool draws, kept as (stem, figure) as well as written."""
    from analysis import figures

    kept: list = []
    save = figures._save

    def keep(fig, out: Path, stem: str) -> list[Path]:
        kept.append((stem, fig))
        return save(fig, out, stem)

    monkeypatch.setattr(figures, "_save", keep)
    return kept


def test_each_method_has_one_colour_in_every_figure(diffusion_rl, records, drawn, tmp_path):
    from matplotlib.colors import to_hex

    from analysis import figures
    from analysis.records import load_runs, make_cells

    for results in (diffusion_rl, records):
        cells = make_cells(load_runs(results, stale_after_s=0)[0])
        figures.learning_curves(cells, tmp_path / "figures")
        figures.avoid_trajectories(cells, tmp_path / "figures")
    per_figure = [(stem, drawn_colours(fig)) for stem, fig in drawn]
    stems = [stem for stem, _ in per_figure]
    assert stems.count("learning_curves_avoid_m2") == 2 and {
        "learning_curves_hopper",
        "avoid_trajectories_avoid_m2",
    } <= {*stems}
    assert set(dict(per_figure)["learning_curves_hopper"]) == set(SEVEN)
    assert set(dict(per_figure)["avoid_trajectories_avoid_m2"]) == {"dppo", "gaussian_ppo"}
    for stem, colours in per_figure:
        for method, colour in colours.items():
            assert colour == to_hex(figures.METHOD_COLOURS[method]), (stem, method)
    named = [to_hex(c) for c in figures.METHOD_COLOURS.values()]
    assert len(set(named)) == len(named) and {*SEVEN, "gaussian_ppo"} <= set(figures.METHOD_COLOURS)


def test_curves_are_the_mean_over_seeds_against_millions_of_env_steps(diffusion_rl):
    from analysis import figures
    from analysis.records import load_runs, make_cells

    fig = figures.curves_figure(make_cells(load_runs(diffusion_rl, stale_after_s=0)[0]), "hopper")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "env steps (M)"
    line = next(h for h, label in zip(*ax.get_legend_handles_labels()) if label == "qsm (n=3)")
    evals = [evals_of("hopper", SEVEN.index("qsm"), s) for s in (0, 1, 2)]
    x = [0.0] + [(i + 1) * STEPS_PER_ITR["hopper"] / 1e6 for i in (1, 3, 5)]
    mean = [np.mean([initial_of("hopper", s) for s in (0, 1, 2)])] + [np.mean([e[i] for e in evals]) for i in (1, 3, 5)]
    assert np.allclose(line.get_xdata(), x) and np.allclose(line.get_ydata(), mean)
    band = ax.collections[SEVEN.index("qsm")].get_paths()[0].vertices  # the ±1 std band (numpy's std, as the tables)
    top = np.mean([e[3] for e in evals]) + np.std([e[3] for e in evals])
    assert any(np.allclose(v, (x[2], top)) for v in band)


def tick_label_boxes(fig, ax) -> list:
    """The boxes of the x tick labels drawn inside the axes, as matplotlib's renderer lays them out."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)  # the tool closed the figure once written: give it a canvas again
    canvas.draw()
    renderer = canvas.get_renderer()
    lo, hi = sorted(ax.get_xlim())
    ticks = ax.xaxis.get_major_ticks(len(ax.get_xticks()))
    return [t.label1.get_window_extent(renderer) for t in ticks if lo <= t.get_loc() <= hi and t.label1.get_text()]


@pytest.mark.parametrize("steps_per_itr", [333_334, 80_000, 400_000, 12_345, 261, 3_000_000])
def test_x_tick_labels_never_overlap(tmp_path, steps_per_itr, drawn):
    from PIL import Image

    from analysis import figures
    from analysis.records import load_runs, make_cells

    for method in SEVEN:
        for seed in (0, 1, 2):
            write_run(tmp_path / "results", method, "hopper", seed, steps_per_itr=steps_per_itr)
    cells = make_cells(load_runs(tmp_path / "results", stale_after_s=0)[0])
    png = figures.learning_curves(cells, tmp_path / "figures")[0][0]
    ((_, fig),) = drawn
    fig.set_dpi(Image.open(png).info["dpi"][0])  # lay out at the resolution the file was written with
    boxes = tick_label_boxes(fig, fig.axes[0])
    assert len(boxes) >= 2
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b) and min(abs(b.x0 - a.x1), abs(a.x0 - b.x1)) > 2, (a, b)
