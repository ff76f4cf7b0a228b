"""The `vividhead` command line: one subcommand per job, each defined in `vividhead.commands.<name>`.

Each command module exposes `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`.
Modules are imported only when their subcommand runs, so `vividhead --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from vividhead import __version__
from vividhead.envfail import environment_message

COMMANDS = ("build", "inspect", "train", "stream", "eval", "weights")


def _command_module(name: str):
    return importlib.import_module(f"vividhead.commands.{name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vividhead",
        description="Curate talking-head video into training shards; train, stream and evaluate FlashHead.",
    )
    parser.add_argument("--version", action="version", version=f"vividhead {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = _command_module(name)
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "weights":  # only `weights fetch` downloads, when asked; it honours these if the user sets them
        # Weights are always local: never let a hub library stall on a network retry.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        return int(args.run(args) or 0)
    except Exception as err:
        message = environment_message(err)
        if message is None:
            raise
        print(f"vividhead {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
