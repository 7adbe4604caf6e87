"""One run: records carry every field, BP and DBP see the same data, budgets and divergence end runs."""

import dataclasses
import math
import threading
import time

import pytest
import torch

from decorbench.budget import Budget
from decorbench.checkpoint import load_checkpoint
from decorbench.data import load_data
from decorbench.dbp import decorrelate
from decorbench.meters import EnergyMeter, count_flops
from decorbench.models import create_model
from decorbench.results import EVAL_FIELDS
from decorbench import train
from decorbench.train import DBPConfig, RunSpec, TrainConfig, continues, evaluate, train_run
from test_meters import FakeNVML, NVMLError_GpuIsLost, readings
from test_step import Precisions


class Records:
    def __init__(self):
        self.evals = []

    def eval(self, record):
        self.evals.append(record)


def run(method="bp", *, budget=Budget(max_steps=4), model="mlp", energy=None, **train):
    train = {"batch_size": 64, "eval_every": 2, "schedule": "constant", **train}
    spec = RunSpec("t", method, model, "digits", 0, TrainConfig(**train), DBPConfig(lr=1e-3, kappa=0.5), budget)
    sink = Records()
    status, reason, totals = train_run(spec, sink, device=torch.device("cpu"), energy=energy)
    return status, reason, totals, sink.evals


@pytest.mark.parametrize("method", ["bp", "dbp"])
def test_eval_records_carry_every_field_and_grow_monotonically(method):
    status, reason, totals, evals = run(method)
    assert (status, reason) == ("completed", "max_steps 4 done")
    assert [r["step"] for r in evals] == [2, 4]
    assert all(set(r) == set(EVAL_FIELDS) for r in evals)
    first, last = evals
    assert 0 < first["train_time_s"] < last["train_time_s"] <= last["wall_time_s"]
    assert 0 < first["flops"] < last["flops"] == 2 * first["flops"] == totals["flops"]
    assert last["samples"] == 4 * 64 and last["epoch"] == pytest.approx(4 / 21)
    assert 0 <= last["eval_accuracy"] <= 1 and math.isfinite(last["eval_loss"])
    assert last["energy_j"] is None and last["co2_kg"] is None and last["energy_source"] is None
    assert last["peak_memory_bytes"] > 0
    assert (last["decor_loss"] is not None) == (method == "dbp")
    if method == "dbp":  # each layer's, in module order; decor_loss is their mean
        by_layer = last["decor_loss_by_layer"]
        assert list(by_layer) == ["1", "3", "5"] and all(v > 0 for v in by_layer.values())
        assert last["decor_loss"] == pytest.approx(sum(by_layer.values()) / 3, rel=1e-6)
    else:
        assert last["decor_loss_by_layer"] is None
    assert totals["chance_accuracy"] == 46 / 450  # digits' test split: its most frequent class, 46 of 450 images
    assert totals["data_wait_s"] == 0  # held on the device: no loader to wait for
    assert totals["other_cpu_s"] >= 0 and totals["other_cpu_span_s"] >= last["train_time_s"]  # evals included


def test_a_peak_memory_that_cannot_be_measured_is_null_with_the_reason_in_the_totals(monkeypatch, tmp_path):
    from decorbench.meters import memory

    monkeypatch.setattr(memory, "_CLEAR_REFS", tmp_path / "no-proc" / "clear_refs")  # a kernel without it
    _, _, totals, evals = run()
    assert [r["peak_memory_bytes"] for r in evals] == [None, None]
    assert "cannot reset the peak resident set" in totals["memory_unavailable_reason"]
    monkeypatch.undo()
    assert "memory_unavailable_reason" not in run()[2]


@pytest.mark.parametrize("budget, status", [(Budget(max_steps=8, max_energy_j=100.0), "completed"),
                                            (Budget(max_energy_j=100.0), "failed")])
