"""ONE training step as a function of a batch — the unit every time, energy and FLOP figure is about.

Why one definition: `train_run`, the asv benchmarks and the measurement scripts under reports/ must all time the
same step, or their numbers would not describe each other. The GPU fast path lives here, applied to BP and DBP
alike: bf16 autocast (R stays fp32), TF32, channels_last activations, and torch.compile of forward + backward.
Nothing in the step waits for the GPU: losses come back as device tensors, read by the caller when it chooses to
synchronise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from decorbench.dbp import set_sampling, update

Step = Callable[..., tuple[Tensor, dict[str, Tensor] | None]]


def prepare_model(model: nn.Module, *, channels_last: bool) -> nn.Module:
    """The model in the memory format the step feeds it (convolution weights NHWC for channels_last)."""
    return model.to(memory_format=torch.channels_last) if channels_last else model


@contextlib.contextmanager
def tf32_math(on: bool) -> Iterator[None]:
    """Inside, float32 matmuls and cuDNN convolutions may run on TF32 tensor cores (inputs rounded to 10 mantissa bits,
    sums kept in fp32; NVIDIA GPUs since Ampere, and oneDNN's like for matmuls on CPUs that have one), or all run at
    full precision. PyTorch's default mixes the two, TF32 convolutions beside full-precision matmuls: that would give
    BP's convolutions tensor cores and DBP's extra work, matmuls (A = W·R, the R update), none."""
    matmuls, convolutions = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("high" if on else "highest")
    torch.backends.cudnn.allow_tf32 = on
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(matmuls)
        torch.backends.cudnn.allow_tf32 = convolutions


def make_step(model: nn.Module, opt: torch.optim.Optimizer, *, amp: bool = False, channels_last: bool = False,
              tf32: bool = False, compile: bool = False, dbp_lr: float | None = None,
              dbp_lr_follows_schedule: bool = False, distributed: bool = False,
              decorrelated: nn.Module | None = None) -> Step:
    """`step(x, y, decorrelate=True) -> (loss, decor_losses)`: forward, backward, optimizer step and, when `dbp_lr`
    is given and `decorrelate` is true, the decorrelation update of `decorrelated` (default: `model`; pass the bare
    network when `model` is its DDP wrapper). With `decorrelate=False` the layers sample nothing and R stays as it is
    (DBP's update_every). decor_losses: each layer's decorrelation loss ({name: loss}, module order), None without an
    update. Every loss is a detached device tensor.
    dbp_lr_follows_schedule: the update's lr is dbp_lr times the factor by which a scheduler has moved the
    optimizer's lr from its initial one, so R settles as the weights do instead of moving on alone at the end.

    tf32: float32 matmuls and convolutions may use TF32 (`tf32_math`): under amp the R update's, without it every
    layer's too; the update still accumulates into R in fp32. Otherwise all run at full precision.
    compile: forward + loss + backward go through torch.compile (the DBP layers' sampling included); the optimizer
    step and the decorrelation update stay eager, so BP and DBP get the same treatment of the shared part.
    """
    net = model if decorrelated is None else decorrelated

    def loss_of(x: Tensor, y: Tensor) -> Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            return F.cross_entropy(model(x).float(), y)

    if compile:
        loss_of = torch.compile(loss_of)
    sampling = None  # the layers' sampling switch as last set: walked over only when it changes

    def dbp_lr_now() -> float:
        group = opt.param_groups[0]
        return dbp_lr * group["lr"] / group.get("initial_lr", group["lr"]) if dbp_lr_follows_schedule else dbp_lr

    def step(x: Tensor, y: Tensor, decorrelate: bool = True) -> tuple[Tensor, dict[str, Tensor] | None]:
        nonlocal sampling
        dbp = dbp_lr is not None and decorrelate
        if dbp_lr is not None and sampling is not dbp:
            set_sampling(net, dbp)
            sampling = dbp
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with tf32_math(tf32):
            loss = loss_of(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            decor = update(net, dbp_lr_now(), as_tensor=True, by_layer=True, distributed=distributed) if dbp else None
        return loss.detach(), decor

    return step
