"""`decorbench run` as a user meets it: the smoke suite, bad input, interruption and resume, failing runs."""

import contextlib
import io
import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
import zipfile
from importlib import resources
from pathlib import Path

import pytest
import torch
from PIL import Image

from decorbench.checkpoint import save_checkpoint
from decorbench.cli import main
from decorbench.configs import builtin_names
from decorbench.data import load_data
from decorbench.meters import CarbonMeter
from decorbench.results import END_FIELDS, EVAL_FIELDS, PROVENANCE_FIELDS, RUN_FIELDS, load, read_run, run_path
from decorbench.settings import DBPConfig
from decorbench.suite import ConfigError, load_config, pending_runs, run_suite
from decorbench.train import train_run
from test_data import cifar_root  # noqa: F401 (a fixture)

ONE_PAIR = ["--set", "seeds=[0]", "--set", 'models=["mlp"]']


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The built-in smoke suite's results directory and what `decorbench run` printed, run once for this module."""
    out, printed = tmp_path_factory.mktemp("smoke"), io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["run", "smoke", "--out", str(out)]) == 0
    return out, printed.getvalue()


def test_smoke_suite_trains_every_run_to_90_percent_and_prints_the_comparison(smoke):
    results, printed = smoke
    finals = load(results).sort_values("step").groupby("run_id").last()
    assert len(finals) == 8 and set(finals["status"]) == {"completed"}
    assert set(finals["method"]) == {"bp", "dbp"} and set(finals["model"]) == {"small-cnn", "mlp"}
    assert (finals["eval_accuracy"] >= 0.9).all(), finals["eval_accuracy"]
    out = printed.splitlines()
    assert out[1].split() == ["dataset", "model", "method", "finished", "final_accuracy", "time_to_target_s",
                              "reached", "co2e_g", "target", "speedup_bp_over_dbp"]
    rows = [line.split() for line in out[2:]]
    assert {(r[1], r[2]) for r in rows} == {(m, k) for m in ("mlp", "small-cnn") for k in ("bp", "dbp")}
    assert {r[8] for r in rows} == {"0.900"} and all(r[3] == r[6] == "2/2" for r in rows)
    co2e_g = finals.groupby(["model", "method"])["co2_kg"].median() * 1000
    assert {(r[1], r[2]): r[7] for r in rows} == {k: f"{v:.3g}" for k, v in co2e_g.items()}


def test_a_run_writes_every_field_the_readme_documents(smoke):
    run = read_run(run_path(smoke[0], "smoke-digits-small-cnn-dbp-s0"))
    assert {*RUN_FIELDS, *PROVENANCE_FIELDS, "world_size", "carbon_intensity_g_per_kwh", "energy_unavailable_reason",
            "carbon_unavailable_reason", "carbon_method", "energy_gpu", "energy_counter_period_s",
            } <= set(run["run"])
    assert run["run"]["energy_counter_period_s"] is None  # no NVML counter on a CPU
    assert set(run["run"]["hyperparameters"]) == {"train", "dbp", "data"}
    assert set(run["run"]["hyperparameters"]["data"]) == {"root", "options"}
    assert run["run"]["energy_unavailable_reason"] and run["run"]["world_size"] == 1  # a CPU: no energy meter
    assert all(set(EVAL_FIELDS) <= set(e) for e in run["evals"])
    assert set(END_FIELDS) <= set(run["end"]) and {
        "steps", "train_time_s", "flops", "flops_per_step", "final_accuracy", "chance_accuracy", "data_wait_s",
        "energy_j", "co2_kg", "energy_unavailable_reason", "other_cpu_s", "other_cpu_span_s"} <= set(run["end"]["totals"])


def test_report_takes_the_target_it_is_given(smoke, tmp_path):
    page = tmp_path / "report.html"
    assert main(["report", str(smoke[0]), "--target", "0.5", "-o", str(page)]) == 0
    html = page.read_text()
    assert "Target accuracy: <b>50.00 %</b> for every group (given with --target)." in html, re.findall("Target accuracy.*", html)
    assert main(["report", str(smoke[0]), "-o", str(page)]) == 0
    assert "Target accuracy: <b>90.00 %</b> for every group (the runs&#39; budget.target_accuracy)" in \
        page.read_text()


def test_a_run_without_out_writes_a_new_timestamped_directory_under_results(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "smoke", *ONE_PAIR, "--set", "budget.max_steps=2"]) == 0
    (out,) = (tmp_path / "results").iterdir()
    assert re.fullmatch(r"smoke-\d{8}T\d{6}Z", out.name), out.name
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["smoke-digits-mlp-bp-s0.jsonl",
                                                                "smoke-digits-mlp-dbp-s0.jsonl"]


