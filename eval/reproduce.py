#!/usr/bin/env python
"""Re-measure the test accuracy of every published weight and compare it with the authors' log.

    python eval/reproduce.py [--models PATTERN] [--dataset NAME] [--data-dir DIR]
                             [--device auto|cuda|cpu] [--batch-size N] [--limit N]
                             [--json PATH] [--markdown PATH] [--update-manifest]
                             [--manifest PATH] [--no-download]

By default every model with a record in the weights manifest is evaluated on the canonical test
set of its training data (rotmnist / cifar10 / pcam, see ``agcnn_zoo.data``); ``--dataset
mnist-rot-aux`` or ``cifar10-jpeg`` evaluates the matching models on an auxiliary set instead.
fp32, TF32 off, fixed order; cuda when available (``--device auto``).

Verdicts
  PASS / FAIL  on a canonical test set, complete (no --limit, and as many images as the
               authors' log counted): |measured - authors' log| <= the weight's tolerance
               (``tolerance`` in the manifest, default 0.1 points).
  PASS / FAIL  on any other evaluation (auxiliary set, or --limit): only when the manifest holds
               a ``measured`` entry for the same dataset and the same number of images (one
               recorded earlier by ``--update-manifest``, preferring the same device); the
               measurement is then compared with it, within the same tolerance. This guards
               the offline sets against regressions without ever confusing them with the paper's.
  INFO         otherwise: reported for information, no expectation to compare with.
  MISSING      the test data (or the weight) could not be found; the message says what to put
               where.
  ERROR        anything else went wrong for that model.
The delta column says what it was measured against: (log) the authors' log, (rec) a recorded
measurement; for INFO rows it is shown against the log for information.

Exit code: 1 if any FAIL or ERROR, else 2 if anything was MISSING, else 0.
images/s: wall clock of each model's evaluation loop, reading and preprocessing included.

``--update-manifest`` records each measurement in the manifest (dataset, top1, images, device,
date, torch version), replacing an earlier entry for the same dataset and device; it refuses to
record partial (--limit) runs.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import fnmatch
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

from agcnn_zoo import data as zdata
from agcnn_zoo.hub import WeightsUnavailableError
from agcnn_zoo.hub.manifest import load_manifest, manifest_path, save_manifest

DEFAULT_TOLERANCE = 0.1


@dataclass
class Result:
    model: str
    dataset: str
    images: int = 0
    paper: Optional[float] = None
    paper_confirmed: bool = False
    log: Optional[float] = None
    measured: Optional[float] = None
    correct: Optional[int] = None
    expected: Optional[float] = None
    expected_from: Optional[str] = None  # "log" or "recorded"
    delta: Optional[float] = None
    tolerance: float = DEFAULT_TOLERANCE
    verdict: str = "INFO"
    complete: bool = False
    seconds: Optional[float] = None
    images_per_s: Optional[float] = None
    device: str = ""
    message: str = ""
    data: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- pieces

def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="reproduce.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="See the module docstring (head of eval/reproduce.py) for the verdict rules.")
    p.add_argument("--models", default="*", help="fnmatch pattern(s) over model names, "
                   "comma-separated (default: all published weights)")
    p.add_argument("--dataset", choices=sorted(zdata.EVAL_SETS), default=None,
                   help="evaluate on this set (default: each model's canonical test set)")
    p.add_argument("--data-dir", default=None, help=f"data folder (default: ${zdata.DATA_ENV} or "
                   f"{zdata.default_data_dir()})")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N images only (no comparison "
                   "with the authors' log; see the verdict rules)")
    p.add_argument("--json", dest="json_path", default=None, help="write the results as JSON")
    p.add_argument("--markdown", default=None, help="write the results as a markdown table")
    p.add_argument("--update-manifest", action="store_true",
                   help="record the measurements in the manifest")
    p.add_argument("--manifest", default=None, help="weights manifest to read (and update); "
                   "default: the repository's weights_manifest.json")
    p.add_argument("--no-download", action="store_true",
                   help="never download test data (also: AGCNN_ZOO_OFFLINE=1)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.batch_size < 1:
        p.error("--batch-size must be >= 1")
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be >= 1")
    if args.update_manifest and args.limit is not None:
        p.error("--update-manifest records complete runs only; drop --limit")
    return args


def resolve_device(choice: str) -> torch.device:
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


def device_label(device: torch.device) -> str:
    """A stable description of the hardware (used to match manifest entries)."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.machine() or 'unknown'})"


