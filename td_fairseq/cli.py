"""Shared command-line behaviour: bad input is one clear line and a non-zero exit.

Only errors a user can cause are shortened (bad arguments, missing or unreadable files,
settings the configs reject); anything else keeps its traceback, because it is a bug.
"""
import argparse
import contextlib
import os
import sys

from .files import UserError, check_out_dir  # noqa: F401  (scripts reach both through cli)
from .results import command_line  # noqa: F401  (scripts record their command through cli)


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where there is one: "(default: None)" on an option without a
    default, or "(default: False)" on a flag, says nothing a reader can use."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises UserError instead of printing usage plus a message and exiting 2,
    and shows every option's default in ``--help``."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        raise UserError(message)


@contextlib.contextmanager
def user_errors():
    """Turn a config's ValueError (e.g. gamma outside [0, 1]) into a UserError."""
    try:
        yield
    except ValueError as error:
        raise UserError(str(error)) from None


def quiet_fairseq_logging() -> None:
    """Importing fairseq sets the root logger to DEBUG, which floods a sweep with library
    chatter (matplotlib font searches among it); our scripts keep warnings and errors only."""
    import logging

    import warnings

    import fairseq  # noqa: F401  (its import is what changes the root logger)
    logging.getLogger().setLevel(logging.WARNING)
    # fairseq's iterators always ask for pinned memory; torch warns once per batch iterator on CPU
    warnings.filterwarnings("ignore", message=".*'pin_memory' argument is set as true.*")


def run(main, argv=None, prog=None) -> int:
    """Call ``main(argv)``; turn UserError and Ctrl-C into one line and an exit code."""
    prog = prog or os.path.basename(sys.argv[0] or "td_fairseq")
    try:
        main(argv)
        return 0
    except UserError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; every file written so far is complete", file=sys.stderr)
        return 130
