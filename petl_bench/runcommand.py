"""What `petl-bench run` does, and how any command's failures become one line and an exit status.

`run_command(argv)` is the run command on its own: a sweep's worker process and a Slurm job call it
with the command line `runargs.run_argv` spells, so a sweep's run is the hand-typed one, with the same
exit statuses, without the CLI above it. `answered` is what `cli.main` and `run_command` share: bad
input is one line on stderr and exit status 2, a busy run 75, a stop by a signal 130 / 143, and
anything else (a disk or file fault, text that does not decode, a dependency's error, a bug) one
line too, exit status 1, with the traceback kept in a log file that the line names.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

from .config import RunConfig
from .datamodules.catalog import parse_shots
from .errors import UserError
from .files import check_writable_folder
from .guard import BUSY_EXIT, Interrupted, RunBusy
from .recipes import describe as describe_recipe
from .results import record_path
from .runargs import add_run_options, add_transfer_options, config_from_args


def run_command(argv: list[str]) -> int:
    """`petl-bench run ...` for `argv` = `["run", ...]`, or a transfer run's `["eval", "--from", ...]`:
    its exit status, its output on stdout and stderr."""
    if argv[:1] == ["eval"]:
        transfer = add_transfer_options(argparse.ArgumentParser(prog="petl-bench eval")).parse_args(argv[1:])
        return answered(lambda: transfer_from_args(transfer), argv)
    if argv[:1] != ["run"]:
        raise ValueError(f"not a run's command line: {argv}")
    parser = add_run_options(argparse.ArgumentParser(prog="petl-bench run"))
    args = parser.parse_args(argv[1:])
    return answered(lambda: run_from_args(args), argv)


def run_from_args(args: argparse.Namespace) -> int:
    """The run `petl-bench run`'s parsed options name: skipped when its record is there, else executed."""
    # Every check that needs no model comes first, so that a bad input answers at once.
    cfg = config_from_args(args)
    parse_shots(cfg.data.dataset, cfg.data.split)
    from .datamodules.scan import check_root  # PIL and numpy: only for a command that reads a root

    check_root(cfg.data.root)
    from .run import execute  # the training stack: once the input is known good

    path = record_path(cfg)
    if _already_done(cfg, args.force):
        return 0
    check_writable_folder(cfg.out, "--out")
    if cfg.recipe != "shared":
        print(recipe_line(cfg), flush=True)
    if cfg.model.pretrained is None:  # on stdout, with the run's own lines: it is no error
        print(
            f"note: {cfg.model.arch} is randomly initialised (no --pretrained weights): its accuracy "
            "says nothing about the method",
            flush=True,
        )
    record = execute(cfg, progress=not args.no_progress, force=args.force, wait=args.if_locked == "wait")
    print(format_accuracy(record))
    print("fast_dev_run: no record written" if cfg.train.fast_dev_run else f"record: {path}")
    return 0


def _already_done(cfg: RunConfig, force: bool) -> bool:
    """Print a finished run's accuracy and where its record lies; False where it is to run."""
    from .run import finished_record

    existing = finished_record(cfg, force)
    if existing:
        print(format_accuracy(existing))
        print(f"already done: {record_path(cfg)} (--force to run again)")
    return bool(existing)


def recipe_line(cfg: RunConfig) -> str:
    """The recipe a run starts from, as the run prints it: its file, source and values."""
    recipe = describe_recipe(cfg)
    values = ", ".join(f"{key}={value}" for key, value in recipe["set"].items()) or "no values"
    return f"recipe: {recipe['name']} ({recipe['file']}, from {recipe['source']}): {values}"


def transfer_from_args(args: argparse.Namespace) -> int:
    """`eval --from RUN`: the finished run's trained parameters tested on another dataset, root or
    class subset, as a run of its own (`petl_bench.transfer`): skipped when its record is there."""
    from .datamodules.scan import check_root
    from .transfer import find_source, refusal, transfer_config

    source = find_source(args.source)
    cfg = transfer_config(source.cfg, args.dataset, args.root, args.classes)
    check_root(cfg.data.root)
    from .module import PetlModule  # the training stack: once the input is known good
    from .registry import get_method

    method = get_method(cfg.method).cls  # whether it scores unseen classes: its class says
    assert issubclass(method, PetlModule)  # a method's class is one; the torch-free registry types it `type`
    problem = refusal(source, cfg, method.open_vocabulary, method.shared)
    if problem:  # before anything is read; the target's tasks are checked once it is (`run.load_source`)
        raise UserError(problem)
    from .run import execute

    path = record_path(cfg)
    if _already_done(cfg, args.force):
        return 0
    record = execute(cfg, progress=not args.no_progress, force=args.force, wait=args.if_locked == "wait")
    print(format_accuracy(record))
    print(f"record: {path}")
    return 0


def format_accuracy(record: dict) -> str:
    lines = [
        f"{record['run_name']} on {record['dataset']} {record['split']} seed {record['seed']} "
        f"({record['trainable_params']:,} trainable parameters)",
        f"  {'task':<14}{'accuracy %':>11}",
    ]
    for task, value in record["accuracy"].items():
        lines.append(f"  {task:<14}{value:>11.2f}")
    return "\n".join(lines)


def answered(command: Callable[[], int], argv: list[str]) -> int:
    """`command()`'s exit status, every failure it raises answered in one line on stderr."""
    warnings.formatwarning = _one_line_warning
    try:
        return command()
    except RunBusy as busy:
        print(f"petl-bench: {busy}", file=sys.stderr)
        return BUSY_EXIT
    except UserError as err:
        print(f"petl-bench: error: {err}", file=sys.stderr)
        return 2
    except Interrupted as stop:
        print(f"petl-bench: {stop}", file=sys.stderr)
        return stop.exit_status
    except KeyboardInterrupt:
        print("petl-bench: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader stopped reading (`| head`): end quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush cannot fail again
        return 141  # 128 + SIGPIPE, what a shell reports for a tool the pipe ended
    except Exception as err:  # the last guard: no user sees a stack trace
        print(f"petl-bench: {unexpected(err)} ({kept_traceback(err, argv)})", file=sys.stderr)
        return 1


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"{category.__name__}: {message}\n"  # for users, not the source line that warned


def unexpected(err: Exception) -> str:
    """What an exception that no command turned into a UserError means, in one line."""
    message = (str(err).strip().splitlines() or [type(err).__name__])[0]
    if isinstance(err, OSError):
        where = f"{err.filename}: " if err.filename else ""
        return f"error: {where}{err.strerror or message}"
    if isinstance(err, UnicodeError):
        return f"error: cannot read or write text: {message}"
    module = type(err).__module__.split(".")[0]
    if module not in ("builtins", __package__):
        return f"error in {module}: {type(err).__name__}: {message}"
    return f"internal error, this is a bug (please report it with the log): {type(err).__name__}: {message}"


def kept_traceback(err: Exception, command: list[str]) -> str:
    """Writes the command and its traceback to a log file in the temporary folder (a full `--out`
    could not take it); says where, or why not."""
    folder = Path(tempfile.gettempdir()) / "petl-bench-logs"
    path = folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    try:
        folder.mkdir(exist_ok=True)
        path.write_text(
            f"petl-bench {' '.join(map(str, command))}\n" + "".join(traceback.format_exception(err)),
            encoding="utf-8",
            errors="replace",
        )
    except OSError as log_err:
        return f"traceback not kept: {log_err.strerror or log_err}"
    return f"traceback: {path}"
