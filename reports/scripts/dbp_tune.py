"""The tables of cpu/dbp_tune.md from its results files: the validation sweep of DBP's own settings (the report's
"Settings swept" rows, each method's best marked), then, on the test set, BP at its own lr against DBP at its default
and at its tuned settings: medians, BP/DBP ratios and in how many seeds DBP needed less (a seed's BP and DBP runs
share initial weights and batches).

    python reports/scripts/dbp_tune.py reports/cpu/dbp_tune 0.95
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from decorbench.report.runs import per_run, tidy
from decorbench.report.sweep import sweeps
from decorbench.results import load
from seeds import bp_over_dbp, shown  # beside this script


def swept(folder: Path, target: float) -> str:
    runs, goals = per_run(tidy(load(folder)), target)
    lines = ["| model | method | setting | reached | steps | time | final accuracy | best |", "|" + "---|" * 8]
    for group in sweeps(runs, goals):
        for row in group["rows"]:
            lines.append(f"| {group['group'].split(' · ')[1]} | {row['method'].upper()} | {row['setting']} | "
                         f"{row['reached']} | {row['steps']} | {row['time']} | {row['accuracy']} | "
                         f"{' and '.join(f'by {what}' for what in row['best'])} |")
    return "\n".join(lines)


def _setting(run: pd.Series) -> str:
    if run["method"] == "bp":
        return f"lr {run['hyperparameters.train.lr']:g}"
    return (f"lr {run['hyperparameters.train.lr']:g}, dbp.lr {run['hyperparameters.dbp.lr']:g}, "
            f"κ {run['hyperparameters.dbp.kappa']:g}")


def compared(folder: Path, target: float) -> str:
    """Per model (a results directory each under `folder`), BP's runs against each DBP setting's, on the test set."""
    runs, _ = per_run(tidy(load(sorted(p for p in folder.iterdir() if p.is_dir()))), target)
    runs["setting"] = runs.apply(_setting, axis=1)
    lines = ["| model | method | settings | reached | steps | time | final accuracy | BP/DBP steps (DBP fewer) | "
             "BP/DBP time (DBP less) |", "|" + "---|" * 9]
    for model, part in runs.groupby("model"):
        bp = part[part["method"] == "bp"]
        for (method, setting), group in sorted(part.groupby(["method", "setting"])):
            finished = group["final_accuracy"].where(group["scored"])  # not of diverged runs
            row = [model, method.upper(), setting, f"{int(group['reached'].sum())}/{len(group)}",
                   shown(group["steps_to_target"].median(), "{:g}"),
                   shown(1000 * group["time_to_target"].median(), "{:.0f} ms"),
                   shown(100 * finished.median(), "{:.1f} %")]
            if method == "dbp":
                row += bp_over_dbp(bp, group)
            lines.append("| " + " | ".join(row + [""] * (9 - len(row))) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    root, goal = Path(sys.argv[1]), float(sys.argv[2])
    print("### Validation sweep\n\n" + swept(root / "validation", goal))
    print("\n### On the test set\n\n" + compared(root / "test", goal))
