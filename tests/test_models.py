"""The model registry: every model runs on digits- and CIFAR-sized inputs, ResNets are torchvision's, stems
follow the input, every model converts to DBP, and bad arguments fail with a helpful message."""

import math

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock

from decorbench.dbp import decor_layers, decorrelate, update
from decorbench.models import MODELS, create_model

DIGITS, CIFAR = (1, 8, 8), (3, 32, 32)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_names():
    resnets = ["resnet10", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
    assert list(MODELS) == [*resnets, "small-cnn", "mlp"]


@pytest.mark.parametrize("shape", [DIGITS, CIFAR], ids=["digits", "cifar"])
@pytest.mark.parametrize("name", list(MODELS))
def test_logits_shape(name, shape):
    torch.manual_seed(0)
    model = create_model(name, 10, input_shape=shape)
    with torch.no_grad():
        logits = model(torch.randn(2, *shape))  # training mode: BatchNorm sees batch statistics, as in training
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()


def test_resnet18_is_torchvisions():
    torch.manual_seed(0)
    ours = create_model("resnet18", 7, stem="imagenet")
    assert type(ours) is torchvision.models.ResNet
    assert n_params(ours) == n_params(torchvision.models.resnet18(weights=None, num_classes=7))
    # The CIFAR stem differs only in its first conv: 3×3 instead of 7×7 kernels.
    cifar = create_model("resnet18", 7, stem="cifar")
    assert n_params(ours) - n_params(cifar) == 64 * 3 * (7 * 7 - 3 * 3)


def test_resnet10_has_one_basic_block_per_stage():
    model = create_model("resnet10", 10)
    assert type(model) is torchvision.models.ResNet
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [1, 1, 1, 1]
    assert sum(isinstance(m, BasicBlock) for m in model.modules()) == 4


def test_cifar_stem():
    model = create_model("resnet50", 10, input_shape=CIFAR, stem="cifar")
    conv = model.conv1
    assert (conv.in_channels, conv.kernel_size, conv.stride, conv.padding) == (3, (3, 3), (1, 1), (1, 1))
    assert conv.bias is None
    assert isinstance(model.maxpool, nn.Identity)


def test_imagenet_stem():
    model = create_model("resnet18", 10, input_shape=CIFAR, stem="imagenet")
    assert (model.conv1.kernel_size, model.conv1.stride, model.conv1.padding) == ((7, 7), (2, 2), (3, 3))
    assert isinstance(model.maxpool, nn.MaxPool2d)


@pytest.mark.parametrize("shape, stem", [(DIGITS, "cifar"), (CIFAR, "cifar"), ((3, 64, 96), "cifar"),
                                         ((3, 65, 65), "imagenet"), ((3, 224, 224), "imagenet")])
def test_auto_stem_follows_input_size(shape, stem):
    model = create_model("resnet10", 10, input_shape=shape)
    assert model.conv1.kernel_size == {"cifar": (3, 3), "imagenet": (7, 7)}[stem]
    assert model.conv1.in_channels == shape[0]


@pytest.mark.parametrize("stem", ["cifar", "imagenet"])
def test_first_conv_takes_input_channels(stem):
    torch.manual_seed(0)
    model = create_model("resnet18", 10, input_shape=(1, 32, 32), stem=stem)
    assert model.conv1.in_channels == 1
    assert model.conv1.stride == {"cifar": (1, 1), "imagenet": (2, 2)}[stem]
    # Replaced like torchvision initialises its convs (kaiming normal, fan_out): std = sqrt(2 / (64·k·k)).
    k = model.conv1.kernel_size[0]
    assert model.conv1.weight.std().item() == pytest.approx((2 / (64 * k * k)) ** 0.5, rel=0.2)


def test_stem_is_ignored_by_non_resnets():
    for name in ("small-cnn", "mlp"):
        a = create_model(name, 10, input_shape=DIGITS, stem="imagenet")
        b = create_model(name, 10, input_shape=DIGITS, stem="cifar")
        assert [p.shape for p in a.parameters()] == [p.shape for p in b.parameters()]


@pytest.mark.parametrize("name, shape, n_layers", [("resnet18", CIFAR, 21), ("small-cnn", DIGITS, 4),
                                                   ("mlp", DIGITS, 3)],
                         ids=["resnet18", "small-cnn", "mlp"])
def test_converts_to_dbp(name, shape, n_layers):
    torch.manual_seed(0)
    model = create_model(name, 10, input_shape=shape).eval()
    x = torch.randn(2, *shape)
    with torch.no_grad():
        before = model(x)
        decorrelate(model)
        after = model(x)
    assert len(decor_layers(model)) == n_layers
    torch.testing.assert_close(after, before)  # R = I: conversion changes no output


@pytest.mark.parametrize("name", ["small-cnn", "mlp", "resnet10"])
def test_a_decorrelated_model_on_digits_updates_every_r_from_one_forward(name):
    torch.manual_seed(0)
    model = decorrelate(create_model(name, 10, input_shape=DIGITS), sample_fraction=0.5)
    nn.functional.cross_entropy(model(torch.randn(8, *DIGITS)), torch.randint(0, 10, (8,))).backward()
    decor_loss = update(model, 1e-3)
    assert 0 < decor_loss < math.inf
    assert all(not torch.equal(layer.R, torch.eye(len(layer.R))) for layer in decor_layers(model).values())


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "small-cnn"])
def test_batchnorm_can_be_left_out(name):
    torch.manual_seed(0)
    with_bn = create_model(name, 10, input_shape=(3, 32, 32))
    torch.manual_seed(0)
    without = create_model(name, 10, input_shape=(3, 32, 32), batchnorm=False)
    assert any(isinstance(m, nn.BatchNorm2d) for m in with_bn.modules())
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in without.modules())
    assert len(decor_layers(decorrelate(without))) == len(decor_layers(decorrelate(with_bn)))  # same convs, fcs
    assert without(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_unknown_model():
    with pytest.raises(ValueError, match=r"unknown model 'resnet9'; choose from: resnet10, .*small-cnn, mlp$") as e:
        create_model("resnet9", 10)
    assert "\n" not in str(e.value)


def test_bad_stem():
    with pytest.raises(ValueError, match=r"unknown stem 'cifar10'; choose from: imagenet, cifar, auto"):
        create_model("resnet18", 10, stem="cifar10")


@pytest.mark.parametrize("num_classes", [1, 0])
def test_too_few_classes(num_classes):
    with pytest.raises(ValueError, match=f"num_classes must be at least 2, got {num_classes}"):
        create_model("mlp", num_classes, input_shape=DIGITS)


@pytest.mark.parametrize("shape", [(8, 8), (1, 0, 8)])
def test_bad_input_shape(shape):
    with pytest.raises(ValueError, match="input_shape must be"):
        create_model("small-cnn", 10, input_shape=shape)
