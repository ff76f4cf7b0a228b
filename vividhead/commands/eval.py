"""`vividhead eval`: not built yet."""

from __future__ import annotations

import argparse
import sys

HELP = "eval (not built yet)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    print("vividhead eval is not built yet.", file=sys.stderr)
    return 2
