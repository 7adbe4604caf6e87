"""Peak memory: the CUDA caching allocator's peak on a GPU, the process's peak resident set on a CPU.

On Linux the CPU peak is VmHWM, which `reset_peak_memory` resets (/proc/self/clear_refs), so each run of a suite
reports its own peak; elsewhere it is the process's peak since it started (getrusage), which never resets."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch

_STATUS, _CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def reset_peak_memory(device: torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        _CLEAR_REFS.write_text("5")  # "5": reset the peak resident set to the current one
    except OSError:
        pass


def peak_memory_bytes(device: torch.device) -> int:
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # Linux reports KiB, macOS bytes
