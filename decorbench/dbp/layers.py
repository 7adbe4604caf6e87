"""Decorrelation layers: drop-in subclasses of nn.Linear / nn.Conv2d with a decorrelating matrix R.

The layer computes y = W·(R·x) + b. R is a buffer (never touched by the task loss' optimizer);
`decorbench.dbp.update` moves it from the inputs each layer samples during training-mode forwards.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DecorMixin:
    """What both layer types share: the R buffer, the method's settings and the sampled inputs."""

    R: torch.Tensor
    kappa: float
    sample_fraction: float
    rule: str
    sampling: bool
    sample: torch.Tensor | None
    fused: torch.Tensor | None

    def _init_decor(self, d: int, kappa: float, sample_fraction: float, rule: str, device=None) -> None:
        if not 0.0 <= kappa <= 1.0:
            raise ValueError(f"kappa must be in [0, 1], got {kappa}")
        if not 0.0 < sample_fraction <= 1.0:
            raise ValueError(f"sample_fraction must be in (0, 1], got {sample_fraction}")
        if rule not in ("standard", "normalized"):
            raise ValueError(f"rule must be 'standard' or 'normalized', got {rule!r}")
        # R stays fp32 whatever autocast does to activations: its update accumulates tiny steps.
        self.register_buffer("R", torch.eye(d, device=device, dtype=torch.float32))
        self.kappa = kappa
        self.sample_fraction = sample_fraction
        self.rule = rule
        self.sampling = True  # False: training forwards keep no sample (steps that skip the update)
        self.sample = None  # (n_s, d) inputs x kept from the latest training forward, detached
        self.fused = None  # A = W·R formed once for many eval-mode forwards (update.fused_for_eval), else None

    @property
    def decor_dim(self) -> int:
        return self.R.shape[0]

    def _num_samples(self, n_rows: int) -> int:
        return max(1, round(self.sample_fraction * n_rows))

    def _unfused(self, rows: int) -> bool:
        """Whether to compute W·(R·x) rather than form A = W·R: A costs out·d² (and as much in backward), R·x costs
        rows·d² (and as much for grad_x), so fewer input rows than outputs favour R·x (a classifier head at small
        batch, a convolution on small feature maps). Eval forwards with an A formed once keep using it."""
        return rows < self.weight.shape[0] and (self.fused is None or self.training)

    def _fused_weight(self) -> torch.Tensor:
        """A = W·R with W flattened to (out, d). Autograd gives grad_W = grad_A·Rᵀ, costing out·d²."""
        if self.fused is not None and not self.training:
            return self.fused
        w = self.weight
        return (w.reshape(w.shape[0], -1) @ self.R.to(w.dtype)).reshape(w.shape)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, kappa={self.kappa}, sample_fraction={self.sample_fraction}, rule={self.rule}"


class DecorLinear(DecorMixin, nn.Linear):
    """nn.Linear whose input is decorrelated by R (d = in_features)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None, *,
                 kappa: float = 0.01, sample_fraction: float = 0.1, rule: str = "standard") -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self._init_decor(in_features, kappa, sample_fraction, rule, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.sampling:
            self.sample = self._sample_inputs(x.detach())
        rows = x.reshape(-1, self.in_features)
        if self._unfused(rows.shape[0]):
            return F.linear(F.linear(x, self.R.to(x.dtype)), self.weight, self.bias)
        return F.linear(x, self._fused_weight(), self.bias)

    def _sample_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Every input row of a random sample_fraction of the batch's items (along dim 0, without replacement):
        for (batch, tokens, d) input, all tokens of the sampled images, as convolutions take all their patches."""
        if x.dim() == 1:
            x = x.unsqueeze(0)
        items = x[torch.randperm(x.shape[0], device=x.device)[: self._num_samples(x.shape[0])]]
        return items.reshape(-1, self.in_features)


class DecorConv2d(DecorMixin, nn.Conv2d):
    """nn.Conv2d (groups=1) whose unfolded input patches are decorrelated by R (d = C_in·k_h·k_w)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", device=None, dtype=None, *,
                 kappa: float = 0.01, sample_fraction: float = 0.1, rule: str = "standard") -> None:
        if groups != 1:
            raise ValueError("DecorConv2d supports groups=1 only (a grouped conv mixes no channels across groups)")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device, dtype)
        d = in_channels * self.kernel_size[0] * self.kernel_size[1]
        self._init_decor(d, kappa, sample_fraction, rule, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.sampling:
            self.sample = self._sample_inputs(x.detach())
        images = x if x.dim() == 4 else x.unsqueeze(0)
        out_h, out_w = self._output_size(images)
        if self._unfused(images.shape[0] * out_h * out_w):  # rows: one per patch (e.g. a ResNet's 1×1 last stage)
            rows = F.linear(F.linear(self._patch_rows(images), self.R.to(x.dtype)), self.weight.flatten(1), self.bias)
            y = rows.reshape(images.shape[0], out_h, out_w, self.out_channels).permute(0, 3, 1, 2)
            return y if x.dim() == 4 else y.squeeze(0)
        return self._conv_forward(x, self._fused_weight(), self.bias)

    def _output_size(self, images: torch.Tensor) -> tuple[int, int]:
        pad = self._reversed_padding_repeated_twice  # (left, right, top, bottom)
        sizes = (images.shape[2] + pad[2] + pad[3], images.shape[3] + pad[0] + pad[1])
        return tuple((size - dil * (k - 1) - 1) // s + 1
                     for size, k, s, dil in zip(sizes, self.kernel_size, self.stride, self.dilation))

    def _patch_rows(self, images: torch.Tensor) -> torch.Tensor:
        """Every patch of (N, C, H, W) images, padded as the conv pads, as (N·L, d) rows in (image, position) order.

        Unfolding whole images is a fast im2col; gathering scattered single patches measured 7× slower on
        CPU for the same number of rows. Columns come in (C_in, k_h, k_w) order, that of W.reshape(out, d).
        """
        mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
        images = F.pad(images, self._reversed_padding_repeated_twice, mode=mode)
        cols = F.unfold(images, self.kernel_size, dilation=self.dilation, stride=self.stride)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])

    def _sample_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Every patch of a random sample_fraction of the batch's images, as rows (as the paper samples)."""
        if x.dim() == 3:
            x = x.unsqueeze(0)
        return self._patch_rows(x[torch.randperm(x.shape[0], device=x.device)[: self._num_samples(x.shape[0])]])
