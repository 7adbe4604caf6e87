"""The results store: what a run writes survives a crash, and load() turns many runs into one clean table."""

import io
import json
import math
import platform
import re
import subprocess
import warnings
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest
import torch

from decorbench.results import (END_FIELDS, EVAL_FIELDS, PROVENANCE_FIELDS, RUN_FIELDS, RunWriter, load, provenance,
                                read_run, run_path, source_state)


def run_record(run_id: str = "r0", method: str = "bp", seed: int = 0) -> dict:
    return {**provenance("cpu"), "run_id": run_id, "suite": "smoke", "method": method, "model": "mlp",
            "dataset": "digits", "seed": seed, "budget": {"max_epochs": 3, "target_accuracy": 0.9},
            "hyperparameters": {"lr": 1e-3, "batch_size": 64}, "country_iso_code": "NLD"}


def eval_record(step: int, **overrides) -> dict:
    rng = np.random.default_rng(step)
    record = {"step": step, "epoch": step / 10, "samples": 64 * step, "train_time_s": 0.5 * step,
              "wall_time_s": 0.6 * step, "train_loss": float(rng.uniform(0.1, 2)),
              "eval_loss": float(rng.uniform(0.1, 2)), "eval_accuracy": float(rng.uniform(0, 1)), "flops": 10**9 * step, "energy_j": None,
              "energy_source": None, "co2_kg": None, "peak_memory_bytes": 2**20, "decor_loss": None,
              "decor_loss_by_layer": None}
    return {**record, **overrides}


def write_run(out, run_id="r0", steps=(10, 20, 30), status="completed", method="bp"):
    path = run_path(out, run_id)
    with RunWriter(path, run_record(run_id, method)) as writer:
        for step in steps:
            writer.eval(eval_record(step))
        if status:
            writer.end(status, "max_epochs reached", {"train_time_s": 15.0, "steps": steps[-1] if steps else 0})
    return path


def test_field_tuples_follow_the_design():
    assert {"run_id", "method", "budget", "hyperparameters", "started_at", "git_commit"} <= set(RUN_FIELDS)
    assert {"step", "train_time_s", "eval_accuracy", "flops", "energy_j", "decor_loss"} <= set(EVAL_FIELDS)
    assert END_FIELDS == ("status", "reason", "totals")


def test_written_runs_load_as_one_row_per_eval_with_run_fields_joined(tmp_path):
    write_run(tmp_path, "bp-0", method="bp")
    write_run(tmp_path, "dbp-0", method="dbp", steps=(10, 20))
    assert run_path(tmp_path, "bp-0") == tmp_path / "runs" / "bp-0.jsonl"
    lines = [json.loads(line) for line in run_path(tmp_path, "bp-0").read_text().splitlines()]
    assert [line["type"] for line in lines] == ["run", "eval", "eval", "eval", "end"]

    df = load(tmp_path)
    assert len(df) == 5
    assert df.groupby("run_id").size().to_dict() == {"bp-0": 3, "dbp-0": 2}
    assert set(df["method"]) == {"bp", "dbp"} and set(df["status"]) == {"completed"}
    assert (df["budget.max_epochs"] == 3).all() and (df["hyperparameters.lr"] == 1e-3).all()
    assert (df["totals.train_time_s"] == 15.0).all()
    assert df["source"].str.endswith(".jsonl").all()
    for column in ("step", "samples", "flops", "peak_memory_bytes", "seed", "budget.max_epochs"):
        assert pd.api.types.is_integer_dtype(df[column]), column
    for column in ("train_time_s", "eval_accuracy", "train_loss", "energy_j", "co2_kg", "decor_loss"):
        assert pd.api.types.is_float_dtype(df[column]), column
    assert df["energy_j"].isna().all()
    # the same rows whether given the directory, the runs/ directory or the files
    assert len(load([run_path(tmp_path, "bp-0"), str(run_path(tmp_path, "dbp-0"))])) == 5
    assert len(load(tmp_path / "runs")) == 5
    assert len(load([tmp_path, run_path(tmp_path, "bp-0")])) == 5  # named twice, counted once


def test_a_run_killed_mid_write_keeps_every_complete_record(tmp_path):
    path = write_run(tmp_path, status=None)
    complete = path.read_bytes()
    path.write_bytes(complete + json.dumps({"type": "eval", **eval_record(40)}).encode()[:37])  # crash mid-record
    with pytest.warns(UserWarning, match=re.escape(str(path)) + ".*line 5.*truncated"):
        df = load(tmp_path)
    assert df["step"].tolist() == [10, 20, 30]
    assert df["status"].isna().all()  # no end record: still running or killed


