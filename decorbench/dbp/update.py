"""The decorrelation update: R ← R − η·[(1−κ)·offdiag(C) + κ·(diag(C) − I)]·R, C = mean z·zᵀ, z = R·x.

Statistics are uncentred (as in the paper's code). With the "normalized" rule the decorrelation term is
scaled by 1/(d−1) and the variance term by 2, so one η suits layers with d from 27 to 4,608.

Under DistributedDataParallel every rank must hold the same R. With `distributed=True` each layer's C is estimated
from the samples of all ranks together, so every rank runs the same deterministic step on the same numbers; per layer
the ranks exchange whichever is smaller: their sampled rows (an all-gather, (w−1)·n·d values into each rank for n
rows per rank and w ranks) or the d×d second moment of the rows (an all-reduce, ≈ 2·(w−1)/w·d² per rank).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn

from decorbench.dbp.layers import DecorMixin


def decor_layers(model: nn.Module) -> dict[str, DecorMixin]:
    """Qualified name → decorrelation layer, in module order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, DecorMixin)}


@contextlib.contextmanager
def fused_for_eval(model: nn.Module) -> Iterator[nn.Module]:
    """Inside, eval-mode forwards use each decorrelation layer's A = W·R formed once on entry instead of once per
    forward (for ResNet-18, 41 G MACs per batch: as much as a forward of 22 images at 224²). W and R must not change
    inside; training-mode forwards form A afresh as always, so gradients are never wrong."""
    layers = list(decor_layers(model).values())
    with torch.no_grad():
        for m in layers:
            m.fused = m._fused_weight()
    try:
        yield model
    finally:
        for m in layers:
            m.fused = None


def set_sampling(model: nn.Module, on: bool) -> None:
    """Whether training forwards sample layer inputs: off for the steps that skip the update, so they pay nothing
    for DBP but the A = W·R formation."""
    for m in decor_layers(model).values():
        m.sampling = on


def _coefficients(layer: DecorMixin) -> tuple[float, float]:
    """(a, b) in G = a·offdiag(C) + b·(diag(C) − I)."""
    a, b = 1.0 - layer.kappa, layer.kappa
    if layer.rule == "normalized":
        a, b = a / max(layer.decor_dim - 1, 1), 2.0 * b
    return a, b


