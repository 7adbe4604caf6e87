"""MANY runs from one config: methods × models × seeds on one dataset, each isolated from the others' failures.

A config is TOML (README, "Suite configs"); unknown keys and wrong types are errors, caught before anything runs.
Under torchrun every rank runs the same suite in step; rank 0 alone reads and writes the results directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import os
import re
import sys
import tomllib
import traceback
import types
import typing
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from decorbench import distributed
from decorbench.budget import Budget
from decorbench.checkpoint import load_checkpoint
from decorbench.configs import builtin_names
from decorbench.data import DATASETS, check_options, input_shape, known_train_size
from decorbench.dbp import decorrelate
from decorbench.meters import CarbonMeter, EnergyMeter
from decorbench.meters.carbon import country_error
from decorbench.meters.memory import host_memory_bytes
from decorbench.models import MODELS, create_model
from decorbench.results import RunWriter, begins_as_written, code_state, provenance, read_run, run_path
from decorbench.settings import (NOT_THE_EXPERIMENT, DBPConfig, TrainConfig, resolved_options, stored_settings,
                                 swept_value)
from decorbench.step import make_step
from decorbench.train import CONVERTED, METHODS, RunSpec, continues, train_run

FINISHED = ("completed", "budget", "target", "diverged")
SUITE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")  # it starts every run_id, so every file name


class ConfigError(ValueError):
    """A config the suite cannot run; its message is one line for the user."""


@dataclass(frozen=True)
class CarbonConfig:
    country_iso_code: str = "NLD"

    def __post_init__(self):  # one spelling per country: "nld" and "NLD" are one grid when runs are compared
        if isinstance(self.country_iso_code, str):
            object.__setattr__(self, "country_iso_code", self.country_iso_code.upper())


@dataclass(frozen=True)
class DataConfig:
    root: str | None = None
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SuiteConfig:
    name: str
    methods: tuple[str, ...]
    models: tuple[str, ...]
    dataset: str
    seeds: tuple[int, ...]
    train: TrainConfig = TrainConfig()
    dbp: DBPConfig = DBPConfig()
    budget: Budget = Budget(max_epochs=1)
    carbon: CarbonConfig = CarbonConfig()
    data: DataConfig = DataConfig()
    sweep: dict = field(default_factory=dict)  # {"train.lr": (1e-3, 3e-3), ...}: load_config checks [sweep]
    per_method: dict = field(default_factory=dict)  # {"dbp": {"lr": 1e-2}}: [train] settings of one method's runs

    def variants(self) -> list[SuiteConfig]:
        """This suite once per combination of the [sweep] values (the first key's outermost), each without a sweep;
        without one, itself alone."""
        out = []
        for values in itertools.product(*self.sweep.values()):
            changes = {"train": {}, "dbp": {}}
            for key, value in zip(self.sweep, values):
                section, name = key.split(".")
                changes[section][name] = value
            out.append(dataclasses.replace(self, sweep={}, train=dataclasses.replace(self.train, **changes["train"]),
                                           dbp=dataclasses.replace(self.dbp, **changes["dbp"])))
        return out

    def of_method(self, method: str) -> SuiteConfig:
        """The settings of `method`'s runs: [per_method]'s for it in [train]."""
        return dataclasses.replace(self, per_method={},
                                   train=dataclasses.replace(self.train, **self.per_method.get(method, {})))

    def runs(self) -> list[RunSpec]:
        """Seeds outermost, so an interrupted suite has complete BP/DBP pairs for the seeds it finished; the methods'
        order reversed by the parity of seed + the model's place + the swept setting's, so neither method always
        runs second, on a GPU its twin has warmed (clocks, temperature): per model across seeds 0 and 1, also when
        they run as separate jobs (`seeds=[0]`, `seeds=[1]`; by position in the list, each such job ran BP first),
        and across models and swept settings within one seed. A BP run carries the default [dbp] table: DBP's
        settings are not part of what it is (nor of its results record), so a sweep of dbp.* settings runs BP once
        per seed. So does it run bp-converted, with the first setting's [dbp] table (its layers use sample_fraction,
        skip and only; never the update's lr)."""
        specs, variants = {}, self.variants()
        for seed in self.seeds:
            for index, variant in enumerate(variants):
                for place, model in enumerate(self.models):
                    for method in self.methods if (seed + index + place) % 2 == 0 else self.methods[::-1]:
                        swept = tuple(key for key in self.sweep if method == "dbp" or not key.startswith("dbp."))
                        spec = RunSpec(self.name, method, model, self.dataset, seed, variant.of_method(method).train,
                                       variant.dbp if method in CONVERTED else DBPConfig(), self.budget, self.data.root,
                                       self.data.options, swept)
                        specs.setdefault(spec.run_id, spec)
        return list(specs.values())


def _check_type(value, hint, where: str):
    """value converted to `hint` (int → float, list → tuple), or ConfigError naming `where`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        return _check_type(value, options[0], where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return tuple(_check_type(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):  # TOML has nan and inf; no setting means either (no limit is: leave it out)
            raise ConfigError(f"{where} must be a finite number, got {value!r}")
        return float(value)
    expected = origin or hint
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        kind = "a table" if expected is dict else getattr(expected, "__name__", expected)
        raise ConfigError(f"{where} must be {kind}, got {value!r}")
    return value


def _build(cls, table: dict, section: str):
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(table) - set(names))
    if unknown:
        prefix = f"{section}." if section else ""
        key = prefix + unknown[0]
        raise ConfigError(f"unknown key {key if key.isprintable() else repr(key)}; valid keys: {', '.join(names)}")
    values = {}
    for key, value in table.items():
        where = f"{section}.{key}" if section else key
        if dataclasses.is_dataclass(hints[key]):
            if not isinstance(value, dict):
                raise ConfigError(f"[{key}] must be a table")
            values[key] = _build(hints[key], value, key)
        else:
            values[key] = _check_type(value, hints[key], where)
    try:
        return cls(**values)
    except TypeError as e:  # a required key is missing
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in values
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        raise ConfigError(f"missing key(s): {', '.join(missing)}") from e
    except ValueError as e:
        raise ConfigError(str(e)) from e


def _parse_value(text: str):
    """A --set value as TOML ("3", "1e-3", '["a", "b"]', "true"); a bare word is a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _apply_override(table: dict, assignment: str) -> None:
    key, sep, text = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value or section.key=value, got {assignment!r}")
    *sections, leaf = key.strip().split(".")
    target = table
    for section in sections:
        target = target.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"--set {key}: {section} is not a section")
    target[leaf] = _parse_value(text.strip())