def test_corrupt_files_are_skipped_with_a_warning_and_the_rest_loads(tmp_path):
    write_run(tmp_path, "good")
    (tmp_path / "runs" / "garbage.jsonl").write_bytes(np.random.default_rng(0).bytes(300))
    (tmp_path / "runs" / "empty.jsonl").write_bytes(b"")
    (tmp_path / "runs" / "other.jsonl").write_text('{"some": "json"}\n[1, 2]\n')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = load(tmp_path)
    assert set(df["run_id"]) == {"good"} and len(df) == 3
    messages = " ".join(str(w.message) for w in caught)
    for name in ("garbage.jsonl", "empty.jsonl", "other.jsonl"):
        assert name in messages


def test_a_garbled_middle_line_is_skipped_with_a_warning(tmp_path):
    path = write_run(tmp_path)
    lines = path.read_text().splitlines()
    lines[2] = "#oops"
    path.write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match="line.* 3"):
        records = read_run(path)
    assert [e["step"] for e in records["evals"]] == [10, 30] and records["end"]["status"] == "completed"


def test_runs_without_evals_still_show_up(tmp_path):
    write_run(tmp_path, "crashed-early", steps=(), status=None)  # killed before the first eval
    write_run(tmp_path, "failed", steps=(), status="failed")
    df = load(tmp_path).set_index("run_id")
    assert len(df) == 2
    assert pd.isna(df.loc["crashed-early", "status"]) and df.loc["failed", "status"] == "failed"
    assert df["eval_accuracy"].isna().all() and pd.api.types.is_float_dtype(df["step"])


def test_non_finite_and_tensor_values_are_written_as_valid_json(tmp_path):
    path = run_path(tmp_path, "r0")
    with RunWriter(path, run_record()) as writer:
        writer.eval(eval_record(1, train_loss=float("nan"), eval_loss=torch.tensor(float("inf")),
                                eval_accuracy=np.float32(0.5), flops=np.int64(7), decor_loss=torch.tensor(0.25)))
        writer.end("diverged", "loss is NaN", {"best": np.float64("nan")})
    for line in path.read_text().splitlines():
        json.dumps(json.loads(line), allow_nan=False)  # strict JSON: no NaN/Infinity literals
    assert '"train_loss": null' in path.read_text()
    row = load(path).iloc[0]
    assert math.isnan(row["train_loss"]) and math.isnan(row["eval_loss"])
    assert row["eval_accuracy"] == 0.5 and row["flops"] == 7 and row["decor_loss"] == 0.25
    assert row["status"] == "diverged"


def test_bad_input_raises_value_error(tmp_path):
    with RunWriter(run_path(tmp_path, "r0"), run_record()) as writer:
        with pytest.raises(ValueError, match="status must be one of"):
            writer.end("finished", "typo")
        with pytest.raises(ValueError, match="eval_accuracy"):
            writer.eval({k: v for k, v in eval_record(1).items() if k != "eval_accuracy"})
        writer.end("completed", "ok")
    with pytest.raises(ValueError, match="run_id"):
        RunWriter(run_path(tmp_path, "r1"), {"method": "bp"})
    with pytest.raises(ValueError, match="no results found") as info, pytest.warns(UserWarning, match="nothing-here"):
        load(tmp_path / "nothing-here")
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="no results found"):
        load([])
    for suite in ("k1", "k4"):  # several suites' results directories under one folder: each is named
        with RunWriter(run_path(tmp_path / "all" / suite, "r0"), run_record()) as writer:
            writer.end("completed", "ok")
    with pytest.raises(ValueError, match=f"no results found in {tmp_path / 'all'}; results directories below it: "
                                         f"{tmp_path / 'all' / 'k1'}, {tmp_path / 'all' / 'k4'}$"):
        load(tmp_path / "all")
    run_path(tmp_path / "empty", "r0").parent.mkdir(parents=True)
    run_path(tmp_path / "empty", "r0").touch()  # e.g. left by a full disk: not a results file
    with pytest.raises(ValueError, match=f"no results found in {tmp_path / 'empty'}$"), pytest.warns(UserWarning):
        load(tmp_path / "empty")


