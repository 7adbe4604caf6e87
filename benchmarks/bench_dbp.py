"""asv: DBP's two extra pieces of work per ResNet depth, each alone — the decorrelation update of every R from
one step's samples, and the fused A = W·R formation with its backward (grad_W = grad_A·Rᵀ). On a GPU both run as
the GPU suites' step runs them: bf16 autocast (a matmul of W and R in bf16; R itself stays fp32), channels_last."""

import torch

from benchmarks.common import DBP_LR, DEPTH_CASES, DEPTHS, DEVICES, as_trained, device_or_skip, size, synchronize
from decorbench.dbp import decor_layers, decorrelate, update
from decorbench.models import create_model
from decorbench.step import prepare_model


class DecorrelationParts:
    params = (DEPTHS, list(DEPTH_CASES), DEVICES)
    param_names = ["depth", "case", "device"]
    number = 1
    repeat = (1, 7, 30.0)
    warmup_time = 0.1  # > 0: one untimed call first (allocator, first-touch)
    timeout = 300

    def setup(self, depth, case, device):
        self.device = device_or_skip(device)
        side, batch = size(*DEPTH_CASES[case])
        torch.manual_seed(0)
        self.model = decorrelate(create_model(depth, 1000 if side == 224 else 10, input_shape=(3, side, side)))
        fast = self.device.type == "cuda"
        prepare_model(self.model.to(self.device).train(), channels_last=fast)
        x = torch.randn(batch, 3, side, side, device=self.device)
        with as_trained(self.device):
            self.model(x.contiguous(memory_format=torch.channels_last) if fast else x)  # each layer samples inputs
        self.layers = list(decor_layers(self.model).values())
        self.samples = [m.sample for m in self.layers]
        self.weight_grads = [torch.randn_like(m.weight) for m in self.layers]

    def time_update(self, depth, case, device):
        for layer, sample in zip(self.layers, self.samples):
            layer.sample = sample  # update() consumes them; putting them back costs nothing
        update(self.model, DBP_LR, as_tensor=True)
        synchronize(self.device)

    def time_formation(self, depth, case, device):
        for layer, grad in zip(self.layers, self.weight_grads):
            layer.weight.grad = None  # as after the optimizer's zero_grad: nothing to add to
            with as_trained(self.device):
                fused = layer._fused_weight()
            fused.backward(grad.to(fused.dtype))
        synchronize(self.device)
