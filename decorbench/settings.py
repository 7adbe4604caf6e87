"""What makes a run the experiment it is, as configs give it and results records store it: the [train] and [dbp]
tables, each data set's options, and how a stored record's settings read today. No torch here: the report compares
settings too."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

from decorbench.budget import Budget

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("cosine", "step", "constant")
# settings that change how a run is carried out, not what it is: --resume may change them, and runs that differ in
# them are still one experiment
NOT_THE_EXPERIMENT = ("hyperparameters.train.checkpoint_every", "hyperparameters.data.options.num_workers")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 128
    optimizer: str = "adam"  # adam | sgd
    lr: float = 1e-3
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0
    schedule: str = "cosine"  # cosine (to the planned length) | step | constant
    step_epochs: int = 30  # step schedule: multiply the lr by gamma every step_epochs epochs
    gamma: float = 0.1
    eval_every: int = 0  # steps between eval points; 0 = once per epoch
    amp: bool = False  # bf16 autocast, for BP and DBP alike; R stays fp32
    tf32: bool = False  # fp32 matmuls and convolutions on TF32 tensor cores (GPU), else all at full precision
    channels_last: bool = False  # NHWC activations and conv weights (tensor-core friendly on GPUs)
    compile: bool = False  # torch.compile forward + backward (BP and DBP alike; the first steps pay compilation)
    batchnorm: bool = True  # false: no BatchNorm layers (identities), as in the DBP authors' paper-era code
    checkpoint_every: int = 1  # eval points per checkpoint (a stop and the run's end always checkpoint)
    precise_bn: int = 0  # evals use BatchNorm statistics recomputed over this many training batches; 0: the running ones

    def __post_init__(self) -> None:
        _check_choice("train.optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("train.schedule", self.schedule, SCHEDULES)
        for name in ("batch_size", "lr", "step_epochs", "gamma"):
            if not 0 < getattr(self, name) < math.inf:
                raise ValueError(f"train.{name} must be positive and finite, got {getattr(self, name)}")
        if self.checkpoint_every < 1:
            raise ValueError(f"train.checkpoint_every must be at least 1, got {self.checkpoint_every}")
        if self.eval_every < 0 or self.weight_decay < 0 or self.momentum < 0 or self.precise_bn < 0:
            raise ValueError("train.eval_every, train.weight_decay, train.momentum and train.precise_bn must not be "
                             "negative")


@dataclass(frozen=True)
class DBPConfig:
    lr: float = 1e-4
    kappa: float = 0.01
    sample_fraction: float = 0.1
    rule: str = "standard"  # standard | normalized
    skip: tuple[str, ...] = ()
    only: tuple[str, ...] | None = None
    update_every: int = 1  # steps per R update (the steps between sample nothing and leave R alone)
    schedule: str = "constant"  # constant | train (dbp.lr scaled by the factor train.lr's schedule is at)

    def __post_init__(self) -> None:
        _check_choice("dbp.rule", self.rule, ("standard", "normalized"))
        _check_choice("dbp.schedule", self.schedule, ("constant", "train"))
        if self.update_every < 1:
            raise ValueError(f"dbp.update_every must be at least 1, got {self.update_every}")
        if not 0 <= self.lr < math.inf or not 0 <= self.kappa <= 1 or not 0 < self.sample_fraction <= 1:
            raise ValueError("dbp.lr must be ≥ 0, dbp.kappa in [0, 1] and dbp.sample_fraction in (0, 1]")


def swept_value(holder, key: str):
    """The value of a swept setting `key` ("train.lr") in whatever holds the [train] and [dbp] tables as attributes:
    a suite config, a run spec."""
    section, name = key.split(".")
    return getattr(getattr(holder, section), name)


# every data set's: the share of its training set held out and scored at the eval points instead of the test set,
# so settings (lr, ...) are chosen without ever looking at the test set; 0: train on all of it, score the test set
_VALIDATION = {"validation": 0.0}
_FOLDER_OPTIONS = {"image_size": 224, "num_workers": None, **_VALIDATION}  # None: the CPUs less one (decorbench.data)
OPTIONS: dict[str, dict] = {  # valid `options` keys per dataset, with their defaults
    "digits": {"image_size": 8, **_VALIDATION}, "cifar10": _VALIDATION, "cifar100": _VALIDATION,
    "imagenet": _FOLDER_OPTIONS, "imagenette": _FOLDER_OPTIONS,
    "synthetic": {"data_seed": 0, "num_classes": 10, "image_size": 32, "channels": 3, "train_size": 2048,
                  "test_size": 512, "noise": None, **_VALIDATION},  # None: 5·sqrt(C·H·W / 3072), i.e. 5 at 3×32×32
}


def resolved_options(name: str, options: dict) -> dict:
    """`options` with data set `name`'s defaults for the keys it leaves out."""
    return {**OPTIONS[name], **options}


def _defaults(kind) -> dict:
    return {f.name: f.default for f in dataclasses.fields(kind) if f.default is not dataclasses.MISSING}


def stored_settings(run: dict, dataset: str) -> dict:
    """A stored run record's settings as the suite's config gives them. Records written by an older decorbench lack
    the settings added since (each added with the old behaviour as its default) and have data options as the config
    gave them."""
    settings = json.loads(json.dumps({k: run.get(k) for k in ("budget", "hyperparameters", "country_iso_code")}))
    with_defaults = ((settings, "budget", Budget), (settings["hyperparameters"], "train", TrainConfig),
                     (settings["hyperparameters"], "dbp", DBPConfig))
    for parent, key, kind in with_defaults:
        if isinstance(parent, dict) and isinstance(parent.get(key), dict):
            parent[key] = {**_defaults(kind), **parent[key]}
    if isinstance(settings["country_iso_code"], str):  # as the config has it now: upper case
        settings["country_iso_code"] = settings["country_iso_code"].upper()
    data = settings["hyperparameters"].get("data") if isinstance(settings["hyperparameters"], dict) else None
    if isinstance(data, dict) and isinstance(data.get("options"), dict):
        data["options"] = resolved_options(dataset, data["options"])
    return json.loads(json.dumps(settings))


def setting_defaults(dataset: str) -> dict:
    """Column → default for the settings a run record stores, flattened as `results.load` names them
    (`hyperparameters.train.lr`): what a record of an older decorbench, written before a setting existed, ran with."""
    tables = (("budget", Budget), ("hyperparameters.train", TrainConfig), ("hyperparameters.dbp", DBPConfig))
    flat = {f"{prefix}.{name}": value for prefix, kind in tables for name, value in _defaults(kind).items()}
    return {**flat, **{f"hyperparameters.data.options.{k}": v for k, v in OPTIONS.get(dataset, {}).items()}}
