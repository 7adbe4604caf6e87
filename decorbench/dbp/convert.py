"""`decorrelate(model)`: swap a model's Linear / groups=1 Conv2d layers for decorrelation layers, in place."""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatch

from torch import nn
from torchvision.models.swin_transformer import ShiftedWindowAttention

from decorbench.dbp.layers import DecorConv2d, DecorLinear, DecorMixin

# modules that read their Linear layers' weights directly and never call their forward: an R there would be ignored
_READS_WEIGHTS = (nn.MultiheadAttention, ShiftedWindowAttention)  # the latter: Swin V1 and V2 attention


def _convertible(m: nn.Module) -> bool:
    """A Linear or groups=1 Conv2d computed by its class's own forward (a subclass's forward would be dropped)."""
    return any(isinstance(m, base) and type(m).forward is base.forward for base in (nn.Linear, nn.Conv2d)) \
        and getattr(m, "groups", 1) == 1


def _decor_copy(m: nn.Module, settings: dict) -> DecorMixin:
    """A decorrelation layer sharing m's Parameter objects, so weights (and any optimizer state) carry over."""
    if isinstance(m, nn.Linear):
        new = DecorLinear(m.in_features, m.out_features, m.bias is not None, device=m.weight.device, **settings)
    else:
        new = DecorConv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, 1,
                          m.bias is not None, m.padding_mode, device=m.weight.device, **settings)
    new.weight, new.bias = m.weight, m.bias
    return new.train(m.training)


def decorrelate(model: nn.Module, *, kappa: float = 0.01, sample_fraction: float = 0.1, rule: str = "standard",
                skip: Iterable[str] = (), only: Iterable[str] | None = None) -> nn.Module:
    """Replace every nn.Linear and groups=1 nn.Conv2d of `model` by DecorLinear / DecorConv2d, in place.

    `skip` / `only` are fnmatch patterns on qualified module names (e.g. "fc", "layer4.*"); one that matches no such
    layer is a ValueError (a typo would silently change what the run measures), and so is a model left with no
    decorrelation layer (patterns excluding every layer, or a bare layer passed as the model: DBP would be BP).
    Outputs and `state_dict` entries are unchanged (R = I); each converted layer adds one buffer, `<name>.R`.
    Left alone: Linear layers owned by nn.MultiheadAttention or Swin's window attention (they read the weights
    directly and never call the layer's forward, so R would silently be ignored), and subclasses of Linear / Conv2d
    with their own forward (a decorrelation layer would replace what it computes).
    """
    if isinstance(model, (nn.Linear, nn.Conv2d)) and not isinstance(model, DecorMixin):
        raise ValueError("decorrelate swaps the layers inside a model; wrap a bare layer, e.g. nn.Sequential(layer)")
    skip, only = tuple(skip), None if only is None else tuple(only)
    settings = {"kappa": kappa, "sample_fraction": sample_fraction, "rule": rule}
    swaps, used = [], set()  # (parent, name, layer) to convert; the patterns that matched a layer
    for parent_name, parent in list(model.named_modules()):
        if isinstance(parent, _READS_WEIGHTS):
            continue
        for child_name, child in list(parent.named_children()):
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            if not (isinstance(child, DecorMixin) or _convertible(child)):
                continue
            skipped = [p for p in skip if fnmatch(name, p)]
            chosen = [p for p in only or () if fnmatch(name, p)]
            used.update(skipped, chosen)
            if not (isinstance(child, DecorMixin) or skipped or (only is not None and not chosen)):
                swaps.append((parent, child_name, child))
    for kind, patterns in (("skip", skip), ("only", only or ())):
        unused = [p for p in patterns if p not in used]
        if unused:  # before any swap: the model is left as it was
            raise ValueError(f"{kind} pattern {unused[0]!r} matches no Linear or Conv2d layer of the model")
    if not swaps and not any(isinstance(m, DecorMixin) for m in model.modules()):
        raise ValueError("skip/only leave no Linear or Conv2d layer to decorrelate in the model" if skip or only
                         is not None else "the model has no Linear or groups=1 Conv2d layer to decorrelate")
    for parent, child_name, child in swaps:
        setattr(parent, child_name, _decor_copy(child, settings))
    return model
