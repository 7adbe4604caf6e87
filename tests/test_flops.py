"""FLOP counts against torchvision's published costs, and DBP's extra work counted on top."""

import pytest
import torch
import torchvision

from decorbench.dbp import decorrelate
from decorbench.meters import count_flops


@pytest.mark.parametrize("name, gmacs", [("resnet18", 1.814), ("resnet50", 4.089)])  # torchvision's model docs
def test_forward_flops_match_torchvision_published_cost(name, gmacs):
    model = getattr(torchvision.models, name)()
    flops = count_flops(model, torch.zeros(1, 3, 224, 224), backward=False)
    assert flops / 2e9 == pytest.approx(gmacs, rel=0.02)


def test_training_step_counts_backward_and_dbp_adds_formation_and_update():
    model = torchvision.models.resnet18()
    x = torch.zeros(32, 3, 224, 224)
    forward, step = count_flops(model, x, backward=False), count_flops(model, x)
    assert 2.8 < step / forward < 3.1  # backward ≈ 2× forward (the first conv needs no input gradient)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dbp_step = count_flops(decorrelate(model), x)
    # formation: 2·Σ out·d² MACs per step for 20 fused layers (fc runs unfused at batch 32 < 1000 classes)
    formation = sum(4 * m.out_channels * (m.in_channels * m.kernel_size[0] * m.kernel_size[1]) ** 2
                    for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert dbp_step - step > formation  # plus the update and the unfused head
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())  # counting leaves the model alone
