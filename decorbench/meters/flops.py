"""FLOPs of a forward pass or a training step, counted by torch.utils.flop_counter on a shape-only copy."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from decorbench.dbp import decor_layers, set_sampling, update


def count_flops(model: nn.Module, inputs: torch.Tensor, *, backward: bool = True, update_r: bool = True) -> int:
    """FLOPs of one forward, or with backward=True of one training step: forward + backward and, for a DBP
    model, the A = W·R formation (inside its forward/backward) and, unless update_r=False, the decorrelation update.

    Counted on a copy on PyTorch's meta device, so nothing is computed, no memory is used and the model is not
    touched. The loss and the optimizer's element-wise work are not matmuls and count as zero.
    """
    shadow = _meta_copy(model).train(backward)
    set_sampling(shadow, update_r)
    x = inputs.to("meta")
    with FlopCounterMode(display=False) as counter:
        out = shadow(x)
        if backward:
            out.float().sum().backward()
            if update_r and decor_layers(shadow):
                update(shadow, 0.0, as_tensor=True)  # the shadow sampled: it is a copy in training mode
    return counter.get_total_flops()


def _meta_copy(model: nn.Module) -> nn.Module:
    """`model` with every tensor on the meta device, made without first copying its tensors where they are: a plain
    deepcopy would hold a second full model (weights, buffers, DBP's kept input samples) in GPU memory meanwhile."""
    memo: dict[int, Tensor] = {}
    for module in model.modules():
        for tensor in vars(module).values():  # plain tensor attributes, such as a decor layer's input sample
            if isinstance(tensor, Tensor):
                memo[id(tensor)] = tensor.detach().to("meta")
        for tensor in module.buffers(recurse=False):
            memo[id(tensor)] = tensor.detach().to("meta")
        for param in module.parameters(recurse=False):
            memo[id(param)] = nn.Parameter(param.detach().to("meta"), param.requires_grad)
    return copy.deepcopy(model, memo)
