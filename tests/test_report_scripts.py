"""The measurement scripts under reports/scripts run end to end (tiny sizes, CPU) and write what they promise."""

import json
import runpy
import sys

import pytest

SCRIPT = "reports/scripts/gpu_step_cost.py"


def test_gpu_step_cost_writes_both_methods_per_case_and_says_why_energy_is_missing(tmp_path, monkeypatch):
    out = tmp_path / "step_cost"
    monkeypatch.setattr(sys, "argv", [SCRIPT, "--out", str(out), "--depths", "small-cnn", "--batches", "8",
                                      "--windows", "2", "--window-s", "0.01", "--idle-s", "0.01", "--device", "cpu"])
    runpy.run_path(SCRIPT, run_name="__main__")
    saved = json.loads(out.with_suffix(".json").read_text())
    (case,) = saved["results"]
    assert (case["depth"], case["batch"], case["path"]) == ("small-cnn", 8, "eager")
    for method in ("bp", "dbp"):
        r = case[method]
        assert len(r["windows"]) == 2 and all(w["steps"] >= 1 and w["seconds"] > 0 for w in r["windows"])
        assert r["step_s_min"] <= r["step_s"] <= r["step_s_max"]
        assert r["counter_j_per_step"] is None and r["mfu"] is None  # no GPU: nothing invented
    assert case["dbp"]["flops_per_step"] > case["bp"]["flops_per_step"] > 0
    assert saved["energy_unavailable"] == {"counter": "device is cpu: no GPU energy meter"}
    assert saved["provenance"]["device"] == "cpu" and "--depths small-cnn" in saved["provenance"]["command"]
    table = out.with_suffix(".md").read_text()
    assert "| small-cnn | 8 | eager |" in table and "Energy (counter) not measured: device is cpu" in table
