"""Re-measure the test accuracy of every published weight and compare it with the authors' log.

    python -m agcnn_zoo reproduce [--models PATTERN] [--dataset NAME] [--data-dir DIR]
                                  [--device auto|cuda|cpu] [--batch-size N] [--limit N]
                                  [--json PATH] [--markdown PATH] [--update-manifest]
                                  [--manifest PATH] [--no-download]
    python eval/reproduce.py ...   (the same)

By default every weight with a record in the manifest is evaluated on the canonical test set of
its training data (rotmnist / cifar10 / pcam, see ``agcnn_zoo.data``); ``--dataset
mnist-rot-aux``, ``cifar10-jpeg`` or ``mnist-rot-sample`` evaluates the matching weights on an
auxiliary set instead. The sets to download, their size and the expected time are printed first.
fp32, TF32 off, fixed order; cuda when available (``--device auto``).

With no ``--dataset`` and no ``--data-dir`` (the zero-configuration run of a fresh machine), a
full set that is not on disk and cannot be downloaded (offline, no network) is reported as NOT
DOWNLOADED, and every rot-MNIST weight shipped in the package is first run on the embedded
sample (``mnist-rot-sample``: 300 mnist-rot-aux digits), a SMOKE CHECK that shows the weights
load and classify rotated digits and confirms no published accuracy.

Verdicts
  PASS / FAIL  on a canonical test set, complete (no --limit, and as many images as the
               authors' log counted): |measured - authors' log| <= the weight's tolerance
               (``tolerance`` in the manifest, default 0.1 points).
  PASS / FAIL  on any other evaluation (auxiliary set, or --limit): only when the manifest holds
               a ``measured`` entry for the same dataset and the same number of images (one
               recorded earlier by ``--update-manifest``, preferring the same device).
  OK / FAIL    the smoke check: accuracy on the embedded sample at least 90%.
  INFO         otherwise: reported for information, no expectation to compare with.
  NOT DOWNLOADED  zero-configuration run only: the full set is absent and could not be fetched.
  MISSING      the test data (or the weight) could not be found where it was asked for; the
               message says what to put where.
  ERROR        anything else went wrong for that model.
The delta column says what it was measured against: (log) the authors' log, (rec) a recorded
measurement; for INFO rows it is shown against the log for information.

Exit code: 1 if any FAIL or ERROR, else 2 if anything was MISSING, else 0 (NOT DOWNLOADED
included: the zero-configuration run succeeds offline once its smoke check passes).
images/s: wall clock of each model's evaluation loop, reading and preprocessing included.

``--update-manifest`` records each measurement in the manifest (dataset, top1, images, device,
date, torch version), replacing an earlier entry for the same dataset and device; it refuses to
record partial (--limit) runs and smoke checks.

Modules: :mod:`.plan` (what runs where, costs), :mod:`.verdicts` (expectations and verdicts),
:mod:`.report` (table, legend, summary, markdown), :mod:`.runner` (arguments and the loop).
"""
from .plan import COSTS, describe_costs, expected_time, plan, shipped, smoke_plan
from .report import LEGEND, format_markdown, format_text, summary_line, table_rows
from .runner import (add_arguments, create_pretrained, device_label, evaluate, main, parse_args,
                  resolve_device, run, set_deterministic, update_manifest)
from .verdicts import (DEFAULT_TOLERANCE, SMOKE_FLOOR, Result, check_preprocessing, decide,
                       expectation, is_complete, normalisation_report)

__all__ = ["main", "run", "parse_args", "add_arguments", "plan", "smoke_plan", "shipped",
           "describe_costs", "expected_time", "COSTS", "expectation", "is_complete",
           "check_preprocessing", "normalisation_report", "decide", "Result", "DEFAULT_TOLERANCE",
           "SMOKE_FLOOR", "format_text", "format_markdown", "table_rows", "summary_line", "LEGEND",
           "evaluate", "update_manifest", "create_pretrained", "resolve_device", "device_label",
           "set_deterministic"]
