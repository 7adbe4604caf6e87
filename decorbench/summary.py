"""The short comparison printed after a suite: per dataset and model, BP vs DBP final accuracy and time to target,
and, after a sweep, each setting's row per method.

The per-run numbers come from the report's one-row-per-run table, so the terminal and the HTML report agree.
"""

from __future__ import annotations

import pandas as pd

from decorbench.report.runs import GROUP, chance, per_run, tidy
from decorbench.report.sweep import sweeps
from decorbench.report.tables import BASELINES, not_one_experiment


def summarize(evals: pd.DataFrame, target: float | None = None) -> pd.DataFrame:
    """One row per (dataset, model, method): how many of its runs finished, target, median final accuracy, median
    time to target, how many seeds reached it, the median grams of CO2e a run's training cost (unknown if any run's
    is), and the speed-up = median BP time-to-target / median DBP time-to-target (and BP-CONVERTED's over DBP's
    where it ran: speedup_bp_converted_over_dbp; none where the target is no better than chance_accuracy, always
    guessing the eval set's most frequent class: reaching it says nothing, nor where a method's runs are of
    different settings or repeat a seed: a sweep's settings are not seeds).

    Final accuracies are of the runs that ended without a problem (not interrupted, failed, diverged or unfinished),
    as in the report; the target defaults to BP's median of them per dataset and model.
    """
    runs, goal = per_run(tidy(evals), target)
    runs["final_accuracy"] = runs["final_accuracy"].where(runs["scored"])  # as the target: finished runs only
    table = runs.groupby([*GROUP, "method"]).agg(
        finished=("scored", lambda s: f"{int(s.sum())}/{len(s)}"),
        final_accuracy=("final_accuracy", "median"),
        time_to_target_s=("time_to_target", "median"), reached=("reached", lambda s: f"{int(s.sum())}/{len(s)}"),
        co2e_g=("co2_kg", lambda s: s.median() * 1000 if s.notna().all() else float("nan")))
    table = table.join(goal, on=GROUP).join(chance(runs).rename("chance_accuracy"), on=GROUP)
    tta = table["time_to_target_s"].unstack("method")
    mixed = {key: bool(not_one_experiment(dict(list(group.groupby("method")))))
             for key, group in runs.groupby(GROUP)}  # a sweep's settings are not seeds: no ratio over them
    pooled = pd.Series([mixed[key[:len(GROUP)]] for key in table.index], index=table.index)
    for base in BASELINES if "dbp" in tta else ():
        if base in tta:
            column = f"speedup_{base.replace('-', '_')}_over_dbp"
            table = table.join((tta[base] / tta["dbp"]).rename(column), on=GROUP)
            table[column] = table[column].mask(table["target"] <= table["chance_accuracy"]).mask(pooled)
    return table.reset_index()


def format_summary(table: pd.DataFrame) -> str:
    at_chance = table[table["target"] <= table["chance_accuracy"]].drop_duplicates(GROUP)
    warnings = "".join(f"\n{r.dataset} · {r.model}: target {r.target:.3f} is no better than chance "
                       f"({r.chance_accuracy:.3f}): no speed-up shown" for r in at_chance.itertuples())
    shown = table.drop(columns="chance_accuracy")
    for col in ("target", "final_accuracy", "time_to_target_s", "co2e_g", *shown.filter(like="speedup_")):
        if col in shown:
            spec = ".3g" if col == "co2e_g" else ".3f"  # grams span orders of magnitude
            shown[col] = shown[col].map(lambda v: "-" if pd.isna(v) else format(v, spec))
    return ("finished = runs that ended without a problem (not interrupted, failed, diverged or killed before its "
            "end), of all; final_accuracy = their median; time = training seconds to the first eval at or above the "
            "target, median over the runs that reached it (reached: how many did); "
            "co2e_g = grams CO2e of a run's training (codecarbon's estimate), median over seeds; "
            "speed-up > 1: DBP got there sooner"
            + (" (bp_converted: BP as the DBP paper's code timed it)" if "bp-converted" in set(table["method"]) else "")
            + "\n" + shown.to_string(index=False) + warnings)


def format_sweeps(evals: pd.DataFrame, target: float | None = None) -> str:
    """The report's "Settings swept" tables as text, each method's best setting marked; "" if no method's runs differ
    in their settings. The summary pools them per method."""
    runs, goals = per_run(tidy(evals), target)
    blocks = []
    for swept in sweeps(runs, goals):
        table = pd.DataFrame(swept["rows"]).drop(columns=[] if swept["by_images"] else ["images"]).rename(columns={
            "time": "time_to_target", "steps": "steps_to_target", "images": "images_to_target",
            "accuracy": "final_accuracy", "bp_over_steps": "bp/dbp_steps", "bp_over_time": "bp/dbp_time"})
        table["best"] = table["best"].map(lambda by: " and ".join(f"by {what}" for what in by) or "-")
        by = " (by images seen, steps × batch size, not steps: the batch size is swept)" if swept["by_images"] else ""
        blocks.append(f"{swept['group']}: {swept['swept']} swept, accuracies on {swept['on']}, target "
                      f"{swept['target']}; best = the lowest median to the target among the settings at which every "
                      f"run reached it{by}\n{table.to_string(index=False)}")
    return "\n".join(blocks)
