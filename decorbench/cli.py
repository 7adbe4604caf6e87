"""decorbench: train BP and DBP side by side and compare what they cost.

  decorbench run CONFIG|BUILTIN [--out DIR] [--device auto|cpu|cuda|cuda:N] [--resume] [--set key=value ...]
  torchrun --nproc_per_node=N -m decorbench run ...   (one run on N processes: DDP; rank 0 writes and prints)
  decorbench report RESULTS... [-o FILE.html] [--target X]
  decorbench env [--country ISO3]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shlex
from datetime import datetime, timezone
import signal
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

EXIT_BAD_INPUT, EXIT_INTERRUPTED = 2, 130
_locks: list = []  # the results directory's lock file while this process writes there (see _lock)


def _say(text: str, file=None) -> None:
    """Print to a reader that may be gone (`| head` ended, a closed terminal): then the stream goes to /dev/null,
    so that neither this line nor any later one fails a run or the exit."""
    file = file or sys.stderr
    try:
        print(text, file=file, flush=True)
    except BrokenPipeError:
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, file.fileno())
            os.close(devnull)


def _fail(message: str) -> int:
    from decorbench.distributed import is_main

    if is_main():  # under torchrun every rank fails alike; one line is enough
        _say(f"decorbench: error: {message}")
    return EXIT_BAD_INPUT


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    _say(f"decorbench: warning: {message}")


class _Signals:
    """SIGINT/SIGTERM during `decorbench run`. While it starts they only set `stop`: nothing is half-done yet, and
    an exception raised inside torch's import can abort the process. Once the suite runs (`running`), the first is
    announced with the command that continues, the current run checkpoints after its step and stops, and a second
    SIGINT ends the process at once. Not by raising KeyboardInterrupt: raised inside a library's lock (codecarbon's
    scheduler takes one without try/finally) it left the lock held and the clean-up waiting on it forever. Every
    record is on disk already, so exiting loses nothing but the current run's end record. A terminal's Ctrl-C also
    reaches the forked DataLoader workers, which inherit this handler: there it does nothing, the stop is this
    process's to make (and to announce once)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.stop = threading.Event()
        self.hint: str | None = None
        self.announce = False
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)

    def running(self, resume_hint: str, announce: bool) -> None:
        self.hint, self.announce = resume_hint, announce

    def _handle(self, signum, frame) -> None:
        if os.getpid() != self.pid:
            return
        if self.hint is not None and self.stop.is_set() and signum == signal.SIGINT:
            _say("\ndecorbench: aborted; every record written so far is kept (the current run has no end record: "
                 f"{self.hint} continues it from its last checkpoint)")
            with contextlib.suppress(OSError):
                sys.stdout.flush()
            os._exit(EXIT_INTERRUPTED)
        if self.announce and not self.stop.is_set():
            _say(f"\ndecorbench: {signal.Signals(signum).name}: saving a checkpoint after the current step, then "
                 f"stopping; continue with: {self.hint}")
        self.stop.set()


class _Progress:
    """One tqdm bar per run on a terminal; elsewhere (a log file, a pipe) a plain line at a run's first eval point and
    then at most once a minute. Each run's end is said as it ends."""

    PLAIN_EVERY_S = 60.0

    def __init__(self) -> None:
        self.bar, self.said_at = None, -math.inf

    def __call__(self, spec):
        from tqdm import tqdm

        self.close()
        self.said_at = -math.inf

        def on_step(step: int, planned: int | None, record: dict | None) -> None:
            if self.bar is None:  # from the step a resumed run continues at: its rate counts only steps it takes
                self.bar = tqdm(total=planned, initial=max(step - 1, 0), desc=spec.run_id, unit="step",
                                disable=None, leave=False, file=sys.stderr)
            self.bar.update(step - self.bar.n)
            if record is None:
                return
            accuracy, seconds = f"{record['eval_accuracy']:.3f}", f"{record['train_time_s']:.1f}"
            self.bar.set_postfix(acc=accuracy, train_s=seconds)
            if self.bar.disable and time.monotonic() - self.said_at >= self.PLAIN_EVERY_S:
                self.said_at = time.monotonic()
                _say(f"  {spec.run_id}: step {step}{f'/{planned}' if planned else ''}, accuracy {accuracy}, "
                     f"{seconds} s of training")
        return on_step

    def ended(self, end: dict) -> None:
        self.close()
        _say(f"  {end['run_id']}: {end['status']} ({end['reason']})")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _plan(args, config, world_size: int) -> tuple[Path, list] | str:
    """(results directory, runs to do), or why not in one line. Reads the results directory: rank 0 only."""
    from decorbench.data import damaged_data, missing_data
    from decorbench.suite import ConfigError, pending_runs

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out or Path("results") / f"{config.name}-{stamp}")
    try:
        todo = pending_runs(config, out, args.resume, world_size)
    except (ConfigError, ValueError) as e:
        return str(e)
    except OSError as e:
        return f"--out {out}: cannot read it ({e.strerror or e})"
    batch = max(spec.train.batch_size for spec in config.runs())
    unusable = todo and (missing_data(config.dataset, config.data.root, batch)
                         or damaged_data(config.dataset, config.data.root, batch))
    if unusable:
        return unusable
    for folder in ("runs", "checkpoints"):  # the last check: can results and checkpoints be written there at all
        try:
            (out / folder).mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=out / folder):
                pass
        except OSError as e:
            return f"--out {out}: cannot write {folder} there ({e.strerror or e})"
    held_by = _lock(out)
    if held_by is not None:
        return (f"--out {out} is in use by another decorbench run ({held_by}); let it end, or choose another "
                "--out")
    try:  # again, now that no other run can change them: one that held the lock may have just finished a run
        return out, pending_runs(config, out, args.resume, world_size)
    except (ConfigError, ValueError) as e:
        return str(e)


