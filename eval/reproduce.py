#!/usr/bin/env python
"""Re-measure the test accuracy of every published weight: ``python eval/reproduce.py --help``.

A thin wrapper: the logic (plan, verdicts, reports) is :mod:`agcnn_zoo.reproduce`, also run as
``python -m agcnn_zoo reproduce``.
"""
import sys
from pathlib import Path

if __name__ == "__main__":
    # run from a checkout without installing: this repository's package first
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from agcnn_zoo.__main__ import guarded
    from agcnn_zoo.reproduce import main
    # the same one-line errors as `python -m agcnn_zoo reproduce` (--debug shows a traceback)
    debug = "--debug" in sys.argv
    if debug:
        sys.argv.remove("--debug")
    sys.exit(guarded(main, debug=debug))
