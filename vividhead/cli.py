"""The `vividhead` command line: one subcommand per job, each defined in `vividhead.commands.<name>`.

Each command module exposes `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`, and may
declare `INPUT_ERRORS`: the library exceptions that, in that command, report bad input (the trainers
report bad shards and settings as `ValueError`, for example).
Only the command that runs gets its arguments (`add_arguments`): some need heavy imports for their choices
(`eval` lists its metric protocols, which import torch), and every other command would pay them.
Bad input (`vividhead.envfail.InputError`) and environment failures raised anywhere in a command end
it here with one line and exit 2 or 1 (`failure_line`); commands do not catch them themselves. A command
that stops on SIGINT / SIGTERM (`envfail.stop_on_signals`) ends here too, with one line and exit 130 / 143;
so does any command stopped while its arguments are read.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from vividhead import __version__
from vividhead.envfail import Stopped, failure_line, stop_on_signals

COMMANDS = ("build", "sources", "inspect", "train", "stream", "eval", "weights")


def _command_module(name: str):
    return importlib.import_module(f"vividhead.commands.{name}")


def build_parser(command: str) -> argparse.ArgumentParser:
    """The command line: every command with its one-line help, and the arguments of `command` alone (the one argv
    names), so a run imports only what its own command needs."""
    parser = argparse.ArgumentParser(
        prog="vividhead",
        description="Curate talking-head video into training shards; train, stream and evaluate FlashHead.",
    )
    parser.add_argument("--version", action="version", version=f"vividhead {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = _command_module(name)
        parsed = sub.add_parser(name, help=module.HELP, description=module.HELP)
        if name == command:
            module.add_arguments(parsed)
        parsed.set_defaults(run=module.run, input_errors=getattr(module, "INPUT_ERRORS", ()))
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        with stop_on_signals("nothing was started"):
            words = sys.argv[1:] if argv is None else argv
            args = build_parser(next((word for word in words if not word.startswith("-")), "")).parse_args(argv)
    except Stopped as stop:
        print(f"vividhead: {stop.line}", file=sys.stderr, flush=True)
        return 128 + stop.signum
    if args.command != "weights":  # only `weights fetch` downloads, when asked; it honours these if the user sets them
        # Weights are always local: never let a hub library stall on a network retry.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        return int(args.run(args) or 0)
    except Stopped as stop:                           # SIGINT / SIGTERM inside a command that stops on them
        print(f"vividhead {args.command}: {stop.line}", file=sys.stderr, flush=True)
        if argv is None:                              # the command itself, torn down: end without finalising
            _end_now(128 + stop.signum)
        return 128 + stop.signum
    except Exception as err:                          # the one handler of bad input and environment failures
        failure = failure_line(err, where=getattr(args, "out", None), input_errors=args.input_errors)
        if failure is None:
            raise                                     # a bug: the traceback is the report
        message, status = failure
        print(f"vividhead {args.command}: error: {message}", file=sys.stderr)
        return status


def _end_now(status: int) -> None:
    """Exit with `status` without Python's finalisation. A Ray whose start a signal interrupted leaves C++ threads
    that can crash the interpreter's exit (SIGSEGV instead of 128 + the signal); the command has already shut its
    Ray down and said its line, so nothing is left for finalisation to do."""
    sys.stdout.flush()
    os._exit(status)


if __name__ == "__main__":
    sys.exit(main())
