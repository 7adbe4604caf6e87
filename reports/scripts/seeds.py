"""What the study scripts share: a seed's BP and DBP runs start from the same weights and see the same batches, so
they are compared seed by seed."""

from __future__ import annotations

import pandas as pd


def seed_by_seed(bp: pd.DataFrame, dbp: pd.DataFrame, column: str) -> str:
    """In how many seeds DBP needed less than BP (both reached the target), of the seeds where both did."""
    both = pd.concat({"bp": bp.set_index("seed")[column], "dbp": dbp.set_index("seed")[column]}, axis=1).dropna()
    if both.empty:
        return "no seed reached it with both"
    less, same = int((both["dbp"] < both["bp"]).sum()), int((both["dbp"] == both["bp"]).sum())
    return f"{less}" + (f" (+{same} equal)" if same else "") + f" of {len(both)}"
