"""The DBP core: decorrelation works, the fused layers equal the explicit method, conversion is lossless."""

import re

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from decorbench.dbp import DecorConv2d, DecorLinear, decor_layers, decorrelate, diagnostics, fused_for_eval, update


def mean_abs_offdiag_corr(z: torch.Tensor) -> float:
    c = torch.corrcoef(z.T)
    d = c.shape[0]
    return ((c.abs().sum() - c.diagonal().abs().sum()) / (d * (d - 1))).item()


def correlated_vectors(n: int, gen: torch.Generator, d: int = 16, rho: float = 0.6) -> torch.Tensor:
    """Unit-variance Gaussian features with pairwise correlation rho."""
    shared = torch.randn(n, 1, generator=gen)
    return rho**0.5 * shared + (1 - rho) ** 0.5 * torch.randn(n, d, generator=gen)


def correlated_images(n: int, gen: torch.Generator) -> torch.Tensor:
    """Spatially smooth noise with mixed channels: neighbouring pixels and channels correlate."""
    smooth = F.avg_pool2d(torch.randn(n, 3, 16, 16, generator=gen), 3, 1, 1) * 3
    mix = torch.tensor([[1.0, 0.8, 0.6], [0.8, 1.0, 0.8], [0.6, 0.8, 1.0]])
    return torch.einsum("ij,njhw->nihw", mix, smooth)


