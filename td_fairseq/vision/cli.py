"""What the vision scripts share: bad input becomes one line on stderr and exit code 1.

Only errors a user can cause are shortened (bad arguments, missing data or checkpoint,
settings the configs reject); anything else keeps its traceback, because it is a bug.
"""
import argparse
import contextlib
import sys

from .checkpoint import CheckpointError
from .data import DataError


class UsageError(Exception):
    """Bad command-line input; the message is one line."""


USER_ERRORS = (UsageError, DataError, CheckpointError)


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage plus a message and exiting 2."""

    def error(self, message):
        raise UsageError(message)


@contextlib.contextmanager
def settings_check():
    """Turn a config's ValueError (e.g. gamma outside [0, 1]) into a UsageError."""
    try:
        yield
    except ValueError as e:
        raise UsageError(str(e)) from None


def run(body, argv, prog: str) -> int:
    """Call ``body(argv)``; a user error prints ``prog: error: ...`` and returns 1."""
    try:
        body(argv)
    except USER_ERRORS as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    return 0