def test_an_exception_inside_the_writer_records_a_failed_run(tmp_path):
    path = run_path(tmp_path, "r0")
    with pytest.raises(RuntimeError):
        with RunWriter(path, run_record()) as writer:
            writer.eval(eval_record(1))
            raise RuntimeError("CUDA out of memory")
    assert read_run(path)["end"] == {"status": "failed", "reason": "RuntimeError: CUDA out of memory", "totals": None}


def test_resume_appends_and_repairs_a_truncated_last_line(tmp_path):
    path = write_run(tmp_path, steps=(10, 20), status=None)
    path.write_bytes(path.read_bytes() + b'{"type": "eval", "st')  # killed mid-write
    with pytest.warns(UserWarning, match="truncated"):
        writer = RunWriter(path, run_record(), resume=True)
    with writer:
        writer.eval(eval_record(30))
        writer.end("completed", "max_epochs reached")
    lines = [json.loads(line) for line in path.read_text().splitlines()]  # valid JSONL throughout
    assert [line["type"] for line in lines] == ["run", "eval", "eval", "resume", "eval", "end"]
    assert load(path)["step"].tolist() == [10, 20, 30]

    with pytest.raises(ValueError, match="not resuming"):
        RunWriter(path, run_record("another-run"), resume=True)
    fresh = run_path(tmp_path, "new")
    with RunWriter(fresh, run_record("new"), resume=True) as writer:  # nothing to resume: starts the file
        writer.end("completed", "ok")
    assert read_run(fresh)["run"]["run_id"] == "new"
    with RunWriter(path, run_record(), resume=False) as writer:  # not resuming: starts afresh
        writer.end("failed", "restart")
    assert read_run(path)["evals"] == []


def test_the_evals_of_a_resumed_part_carry_the_code_and_machine_that_measured_them(tmp_path):
    path = write_run(tmp_path, steps=(10, 20), status="interrupted")
    elsewhere = {**run_record(), "git_commit": "f" * 40, "gpu_name": "NVIDIA H200", "host": "other",
                 "started_at": "2099-01-01T00:00:00Z"}
    with RunWriter(path, elsewhere, resume=True, resume_after_step=20) as writer:
        writer.eval(eval_record(30))
        writer.end("completed", "max_epochs reached")
    (resume,) = read_run(path)["resumes"]
    assert resume["step"] == 20 and resume["gpu_name"] == "NVIDIA H200"
    assert set(resume) == {"step", *PROVENANCE_FIELDS}
    df = load(path).set_index("step")
    first = read_run(path)["run"]  # as written: a second run_record() may start a second later
    assert df.loc[20, ["git_commit", "host"]].tolist() == [first["git_commit"], first["host"]]
    assert pd.isna(df.loc[20, "gpu_name"])  # a CPU
    assert df.loc[30, ["git_commit", "gpu_name", "host"]].tolist() == ["f" * 40, "NVIDIA H200", "other"]
    assert set(df["started_at"]) == {first["started_at"]}  # the run's start, not its part's


def test_provenance_records_every_provenance_field():
    assert tuple(provenance("cpu")) == PROVENANCE_FIELDS


def test_a_resumed_run_killed_after_new_evals_has_no_end_not_its_earlier_one(tmp_path):
    path = write_run(tmp_path, steps=(10,), status="interrupted")
    resumed_eval = json.dumps({"type": "eval", **eval_record(20)})
    path.write_text(path.read_text() + resumed_eval + "\n")  # resumed, then SIGKILLed: no end record after it
    assert read_run(path)["end"] is None
    assert load(path)["status"].isna().all()
    with RunWriter(path, run_record(), resume=True) as writer:  # resumed again and finished: that end counts
        writer.end("completed", "max_epochs reached")
    assert read_run(path)["end"]["status"] == "completed"


def test_a_copied_results_file_counts_once_from_the_copy_that_got_further(tmp_path):
    original = write_run(tmp_path / "a", "bp-0", steps=(10, 20), status=None)
    (tmp_path / "backup").mkdir()
    copy = tmp_path / "backup" / "bp-0.jsonl"
    copy.write_bytes(original.read_bytes())
    with RunWriter(original, run_record("bp-0"), resume=True) as writer:  # the original went on after the copy
        writer.eval(eval_record(30))
        writer.end("completed", "max_epochs reached")
    write_run(tmp_path / "a", "bp-1")  # another run of the same run_id pattern, its own record
    with pytest.warns(UserWarning, match=r"backup/bp-0.jsonl: the same run as .*a/runs/bp-0.jsonl \(a copy\?\)"):
        df = load([tmp_path / "backup", tmp_path / "a"])
    assert df.groupby("run_id")["step"].apply(list).to_dict() == {"bp-0": [10, 20, 30], "bp-1": [10, 20, 30]}
    assert set(df.loc[df["run_id"] == "bp-0", "status"]) == {"completed"}


