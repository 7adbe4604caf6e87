"""BatchNorm statistics recomputed for the current weights, for an evaluation ("precise BN").

Why: in eval mode BatchNorm normalises with running averages of past training batches (momentum 0.1: mostly the
last ~10 steps, each taken under older weights, and for DBP under an older R). While the weights move fast, early
in training or at a high learning rate, those averages describe a network that no longer exists, and the eval
accuracy can sit far below what the weights can do (on digits at 32×32, a ResNet-10 at 38 % with its running
averages and 96 % with recomputed ones, `reports/cpu/bn_eval_lag.md`). A time-to-accuracy measured
through them times the averages catching up as much as the learning, and more so for the method whose weights move
faster. Recomputing is cheap (forwards of a few batches) and changes what an evaluation measures, never the
training: the running averages are put back afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
from torch import nn

from decorbench import distributed
from decorbench.dbp import decor_layers


def tracked_norms(net: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers that normalise with running averages in eval mode (the ones an eval's lag concerns)."""
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@contextlib.contextmanager
def recomputed_statistics(net: nn.Module, batches: Iterable[torch.Tensor], *, amp: bool = False,
                          channels_last: bool = False) -> Iterator[nn.Module]:
    """Inside, every BatchNorm of `net` (the bare network, not a DDP wrapper) holds the mean of the batch
    statistics of `batches` (inputs, forwarded in training mode without gradients; DBP layers sample nothing and R
    is not touched), averaged over the ranks under torchrun; on exit its running averages as they were. A network
    without BatchNorm is left as it is."""
    norms = tracked_norms(net)
    if not norms:
        yield net
        return
    kept = [(m.momentum, {k: v.clone() for k, v in m.named_buffers(recurse=False)}) for m in norms]
    sampling = {m: m.sampling for m in decor_layers(net).values()}
    was_training = net.training
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average: each batch counts alike
        for m in sampling:
            m.sampling = False
        net.train()
        with torch.no_grad():
            for x in batches:
                if channels_last and x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
                    net(x)
        distributed.average_running_stats(net)
        yield net
    finally:
        with torch.no_grad():
            for m, (momentum, buffers) in zip(norms, kept):
                m.momentum = momentum
                for name, value in buffers.items():
                    getattr(m, name).copy_(value)
        for m, on in sampling.items():
            m.sampling = on
        net.train(was_training)
