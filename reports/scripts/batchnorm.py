"""The tables of cpu/batchnorm.md from its results files: the small CNN without BatchNorm, tuned as in
cpu/lr_tta.md and cpu/dbp_tune.md (the validation sweeps of `train.lr`, then of DBP's own settings), then BP against
DBP on the test set.

    python reports/scripts/batchnorm.py reports/cpu/batchnorm 0.95
"""

from __future__ import annotations

import sys
from pathlib import Path

from dbp_tune import compared, swept  # beside this script

if __name__ == "__main__":
    root, goal = Path(sys.argv[1]), float(sys.argv[2])
    print("### Validation sweep of `train.lr`\n\n" + swept(root / "validation" / "lr", goal))
    print("\n### Validation sweep of DBP's settings\n\n" + swept(root / "validation" / "dbp", goal))
    print("\n### On the test set\n\n" + compared(root / "test", goal))