@pytest.mark.parametrize("order", [("copy", "a"), ("a", "copy")])
def test_of_two_copies_with_the_same_evals_the_one_with_its_end_counts_whatever_the_order(tmp_path, order):
    ended = write_run(tmp_path / "a", "bp-0", steps=(10, 20), status="completed")
    (tmp_path / "copy").mkdir()  # copied after the last eval, before the end record
    (tmp_path / "copy" / "bp-0.jsonl").write_text("".join(ended.read_text().splitlines(keepends=True)[:-1]))
    with pytest.warns(UserWarning, match="a copy"):
        df = load([tmp_path / name for name in order])
    assert set(df["status"]) == {"completed"} and df["source"].iloc[0] == str(ended)


def test_results_files_joined_into_one_read_as_the_first_run_with_a_warning(tmp_path):
    first, second = write_run(tmp_path, "bp-0", steps=(10, 20)), write_run(tmp_path, "dbp-0", steps=(10,))
    joined = tmp_path / "all.jsonl"
    joined.write_text(first.read_text() + second.read_text())
    with pytest.warns(UserWarning, match="a second run record at line 5"):
        records = read_run(joined)
    assert records["run"]["run_id"] == "bp-0" and [e["step"] for e in records["evals"]] == [10, 20]
    assert records["end"]["status"] == "completed"


def test_resuming_drops_the_eval_records_past_the_checkpoint_and_keeps_the_rest(tmp_path):
    path = write_run(tmp_path, steps=(10, 20, 30), status=None)
    before = path.read_text().splitlines()
    with pytest.warns(UserWarning, match=r"dropped 1 eval record\(s\) past step 20"):
        writer = RunWriter(path, run_record(), resume=True, resume_after_step=20)
    with writer:
        writer.eval(eval_record(30))
    assert path.read_text().splitlines()[:3] == before[:3] and [e["step"] for e in read_run(path)["evals"]] == \
        [10, 20, 30]


@pytest.mark.parametrize("edit", ["blank first line", "no final newline", "byte order mark"])  # as editors leave files
def test_resuming_a_hand_edited_file_keeps_every_record_up_to_the_checkpoint(edit, tmp_path):
    path = write_run(tmp_path, steps=(10, 20), status=None)
    text = path.read_text()
    path.write_text({"blank first line": "\n" + text, "no final newline": text.rstrip("\n"),
                     "byte order mark": "\ufeff" + text}[edit])
    with RunWriter(path, run_record(), resume=True, resume_after_step=20) as writer:
        writer.eval(eval_record(30))
        writer.end("completed", "ok")
    assert [e["step"] for e in read_run(path)["evals"]] == [10, 20, 30]


def test_a_file_that_cannot_be_continued_from_its_checkpoint_is_refused_and_left_as_it_is(tmp_path):
    path = write_run(tmp_path, steps=(10, 20), status=None)
    edited = "garbage\n" + path.read_text()  # not starting with its run record: starting it afresh would lose it
    path.write_text(edited)
    with pytest.raises(ValueError, match=r"does not start with a run record, so it cannot be continued from its "
                                         r"checkpoint \(step 20\)"):
        RunWriter(path, run_record(), resume=True, resume_after_step=20)
    assert path.read_text() == edited


def test_a_separate_reader_sees_each_record_as_soon_as_the_call_returns(tmp_path):
    path = run_path(tmp_path, "r0")
    writer = RunWriter(path, run_record())
    assert read_run(path)["run"]["run_id"] == "r0"
    for step in (1, 2):
        writer.eval(eval_record(step))
        with open(path, encoding="utf-8") as fresh:
            assert json.loads(fresh.read().splitlines()[-1])["step"] == step
    writer.end("completed", "ok")
    assert read_run(path)["end"]["status"] == "completed"