def patches(layer: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """Every input patch of the conv as a row, via F.pad and F.unfold."""
    (ph, pw), mode = layer.padding, "constant" if layer.padding_mode == "zeros" else layer.padding_mode
    unf = F.unfold(F.pad(x, (pw, pw, ph, ph), mode=mode), layer.kernel_size, dilation=layer.dilation,
                   stride=layer.stride)
    return unf.transpose(1, 2).reshape(-1, unf.shape[1])


def near_identity(d: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.eye(d) + 0.1 * torch.randn(d, d, generator=gen)


def test_linear_decorrelates_correlated_gaussian_input():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    layer = DecorLinear(16, 8, kappa=0.0, sample_fraction=0.1)
    held_out = correlated_vectors(10_000, gen)
    before = mean_abs_offdiag_corr(held_out)
    for _ in range(300):
        layer(correlated_vectors(256, gen))
        update(layer, 0.05)
    after = mean_abs_offdiag_corr(held_out @ layer.R.T)
    assert before > 0.5
    assert after < before / 10


def test_conv_decorrelates_correlated_patches():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    layer = DecorConv2d(3, 4, 3, padding=1, kappa=0.0, sample_fraction=0.25)
    held_out = patches(layer, correlated_images(200, gen))
    before = mean_abs_offdiag_corr(held_out)
    for _ in range(600):
        layer(correlated_images(16, gen))
        update(layer, 0.03)
    after = mean_abs_offdiag_corr(held_out @ layer.R.T)
    assert before > 0.4
    assert after < before / 10


@pytest.mark.parametrize("batch", [4, 64])  # 4 < out_features takes the unfused path, 64 the fused one
def test_linear_forward_and_weight_grad_match_explicit_form(batch):
    torch.manual_seed(0)
    layer = DecorLinear(12, 10)
    layer.R.copy_(near_identity(12))
    x = torch.randn(batch, 3, 12)
    y = layer(x)
    w = layer.weight.detach().clone().requires_grad_()
    expected = (x @ layer.R.T) @ w.T + layer.bias.detach()
    torch.testing.assert_close(y, expected)
    y.square().sum().backward()
    expected.square().sum().backward()
    torch.testing.assert_close(layer.weight.grad, w.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("out", [5, 200])  # 2 images' patches (≤ 198) outnumber 5 outputs (fused A), not 200
@pytest.mark.parametrize(
    "kernel, stride, padding, dilation, padding_mode",
    [(3, 1, 1, 1, "zeros"), ((3, 2), 2, (1, 0), 1, "zeros"), (3, 1, 2, 2, "zeros"), (1, 2, 0, 1, "zeros"),
     (5, 3, 2, 1, "zeros"), (3, 1, 1, 1, "reflect")],
)
def test_conv_forward_and_grads_match_unfold_form(out, kernel, stride, padding, dilation, padding_mode):
    torch.manual_seed(0)
    layer = DecorConv2d(3, out, kernel, stride=stride, padding=padding, dilation=dilation, padding_mode=padding_mode)
    layer.R.copy_(near_identity(layer.decor_dim))
    x = torch.randn(2, 3, 11, 9, requires_grad=True)
    y = layer(x)
    w = layer.weight.detach().clone().requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    z = patches(layer, x_ref) @ layer.R.T  # (n·L, d)
    expected = (z @ w.reshape(out, -1).T + layer.bias.detach()).reshape(2, -1, out).transpose(1, 2).reshape(y.shape)
    torch.testing.assert_close(y, expected, rtol=1e-4, atol=1e-5)
    y.square().sum().backward()
    expected.square().sum().backward()
    torch.testing.assert_close(layer.weight.grad, w.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(layer(x[0].detach()), y[0].detach(), rtol=1e-4, atol=1e-5)  # one unbatched image


def test_conv_on_small_maps_runs_under_bf16_autocast_and_channels_last():
    torch.manual_seed(0)
    layer = DecorConv2d(8, 64, 3, padding=1)  # 2 images × 2×2 positions: 8 patch rows < 64 outputs, unfused
    layer.R.copy_(near_identity(layer.decor_dim))
    x = torch.randn(2, 8, 2, 2)
    expected = layer(x)
    layer.to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x.contiguous(memory_format=torch.channels_last))
    assert y.dtype == torch.bfloat16 and layer.R.dtype == torch.float32
    torch.testing.assert_close(y.float(), expected, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "circular"])
def test_conv_samples_all_patches_of_a_fraction_of_the_images(padding_mode):
    torch.manual_seed(0)
    layer = DecorConv2d(2, 3, 3, stride=2, padding=1, dilation=2, padding_mode=padding_mode, sample_fraction=0.5)
    x = torch.randn(4, 2, 8, 8)
    layer(x)
    mode = "constant" if padding_mode == "zeros" else padding_mode
    padded = F.pad(x, layer._reversed_padding_repeated_twice, mode=mode)
    per_image = F.unfold(padded, 3, dilation=2, stride=2).transpose(1, 2)  # (4, L, d)
    sampled = layer.sample.reshape(-1, *per_image.shape[1:])
    assert sampled.shape[0] == 2
    matches = (sampled[:, None] == per_image[None]).flatten(2).all(dim=2)  # (2 sampled, 4 images)
    assert matches.sum(dim=1).tolist() == [1, 1]  # each sampled block is exactly one image's patches
    assert matches.any(dim=0).sum() == 2  # and they are two different images


def test_linear_samples_every_token_of_a_fraction_of_the_items():
    torch.manual_seed(0)
    layer = DecorLinear(5, 3, sample_fraction=0.5)
    x = torch.randn(4, 6, 5)  # (images, tokens, d), as in a vision transformer
    layer(x)
    sampled = layer.sample.reshape(-1, 6, 5)
    assert sampled.shape[0] == 2
    matches = (sampled[:, None] == x[None]).flatten(2).all(dim=2)  # (2 sampled, 4 images)
    assert matches.sum(dim=1).tolist() == [1, 1] and matches.any(dim=0).sum() == 2
    layer(torch.randn(5))  # one unbatched vector: itself
    assert layer.sample.shape == (1, 5)


def test_samples_are_kept_in_training_mode_only():
    torch.manual_seed(0)
    layer = DecorLinear(8, 4, sample_fraction=0.25)
    layer.eval()
    layer(torch.randn(40, 8))
    assert layer.sample is None
    with pytest.raises(RuntimeError, match="training-mode forward"):
        update(layer, 0.1)
    layer.train()
    x = torch.randn(40, 8)
    layer(x)
    assert layer.sample.shape == (10, 8) and not layer.sample.requires_grad
    assert (layer.sample[:, None] == x[None]).all(dim=2).any(dim=1).all()  # rows of x, each once
    assert layer.sample.unique(dim=0).shape[0] == 10
    update(layer, 0.1)
    assert layer.sample is None


def reference_update(R, x, lr, kappa, rule):
    """The update rule of the README (Using DBP in your own code), written out densely."""
    z = x @ R.T
    c = z.T @ z / z.shape[0]
    d = c.shape[0]
    off, v = c - torch.diag(c.diagonal()), torch.diag(c.diagonal() - 1)
    a, b = (1 - kappa, kappa) if rule == "standard" else ((1 - kappa) / (d - 1), 2 * kappa)
    loss = ((1 - kappa) * off.square().sum() + kappa * v.square().sum()) / d**2
    return R - lr * (a * off + b * v) @ R, loss


@pytest.mark.parametrize("rule", ["standard", "normalized"])
@pytest.mark.parametrize("rows", [20, 400, 2000])  # 2, 40, 200 samples: low-rank, dense in z, dense in x
def test_update_follows_the_rule(rule, rows):
    torch.manual_seed(0)
    layer = DecorLinear(32, 4, kappa=0.3, sample_fraction=0.1, rule=rule)
    layer.R.copy_(near_identity(32))
    layer(torch.randn(rows, 32) * 2)
    expected_r, expected_loss = reference_update(layer.R.clone(), layer.sample.clone(), 0.01, 0.3, rule)
    loss = update(layer, 0.01)
    torch.testing.assert_close(layer.R, expected_r)
    assert loss == pytest.approx(expected_loss.item(), rel=1e-4)


@pytest.mark.parametrize("as_tensor", [False, True])
def test_update_by_layer_gives_each_layers_loss_in_module_order(as_tensor):
    torch.manual_seed(0)
    model = decorrelate(nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 2)), kappa=0.3, sample_fraction=0.5)
    model[2].R.copy_(near_identity(8))
    model(torch.randn(64, 12) * 3)
    expected = {name: reference_update(m.R.clone(), m.sample.clone(), 0.01, 0.3, "standard")[1].item()
                for name, m in decor_layers(model).items()}
    losses = update(model, 0.01, as_tensor=as_tensor, by_layer=True)
    assert list(losses) == ["0", "2"]
    got = {name: float(v) for name, v in losses.items()}
    assert got == pytest.approx(expected, rel=1e-4)
    assert got["0"] != pytest.approx(got["2"], rel=0.1)  # two different layers: the mean would hide which is which