def load_config(name_or_path: str, overrides: list[str] = ()) -> SuiteConfig:
    """A built-in suite by name or a TOML file by path, with `section.key=value` overrides applied."""
    path = Path(name_or_path)
    try:
        is_file, is_dir = path.is_file(), path.is_dir()
    except OSError as e:  # e.g. a folder on the way that may not be read
        raise ConfigError(f"{path}: cannot read it ({e.strerror or e})") from e
    if is_file:
        try:
            text = path.read_text(encoding="utf-8-sig")  # TOML is UTF-8; an editor's byte-order mark is harmless
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: cannot read it as UTF-8 text ({e})") from e
    elif name_or_path in builtin_names():
        text = resources.files("decorbench.configs").joinpath(f"{name_or_path}.toml").read_text()
    elif is_dir:
        raise ConfigError(f"{path} is a directory, not a config file")
    elif path.suffix == ".toml" or path.exists():
        raise ConfigError(f"config file not found: {path}")
    else:
        raise ConfigError(f"no config file or built-in suite {name_or_path!r}; built-ins: {', '.join(builtin_names())}")
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{name_or_path}: not valid TOML ({e})") from e
    for assignment in overrides:
        _apply_override(table, assignment)
    config = _build(SuiteConfig, table, "")
    for kind, chosen, valid in (("method", config.methods, METHODS), ("model", config.models, MODELS),
                                ("dataset", (config.dataset,), DATASETS)):
        bad = [c for c in chosen if c not in valid]
        if bad:
            raise ConfigError(f"unknown {kind} {bad[0]!r}; choose from: {', '.join(valid)}")
    if not (config.methods and config.models and config.seeds):
        raise ConfigError("methods, models and seeds must each name at least one entry")
    for kind, chosen in (("methods", config.methods), ("models", config.models), ("seeds", config.seeds)):
        twice = next((c for i, c in enumerate(chosen) if c in chosen[:i]), None)
        if twice is not None:  # the same run twice: its second go would replace the first one's results
            raise ConfigError(f"{kind} lists {twice!r} twice")
    if not SUITE_NAME.fullmatch(config.name):
        raise ConfigError(f"name {config.name!r} must be letters, digits, '.', '_' or '-' (it names files), "
                          "not starting with '.'")
    bad_seeds = [seed for seed in config.seeds if not 0 <= seed < 2**32]
    if bad_seeds:
        raise ConfigError(f"seeds must be in 0 .. 2**32 - 1, got {bad_seeds[0]}")
    try:
        check_options(config.dataset, config.data.options)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    unknown_country = country_error(config.carbon.country_iso_code)
    if unknown_country:
        raise ConfigError(f"carbon.country_iso_code: {unknown_country}")
    config = dataclasses.replace(config, sweep=_checked_sweep(config.sweep))
    config = dataclasses.replace(config, per_method=_checked_per_method(config.per_method, config.sweep))
    tried = set()  # (batch_size, batchnorm): of what a sweep can change, all that the models were tried at
    for method in config.methods:
        where = [f"per_method.{method}"] if method in config.per_method else []
        try:
            variants = [variant.of_method(method) for variant in config.variants()]
        except ValueError as e:  # a swept or per-method value its table refuses
            raise ConfigError(f"{', '.join(['sweep'] * bool(config.sweep) + where)}: {e}") from e
        for variant in variants:
            shape = (variant.train.batch_size, variant.train.batchnorm)
            try:
                _check_variant(variant, models=shape not in tried)
                tried.add(shape)
            except ConfigError as e:
                setting = [f"sweep {key}={json.dumps(swept_value(variant, key))}" for key in config.sweep] + where
                raise ConfigError(f"{', '.join(setting)}: {e}" if setting else str(e)) from e
    longest = max(len(spec.run_id.encode()) for spec in config.runs()) + len(".jsonl.tmp")
    if longest > 255:  # the longest file name most file systems take
        raise ConfigError(f"name {config.name[:20]!r}… is {longest - 255} characters too long: a run's file name "
                          "would exceed 255 bytes")
    return config


