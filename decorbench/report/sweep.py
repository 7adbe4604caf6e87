"""Runs of one method that differ in their settings: a sweep (say of `train.lr`) reported together. One row per
setting and method, each method's best marked.

Why a section of its own: the summary pools such runs per method (and a note says so), but a sweep asks which
setting is best for each method, so that each is then compared at its own best. Best = the lowest median cost to the
target among the settings at which every run got there: a setting that some seeds never got to is not chosen for a
fast median over the lucky ones. Where the batch size is swept, a step of one setting is not a step of another: the
cost in data is then the images seen (steps × batch size), not the steps.
"""

from __future__ import annotations

import json
import math

import pandas as pd

from .runs import by_group, validation
from .tables import BATCH, fmt, methods, setting_columns, shown_settings

NOT_APPLICABLE = "—"
NOT_SWEPT = ("hyperparameters.dbp", "hyperparameters.data.root")  # the dbp table itself (null for BP); where data lay


def _value(shown: str):
    """A setting's display string as its value, so that 3e-4 sorts before 1e-3."""
    try:
        return json.loads(shown)
    except ValueError:
        return shown


def _order(label: tuple) -> tuple:
    """Numbers by value, before anything else (null, text, lists) by its display string."""
    return tuple((0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, shown)
                 for v, shown in zip(map(_value, label), label))


def best(table: pd.DataFrame, costs: tuple[str, ...] = ("time", "steps")) -> dict[str, object]:
    """{cost: setting} per cost in `costs`: of `table`'s rows (index: the settings, in their order; columns `every`,
    whether every run reached the target, and the median of each cost to it), the one with the lowest median
    among those every run reached it at, the first on a tie; None where there is none."""
    eligible = table[table["every"]]
    return {what: eligible[what].idxmin() if eligible[what].notna().any() else None for what in costs}


def _twin(bp: pd.DataFrame | None, label: tuple, shared: list[int]) -> pd.Series | None:
    """BP's row of the same settings as a DBP row's `label` (all but DBP's own, at positions `shared`), if one."""
    if bp is None:
        return None
    same = [row for at, row in bp.iterrows() if all(at[i] == label[i] for i in shared)]
    return same[0] if len(same) == 1 else None


def sweeps(runs: pd.DataFrame, goals: pd.Series) -> list[dict]:
    """Per (dataset, model) in which some method's runs differ in settings: {group, swept (the settings that
    differ), on (which set the accuracies are of), target (`goals`' accuracy there), rows}; a row per method and
    setting: runs, how many reached the target, median steps, images (steps × batch size) and time to it,
    median final accuracy (of the runs that ended without a problem), whether it is the method's best by time or
    by steps (by images where `by_images`: the batch size is swept), and for DBP the ratios BP / DBP of the medians
    (bp_over_steps, bp_over_time) against BP's runs of the same settings but DBP's own ("" where BP has none: a
    sweep of DBP's own settings compares each with BP's one); `by_images`: whether the batch size is swept."""
    columns = [c for c in setting_columns(runs) if c not in NOT_SWEPT]
    out = []
    for (dataset, model), group in by_group(runs):
        parts = [(method, group[group["method"] == method]) for method in methods(group)]
        shown = {method: shown_settings(part, columns) for method, part in parts}
        for method, settings in shown.items():  # not the [dbp] defaults: BP runs have no DBP settings
            if method != "dbp":
                settings[[c for c in columns if c.startswith("hyperparameters.dbp.")]] = NOT_APPLICABLE
        swept = [c for c in columns if any(s[c].nunique() > 1 for s in shown.values())]
        if not swept:
            continue
        by_images = BATCH in swept
        tables = {}
        for method, part in parts:
            label = shown[method][swept].apply(tuple, axis=1)
            table = part.assign(label=label, accuracy=part["final_accuracy"].where(part["scored"])).groupby(
                "label").agg(runs=("run", "size"), reached=("reached", "sum"), every=("reached", "all"),
                             steps=("steps_to_target", "median"), images=("samples_to_target", "median"),
                             time=("time_to_target", "median"), accuracy=("accuracy", "median"))
            tables[method] = table.loc[sorted(table.index, key=_order)]
        shared = [i for i, c in enumerate(swept) if not c.startswith("hyperparameters.dbp.")]  # BP's settings too
        rows = []
        for method, table in tables.items():
            costs = ("time", "images" if by_images else "steps")
            marked = best(table, costs) if len(table) > 1 else {}  # a method's one setting is not "best"
            for label, row in table.iterrows():
                twin = _twin(tables.get("bp"), label, shared) if method == "dbp" else None
                setting = "; ".join(f"{c.removeprefix('hyperparameters.')} {v}" for c, v in zip(swept, label)
                                    if v != NOT_APPLICABLE)
                rows.append({"method": method, "setting": setting or NOT_APPLICABLE,
                             "reached": f"{int(row['reached'])}/{int(row['runs'])}",
                             "steps": fmt(row["steps"], "steps"), "images": fmt(row["images"], "steps"),
                             "time": fmt(row["time"], "seconds"),
                             "accuracy": fmt(row["accuracy"], "accuracy"),
                             "best": [what for what, at in marked.items() if at == label],
                             **{f"bp_over_{what}": "" if twin is None else fmt(twin[what] / row[what], "ratio")
                                for what in ("steps", "time")}})
        held = validation(group)
        out.append({"group": f"{dataset} · {model}",
                    "swept": ", ".join(c.removeprefix("hyperparameters.") for c in swept), "by_images": by_images,
                    "on": "a validation set" if (held > 0).all() else "the test set" if (held == 0).all()
                    else "a validation set in some runs, the test set in others",
                    "target": fmt(goals.get((dataset, model), math.nan), "accuracy"), "rows": rows})
    return out
