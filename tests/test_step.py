"""The training step shared by runs, benchmarks and scripts: what it returns, and the fast path's promises."""

import pytest
import torch
import torch.nn.functional as F

from decorbench.data import load_data
from decorbench.dbp import decor_layers, decorrelate
from decorbench.models import create_model
from decorbench.step import make_step, prepare_model
from test_data import cifar_root  # noqa: F401 (a fixture)


def _setup(method, device="cpu", channels_last=False, **options):
    torch.manual_seed(0)
    net = create_model("small-cnn", 10, input_shape=(3, 16, 16))
    if method == "dbp":
        decorrelate(net, kappa=0.5)
    prepare_model(net.to(device), channels_last=channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    step = make_step(net, opt, dbp_lr=1e-3 if method == "dbp" else None, channels_last=channels_last, **options)
    x = torch.randn(32, 3, 16, 16, device=device)
    y = torch.randint(10, (32,), device=device)
    return net, step, x, y


def test_bp_step_returns_a_detached_loss_and_no_decorrelation_loss():
    net, step, x, y = _setup("bp")
    before = [p.clone() for p in net.parameters()]
    loss, decor = step(x, y)
    assert decor is None and loss.dim() == 0 and not loss.requires_grad and loss.item() > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_dbp_step_under_bf16_autocast_updates_r_in_fp32():
    net, step, x, y = _setup("dbp", amp=True, channels_last=True)
    layers = decor_layers(net).values()
    for _ in range(3):
        loss, decor = step(x, y)
    assert list(decor) == list(decor_layers(net))  # each layer's loss, in module order
    losses = torch.stack(list(decor.values()))
    assert torch.isfinite(loss) and torch.isfinite(losses).all() and (losses > 0).all()
    for m in layers:
        assert m.R.dtype == torch.float32
        assert not torch.equal(m.R, torch.eye(m.decor_dim))
        assert m.sample is None  # consumed by the update
    conv = next(m for m in layers if m.weight.dim() == 4)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_a_step_without_decorrelation_samples_nothing_and_leaves_r_alone():
    net, step, x, y = _setup("dbp")
    layers = list(decor_layers(net).values())
    loss, decor = step(x, y, decorrelate=False)
    assert decor is None and torch.isfinite(loss)
    assert all(m.sample is None and torch.equal(m.R, torch.eye(m.decor_dim)) for m in layers)
    _, decor = step(x, y)
    assert all(v.item() > 0 for v in decor.values())
    assert all(not torch.equal(m.R, torch.eye(m.decor_dim)) for m in layers)


@pytest.mark.parametrize("follows", [False, True])
def test_the_decorrelation_lr_follows_the_schedule_only_when_asked(follows):
    torch.manual_seed(0)
    net = decorrelate(create_model("small-cnn", 10, input_shape=(3, 16, 16)), kappa=0.5)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.0)  # the schedule's end: train.lr scaled to 0
    step = make_step(net, opt, dbp_lr=1e-3, dbp_lr_follows_schedule=follows)
    layers = list(decor_layers(net).values())
    assert opt.param_groups[0]["lr"] == 0.0 and scheduler.base_lrs == [1e-3]
    _, decor = step(torch.randn(32, 3, 16, 16), torch.randint(10, (32,)))
    assert all(v.item() > 0 for v in decor.values())  # the layers sampled and the losses were measured either way
    unchanged = [torch.equal(m.R, torch.eye(m.decor_dim)) for m in layers]
    assert all(unchanged) if follows else not any(unchanged)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("method", ["bp", "dbp"])
def test_gpu_step_never_waits_for_the_device(method):
    _, step, x, y = _setup(method, "cuda", amp=True, channels_last=True)
    step(x, y)  # warm-up: cuDNN autotuning and the allocator may synchronise once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            step(x, y)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_resident_data_never_waits_for_the_device_even_at_an_epoch_start(cifar_root):
    data = load_data("cifar10", batch_size=2, seed=0, device="cuda", root=cifar_root)  # random crops and flips
    list(data.train_batches(0))  # warm-up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for epoch in (1, 2):  # each epoch draws its order, crops and flips on the host and uploads them
            assert len(list(data.train_batches(epoch))) == 5
    finally:
        torch.cuda.set_sync_debug_mode("default")


class Precisions(torch.overrides.TorchFunctionMode):
    """(float32 matmul precision, cuDNN's TF32 switch) in force at every matrix product and convolution inside it."""

    def __init__(self):
        super().__init__()
        self.seen = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (torch.matmul, torch.Tensor.matmul, torch.addmm, torch.mm, F.linear, F.conv2d):  # a @ b: matmul
            self.seen.add((torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("tf32", [False, True])
def test_the_step_runs_its_float32_math_at_the_asked_precision_and_leaves_the_process_as_it_was(tf32):
    net, step, x, y = _setup("dbp", tf32=tf32)
    before = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("medium")  # whatever the process had: the step's setting wins, then returns
    torch.backends.cudnn.allow_tf32 = not tf32
    try:
        with Precisions() as mode:
            _, decor = step(x, y)
        after = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cudnn.allow_tf32 = before[1]
    assert decor  # the R update ran, its matmuls among those seen
    assert mode.seen == {("high" if tf32 else "highest", tf32)} and after == ("medium", not tf32)