SWEEPABLE = {"train": TrainConfig, "dbp": DBPConfig}


def _checked_sweep(table: dict) -> dict[str, tuple]:
    """[sweep] (`train.lr = [1e-3, 3e-3]`, ...) as {"train.lr": (0.001, 0.003)}, its values of the settings' types;
    ConfigError for anything else. Settings that are lists (dbp.skip) or not part of the experiment are not swept."""
    out = {}
    for section, keys in table.items():
        if section not in SWEEPABLE:
            raise ConfigError(f"sweep.{section}: only train.* and dbp.* settings can be swept")
        if not isinstance(keys, dict):
            raise ConfigError(f"sweep.{section} must be a table of settings, each with a list of values")
        hints = typing.get_type_hints(SWEEPABLE[section])
        for key, values in keys.items():
            where = f"sweep.{section}.{key}"
            if key not in hints:
                raise ConfigError(f"unknown key {where}; valid keys: {', '.join(hints)}")
            if hints[key] not in (int, float, str, bool) or f"hyperparameters.{section}.{key}" in NOT_THE_EXPERIMENT:
                raise ConfigError(f"{where} cannot be swept (only single values that change the experiment can)")
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{where} must be a list of at least one value, got {values!r}")
            values = tuple(_check_type(value, hints[key], f"{where}[{i}]") for i, value in enumerate(values))
            twice = next((v for i, v in enumerate(values) if v in values[:i]), None)
            if twice is not None:
                raise ConfigError(f"{where} lists {twice!r} twice")
            out[f"{section}.{key}"] = values
    return out


