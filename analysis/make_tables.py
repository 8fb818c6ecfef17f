"""Rebuild the paper's tables and figures from run records.

    python analysis/make_tables.py [--results results] [--out RESULTS/analysis] [--format md,latex,csv]

Reads every run record under --results, writes every table it has data for
(tables/<name>.{md,tex,csv}), the figures (figures/*.png, *.pdf) and an
index.md with all of them, and says which tables it can't fill and why.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd

from analysis.records import ResultsError, load_runs, make_cells, no_results_folder
from analysis.tables import (
    Missing,
    Table,
    hyperparameter_tables,
    performance_tables,
    runs_table,
    task_table,
    wallclock_ratio_tables,
    wallclock_tables,
)

FORMATS = {"md": "md", "latex": "tex", "csv": "csv"}


# ----------------------------------------------------------------------------- rendering


def to_markdown(t: Table) -> str:
    cols = [str(c) for c in t.df.columns]
    cell = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = [f"### {t.title}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in t.df.itertuples(index=False)]
    lines += [""] + [f"- {n}" for n in t.notes]
    return "\n".join(lines) + "\n"


LATEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {"~": r"\textasciitilde{}", "^": r"\^{}", "\\": r"\textbackslash{}"}
LATEX_SYMBOLS = {"±": r"$\pm$", "×": r"$\times$", "–": "--", "γ": r"$\gamma$", "ε": r"$\epsilon$", "…": r"\dots{}"}


def latex_escape(text: str) -> str:
    out = "".join(LATEX_SPECIAL.get(ch, ch) for ch in str(text))
    for sym, tex in LATEX_SYMBOLS.items():
        out = out.replace(sym, tex)
    return out


def to_latex(t: Table) -> str:
    cols = [latex_escape(c) for c in t.df.columns]
    body = [" & ".join(latex_escape(v) for v in row) + r" \\" for row in t.df.itertuples(index=False)]
    caption = latex_escape(t.title) + "." + "".join(" " + latex_escape(n) for n in t.notes)
    return "\n".join(
        [
            r"\begin{table}[t]",
            r"\centering\small",
            rf"\caption{{{caption}}}",
            rf"\label{{tab:{t.name}}}",
            r"\begin{tabular}{" + "l" * len(cols) + "}",
            r"\toprule",
            " & ".join(cols) + r" \\",
            r"\midrule",
            *body,
            r"\bottomrule",
            r"\end{tabular}",
            r"\end{table}",
            "",
        ]
    )


def write_table(t: Table, out: Path, formats: list[str]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out / f"{t.name}.{FORMATS[fmt]}"
        if fmt == "csv":
            t.df.to_csv(path, index=False)
        else:
            path.write_text(to_markdown(t) if fmt == "md" else to_latex(t))
        paths.append(path)
    return paths


# ----------------------------------------------------------------------------- main


def parse_formats(text: str) -> list[str]:
    formats = [f.strip() for f in text.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        what = ", ".join(unknown) if unknown else "(none given)"
        raise SystemExit(f"error: unknown --format {what}; choose from {', '.join(FORMATS)}")
    return formats


def parse_budgets(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        budgets = sorted({float(b) for b in text.split(",") if b.strip()})
    except ValueError:
        raise SystemExit(f"error: --budgets takes env-step counts like 0,5e5,1e6, not {text!r}") from None
    if not budgets or budgets[0] < 0:
        raise SystemExit("error: --budgets must be non-negative env-step counts, e.g. 0,5e5,1e6")
    return budgets


NO_RECORDS = "every table made from run records"


def build(
    results: Path, budgets: list[float] | None, reps: int, stale_after_s: float, out: Path
) -> tuple[list[Table | Missing], list[tuple[str, list[Path]]], list[str], list[str]]:
    """All tables and figures the records allow: (tables and missing ones, figures, not made, messages).

    A builder that fails on records it didn't expect costs its own table or figure, with the error named,
    never the others."""
    from analysis import ablations, figures, section6
    from analysis.stats import statistics_tables

    items: list[Table | Missing] = [task_table()]
    messages: list[str] = []
    try:
        runs, warnings = load_runs(results, stale_after_s, exclude=out)
    except ResultsError as e:
        messages.append(f"error: {e}")
        return items, [], [NO_RECORDS], messages
    messages += [f"warning: {w}" for w in warnings]
    messages += [f"warning: {r.path}: {p}" for r in runs for p in r.problems]

    def guarded(name: str, make, *args) -> list:
        try:
            result = make(*args)
            return result if isinstance(result, list) else [result]
        except Exception as e:
            messages.append(f"warning: could not build {name}: {type(e).__name__}: {e}")
            return [Missing(name, f"failed on these records ({type(e).__name__}: {e})")]

    items[:0] = guarded("runs", runs_table, runs)
    try:
        cells = make_cells(runs)
    except Exception as e:
        messages.append(f"warning: could not group the runs into cells: {type(e).__name__}: {e}")
        cells = []
    items += guarded("final_performance", performance_tables, cells, budgets)
    items += guarded("wallclock", wallclock_tables, cells, runs)
    items += guarded("wallclock_vs_dppo", wallclock_ratio_tables, cells)
    items += guarded("statistics", statistics_tables, cells, reps)
    items += guarded("hyperparameters", hyperparameter_tables, cells)
    items += guarded("ablations", ablations.ablation_tables, cells)
    fig_dir = out / "figures"
    drawers = [
        ("learning_curves", functools.partial(figures.learning_curves, cells, fig_dir)),
        ("avoid_trajectories", functools.partial(figures.avoid_trajectories, cells, fig_dir)),
        ("ablations", functools.partial(ablations.ablation_figures, cells, fig_dir)),
    ]
    if any(r.task in section6.AVOID and r.method in section6.KIND_LABEL for r in runs):
        drawers += [(name, functools.partial(make, runs, fig_dir)) for name, make in section6.FIGURES]
    figs, missing = [], []
    for name, draw in drawers:
        try:
            written, miss = draw()
        except Exception as e:
            messages.append(f"warning: could not draw {name}: {type(e).__name__}: {e}")
            written, miss = [], [f"{name}: failed on these records ({type(e).__name__}: {e})"]
        figs.append((name, written))
        missing += miss
    return items, figs, missing, messages


def write_index(
    out: Path, items: list[Table | Missing], figs: list[tuple[str, list[Path]]], missing: list[str]
) -> Path:
    parts = ["# Tables and figures from run records", ""]
    for _, paths in figs:
        parts += [f"![{p.stem}](figures/{p.name})" for p in paths if p.suffix == ".png"]
    parts.append("")
    parts += [to_markdown(t) for t in items if isinstance(t, Table)]
    gaps = [f"- {m.name}: {m.reason}" for m in items if isinstance(m, Missing)] + [f"- {m}" for m in missing]
    if gaps:
        parts += ["### Not made", "", *gaps, ""]
    path = out / "index.md"
    path.write_text("\n".join(parts))
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=Path("results"), help="folder holding run records (searched deep)")
    p.add_argument("--out", type=Path, default=None, help="where to write (default: RESULTS/analysis)")
    p.add_argument("--format", default="md,latex,csv", help="any of md, latex, csv, comma-separated")
    p.add_argument("--budgets", default=None, help="env-step budgets for the performance tables, e.g. 0,5e5,1e6 "
                   "(default per task: 0 and up to three of the runs' evaluation points)")  # fmt: skip
    p.add_argument("--bootstrap-reps", type=int, default=2000, help="stratified-bootstrap replications (rliable)")
    p.add_argument("--stale-minutes", type=float, default=60.0, help="an unfinished run of another machine counts "
                   "as running if its record changed within this many minutes, else as stopped")  # fmt: skip
    args = p.parse_args(argv)
    formats = parse_formats(args.format)
    budgets = parse_budgets(args.budgets)
    if args.bootstrap_reps < 1:
        raise SystemExit("error: --bootstrap-reps must be at least 1")
    out = args.out or args.results / "analysis"
    if args.out is None and not args.results.is_dir():  # don't create a results folder that isn't there
        print(f"error: {no_results_folder(args.results)}", file=sys.stderr)
        return 1

    try:
        return write_everything(args, out, formats, budgets)
    except OSError as e:
        print(f"error: can't write {e.filename or out} ({e.strerror}); pass --out <a writable folder>", file=sys.stderr)
        return 1


def write_everything(args: argparse.Namespace, out: Path, formats: list[str], budgets) -> int:
    t0 = time.perf_counter()
    items, figs, missing, messages = build(args.results, budgets, args.bootstrap_reps, args.stale_minutes * 60, out)
    for m in messages:
        print(m, file=sys.stderr)
    if missing == [NO_RECORDS] and args.out is None:  # nothing to analyse: leave the results folder as it is
        return 1
    pd.set_option("display.width", 200)
    for t in items:
        if isinstance(t, Table):
            write_table(t, out / "tables", formats)
            print(f"table   {t.name:36s} {len(t.df):3d} rows  {t.title}")
        else:
            print(f"missing {t.name:36s} {t.reason}")
    for _, paths in figs:
        for path in paths:
            print(f"figure  {path}")
    for m in missing:
        print(f"missing {m}")
    index = write_index(out, items, figs, missing)
    print(f"wrote {index} and {out / 'tables'} in {time.perf_counter() - t0:.1f} s")
    return 1 if any(m.startswith("error:") for m in messages) else 0


if __name__ == "__main__":
    sys.exit(main())