def _moments(x: torch.Tensor, R: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(P, Q, diag(C), ‖C‖²_F) with C·R = P·Q, for C = mean of z·zᵀ over the n sampled rows, z = R·x, formed the
    cheapest way. Q is never R itself, so the step can accumulate P·Q into R in place.

    MACs of each equivalent form: low-rank Zᵀ(Z·R/n) with ‖C‖ = ‖ZZᵀ‖/n: 3·n·d² + n²·d; dense in z,
    C = ZᵀZ/n: 2·n·d² + d³; dense in x, C = R·(XᵀX/n)·Rᵀ: n·d² + 3·d³. Few samples pick the first, many
    (the early conv layers, n ≫ d) the last, which halves their cost against forming z. The low-rank form keeps
    every d×d pass out of it but the step's own one: 1/n scales the n×d factor, and P·Q is never formed.
    """
    n, d = x.shape
    costs = {"low_rank": 3 * n * d * d + n * n * d, "dense_z": 2 * n * d * d + d**3, "dense_x": n * d * d + 3 * d**3}
    form = min(costs, key=costs.get)
    if form == "low_rank":
        z = x @ R.T
        return z.T, (z @ R).div_(n), (z * z).mean(0), ((z @ z.T) / n).square().sum()
    if form == "dense_z":
        z = x @ R.T
        return _of_c(z.T @ z / n, R)
    return _of_c(R @ (x.T @ x / n) @ R.T, R)


def _of_c(c: torch.Tensor, R: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    # a copy of R costs d² against C·R's d³
    return c, R.clone(), c.diagonal(), c.square().sum()


# torch 2.13 renamed all_gather_into_tensor (the old name warns there); torch 2.11 and 2.12 have only the old one.
_all_gather_rows = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def _pooled_moments(x: torch.Tensor, R: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`_moments` over the rows every rank sampled (each rank the same number), identical on every rank."""
    w, (n, d) = dist.get_world_size(), x.shape
    if w * n < 2 * d:  # the rows are the smaller message (ring all-gather vs ring all-reduce traffic)
        rows = x.new_empty(w * n, d)
        _all_gather_rows(rows, x.contiguous())
        return _moments(rows.to(R.dtype), R)
    x = x.to(R.dtype)
    second = x.T @ x / (w * n)
    dist.all_reduce(second)
    return _of_c(R @ second @ R.T, R)


@torch.no_grad()
def _step(layer: DecorMixin, lr: float, distributed: bool) -> torch.Tensor:
    """Update layer.R in place; return its decorrelation loss ((1−κ)·Σ offdiag(C)² + κ·Σ (diag(C)−1)²) / d².

    G·R = a·C·R + diag((b−a)·diag(C) − b)·R, so R ← diag(scale)·R − η·a·C·R.
    """
    R = layer.R
    p, q, var, c_sq = _pooled_moments(layer.sample, R) if distributed else _moments(layer.sample.to(R.dtype), R)
    a, b = _coefficients(layer)
    R.mul_((1.0 - lr * ((b - a) * var - b))[:, None])
    torch.addmm(R, p, q, alpha=-lr * a, out=R)  # in place; FlopCounterMode counts addmm, not addmm_
    d = R.shape[0]
    offdiag_sq = c_sq - var.square().sum()
    return ((1.0 - layer.kappa) * offdiag_sq + layer.kappa * (var - 1.0).square().sum()) / d**2


def update(model: nn.Module, lr: float, *, as_tensor: bool = False, by_layer: bool = False,
           distributed: bool = False) -> float | torch.Tensor | dict:
    """One decorrelation step for every layer that sampled inputs in the latest training forward.

    Returns the mean decorrelation loss (measured before the step); `by_layer=True` returns each layer's instead,
    as {qualified name: loss} in module order, which shows where decorrelation fails (the mean hides one layer
    going astray among twenty). `as_tensor=True` returns device tensors and skips the finiteness check, so a GPU
    training loop is not forced to synchronise (a NaN then surfaces in the task loss). Otherwise raises
    FloatingPointError naming the layers whose R or inputs became NaN/Inf. `distributed=True` (every rank of the
    default torch.distributed process group calls it, as under DistributedDataParallel): C pools all ranks'
    samples, so R, and each loss, are the same on every rank.
    """
    layers = {name: m for name, m in decor_layers(model).items() if m.sample is not None}
    if not layers:
        raise RuntimeError("no decorrelation layer holds samples: run a training-mode forward pass before update()")
    losses = torch.stack([_step(m, lr, distributed) for m in layers.values()])
    for m in layers.values():
        m.sample = None
    if not as_tensor:
        # A sum is finite only if every term is: one cheap reduction per layer, one host sync in all.
        r_sums = torch.stack([m.R.sum() for m in layers.values()])
        finite = (torch.isfinite(losses) & torch.isfinite(r_sums)).tolist()
        bad = [name or type(m).__name__ for (name, m), ok in zip(layers.items(), finite) if not ok]
        if bad:
            raise FloatingPointError(f"decorrelation diverged (NaN/Inf in R or its inputs) in layer(s): {', '.join(bad)}")
    if by_layer:
        return dict(zip(layers, losses.unbind() if as_tensor else losses.tolist()))
    mean = losses.mean()
    return mean if as_tensor else mean.item()


@torch.no_grad()
def diagnostics(model: nn.Module) -> dict[str, dict[str, float]]:
    """Per layer, from its current sample: mean |off-diagonal correlation| of z, mean variance of z, and d.

    Call between a training forward and update(); layers without a sample are left out.
    """
    out = {}
    for name, m in decor_layers(model).items():
        if m.sample is None:
            continue
        z = m.sample.to(m.R.dtype) @ m.R.T
        c = z.T @ z / z.shape[0]
        std = c.diagonal().clamp_min(1e-12).sqrt()
        corr = c / std[:, None] / std[None, :]
        d = corr.shape[0]
        off = (corr.abs().sum() - corr.diagonal().abs().sum()) / max(d * (d - 1), 1)
        out[name] = {"mean_abs_offdiag_corr": off.item(), "mean_variance": c.diagonal().mean().item(), "d": d}
    return out