def _checked_per_method(table: dict, sweep: dict) -> dict[str, dict]:
    """[per_method] (`dbp.train.lr = 1e-2`, ...) as {"dbp": {"lr": 0.01}}; ConfigError for anything else, and for a
    setting that is also swept (which of the two would a run take?)."""
    hints = typing.get_type_hints(TrainConfig)
    out = {}
    for method, sections in table.items():
        if method not in METHODS:
            raise ConfigError(f"per_method.{method}: unknown method; choose from: {', '.join(METHODS)}")
        if not isinstance(sections, dict) or set(sections) - {"train"} or not isinstance(sections.get("train"), dict):
            raise ConfigError(f"per_method.{method} must hold a table train, of [train] settings for {method}'s runs")
        out[method] = {}
        for key, value in sections["train"].items():
            where = f"per_method.{method}.train.{key}"
            if key not in hints:
                raise ConfigError(f"unknown key {where}; valid keys: {', '.join(hints)}")
            if f"train.{key}" in sweep:
                raise ConfigError(f"{where}: train.{key} is swept, so it cannot also be set per method")
            out[method][key] = _check_type(value, hints[key], where)
    return out


def _check_variant(config: SuiteConfig, models: bool = True) -> None:
    """The checks of the settings a sweep may vary, for one setting of them; `models`: try the models too."""
    train_size = known_train_size(config.dataset, config.data.options)
    if train_size is not None and config.train.batch_size > train_size:
        held = resolved_options(config.dataset, config.data.options)["validation"]
        raise ConfigError(f"train.batch_size {config.train.batch_size} is larger than the {config.dataset} training "
                          f"set ({train_size} images{' left after data.options.validation' if held else ''}): no "
                          "full batch to train on")
    if models:
        _check_models(config)
    if config.train.schedule == "cosine" and not (config.budget.max_epochs or config.budget.max_steps):
        raise ConfigError("train.schedule 'cosine' needs budget.max_epochs or budget.max_steps to know its length")
    caps = [cap for cap in ("max_train_seconds", "max_energy_j") if getattr(config.budget, cap)]
    if config.train.schedule == "cosine" and caps:
        warnings.warn(f"budget.{caps[0]} with the cosine schedule: a run it ends stops part-way down the schedule, "
                      "the slower method at a higher lr, so BP's and DBP's final accuracies would not compare; "
                      "use schedule 'constant' or a cap that no run reaches")


def _check_models(config: SuiteConfig) -> None:
    """Every model tried on the data set's input shape, and decorrelated with the dbp.skip / dbp.only patterns,
    before any run: an image too small for a model, a pattern's typo, or decorrelation matrices larger than the
    machine's memory (an MLP's first R on 224² images is 84 GiB) would fail every run of it."""
    shape = input_shape(config.dataset, config.data.options)
    d = config.dbp
    for model in config.models:
        with torch.device("meta"):  # shapes only: no memory, no initialisation, nothing computed
            net = create_model(model, 10, input_shape=shape, batchnorm=config.train.batchnorm)
            try:
                net(torch.zeros(config.train.batch_size, *shape))
            except (RuntimeError, ValueError) as e:
                size = "×".join(map(str, shape))
                raise ConfigError(f"model {model} cannot train on {config.dataset} inputs of {size} in batches of "
                                  f"{config.train.batch_size} ({str(e).splitlines()[0]})") from e
        if set(CONVERTED) & set(config.methods):
            try:
                decorrelate(net, skip=d.skip, only=d.only)
            except ValueError as e:
                raise ConfigError(f"dbp.{e} {model}") from e
            except RuntimeError as e:  # a d×d matrix whose size overflows: an MLP on huge images
                raise ConfigError(f"model {model} with DBP on {config.dataset} inputs of {'×'.join(map(str, shape))}"
                                  f" needs a decorrelation matrix too large to build ({str(e).splitlines()[0]})") from e
            state = sum(t.numel() * t.element_size() for t in (*net.parameters(), *net.buffers()))
            have = host_memory_bytes()
            if state > have:  # built on the host first; each R is d×d for a layer's input size d
                raise ConfigError(f"model {model} with DBP on {config.dataset} inputs of {'×'.join(map(str, shape))} "
                                  f"holds {state / 2**30:.3g} GiB of weights and decorrelation matrices; this "
                                  f"machine has {have / 2**30:.3g} GiB of memory")


