"""Many processes, one run: the process group torchrun's environment describes, and the few collectives the
harness needs to keep its ranks in step.

torchrun (`torch.distributed.run`) starts the processes, rendezvous them and sets RANK, LOCAL_RANK, WORLD_SIZE,
LOCAL_WORLD_SIZE and GROUP_RANK; this module only reads that environment, joins the group (NCCL on CUDA, gloo on
CPU) and wraps the model in DistributedDataParallel. Without torchrun every helper here is the identity, so a plain
`decorbench run` is one process exactly as before.

Every collective below is called by every rank at the same point of the same run, which is why decisions that end a
run (signals, budgets, divergence) are taken on values reduced across ranks, never on one rank's own.
"""

from __future__ import annotations

import inspect
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

STOP_POLL_STEPS = 10  # under DDP, ranks agree on a stop signal every this many steps (and at every eval point)
# The group for the harness's own host values (stop flags, totals): gloo, on the CPU. An NCCL collective runs on the
# GPU's queue, so reading its result back waits for every step queued before it: a stop poll would synchronise
# host and GPU inside the timed window. None: the default group is gloo already (or there is none).
_host_group: dist.ProcessGroup | None = None


def launched() -> bool:
    """Whether torchrun started this process."""
    return dist.is_torchelastic_launched()


def active() -> bool:
    """Whether this process is one of several in an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank in the group; before the group exists torchrun's RANK (so errors print once), else 0."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ["RANK"]) if launched() else 0


def world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ["WORLD_SIZE"]) if launched() else 1


def local_rank() -> int:
    return int(os.environ["LOCAL_RANK"]) if launched() else 0


def node() -> int:
    """The machine's index among the job's machines (torchrun's GROUP_RANK)."""
    return int(os.environ["GROUP_RANK"]) if launched() else 0


def is_main() -> bool:
    """Rank 0 alone writes files and prints."""
    return rank() == 0


def init(device: torch.device) -> torch.device:
    """Under torchrun, join the process group and return this rank's device: cuda:LOCAL_RANK with NCCL, or the CPU
    with gloo. Without torchrun, `device` unchanged."""
    global _host_group
    if not launched() or dist.is_initialized():
        return device
    if device.type == "cuda":
        if device.index is not None:
            raise ValueError(f"--device {device}: under torchrun each process uses cuda:LOCAL_RANK; pass --device cuda")
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
        _host_group = dist.new_group(backend="gloo")
    else:
        dist.init_process_group("gloo")
    return device


def shutdown() -> None:
    global _host_group
    if dist.is_initialized():
        dist.destroy_process_group()
    _host_group = None


# torch 2.13 renamed the keyword (the old one warns there); torch 2.11 and 2.12 know only the old one.
_NO_BUFFER_SYNC = ({"forward_sync_buffers": False}
                   if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
                   else {"broadcast_buffers": False})


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` in DistributedDataParallel under DDP, else itself.

    forward_sync_buffers=False (broadcast_buffers=False before torch 2.13): DDP would otherwise copy every buffer from rank 0
    at each forward — each DBP layer's d×d R included, which would hide a rank whose R went astray and cost d² per
    layer per step. Buffers are still copied from rank 0 once, at wrapping. R is kept equal by the pooled update
    (dbp.update(distributed=True)), BatchNorm statistics by `average_running_stats`.
    """
    if not active():
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   **_NO_BUFFER_SYNC)


def _reduce(values: list[float], op: dist.ReduceOp) -> list[float]:
    if not active():
        return list(values)
    nccl_only = _host_group is None and dist.get_backend() == "nccl"  # a group joined other than by init()
    t = torch.tensor(values, dtype=torch.float64, device=torch.cuda.current_device() if nccl_only else "cpu")
    dist.all_reduce(t, op=op, group=_host_group)
    return t.tolist()


def sum_over_ranks(values: list[float]) -> list[float]:
    return _reduce(values, dist.ReduceOp.SUM)


def max_over_ranks(values: list[float]) -> list[float]:
    return _reduce(values, dist.ReduceOp.MAX)


def any_rank(flag: bool) -> bool:
    return max_over_ranks([float(flag)])[0] > 0


def sum_measured(value: float | None, metered: bool) -> float | None:
    """A meter reading summed over ranks: ranks without a meter add nothing; None when no rank has a meter or any
    rank's meter could not measure (a total missing a part would be wrong)."""
    if not active():
        return value
    total, meters, failed = sum_over_ranks([value or 0.0, float(metered), float(metered and value is None)])
    return None if failed or not meters else total


def broadcast(obj):
    """Rank 0's `obj` on every rank (pickled: for plans and checkpoints, not for per-step tensors)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj) -> list:
    """Every rank's `obj`, in rank order, on every rank."""
    if not active():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def running_stats(model: nn.Module) -> dict[str, torch.Tensor]:
    """BatchNorm's running means and variances by buffer name: what each rank keeps for itself between evals."""
    return {name: buffer for name, buffer in model.named_buffers() if name.endswith(("running_mean", "running_var"))}


@torch.no_grad()
def average_running_stats(model: nn.Module) -> None:
    """Average BatchNorm's running mean and variance over ranks, in place (as timm's distribute_bn does).

    Each rank normalises its own share of the batch, so its running statistics drift apart from the others'. Called
    before every evaluation: all ranks then evaluate, checkpoint and go on with the same statistics.
    """
    if not active():
        return
    for buffer in running_stats(model).values():
        dist.all_reduce(buffer)
        buffer /= dist.get_world_size()


def launch_prefix() -> list[str]:
    """How to start this job again: the torchrun options that set its shape, or nothing without torchrun."""
    if not launched():
        return []
    per_node = int(os.environ["LOCAL_WORLD_SIZE"])
    nodes = world_size() // per_node
    return ["torchrun", *([f"--nnodes={nodes}"] if nodes > 1 else []), f"--nproc_per_node={per_node}", "-m"]
