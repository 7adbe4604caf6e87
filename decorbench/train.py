"""ONE run: build the model (decorrelated for DBP), train it under a budget, evaluate at fixed points, and hand
each eval record to the writer. Knows nothing about suites, files or HTML.

Under torchrun the same loop runs on every rank, on its share of each global batch, with the model in
DistributedDataParallel; every number that ends a run or goes into a record is first reduced over the ranks
(`decorbench.distributed`), so all ranks stop at the same step and rank 0's records describe the whole job."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from decorbench import distributed
from decorbench.batchnorm import recomputed_statistics, tracked_norms
from decorbench.budget import Budget
from decorbench.checkpoint import save_checkpoint
from decorbench.data import Data, load_data
from decorbench.dbp import decorrelate, fused_for_eval
from decorbench.meters import (CarbonMeter, CpuContentionMeter, EnergyMeter, Stopwatch, count_flops, peak_memory_bytes,
                               reset_peak_memory)
from decorbench.models import create_model
from decorbench.settings import NOT_THE_EXPERIMENT, DBPConfig, TrainConfig, swept_value
from decorbench.step import make_step, prepare_model, tf32_math

METHODS = ("bp", "dbp", "bp-converted")
# bp-converted: BP as the DBP authors' code timed it, the DBP model with R never updated (it stays the identity, so it
# learns as BP does) whose forwards still form A = W·R and sample their inputs: the baseline of their public code.
CONVERTED = ("dbp", "bp-converted")  # the methods whose model goes through decorrelate()


@dataclass(frozen=True)
class RunSpec:
    suite: str
    method: str
    model: str
    dataset: str
    seed: int
    train: TrainConfig = TrainConfig()
    dbp: DBPConfig = DBPConfig()
    budget: Budget = Budget(max_epochs=1)
    data_root: str | None = None
    data_options: dict = field(default_factory=dict)
    swept: tuple[str, ...] = ()  # the settings ("train.lr") a suite's [sweep] varies: each is part of the run_id

    @property
    def run_id(self) -> str:
        setting = ""
        for key in self.swept:
            value = swept_value(self, key)
            setting += f"-{key}={value if isinstance(value, str) else json.dumps(value)}"
        return f"{self.suite}-{self.dataset}-{self.model}-{self.method}{setting}-s{self.seed}"


_RECORDED_AS = {"train": "hyperparameters.train", "data_options": "hyperparameters.data.options"}


def continues(saved_spec: dict, spec: RunSpec) -> bool:
    """Whether a checkpoint written for `saved_spec` (a RunSpec as a dict) can go on as `spec`: the same experiment,
    whatever the settings of how it is carried out (settings.NOT_THE_EXPERIMENT, which --resume may change)."""
    def experiment(fields: dict) -> dict:
        return {name: {k: v for k, v in value.items() if f"{_RECORDED_AS[name]}.{k}" not in NOT_THE_EXPERIMENT}
                if name in _RECORDED_AS else value for name, value in fields.items()}
    return experiment(saved_spec) == experiment(dataclasses.asdict(spec))


class EvalSink(Protocol):
    def eval(self, record: dict) -> None: ...


def resolve_device(name: str) -> torch.device:
    """auto, cpu, cuda or cuda:N as a torch device; ValueError (one line) for any other or a GPU that is not here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda") or (device.type == "cpu" and device.index):
        raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA GPU here")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r} asked for, but torch sees {torch.cuda.device_count()} CUDA GPU(s) here")
    return device


def _optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def planned_steps(budget: Budget, steps_per_epoch: int) -> int | None:
    """The run's length in steps when the budget fixes one (max_steps / max_epochs), else None."""
    limits = [n for n in (budget.max_steps, budget.max_epochs and budget.max_epochs * steps_per_epoch) if n]
    return min(limits) if limits else None


