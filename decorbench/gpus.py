"""Model FLOP utilisation (MFU): achieved training FLOP/s over the GPU's peak dense bf16 tensor-core FLOP/s.

Kept free of torch so that reading results (the report) does not pay for importing it.

Peaks are the vendors' datasheet figures without structured sparsity (the usual MFU denominator, as in PaLM's
definition). A GPU not in the table gets no MFU rather than a guessed one. Matched on whole words of NVML/torch
device names such as "NVIDIA H100 80GB HBM3" (so "RTX A1000" is not an A100); more specific names come first. The
NVL cards are the power-capped PCIe versions: 1,671 TFLOP/s with sparsity on NVIDIA's datasheets, half that dense.
"""

from __future__ import annotations

import re

# (words in the device name, datasheet peak dense bf16 TFLOP/s)
PEAK_BF16_TFLOPS = [
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4), ("H200 NVL", 835.0), ("H200", 989.4),
    ("GH200", 989.4), ("B200", 2250.0), ("A100", 312.0), ("A30", 165.0), ("L40S", 362.0), ("L40", 181.0),
    ("L4", 121.0),
]


def _mig(gpu_name: str) -> bool:
    return re.search(r"\bMIG\b", gpu_name) is not None


def peak_bf16_flops(gpu_name: str | None) -> float | None:
    """The datasheet peak in FLOP/s for this device name, or None if unknown (or no GPU, or a MIG slice: it has a
    share of the GPU's compute that its name does not state exactly, so any peak would be a guess)."""
    if not gpu_name or _mig(gpu_name):
        return None
    for key, tflops in PEAK_BF16_TFLOPS:
        if re.search(rf"(?<![A-Za-z0-9]){re.escape(key)}(?![A-Za-z0-9])", gpu_name):
            return tflops * 1e12
    return None


def why_no_peak(gpu_name: str | None) -> str:
    """Why `peak_bf16_flops(gpu_name)` is None."""
    if not gpu_name:
        return "no GPU"
    if _mig(gpu_name):
        return "a MIG slice, whose share of the GPU's compute its name does not state"
    return "no datasheet peak for it in decorbench/gpus.py"


def mfu(flops: float | None, seconds: float | None, gpu_name: str | None) -> float | None:
    """flops / seconds / peak, or None when any part is unknown."""
    peak = peak_bf16_flops(gpu_name)
    if peak is None or not flops or not seconds:
        return None
    return flops / seconds / peak
