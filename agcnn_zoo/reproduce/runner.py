"""The arguments of ``reproduce`` and its loop: load each set once, build each weight, measure,
decide, report (rules and exit codes: the package docstring)."""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

from .. import data as zdata
from ..api import create_model
from ..hub import WeightsUnavailableError
from ..io import env
from ..hub.manifest import load_manifest, manifest_path, save_manifest
from ..io.env import show_progress
from ..io.files import atomic_write_bytes
from .plan import COSTS, describe_costs, expected_time, plan, smoke_plan
from .report import LEGEND, format_markdown, format_text, summary_line
from .verdicts import DEFAULT_TOLERANCE, Result, check_preprocessing, decide, normalisation_report

DEFAULT_PROG = "python eval/reproduce.py"
#: the first line of ``agcnn_zoo.reproduce``'s docstring (which holds the verdict rules; a test
#: keeps the two equal)
SUMMARY = ("Re-measure the test accuracy of every published weight and compare it with the "
           "authors' log.")
NOT_DOWNLOADED = "NOT DOWNLOADED"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", default="*", help="fnmatch pattern(s) over weight ids, "
                   "comma-separated (default: all published weights)")
    p.add_argument("--dataset", choices=sorted(zdata.EVAL_SETS), default=None,
                   help="evaluate on this set (default: each weight's canonical test set)")
    p.add_argument("--data-dir", default=None, help=f"data folder (default: ${zdata.DATA_ENV} or "
                   f"{zdata.default_data_dir()})")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N images only "
                   "(no comparison with the authors' log; see the verdict rules)")
    p.add_argument("--json", dest="json_path", default=None, help="write the results as JSON")
    p.add_argument("--markdown", default=None, help="write the results as a markdown table")
    p.add_argument("--update-manifest", action="store_true",
                   help="record the measurements in the manifest")
    p.add_argument("--manifest", default=None, help="weights manifest to read (and update); "
                   "default: the package's weights_manifest.json")
    p.add_argument("--no-download", action="store_true",
                   help="never download test data (also: AGCNN_ZOO_OFFLINE=1)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_command(s: argparse.ArgumentParser) -> None:
    """The ``reproduce`` subcommand of ``python -m agcnn_zoo`` (its parser ``s``)."""
    s.description = ("Re-measure the published weights; verdict rules: "
                     "python -c 'import agcnn_zoo.reproduce as r; help(r)'")
    add_arguments(s)
    s.set_defaults(fn=run_command)


def run_command(args: argparse.Namespace) -> int:
    return run(args, args.argv, prog=f"{args.prog} reproduce")


def check_arguments(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        p.error("--batch-size must be >= 1")
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be >= 1")
    if args.update_manifest and args.limit is not None:
        p.error("--update-manifest records complete runs only; drop --limit")


def parse_args(argv: Optional[Sequence[str]] = None, prog: str = DEFAULT_PROG) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=SUMMARY,
                                epilog="Verdict rules: python -c 'import agcnn_zoo.reproduce as r; "
                                       "help(r)'")
    add_arguments(p)
    args = p.parse_args(argv)
    check_arguments(p, args)
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


def create_pretrained(name: str, manifest: Optional[dict] = None) -> torch.nn.Module:
    """The verified weight ``name`` of ``manifest`` (the package's when None)."""
    return create_model(name, pretrained=True, manifest=manifest)


@torch.inference_mode()
def evaluate(model: torch.nn.Module, ds, device: torch.device, batch_size: int,
             limit: Optional[int], desc: str, progress: bool = True):
    """``(correct, images, seconds)`` of ``model`` on the first ``limit`` images of ``ds``."""
    from tqdm.auto import tqdm

    model = model.to(device).eval()
    n = len(ds) if limit is None else min(limit, len(ds))
    correct = 0
    start = time.perf_counter()
    with tqdm(total=n, unit="img", desc=desc, disable=not show_progress(progress),
              leave=True) as bar:
        for x, y in ds.batches(batch_size, n):
            logits = model(x.to(device, non_blocking=True))
            correct += int((logits.argmax(1).cpu() == y).sum())
            bar.update(len(y))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return correct, n, time.perf_counter() - start


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


class _Runner:
    """One run's state: the sets loaded so far (or why not) and the notes already printed."""

    def __init__(self, args, weights: dict, factory: Callable[[str], torch.nn.Module],
                 device: torch.device, auto: bool):
        self.args, self.weights, self.factory, self.device, self.auto = args, weights, factory, device, auto
        self.label = device_label(device)
        self.sets: Dict[str, object] = {}
        self.failed_on_disk: Dict[str, Exception] = {}
        self.reported: set = set()

    def _read(self, set_name: str, download: bool):
        return zdata.load_eval_set(set_name, self.args.data_dir, download=download,
                                   progress=not self.args.quiet)

    def read_on_disk(self, set_names) -> List[str]:
        """Read the sets whose files are already on disk (no download), so that the plan
        printed next names only real downloads, and return their names; a file that is there
        but fails to read is kept for :meth:`load` to report with the rest."""
        for s in set_names:
            if s in self.sets or s in self.failed_on_disk:
                continue
            try:
                self.sets[s] = self._read(s, download=False)
            except (zdata.DataNotFoundError, ImportError):
                pass  # fetched, or reported missing (no files, or no h5py), by load()
            except Exception as e:
                self.failed_on_disk[s] = e
        return [*self.sets, *self.failed_on_disk]

    def load(self, set_name: str):
        if set_name not in self.sets:
            try:
                if set_name in self.failed_on_disk:
                    raise self.failed_on_disk.pop(set_name)
                self.sets[set_name] = self._read(set_name, download=not self.args.no_download)
            except Exception as e:  # reported for every weight that needs this set
                self.sets[set_name] = e
                if self.auto and isinstance(e, zdata.DataNotFoundError):
                    print(str(e).splitlines()[0], file=sys.stderr)  # "<set>: ... (why)"
                else:
                    print(f"\n{type(e).__name__}: {e}\n", file=sys.stderr)
        return self.sets[set_name]

    def measure(self, name: str, set_name: str) -> Result:
        record = self.weights[name]
        acc = record.get("accuracy", {})
        paper, log = acc.get("paper") or {}, acc.get("checkpoint") or {}
        res = Result(model=name, dataset=set_name, paper=paper.get("top1"),
                     paper_confirmed=bool(paper.get("confirmed")), log=log.get("top1"),
                     tolerance=float(record.get("tolerance", DEFAULT_TOLERANCE)),
                     device=self.label)
        ds = self.load(set_name)
        if isinstance(ds, Exception):
            if self.auto and isinstance(ds, zdata.DataNotFoundError):
                res.verdict = NOT_DOWNLOADED
            else:
                # no data (or no h5py) is missing; a corrupt or malformed file is an error
                missing = isinstance(ds, (zdata.DataNotFoundError, ImportError))
                res.verdict = "MISSING" if missing else "ERROR"
            res.message = f"{type(ds).__name__}: {ds}".splitlines()[0]
            return res
        res.data = ds.describe()
        note = normalisation_report(record, res.data)
        if note and note not in self.reported:
            self.reported.add(note)
            print(note, file=sys.stderr)
        model = None
        try:
            check_preprocessing(record, ds)
            model = self.factory(name)
            correct, n, seconds = evaluate(model, ds, self.device, self.args.batch_size,
                                           self.args.limit, desc=f"{name} on {set_name}",
                                           progress=not self.args.quiet)
        except Exception as e:  # report every model, then fail
            # a weight that no host delivers (offline, say) is missing, not broken
            missing = isinstance(e, (FileNotFoundError, WeightsUnavailableError))
            res.verdict = "MISSING" if missing else "ERROR"
            res.message = f"{type(e).__name__}: {e}".splitlines()[0]
            print(f"{name}: {type(e).__name__}: {e}", file=sys.stderr)
            return res
        finally:
            model = None  # free it before the next model is built
        res.images, res.correct, res.seconds = n, correct, seconds
        res.measured = 100.0 * correct / n
        res.images_per_s = n / seconds if seconds > 0 else None
        limit = self.args.limit
        decide(res, record, ds, limited=limit is not None and limit < len(ds))
        if n < (ds.expected_size or n) and not limit:
            res.message = f"the {set_name} files hold {n} images, the published set {ds.expected_size}"
        return res


def _offline_command(prog: str) -> str:
    """The run that works with no network: the rot-MNIST weights on mnist-rot-aux (MNIST's test
    digits, rotated), weights from the package or a mirror folder."""
    mirror = str(env.mirror()) if env.mirror() is not None else None
    command = (f"AGCNN_ZOO_OFFLINE=1 AGCNN_ZOO_MIRROR={shlex.quote(mirror) if mirror else 'MIRROR'}"
               f" {prog} --dataset mnist-rot-aux --data-dir MNIST_DIR")
    where = ("MNIST_DIR: a folder holding t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz"
             + ("" if mirror else "; MIRROR: a folder laid out as <host>/<path> of the weights' "
                                  "URLs (e.g. ../shared/reference/mirror; the rot-MNIST weights "
                                  "ship in the package and need none)"))
    return f"{command}   ({where})"


def run(args: argparse.Namespace, argv: Sequence[str] = (),
        model_factory: Optional[Callable[[str], torch.nn.Module]] = None,
        prog: str = DEFAULT_PROG) -> int:
    """The whole run for parsed ``args`` (``argv``: as typed, for the report's command line)."""
    mpath = Path(args.manifest) if args.manifest else manifest_path()
    manifest = load_manifest(mpath)
    weights = manifest.get("weights", {})
    factory = model_factory or (lambda name: create_pretrained(name, manifest))
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
    auto = args.dataset is None and args.data_dir is None
    runner = _Runner(args, weights, factory, device, auto)
    _print_costs(prog, todo, weights, device, auto, runner.read_on_disk(s for _, s in todo))
    for _, set_name in todo:  # every set first: the smoke check is decided by what is missing
        runner.load(set_name)
    absent = sorted({s for _, s in todo if isinstance(runner.sets[s], zdata.DataNotFoundError)})
    smoke = _smoke_check(runner, weights, todo) if auto and absent else []
    results = [runner.measure(n, s) for n, s in todo]
    _report(args, argv, prog, manifest, mpath, runner, smoke, results)
    verdicts = {r.verdict for r in [*smoke, *results]}
    print()
    if absent and auto:
        print("the full run downloads: " + "; ".join(
            f"{s}: {COSTS[s].files}" if s in COSTS else s for s in absent)
            + " (run it online, or fetch them by hand into the data folder)")
    print(summary_line(results, smoke))
    if verdicts & {NOT_DOWNLOADED, "MISSING"}:
        print(f"offline: {_offline_command(prog)}")
    if verdicts & {"FAIL", "ERROR"}:
        return 1
    return 2 if "MISSING" in verdicts else 0


def _print_costs(prog: str, todo, weights, device, auto: bool, on_disk) -> None:
    print(f"{prog}: {len(todo)} weight(s), on {device_label(device)}; what each test set takes:")
    print("\n".join(describe_costs(todo, on_disk)))
    smoke = smoke_plan(weights, todo) if auto else []
    if smoke:
        print("  (a full set that cannot be fetched is replaced by a smoke check of the shipped "
              f"rot-MNIST weights on the embedded sample: "
              f"{expected_time('mnist-rot-sample', len(smoke))})")
    print(flush=True)


def _smoke_check(runner, weights, todo) -> List[Result]:
    """The shipped rot-MNIST weights on the embedded sample (when a full set is absent)."""
    pairs = smoke_plan(weights, todo)
    if not pairs:
        return []
    print(f"\nSMOKE CHECK (not a reproduction): {len(pairs)} shipped rot-MNIST weight(s) "
          f"on the embedded sample of {zdata.SAMPLE_SIZE} rotated MNIST test digits", flush=True)
    smoke = [runner.measure(n, s) for n, s in pairs]
    print(format_text(smoke))
    print("\nFULL TEST SETS")
    return smoke


def _report(args, argv, prog: str, manifest: dict, mpath: Path, runner, smoke, results) -> None:
    """The table, the speeds, the legend, and the JSON / markdown files and manifest entries
    asked for."""
    print(format_text(results))
    for r in [*smoke, *results]:
        if r.images_per_s:
            print(f"{r.model} on {r.dataset}: {r.images} images in {r.seconds:.1f} s "
                  f"({r.images_per_s:.1f} images/s on {r.device})")
    print("\n" + LEGEND)
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
    meta = {"date": date, "device": runner.label, "torch": torch.__version__,
            "command": shlex.join([*shlex.split(prog), *argv]),
            "manifest": str(mpath), "limit": args.limit, "batch_size": args.batch_size}
    if args.json_path:
        _write_text(args.json_path, json.dumps(
            {**meta, "results": [asdict(r) for r in [*smoke, *results]]}, indent=2,
            default=str) + "\n")
    if args.markdown:
        _write_text(args.markdown, format_markdown([*smoke, *results], meta))
    if args.update_manifest:
        # a smoke check confirms nothing: never recorded as a measurement
        n = update_manifest(manifest, mpath,
                            [r for r in results if r.expected_from != "smoke floor"], date)
        print(f"recorded {n} measurement(s) in {mpath}")


def _write_text(path: str, text: str) -> None:
    atomic_write_bytes(Path(path), text.encode("utf-8"))


def main(argv: Optional[Sequence[str]] = None,
         model_factory: Optional[Callable[[str], torch.nn.Module]] = None,
         prog: str = DEFAULT_PROG) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return run(parse_args(argv, prog=prog), argv, model_factory=model_factory, prog=prog)