def _settings(spec: RunSpec, config: SuiteConfig) -> dict:
    """What makes a run this run, as its results record stores it (JSON types): a stored run with other settings
    is another experiment. Data options with their defaults filled in, so the record says what was used."""
    data = {"root": config.data.root, "options": resolved_options(spec.dataset, config.data.options)}
    return json.loads(json.dumps({
        "budget": dataclasses.asdict(spec.budget),
        "hyperparameters": {"train": dataclasses.asdict(spec.train),
                            "dbp": dataclasses.asdict(spec.dbp) if spec.method in CONVERTED else None,
                            "data": data},
        "country_iso_code": config.carbon.country_iso_code}))  # whose grid intensity co2_kg is of


def _changed(stored: dict, settings: dict, where: str = "") -> list[str]:
    """'key: old -> new' for every setting whose stored value differs."""
    out = []
    for key in sorted(set(stored) | set(settings)):
        if f"{where}{key}" in NOT_THE_EXPERIMENT:
            continue
        old, new = stored.get(key), settings.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            out += _changed(old, new, f"{where}{key}.")
        elif old != new:
            out.append(f"{where}{key}: {json.dumps(old)} -> {json.dumps(new)}")
    return out


def _run_record(spec: RunSpec, config: SuiteConfig, device: torch.device, energy: EnergyMeter | None = None,
                carbon: CarbonMeter | None = None, code: tuple | None = None) -> dict:
    return {"run_id": spec.run_id, "suite": spec.suite, "method": spec.method, "model": spec.model,
            "dataset": spec.dataset, "seed": spec.seed, "world_size": distributed.world_size(),
            **_settings(spec, config),
            "energy_unavailable_reason": energy.unavailable_reason if energy else "no energy meter",
            "energy_gpu": energy.mapping if energy else None,  # how the torch device was matched to NVML's GPU
            "energy_counter_period_s": energy.counter_period_s if energy else None,  # bounds each window's error
            "carbon_unavailable_reason": carbon.unavailable_reason if carbon else "no carbon meter",
            "carbon_method": carbon.method if carbon else None,  # what co2_kg is: an estimate, of what, how
            "carbon_intensity_g_per_kwh": carbon.carbon_intensity_g_per_kwh if carbon else None,
            **provenance(device, code)}


@contextlib.contextmanager
def _compiled_afresh(compile: bool):
    """With train.compile, a run compiles its step from scratch: torch.compile would reuse the graphs an earlier run
    of the same shapes compiled (in this process, or cached on disk), and only the suite's first runs would pay
    for compilation in their train_time_s, favouring whichever method runs later."""
    if not compile:
        yield
        return
    import torch._dynamo
    import torch._inductor.config

    torch._dynamo.reset()
    with torch._inductor.config.patch(force_disable_caches=True), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="dynamo_pgo force disabled")  # what we asked for
        yield


def _start_compiler(device: torch.device) -> None:
    """torch.compile's one-time start-up in a process (≈ 10 s on a 2-core CPU: inductor's imports, its compile
    workers), paid on a throwaway model: else the first compiled run alone would pay it, in its train_time_s."""
    with _compiled_afresh(True):
        tiny = nn.Linear(4, 2).to(device)
        step = make_step(tiny, torch.optim.SGD(tiny.parameters(), lr=0.0), compile=True)
        step(torch.randn(2, 4, device=device), torch.tensor([0, 1], device=device))


def checkpoint_path(out: Path, run_id: str) -> Path:
    return out / "checkpoints" / f"{run_id}.pt"


