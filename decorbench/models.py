"""Model registry: configs name a model by string and `create_model` builds it (one entry point, as in timm).

ResNets are torchvision's own, so BP/DBP results compare with published ones and nothing here needs testing
as a network; this module only adapts their stem to the input (the CIFAR stem keeps 32×32 images from being
shrunk 4× before the first block) and to its channel count. "small-cnn" and "mlp" are for CPU smoke runs.
Every model uses only Linear, groups=1 Conv2d, BatchNorm, ReLU and pooling, so `dbp.decorrelate` converts it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

# builder(num_classes, input_shape (C, H, W), stem "imagenet" | "cifar") -> model
Builder = Callable[[int, tuple[int, int, int], str], nn.Module]

STEMS = ("imagenet", "cifar", "auto")


def _stem_conv(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> nn.Conv2d:
    """A replacement first conv, initialised as torchvision initialises ResNet convs."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


def _resnet(build: Callable[..., ResNet]) -> Builder:
    """Wrap a torchvision ResNet constructor: swap in the CIFAR stem, or a first conv for C ≠ 3 channels."""

    def builder(num_classes: int, input_shape: tuple[int, int, int], stem: str) -> nn.Module:
        model = build(num_classes=num_classes)
        channels, width = input_shape[0], model.conv1.out_channels
        if stem == "cifar":
            model.conv1 = _stem_conv(channels, width, 3, 1)
            model.maxpool = nn.Identity()
        elif channels != 3:
            model.conv1 = _stem_conv(channels, width, 7, 2)
        return model

    return builder


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU()]


def _small_cnn(num_classes: int, input_shape: tuple[int, int, int], stem: str) -> nn.Module:
    """Three 3×3 conv-BN-ReLU blocks (32, 64, 64 channels), one 2×2 max-pool, global average pool, linear head."""
    return nn.Sequential(
        *_conv_bn_relu(input_shape[0], 32), *_conv_bn_relu(32, 64), nn.MaxPool2d(2), *_conv_bn_relu(64, 64),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes),
    )


def _mlp(num_classes: int, input_shape: tuple[int, int, int], stem: str) -> nn.Module:
    """Two hidden ReLU layers of 256 units on the flattened input."""
    c, h, w = input_shape
    return nn.Sequential(
        nn.Flatten(), nn.Linear(c * h * w, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, num_classes),
    )


MODELS: dict[str, Builder] = {
    "resnet10": _resnet(partial(ResNet, BasicBlock, [1, 1, 1, 1])),
    "resnet18": _resnet(partial(torchvision.models.resnet18, weights=None)),
    "resnet34": _resnet(partial(torchvision.models.resnet34, weights=None)),
    "resnet50": _resnet(partial(torchvision.models.resnet50, weights=None)),
    "resnet101": _resnet(partial(torchvision.models.resnet101, weights=None)),
    "resnet152": _resnet(partial(torchvision.models.resnet152, weights=None)),
    "small-cnn": _small_cnn,
    "mlp": _mlp,
}


def _without_batchnorm(module: nn.Module) -> nn.Module:
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, nn.Identity())
        else:
            _without_batchnorm(child)
    return module


def create_model(name: str, num_classes: int, *, input_shape: tuple[int, int, int] = (3, 224, 224),
                 stem: str = "auto", batchnorm: bool = True) -> nn.Module:
    """Build registered model `name` (randomly initialised) for inputs of shape (C, H, W) and `num_classes` logits.

    `stem` applies to ResNets only: "imagenet" keeps torchvision's 7×7 stride-2 conv and max-pool, "cifar" uses a
    3×3 stride-1 conv and no max-pool, "auto" picks "cifar" when min(H, W) ≤ 64. `batchnorm=False` puts an identity
    in place of every BatchNorm layer (the DBP authors' code of the paper's time did so, for BP and DBP alike).
    Raises ValueError on bad input.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from: {', '.join(MODELS)}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(f"input_shape must be (channels, height, width) of positive sizes, got {input_shape}")
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; choose from: {', '.join(STEMS)}")
    if stem == "auto":
        stem = "cifar" if min(input_shape[1:]) <= 64 else "imagenet"
    model = MODELS[name](num_classes, input_shape, stem)
    return model if batchnorm else _without_batchnorm(model)
