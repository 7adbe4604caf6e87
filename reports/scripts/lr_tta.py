"""The tables of cpu/lr_tta.md from its results files: per model, shared lr and method, steps and time to the
target (median over seeds, and how many seeds got there), final accuracy, and the BP/DBP ratios with their
seed-by-seed counts (a seed's BP and DBP runs share initial weights and batches); the same on the validation set
(`<root>/validation/lr*`); then each method at its own best lr, chosen on the validation set and, for contrast, on
the test set, compared on the test set.

    python reports/scripts/lr_tta.py reports/cpu/lr_tta 0.95
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from decorbench.report.runs import per_run, tidy
from decorbench.report.sweep import best
from decorbench.results import load
from seeds import seed_by_seed  # beside this script

MEASURES = {"steps": "steps_to_target", "time": "time_to_target"}


def runs(root: Path, target: float) -> pd.DataFrame:
    """Every run under `root`'s lr* folders, with its lr."""
    parts = []
    for folder in sorted(root.glob("lr*")):
        table, _ = per_run(tidy(load(folder)), target=target)
        parts.append(table.assign(lr=float(folder.name.removeprefix("lr"))))
    return pd.concat(parts, ignore_index=True)


def _shown(measure: str, value: float) -> str:
    if pd.isna(value):
        return "—"
    return f"{1000 * value:.0f} ms" if measure == "time" else f"{value:g}"


def table(all_runs: pd.DataFrame) -> str:
    lines = ["| model | lr | method | reached | steps | time | final accuracy | BP/DBP steps (DBP fewer) | "
             "BP/DBP time (DBP less) | other CPU cores |", "|" + "---|" * 10]
    for (model, lr), part in all_runs.groupby(["model", "lr"]):
        medians = part.groupby("method").agg(steps=("steps_to_target", "median"), time=("time_to_target", "median"))
        for method, runs_ in part.groupby("method"):
            other = (pd.to_numeric(runs_["totals.other_cpu_s"]) / pd.to_numeric(runs_["totals.other_cpu_span_s"]))
            row = [model, f"{lr:g}", method.upper(), f"{int(runs_['reached'].sum())}/{len(runs_)}",
                   _shown("steps", medians.loc[method, "steps"]), _shown("time", medians.loc[method, "time"]),
                   f"{100 * runs_['final_accuracy'].median():.1f} %"]
            if method == "dbp":
                bp = part[part["method"] == "bp"]
                ratios = (medians.loc["bp", m] / medians.loc["dbp", m] for m in MEASURES)
                row += ["—" if pd.isna(r) else f"{r:.2f}× ({seed_by_seed(bp, runs_, c)})"
                        for r, c in zip(ratios, MEASURES.values())]
            else:
                row += ["", ""]
            row.append(f"{other.max():.2f}")
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def best_lrs(all_runs: pd.DataFrame, measure: str) -> pd.Series:
    """Per (model, method): the lr with the lowest median `measure` to the target among those at which every seed
    reached it (the lower lr on a tie), as the report's Settings swept section marks it."""
    table = all_runs.groupby(["model", "method", "lr"]).agg(every=("reached", "all"), time=("time_to_target", "median"),
                                                            steps=("steps_to_target", "median"))
    return pd.Series({key: best(part.droplevel(["model", "method"]))[measure]
                      for key, part in table.groupby(level=["model", "method"])})


def picked(test: pd.DataFrame, validation: pd.DataFrame) -> str:
    """Each method at its own best lr, chosen on the validation runs (and on the test runs), measured on the test
    runs at that lr."""
    lines = ["| model | by | chosen on | BP's lr | DBP's lr | BP (test) | DBP (test) | BP/DBP (DBP less) |",
             "|" + "---|" * 8]
    for model in sorted(test["model"].unique()):
        for measure, column in MEASURES.items():
            for chosen_on, source in (("validation", validation), ("test", test)):
                lrs = best_lrs(source, measure)
                at = {m: test[(test["model"] == model) & (test["method"] == m) & (test["lr"] == lrs.get((model, m)))]
                      for m in ("bp", "dbp")}
                if any(part.empty for part in at.values()):
                    lines.append(f"| {model} | {measure} | {chosen_on} | no lr at which every seed reached it | | | "
                                 "| |")
                    continue
                bp, dbp = (at[m][column].median() for m in ("bp", "dbp"))
                lines.append(f"| {model} | {measure} | {chosen_on} | {lrs[(model, 'bp')]:g} | {lrs[(model, 'dbp')]:g} "
                             f"| {_shown(measure, bp)} | {_shown(measure, dbp)} | {bp / dbp:.2f}× "
                             f"({seed_by_seed(at['bp'], at['dbp'], column)}) |")
    return "\n".join(lines)


if __name__ == "__main__":
    root, target = Path(sys.argv[1]), float(sys.argv[2])
    test, validation = runs(root, target), runs(root / "validation", target)
    print(f"On the test set:\n\n{table(test)}\n\nOn the validation set:\n\n{table(validation)}\n\n"
          f"Each at its own best lr, on the test set:\n\n{picked(test, validation)}")
