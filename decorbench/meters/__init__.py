"""Meters: what a run costs. They know nothing about models beyond what they are handed."""

from decorbench.meters.carbon import CarbonMeter
from decorbench.meters.contention import CpuContentionMeter
from decorbench.meters.energy import EnergyMeter
from decorbench.meters.flops import count_flops
from decorbench.meters.memory import peak_memory_bytes, reset_peak_memory
from decorbench.meters.timer import Stopwatch

__all__ = ["CarbonMeter", "CpuContentionMeter", "EnergyMeter", "Stopwatch", "count_flops", "peak_memory_bytes",
           "reset_peak_memory"]