def _schedule(opt, cfg: TrainConfig, length: int | None, steps_per_epoch: int):
    """A per-step LR scheduler, or None for a constant LR."""
    if cfg.schedule == "constant":
        return None
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_epochs * steps_per_epoch, gamma=cfg.gamma)
    if length is None:
        raise ValueError("schedule 'cosine' needs budget.max_epochs or budget.max_steps to know its length")
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=length)


@torch.no_grad()
def evaluate(model: nn.Module, data: Data, train: TrainConfig, device: torch.device) -> tuple[float, float]:
    """(mean cross-entropy, top-1 accuracy) over the whole eval set (the test set, or the validation set of
    data.options.validation): each rank its shard, summed over the ranks. Precision and memory format as in
    training (`train.amp`, `train.tf32`, `train.channels_last`); a DBP model's A = W·R formed once, not per batch. With
    `train.precise_bn`, BatchNorm normalises with statistics recomputed over the first that many training batches
    (of epoch 0: the same images at every eval), its running averages put back afterwards."""
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    statistics = contextlib.nullcontext()
    if train.precise_bn:
        batches = (x for x, _ in data.calibration_batches(train.precise_bn))
        statistics = recomputed_statistics(model, batches, amp=train.amp, channels_last=train.channels_last)
    with tf32_math(train.tf32), statistics, fused_for_eval(model):
        model.eval()
        for x, y in data.test_batches():
            if train.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=train.amp):
                logits = model(x)
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
        model.train()
    loss, hits = distributed.sum_over_ranks([loss_sum.item(), correct.item()])
    return loss / data.test_size, hits / data.test_size


def build_network(spec: RunSpec, data: Data) -> nn.Module:
    """The run's network, randomly initialised on the CPU: the model for `data`, decorrelated for DBP and
    BP-CONVERTED, so a checkpoint's state_dict loads into it."""
    net = create_model(spec.model, data.num_classes, input_shape=data.input_shape, batchnorm=spec.train.batchnorm)
    if spec.method in CONVERTED:
        d = spec.dbp
        decorrelate(net, kappa=d.kappa, sample_fraction=d.sample_fraction, rule=d.rule, skip=d.skip, only=d.only)
    return net


def _rng(device: torch.device) -> dict:
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def _set_rng(rng: dict, device: torch.device) -> None:
    """The random state `_rng` took (its CUDA part only on a GPU, and only if it has one: a run started on a CPU)."""
    torch.set_rng_state(rng["cpu"])
    if device.type == "cuda" and rng["cuda"] is not None:
        torch.cuda.set_rng_state(rng["cuda"], device)


def _state(model: nn.Module, opt, scheduler, device: torch.device) -> dict:
    """Everything a continued run needs to go on exactly as if never stopped (R is in the model's state_dict).

    Collective: the model and optimizer are the same on every rank; the random state (DBP's sampling) is not, nor,
    between eval points, are BatchNorm's running statistics (averaged over ranks only at evals): each rank's is kept,
    in rank order.
    """
    return {"model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler else None, "rng": distributed.gather(_rng(device)),
            "running_stats": distributed.gather({k: v.cpu() for k, v in distributed.running_stats(model).items()}),
            "world_size": distributed.world_size()}


