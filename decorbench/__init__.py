"""decorbench: benchmark decorrelated backpropagation (DBP) against backpropagation (BP)."""

__version__ = "0.1.0"
