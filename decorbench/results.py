"""Crash-safe results store: one JSON Lines file per run, and `load()` to read many runs into one DataFrame.

Why JSON Lines, flushed and fsynced per record: training runs are long and get killed (out of memory, out of time,
Ctrl-C, a dead node). Every record is written as one line and pushed to disk before `RunWriter` returns, so a killed
run leaves its run record and every completed eval point readable; at worst the last line is cut short, and readers
skip it with a warning. Data flows one way: train loop → `RunWriter` → files → `load()` → report.
File layout (README, "Results"): a `run` record, then one `eval` record per eval point, then an `end` record; a
resumed run goes on with a `resume` record (the provenance of its new part), its evals and its own end.
"""

import codecs
import json
import math
import os
import platform
import re
import subprocess
import warnings
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from . import __version__

RUN_FIELDS = ("run_id", "suite", "method", "model", "dataset", "seed", "budget", "hyperparameters",
              "decorbench_version", "git_commit", "python", "torch", "cuda", "device", "gpu_name", "gpu_driver",
              "cpu", "host", "country_iso_code", "started_at")
EVAL_FIELDS = ("step", "epoch", "samples", "train_time_s", "wall_time_s", "train_loss", "eval_loss", "eval_accuracy",
               "flops", "energy_j", "energy_source", "co2_kg", "peak_memory_bytes", "decor_loss", "decor_loss_by_layer")
END_FIELDS = ("status", "reason", "totals")
STATUSES = ("completed", "budget", "target", "diverged", "interrupted", "failed")
_WHOLE = ("decor_loss_by_layer",)  # {layer: loss}: one cell, in module order (as columns, depths would interleave)
_NUMERIC = tuple(f for f in EVAL_FIELDS if f not in ("energy_source", *_WHOLE))


def _git(cwd: Path, *args: str) -> str | None:
    """stdout of a git command run in `cwd`, or None if git is missing, slow or fails."""
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    trust = [line.strip() for line in done.stderr.splitlines() if "safe.directory" in line]
    if trust:  # a checkout another user owns (a container's bind mount): git says how to trust it
        warnings.warn(f"git refuses the checkout of {cwd} (another user owns it), so runs record its commit as "
                      f"unknown; to trust it: {trust[-1]} (or set DECORBENCH_GIT_COMMIT)", stacklevel=2)
    return done.stdout.strip() if done.returncode == 0 else None


# What computes a number, besides the package itself: a change elsewhere (results written into the checkout,
# a report, the README) leaves the measurement as the commit describes it.
_CODE_OUTSIDE_PACKAGE = (":(top)benchmarks", ":(top)reports/scripts", ":(top)pyproject.toml", ":(top)constraints.txt")