def test_energy_of_training_windows_in_records_and_a_meter_failing_mid_run_leaves_null(fake_nvml_gpus, budget,
                                                                                        status):
    # probe; window edges 0→1000, 5000→6000 mJ (the eval between them is not counted); then the GPU is lost
    meter = EnergyMeter("cuda:0", nvml=FakeNVML(counter=readings(0, 0, 1_000, 5_000, 6_000,
                                                                 NVMLError_GpuIsLost("GPU is lost"))))
    got, reason, totals, evals = run(budget=budget, energy=meter)
    assert [(r["energy_j"], r["energy_source"]) for r in evals[:3]] == [(1.0, "nvml-counter"), (2.0, "nvml-counter"),
                                                                       (None, None)]
    assert totals["energy_j"] is None and "NVMLError_GpuIsLost" in totals["energy_unavailable_reason"]
    assert got == status and evals[-1]["step"] == {"completed": 8, "failed": 6}[status]
    if status == "failed":  # nothing else could have ended it
        assert reason.startswith("budget.max_energy_j can no longer end this run: its energy is unknown from step 6")


def test_a_power_sampler_failing_during_eval_leaves_the_window_it_measured_labelled(fake_nvml_gpus, monkeypatch):
    lost = threading.Event()

    def power_mw():
        if lost.is_set():
            raise NVMLError_GpuIsLost("GPU is lost")
        return 300_000

    def evaluate_while_the_gpu_is_lost(*args, **kwargs):
        lost.set()
        time.sleep(0.1)  # the sampler polls on during eval, and fails
        return evaluate(*args, **kwargs)
    monkeypatch.setattr(train, "evaluate", evaluate_while_the_gpu_is_lost)
    meter = EnergyMeter("cuda:0", nvml=FakeNVML(power=power_mw), sample_interval_s=0.005)
    first = run(budget=Budget(max_steps=4), energy=meter)[3][0]
    assert first["energy_j"] > 0 and first["energy_source"] == "nvml-power"


def test_bp_and_dbp_of_a_pair_start_from_the_same_weights_and_data():
    # At R = I a DBP net computes what its BP twin computes: equal first-step losses need equal init and batch.
    bp = run("bp", budget=Budget(max_steps=1), eval_every=1)[3][0]
    dbp = run("dbp", budget=Budget(max_steps=1), eval_every=1)[3][0]
    assert bp["train_loss"] == pytest.approx(dbp["train_loss"], rel=1e-6)


@pytest.mark.parametrize("tf32", [False, True])
def test_an_evaluation_runs_its_float32_math_at_the_training_precision(tf32):
    # all of it: the recomputed BatchNorm statistics, the one A = W·R, the eval batches
    data = load_data("digits", batch_size=64, seed=0)
    net = decorrelate(create_model("small-cnn", data.num_classes, input_shape=data.input_shape))
    with Precisions() as mode:
        evaluate(net, data, TrainConfig(tf32=tf32, precise_bn=1), torch.device("cpu"))
    assert mode.seen == {("high" if tf32 else "highest", tf32)}


def test_dbp_counts_its_extra_flops():
    bp_flops = run("bp", budget=Budget(max_steps=2))[3][-1]["flops"]
    dbp_flops = run("dbp", budget=Budget(max_steps=2))[3][-1]["flops"]
    assert dbp_flops > bp_flops


def test_bp_converted_learns_as_bp_and_pays_for_forming_w_times_r_but_no_update():
    budget, conv = Budget(max_steps=6), dict(model="small-cnn", eval_every=3)
    bp, converted, dbp = (run(method, budget=budget, **conv)[3] for method in ("bp", "bp-converted", "dbp"))
    for of_bp, of_converted in zip(bp, converted):  # R stays the identity: W·R is W, up to rounding
        for key in ("train_loss", "eval_loss", "eval_accuracy"):
            assert of_converted[key] == pytest.approx(of_bp[key], rel=1e-5)
    assert converted[-1]["decor_loss"] is None
    assert bp[-1]["flops"] < converted[-1]["flops"] < dbp[-1]["flops"]


def test_target_ends_the_run_when_asked():
    status, reason, _, evals = run(budget=Budget(max_epochs=20, target_accuracy=0.5, stop_at_target=True))
    assert status == "target" and "0.5" in reason
    assert evals[-1]["eval_accuracy"] >= 0.5 and evals[-1]["step"] < 20 * 21


def test_seconds_budget_is_checked_at_eval_points():
    status, reason, totals, _ = run(budget=Budget(max_train_seconds=1e-9, max_steps=100))
    assert status == "budget" and "max_train_seconds" in reason and totals["steps"] == 2