def set_deterministic() -> None:
    # plain fp32 everywhere: TF32 would move accuracies by a few images
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


@contextlib.contextmanager
def _manifest_env(path: Optional[str]):
    """Make ``create_model`` read its weight records from the same manifest as this run."""
    if not path:
        yield
        return
    old = os.environ.get("AGCNN_ZOO_MANIFEST")
    os.environ["AGCNN_ZOO_MANIFEST"] = str(Path(path).resolve())
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("AGCNN_ZOO_MANIFEST", None)
        else:
            os.environ["AGCNN_ZOO_MANIFEST"] = old


def create_pretrained(name: str) -> torch.nn.Module:
    import agcnn_zoo as zoo
    return zoo.create_model(name, pretrained=True)


def plan(weights: Dict[str, dict], pattern: str, dataset: Optional[str]) -> List[tuple]:
    """``(model, eval set)`` pairs: published models matching ``pattern`` (fnmatch patterns,
    comma-separated; sorted), each on
    ``dataset`` if given (models trained on other data are left out), else on its canonical set."""
    todo = []
    for name in sorted(weights):
        if not any(fnmatch.fnmatchcase(name, pat.strip()) for pat in pattern.split(",")):
            continue
        trained_on = weights[name].get("dataset")
        if dataset is None:
            if trained_on in zdata.CANONICAL_SET:
                todo.append((name, zdata.CANONICAL_SET[trained_on]))
        elif zdata.EVAL_SETS[dataset].serves == trained_on:
            todo.append((name, dataset))
    return todo


def expectation(record: dict, eval_set: str, complete: bool, images: int, device: str):
    """``(value, "log" | "recorded")`` to compare with, or ``(None, None)`` (see the docstring)."""
    acc = record.get("accuracy", {})
    log = (acc.get("checkpoint") or {}).get("top1")
    if complete and log is not None:
        return float(log), "log"
    same = [m for m in acc.get("measured", [])
            if m.get("dataset") == eval_set and m.get("images") == images]
    if not same:
        return None, None
    same.sort(key=lambda m: (m.get("device") == device, str(m.get("date", ""))))
    return float(same[-1]["top1"]), "recorded"


def is_complete(record: dict, ds: zdata.EvalSet, images: int, limited: bool) -> bool:
    """A canonical test set read whole, with as many images as the authors' log counted."""
    counted = ((record.get("accuracy") or {}).get("checkpoint") or {}).get("images")
    return ds.canonical and not limited and counted in (None, images)


def check_preprocessing(record: dict, ds: zdata.EvalSet) -> None:
    """The manifest's per-channel mean/std must be what the reader applies."""
    pre = record.get("preprocessing") or {}
    for key in ("mean", "std"):
        want = pre.get(key)
        have = getattr(ds, key, None)
        if want is not None and isinstance(have, (tuple, list)):
            if len(want) != len(have) or any(abs(float(a) - float(b)) > 1e-9
                                             for a, b in zip(want, have)):
                raise ValueError(f"the manifest's preprocessing {key} {want} differs from the "
                                 f"{ds.name} reader's {list(have)}")


def normalisation_report(record: dict, data: dict) -> Optional[str]:
    """rot-MNIST: the manifest holds an ESTIMATE of the training mean/std; the reader of the real
    set measures the exact ones: report both (one line), or None when there is nothing to say."""
    est = (record.get("preprocessing") or {}).get("normalize_estimate")
    norm = (data or {}).get("normalize") or {}
    mean, std = norm.get("mean"), norm.get("std")
    if not est or not data.get("canonical") or not isinstance(mean, float):
        return None
    pre = record["preprocessing"]
    return (f"{data.get('name')}: exact mean/std of {norm.get('of', 'the training images')}: "
            f"{mean:.6f} / {std:.6f} (the manifest's estimate: {pre['mean'][0]:.6f} / "
            f"{pre['std'][0]:.6f}, measured on mnist-rot-gen)")


