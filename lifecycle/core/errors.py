"""The one kind of error a user can cause, and how a stage reports it.

Bad params, bad files and bad folders raise :class:`UserError` with one sentence that
names the key or the file. :func:`run_stage` turns it into that sentence on stderr and a
non-zero exit, never a traceback; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import sys
from collections.abc import Callable


class UserError(Exception):
    """A mistake the user can fix: the message is one sentence naming what to fix."""


EXIT_USER_ERROR = 2


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's ``main``; a :class:`UserError` becomes one line and exit code 2."""
    try:
        main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR) from None
