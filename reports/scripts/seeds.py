"""What the study scripts share: a seed's BP and DBP runs start from the same weights and see the same batches, so
they are compared seed by seed; and how their tables show a number that may be missing."""

from __future__ import annotations

import pandas as pd


def seed_by_seed(bp: pd.DataFrame, dbp: pd.DataFrame, column: str) -> str:
    """In how many seeds DBP needed less than BP (both reached the target), of the seeds where both did."""
    both = pd.concat({"bp": bp.set_index("seed")[column], "dbp": dbp.set_index("seed")[column]}, axis=1).dropna()
    if both.empty:
        return "no seed reached it with both"
    less, same = int((both["dbp"] < both["bp"]).sum()), int((both["dbp"] == both["bp"]).sum())
    return f"{less}" + (f" (+{same} equal)" if same else "") + f" of {len(both)}"


def shown(value: float, spec: str) -> str:
    """`value` formatted by `spec`, or "—" for none (a median over no run that reached the target)."""
    return "—" if pd.isna(value) else spec.format(value)


def bp_over_dbp(bp: pd.DataFrame, dbp: pd.DataFrame) -> list[str]:
    """The cells "BP/DBP steps (DBP fewer)" and "BP/DBP time (DBP less)": the ratio of the medians to the target, and
    in how many seeds DBP needed less."""
    return [shown(bp[column].median() / dbp[column].median(), "{:.2f}×") + f" ({seed_by_seed(bp, dbp, column)})"
            for column in ("steps_to_target", "time_to_target")]