def _lock(out: Path) -> str | None:
    """Lock `out` for this process until `_unlock`; else who holds it. Two runs writing one results directory would
    interleave their records and replace each other's checkpoints."""
    try:
        import fcntl
    except ImportError:  # not POSIX: unlocked
        return None
    f = open(out / ".lock", "a+", encoding="utf-8")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip()
        f.close()
        return f"process {holder}" if holder else "a process"
    except OSError as e:  # a file system without locks (some NFS, Lustre, FUSE mounts)
        f.close()
        warnings.warn(f"{out} cannot be locked ({e.strerror or e}): run one decorbench at a time on it")
        return None
    f.truncate(0)
    f.write(f"{os.getpid()} on {os.uname().nodename}\n")
    f.flush()
    _locks.append(f)
    return None


def _unlock() -> None:
    while _locks:
        _locks.pop().close()  # closing releases the lock


def _stopped_before_start() -> int:
    _say("decorbench: stopped by a signal before any run started")
    return EXIT_INTERRUPTED


def _run(args) -> int:
    signals = _Signals()  # first: torch's import takes seconds
    from decorbench import distributed
    from decorbench.suite import ConfigError, load_config
    from decorbench.train import resolve_device

    try:
        config = load_config(args.config, args.set)
        if signals.stop.is_set():
            return _stopped_before_start()
        device = resolve_device(args.device)
        if args.out == "":
            raise ValueError("--out is empty: name a results directory")
        if args.resume and not args.out:
            raise ValueError("--resume needs --out DIR: the results directory of the suite to continue")
        if config.budget.energy_only and device.type != "cuda":
            raise ValueError(f"budget.max_energy_j is the only limit, but energy is measured on NVIDIA GPUs only, not "
                             f"on {device.type}: add max_epochs, max_steps or max_train_seconds")
        device = distributed.init(device)  # under torchrun: join the process group, this rank's device
    except (ConfigError, ValueError) as e:
        return _fail(str(e))
    try:
        plan = distributed.broadcast(_plan(args, config, distributed.world_size()) if distributed.is_main() else None)
        return _fail(plan) if isinstance(plan, str) else _run_suite(args, config, device, signals, *plan)
    finally:
        _unlock()
        distributed.shutdown()


def _run_suite(args, config, device, signals: _Signals, out: Path, todo: list) -> int:
    from decorbench import distributed
    from decorbench.results import load
    from decorbench.suite import run_suite
    from decorbench.summary import format_summary, format_sweeps, summarize

    main, world = distributed.is_main(), distributed.world_size()
    sets = [f"--set={assignment}" for assignment in args.set]
    device_flag = ["--device", args.device] if args.device != "auto" else []
    again = [*distributed.launch_prefix(), "decorbench", "run", args.config, "--out", str(out), *device_flag, *sets,
             "--resume"]
    signals.running(shlex.join(again), announce=main)
    if main:
        where = f"{world} processes ({device.type})" if world > 1 else device
        _say(f"decorbench: suite {config.name!r}: {len(todo)} run(s) to do on {where}, results in {out}/runs")
    progress = _Progress() if main else None
    ends = run_suite(config, out, device, todo, should_stop=signals.stop.is_set, progress=progress,
                     on_end=progress.ended if main else lambda end: None)
    interrupted = distributed.any_rank(signals.stop.is_set())
    if not ends and interrupted:
        return _stopped_before_start() if main else EXIT_INTERRUPTED
    if main:
        progress.close()
        run_ids = {spec.run_id for spec in config.runs()}
        try:
            evals = load(out)
        except ValueError:  # no results file could be written (a full disk): each run's failure is said above
            evals = None
        if evals is not None and evals.loc[evals["run_id"].isin(run_ids), "eval_accuracy"].notna().any():
            evals = evals[evals["run_id"].isin(run_ids)]
            target = config.budget.target_accuracy
            swept = format_sweeps(evals, target)
            if swept:
                _say(f"{swept}\nthe summary below pools each method's settings, so it gives no speed-up:", sys.stdout)
            _say(format_summary(summarize(evals, target)), sys.stdout)
            _say_busy(evals)
            held = config.data.options.get("validation", 0)
            if held:
                _say(f"decorbench: these accuracies are on a validation set, {held:.0%} of the training set held out "
                     "(data.options.validation), not on the test set: choose settings with them, compare methods on "
                     "the test set")
    if interrupted:
        return EXIT_INTERRUPTED
    failed = sum(end["status"] == "failed" for end in ends)
    if failed and main:
        _say(f"decorbench: {failed} run(s) failed, each said why above; once that is fixed, continue with: "
             f"{shlex.join(again)}")
    return 1 if failed else 0


