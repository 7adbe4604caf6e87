"""The measurement scripts under reports/scripts run end to end (tiny sizes, CPU) and write what they promise."""

import json
import os
import runpy
import subprocess
import sys
import tarfile
from pathlib import Path

SCRIPT = "reports/scripts/gpu_step_cost.py"


def study_tables(name: str, monkeypatch, capsys) -> str:
    """What reports/scripts/<name>.py prints for its published study (reports/cpu/<name>) at the 95 % target, run as
    a script is: its helpers lie beside it."""
    monkeypatch.syspath_prepend("reports/scripts")
    monkeypatch.setattr(sys, "argv", [f"reports/scripts/{name}.py", f"reports/cpu/{name}", "0.95"])
    runpy.run_path(f"reports/scripts/{name}.py", run_name="__main__")
    return capsys.readouterr().out


def test_gpu_step_cost_writes_every_method_per_case_and_says_why_energy_is_missing(tmp_path, monkeypatch):
    out = tmp_path / "step_cost"
    monkeypatch.setattr(sys, "argv", [SCRIPT, "--out", str(out), "--depths", "small-cnn", "--batches", "8",
                                      "--windows", "2", "--window-s", "0.01", "--idle-s", "0.01", "--device", "cpu",
                                      "--paths", "eager", "fp32"])
    runpy.run_path(SCRIPT, run_name="__main__")
    saved = json.loads(out.with_suffix(".json").read_text())
    case, fp32 = saved["results"]
    assert (case["depth"], case["batch"], case["path"], fp32["path"]) == ("small-cnn", 8, "eager", "fp32")
    assert fp32["dbp"]["flops_per_step"] == case["dbp"]["flops_per_step"]  # the same work, at another precision
    for method in ("bp", "bp-converted", "dbp"):
        r = case[method]
        assert len(r["windows"]) == 2 and all(w["steps"] >= 1 and w["seconds"] > 0 for w in r["windows"])
        assert r["step_s_min"] <= r["step_s"] <= r["step_s_max"]
        assert r["counter_j_per_step"] is None and r["mfu"] is None  # no GPU: nothing invented
    assert case["dbp"]["flops_per_step"] > case["bp-converted"]["flops_per_step"] > case["bp"]["flops_per_step"] > 0
    assert saved["energy_unavailable"] == {"counter": "device is cpu: no GPU energy meter"}
    assert saved["energy_warnings"] == {"counter": []}
    assert saved["provenance"]["device"] == "cpu" and "--depths small-cnn" in saved["provenance"]["command"]
    table = out.with_suffix(".md").read_text()
    assert "| small-cnn | 8 | eager |" in table and "Energy (counter) not measured: device is cpu" in table


SESSION = "reports/scripts/gpu_session.sh"
TINY = {"OVERHEAD_ARGS": "--steps 4 --repeats 1 --device cpu", "STEP_COST_ARGS": "--depths small-cnn --batches 8 --windows 1 --window-s 0.01 --idle-s 0.01 --device cpu",
        "SUITE_ARGS": 'smoke --device cpu --set models=["mlp"] --set seeds=[0] --set budget.max_epochs=1'}


def _session(out, seconds, *phases):
    env = {**os.environ, **TINY, "PYTHON": sys.executable, "DECORBENCH_GIT_COMMIT": "0" * 40}
    done = subprocess.run(["bash", SESSION, str(out), str(seconds), *phases], env=env, capture_output=True,
                          text=True, timeout=400)
    with tarfile.open(out / "gpu-session.tar.gz") as tar:
        names = {n.removeprefix("./") for n in tar.getnames()}
    return done, names


def test_gpu_session_bundles_every_phase_and_keeps_a_log(tmp_path):
    done, names = _session(tmp_path, 3600, "env", "overhead", "step-cost", "reference")  # ends when its work does
    assert done.returncode == 0, done.stdout + done.stderr
    assert {"env.txt", "meter_overhead.txt", "step_cost.json", "step_cost.md", "reference/report.html"} <= names
    assert {n for n in names if n.startswith("reference/runs/")} == {
        "reference/runs/smoke-digits-mlp-bp-s0.jsonl", "reference/runs/smoke-digits-mlp-dbp-s0.jsonl"}
    log = (tmp_path / "session.log").read_text()
    assert "== env: 0" in log and "== overhead: 0" in log and "== step-cost: 0" in log and "== reference: 0" in log
    assert "training capped at 150 s per run" in log  # the cap; SUITE_ARGS' one epoch ends each run first
    assert "| small-cnn | 8 | eager |" in done.stdout  # the step-cost table comes last, in the tool's output tail


def test_gpu_session_skips_a_phase_it_has_no_time_for_and_still_bundles(tmp_path):
    done, names = _session(tmp_path, 100, "reference")
    assert done.returncode == 0
    assert "too little" in done.stdout and "== reference: skipped" in done.stdout
    assert "reference/runs" not in {n.rstrip("/") for n in names}