def test_exploding_loss_is_recorded_as_diverged_not_raised():
    status, reason, _, evals = run(budget=Budget(max_steps=40), lr=1e12, optimizer="sgd", eval_every=10)
    assert status == "diverged" and "non-finite" in reason
    assert evals[-1]["train_loss"] is None


class CheckpointWatch(Records):
    """Records, each with the step its run's checkpoint was at when the record arrived."""

    def __init__(self, checkpoint):
        super().__init__()
        self.checkpoint, self.checkpointed = checkpoint, []

    def eval(self, record):
        super().eval(record)
        saved = load_checkpoint(self.checkpoint, torch.device("cpu"))
        self.checkpointed.append(saved and saved["step"])


def _resume_spec(method, steps=30):
    return RunSpec("t", method, "small-cnn", "digits", 0,
                   TrainConfig(batch_size=64, eval_every=5, schedule="cosine"), DBPConfig(lr=1e-3, kappa=0.5),
                   Budget(max_steps=steps))


@pytest.mark.parametrize("method", ["bp", "dbp"])
def test_a_stopped_run_continues_from_its_checkpoint_exactly(method, tmp_path):
    spec = _resume_spec(method)
    straight = Records()
    train_run(spec, straight, device=torch.device("cpu"))

    ckpt = tmp_path / "run.pt"
    first, second = CheckpointWatch(ckpt), Records()
    status, reason, totals = train_run(spec, first, device=torch.device("cpu"), checkpoint=ckpt,
                                       should_stop=lambda: len(first.evals) >= 2)
    assert (status, reason) == ("interrupted", "stopped by signal at step 11")
    assert [r["step"] for r in first.evals] == [5, 10]  # no record off the eval schedule at the stop
    assert first.checkpointed == [None, 5]  # each record is on its way to disk before its checkpoint
    assert totals["steps"] == 11 and totals["final_accuracy"] is None
    torch.manual_seed(1234)  # whatever the process did in between
    saved = load_checkpoint(ckpt, torch.device("cpu"))
    assert saved["step"] == 11
    status, _, resumed = train_run(spec, second, device=torch.device("cpu"), checkpoint=ckpt, resume_from=saved)
    assert status == "completed" and resumed["other_cpu_span_s"] > totals["other_cpu_span_s"]  # carried on
    assert [r["step"] for r in second.evals] == [15, 20, 25, 30]
    assert second.evals[0]["train_time_s"] > first.evals[-1]["train_time_s"]

    expected = {r["step"]: r for r in straight.evals}
    window_means = ("train_loss", "decor_loss", "decor_loss_by_layer") if method == "dbp" else ("train_loss",)
    for record in second.evals:  # the same weights, R, optimizer, schedule, RNG, batches and loss sums
        for key in ("eval_loss", "eval_accuracy", "flops", *window_means):
            assert record[key] == pytest.approx(expected[record["step"]][key], rel=1e-5), (record["step"], key)


def test_checkpoint_every_saves_every_kth_eval_point_and_always_the_end_or_a_stop(tmp_path):
    spec = _resume_spec("bp", steps=22)
    spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, checkpoint_every=2))
    watch = CheckpointWatch(tmp_path / "run.pt")
    train_run(spec, watch, device=torch.device("cpu"), checkpoint=tmp_path / "run.pt")
    assert [r["step"] for r in watch.evals] == [5, 10, 15, 20, 22]
    assert watch.checkpointed == [None, None, 10, 10, 20]  # 10 and 20 saved; then the end, at 22
    assert load_checkpoint(tmp_path / "run.pt", torch.device("cpu"))["step"] == 22
    stopped = CheckpointWatch(tmp_path / "stop.pt")
    train_run(spec, stopped, device=torch.device("cpu"), checkpoint=tmp_path / "stop.pt",
              should_stop=lambda: len(stopped.evals) >= 3)
    assert load_checkpoint(tmp_path / "stop.pt", torch.device("cpu"))["step"] == 16  # the stop, between evals
    with pytest.raises(ValueError, match="checkpoint_every must be at least 1"):
        TrainConfig(checkpoint_every=0)