@torch.inference_mode()
def evaluate(model: torch.nn.Module, ds: zdata.EvalSet, device: torch.device, batch_size: int,
             limit: Optional[int], desc: str, progress: bool = True):
    """``(correct, images, seconds)`` of ``model`` on the first ``limit`` images of ``ds``."""
    from tqdm.auto import tqdm

    model = model.to(device).eval()
    n = len(ds) if limit is None else min(limit, len(ds))
    correct = 0
    start = time.perf_counter()
    with tqdm(total=n, unit="img", desc=desc, disable=not progress, leave=True) as bar:
        for x, y in ds.batches(batch_size, n):
            logits = model(x.to(device, non_blocking=True))
            correct += int((logits.argmax(1).cpu() == y).sum())
            bar.update(len(y))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return correct, n, time.perf_counter() - start


def decide(res: Result, record: dict, ds: zdata.EvalSet, limited: bool) -> None:
    """Fill in the expectation, delta and verdict of a measured result."""
    res.complete = is_complete(record, ds, res.images, limited)
    expected, source = expectation(record, ds.name, res.complete, res.images, res.device)
    if expected is None:
        res.verdict = "INFO"
        if res.log is not None:
            res.delta, res.expected_from = res.measured - res.log, "log"
        return
    res.expected, res.expected_from = expected, source
    res.delta = res.measured - expected
    # a hair of slack for the float rounding of percentages such as 98.356
    res.verdict = "PASS" if abs(res.delta) <= res.tolerance + 1e-9 else "FAIL"


# ----------------------------------------------------------------------------- reports

