"""The one kind of error a user can cause, and how a stage reports it.

Bad params, bad files and bad folders raise :class:`UserError` with one sentence that
names the key or the file. :func:`run_stage` turns it into that sentence on stderr and a
non-zero exit, never a traceback; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable


class UserError(Exception):
    """A mistake the user can fix: the message is one sentence naming what to fix."""


EXIT_USER_ERROR = 2


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's ``main``; a :class:`UserError` becomes one line and exit code 2.

    A stage that succeeds and used torch leaves its numerics fingerprint under ``.numerics/``
    (:func:`lifecycle.core.numerics.record`), named after the stage and its arguments
    (``train``, ``evaluate-finetune``), for the MLflow mirror.
    """
    try:
        main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR) from None
    from lifecycle.core import numerics

    spec = getattr(sys.modules.get(main.__module__), "__spec__", None)  # python -m stages.train: __main__
    module = spec.name if spec is not None else main.__module__
    if module.startswith("stages.") and int(os.environ.get("RANK", "0")) == 0:
        arguments = [argument for argument in sys.argv[1:] if not argument.startswith("-")]
        numerics.record("-".join([module.rpartition(".")[2], *arguments]))
