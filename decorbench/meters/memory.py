"""Peak memory: the CUDA caching allocator's peak on a GPU, the process's peak resident set on a CPU.

On Linux the CPU peak is VmHWM, which `reset_peak_memory` resets (/proc/self/clear_refs), so each run of a suite
reports its own peak. Where that reset fails (not Linux, or a kernel or sandbox without clear_refs) the CPU peak is
None after it: the process's peak since it started would include every earlier run's."""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path

import torch

_STATUS, _CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


_cpu_reset_error: str | None = None  # why the last CPU reset failed; None: it worked, or none was tried


def reset_peak_memory(device: torch.device) -> str | None:
    """Start a new peak; returns why it could not (then a CPU peak reads None until a reset works), else None."""
    global _cpu_reset_error
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return None
    try:
        _CLEAR_REFS.write_text("5")  # "5": reset the peak resident set to the current one
        _cpu_reset_error = None
    except OSError as e:
        _cpu_reset_error = f"cannot reset the peak resident set ({_CLEAR_REFS}: {e.strerror or e})"
    return _cpu_reset_error


def peak_memory_bytes(device: torch.device) -> int | None:
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    if _cpu_reset_error is not None:
        return None
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # Linux reports KiB, macOS bytes


def host_memory_bytes() -> int:
    """The machine's physical memory: what anything built whole on the host (a data set, a model) must fit in."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
