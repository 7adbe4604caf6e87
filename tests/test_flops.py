"""FLOP counts against torchvision's published costs, and DBP's extra work counted on top."""

import pytest
import torch
import torchvision

from decorbench.dbp import DecorConv2d, DecorLinear, decorrelate
from decorbench.meters import count_flops, peak_memory_bytes, reset_peak_memory


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


def test_a_conv_on_small_feature_maps_decorrelates_its_patches_instead_of_forming_w_r():
    layer = DecorConv2d(64, 512, 3, padding=1, bias=False)  # d = 576
    d = 576
    # 4 images × 2×2 positions: 16 patch rows < 512 outputs, so z = R·patches (rows·d² MACs) then W·z
    assert count_flops(layer, torch.zeros(4, 64, 2, 2), backward=False) == 2 * 16 * d * d + 2 * 16 * d * 512
    # 128 images: 512 rows, as many as outputs, so A = W·R (out·d²) and the convolution
    assert count_flops(layer, torch.zeros(128, 64, 2, 2), backward=False) == 2 * 512 * d * d + 2 * 512 * d * 512


@pytest.mark.parametrize("rows, macs", [  # d = 32; 10 % sampled: n = 2, 40, 200 rows
    (20, lambda n, d: 3 * n * d * d + n * n * d),  # low-rank Zᵀ(Z·R): few samples
    (400, lambda n, d: 2 * n * d * d + d**3),  # dense in z
    (2000, lambda n, d: n * d * d + 3 * d**3),  # dense in x: many samples
])
def test_the_update_counts_every_product_of_its_form(rows, macs):
    layer = DecorLinear(32, 4, sample_fraction=0.1)
    x = torch.zeros(rows, 32)
    update_flops = count_flops(layer, x) - count_flops(layer, x, update_r=False)
    assert update_flops == 2 * macs(rows // 10, 32)


def test_counting_does_not_copy_the_weights():
    """On a GPU a copy of the weights before the meta move would hold a second model in its memory."""
    model = decorrelate(torch.nn.Sequential(torch.nn.Linear(4096, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 10)))
    x = torch.zeros(8, 4096)
    model(x)  # the decor layers keep an input sample, which a copy would take along too
    weights = sum(t.nbytes for t in [*model.parameters(), *model.buffers()])  # ≈ 200 MB, R included
    if reset_peak_memory("cpu") is not None:
        pytest.skip("this kernel cannot reset the peak resident set")
    before = peak_memory_bytes("cpu")
    flops = count_flops(model, x)
    assert flops > 2 * 3 * 8 * 4096 * 4096  # forward + backward of the first layer, at least
    assert peak_memory_bytes("cpu") - before < weights / 10
