"""BatchNorm statistics recomputed for an evaluation: what they are, and that nothing of the training changes."""

import pytest
import torch
from torch import nn

from decorbench.batchnorm import recomputed_statistics
from decorbench.dbp import decor_layers, decorrelate


def _net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    decorrelate(net, kappa=0.5)
    for _ in range(3):  # running averages of some earlier batches, and R moved off the identity
        net(torch.randn(16, 3, 8, 8) + 2)
    return net


def test_inside_batchnorm_holds_the_mean_of_the_batches_statistics_and_on_exit_its_own_again():
    net = _net().eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    batches = [torch.randn(8, 3, 8, 8) * (i + 1) for i in range(3)]
    with torch.no_grad():
        outputs = [net[0](x) for x in batches]
    for m in decor_layers(net).values():
        m.sample = None
    with recomputed_statistics(net, iter(batches)):
        norm = net[1]
        torch.testing.assert_close(norm.running_mean, torch.stack([o.mean((0, 2, 3)) for o in outputs]).mean(0))
        torch.testing.assert_close(norm.running_var, torch.stack([o.var((0, 2, 3)) for o in outputs]).mean(0))
        assert all(m.sample is None for m in decor_layers(net).values())  # nothing sampled for an R update
    after = net.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())  # R, weights and running averages as they were
    assert net[1].momentum == 0.1 and not net.training
    assert all(m.sampling for m in decor_layers(net).values())


def test_a_network_without_batchnorm_is_left_alone():
    net = nn.Sequential(nn.Linear(4, 2))
    with recomputed_statistics(net, iter([torch.randn(2, 4)])) as inside:
        assert inside is net


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_with_bf16_and_channels_last_the_statistics_are_the_float32_ones_and_the_averages_come_back():
    """The GPU reference suite scores this way (train.amp, train.channels_last): the statistics must be the
    batches' own, not bf16 noise, and the running averages left as exact as on the CPU."""
    cpu = _net()
    gpu = _net().cuda().to(memory_format=torch.channels_last)
    batches = [torch.randn(64, 3, 8, 8) * (i + 1) for i in range(3)]
    before = {k: v.clone() for k, v in gpu.state_dict().items()}
    with recomputed_statistics(cpu, iter(batches)):
        expected = cpu[1].running_mean.clone(), cpu[1].running_var.clone()
    with recomputed_statistics(gpu, (x.cuda() for x in batches), amp=True, channels_last=True):
        got = gpu[1].running_mean.cpu(), gpu[1].running_var.cpu()
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=2e-2, atol=2e-2)  # bf16 convolutions, float32 statistics
    assert all(torch.equal(gpu.state_dict()[k], v) for k, v in before.items())