def source_state(package_dir: Path) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout `package_dir` is tracked in; dirty means its code (the package, benchmarks,
    report scripts, pyproject) differs from the commit. (None, None) when git cannot tell, e.g. an installed copy
    inside some unrelated checkout."""
    if _git(package_dir, "ls-files", "--error-unmatch", "__init__.py") is None:
        return None, None
    commit = _git(package_dir, "rev-parse", "HEAD")
    if commit is None:
        return None, None
    status = _git(package_dir, "status", "--porcelain", "--", ".", *_CODE_OUTSIDE_PACKAGE)  # new files count too
    return commit, None if status is None else status != ""


def cpu_model() -> str | None:
    """The CPU's model name: /proc/cpuinfo's on x86; Arm's /proc/cpuinfo only has part numbers, which lscpu names
    (a Grace host's "Neoverse-V2")."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:  # not Linux
        pass
    try:
        done = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5, env={**os.environ, "LC_ALL": "C"})
    except (OSError, subprocess.SubprocessError):
        done = None
    for line in done.stdout.splitlines() if done is not None and done.returncode == 0 else ():
        if line.startswith("Model name:") and line.split(":", 1)[1].strip() not in ("", "-"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or None


# What provenance() records; a resumed run records it again, for the evals of its new part
PROVENANCE_FIELDS = ("decorbench_version", "git_commit", "git_dirty", "python", "torch", "torchvision", "cuda", "cudnn",
                     "device", "gpu_name", "gpu_driver", "cpu", "cpu_count", "host", "platform", "started_at")


def uncommitted(dirty: bool | None) -> str:
    """What a commit's label adds for its working tree's state (`git_dirty`): nothing when clean."""
    return {True: " + uncommitted code changes", False: ""}.get(dirty, " (uncommitted changes: unknown)")


def _given_commit() -> str | None:
    """$DECORBENCH_GIT_COMMIT when it is a commit hash; anything else is ignored with a warning, never recorded."""
    given = os.environ.get("DECORBENCH_GIT_COMMIT", "").strip()
    if given and not re.fullmatch(r"[0-9a-fA-F]{7,40}", given):
        warnings.warn(f"DECORBENCH_GIT_COMMIT={given!r} is not a commit hash; the commit is recorded as unknown",
                      stacklevel=3)
        return None
    return given.lower() or None


def code_state() -> tuple[str | None, bool | None]:
    """source_state of this decorbench's own checkout."""
    return source_state(Path(__file__).parent)


def provenance(device, code: tuple[str | None, bool | None] | None = None) -> dict:
    """Where and with what a number was measured: versions, source commit, hardware, start time. `code`: the
    code_state() of when the process loaded the code that measures (default: now): a commit made while a suite runs
    is not the code its later runs ran."""
    import torch  # here, not at module level: reading results (reports) should not pay for importing torch
    import torchvision

    device = torch.device(device)
    commit, dirty = code if code is not None else code_state()
    if commit is None:  # a copy of a checkout without its .git (a container, a remote machine): the sender says
        commit = _given_commit()
    gpu_name = gpu_driver = None
    if device.type == "cuda":
        try:
            gpu_name = torch.cuda.get_device_name(device)
            import pynvml
            pynvml.nvmlInit()
            try:
                gpu_driver = pynvml.nvmlSystemGetDriverVersion()
            finally:
                pynvml.nvmlShutdown()
        except Exception:  # provenance is best effort: a missing driver field must not stop a run
            pass
    return {
        "decorbench_version": __version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,  # builds every model
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,  # picks the GPU's conv kernels
        "device": str(device),
        "gpu_name": gpu_name,
        "gpu_driver": gpu_driver.decode() if isinstance(gpu_driver, bytes) else gpu_driver,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "host": platform.node(),
        "platform": platform.platform(),
        "started_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def run_path(out_dir: Path | str, run_id: str) -> Path:
    return Path(out_dir) / "runs" / f"{run_id}.jsonl"


def _jsonable(x):
    """Plain JSON values: numpy/torch scalars and arrays to Python, NaN/Inf to None."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "tolist"):  # numpy scalar/array, torch tensor
        return _jsonable(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _require(record: dict, fields: tuple, kind: str) -> None:
    missing = [f for f in fields if f not in record]
    if missing:
        raise ValueError(f"{kind} record lacks required field(s): {', '.join(missing)}")


class RunWriter:
    """Appends one run's records to `path`, each flushed and fsynced before the call returns.

    resume=False starts the file afresh. resume=True continues an existing file of the same run_id (after cutting
    off a line a crash left half-written) without repeating the run record; a file of another run is an error.
    `resume_after_step`: the step the run continues from (its checkpoint's); eval records past it, written before
    a crash kept the checkpoint from following, are dropped, as the continued run writes them again.
    Used as a context manager, an exception before `end()` records the run as interrupted (KeyboardInterrupt) or
    failed (anything else), then propagates.
    """

    def __init__(self, path: Path | str, run: dict, resume: bool = False, resume_after_step: int | None = None):
        _require(run, RUN_FIELDS, "run")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        continuing = resume and self._prepare_resume(run["run_id"], resume_after_step)
        if resume and not continuing and resume_after_step is not None and self.path.exists():
            raise ValueError(f"{self.path} does not start with a run record, so it cannot be continued from its "
                             f"checkpoint (step {resume_after_step}); restore it, or delete it and the checkpoint "
                             "to run it again")  # starting afresh would lose its records
        # a continued run: the code and machine of the part to come, which may not be the run record's
        first = ({"type": "resume", "step": resume_after_step, **{k: run[k] for k in PROVENANCE_FIELDS if k in run}}
                 if continuing else {"type": "run", **run})
        self._file = open(self.path, "a" if continuing else "w", encoding="utf-8")
        try:
            self._write(first)
        except BaseException:
            self._file.close()
            raise
        if not continuing and os.name == "posix":  # make the new directory entry itself durable
            fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _prepare_resume(self, run_id: str, after_step: int | None) -> bool:
        """True if the file holds this run's records, trimmed to complete lines and to eval records up to
        `after_step`; False if there is nothing to keep."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return False
        keep = data[: data.rfind(b"\n") + 1]
        if _record(data[len(keep):]) is not None:  # a whole last record whose newline an editor dropped
            keep = data + b"\n"
        first = next((_record(line) for line in keep.removeprefix(codecs.BOM_UTF8).splitlines() if line.strip()), None)
        if not (isinstance(first, dict) and first.get("type") == "run"):
            return False  # empty, or the crash cut the run record itself
        if first.get("run_id") != run_id:
            raise ValueError(f"{self.path} holds run {first.get('run_id')!r}, not {run_id!r}; not resuming into it")
        if len(keep) < len(data):
            warnings.warn(f"{self.path}: cut off a truncated last line before resuming", stacklevel=3)
            with open(self.path, "r+b") as f:
                f.truncate(len(keep))
        elif len(keep) > len(data):
            with open(self.path, "ab") as f:
                f.write(b"\n")
        if after_step is not None:
            lines = keep.splitlines(keepends=True)
            kept = [line for line in lines if not _eval_past(line, after_step)]
            if len(kept) < len(lines):
                warnings.warn(f"{self.path}: dropped {len(lines) - len(kept)} eval record(s) past step {after_step}, "
                              "where the run's checkpoint continues it", stacklevel=3)
                tmp = self.path.with_name(self.path.name + ".tmp")
                with open(tmp, "wb") as f:  # replaced whole: a crash now leaves the old file or the new one
                    f.writelines(kept)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
        return True

    def _write(self, record: dict) -> None:
        self._file.write(json.dumps(_jsonable(record), allow_nan=False, default=str) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def eval(self, record: dict) -> None:
        _require(record, EVAL_FIELDS, "eval")
        self._write({"type": "eval", **record})

    def end(self, status: str, reason: str, totals: dict | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        self._write({"type": "end", "status": status, "reason": reason, "totals": totals})
        self._file.close()

    def __enter__(self) -> "RunWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._file.closed:
            if exc_type is None:
                self._file.close()
            else:
                status = "interrupted" if issubclass(exc_type, KeyboardInterrupt) else "failed"
                self.end(status, f"{exc_type.__name__}: {exc}" if str(exc) else exc_type.__name__)


_RUN_RECORD_START = json.dumps({"type": "run"})[:-1].encode() + b", "  # how RunWriter begins every file


def begins_as_written(data: bytes) -> bool:
    """Whether `data` (a file's bytes, maybe cut short by a crash) begins as RunWriter begins a results file: one
    that does not was never written by it, and is not a results file to resume or replace."""
    return data.startswith(_RUN_RECORD_START[:len(data)])


def _record(line: bytes) -> dict | None:
    """The record on one line, or None for a line that is not one (blank, cut short, not a JSON object)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _eval_past(line: bytes, step: int) -> bool:
    record = _record(line)
    return record is not None and record.get("type") == "eval" and (record.get("step") or 0) > step


def read_run(path: Path | str) -> dict:
    """{"run": {...} | None, "evals": [...], "end": {...} | None, "resumes": [...]}; unreadable lines are skipped with
    one warning."""
    path = Path(path)
    out, bad = {"run": None, "evals": [], "end": None, "resumes": []}, []
    lines = path.read_bytes().decode("utf-8-sig", errors="replace").split("\n")  # -sig: a BOM an editor added
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        kind = record.pop("type", None) if isinstance(record, dict) else None
        if kind == "run" and out["run"] is not None:  # files joined with cat: what follows is another run's
            warnings.warn(f"{path}: a second run record at line {number}; only the first run, above it, is read "
                          "(one results file per run)", stacklevel=2)
            break
        if kind == "run":
            out["run"] = record
        elif kind == "eval":
            out["evals"].append(record)
            out["end"] = None  # a resumed run went on after an earlier end: that one is no longer how it ended
        elif kind == "end":  # a resumed run may have ended before; the last end counts
            out["end"] = record
        elif kind == "resume":
            out["resumes"].append(record)
        else:
            bad.append(number)
    if bad:
        shown = ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else "")
        cut = " (truncated last line: run killed mid-write?)" if bad[-1] == len(lines) else ""
        warnings.warn(f"{path}: skipped unreadable line{'s' * (len(bad) > 1)} {shown}{cut}", stacklevel=2)
    return out


def _flatten(record: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in record.items():
        if isinstance(value, dict) and key not in _WHOLE:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _bad_identity(run: dict) -> str | None:
    """What is wrong with the fields that say which run this is (and key every comparison), or None."""
    for key in ("run_id", "method", "model", "dataset", "seed"):
        value, kind = run.get(key), int if key == "seed" else str
        if key not in run:
            return f"lacks {key}"
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"has {key} = {json.dumps(value)}, not {'an integer' if kind is int else 'a string'}"
    return None


def _progress(records: dict) -> tuple[int, bool]:
    """How far a copy of a run got: its eval records, then whether it has its end."""
    return len(records["evals"]), records["end"] is not None


def _part(resumes: list[dict], step: int | None) -> dict:
    """The provenance of the resumed part that measured the eval at `step` ({} for the run's first part); its start
    is the run's."""
    after = [r for r in resumes if step is not None and (r.get("step") or 0) < step]
    return {k: v for k, v in after[-1].items() if k in PROVENANCE_FIELDS and k != "started_at"} if after else {}


def load(paths) -> pd.DataFrame:
    """One row per eval point of every run found (a run without evals: one row), run fields and end status joined;
    the evals of a resumed part carry that part's provenance (commit, GPU, versions, host)."""
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    files = []
    for p in paths:
        if p.is_dir():
            files += sorted(p.glob("runs/*.jsonl")) + sorted(p.glob("*.jsonl"))
        else:
            files.append(p)
    files = list({f.resolve(): f for f in files}.values())  # a file named twice (dir and file) counts once
    runs = {}  # run record → (file, records): a copied results file is the same run, and must not count twice
    for file in files:
        try:
            records = read_run(file)
        except OSError as e:
            warnings.warn(f"{file}: unreadable ({e.strerror or e}), skipped", stacklevel=2)
            continue
        if records["run"] is None:
            warnings.warn(f"{file}: no run record, not a results file; skipped", stacklevel=2)
            continue
        bad = _bad_identity(records["run"])
        if bad:
            warnings.warn(f"{file}: its run record {bad}; skipped", stacklevel=2)
            continue
        key = json.dumps(records["run"], sort_keys=True)
        if key in runs:
            kept_file, kept = runs[key]
            if _progress(records) > _progress(kept):  # keep the copy that got further
                runs[key] = (file, records)
                kept_file, file = file, kept_file
            warnings.warn(f"{file}: the same run as {kept_file} (a copy?); counted once, from {kept_file}",
                          stacklevel=2)
            continue
        runs[key] = (file, records)
    rows = []
    for file, records in runs.values():
        run, end = _flatten(records["run"]), records["end"] or {}
        tail = {"status": end.get("status"), "reason": end.get("reason"),
                **_flatten({"totals": end.get("totals") or {}}), "source": str(file)}
        rows += [{**run, **_part(records["resumes"], e.get("step")), **_flatten(e), **tail}
                 for e in records["evals"] or [{}]]
    if not rows:
        found = {f.parent.parent if f.parent.name == "runs" else f.parent  # results directories of several suites
                 for p in paths if p.is_dir() for f in p.glob("**/*.jsonl")}
        searched = {p.resolve() for p in paths}
        deeper = sorted(str(d) for d in found if d.resolve() not in searched)
        hint = f"; results directories below it: {', '.join(deeper[:5])}{', …' if len(deeper) > 5 else ''}" \
            if deeper else ""
        raise ValueError(f"no results found in {', '.join(map(str, paths)) or '(no paths given)'}{hint}")
    df = pd.DataFrame(rows)
    last = ["status", "reason", *(c for c in df if c.startswith("totals.")), "source"]
    df = df.reindex(columns=[c for c in dict.fromkeys([*df, *EVAL_FIELDS]) if c not in last] + last).infer_objects()
    df[list(_NUMERIC)] = df[list(_NUMERIC)].apply(pd.to_numeric, errors="coerce")
    return df
