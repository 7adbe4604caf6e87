"""asv: the cost of one training step with BP and with DBP — time, peak memory, the DBP/BP ratio, FLOPs."""

import torch

from benchmarks.common import DEPTH_CASES, DEPTHS, DEVICES, METHODS, STEP_CASES, TINY, Step, device_or_skip, size, \
    step_time_ratio
from decorbench.data import load_data
from decorbench.dbp import decorrelate
from decorbench.meters import count_flops, peak_memory_bytes, reset_peak_memory
from decorbench.models import create_model
from decorbench.settings import TrainConfig
from decorbench.train import evaluate


def _warm_step(method: str, case: str, device: str) -> Step:
    """The training step of STEP_CASES[case], after one full step (allocator, kernels, first touch)."""
    model, side, batch = STEP_CASES[case]
    step = Step(method, model, *size(side, batch), device_or_skip(device))
    step()
    return step


class TrainStep:
    """One Adam step on a fixed batch; DBP adds its decorrelation update (all layers decorrelated)."""

    params = (METHODS, list(STEP_CASES), DEVICES)
    param_names = ["method", "case", "device"]
    number = 1  # a ResNet step takes seconds on a CPU: time single calls
    repeat = (1, 7, 30.0)
    warmup_time = 0.0  # setup warms up instead, with one full step

    def setup(self, method, case, device):
        self.step = _warm_step(method, case, device)

    def time_train_step(self, method, case, device):
        self.step()


class Evaluate:
    """One eval point as runs make it (`decorbench.train.evaluate`, DBP forming each A = W·R once per eval) over 4
    batches of the case's size; eval is not in a run's training time, but it is in its wall time and the GPU's."""

    params = TrainStep.params
    param_names = TrainStep.param_names
    number = 1
    repeat = (1, 7, 30.0)
    warmup_time = 0.0

    def setup(self, method, case, device):
        self.step = _warm_step(method, case, device)
        side, batch = size(*STEP_CASES[case][1:])
        self.data = load_data("synthetic", batch_size=batch, seed=0, device=self.step.device, options={
            "image_size": side, "train_size": batch, "test_size": 4 * batch})
        fast = self.step.device.type == "cuda"
        self.train = TrainConfig(batch_size=batch, amp=fast, channels_last=fast)
        evaluate(self.step.model, self.data, self.train, self.step.device)

    def time_evaluate(self, method, case, device):
        evaluate(self.step.model, self.data, self.train, self.step.device)


class TrainStepPeakMemory:
    """Peak memory of one training step, with what stays resident (weights, optimizer state, R): decorbench's own
    meter, as runs record it, the CUDA allocator's peak on a GPU. (asv's peakmem_ measures the host process even
    when the step runs on the GPU.) Skipped where the meter cannot start a new peak."""

    params = TrainStep.params
    param_names = TrainStep.param_names
    unit = "bytes"

    def setup(self, method, case, device):
        self.step = _warm_step(method, case, device)
        cannot = reset_peak_memory(self.step.device)
        if cannot:
            raise NotImplementedError(cannot)

    def track_peak_memory(self, method, case, device):
        self.step()
        return peak_memory_bytes(self.step.device)


class StepTimeRatio:
    """DBP step time over BP step time per ResNet depth (CIFAR stem, 32², batch 128); > 1 means DBP costs more."""

    params = (DEPTHS, DEVICES)
    param_names = ["depth", "device"]
    unit = "ratio"
    rounds = 1
    timeout = 600

    def setup(self, depth, device):
        self.device = device_or_skip(device)

    def track_dbp_bp_step_time_ratio(self, depth, device):
        return step_time_ratio(depth, *size(32, 128), self.device, repeats=1 if TINY else 3)


class Flops:
    """Training FLOPs per step (forward + backward, and for DBP the A = W·R formation and the update), counted by
    torch's FlopCounterMode on a meta-device copy: exact for a given shape, independent of the machine."""

    params = (DEPTHS, list(DEPTH_CASES))
    param_names = ["depth", "case"]
    unit = "FLOPs"
    rounds = 1

    def setup(self, depth, case):
        side, batch = DEPTH_CASES[case]  # nothing is computed: the real shapes stay, even in tiny mode
        num_classes = 1000 if side == 224 else 10
        self.flops = {}
        for method in METHODS:
            model = create_model(depth, num_classes, input_shape=(3, side, side))
            if method == "dbp":
                decorrelate(model)
            self.flops[method] = count_flops(model, torch.zeros(batch, 3, side, side))

    def track_bp_flops_per_step(self, depth, case):
        return self.flops["bp"]

    def track_dbp_flops_per_step(self, depth, case):
        return self.flops["dbp"]

    def track_dbp_bp_flops_ratio(self, depth, case):
        return self.flops["dbp"] / self.flops["bp"]

    track_dbp_bp_flops_ratio.unit = "ratio"
