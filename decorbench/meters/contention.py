"""Other work on the machine while a run trains: CPU time that processes other than the run's own took on the cores
the run may use (and time a hypervisor gave to other machines). A run timed on a busy machine is slower than its
work alone makes it, and nothing in its times would say so.

Read as differences of the kernel's cumulative counters from the run's start, so the error is that of one pair of
readings (a clock tick per counter), however long the run."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

import psutil

TICK_S = 1 / os.sysconf("SC_CLK_TCK")  # the counters' resolution
BUSY_SHARE = 0.1  # other work above this share of the run's cores is flagged


def _busy_s(cpu) -> float:
    # guest time is inside user time already; idle and iowait are not work
    return cpu.user + cpu.nice + cpu.system + cpu.irq + cpu.softirq + getattr(cpu, "steal", 0.0)


def _tree_cpu_s(pid: int) -> tuple[float, int]:
    """CPU seconds of a process, its waited-for children and its live descendants (data loader and compiler
    workers), and how many processes that is."""
    try:
        root = psutil.Process(pid)
        t = root.cpu_times()
        total, processes = t.user + t.system + t.children_user + t.children_system, 1
        for child in root.children(recursive=True):
            try:
                c = child.cpu_times()
            except psutil.Error:  # ended since it was listed
                continue
            total, processes = total + c.user + c.system, processes + 1
        return total, processes
    except psutil.Error:
        return 0.0, 0


class CpuContentionMeter:
    """`other_cpu_s()`: core-seconds other processes took on the run's cores since `start()` (plus what a resumed
    run carried); `warning()` a sentence when that is more than BUSY_SHARE of those cores, beyond the counters'
    resolution. `own_pids`: the run's processes (every local rank under torchrun), each with its descendants."""

    def __init__(self, own_pids: Iterable[int] | None = None) -> None:
        self.own_pids = list(own_pids) if own_pids is not None else [os.getpid()]
        cores: set[int] = set()
        for pid in self.own_pids:
            try:
                cores |= set(psutil.Process(pid).cpu_affinity())
            except (psutil.Error, AttributeError):  # no affinity on this platform: the whole machine
                cores = set(range(psutil.cpu_count() or 1))
                break
        self.cores = sorted(cores)
        self.carried_s = self.carried_span_s = 0.0
        self._start: tuple[float, float, float] | None = None
        self._processes = 1

    def _read(self) -> tuple[float, float, float]:
        per_cpu = psutil.cpu_times(percpu=True)
        if self.cores and self.cores[-1] < len(per_cpu):
            busy = sum(_busy_s(per_cpu[i]) for i in self.cores)
        else:  # CPUs taken offline renumber the list: count the whole machine
            busy = _busy_s(psutil.cpu_times())
        own = [_tree_cpu_s(pid) for pid in self.own_pids]
        self._processes = max(self._processes, sum(n for _, n in own))
        return busy, sum(s for s, _ in own), time.perf_counter()

    def start(self, carried_s: float = 0.0, carried_span_s: float = 0.0) -> None:
        self.carried_s, self.carried_span_s = carried_s, carried_span_s
        self._start = self._read()

    def other_cpu_s(self) -> tuple[float, float]:
        """(core-seconds of other work, seconds it was measured over) so far."""
        busy, own, now = self._read()
        busy0, own0, then = self._start
        return self.carried_s + max(0.0, (busy - busy0) - (own - own0)), self.carried_span_s + now - then

    def warning(self, other_s: float, span_s: float) -> str | None:
        resolution = TICK_S * (len(self.cores) + 2 * self._processes)  # a tick per counter read, at each end
        if span_s <= 0 or other_s - resolution <= BUSY_SHARE * len(self.cores) * span_s:
            return None
        return (f"other processes kept {other_s / span_s:.2g} of the {len(self.cores)} CPU cores it may use busy "
                "on average while it ran: its times are those of a busy machine, slower than its own work makes them")
