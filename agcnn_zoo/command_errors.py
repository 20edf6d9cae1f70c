"""How a command of ``python -m agcnn_zoo`` ends on an expected failure: one line on stderr
saying what to do, not a traceback (``--debug`` shows it). Shared by the main CLI, the train
command and ``eval/reproduce.py``."""
from __future__ import annotations

import sys
from typing import Callable

from .io.errors import one_line

__all__ = ["EXPECTED_ERRORS", "guarded"]

#: what a command reports as one line (anything else is a bug and shows its traceback)
EXPECTED_ERRORS = (ValueError, KeyError, FileNotFoundError, RuntimeError, OSError, TypeError)


def guarded(fn: Callable[[], int], debug: bool = False) -> int:
    """Run a command: an expected failure is one line on stderr and exit code 1 (2 for a
    run's own files or data, which the train command reports itself); ``debug`` re-raises."""
    try:
        return fn()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except EXPECTED_ERRORS as e:
        if debug:
            raise
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 1