def test_a_run_killed_before_its_end_record_ends_on_resume_as_it_did_without_training_on(tmp_path):
    spec, ckpt = _resume_spec("dbp", steps=12), tmp_path / "run.pt"
    ended = train_run(spec, Records(), device=torch.device("cpu"), checkpoint=ckpt)
    assert ended[:2] == ("completed", "max_steps 12 done")
    again = Records()
    assert train_run(spec, again, device=torch.device("cpu"), checkpoint=ckpt,
                     resume_from=load_checkpoint(ckpt, torch.device("cpu"))) == ended
    assert again.evals == [] and load_checkpoint(ckpt, torch.device("cpu"))["step"] == 12


@pytest.mark.parametrize("method", ["bp", "dbp"])
@pytest.mark.parametrize("option", ["channels_last", "compile"])
def test_fast_path_options_train_the_same_model(method, option):
    # The memory format and compilation change how the step runs, not what it computes.
    plain = run(method, model="small-cnn")[3]
    fast = run(method, model="small-cnn", **{option: True})[3]
    for a, b in zip(plain, fast, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["eval_accuracy"] == pytest.approx(a["eval_accuracy"], abs=1 / 450)
        assert b["flops"] == a["flops"]




@pytest.mark.parametrize("method", ["bp", "dbp"])
def test_a_run_without_batchnorm_trains_a_model_without_it(method, monkeypatch):
    built = []
    monkeypatch.setattr(train, "create_model", lambda *a, **k: built.append(create_model(*a, **k)) or built[-1])
    status, _, _, evals = run(method, model="small-cnn", batchnorm=False)
    assert status == "completed" and len(evals) == 2
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in built[0].modules())


def test_the_warm_up_before_the_clock_leaves_the_run_as_it_would_be_without_it(monkeypatch):
    events = []
    real_make_step, real_start = train.make_step, train.Stopwatch.start

    def make_step(*args, **kwargs):
        inner = real_make_step(*args, **kwargs)
        return lambda *a, **k: (events.append("step"), inner(*a, **k))[1]

    monkeypatch.setattr(train, "make_step", make_step)
    monkeypatch.setattr(train.Stopwatch, "start", lambda self: (events.append("clock"), real_start(self))[1])
    warmed = run("dbp", model="small-cnn")[3]  # BatchNorm statistics and DBP's random sampling: both restored
    assert events[:3] == ["step", "step", "clock"]  # two untimed steps, then the first window

    monkeypatch.setattr(train, "_warm_up", lambda *a, **k: None)
    cold = run("dbp", model="small-cnn")[3]
    for a, b in zip(warmed, cold, strict=True):
        for key in ("train_loss", "eval_loss", "eval_accuracy", "decor_loss", "flops"):
            assert a[key] == b[key], (a["step"], key)


def _dbp_run(update_every, steps, eval_every):
    spec = RunSpec("t", "dbp", "mlp", "digits", 0, TrainConfig(batch_size=64, eval_every=eval_every,
                                                                 schedule="constant"),
                   DBPConfig(lr=1e-3, kappa=0.5, update_every=update_every), Budget(max_steps=steps))
    sink = Records()
    status = train_run(spec, sink, device=torch.device("cpu"))[0]
    return status, sink.evals


def test_update_every_k_steps_pays_for_the_updates_it_makes():
    net = decorrelate(create_model("mlp", 10, input_shape=(1, 8, 8)), kappa=0.5)
    batch = torch.zeros(64, 1, 8, 8)
    without = count_flops(net, batch, update_r=False)
    update_flops = count_flops(net, batch) - without
    assert update_flops > 0
    _, evals = _dbp_run(update_every=3, steps=6, eval_every=3)
    assert [r["flops"] for r in evals] == [3 * without + update_flops, 6 * without + 2 * update_flops]
    assert all(r["decor_loss"] > 0 for r in evals)  # each window holds one update (steps 0 and 3)


def test_a_window_without_an_update_has_no_decorrelation_loss_and_is_not_divergence():
    status, evals = _dbp_run(update_every=2, steps=4, eval_every=1)
    assert status == "completed"
    assert [r["decor_loss"] is not None for r in evals] == [True, False, True, False]
    assert [r["decor_loss_by_layer"] is not None for r in evals] == [True, False, True, False]


def test_update_every_must_be_positive_and_the_dbp_schedule_a_known_one():
    with pytest.raises(ValueError, match="update_every"):
        DBPConfig(update_every=0)
    with pytest.raises(ValueError, match="dbp.schedule must be one of constant, train, got 'cosine'"):
        DBPConfig(schedule="cosine")