def _restore(saved: dict, model: nn.Module, opt, scheduler, device: torch.device) -> None:
    if saved["world_size"] != distributed.world_size():
        raise ValueError(f"the checkpoint was written by {saved['world_size']} process(es), this job has "
                         f"{distributed.world_size()}: resume with as many, so each continues its random state")
    model.load_state_dict(saved["model"])
    with torch.no_grad():
        buffers = distributed.running_stats(model)
        for name, value in saved["running_stats"][distributed.rank()].items():
            buffers[name].copy_(value)
    opt.load_state_dict(saved["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(saved["scheduler"])
    _set_rng(saved["rng"][distributed.rank()], device)


def _warm_up(net: nn.Module, spec: RunSpec, device: torch.device, data: Data, steps: int = 2) -> None:
    """Untimed steps on random data of the run's shapes, then the model and random state as they were. A process's
    first steps load the device's libraries and kernels (on a GPU up to seconds): without this only the first run of
    a suite (BP's) would pay for that in its train_time_s and energy. Eager and without collectives; a compiled
    step still compiles inside the run's time, as it is the run's own cost."""
    state = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}
    rng, t = _rng(device), spec.train
    step = make_step(net, _optimizer(net.parameters(), t), amp=t.amp, channels_last=t.channels_last, tf32=t.tf32,
                     dbp_lr=spec.dbp.lr if spec.method == "dbp" else None)
    x = torch.randn(data.local_batch_size, *data.input_shape, device=device)
    y = torch.randint(data.num_classes, (data.local_batch_size,), device=device)
    for _ in range(steps):
        step(x, y)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    net.load_state_dict(state)
    net.zero_grad(set_to_none=True)
    _set_rng(rng, device)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


class _LayerLosses:
    """Each decorrelation layer's loss summed over an eval window's updates, kept on the device (read only at eval
    points). Every rank holds the same sums under DDP: the update pools the ranks' samples."""

    def __init__(self, saved: dict | None = None, device: torch.device | None = None):
        self.names, self.sums, self.count = None, None, 0
        if saved:  # a checkpoint's open window; an older decorbench's has none: the means cover the later updates
            self.names, self.count = saved["names"], saved["count"]
            self.sums = torch.tensor(saved["sums"], device=device)

    def add(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """Add one update's losses; return them stacked."""
        stacked = torch.stack(list(losses.values()))
        if self.sums is None:
            self.names, self.sums = list(losses), stacked.clone()
        else:
            self.sums += stacked
        self.count += 1
        return stacked

    def means(self) -> dict[str, float | None] | None:
        if not self.count:
            return None
        return {name: _finite_or_none(total / self.count) for name, total in zip(self.names, self.sums.tolist())}

    def state(self) -> dict | None:
        return {"names": self.names, "sums": self.sums.tolist(), "count": self.count} if self.count else None


def _energy_warnings(energy: EnergyMeter | None) -> list[str]:
    """Every rank's meter warnings (a shared or MIG-split board on any rank makes the summed energy suspect),
    each prefixed with its rank when there are several."""
    per_rank = distributed.gather(list(energy.warnings) if energy is not None else [])
    if len(per_rank) == 1:
        return per_rank[0]
    return [f"rank {rank}: {warning}" for rank, warnings in enumerate(per_rank) for warning in warnings]


def _peak_memory(device: torch.device) -> int | None:
    """The largest rank's peak, or None when any rank's is unknown."""
    peak = peak_memory_bytes(device)
    largest, unknown = distributed.max_over_ranks([float(peak or 0), float(peak is None)])
    return None if unknown else int(largest)


def _end(budget: Budget, record: dict, totals: dict, steps_per_epoch: int, had_updates: bool
         ) -> tuple[str, str] | None:
    """(status, reason) if the run ends at this eval record, else None."""
    step = record["step"]
    if record["train_loss"] is None:
        return "diverged", f"non-finite training loss by step {step}"
    if had_updates and record["decor_loss"] is None:
        return "diverged", f"non-finite decorrelation loss by step {step}"
    end = budget.exhausted(step=step, epoch=step // steps_per_epoch, train_time_s=record["train_time_s"],
                           energy_j=record["energy_j"], accuracy=record["eval_accuracy"])
    if end is not None:
        return end
    if budget.energy_only and record["energy_j"] is None:  # the meter failed mid-run: nothing could end it any more
        return "failed", ("budget.max_energy_j can no longer end this run: its energy is unknown from "
                          f"step {step} on ({totals.get('energy_unavailable_reason')})")
    return None


def train_run(spec: RunSpec, sink: EvalSink, *, device: torch.device, checkpoint: Path | None = None,
              resume_from: dict | None = None, should_stop: Callable[[], bool] = lambda: False,
              on_step: Callable[[int, int | None, dict | None], None] = lambda *_: None,
              energy: EnergyMeter | None = None, carbon: CarbonMeter | None = None) -> tuple[str, str, dict]:
    """Train one run; returns the end record's (status, reason, totals).

    The step has no host synchronisation: losses accumulate on the device and are read at eval points, where
    time is synchronised, NaN/Inf losses end the run as "diverged", and every budget limit is checked.
    `on_step(step, planned_steps, record)` reports progress (record: the eval record at eval points, else None).
    With `checkpoint`, the state is saved there at every `train.checkpoint_every`-th eval point, at the run's end and
    at a stop, each eval record written first.
    With `resume_from` (such a saved state, as `load_checkpoint` reads it, of this spec) the run continues from it:
    same weights, R, optimizer, schedule, RNG, data position, clocks and loss sums, so its records are the ones an
    unstopped run writes; one saved at its end returns that end at once.
    A stop between eval points ends the run there without an eval record (the eval schedule stays the config's).
    `energy` / `carbon`: meters read at the edges of the stopwatch's training windows, so eval is excluded from
    energy_j and co2_kg as it is from train_time_s; without them both stay null.
    Under torchrun (the process group initialised by `distributed.init`) every rank calls this with the same spec
    and checkpoint path; rank 0 alone writes the checkpoint, and only its `resume_from` counts. train_time_s is the
    slowest rank's, energy_j and co2_kg are summed over the ranks that have a meter, and `flops` counts one step on
    the global batch as a single process computes it (the DBP update, which every rank repeats, counted once).
    """
    if spec.method not in METHODS:
        raise ValueError(f"unknown method {spec.method!r}; choose from {', '.join(METHODS)}")
    if spec.budget.energy_only and (energy is None or energy.source is None):
        why = energy.unavailable_reason if energy is not None else "no energy meter"
        raise ValueError(f"budget.max_energy_j cannot end this run on its own: {why}")
    torch.manual_seed(spec.seed)  # the same on every rank: the same initial weights
    data = load_data(spec.dataset, batch_size=spec.train.batch_size, seed=spec.seed, device=device,
                     root=spec.data_root, options=spec.data_options, rank=distributed.rank(),
                     world_size=distributed.world_size())
    net = build_network(spec, data)
    batchnorm_layers = len(tracked_norms(net))  # the report says when evals scored them by running averages
    dbp = spec.method == "dbp"
    prepare_model(net.to(device).train(), channels_last=spec.train.channels_last)
    _warm_up(net, spec, device, data)  # before DDP's hooks are on the parameters
    model = distributed.wrap(net, device)
    opt = _optimizer(net.parameters(), spec.train)
    t = spec.train
    train_step = make_step(model, opt, amp=t.amp, channels_last=t.channels_last, tf32=t.tf32, compile=t.compile,
                           dbp_lr=spec.dbp.lr if dbp else None, dbp_lr_follows_schedule=spec.dbp.schedule == "train",
                           distributed=distributed.active(), decorrelated=net)
    steps_per_epoch = data.steps_per_epoch()
    eval_every = spec.train.eval_every or steps_per_epoch
    length = planned_steps(spec.budget, steps_per_epoch)
    scheduler = _schedule(opt, spec.train, length, steps_per_epoch)
    batch = torch.zeros((spec.train.batch_size, *data.input_shape), device="meta")  # a shape: nothing is computed
    step_flops = count_flops(net, batch, update_r=False)  # forward + backward (with DBP: the A = W·R formation)
    # DBP's update of every R, paid every update_every steps
    update_flops = count_flops(net, batch) - step_flops if dbp else 0
    every = spec.dbp.update_every

    def flops_after(steps: int) -> int:
        return steps * step_flops + -(-steps // every) * update_flops  # updates at steps 0, every, 2·every, ...

    memory_unavailable_reason = reset_peak_memory(device)  # then peak_memory_bytes is null in every record
    stopwatch, wall_start = Stopwatch(device), time.perf_counter()
    step, train_loss, decor_loss, window = 0, torch.zeros((), device=device), torch.zeros((), device=device), 0
    updates = 0  # R updates in the current window
    layer_losses = _LayerLosses()
    saved = distributed.broadcast(resume_from if distributed.is_main() else None)
    resumed = saved is not None
    if resumed:
        if not continues(saved["spec"], spec):
            raise ValueError(f"resume_from is a checkpoint of another run than {spec.run_id}")
        _restore(saved, net, opt, scheduler, device)
        carried_totals = saved["totals"]
        step, stopwatch.total_s = saved["step"], carried_totals["train_time_s"]
        data.waited_s = carried_totals.get("data_wait_s", 0.0)  # absent in a checkpoint of an older decorbench
        wall_start -= saved["wall_time_s"]
        window, updates = saved["window"]["steps"], saved["window"]["updates"]
        train_loss[()], decor_loss[()] = saved["window"]["losses"][distributed.rank()]
        layer_losses = _LayerLosses(saved["window"].get("layer_losses"), device)
        if saved["end"] is not None:  # it had ended, and was stopped before it could say so
            return (*saved["end"], carried_totals)
    # A resumed run continues its totals (rank 0 carries them; the other ranks add what they measure from now on);
    # a checkpoint without them (unmeasured) leaves them unknown.
    carried = resumed and distributed.is_main()
    if energy is not None:
        energy.reset(carried_totals["energy_j"] if carried else 0.0)
    if carbon is not None:
        carbon.reset(carried_totals["co2_kg"] if carried else 0.0)
    here = distributed.node()  # the run's processes on this machine: their work is not contention
    contention = CpuContentionMeter([pid for node, pid in distributed.gather((here, os.getpid())) if node == here])

    def stop_agreed(at_eval: bool) -> bool:
        """Whether to stop now. Ranks must stop at the same step, so under DDP they agree at every eval point and
        every STOP_POLL_STEPS steps (a collective over gloo, on the host: it never waits for the GPU)."""
        if not distributed.active():
            return should_stop()
        return (at_eval or step % distributed.STOP_POLL_STEPS == 0) and distributed.any_rank(should_stop())

    def begin_training_window() -> None:
        if carbon is not None:
            carbon.begin_window()  # ≈ 0.5 ms, outside the timed window
        stopwatch.start()  # synchronises with the GPU
        if energy is not None:
            energy.begin_window()

    def end_training_window() -> tuple[dict, str | None]:
        """The run's totals so far and where its energy came from, read at the window's end (the power sampler
        goes on during eval, and a failure there must not change what this window measured)."""
        stopwatch.total_s, waited = distributed.max_over_ranks([stopwatch.stop(), data.waited_s])  # stop() syncs
        energy_j = distributed.sum_measured(energy.end_window() if energy else None, energy is not None)
        source = energy.source if energy_j is not None else None
        co2_kg = distributed.sum_measured(carbon.end_window() if carbon else None, carbon is not None)
        totals = {"steps": step, "train_time_s": stopwatch.total_s, "flops": flops_after(step),
                  "flops_per_step": flops_after(step) / step, "final_accuracy": None, "energy_j": energy_j,
                  "co2_kg": co2_kg, "chance_accuracy": data.chance_accuracy, "data_wait_s": waited,
                  "batchnorm_layers": batchnorm_layers}
        if energy is not None and energy.unavailable_reason:
            totals["energy_unavailable_reason"] = energy.unavailable_reason  # it may have failed mid-run
        elif energy is not None and energy_j is None:
            totals["energy_unavailable_reason"] = ("part of the run's energy is unknown: another rank's meter "
                                                   "could not measure, or an earlier part of a resumed run")
        warned = _energy_warnings(energy)
        if warned:
            totals["energy_warnings"] = warned
        if carbon is not None and carbon.unavailable_reason:
            totals["carbon_unavailable_reason"] = carbon.unavailable_reason
        if memory_unavailable_reason:
            totals["memory_unavailable_reason"] = memory_unavailable_reason
        totals["other_cpu_s"], totals["other_cpu_span_s"] = contention.other_cpu_s()
        busy = contention.warning(totals["other_cpu_s"], totals["other_cpu_span_s"])
        if busy:
            totals["timing_warnings"] = [busy]
        return totals, source

    def save(totals: dict, end: tuple[str, str] | None) -> None:
        """The checkpoint, with the open window's sums (a stop between eval points leaves one) and, when the run
        has ended, how: a run killed before its end record then ends on --resume as it did, without another step."""
        if checkpoint is None:
            return
        state = _state(net, opt, scheduler, device)
        losses = distributed.gather([train_loss.item(), decor_loss.item()])
        if distributed.is_main():
            save_checkpoint(checkpoint, {"spec": dataclasses.asdict(spec), "step": step,
                                         "wall_time_s": time.perf_counter() - wall_start, "totals": totals,
                                         "window": {"steps": window, "updates": updates, "losses": losses,
                                                    "layer_losses": layer_losses.state()},
                                         "end": end, **state})

    before = carried_totals if carried else {}  # an older decorbench's checkpoint has none: from now on
    contention.start(before.get("other_cpu_s", 0.0), before.get("other_cpu_span_s", 0.0))
    begin_training_window()
    while True:
        # Batch order is a function of (seed, epoch): starting at the next batch resumes mid-epoch exactly.
        epoch, first_batch = divmod(step, steps_per_epoch)
        for x, y in data.train_batches(epoch, start=first_batch):
            loss, decor = train_step(x, y, decorrelate=dbp and step % every == 0)
            if scheduler is not None:
                scheduler.step()
            if decor is not None:
                decor_loss += layer_losses.add(decor).mean()
                updates += 1
            train_loss += loss
            step, window = step + 1, window + 1
            planned_end = spec.budget.exhausted(step=step, epoch=step // steps_per_epoch, train_time_s=0.0,
                                                energy_j=None, accuracy=None)
            at_eval = step % eval_every == 0 or planned_end is not None
            stop = stop_agreed(at_eval)
            if not (at_eval or stop):
                on_step(step, length, None)
                continue
            totals, energy_source = end_training_window()
            if not at_eval:  # no eval off the schedule: BP and DBP keep sharing one, stopped or not
                save(totals, None)
                return "interrupted", f"stopped by signal at step {step}", totals
            distributed.average_running_stats(net)
            eval_loss, accuracy = evaluate(net, data, spec.train, device)
            loss_sum, decor_sum = distributed.sum_over_ranks([train_loss.item(), decor_loss.item()])
            ranks = distributed.world_size()
            record = {
                "step": step, "epoch": step / steps_per_epoch, "samples": step * spec.train.batch_size,
                "train_time_s": totals["train_time_s"], "wall_time_s": time.perf_counter() - wall_start,
                "train_loss": _finite_or_none(loss_sum / window / ranks), "eval_loss": _finite_or_none(eval_loss),
                "eval_accuracy": accuracy, "flops": flops_after(step),
                "energy_j": totals["energy_j"], "energy_source": energy_source,
                "co2_kg": totals["co2_kg"],
                "peak_memory_bytes": _peak_memory(device),
                "decor_loss": _finite_or_none(decor_sum / updates / ranks) if updates else None,
                "decor_loss_by_layer": layer_losses.means(),
            }
            totals["final_accuracy"] = accuracy
            sink.eval(record)  # before the checkpoint: a resumed run never lacks a record before its checkpoint
            train_loss.zero_()
            decor_loss.zero_()
            layer_losses = _LayerLosses()
            window = 0
            end = _end(spec.budget, record, totals, steps_per_epoch, had_updates=updates > 0)
            updates = 0
            if end is not None or stop or (step // eval_every) % spec.train.checkpoint_every == 0:
                save(totals, end)
            on_step(step, length, record)
            if end is not None:
                return (*end, totals)
            if stop:
                return "interrupted", f"stopped by signal at step {step}", totals
            begin_training_window()
