"""Every asv benchmark body runs once, at tiny size (DECORBENCH_BENCH_TINY=1), so a broken benchmark fails here
and not only under asv. The numbers are meaningless at that size; only their kind is checked."""

import importlib
import inspect
import itertools
import math
import pkgutil

import pytest

import benchmarks

PREFIXES = ("time_", "peakmem_", "mem_", "track_")


@pytest.fixture(scope="module")
def modules():
    mp = pytest.MonkeyPatch()
    mp.setenv("DECORBENCH_BENCH_TINY", "1")
    names = [m.name for m in pkgutil.iter_modules(benchmarks.__path__)]
    imported = [importlib.reload(importlib.import_module(f"benchmarks.{name}")) for name in ["common", *names]]
    yield {m.__name__: m for m in imported}
    mp.undo()
    for m in imported:  # leave full-size modules behind for anything imported later
        importlib.reload(m)


def _suites(module):
    return [cls for _, cls in inspect.getmembers(module, inspect.isclass)
            if cls.__module__ == module.__name__ and any(n.startswith(PREFIXES) for n in dir(cls))]


def _combinations(cls):
    params = getattr(cls, "params", [])
    if not params:
        return [()]
    if all(isinstance(p, (list, tuple)) for p in params):
        return list(itertools.product(*params))
    return [(p,) for p in params]


def test_tiny_mode_is_on(modules):
    assert modules["benchmarks.common"].TINY


def test_every_module_has_benchmarks(modules):
    bare = [name for name, m in modules.items() if name != "benchmarks.common" and not _suites(m)]
    assert not bare, f"benchmark modules without benchmarks: {bare}"


@pytest.mark.parametrize("module_name", [f"benchmarks.{m.name}" for m in pkgutil.iter_modules(benchmarks.__path__)
                                         if m.name != "common"])
def test_every_benchmark_runs_once(modules, module_name):
    ran = 0
    for cls in _suites(modules[module_name]):
        for params in _combinations(cls):
            bench = cls()
            try:
                if hasattr(bench, "setup"):
                    bench.setup(*params)
            except NotImplementedError:  # asv's skip: only the GPU cases may skip here
                assert "cuda" in params, f"{cls.__name__}{params} skipped on CPU"
                continue
            for name in sorted(n for n in dir(cls) if n.startswith(PREFIXES)):
                value = getattr(bench, name)(*params)
                if name.startswith("track_"):
                    assert isinstance(value, (int, float)), f"{cls.__name__}.{name}{params} returned {value!r}"
                    assert math.isnan(value) or value >= 0, f"{cls.__name__}.{name}{params} returned {value}"
                ran += 1
            if hasattr(bench, "teardown"):
                bench.teardown(*params)
    assert ran > 0


def test_flops_benchmark_counts_more_for_dbp_than_bp(modules):
    flops = modules["benchmarks.bench_step"].Flops()
    for params in _combinations(type(flops)):
        flops.setup(*params)
        assert flops.track_dbp_flops_per_step(*params) > flops.track_bp_flops_per_step(*params) > 0


def test_peak_memory_benchmark_counts_at_least_the_resident_weights(modules):
    bench = modules["benchmarks.bench_step"].TrainStepPeakMemory()
    params = ("dbp", "resnet18-32px-b128", "cpu")
    try:
        bench.setup(*params)
    except NotImplementedError:
        pytest.skip("this kernel cannot reset the peak resident set")
    weights = sum(p.nbytes for p in bench.step.model.parameters())
    assert bench.track_peak_memory(*params) > 3 * weights  # weights, their gradients, Adam's two moments


def test_time_to_accuracy_benchmark_reports_the_eval_that_reached_the_target(modules):
    tta = modules["benchmarks.bench_smoke"].TimeToAccuracy()
    for params in _combinations(type(tta)):
        tta.setup(*params)
        assert tta.track_steps_to_target(*params) == modules["benchmarks.bench_smoke"].EVAL_EVERY  # the tiny target
        assert 0 < tta.track_seconds_to_target(*params) < math.inf