def _lrs_and_groups(monkeypatch, optimizer_class, **train) -> tuple[list[float], dict]:
    """The lr of each of the run's optimizer steps (the untimed warm-up's optimizer left out), its param group."""
    steps = {}
    original = optimizer_class.step

    def spy(self, *args, **kwargs):
        steps.setdefault(id(self), (self, []))[1].append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(optimizer_class, "step", spy)
    run(**train)
    opt, lrs = max(steps.values(), key=lambda seen: len(seen[1]))
    return lrs, opt.param_groups[0]


def test_the_step_schedule_multiplies_the_lr_by_gamma_every_step_epochs(monkeypatch):
    lrs, _ = _lrs_and_groups(monkeypatch, torch.optim.Adam, budget=Budget(max_steps=44), lr=0.01,
                             schedule="step", step_epochs=1, gamma=0.5)  # digits in batches of 64: 21 per epoch
    assert lrs == pytest.approx([0.01] * 21 + [0.005] * 21 + [0.0025] * 2)


def test_the_cosine_schedule_anneals_the_lr_to_zero_over_the_planned_steps(monkeypatch):
    lrs, _ = _lrs_and_groups(monkeypatch, torch.optim.Adam, budget=Budget(max_steps=10), lr=0.01, schedule="cosine")
    assert lrs == pytest.approx([0.005 * (1 + math.cos(math.pi * t / 10)) for t in range(10)])


def test_sgd_takes_its_momentum_and_weight_decay(monkeypatch):
    lrs, group = _lrs_and_groups(monkeypatch, torch.optim.SGD, optimizer="sgd", lr=0.05, momentum=0.8,
                                 weight_decay=1e-4)
    assert lrs == [0.05] * 4 and (group["momentum"], group["weight_decay"]) == (0.8, 1e-4)


def test_device_auto_is_the_gpu_when_torch_sees_one(monkeypatch):
    assert train.resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert train.resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert train.resolve_device("auto") == torch.device("cuda")


def test_a_checkpoint_continues_across_settings_of_how_a_run_is_carried_out_and_no_others():
    spec = RunSpec("s", "dbp", "resnet18", "imagenette", 0, data_options={"image_size": 64, "num_workers": 4})
    saved = dataclasses.asdict(spec)
    assert continues(saved, dataclasses.replace(spec, data_options={"image_size": 64, "num_workers": 0}))
    assert continues(saved, dataclasses.replace(spec, data_options={"image_size": 64}))  # the default, then
    assert continues(saved, dataclasses.replace(spec, train=TrainConfig(checkpoint_every=5)))
    assert not continues(saved, dataclasses.replace(spec, data_options={"image_size": 32, "num_workers": 4}))
    assert not continues(saved, dataclasses.replace(spec, train=TrainConfig(lr=0.1)))
    assert not continues(saved, dataclasses.replace(spec, dbp=DBPConfig(update_every=2)))
    assert not continues(saved, dataclasses.replace(spec, seed=1))


def test_precise_bn_changes_what_evals_measure_and_nothing_of_the_training(tmp_path):
    """Early at a high lr BatchNorm's running averages lag the weights: recomputed ones score the model as it is."""
    runs = {}
    for batches in (0, 5):
        spec = RunSpec("t", "dbp", "small-cnn", "digits", 0, TrainConfig(batch_size=64, eval_every=3, lr=1e-2,
                                                                         precise_bn=batches),
                       DBPConfig(lr=1e-3, kappa=0.5), Budget(max_steps=9))
        sink, ckpt = Records(), tmp_path / f"{batches}.pt"
        train_run(spec, sink, device=torch.device("cpu"), checkpoint=ckpt)
        runs[batches] = sink.evals, load_checkpoint(ckpt, torch.device("cpu"))["model"]
    (plain, plain_model), (precise, precise_model) = runs[0], runs[5]
    for a, b in zip(plain, precise, strict=True):
        for key in ("train_loss", "decor_loss", "decor_loss_by_layer", "flops"):
            assert a[key] == b[key], (a["step"], key)
    assert all(torch.equal(plain_model[k], v) for k, v in precise_model.items())  # running averages included
    assert [a["eval_accuracy"] for a in plain] != [b["eval_accuracy"] for b in precise]
    assert precise[0]["eval_accuracy"] > plain[0]["eval_accuracy"] + 0.1
