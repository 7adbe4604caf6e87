"""The tables of cpu/lr_tta.md from its results files: per model, shared lr and method, steps and time to the
target (median over seeds, and how many seeds got there), final accuracy, and the BP/DBP ratios with their
seed-by-seed counts (a seed's BP and DBP runs share initial weights and batches).

    python reports/scripts/lr_tta.py reports/cpu/lr_tta 0.95
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from decorbench.report.runs import per_run, tidy
from decorbench.results import load


def runs(root: Path, target: float) -> pd.DataFrame:
    parts = []
    for folder in sorted(root.glob("lr*")):
        table, _ = per_run(tidy(load(folder)), target=target)
        parts.append(table.assign(lr=float(folder.name.removeprefix("lr"))))
    return pd.concat(parts, ignore_index=True)


def seed_by_seed(part: pd.DataFrame, column: str) -> str:
    """In how many seeds DBP needed less than BP (both reached the target), of the seeds where both did."""
    wide = part.pivot_table(index="seed", columns="method", values=column)
    both = wide.dropna() if {"bp", "dbp"} <= set(wide.columns) else wide.iloc[:0]
    less, same = int((both["dbp"] < both["bp"]).sum()), int((both["dbp"] == both["bp"]).sum())
    return f"{less}" + (f" (+{same} equal)" if same else "") + f" of {len(both)}"


def table(all_runs: pd.DataFrame) -> str:
    lines = ["| model | lr | method | reached | steps | time | final accuracy | BP/DBP steps (DBP fewer) | "
             "BP/DBP time (DBP less) | other CPU cores |", "|" + "---|" * 10]
    for (model, lr), part in all_runs.groupby(["model", "lr"]):
        medians = part.groupby("method").agg(steps=("steps_to_target", "median"), time=("time_to_target", "median"))
        for method, runs_ in part.groupby("method"):
            other = (pd.to_numeric(runs_["totals.other_cpu_s"]) / pd.to_numeric(runs_["totals.other_cpu_span_s"]))
            row = [model, f"{lr:g}", method.upper(), f"{int(runs_['reached'].sum())}/{len(runs_)}",
                   f"{medians.loc[method, 'steps']:g}", f"{1000 * medians.loc[method, 'time']:.0f} ms",
                   f"{100 * runs_['final_accuracy'].median():.1f} %"]
            if method == "dbp":
                steps, time = (medians.loc["bp", c] / medians.loc["dbp", c] for c in ("steps", "time"))
                row += [f"{steps:.2f}× ({seed_by_seed(part, 'steps_to_target')})",
                        f"{time:.2f}× ({seed_by_seed(part, 'time_to_target')})"]
            else:
                row += ["", ""]
            row.append(f"{other.max():.2f}")
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(runs(Path(sys.argv[1]), float(sys.argv[2]))))