def test_kappa_one_normalises_variance_and_keeps_correlations_kappa_zero_decorrelates():
    gen = torch.Generator().manual_seed(1)
    held_out = correlated_vectors(10_000, gen) * 2.0
    results = {}
    for kappa in (0.0, 1.0):
        torch.manual_seed(0)
        layer = DecorLinear(16, 4, kappa=kappa)
        for _ in range(200):
            layer(correlated_vectors(256, gen) * 2.0)
            update(layer, 0.02)
        z = held_out @ layer.R.T
        results[kappa] = (mean_abs_offdiag_corr(z), z.square().mean(0))
    before = mean_abs_offdiag_corr(held_out)
    corr_k1, var_k1 = results[1.0]
    assert corr_k1 == pytest.approx(before, abs=1e-4)  # κ=1 only rescales each z_i: correlations stay
    torch.testing.assert_close(var_k1, torch.ones(16), atol=0.1, rtol=0)
    corr_k0, _ = results[0.0]
    assert corr_k0 < before / 10


def test_nan_in_R_is_reported_with_the_layer_name():
    model = decorrelate(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
    model[2].R[0, 0] = float("nan")
    model(torch.randn(16, 4))
    with pytest.raises(FloatingPointError, match=r"layer\(s\): 2$"):
        update(model, 0.01)


def test_resnet18_conversion_keeps_outputs_weights_and_keys():
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(2, 3, 64, 64)
    before_out, before_state = model(x), {k: v.clone() for k, v in model.state_dict().items()}
    decorrelate(model)
    layers = decor_layers(model)
    assert len(layers) == 21
    assert {type(m) for m in layers.values()} == {DecorConv2d, DecorLinear}
    # R = I: the same function; layer4's 2×2 maps (8 patches < 512 outputs) go unfused, so up to rounding
    torch.testing.assert_close(model(x), before_out)
    state = model.state_dict()
    assert set(state) - set(before_state) == {f"{name}.R" for name in layers}
    assert all(torch.equal(state[k], v) for k, v in before_state.items())


def test_eval_forwards_with_a_once_formed_a_give_the_same_outputs_and_never_change_gradients():
    torch.manual_seed(0)
    model = decorrelate(torchvision.models.resnet18(num_classes=10))
    for m in decor_layers(model).values():
        m.R.copy_(near_identity(m.decor_dim))
    model.eval()
    x = torch.randn(2, 3, 32, 32)  # 2 rows < 10 classes: the head's unfused path outside
    with torch.no_grad():
        expected = model(x)
    with fused_for_eval(model):
        layers = decor_layers(model).values()
        formed = [m.fused for m in layers]  # on entry, once
        with torch.no_grad():
            outputs = [model(x) for _ in range(3)]
        assert all(m.fused is a for m, a in zip(layers, formed))
        model.train()
        trained = model(x).sum()  # a training-mode forward inside forms A afresh, with its gradient to W
    for out in outputs:
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    trained.backward()
    assert model.fc.weight.grad is not None and model.fc.weight.grad.abs().sum() > 0
    assert all(m.fused is None for m in decor_layers(model).values())  # nothing held after it
    model.fc.R.mul_(2)  # and R's changes show again
    model.eval()
    with torch.no_grad():
        assert not torch.allclose(model(x), expected)


def test_skip_and_only_select_layers_by_name():
    skipped = decor_layers(decorrelate(torchvision.models.resnet18(), skip=["conv1", "fc", "layer4.*"]))
    assert "conv1" not in skipped and "fc" not in skipped
    assert not any(name.startswith("layer4") for name in skipped) and "layer3.0.conv1" in skipped
    only = decor_layers(decorrelate(torchvision.models.resnet18(), only=["layer1.*"]))
    assert set(only) == {"layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1", "layer1.1.conv2"}


@pytest.mark.parametrize("kind, patterns, typo", [("skip", ["fc", "layer5.*"], "layer5.*"),
                                                   ("only", ["layer1.*", "Layer2.*"], "Layer2.*")])
def test_a_pattern_that_matches_no_layer_is_an_error_and_leaves_the_model_alone(kind, patterns, typo):
    model = torchvision.models.resnet18()
    with pytest.raises(ValueError, match=f"{kind} pattern '{re.escape(typo)}' matches no"):
        decorrelate(model, **{kind: patterns})
    assert decor_layers(model) == {}
    twice = decorrelate(decorrelate(model, only=["fc"]), only=["fc"])  # a converted layer still matches
    assert decor_layers(twice).keys() == {"fc"}


def test_attention_projections_and_grouped_convs_are_left_alone():
    block = decorrelate(nn.TransformerEncoderLayer(16, 2, dim_feedforward=32))
    assert set(decor_layers(block)) == {"linear1", "linear2"}
    assert type(block.self_attn.out_proj) is not DecorLinear
    mobile = decor_layers(decorrelate(torchvision.models.mobilenet_v3_small()))
    assert all(m.groups == 1 for m in mobile.values() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("build", [torchvision.models.swin_t, torchvision.models.swin_v2_t])
def test_every_decorrelation_layer_of_a_swin_transformer_is_used(build):
    model = decorrelate(build(num_classes=10))
    model(torch.randn(2, 3, 64, 64))
    unused = [name for name, layer in decor_layers(model).items() if layer.sample is None]
    assert not unused, f"R of {unused[:3]} would never act (Swin's attention reads qkv/proj weights directly)"
    assert type(model.features[1][0].attn.qkv) is nn.Linear and isinstance(model.features[1][0].mlp[0], DecorLinear)


def test_a_layer_subclass_with_its_own_forward_keeps_it():
    class Scaled(nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    model = decorrelate(nn.Sequential(Scaled(4, 4), nn.Linear(4, 2)))
    assert type(model[0]) is Scaled and isinstance(model[1], DecorLinear)


def test_training_under_bf16_autocast_keeps_R_in_fp32():
    torch.manual_seed(0)
    model = decorrelate(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10)))
    x = torch.randn(32, 3, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.dtype == torch.bfloat16
    out.float().logsumexp(1).mean().backward()
    loss = update(model, 1e-3)
    assert all(m.R.dtype == torch.float32 and torch.isfinite(m.R).all() for m in decor_layers(model).values())
    assert loss > 0
    assert model[0].weight.grad.dtype == torch.float32


def test_diagnostics_report_correlation_of_the_current_sample():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    layer = DecorLinear(16, 4, sample_fraction=1.0)
    layer(correlated_vectors(4000, gen))
    stats = diagnostics(layer)[""]
    assert stats["d"] == 16
    assert stats["mean_abs_offdiag_corr"] == pytest.approx(0.6, abs=0.05)
    assert stats["mean_variance"] == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("width, batch, image", [
    (8, 32, 8),  # more rows than outputs (conv 32·36 > 8, linear 32 > 10): both layers form A = W·R
    (64, 2, 4),  # fewer (conv 2·4 < 64, linear 2 < 10): both compute W·(R·x), as a ResNet's last stage on 8×8 digits
])
def test_compiled_model_matches_eager_and_still_samples(width, batch, image):
    torch.manual_seed(0)
    model = decorrelate(nn.Sequential(nn.Conv2d(3, width, 3), nn.ReLU(), nn.Flatten(),
                                      nn.Linear(width * (image - 2) ** 2, 10)))
    for m in decor_layers(model).values():
        m.R.copy_(near_identity(m.decor_dim))
    x = torch.randn(batch, 3, image, image)
    out = torch.compile(model)(x)
    assert all(m.sample is not None for m in decor_layers(model).values())
    out.square().sum().backward()
    compiled_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    eager = model(x)
    eager.square().sum().backward()
    torch.testing.assert_close(out, eager, rtol=1e-4, atol=1e-5)
    for compiled, p in zip(compiled_grads, model.parameters()):
        torch.testing.assert_close(compiled, p.grad, rtol=1e-4, atol=1e-4)
    assert update(model, 1e-3) > 0


@pytest.mark.parametrize("model, options, message", [
    (nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)), {"only": []}, "skip/only leave no"),
    (nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)), {"skip": ["*"]}, "skip/only leave no"),
    (nn.Sequential(nn.ReLU()), {}, "the model has no Linear"),
    (nn.Linear(4, 2), {}, "wrap a bare layer"),
])
def test_a_model_left_without_any_decorrelation_layer_is_an_error_not_silent_bp(model, options, message):
    with pytest.raises(ValueError, match=message):
        decorrelate(model, **options)
    assert not any(isinstance(m, (DecorLinear, DecorConv2d)) for m in model.modules())