def test_provenance_describes_this_machine():
    prov = provenance(torch.device("cpu"))
    assert set(RUN_FIELDS) - set(prov) == {"run_id", "suite", "method", "model", "dataset", "seed", "budget",
                                           "hyperparameters", "country_iso_code"}
    assert {"git_dirty", "cpu_count", "platform"} <= set(prov)
    started = datetime.strptime(prov["started_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert abs((datetime.now(timezone.utc) - started).total_seconds()) < 60
    assert prov["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", prov["git_commit"])
    assert prov["git_dirty"] in (None, True, False)
    assert prov["device"] == "cpu" and prov["gpu_name"] is None and prov["gpu_driver"] is None
    assert prov["torch"] == torch.__version__ and prov["cpu_count"] >= 1
    json.dumps(prov, allow_nan=False)


ARM_CPUINFO = "processor\t: 0\nBogoMIPS\t: 2000.00\nCPU implementer\t: 0x41\nCPU part\t: 0xd4f\n\n"


def test_an_arm_cpu_is_named_by_lscpu_as_its_cpuinfo_has_no_model_name(monkeypatch, tmp_path):
    """A Grace host (GH200) lists part numbers only; lscpu decodes them."""
    real_open = open
    monkeypatch.setattr("builtins.open", lambda file, *a, **k: io.StringIO(ARM_CPUINFO) if file == "/proc/cpuinfo"
                        else real_open(file, *a, **k))
    (tmp_path / "lscpu").write_text("#!/bin/sh\necho 'Architecture: aarch64'\necho 'Model name:   Neoverse-V2'\n")
    (tmp_path / "lscpu").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert provenance("cpu")["cpu"] == "Neoverse-V2"
    (tmp_path / "lscpu").write_text("#!/bin/sh\nexit 1\n")  # no lscpu that works: no name rather than a wrong one
    assert provenance("cpu")["cpu"] == (platform.processor() or None)


def test_provenance_never_fails_without_git(monkeypatch):
    monkeypatch.setenv("PATH", "")  # no git executable to be found
    prov = provenance("cpu")
    assert prov["git_commit"] is None and prov["git_dirty"] is None


def test_provenance_takes_the_commit_from_the_environment_where_git_cannot_tell(monkeypatch):
    monkeypatch.setenv("PATH", "")
    monkeypatch.setenv("DECORBENCH_GIT_COMMIT", "0123456789abcdef0123456789abcdef01234567")
    prov = provenance("cpu")
    assert prov["git_commit"] == "0123456789abcdef0123456789abcdef01234567" and prov["git_dirty"] is None
    monkeypatch.setenv("DECORBENCH_GIT_COMMIT", " F30EC7E4\n")  # as `git rev-parse --short` wrote it, upper-cased
    assert provenance("cpu")["git_commit"] == "f30ec7e4"
    for not_a_commit in ("  ", "main", "abc"):
        monkeypatch.setenv("DECORBENCH_GIT_COMMIT", not_a_commit)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert provenance("cpu")["git_commit"] is None
        assert [str(w.message) for w in caught] == ([] if not not_a_commit.strip() else [
            f"DECORBENCH_GIT_COMMIT={not_a_commit!r} is not a commit hash; the commit is recorded as unknown"])


def test_source_state_calls_a_checkout_dirty_for_code_changes_only(tmp_path):
    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    package = tmp_path / "decorbench"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "run.jsonl").write_text("{}\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "init")
    commit, dirty = source_state(package)
    assert re.fullmatch(r"[0-9a-f]{40}", commit) and dirty is False
    (tmp_path / "reports" / "run.jsonl").unlink()  # results written over in the checkout: still the same code
    (tmp_path / "README.md").write_text("new, untracked\n")
    assert source_state(package) == (commit, False)
    (package / "extra.py").write_text("x = 1\n")  # a new module, not committed
    assert source_state(package) == (commit, True)
    (package / "extra.py").unlink()
    (package / "__init__.py").write_text("x = 1\n")
    assert source_state(package) == (commit, True)
    assert source_state(tmp_path.parent) == (None, None)  # not a checkout that tracks a package there


def test_a_checkout_git_refuses_says_why_its_commit_is_unknown(monkeypatch, tmp_path):
    """As in a container whose bind-mounted checkout another user owns: git's refusal was silent before."""
    (tmp_path / "git").write_text("#!/bin/sh\necho \"fatal: detected dubious ownership in repository at '/src'\" >&2\n"
                                  "echo 'To add an exception for this directory, call:' >&2\n"
                                  "echo '	git config --global --add safe.directory /src' >&2\nexit 128\n")
    (tmp_path / "git").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    trust = r"to trust it: git config --global --add safe\.directory /src \(or set DECORBENCH_GIT_COMMIT\)"
    with pytest.warns(UserWarning, match=r"git refuses the checkout of .*another user owns it.*" + trust):
        prov = provenance("cpu")
    assert prov["git_commit"] is None and prov["git_dirty"] is None