def test_lr_tta_table_gives_the_published_numbers_from_the_published_results(capsys, monkeypatch):
    test, validation, picked = study_tables("lr_tta", monkeypatch, capsys).split("\n\n")[1::2]
    assert "| mlp | 0.003 | DBP | 5/5 | 24 | 58 ms | 98.2 % | 1.38× (4 of 5) | 0.77× (0 of 5) |" in test
    assert "| small-cnn | 0.001 | DBP | 5/5 | 36 | 455 ms | 99.6 % | 1.08× (5 of 5) | 0.85× (0 of 5) |" in test
    assert "| mlp | 0.0003 | DBP | 1/5 | 186 | 416 ms | 94.9 % | 0.90× (no seed reached it with both) |" in test
    assert "| mlp | 0.0003 | BP | 0/5 | — | — | 92.2 % |" in validation
    assert "| mlp | 0.01 | DBP | 5/5 | 24 | 46 ms | 97.4 % | 1.75× (4 (+1 equal) of 5) |" in validation
    assert test.count("\n") == validation.count("\n") == 2 + 20 - 1
    assert "| mlp | steps | validation | 0.003 | 0.01 | 33 | 30 | 1.10× (4 of 5) |" in picked
    assert "| mlp | steps | test | 0.003 | 0.003 | 33 | 24 | 1.38× (4 of 5) |" in picked
    published = Path("reports/cpu/lr_tta.md").read_text()
    assert all(table in published for table in (test, validation, picked))


def test_dbp_tune_tables_give_the_published_numbers_from_the_published_results(capsys, monkeypatch):
    validation, test = study_tables("dbp_tune", monkeypatch, capsys).strip().split("\n\n")[1::2]
    picked = "| mlp | DBP | dbp.lr 0.01; dbp.kappa 0.01 | 5/5 | 18 | 38.1 ms | 97.03 % | by time and by steps |"
    assert picked in validation
    assert "| small-cnn | DBP | dbp.lr 0.01; dbp.kappa 0.01 | 0/5 | — | — | — |  |" in validation  # diverged
    assert validation.count("\n") == 2 + 18 - 1
    tuned = ("| mlp | DBP | lr 0.01, dbp.lr 0.01, κ 0.01 | 5/5 | 18 | 38 ms | 98.7 % | 1.83× (5 of 5) | "
             "1.20× (4 of 5) |")
    assert tuned in test
    assert "| small-cnn | BP | lr 0.01 | 5/5 | 27 | 167 ms | 99.8 % |  |  |" in test
    assert test.count("\n") == 2 + 10 - 1
    published = Path("reports/cpu/dbp_tune.md").read_text()
    assert validation in published and test in published


def test_batchnorm_tables_give_the_published_numbers_from_the_published_results(capsys, monkeypatch):
    lr, dbp, test = study_tables("batchnorm", monkeypatch, capsys).strip().split("\n\n")[1::2]
    assert "| small-cnn | BP | train.lr 0.003 | 3/5 | 108 | 622 ms | 94.42 % |  |" in lr  # no BP lr marked best
    assert lr.count("\n") == 2 + 10 - 1 and dbp.count("\n") == 2 + 9 - 1
    assert "| small-cnn | DBP | dbp.lr 0.01; dbp.kappa 0.01 | 5/5 | 48 | 487 ms | 97.77 % | by steps |" in dbp
    tuned = ("| small-cnn | DBP | lr 0.003, dbp.lr 0.01, κ 0.01 | 5/5 | 48 | 572 ms | 98.9 % | 2.25× (4 of 4) | "
             "1.17× (4 of 4) |")
    assert tuned in test and test.count("\n") == 2 + 7 - 1
    published = Path("reports/cpu/batchnorm.md").read_text()
    assert all(table in published for table in (lr, dbp, test))


def test_sample_fraction_table_gives_the_published_numbers_from_the_published_results(capsys, monkeypatch):
    table = study_tables("sample_fraction", monkeypatch, capsys).strip()
    assert "| mlp | BP | — | 5/5 | 39 | 47 ms | 1.20 ms | 96.3 % |  |  |" in table
    assert ("| small-cnn | DBP | 1 | 5/5 | 18 | 411 ms | 23.05 ms | 98.5 % | 1.50× (5 of 5) | 0.42× (0 of 5) |"
            in table)
    assert table.count("\n") == 2 + 3 * 6 - 1
    assert table in Path("reports/cpu/sample_fraction.md").read_text()


def test_tf32_update_rounds_as_tf32_does_and_measures_the_update_both_ways(tmp_path, monkeypatch, capsys):
    import torch

    out = tmp_path / "tf32.json"
    monkeypatch.setattr(sys, "argv", ["tf32_update.py", "--json", str(out), "--increments-model", "mlp", "--at", "0",
                                      "2", "--training-model", "mlp", "--steps", "3", "--seeds", "0", "--batch", "32"])
    script = runpy.run_path("reports/scripts/tf32_update.py", run_name="__main__")
    one = 2.0**-10  # TF32's unit in the last place at 1
    x = torch.tensor([1 + one / 2, 1 + 3 * one / 2, 1 + one / 4, -(1 + 3 * one / 4)])
    assert script["tf32_round"](x).tolist() == [1.0, 1 + 2 * one, 1.0, -(1 + one)]  # ties to even, else nearest
    saved = json.loads(out.read_text())
    assert {r["step"] for r in saved["increments"]} == {0, 2} and len(saved["increments"]) == 2 * 3  # 3 layers
    for r in saved["increments"]:
        assert 0 < r["tf32_vs_exact"] < 2e-3 < r["other_sample_vs_exact"]
    exact, rounded = saved["training"]
    assert (exact["tf32"], rounded["tf32"]) == (False, True)
    assert exact["decor_loss_first"] != rounded["decor_loss_first"]  # the loss's products are rounded too ...
    assert abs(rounded["decor_loss_first"] / exact["decor_loss_first"] - 1) < 1e-3  # ... by little
    assert "tf32_update.py --json" in saved["provenance"]["command"]
