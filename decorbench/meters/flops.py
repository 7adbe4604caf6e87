"""FLOPs of a forward pass or a training step, counted by torch.utils.flop_counter on a shape-only copy."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from decorbench.dbp import decor_layers, set_sampling, update


def count_flops(model: nn.Module, inputs: torch.Tensor, *, backward: bool = True, update_r: bool = True) -> int:
    """FLOPs of one forward, or with backward=True of one training step: forward + backward and, for a DBP
    model, the A = W·R formation (inside its forward/backward) and, unless update_r=False, the decorrelation update.

    Counted on a copy on PyTorch's meta device, so nothing is computed, no memory is used and the model is not
    touched. The loss and the optimizer's element-wise work are not matmuls and count as zero.
    """
    shadow = copy.deepcopy(model).to("meta").train(backward)
    set_sampling(shadow, update_r)
    x = inputs.to("meta")
    with FlopCounterMode(display=False) as counter:
        out = shadow(x)
        if backward:
            out.float().sum().backward()
            if update_r and decor_layers(shadow):
                update(shadow, 0.0, as_tensor=True)  # the shadow sampled: it is a copy in training mode
    return counter.get_total_flops()
