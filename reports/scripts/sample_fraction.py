"""The table of cpu/sample_fraction.md from its results files: per model (a results directory each under the folder
given), BP and DBP at each `dbp.sample_fraction`: medians to the target, time per step, BP/DBP ratios and in how many
seeds DBP needed less (a seed's BP and DBP runs share initial weights and batches).

    python reports/scripts/sample_fraction.py reports/cpu/sample_fraction 0.95
"""

from __future__ import annotations

import sys
from pathlib import Path

from decorbench.report.runs import per_run, tidy
from decorbench.results import load
from seeds import bp_over_dbp, shown  # beside this script


def table(root: Path, target: float) -> str:
    lines = ["| model | method | sample fraction | reached | steps | time | time per step | final accuracy | "
             "BP/DBP steps (DBP fewer) | BP/DBP time (DBP less) |", "|" + "---|" * 10]
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        runs, _ = per_run(tidy(load(folder)), target)
        runs["fraction"] = runs["hyperparameters.dbp.sample_fraction"].where(runs["method"] == "dbp")
        bp = runs[runs["method"] == "bp"]
        for (method, fraction), group in runs.groupby(["method", "fraction"], dropna=False, sort=True):
            row = [folder.name, method.upper(), shown(fraction, "{:g}"),
                   f"{int(group['reached'].sum())}/{len(group)}",
                   shown(group["steps_to_target"].median(), "{:g}"),
                   shown(1000 * group["time_to_target"].median(), "{:.0f} ms"),
                   shown(1000 * group["step_time_s"].median(), "{:.2f} ms"),
                   shown(100 * group["final_accuracy"].where(group["scored"]).median(), "{:.1f} %")]
            if method == "dbp":
                row += bp_over_dbp(bp, group)
            lines.append("| " + " | ".join(row + [""] * (10 - len(row))) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(Path(sys.argv[1]), float(sys.argv[2])))
