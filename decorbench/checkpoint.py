"""Checkpoints of one run, written at eval points so an interrupted run continues where it stopped.

Written to a temporary file and renamed over the old one, so a crash mid-write never leaves a broken checkpoint.
Read with `weights_only=True`: a checkpoint holds tensors and plain containers only, never pickled code.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import torch


def save_checkpoint(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)  # a part-written checkpoint on a full disk would keep it full
        refused = _os_error(e)
        if refused is not None and (refused is not e or refused.filename is None):  # torch's zip writer names no
            raise OSError(refused.errno, refused.strerror, str(path)) from e  # file, or hides it: "unexpected pos"
        raise


def _os_error(e: BaseException | None) -> OSError | None:
    """The operating system's refusal (a full disk, a quota) somewhere in an exception's chain, if any."""
    while e is not None and not (isinstance(e, OSError) and e.errno is not None):
        e = e.__cause__ or e.__context__
    return e


def load_checkpoint(path: Path | None, device: torch.device) -> dict | None:
    """The state saved at `path` (None if there is none); ValueError if the disk damaged it. torch.load does not
    check the CRCs its zip archive stores: a flipped bit in a tensor would load, and a run go on from wrong weights."""
    if path is None or not path.exists():
        return None
    with zipfile.ZipFile(path) as archive:
        damaged = archive.testzip()
    if damaged is not None:
        raise ValueError(f"damaged: {damaged} fails its CRC check")
    return torch.load(path, map_location=device, weights_only=True)