def _say_busy(evals) -> None:
    """The runs timed on a busy machine: their times are in the summary just printed."""
    from decorbench.report.runs import busy

    slowed, cores = busy(evals.drop_duplicates("run_id", keep="last"))
    if len(slowed):
        _say(f"decorbench: {len(slowed)} run(s) were timed on a busy machine ({', '.join(slowed['run_id'])}): other "
             f"processes kept up to {cores:.2g} CPU cores busy while they ran; their times are slower than their own "
             "work makes them")


def _env(args) -> int:
    from decorbench.env import describe_environment
    from decorbench.meters.carbon import country_error

    unknown_country = country_error(args.country)
    if unknown_country:
        return _fail(f"--country: {unknown_country}")
    _say(describe_environment(country_iso_code=args.country), sys.stdout)
    return 0


def _report(args) -> int:
    from decorbench.report import render_report

    if args.output == "":
        return _fail("-o is empty: name the .html file to write")
    try:
        one_dir = len(args.results) == 1 and Path(args.results[0]).is_dir()
        default = Path(args.results[0]) / "report.html" if one_dir else Path("report.html")
        path = render_report(args.results, Path(args.output) if args.output else default, target=args.target)
    except ValueError as e:
        return _fail(str(e))
    except OSError as e:
        return _fail(f"cannot read {e.filename or 'the results'} ({e.strerror or e})")
    _say(f"decorbench: report written to {path}")
    return 0


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (what to run for help in it) and exit 2, like every bad input."""

    def error(self, message: str):
        raise _UsageError(f"{message} (see: {self.prog} --help)")


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 done, 1 a run failed, 2 bad input (one line, nothing written), 130 interrupted."""
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    interrupted = threading.Event()

    def interrupt(signum, frame):
        interrupted.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)  # `run` replaces it with its own
    try:
        status = _main(argv)
        if interrupted.is_set():  # a library caught the KeyboardInterrupt on its way (numpy's import, in torch's)
            raise KeyboardInterrupt
        return status
    except _UsageError as e:
        return _fail(str(e))
    except KeyboardInterrupt:  # Ctrl-C in report or env (run has its own handler)
        _say("\ndecorbench: aborted; every record written so far is kept")
        return EXIT_INTERRUPTED
    finally:
        for signum, handler in handlers.items():  # a caller's own handlers, back as they were
            signal.signal(signum, handler)


def _main(argv: list[str] | None) -> int:
    from decorbench.configs import builtin_names

    parser = _Parser(prog="decorbench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a suite of BP and DBP trainings (a TOML file or a built-in name)")
    run.add_argument("config", help=f"path to a suite TOML, or a built-in: {', '.join(builtin_names())}")
    run.add_argument("--out", help="results directory (default: a new results/<suite>-<UTC time>)")
    run.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    run.add_argument("--resume", action="store_true",
                     help="in --out: skip finished runs, continue unfinished ones from their last checkpoint")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config key, e.g. --set budget.max_epochs=3 --set 'models=[\"mlp\"]'; "
                          "sweep settings: --set 'sweep.train.lr=[1e-3, 3e-3]'; one method's own: "
                          "--set per_method.dbp.train.lr=1e-2")
    report = sub.add_parser("report", help="write a self-contained HTML report comparing BP and DBP")
    report.add_argument("results", nargs="+", help="results directories (a suite's --out) or .jsonl files")
    report.add_argument("-o", "--output", help="HTML file to write (default: DIR/report.html for one results "
                                               "directory, else ./report.html)")
    report.add_argument("--target", type=float, help="target accuracy in (0, 1] for the to-target numbers "
                                                      "(default: the runs' budget.target_accuracy if they share "
                                                      "one, else BP's median final accuracy per dataset and model)")
    env = sub.add_parser("env", help="hardware, versions, and which meters work here (and why not)")
    env.add_argument("--country", default="NLD", help="ISO 3166-1 alpha-3 code the carbon probe uses (default NLD)")
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # the command's own help lists what it takes
        {"run": run, "report": report, "env": env}[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # a user sees every warning, as one line, not Python's source excerpt
        warnings.showwarning = _show_warning
        return {"run": _run, "report": _report, "env": _env}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
