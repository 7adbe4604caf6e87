"""Meters: what a run costs. They know nothing about models beyond what they are handed."""

from decorbench.meters.flops import count_flops
from decorbench.meters.memory import peak_memory_bytes, reset_peak_memory
from decorbench.meters.timer import Stopwatch

__all__ = ["Stopwatch", "count_flops", "peak_memory_bytes", "reset_peak_memory"]
