"""Training time as a sum of windows, synchronised with the GPU only at window edges (never per step)."""

from __future__ import annotations

import time

import torch


class Stopwatch:
    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.total_s = 0.0
        self._started: float | None = None

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def start(self) -> None:
        self._sync()
        self._started = time.perf_counter()

    def stop(self) -> float:
        """End the window; returns the cumulative total."""
        self._sync()
        self.total_s += time.perf_counter() - self._started
        self._started = None
        return self.total_s
