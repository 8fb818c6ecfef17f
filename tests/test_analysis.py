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
    assert "ablation_advantage_estimator: the harness has no critic option yet" in index


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
    assert list(df.columns) == ["method", "runs", "at 0 steps", f"at {budget:,} steps", "final", "final env steps"]
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