@pytest.mark.parametrize("argv, message", [
    (["run", "no-such-suite"], "no config file or built-in suite 'no-such-suite'"),
    (["run", "missing.toml"], "config file not found"),
    (["run", "smoke", "--set", "train.nope=1"], "unknown key train.nope"),
    (["run", "smoke", "--set", "train.batch_size=\"big\""], "train.batch_size must be int"),
    (["run", "smoke", "--set", "budget.max_epochs=-1"], "budget.max_epochs must be positive"),
    (["run", "smoke", "--set", "methods=[\"xp\"]"], "unknown method 'xp'"),
    (["run", "smoke", "--set", "models=[\"resnet9000\"]"], "unknown model 'resnet9000'"),
    (["run", "smoke", "--set", "dataset=mnist"], "unknown dataset 'mnist'"),
    (["run", "smoke", "--set", "oops"], "--set expects key=value"),
    (["run", "smoke", "--set", "train.optimizer=adamw"], "train.optimizer must be one of adam, sgd"),
    (["run", "smoke", "--set", "dbp.kappa=2"], "dbp.kappa in [0, 1]"),
    (["run", "smoke", "--set", "data.options.noise=1"], "unknown data.options key 'noise' for digits"),
    (["run", "smoke", "--set", "budget.max_epochs=0", "--set", "budget.max_train_seconds=9"], "must be positive"),
    (["run", "smoke", "--set", "budget={max_train_seconds=9}"], "'cosine' needs budget.max_epochs"),
    (["run", "smoke", "--set", "name=\"../elsewhere\""], "name '../elsewhere' must be letters, digits"),
    (["run", "smoke", "--set", "name=\"a/b\""], "name 'a/b' must be"),
    (["run", "smoke", "--set", "budget.max_train_seconds=nan"], "budget.max_train_seconds must be a finite number"),
    (["run", "smoke", "--set", "train.lr=inf"], "train.lr must be a finite number"),
    (["run", "smoke", "--set", "seeds=[0, -1]"], "seeds must be in 0 .. 2**32 - 1, got -1"),
    (["run", "smoke", "--set", "seeds=[0, 1, 0]"], "seeds lists 0 twice"),
    (["run", "smoke", "--set", "methods=[\"bp\", \"bp\"]"], "methods lists 'bp' twice"),
    (["run", "smoke", "--set", "dataset=synthetic", "--set", "data.options.num_classes=1"],
     "data.options.num_classes must be an integer ≥ 2, got 1"),
    (["run", "smoke", "--set", "dbp.only=[\"layer9.*\"]"], "dbp.only pattern 'layer9.*' matches no"),
    (["run", "smoke", "--set", "train.batch_size=5000"],
     "train.batch_size 5000 is larger than the digits training set (1347 images)"),
    (["run", "smoke", "--set", "dataset=synthetic", "--set", "data.options.train_size=32"],
     "train.batch_size 64 is larger than the synthetic training set (32 images)"),
    (["run", "smoke", "--set", "dbp.only=[]"], "dbp.skip/only leave no Linear or Conv2d layer to decorrelate"),
    (["run", "smoke", "--set", "dataset=synthetic", "--set", "data.options.image_size=1"],
     "model small-cnn cannot train on synthetic inputs of 3×1×1 in batches of 64 (Given input size: (64x1x1)."),
    (["run", "smoke", "--set", "models=[\"resnet18\"]", "--set", "train.batch_size=1"],
     "model resnet18 cannot train on digits inputs of 1×8×8 in batches of 1 (Expected more than 1 value per"),
    (["run", "smoke", "--set", "carbon.country_iso_code=XYZ"],
     "codecarbon has no carbon intensity for country_iso_code 'XYZ'"),
    (["run", "smoke", "--set", "budget={max_energy_j=100}", "--set", "train.schedule=constant"],
     "energy is measured on NVIDIA GPUs only, not on cpu"),
    (["run", "smoke", "--device", "cuda"], "no CUDA GPU"),
    (["run", "smoke", "--device", "bogus"], "unknown device 'bogus': use auto, cpu, cuda or cuda:N"),
    (["run", "smoke", "--device", "meta"], "unknown device 'meta'"),
    (["run", "smoke", "--device", "cpu:5"], "unknown device 'cpu:5'"),
    (["run", "smoke", "--set", "dataset=synthetic", "--set", "data.options.image_size=100000"],
     "synthetic data of 2570 images of 3×100000² values needs"),
    (["run", "smoke", "--set", "data.options.image_size=100000"],
     "digits data of 1797 images of 1×100000² values needs"),
    (["run", "smoke", "--set", "dataset=cifar10", "--set", "data.root=\"no-data\""],
     "cifar10 not found: expected no-data/cifar-10-batches-py/"),
    (["run", "smoke", "--set", "dataset=imagenette", "--set", 'models=["small-cnn"]'],
     "imagenette not found: expected"),
    (["run", "smoke", "--bogus"], "unrecognized arguments: --bogus (see: decorbench run --help)"),
    (["run", "smoke", "--set", "dataset=synthetic", "--set", "data.options.image_size=224"],
     "model mlp with DBP on synthetic inputs of 3×224×224 holds 84.6 GiB of weights and decorrelation matrices"),
    (["run", "smoke", "--set", "dataset=imagenette", "--set", "data.options.image_size=40000"],  # d² overflows
     "model mlp with DBP on imagenette inputs of 3×40000×40000 needs a decorrelation matrix too large to build"),
    (["run", "smoke", "--set", "train.l\nr=1"], "unknown key 'train.l\\nr'"),
    (["run", "smoke", "--set", f"name=\"{'a' * 240}\""], "characters too long: a run's file name would exceed 255"),
    (["run", "."], ". is a directory, not a config file"),
    (["run", "smoke", "--set", "sweep.train.lr=1e-3"], "sweep.train.lr must be a list of at least one value, got 0.001"),
    (["run", "smoke", "--set", "sweep.train.lr=[]"], "sweep.train.lr must be a list of at least one value"),
    (["run", "smoke", "--set", "sweep.train.lr=[1e-3, 0.001]"], "sweep.train.lr lists 0.001 twice"),
    (["run", "smoke", "--set", "sweep.train.lr=[1e-3, \"fast\"]"], "sweep.train.lr[1] must be float, got 'fast'"),
    (["run", "smoke", "--set", "sweep.train.lr=[1e-3, -1]"], "sweep: train.lr must be positive and finite, got -1.0"),
    (["run", "smoke", "--set", "sweep.train.rate=[1]"], "unknown key sweep.train.rate; valid keys: batch_size,"),
    (["run", "smoke", "--set", "sweep.budget.max_epochs=[1, 2]"], "sweep.budget: only train.* and dbp.* settings"),
    (["run", "smoke", "--set", "sweep.dbp.skip=[[\"fc\"]]"], "sweep.dbp.skip cannot be swept"),
    (["run", "smoke", "--set", "sweep.train.checkpoint_every=[1, 2]"], "sweep.train.checkpoint_every cannot be swept"),
    (["run", "smoke", "--set", "train.precise_bn=-1"], "train.precise_bn must not be negative"),
    (["run", "smoke", "--set", "sweep.train=[1]"], "sweep.train must be a table of settings"),
    (["run", "smoke", "--set", "sweep=1"], "sweep must be a table, got 1"),
    (["run", "smoke", "--set", "sweep.train.batch_size=[64, 5000]"],
     "sweep train.batch_size=5000: train.batch_size 5000 is larger than the digits training set (1347 images)"),
    (["run", "smoke", "--set", "per_method.sgd.train.lr=1"], "per_method.sgd: unknown method; choose from: bp, dbp"),
    (["run", "smoke", "--set", "per_method.bp.dbp.lr=1"], "per_method.bp must hold a table train"),
    (["run", "smoke", "--set", "per_method.bp.train.rate=1"], "unknown key per_method.bp.train.rate; valid keys:"),
    (["run", "smoke", "--set", "per_method.dbp.train.lr=-1"], "per_method.dbp: train.lr must be positive"),
    (["run", "smoke", "--set", "per_method.bp.train.batch_size=5000"],
     "per_method.bp: train.batch_size 5000 is larger than the digits training set"),
    (["run", "smoke", "--set", "per_method.bp.train.lr=1e-2", "--set", "sweep.train.lr=[1e-3]"],
     "per_method.bp.train.lr: train.lr is swept, so it cannot also be set per method"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([*argv, "--out", "out"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("decorbench: error:") and message in err[0]
    assert not (tmp_path / "out").exists()


def test_a_damaged_cifar_download_is_exit_2_before_any_run(cifar_root, tmp_path, capsys):
    batch = cifar_root / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(batch.read_bytes()[:100])  # a download cut short
    out = tmp_path / "out"
    assert main(["run", "smoke", "--out", str(out), "--set", "dataset=cifar10", "--set", f'data.root="{cifar_root}"',
                 *ONE_PAIR]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{batch}: not a cifar10 python-version batch file" in err[0], err
    assert not out.exists()


def test_a_cifar_copy_smaller_than_a_batch_is_exit_2_before_any_run(cifar_root, tmp_path, capsys):
    out = tmp_path / "out"  # the fixture's CIFAR-10 holds 10 training images, the real one 50,000
    assert main(["run", "smoke", "--out", str(out), "--set", "dataset=cifar10", "--set", f'data.root="{cifar_root}"',
                 "--set", "train.batch_size=16", *ONE_PAIR]) == 2
    assert capsys.readouterr().err.strip() == (
        f"decorbench: error: cifar10: {cifar_root / 'cifar-10-batches-py'} holds 10 training images, fewer than "
        "train.batch_size 16: no full batch to train on")
    assert not out.exists()


def test_a_builtin_name_wins_over_a_directory_of_that_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "smoke").mkdir()  # e.g. an earlier --out smoke
    assert main(["run", "smoke", "--out", "out", "--set", "budget.max_epochs=1", *ONE_PAIR]) == 0


def test_resume_needs_the_directory_to_continue(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "smoke", "--resume"]) == 2
    assert "--resume needs --out" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_an_empty_out_is_bad_input(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "smoke", "--out", ""]) == 2
    assert "--out is empty" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_config_file_must_be_utf8_and_may_start_with_a_byte_order_mark(tmp_path, capsys):
    config = tmp_path / "suite.toml"
    config.write_bytes("\ufeffname = 'ok'\n".encode() + (resources.files("decorbench.configs") / "smoke.toml")
                       .read_bytes().replace(b'name = "smoke"', b""))
    assert load_config(str(config)).name == "ok"
    config.write_bytes(b"name = '\xff'\n")
    assert main(["run", str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{config}: cannot read it as UTF-8 text" in err and not (tmp_path / "out").exists()


def test_an_out_that_cannot_hold_results_is_bad_input(tmp_path, capsys):
    (tmp_path / "file").write_text("keep me")
    (tmp_path / "blocked" / "runs").mkdir(parents=True)
    (tmp_path / "blocked" / "checkpoints").write_text("keep me too")  # where the checkpoints would go
    for out, folder in ((tmp_path / "file", "runs"), (tmp_path / "file" / "below", "runs"),
                        (tmp_path / "blocked", "checkpoints")):
        assert main(["run", "smoke", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"--out {out}: cannot write {folder} there" in err[0], err
    assert (tmp_path / "file").read_text() == "keep me"
    assert (tmp_path / "blocked" / "checkpoints").read_text() == "keep me too"


@pytest.mark.parametrize("argv, message", [
    (["report", "x", "--target", "abc"], "argument --target: invalid float value: 'abc'"),
    (["report", ".", "-o", ""], "-o is empty: name the .html file to write"),
    (["run"], "the following arguments are required: config (see: decorbench run --help)"),
])
def test_usage_errors_are_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"decorbench: error: {message}"), err


def test_report_bad_output_exits_2_with_one_line(tmp_path, capsys):
    args = ["run", "smoke", "--out", str(tmp_path), "--set", "budget.max_epochs=1", *ONE_PAIR]
    assert main(args) == 0
    results = run_path(tmp_path, "smoke-digits-mlp-bp-s0")
    before = results.read_bytes()
    capsys.readouterr()
    assert main(["report", str(tmp_path), "-o", str(results)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the report goes to an .html file" in err[0], err
    assert results.read_bytes() == before
    assert main(["report", str(tmp_path)]) == 0 and (tmp_path / "report.html").is_file()
    capsys.readouterr()
    assert main(["report", str(tmp_path), str(tmp_path / "typo")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"decorbench: error: no such results file or directory: {tmp_path / 'typo'}"]


def test_garbled_config_file_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \"x\"\nmethods = [\"bp\"\n")
    assert main(["run", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "not valid TOML" in capsys.readouterr().err


def test_existing_results_are_never_overwritten_without_resume(tmp_path, capsys):
    args = ["run", "smoke", "--out", str(tmp_path), "--set", "budget.max_epochs=1", *ONE_PAIR]
    assert main(args) == 0
    before = run_path(tmp_path, "smoke-digits-mlp-bp-s0").read_bytes()
    assert main(args) == 2
    assert "--resume" in capsys.readouterr().err
    assert run_path(tmp_path, "smoke-digits-mlp-bp-s0").read_bytes() == before
    assert main([*args, "--resume"]) == 0  # everything finished: nothing to redo
    assert run_path(tmp_path, "smoke-digits-mlp-bp-s0").read_bytes() == before


def _image_folder(root, train_per_class: int) -> None:
    for cls in ("cat", "dog"):
        for split, n in (("train", train_per_class), ("val", 1)):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (10, 10), "red" if cls == "cat" else "blue").save(root / split / cls / f"{i}.png")


def _folder_argv(tmp_path, batch_size: int) -> list[str]:
    return ["run", "smoke", "--out", str(tmp_path / "out"), "--set", "dataset=imagenette", "--set",
            f"data.root={str(tmp_path / 'data')!r}", "--set", "data.options={image_size=8, num_workers=0}",
            "--set", f"train.batch_size={batch_size}", *ONE_PAIR]


def test_a_failing_run_is_recorded_and_the_suite_goes_on(tmp_path, capsys):
    _image_folder(tmp_path / "data", train_per_class=2)
    (tmp_path / "data" / "train" / "dog" / "1.png").write_bytes(b"not a png")  # found only when it is decoded
    assert main(_folder_argv(tmp_path, batch_size=4)) == 1
    ends = [read_run(run_path(tmp_path / "out", f"smoke-imagenette-mlp-{m}-s0"))["end"] for m in ("bp", "dbp")]
    assert [e["status"] for e in ends] == ["failed", "failed"]
    assert all(e["reason"].startswith("UnidentifiedImageError: cannot identify image file") for e in ends)
    failed = run_path(tmp_path / "out", "smoke-imagenette-mlp-bp-s0").read_bytes()
    Image.new("RGB", (8, 8)).save(tmp_path / "data" / "train" / "dog" / "1.png")
    assert main([*_folder_argv(tmp_path, batch_size=4), "--resume"]) == 0
    path = run_path(tmp_path / "out", "smoke-imagenette-mlp-bp-s0")
    (aside,) = path.parent.glob(f"{path.name}.replaced-*")  # why it failed, not lost when it is redone
    assert aside.read_bytes() == failed and read_run(path)["end"]["status"] == "completed"


def test_a_run_whose_results_file_cannot_be_written_is_failed_and_the_suite_goes_on(tmp_path, capsys):
    config = load_config("smoke", [*ONE_PAIR[1::2], "budget.max_steps=2"])
    run_path(tmp_path, "smoke-digits-mlp-bp-s0").mkdir(parents=True)  # e.g. a full disk: open() fails
    ends = run_suite(config, tmp_path, torch.device("cpu"), config.runs())
    assert [e["status"] for e in ends] == ["failed", "completed"]
    assert ends[0]["reason"].startswith("cannot write its results: [Errno 21] Is a directory")
    assert "smoke-digits-mlp-bp-s0: cannot write its results" in capsys.readouterr().err


def test_a_cpu_run_asks_codecarbon_to_count_no_gpu(tmp_path, monkeypatch):
    """Else, on a GPU machine, codecarbon counts every GPU NVML lists in a CPU run's CO2e (CUDA_VISIBLE_DEVICES=""
    does not stop it)."""
    from decorbench import suite

    asked = []
    monkeypatch.setattr(suite, "CarbonMeter", lambda country, **kw: asked.append(kw) or CarbonMeter(country, **kw))
    config = load_config("smoke", [*ONE_PAIR[1::2], "budget.max_steps=2"])
    run_suite(config, tmp_path, torch.device("cpu"), config.runs())
    assert [kw["gpu_ids"] for kw in asked] == [[], []]


def test_a_suite_whose_results_files_cannot_be_written_fails_each_run_in_one_line(tmp_path, capsys, monkeypatch):
    from decorbench import suite

    def disk_full(path, *args, **kwargs):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(suite, "RunWriter", disk_full)
    assert main(["run", "smoke", *ONE_PAIR, "--set", "budget.max_steps=2", "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.count(": cannot write its results: [Errno 28] No space left on device") == 2 and "Traceback" not in err


def test_a_results_directory_that_cannot_be_locked_is_used_unlocked_with_a_warning(tmp_path, monkeypatch, capsys):
    import errno
    import fcntl

    def no_locks(f, how):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    assert main(["run", "smoke", *ONE_PAIR, "--set", "budget.max_steps=2", "--out", str(tmp_path / "out")]) == 0
    assert "cannot be locked (No locks available): run one decorbench at a time on it" in capsys.readouterr().err


def test_a_checkpoint_that_fails_to_save_leaves_no_partial_file(tmp_path, monkeypatch):
    def disk_full(state, f):
        f.write(b"part of a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(tmp_path / "run.pt", {"step": 1})
    assert list(tmp_path.iterdir()) == []


def test_a_results_directory_another_run_is_writing_is_refused(tmp_path, capsys):
    import fcntl

    out, argv = tmp_path / "out", ["run", "smoke", *ONE_PAIR, "--set", "budget.max_steps=2"]
    out.mkdir()
    with open(out / ".lock", "w") as held:
        held.write("4242 on elsewhere\n")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main([*argv, "--out", str(out)]) == 2
        assert capsys.readouterr().err.strip() == (f"decorbench: error: --out {out} is in use by another decorbench "
                                                   "run (process 4242 on elsewhere); let it end, or choose another "
                                                   "--out")
        assert not list(out.glob("runs/*"))
    assert main([*argv, "--out", str(out)]) == 0  # released


def test_an_image_folder_smaller_than_a_batch_exits_2_before_any_run(tmp_path, capsys):
    _image_folder(tmp_path / "data", train_per_class=2)
    assert main(_folder_argv(tmp_path, batch_size=8)) == 2
    assert capsys.readouterr().err.strip() == (f"decorbench: error: imagenette: {tmp_path / 'data'}/train holds 4 "
                                               "images, fewer than train.batch_size 8: no full batch to train on")
    assert not (tmp_path / "out").exists()
    assert main(_folder_argv(tmp_path, batch_size=4)) == 0


def test_resume_refuses_results_of_other_settings_and_keeps_them(tmp_path, capsys):
    args = ["run", "smoke", "--out", str(tmp_path), "--set", "budget.max_epochs=1", *ONE_PAIR]
    assert main(args) == 0
    before = run_path(tmp_path, "smoke-digits-mlp-bp-s0").read_bytes()
    capsys.readouterr()
    assert main([*args, "--set", "budget.max_epochs=2", "--set", "dbp.lr=0.01", "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "was run with other settings (budget.max_epochs: 1 -> 2)" in err[0], err
    assert "choose another --out" in err[0]
    assert main([*args, "--set", "carbon.country_iso_code=DEU", "--resume"]) == 2  # co2_kg would mix two grids
    assert 'country_iso_code: "NLD" -> "DEU"' in capsys.readouterr().err
    assert main([*args, "--set", "carbon.country_iso_code=nld", "--resume"]) == 0  # the same grid, spelt otherwise
    assert run_path(tmp_path, "smoke-digits-mlp-bp-s0").read_bytes() == before


def test_resume_takes_a_data_option_given_at_its_default_as_the_same_setting(tmp_path):
    tiny = [*ONE_PAIR[1::2], 'methods=["bp"]', "dataset=synthetic", "budget.max_steps=2",
            "data.options.train_size=64", "data.options.test_size=32"]
    config = load_config("smoke", tiny)
    run_suite(config, tmp_path, torch.device("cpu"), pending_runs(config, tmp_path, resume=False))
    path = run_path(tmp_path, "smoke-synthetic-mlp-bp-s0")
    stored = read_run(path)["run"]["hyperparameters"]["data"]["options"]
    assert stored["data_seed"] == 0 and stored["train_size"] == 64  # the record says what was used
    assert pending_runs(load_config("smoke", [*tiny, "data.options.data_seed=0"]), tmp_path, resume=True) == []
    with pytest.raises(ConfigError, match=r"data\.options\.data_seed: 0 -> 1"):
        pending_runs(load_config("smoke", [*tiny, "data.options.data_seed=1"]), tmp_path, resume=True)

    assert pending_runs(load_config("smoke", [*tiny, "train.checkpoint_every=3"]), tmp_path,
                        resume=True) == []  # how a run is carried out, not what it is

    lines = path.read_text().splitlines()  # as an older decorbench wrote it: options as given, no newer settings
    run = json.loads(lines[0])
    run["hyperparameters"]["data"]["options"] = {"train_size": 64, "test_size": 32}
    del run["hyperparameters"]["train"]["batchnorm"], run["budget"]["stop_at_target"]
    run["country_iso_code"] = "nld"  # before country codes were upper-cased
    path.write_text("\n".join([json.dumps(run), *lines[1:]]) + "\n")
    assert pending_runs(config, tmp_path, resume=True) == []
    assert json.loads(path.read_text().splitlines()[0]) == run  # compared, never changed


def test_a_suite_scored_on_a_validation_set_says_so_in_its_records_and_report(tmp_path, capsys):
    args = [*ONE_PAIR, "--set", "budget.max_steps=3", "--set", "data.options.validation=0.2"]
    assert main(["run", "smoke", "--out", str(tmp_path), *args]) == 0
    assert "these accuracies are on a validation set, 20% of the training set held out" in capsys.readouterr().err
    held_out = load_data("digits", batch_size=8, seed=0, options={"validation": 0.2})
    test_set = load_data("digits", batch_size=8, seed=0)
    assert held_out.chance_accuracy != test_set.chance_accuracy
    for method in ("bp", "dbp"):
        records = read_run(run_path(tmp_path, f"smoke-digits-mlp-{method}-s0"))
        assert records["run"]["hyperparameters"]["data"]["options"] == {"image_size": 8, "validation": 0.2}
        assert records["end"]["totals"]["chance_accuracy"] == held_out.chance_accuracy  # the scored set's
    assert main(["report", str(tmp_path), "-o", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "2 of 2 runs score a validation set, not the test set: 20% of their training set held out" in page
    assert "accuracy on a validation set held out of the training set, not on the test set" in page
    capsys.readouterr()
    assert main(["run", "smoke", "--out", str(tmp_path / "all"), *args[:-1], "data.options.validation=0.999"]) == 2
    left = "larger than the digits training set (1 images left after data.options.validation)"
    assert left in capsys.readouterr().err


def test_the_report_says_which_runs_scored_batchnorm_through_its_running_averages(tmp_path):
    tiny = [*ONE_PAIR[:2], "--set", 'methods=["bp"]', "--set", "budget.max_steps=2"]
    for model, precise in (("small-cnn", 0), ("small-cnn", 2), ("mlp", 0)):
        out = tmp_path / f"{model}-{precise}"
        assert main(["run", "smoke", "--out", str(out), *tiny, "--set", f'models=["{model}"]',
                     "--set", f"train.precise_bn={precise}"]) == 0
        layers = read_run(run_path(out, f"smoke-digits-{model}-bp-s0"))["end"]["totals"]["batchnorm_layers"]
        assert (layers > 0) == (model == "small-cnn")
    note = "1 of 3 runs scored models with BatchNorm through its running averages (train.precise_bn = 0"
    assert main(["report", *(str(d) for d in sorted(tmp_path.iterdir())), "-o", str(tmp_path / "r.html")]) == 0
    assert note in " ".join((tmp_path / "r.html").read_text().split())


def test_each_compiled_run_of_a_suite_compiles_its_own_step(tmp_path, monkeypatch):
    """A later run reusing an earlier one's compiled graph would not pay for compilation in its train_time_s."""
    from torch._dynamo.utils import counters

    config = load_config("smoke", ['models=["mlp"]', 'methods=["bp"]', "seeds=[0, 1]", "budget.max_steps=1",
                                   "train.compile=true"])
    compiled = []
    counters.clear()
    monkeypatch.setattr("decorbench.suite.train_run",
                        lambda *a, **k: (train_run(*a, **k), compiled.append(counters["stats"]["unique_graphs"]))[0])
    run_suite(config, tmp_path, torch.device("cpu"), pending_runs(config, tmp_path, resume=False))
    assert len(compiled) == 2 and compiled[1] > compiled[0] > 0


def test_compilers_start_up_in_a_process_is_paid_before_the_first_compiled_run(tmp_path, monkeypatch):
    """torch.compile's one-time start-up (≈ 10 s on a 2-core CPU) would land in the first compiled run's train_time_s
    alone: a throwaway compile before it takes that, and the run still compiles its own step afresh."""
    from torch._dynamo.utils import counters

    config = load_config("smoke", ['models=["mlp"]', 'methods=["bp"]', "seeds=[0]", "budget.max_steps=1",
                                   "train.compile=true"])
    counters.clear()
    compiled_before = []
    monkeypatch.setattr("decorbench.suite.train_run",
                        lambda *a, **k: (compiled_before.append(counters["stats"]["unique_graphs"]), train_run(*a, **k),
                                         compiled_before.append(counters["stats"]["unique_graphs"]))[1])
    run_suite(config, tmp_path, torch.device("cpu"), pending_runs(config, tmp_path, resume=False))
    assert compiled_before[0] > 0 and compiled_before[1] > compiled_before[0]


def _interrupted_bp_run(out, *sets):
    """The smoke suite's mlp pair, stopped after the BP run's second eval record (its checkpoint kept)."""
    config = load_config("smoke", [*ONE_PAIR[1::2], "budget.max_epochs=3", "train.eval_every=5", *sets])
    path = run_path(out, "smoke-digits-mlp-bp-s0")
    ends = run_suite(config, out, torch.device("cpu"), pending_runs(config, out, resume=False),
                     should_stop=lambda: path.exists() and len(read_run(path)["evals"]) >= 2)
    assert [e["status"] for e in ends] == ["interrupted"]
    return path, ["run", "smoke", "--out", str(out), *ONE_PAIR, "--set", "budget.max_epochs=3",
                  "--set", "train.eval_every=5", "--resume"]


def _steps(path):
    return [r["step"] for r in read_run(path)["evals"]]


def test_resume_continues_a_bp_run_whatever_the_dbp_settings_now(tmp_path):
    path, resume = _interrupted_bp_run(tmp_path, "dbp.lr=0.001")
    assert _steps(path) == [5, 10]  # stopped at step 11, without a record off the schedule
    assert main([*resume, "--set", "dbp.lr=0.01"]) == 0  # DBP's settings are not a BP run's
    steps = _steps(path)
    assert steps == list(range(5, 3 * (1347 // 64), 5)) + [3 * (1347 // 64)]


def test_a_record_a_kill_left_past_the_checkpoint_is_written_again_once(tmp_path, capsys):
    path, resume = _interrupted_bp_run(tmp_path)  # checkpointed at step 11
    ghost = {**read_run(path)["evals"][-1], "type": "eval", "step": 15, "eval_accuracy": 0.0}
    with open(path, "a") as f:  # as if the run, resumed once, was killed between record 15 and its checkpoint
        f.write(json.dumps(ghost) + "\n")
    assert main(resume) == 0
    assert "dropped 1 eval record(s) past step 11" in capsys.readouterr().err
    evals = read_run(path)["evals"]
    assert [r["step"] for r in evals][:3] == [5, 10, 15] and evals[2]["eval_accuracy"] > 0


def test_a_checkpoint_of_an_older_format_starts_its_run_again_with_a_warning(tmp_path, capsys):
    path, resume = _interrupted_bp_run(tmp_path)
    checkpoint = tmp_path / "checkpoints" / "smoke-digits-mlp-bp-s0.pt"
    saved = torch.load(checkpoint, weights_only=False)
    del saved["running_stats"]  # as written before each rank's BatchNorm statistics were kept
    torch.save(saved, checkpoint)
    assert main(resume) == 0
    assert "by an older decorbench; smoke-digits-mlp-bp-s0 starts again" in capsys.readouterr().err
    assert _steps(path) == list(range(5, 3 * (1347 // 64), 5)) + [3 * (1347 // 64)]


def test_resume_deletes_a_checkpoint_a_kill_left_beside_a_finished_run(tmp_path):
    args = ["run", "smoke", "--out", str(tmp_path), "--set", "budget.max_steps=5", *ONE_PAIR]
    assert main(args) == 0
    stale = tmp_path / "checkpoints" / "smoke-digits-mlp-bp-s0.pt"
    stale.parent.mkdir()
    stale.write_bytes(b"killed between the end record and this file's deletion")
    assert main([*args, "--resume"]) == 0
    assert not stale.parent.exists()


def test_an_unreadable_checkpoint_starts_the_run_again_in_a_fresh_file(tmp_path, capsys):
    path, resume = _interrupted_bp_run(tmp_path)
    (tmp_path / "checkpoints" / "smoke-digits-mlp-bp-s0.pt").write_bytes(b"half a checkpoint")
    before = path.read_bytes()
    assert main(resume) == 0
    err = capsys.readouterr().err
    assert "cannot be read" in err and "the run starts again; its earlier records are kept in " in err
    records = read_run(path)
    steps = [r["step"] for r in records["evals"]]
    assert steps[0] == 5 and steps == sorted(set(steps)) and records["end"]["status"] == "completed"
    (aside,) = path.parent.glob(f"{path.name}.replaced-*")  # what the first attempt measured, not lost
    assert aside.read_bytes() == before and not load(tmp_path)["source"].str.contains("replaced").any()  # not results


def test_a_checkpoint_damaged_on_disk_is_not_resumed_from(tmp_path, capsys):
    """torch.load reads a checkpoint with a flipped bit in a tensor without a word: the run would go on from wrong
    weights. The zip archive's CRCs tell."""
    path, resume = _interrupted_bp_run(tmp_path)
    checkpoint = tmp_path / "checkpoints" / "smoke-digits-mlp-bp-s0.pt"
    with zipfile.ZipFile(checkpoint) as archive:
        largest = max(archive.infolist(), key=lambda member: member.file_size)
    data = bytearray(checkpoint.read_bytes())
    name_length, extra_length = struct.unpack("<HH", data[largest.header_offset + 26:largest.header_offset + 30])
    data[largest.header_offset + 30 + name_length + extra_length + largest.file_size // 2] ^= 0x01
    checkpoint.write_bytes(data)
    assert main(resume) == 0
    err = capsys.readouterr().err
    assert f"{checkpoint}: cannot be read (damaged: {largest.filename} fails its CRC check)" in err, err
    steps = [r["step"] for r in read_run(path)["evals"]]
    assert steps[0] == 5 and steps == sorted(set(steps))  # started again, from the first eval


@pytest.mark.parametrize("content", ["not results\n", "my precious notes", "dir"])
def test_resume_refuses_to_replace_what_is_not_the_runs_results_file(content, tmp_path, capsys):
    path = run_path(tmp_path, "smoke-digits-mlp-bp-s0")
    path.parent.mkdir(parents=True)
    path.mkdir() if content == "dir" else path.write_text(content)
    assert main(["run", "smoke", "--out", str(tmp_path), *ONE_PAIR, "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0], err
    assert path.is_dir() if content == "dir" else path.read_text() == content


def test_resume_redoes_a_run_whose_file_a_crash_cut_in_its_run_record_or_whose_end_lacks_a_status(tmp_path):
    args = ["run", "smoke", "--out", str(tmp_path), "--set", "budget.max_steps=5", *ONE_PAIR]
    assert main(args) == 0
    cut, odd = run_path(tmp_path, "smoke-digits-mlp-bp-s0"), run_path(tmp_path, "smoke-digits-mlp-dbp-s0")
    cut.write_bytes(cut.read_bytes()[:40])
    odd.write_text("".join(odd.read_text().splitlines(keepends=True)[:-1]) + '{"type": "end"}\n')
    assert main([*args, "--resume"]) == 0
    assert read_run(cut)["end"]["status"] == read_run(odd)["end"]["status"] == "completed"


def _signalled_run(out, signum) -> tuple[list[str], int]:
    """`decorbench run` stopped by `signum` once its first run wrote two evals: its command, the step it stopped
    at."""
    cmd = [sys.executable, "-m", "decorbench", "run", "smoke", "--out", str(out), *ONE_PAIR,
           "--set", "budget.max_epochs=40", "--set", "train.eval_every=5"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = run_path(out, "smoke-digits-mlp-bp-s0")
    deadline = time.monotonic() + 60
    while not (first.exists() and len(read_run(first)["evals"]) >= 2) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "--resume" in err.strip().splitlines()[-1] or "--resume" in err
    interrupted = read_run(first)
    assert interrupted["end"]["status"] == "interrupted"
    stopped_at = interrupted["evals"][-1]["step"]
    assert stopped_at < 840 and not run_path(out, "smoke-digits-mlp-dbp-s0").exists()
    return cmd, stopped_at


def test_sigterm_stops_a_suite_as_ctrl_c_does_and_leaves_a_checkpoint(tmp_path):
    _signalled_run(tmp_path, signal.SIGTERM)
    assert (tmp_path / "checkpoints" / "smoke-digits-mlp-bp-s0.pt").exists()


def test_resume_continues_a_suite_stopped_by_ctrl_c_from_the_checkpoint(tmp_path):
    out, first = tmp_path, run_path(tmp_path, "smoke-digits-mlp-bp-s0")
    cmd, stopped_at = _signalled_run(out, signal.SIGINT)
    done = subprocess.run([*cmd, "--resume"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    resumed = read_run(first)
    steps = [r["step"] for r in resumed["evals"]]
    assert steps == sorted(set(steps)) and steps[-1] == 840 and stopped_at in steps  # continued, not restarted
    assert resumed["end"]["status"] == "completed"
    assert read_run(run_path(out, "smoke-digits-mlp-dbp-s0"))["end"]["status"] == "completed"
    assert not (out / "checkpoints" / "smoke-digits-mlp-bp-s0.pt").exists()


@pytest.mark.parametrize("signals, training", [([signal.SIGINT], False), ([signal.SIGTERM], False),
                                               ([signal.SIGINT, signal.SIGINT], False),
                                               ([signal.SIGINT, signal.SIGINT], True)])
def test_any_interruption_at_any_moment_exits_130_without_a_traceback(signals, training, tmp_path):
    # not training: while Python still imports (before the suite's handler); twice: the second aborts at once
    proc = subprocess.Popen([sys.executable, "-m", "decorbench", "run", "smoke", "--out", str(tmp_path / "out")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = run_path(tmp_path / "out", "smoke-digits-small-cnn-bp-s0")
    deadline = time.monotonic() + 60
    while training and not (first.exists() and read_run(first)["evals"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    for signum in signals:
        time.sleep(0.01 if training else 0.5)  # signals sent at once would merge into one
        proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    for path in (tmp_path / "out" / "runs").glob("*.jsonl"):
        records = read_run(path)  # a second SIGINT may leave the current run without its end, never without evals
        assert (records["end"] or {}).get("status", "interrupted") == "interrupted"
        assert records["evals"] or not training


def test_a_signal_with_output_to_a_reader_that_is_gone_still_stops_the_run_as_interrupted(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "decorbench", "run", "smoke", "--out", str(out), *ONE_PAIR,
                             "--set", "budget.max_epochs=40"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = run_path(out, "smoke-digits-mlp-bp-s0")
    deadline = time.monotonic() + 60
    while not (first.exists() and read_run(first)["evals"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.stdout.close()  # as `decorbench run ... 2>&1 | head` after head has quit
    proc.stderr.close()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    assert read_run(first)["end"]["status"] == "interrupted"


def test_ctrl_c_from_a_terminal_stops_a_run_with_loader_workers_once(tmp_path):
    """A terminal sends SIGINT to the whole process group, the forked DataLoader workers included."""
    _image_folder(tmp_path / "data", train_per_class=8)
    argv = _folder_argv(tmp_path, batch_size=4)
    argv[argv.index("data.options={image_size=8, num_workers=0}")] = "data.options={image_size=8, num_workers=1}"
    proc = subprocess.Popen([sys.executable, "-m", "decorbench", *argv, "--set", "budget.max_epochs=40",
                             "--set", "train.eval_every=5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    first = run_path(tmp_path / "out", "smoke-imagenette-mlp-bp-s0")
    deadline = time.monotonic() + 60
    while not (first.exists() and read_run(first)["evals"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert err.count("SIGINT: saving a checkpoint") == 1
    assert read_run(first)["end"]["status"] == "interrupted"


def test_the_printed_resume_command_keeps_the_device(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "decorbench", "run", "smoke", "--out", str(out), "--device", "cpu", *ONE_PAIR,
           "--set", "budget.max_epochs=40"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = run_path(out, "smoke-digits-mlp-bp-s0")
    deadline = time.monotonic() + 60
    while not (first.exists() and read_run(first)["evals"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    hint = err.split("continue with: ")[1].splitlines()[0]
    assert f"decorbench run smoke --out {out} --device cpu " in hint and hint.endswith(" --resume")


def test_ctrl_c_in_env_exits_130_even_when_a_library_swallows_it(monkeypatch, capsys):
    def describe_swallowing_ctrl_c(country_iso_code):
        try:  # as numpy's import inside torch's can: the KeyboardInterrupt never reaches decorbench
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            pass
        return "environment"

    monkeypatch.setattr("decorbench.env.describe_environment", describe_swallowing_ctrl_c)
    assert main(["env"]) == 130
    assert "aborted" in capsys.readouterr().err


def test_env_reports_every_meter_and_exits_0(capsys):
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    for meter in ("time", "flops", "memory", "energy: NVML counter", "energy: NVML power", "carbon: codecarbon"):
        assert f"  {meter}" in out


def test_env_gives_the_grid_intensity_of_the_country_it_is_given(capsys):
    assert main(["env", "--country", "deu"]) == 0
    assert "× Germany (DEU) " in capsys.readouterr().out  # on the codecarbon meter's line


def test_env_refuses_a_country_codecarbon_does_not_know(capsys):
    assert main(["env", "--country", "XYZ"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["decorbench: error: --country: codecarbon has no carbon intensity for country_iso_code 'XYZ' "
                   "(ISO 3166-1 alpha-3, e.g. NLD, DEU, USA)"]


def test_run_help_names_every_builtin_suite(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping inside a hyphenated name
    with pytest.raises(SystemExit) as exit:
        main(["run", "--help"])
    listed = capsys.readouterr().out
    assert exit.value.code == 0 and all(name in listed for name in builtin_names())


@pytest.mark.parametrize("name", builtin_names())
def test_every_builtin_suite_loads_and_pairs_bp_with_dbp(name):
    config = load_config(name)
    specs = config.runs()
    assert config.name == name and {s.method for s in specs} == {"bp", "dbp"}
    assert len(specs) == len(config.models) * len(config.seeds) * 2


def test_a_suite_runs_seeds_in_turn_with_the_methods_order_alternating_over_seeds_and_models():
    order = [(s.seed, s.model, s.method) for s in load_config("smoke", ["seeds=[0, 1, 2]"]).runs()]
    assert order == [(0, "small-cnn", "bp"), (0, "small-cnn", "dbp"), (0, "mlp", "dbp"), (0, "mlp", "bp"),
                     (1, "small-cnn", "dbp"), (1, "small-cnn", "bp"), (1, "mlp", "bp"), (1, "mlp", "dbp"),
                     (2, "small-cnn", "bp"), (2, "small-cnn", "dbp"), (2, "mlp", "dbp"), (2, "mlp", "bp")]
    # split into one job a seed, as the README suggests for short GPU leases, each model still alternates
    first = [load_config("smoke", [f"seeds=[{seed}]"]).runs()[0].method for seed in (0, 1)]
    assert first == ["bp", "dbp"]


def test_a_sweep_runs_every_combination_once_and_bp_once_per_dbp_only_setting():
    config = load_config("smoke", ['models=["mlp"]', "seeds=[0, 1]", "sweep.train.lr=[3e-3, 1e-2]",
                                   "sweep.dbp.kappa=[0.1, 0.5]", "train.lr=1"])  # the sweep's values win
    runs = {(s.seed, s.method, s.train.lr, s.dbp.kappa): s.run_id for s in config.runs()}
    assert len(runs) == len(config.runs()) == 2 * 2 * (1 + 2)
    assert runs[(0, "dbp", 3e-3, 0.5)] == "smoke-digits-mlp-dbp-train.lr=0.003-dbp.kappa=0.5-s0"
    assert runs[(1, "bp", 1e-2, DBPConfig().kappa)] == "smoke-digits-mlp-bp-train.lr=0.01-s1"
    assert [s.seed for s in config.runs()] == [0] * 6 + [1] * 6  # a stopped sweep has its first seeds whole


def test_a_sweep_of_dbp_settings_runs_bp_converted_once_per_seed_with_the_first_settings_layers():
    config = load_config("smoke", ['models=["mlp"]', "seeds=[0]", 'methods=["bp", "bp-converted", "dbp"]',
                                   "sweep.dbp.sample_fraction=[0.2, 0.5]"])
    converted = [s for s in config.runs() if s.method == "bp-converted"]
    assert [(s.run_id, s.dbp.sample_fraction) for s in converted] == [("smoke-digits-mlp-bp-converted-s0", 0.2)]
    assert len(config.runs()) == 1 + 1 + 2


def test_a_sweep_records_its_settings_reports_each_and_grows_on_resume(tmp_path, capsys):
    args = [*ONE_PAIR, "--set", "budget.max_steps=6", "--set", "train.eval_every=3", "--out", str(tmp_path)]
    assert main(["run", "smoke", *args, "--set", "sweep.train.lr=[1e-3, 1e-2]"]) == 0
    printed = capsys.readouterr().out
    assert "digits · mlp: train.lr swept, accuracies on the test set, target 90.00 %" in printed
    assert printed.count("train.lr 0.001") == printed.count("train.lr 0.01") == 2  # a row per method
    assert "the summary below pools each method's settings, so it gives no speed-up" in printed
    for lr in ("0.001", "0.01"):
        record = read_run(run_path(tmp_path, f"smoke-digits-mlp-dbp-train.lr={lr}-s0"))["run"]
        assert record["hyperparameters"]["train"]["lr"] == float(lr)
    assert main(["run", "smoke", *args, "--set", "sweep.train.lr=[1e-3, 1e-2, 3e-2]", "--resume"]) == 0
    assert "2 run(s) to do" in capsys.readouterr().err  # the new value only
    assert main(["report", str(tmp_path), "-o", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "Settings swept" in page and page.count("train.lr 0.03") == 2


def test_per_method_settings_give_each_method_its_own_and_resume_holds_them(tmp_path):
    tuned = [*ONE_PAIR[1::2], "budget.max_steps=2", "per_method.bp.train.lr=3e-3", "per_method.dbp.train.lr=1e-2"]
    config = load_config("smoke", tuned)
    assert {s.method: s.train.lr for s in config.runs()} == {"bp": 3e-3, "dbp": 1e-2}
    assert [s.method for s in config.runs()] == [s.method for s in load_config("smoke", ONE_PAIR[1::2]).runs()]
    run_suite(config, tmp_path, torch.device("cpu"), pending_runs(config, tmp_path, resume=False))
    for method, lr in (("bp", 3e-3), ("dbp", 1e-2)):
        assert read_run(run_path(tmp_path, f"smoke-digits-mlp-{method}-s0"))["run"]["hyperparameters"]["train"][
            "lr"] == lr
    assert pending_runs(config, tmp_path, resume=True) == []
    with pytest.raises(ConfigError, match=r"other settings \(hyperparameters.train.lr: 0.01 -> 0.001\)"):
        pending_runs(load_config("smoke", tuned[:-1]), tmp_path, resume=True)


def test_gpu_reference_runs_the_fast_path_on_learnable_cifar_shaped_data_and_scores_with_recomputed_bn():
    config = load_config("gpu-reference")
    assert config.train.amp and config.train.channels_last and len(config.seeds) >= 2
    assert config.train.precise_bn > 0
    assert {"resnet18", "resnet34"} <= set(config.models)
    data = load_data(config.dataset, batch_size=config.train.batch_size, seed=0, options=config.data.options)
    assert data.input_shape == (3, 32, 32) and data.num_classes == 10


def test_off_a_terminal_progress_is_plain_lines_and_each_run_s_end_is_said_as_it_ends(tmp_path, capsys):
    assert main(["run", "smoke", "--out", str(tmp_path), *ONE_PAIR, "--set", "budget.max_steps=30",
                 "--set", "train.eval_every=10"]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("  smoke-")]
    assert err == ["  smoke-digits-mlp-bp-s0: step 10/30, accuracy " + err[0].split("accuracy ")[1],
                   "  smoke-digits-mlp-bp-s0: completed (max_steps 30 done)",
                   "  smoke-digits-mlp-dbp-s0: step 10/30, accuracy " + err[2].split("accuracy ")[1],
                   "  smoke-digits-mlp-dbp-s0: completed (max_steps 30 done)"]  # at most a line a minute
    assert err[0].endswith(" s of training")


def test_resume_with_another_checkpoint_interval_continues_from_the_checkpoint(tmp_path, recwarn):
    """checkpoint_every changes how a run is carried out, not what it is: a long run must not start again."""
    tiny = [*ONE_PAIR[1::2], 'methods=["bp"]', "dataset=synthetic", "budget.max_steps=8", "train.eval_every=2",
            "data.options.train_size=64", "data.options.test_size=32"]
    path = run_path(tmp_path / "whole", "smoke-synthetic-mlp-bp-s0")
    config = load_config("smoke", tiny)
    run_suite(config, tmp_path / "whole", torch.device("cpu"), pending_runs(config, tmp_path / "whole", resume=False))
    whole = [(r["step"], r["eval_accuracy"], r["train_loss"]) for r in read_run(path)["evals"]]

    out = tmp_path / "stopped"
    stopped = run_path(out, "smoke-synthetic-mlp-bp-s0")
    run_suite(config, out, torch.device("cpu"), pending_runs(config, out, resume=False),
              should_stop=lambda: stopped.exists() and len(read_run(stopped)["evals"]) >= 2)
    assert read_run(stopped)["end"]["status"] == "interrupted"
    again = load_config("smoke", [*tiny, "train.checkpoint_every=3"])
    run_suite(again, out, torch.device("cpu"), pending_runs(again, out, resume=True))
    assert [(r["step"], r["eval_accuracy"], r["train_loss"]) for r in read_run(stopped)["evals"]] == whole
    assert not [w for w in recwarn if "starts again" in str(w.message)]
    assert list((out / "runs").iterdir()) == [stopped]  # nothing set aside: the run was not restarted


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
def test_a_full_disk_fails_the_run_in_one_line_and_says_how_to_continue(tmp_path, capsys):
    out = tmp_path / "out"
    (out / "checkpoints").mkdir(parents=True)  # the checkpoint is written to <name>.tmp first: that "disk" is full
    (out / "checkpoints" / "smoke-digits-mlp-bp-s0.pt.tmp").symlink_to("/dev/full")
    args = ["run", "smoke", "--out", str(out), *ONE_PAIR, "--set", "budget.max_epochs=1"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert "smoke-digits-mlp-bp-s0: failed (OSError: [Errno 28] No space left on device: " in err, err
    assert f"continue with: decorbench run smoke --out {out}" in err and "--resume" in err
    assert read_run(run_path(out, "smoke-digits-mlp-bp-s0"))["end"]["status"] == "failed"
    assert read_run(run_path(out, "smoke-digits-mlp-dbp-s0"))["end"]["status"] == "completed"  # the suite went on
    assert main([*args, "--resume"]) == 0  # space freed (the .tmp is gone): the failed run is done again


def test_a_time_or_energy_cap_on_a_cosine_schedule_is_warned_of(recwarn):
    """A cap cuts a cosine schedule where each method happens to be: the slower one at a higher lr."""
    with pytest.warns(UserWarning, match=r"budget\.max_train_seconds with the cosine schedule: .* would not compare"):
        load_config("smoke", ["budget.max_train_seconds=60"])
    with pytest.warns(UserWarning, match=r"budget\.max_energy_j with the cosine schedule"):
        load_config("smoke", ["budget.max_energy_j=5000"])
    load_config("smoke", ["budget.max_train_seconds=60", 'train.schedule="constant"'])
    load_config("smoke", [])
    assert not [w for w in recwarn if "cosine" in str(w.message)]


def test_every_run_of_a_suite_records_the_code_its_process_started_with(tmp_path, monkeypatch):
    """A commit made while a suite runs changes the checkout, not the code the running process loaded."""
    states = iter([("a" * 40, False), ("b" * 40, True), ("c" * 40, False)])
    monkeypatch.setattr("decorbench.results.source_state", lambda package_dir: next(states))
    config = load_config("smoke", [*ONE_PAIR[1::2], "budget.max_steps=1"])
    run_suite(config, tmp_path, torch.device("cpu"), pending_runs(config, tmp_path, resume=False))
    recorded = {(r["run"]["git_commit"], r["run"]["git_dirty"]) for r in map(read_run, (tmp_path / "runs").glob("*"))}
    assert recorded == {("a" * 40, False)}


def test_runs_timed_on_a_busy_machine_are_named_after_the_summary(tmp_path, capsys):
    from test_meters import _busy_for

    spinning = tmp_path / "spinning"
    spinning.touch()
    _busy_for(60, detached=True, while_exists=str(spinning)).wait()  # someone else's job, for the whole suite
    time.sleep(0.3)
    try:
        assert main(["run", "smoke", "--out", str(tmp_path / "out"), *ONE_PAIR, "--set", 'models=["small-cnn"]',
                     "--set", "budget.max_epochs=2"]) == 0
    finally:
        spinning.unlink()
    err = capsys.readouterr().err
    assert re.search(r"decorbench: 2 run\(s\) were timed on a busy machine \(smoke-digits-small-cnn-bp-s0, "
                     r"smoke-digits-small-cnn-dbp-s0\): other processes kept up to [\d.]+ CPU cores busy", err), err
