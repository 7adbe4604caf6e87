"""Runs of one method that differ in their settings: a sweep (say of `train.lr`) reported together. One row per
setting and method, each method's best marked.

Why a section of its own: the summary pools such runs per method (and a note says so), but a sweep asks which
setting is best for each method, so that each is then compared at its own best. Best = the lowest median cost to the
target among the settings at which every run got there: a setting that some seeds never got to is not chosen for a
fast median over the lucky ones.
"""

from __future__ import annotations

import json
import math

import pandas as pd

from .runs import by_group, validation
from .tables import METHOD_ORDER, fmt, setting_columns, shown_settings

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


def best(table: pd.DataFrame) -> dict[str, object]:
    """{"time": setting, "steps": setting}: of `table`'s rows (index: the settings, in their order; columns `every`,
    whether every run reached the target, and median `time` and `steps` to it), the one with the lowest median
    among those every run reached it at, the first on a tie; None where there is none."""
    eligible = table[table["every"]]
    return {what: eligible[what].idxmin() if eligible[what].notna().any() else None for what in ("time", "steps")}


def sweeps(runs: pd.DataFrame, goals: pd.Series) -> list[dict]:
    """Per (dataset, model) in which some method's runs differ in settings: {group, swept (the settings that
    differ), on (which set the accuracies are of), target (`goals`' accuracy there), rows}; a row per method and
    setting: runs, how many reached the target, median steps and time to it,
    median final accuracy (of the runs that ended without a problem), and whether it is the method's best by time or
    by steps."""
    columns = [c for c in setting_columns(runs) if c not in NOT_SWEPT]
    out = []
    for (dataset, model), group in by_group(runs):
        parts = sorted(group.groupby("method"), key=lambda item: (METHOD_ORDER.get(item[0], 2), item[0]))
        shown = {method: shown_settings(part, columns) for method, part in parts}
        swept = [c for c in columns if any(s[c].nunique() > 1 for s in shown.values())]
        if not swept:
            continue
        rows = []
        for method, part in parts:
            label = shown[method][swept].apply(tuple, axis=1)
            table = part.assign(label=label, accuracy=part["final_accuracy"].where(part["scored"])).groupby(
                "label").agg(runs=("run", "size"), reached=("reached", "sum"), every=("reached", "all"),
                             steps=("steps_to_target", "median"), time=("time_to_target", "median"),
                             accuracy=("accuracy", "median"))
            table = table.loc[sorted(table.index, key=_order)]
            marked = best(table)
            for label, row in table.iterrows():
                rows.append({"method": method, "setting": "; ".join(f"{c.removeprefix('hyperparameters.')} {v}"
                                                                    for c, v in zip(swept, label)),
                             "reached": f"{int(row['reached'])}/{int(row['runs'])}",
                             "steps": fmt(row["steps"], "steps"), "time": fmt(row["time"], "seconds"),
                             "accuracy": fmt(row["accuracy"], "accuracy"),
                             "best": [what for what, at in marked.items() if at == label]})
        held = validation(group)
        out.append({"group": f"{dataset} · {model}",
                    "swept": ", ".join(c.removeprefix("hyperparameters.") for c in swept),
                    "on": "a validation set" if (held > 0).all() else "the test set" if (held == 0).all()
                    else "a validation set in some runs, the test set in others",
                    "target": fmt(goals.get((dataset, model), math.nan), "accuracy"), "rows": rows})
    return out
