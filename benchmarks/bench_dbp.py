"""asv: the cost of one training step with BP and with DBP."""

import torch
import torch.nn.functional as F

from decorbench.dbp import decorrelate, update
from decorbench.models import create_model


class TrainStep:
    """ResNet-18 (CIFAR stem), 32×32, one Adam step; DBP adds its update."""

    params = (["bp", "dbp"], [32])
    param_names = ["method", "batch"]
    warmup_time = 0.5

    def setup(self, method, batch):
        torch.manual_seed(0)
        self.model = create_model("resnet18", 10, input_shape=(3, 32, 32))
        if method == "dbp":
            decorrelate(self.model)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        self.x, self.y = torch.randn(batch, 3, 32, 32), torch.randint(10, (batch,))
        self.method = method

    def time_train_step(self, method, batch):
        self.opt.zero_grad()
        F.cross_entropy(self.model(self.x), self.y).backward()
        self.opt.step()
        if self.method == "dbp":
            update(self.model, 1e-4)