def _read_stored(path: Path, run_id: str) -> dict:
    """The records of `run_id` at `path`, or ConfigError if the file is not that run's: --resume never replaces a
    file it did not write. A file that starts as RunWriter starts one but holds no run record (a crash cut it) is
    that run's to redo."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a cut-off last line is repaired when the run resumes, and said then
            stored = read_run(path)
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it ({e.strerror or e})") from e
    run = stored["run"]
    if (run is None and not begins_as_written(data)) or (run is not None and run.get("run_id") != run_id):
        raise ConfigError(f"{path} is not the results file of run {run_id}; move it away to resume this suite")
    return stored


def pending_runs(config: SuiteConfig, out: Path, resume: bool, world_size: int = 1) -> list[RunSpec]:
    """The runs still to do by `world_size` processes. Without resume, existing results are an error: nothing
    written is ever replaced. With resume, so are results of other settings (budget, hyperparameters, carbon
    country) than the config's now. A checkpointed run continues only with as many processes as wrote its
    checkpoint. A finished run's checkpoint is deleted."""
    uneven = next((spec.train.batch_size for spec in config.runs() if spec.train.batch_size % world_size), None)
    if uneven:
        raise ConfigError(f"train.batch_size {uneven} (the global batch) does not split evenly over {world_size} "
                          "processes")
    todo = []
    for spec in config.runs():
        path = run_path(out, spec.run_id)
        if not path.exists():
            todo.append(spec)
        elif not resume:
            raise ConfigError(f"{path} already exists; pass --resume to continue this suite or choose another --out")
        else:
            stored = _read_stored(path, spec.run_id)
            changed = _changed(stored_settings(stored["run"], spec.dataset),
                               _settings(spec, config)) if stored["run"] else []
            if changed:
                raise ConfigError(f"{path} was run with other settings ({'; '.join(changed[:3])}"
                                  f"{'; ...' if len(changed) > 3 else ''}); --resume continues a suite with the same "
                                  "settings: choose another --out for new ones")
            if stored["end"] is not None and stored["end"].get("status") in FINISHED:
                with contextlib.suppress(OSError):  # left by a kill just after its end record
                    checkpoint_path(out, spec.run_id).unlink(missing_ok=True)
            else:
                ran_with = (stored["run"] or {}).get("world_size", 1)
                if ran_with != world_size and checkpoint_path(out, spec.run_id).exists():
                    raise ConfigError(f"{spec.run_id} was checkpointed by {ran_with} process(es); resume it with "
                                      f"{ran_with}, not {world_size}, so each continues its own random state")
                todo.append(spec)
    return todo


class _Discard:
    """The results writer of every rank but 0."""

    def eval(self, record: dict) -> None:
        pass

    def end(self, status: str, reason: str, totals: dict | None = None) -> None:
        pass

    def __enter__(self) -> "_Discard":
        return self

    def __exit__(self, *exc) -> None:
        pass


def _carbon_meter(config: SuiteConfig, energy: EnergyMeter) -> CarbonMeter | None:
    """codecarbon estimates the whole machine, so one tracker per machine (on its local rank 0), over the GPUs of
    that machine's ranks; one per rank would count the machine's CPU and memory once per rank. Collective."""
    gpus = distributed.gather((distributed.node(), energy.nvml_index))
    if distributed.local_rank() != 0:
        return None
    ids = [index for machine, index in gpus if machine == distributed.node() and index is not None]
    if energy.device.type != "cuda":
        return CarbonMeter(config.carbon.country_iso_code, gpu_ids=[])  # None: every GPU NVML lists would count
    return CarbonMeter(config.carbon.country_iso_code, gpu_ids=ids or None)


def _resumable_state(checkpoint: Path, spec: RunSpec) -> dict | None:
    """The state saved at `checkpoint` if `spec` can continue from it, else None: none, unreadable (a disk that
    filled up, a file from another torch) or of another spec (e.g. written by an older decorbench)."""
    try:
        saved = load_checkpoint(checkpoint, torch.device("cpu"))
    except Exception as e:  # torch.load raises many kinds; any means the run starts again
        why = str(e) if isinstance(e, ValueError) else type(e).__name__  # ours say what; torch's are many lines
        warnings.warn(f"{checkpoint}: cannot be read ({why}); {spec.run_id} starts again")
        return None
    if saved is not None and not ({"spec", "window", "running_stats"} <= saved.keys()
                                  and continues(saved["spec"], spec)):
        warnings.warn(f"{checkpoint} was written for other settings or by an older decorbench; {spec.run_id} starts "
                      "again")
        return None
    return saved