def _fmt(v: Optional[float], digits: int = 3, sign: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


_COLUMNS = ["model", "dataset", "images", "paper", "authors' log", "measured", "delta",
            "verdict"]


def table_rows(results: Sequence[Result]) -> List[List[str]]:
    rows = []
    for r in results:
        paper = _fmt(r.paper) + ("" if r.paper is None or r.paper_confirmed else "*")
        delta = "-" if r.delta is None else (
            f"{_fmt(r.delta, sign=True)} ({'rec' if r.expected_from == 'recorded' else 'log'})")
        rows.append([r.model, r.dataset, str(r.images) if r.images else "-", paper, _fmt(r.log),
                     _fmt(r.measured), delta, r.verdict])
    return rows


def format_text(results: Sequence[Result]) -> str:
    rows = [_COLUMNS] + table_rows(results)
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_markdown(results: Sequence[Result], meta: dict) -> str:
    out = ["# agcnn-zoo: reproduced test accuracies", "",
           f"Date {meta['date']}, device {meta['device']}, torch {meta['torch']}, "
           f"command `{meta['command']}`.", "",
           "| " + " | ".join(_COLUMNS) + " | images/s |",
           "|" + "---|" * (len(_COLUMNS) + 1)]
    for r, row in zip(results, table_rows(results)):
        speed = f"{r.images_per_s:.1f}" if r.images_per_s else "-"
        out.append("| " + " | ".join(row) + f" | {speed} |")
    out += ["", "Top-1 accuracy in percent. paper: as the paper reports it (* not confirmed from a "
            "primary copy of the paper); authors' log: the authors' log for this very checkpoint; "
            "delta: measured minus the authors' log (log) or minus a recorded measurement on the "
            "same set (rec). PASS/FAIL: |delta| within the weight's tolerance; INFO: no "
            "expectation for this set or size (auxiliary set, or --limit)."]
    notes = [f"- {r.model} on {r.dataset}: {r.message}" for r in results if r.message]
    if notes:
        out += ["", "Notes:", *notes]
    return "\n".join(out) + "\n"


def _atomic_write_text(path: str, text: str) -> None:
    from agcnn_zoo.io import atomic_write_bytes
    atomic_write_bytes(Path(path), text.encode("utf-8"))


def update_manifest(manifest: dict, path: Path, results: Sequence[Result], date: str) -> int:
    """Record complete measurements; returns how many entries were written."""
    written = 0
    for r in results:
        if r.measured is None or r.model not in manifest["weights"]:
            continue
        acc = manifest["weights"][r.model].setdefault("accuracy", {})
        kept = [m for m in acc.get("measured", [])
                if not (m.get("dataset") == r.dataset and m.get("device") == r.device)]
        kept.append({"dataset": r.dataset, "top1": r.measured, "images": r.images,
                     "device": r.device, "date": date, "torch": torch.__version__})
        acc["measured"] = sorted(kept, key=lambda m: (m["dataset"], m["device"]))
        written += 1
    if written:
        save_manifest(manifest, path)
    return written


# ----------------------------------------------------------------------------- main

def main(argv: Optional[Sequence[str]] = None,
         model_factory: Optional[Callable[[str], torch.nn.Module]] = None) -> int:
    args = parse_args(argv)
    factory = model_factory or create_pretrained
    mpath = Path(args.manifest) if args.manifest else manifest_path()
    manifest = load_manifest(mpath)
    weights = manifest.get("weights", {})
    todo = plan(weights, args.models, args.dataset)
    if not todo:
        print(f"error: no published weight matches --models {args.models!r}"
              + (f" with --dataset {args.dataset}" if args.dataset else "")
              + f" (published: {', '.join(sorted(weights))})", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    device = resolve_device(args.device)
    set_deterministic()
    dev_label = device_label(device)
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
    download = not args.no_download
    progress = not args.quiet

    sets: Dict[str, object] = {}  # eval set name -> EvalSet or the exception that stopped it
    results: List[Result] = []
    reported: set = set()
    for name, set_name in todo:
        record = weights[name]
        acc = record.get("accuracy", {})
        paper, log = acc.get("paper") or {}, acc.get("checkpoint") or {}
        res = Result(model=name, dataset=set_name, paper=paper.get("top1"),
                     paper_confirmed=bool(paper.get("confirmed")), log=log.get("top1"),
                     tolerance=float(record.get("tolerance", DEFAULT_TOLERANCE)),
                     device=dev_label)
        results.append(res)
        if set_name not in sets:
            try:
                sets[set_name] = zdata.load_eval_set(set_name, args.data_dir, download=download,
                                                     progress=progress)
            except Exception as e:  # reported for every model that needs this set
                sets[set_name] = e
                print(f"\n{type(e).__name__}: {e}\n", file=sys.stderr)
        ds = sets[set_name]
        if isinstance(ds, Exception):
            # no data (or no h5py) is missing; a corrupt or malformed file is an error
            missing = isinstance(ds, (zdata.DataNotFoundError, ImportError))
            res.verdict = "MISSING" if missing else "ERROR"
            res.message = f"{type(ds).__name__}: {ds}".splitlines()[0]
            continue
        res.data = ds.describe()
        note = normalisation_report(record, res.data)
        if note and note not in reported:
            reported.add(note)
            print(note, file=sys.stderr)
        try:
            check_preprocessing(record, ds)
            with _manifest_env(args.manifest):
                model = factory(name)
            correct, n, seconds = evaluate(model, ds, device, args.batch_size, args.limit,
                                           desc=f"{name} on {set_name}", progress=progress)
        except Exception as e:  # report every model, then fail
            # a weight that no host delivers (offline, say) is missing, not broken
            missing = isinstance(e, (FileNotFoundError, WeightsUnavailableError))
            res.verdict = "MISSING" if missing else "ERROR"
            res.message = f"{type(e).__name__}: {e}".splitlines()[0]
            print(f"{name}: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        finally:
            model = None  # free it before the next model is built
        res.images, res.correct, res.seconds = n, correct, seconds
        res.measured = 100.0 * correct / n
        res.images_per_s = n / seconds if seconds > 0 else None
        decide(res, record, ds, limited=args.limit is not None and args.limit < len(ds))
        if n < (ds.expected_size or n) and not args.limit:
            res.message = f"the {set_name} files hold {n} images, the published set {ds.expected_size}"

    print(format_text(results))
    for r in results:
        if r.images_per_s:
            print(f"{r.model}: {r.images} images in {r.seconds:.1f} s ({r.images_per_s:.1f} "
                  f"images/s on {r.device})")
    meta = {"date": date, "device": dev_label, "torch": torch.__version__,
            "command": shlex.join(["python", "eval/reproduce.py",
                                   *(argv if argv is not None else sys.argv[1:])]),
            "manifest": str(mpath), "limit": args.limit, "batch_size": args.batch_size}
    if args.json_path:
        _atomic_write_text(args.json_path, json.dumps(
            {**meta, "results": [asdict(r) for r in results]}, indent=2, default=str) + "\n")
    if args.markdown:
        _atomic_write_text(args.markdown, format_markdown(results, meta))
    if args.update_manifest:
        n = update_manifest(manifest, mpath, results, date)
        print(f"recorded {n} measurement(s) in {mpath}")

    verdicts = {r.verdict for r in results}
    if verdicts & {"FAIL", "ERROR"}:
        return 1
    if "MISSING" in verdicts:
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
