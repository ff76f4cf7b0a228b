"""SIGINT and SIGTERM stop a command with one line (`vividhead.envfail.stop_on_signals`), without Ray.

The build itself is stopped for real in `tests/test_build_kill_anywhere.py` (SIGTERM inside `ray.init`,
SIGINT to the process group mid-build); here, in a small Python process each: the line and exit status,
an inherited SIG_IGN of SIGINT kept, and a second signal during the first one's teardown ending the
process at once.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Signals itself with `first`; while "tearing down" (as a build shuts its Ray down) gets `second`, if any.
SCRIPT = """
import os, sys, time
from vividhead.envfail import Stopped, stop_on_signals

first, second = int(sys.argv[1]), int(sys.argv[2])
try:
    with stop_on_signals("run it again to resume OUT", "vividhead build"):
        try:
            os.kill(os.getpid(), first)
            time.sleep(1)
            print("not stopped", flush=True)
        finally:
            if second:
                os.kill(os.getpid(), second)
                time.sleep(1)
except Stopped as stop:
    print(f"vividhead build: {stop.line}", file=sys.stderr)
    sys.exit(128 + stop.signum)
"""


def _run(first: int, second: int = 0, ignore_sigint: bool = False) -> subprocess.CompletedProcess:
    def _dispositions() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN if ignore_sigint else signal.SIG_DFL)

    return subprocess.run([sys.executable, "-c", SCRIPT, str(int(first)), str(int(second))], cwd=REPO,
                          capture_output=True, text=True, timeout=60, preexec_fn=_dispositions)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_with_one_line_and_its_exit_status(signum: signal.Signals) -> None:
    done = _run(signum)
    assert done.returncode == 128 + signum, done
    assert done.stderr.splitlines() == [f"vividhead build: stopped by {signum.name}; run it again to resume OUT"]
    assert done.stdout == ""


def test_a_second_signal_during_teardown_ends_at_once_with_the_same_line() -> None:
    done = _run(signal.SIGTERM, signal.SIGINT)
    assert done.returncode == 130, done
    assert done.stderr.splitlines() == ["vividhead build: stopped by SIGINT; run it again to resume OUT"]


def test_an_ignored_sigint_stays_ignored() -> None:
    """A background job of a non-interactive shell starts with SIGINT ignored: so it stays, as in Python."""
    done = _run(signal.SIGINT, ignore_sigint=True)
    assert (done.returncode, done.stdout, done.stderr) == (0, "not stopped\n", "")