def _keep_aside(path: Path) -> None:
    """A results file with eval records or an end record (a run that failed before its first eval: why it failed), of
    a run that starts again, renamed beside it (`load` reads `*.jsonl` only), so that what it recorded is not lost."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its damage, if any, was said when it was planned
        try:
            stored = read_run(path) if path.is_file() else {}
            if not (stored.get("evals") or stored.get("end")):
                return
        except OSError:  # unreadable: RunWriter, opening it, fails the run and says why
            return
    aside = path.with_name(f"{path.name}.replaced-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}")
    os.replace(path, aside)
    warnings.warn(f"{path}: the run starts again; its earlier records are kept in {aside.name}")


def run_suite(config: SuiteConfig, out: Path, device: torch.device, todo: list[RunSpec], *,
              should_stop: Callable[[], bool] = lambda: False,
              progress: Callable[[RunSpec], Callable[[int, int | None, dict | None], None]] | None = None,
              on_end: Callable[[dict], None] = lambda end: None) -> list[dict]:
    """Run `todo` in order, one results file each. A run that raises is recorded as failed; the suite goes on —
    except under torchrun, where the other ranks cannot go on in step with a failed one: there it ends the job.

    An unfinished run continues from its last checkpoint (pending_runs made sure its settings are the same), else
    starts again, its old file replaced (no checkpoint, or one that cannot be read or is of another spec).
    Checkpoints of finished runs are deleted. Returns the end records, each also given to `on_end` as its run ends.
    """
    ends, main = [], distributed.is_main()
    code = code_state()  # the code this process runs: the checkout may change under a long suite
    if any(spec.train.compile for spec in todo):
        _start_compiler(device)
    for spec in todo:
        if distributed.any_rank(should_stop()):
            break
        path, checkpoint = run_path(out, spec.run_id), checkpoint_path(out, spec.run_id)
        energy = EnergyMeter(device)  # meters never raise; one that cannot measure says why
        energy.counter_interval_s(0.5)  # how coarse its windows' joules are (a no-op without NVML's counter)
        carbon = _carbon_meter(config, energy)
        if carbon is not None:
            carbon.start()  # ≈ 1.7 s for a process's first run, ≈ 10 ms after (codecarbon caches its hardware)
        record = _run_record(spec, config, device, energy, carbon, code)
        saved = _resumable_state(checkpoint, spec) if main and path.exists() else None
        resuming = distributed.broadcast(saved is not None)
        if main and not resuming:
            checkpoint.unlink(missing_ok=True)
            _keep_aside(path)
        after_step = saved["step"] if saved is not None else None
        try:
            writer = RunWriter(path, record, resume=resuming, resume_after_step=after_step) if main else _Discard()
        except (OSError, ValueError) as e:  # a full disk, a hand-edited file: nothing of it is lost, the suite goes on
            if distributed.active():
                raise
            energy.close()
            if carbon is not None:
                carbon.stop()
            reason = f"cannot write its results: {e}".splitlines()[0]
            print(f"decorbench: {spec.run_id}: {reason}", file=sys.stderr)
            ends.append({"run_id": spec.run_id, "status": "failed", "reason": reason})
            on_end(ends[-1])
            continue
        with writer:
            on_step = progress(spec) if progress else (lambda *_: None)
            try:
                with _compiled_afresh(spec.train.compile):
                    status, reason, totals = train_run(spec, writer, device=device, checkpoint=checkpoint,
                                                       resume_from=saved, should_stop=should_stop, on_step=on_step,
                                                       energy=energy, carbon=carbon)
            except Exception as e:  # isolate: record it, tell the user, keep going
                if distributed.active():
                    raise  # RunWriter records it as failed
                status, reason, totals = "failed", f"{type(e).__name__}: {e}".splitlines()[0], {}
                if not (isinstance(e, OSError) and e.errno is not None):  # the machine refused (a full disk): the
                    traceback.print_exc(file=sys.stderr)  # reason says it all; anything else may be a bug
            finally:
                energy.close()
                if carbon is not None:
                    carbon.stop()
            writer.end(status, reason, totals)
        if main and status in FINISHED:
            checkpoint.unlink(missing_ok=True)
        ends.append({"run_id": spec.run_id, "status": status, "reason": reason})
        on_end(ends[-1])
    if main:
        with contextlib.suppress(OSError):  # only removed when empty: every run finished
            (out / "checkpoints").rmdir()
    return ends
