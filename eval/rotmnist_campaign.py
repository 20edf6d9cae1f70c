#!/usr/bin/env python
"""The rot-MNIST seed campaign: every rot-MNIST name, three seeds, on the fixed-schedule
protocol (the authors' recipe on all 12,000 mnist-rot-gen digits, no validation split, the weight
after the last epoch is the result), run as lanes of trainings in the background.

    python eval/rotmnist_campaign.py --out RUNS --data-dir ../shared/data [--lanes 2]
                                     [--threads 1] [--seeds 0,1,2] [--names PATTERN] [--dry-run]

Each run is ``python -m agcnn_zoo train NAME --dataset mnist-rot-gen --no-validation --seed S
--tag rotgen12k_sS --threads T --resume --out RUNS/NAME.rotgen12k_sS`` under ``nice``, its
output in ``RUNS/NAME.rotgen12k_sS.log``. On 2 cores, two one-thread lanes (the default) train
more images an hour than one lane of two threads (``--lanes 1 --threads 2``), which finishes a
single run sooner: asp's training epochs took 160-177 s in each of two lanes (about 140 img/s
together) and 130-139 s at two threads (89 img/s; both on 2026-12-07, nothing else running),
although ``eval/bench.py``'s training step gives 71 img/s at one thread and 114 at two.
``--threads 2`` suits a last run that would otherwise leave a core idle. A started run keeps the
thread count it started with (its log's first line; its checkpoint resumes bit-identically with
that count only). Runs go cheapest name first (all seeds of a name before the next name); a lane
takes the next run that has no ``record.json`` yet and whose weight (``NAME.rotgen12k_sS``) is
not in the checkout's manifest: a shipped weight is never trained again, even when its run
folder is gone (a new machine keeps only the repository). Killing the campaign and starting it
again continues every unfinished run from its last epoch (bit-identical). Keep RUNS outside the
repository so that it outlives a checkout.

On a GPU (one device call; the models are tiny, so many runs share it), with the MNIST files
copied into the checkout's ignored ``data/mnist`` and carried, like ``runs/rotmnist``:

    python eval/rotmnist_campaign.py --out runs/rotmnist --data-dir data \
        --device cuda --lanes 12 --time-limit 540 ; cp -r runs/rotmnist "$OUT/"

Every lane then trains on the GPU with its data there and a share of the GPU's memory as its
full-alpha chunk budget; ``--time-limit`` is the whole call's budget: each run is given the
time left (it checkpoints and stops, exit 3) and no run starts after it, so the next call (the
returned folder carried in as ``runs/rotmnist``, the same command) continues every stopped run.
A run keeps the device it started on: its log's first line names it, and a lane on another
device passes it by (resuming is bit-identical on the same device only). Runs that have not
started go to whichever device reaches them first, so stop the CPU lanes (or narrow
``--names``) before a GPU call.

``--install`` adds every finished run to the package's manifest and ``agcnn_zoo/weights/``
(``agcnn_zoo.train.install(..., package=True)``: these weights ship; installing a run again
keeps what was measured on its bytes); a run trained on transposed digits (its record says so)
is staged in the natural frame first (``natural_copy``). It then measures every installed weight
that has no mnist-rot-aux measurement yet (``python -m agcnn_zoo reproduce --dataset
mnist-rot-aux --update-manifest``, on ``--data-dir``) and regenerates the README's tables
(``python -m agcnn_zoo results --write-readme README.md``), then runs every installed weight not
yet measured through timm's and torchvision's pipelines and regenerates that table
(``eval/natural_pipelines.py --write-readme README.md``): one command from finished runs to the
README.
"""
from __future__ import annotations

import argparse
import fnmatch
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional, Tuple

#: the campaign's names, cheapest run first, and the hours of one CPU run. Training rates at one
#: thread, batch 128 (``eval/bench.py --modes train --threads 1``, 2-core VM) and the hours they
#: imply (12,000 digits x the recipe's epochs): p4cnn 472 img/s, coa 372, z2cnn 1,001 (300
#: epochs), af 263, ach 145, asp 51, a 43. The queue's estimate uses these hours, scaled by what
#: the finished runs took, only for a name with no finished or started run: the runs took
#: longer than these rates imply (ach 3.0-3.1 h, not 2.3), as this VM's speed drifts (ach's
#: epochs went from 94 to 120 s within one morning, and alone ran no faster than beside asp).
BENCH_HOURS = {"p4cnn_rotmnist": 0.7, "coa_p4cnn_rotmnist": 0.9, "z2cnn_rotmnist": 1.0,
               "af_p4cnn_rotmnist": 1.3, "ach_p4cnn_rotmnist": 2.3, "asp_p4cnn_rotmnist": 6.5,
               "a_p4cnn_rotmnist": 7.8}
ORDER = tuple(BENCH_HOURS)
TAG = "rotgen12k_s{seed}"


_SAY = threading.Lock()


def say(text: str) -> None:
    """One line of the campaign's log, stamped with the UTC time, written whole: lanes are
    threads, and ``print`` writes the text and its newline separately, so two lanes could
    otherwise run their lines together."""
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {text}\n"
    with _SAY:
        sys.stdout.write(line)
        sys.stdout.flush()


def plan(names_pattern: str, seeds) -> list:
    return [(name, seed) for name in ORDER if fnmatch.fnmatchcase(name, names_pattern)
            for seed in seeds]


#: exit status of ``agcnn_zoo train`` stopped by ``--time-limit`` (checkpointed, resumable)
STOPPED_AT_TIME_LIMIT = 3
#: full-alpha chunk budget of each run sharing a GPU (``AGCNN_ZOO_CHUNK_ELEMENTS``; a run alone
#: on a GPU would take 1/512 of its memory per chunk entry, about 6 GiB on 80 GB with a dozen
#: float32 tensors of that size, too much for a dozen runs): 2^24 entries, under 1 GiB a run
GPU_CHUNK_ELEMENTS = 1 << 24
#: the first line a lane writes into a run's log (then the device, ``THREADS_SEPARATOR``, the
#: thread count and a newline): which device and how many threads the run trains with
DEVICE_PREFIX = "campaign: device "
THREADS_SEPARATOR = ", threads "


def command(name: str, seed: int, out: Path, data_dir: str, device: str = "cpu",
            time_limit: float = None, threads: int = 1) -> list:
    cmd = [sys.executable, "-m", "agcnn_zoo", "train", name, "--dataset", "mnist-rot-gen",
           "--no-validation", "--seed", str(seed), "--tag", TAG.format(seed=seed),
           "--threads", str(threads), "--resume", "--no-progress", "--data-dir", data_dir,
           "--out", str(out), "--device", device]
    if device != "cpu":
        cmd.append("--data-on-device")
    if time_limit is not None:
        cmd += ["--time-limit", str(max(1, int(time_limit)))]
    # on the CPU the lanes yield to interactive work; a GPU call has nothing else to run
    return ["nice", "-n", "10", *cmd] if device == "cpu" else cmd


def started_with(log: Path) -> Optional[Tuple[str, int]]:
    """(device, threads) a run started with: its log's first line, written by the lane that
    started it (a log from before that line existed is a one-thread CPU run, one from before the
    thread count was written a one-thread run); None when the run has not started."""
    if not log.exists():
        return None
    with open(log, "rb") as f:
        first = f.readline().decode("utf-8", "replace").strip()
    if not first.startswith(DEVICE_PREFIX):
        return "cpu", 1
    device, _, threads = first[len(DEVICE_PREFIX):].partition(THREADS_SEPARATOR)
    return device, int(threads) if threads.isdigit() else 1


def started_on(log: Path) -> Optional[str]:
    """The device a run started on (``started_with``); None when it has not started."""
    began = started_with(log)
    return None if began is None else began[0]


def pace(run_dir: Path) -> Optional[Tuple[int, float]]:
    """(epochs done, seconds an epoch) of a started run: the median of its last ten epochs (the
    median, as a paused or shared CPU makes single epochs slow); None before its first epoch
    ends."""
    import statistics
    from agcnn_zoo.io.strict_json import loads_strict
    from agcnn_zoo.train.engine import METRICS
    metrics = run_dir / METRICS
    if not metrics.exists():
        return None
    rows = []
    for k, line in enumerate(metrics.read_text(encoding="utf-8").splitlines()):
        try:
            rows.append(loads_strict(line, f"{metrics}:{k + 1}"))
        except ValueError:
            continue  # the engine writes the file atomically; a damaged line only loses its row
    rows = [r for r in rows if isinstance(r, dict) and "epoch" in r and "seconds" in r]
    if not rows:
        return None
    return (max(int(r["epoch"]) for r in rows),
            statistics.median(float(r["seconds"]) for r in rows[-10:]))


def progress(run_dir: Path, epochs: int) -> Optional[str]:
    """How far a started run is: its epochs done of the recipe's, and the hours left at its
    ``pace``; None before its first epoch ends."""
    measured = pace(run_dir)
    if measured is None:
        return None
    done, seconds = measured
    return (f"epoch {done} of {epochs}, about {max(epochs - done, 0) * seconds / 3600:.1f} h "
            f"left at {seconds:.0f} s an epoch")


def hours_left(queue, root: Path, lanes: int, shipped=None) -> Tuple[int, float, float]:
    """(runs, one-thread hours, wall hours on ``lanes`` lanes) that the unfinished CPU runs of
    ``queue`` (its ``(name, seed)`` pairs in order; a run started on a GPU stays there) still
    take, were the campaign started now. ``shipped`` maps the weight ids already in the manifest
    to their records: those runs are finished whether or not their folders exist. A run's hours:
    a started run's epochs left at its ``pace``; a run not started, the median wall time of its
    name's finished CPU runs (their records' ``wall_time_s``, summed over resumes), else its
    name's started runs' pace times the recipe's epochs, else its ``BENCH_HOURS`` times the
    median ratio of the finished names' wall times to theirs (see ``BENCH_HOURS``). The wall
    time replays the lanes: each takes the next run in queue order when it is free."""
    import statistics
    from agcnn_zoo.io.strict_json import load_strict
    from agcnn_zoo.train.recipes import recipe_for
    shipped = shipped or {}
    finished, paces, left = {}, {}, []
    for name, seed in queue:
        run = root / f"{name}.{TAG.format(seed=seed)}"
        epochs = recipe_for(name).epochs
        if run.name in shipped or (run / "record.json").exists():
            record = shipped.get(run.name) or load_strict(run / "record.json")
            training = record.get("training", {})
            if training.get("device") == "cpu" and training.get("wall_time_s"):
                finished.setdefault(name, []).append(training["wall_time_s"] / 3600)
            continue
        began = started_on(root / f"{run.name}.log")
        if began not in (None, "cpu"):
            continue
        measured = pace(run) if began else None
        if measured is not None:
            paces.setdefault(name, []).append(measured[1])
        left.append((name, None if measured is None
                     else max(epochs - measured[0], 0) * measured[1] / 3600))
    slower = statistics.median(statistics.median(h) / BENCH_HOURS[n]
                               for n, h in finished.items()) if finished else 1.0
    hours = []
    for name, h in left:
        if h is None:
            h = (statistics.median(finished[name]) if name in finished
                 else statistics.median(paces[name]) * recipe_for(name).epochs / 3600
                 if name in paces else BENCH_HOURS[name] * slower)
        hours.append(h)
    busy = [0.0] * lanes
    for h in hours:
        busy[busy.index(min(busy))] += h
    return len(hours), sum(hours), max(busy)


def trained_transposed(record_path: Path) -> bool:
    """Whether the run of ``record_path`` was trained on transposed digits (and must be folded
    before it is installed): ``agcnn_zoo.hub.convert.trained_transposed`` of its record."""
    from agcnn_zoo.hub.convert import trained_transposed as of_record
    from agcnn_zoo.io.strict_json import load_strict
    return of_record(load_strict(record_path))


#: the set every campaign weight is measured on (the MNIST test digits, rotated)
TEST_SET = "mnist-rot-aux"


def unmeasured(manifest: dict, weight_ids) -> list:
    """The weights among ``weight_ids`` whose manifest record holds no measurement on
    ``TEST_SET``, by the seed table's own rule (``agcnn_zoo.results.measured_value``)."""
    from agcnn_zoo.results import measured_value
    return [w for w in weight_ids if measured_value(manifest["weights"][w], TEST_SET) is None]


def through_no_pipeline(weight_ids) -> list:
    """The weights among ``weight_ids`` not yet measured through timm's and torchvision's
    pipelines (``eval/natural_pipelines.json``)."""
    import importlib.util
    script = Path(__file__).resolve().parent / "natural_pipelines.py"
    spec = importlib.util.spec_from_file_location("natural_pipelines", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # its reader: one definition of the stored file's format
    done = module.load_results()
    return [w for w in weight_ids if w not in done]


def measure_and_tabulate(weight_ids, data_dir: str, pipeline_ids=()) -> None:
    """Measure ``weight_ids`` on ``TEST_SET`` into the checkout's manifest and regenerate the
    README's tables from it (``python -m agcnn_zoo`` commands), then measure ``pipeline_ids``
    through timm's and torchvision's pipelines and regenerate the README's pipeline table
    (``eval/natural_pipelines.py``); every step runs in the checkout."""
    checkout = Path(__file__).resolve().parents[1]
    data = str(Path(data_dir).resolve())  # the commands run in the checkout
    steps = [["-m", "agcnn_zoo", "reproduce", "--models", ",".join(weight_ids), "--dataset",
              TEST_SET, "--data-dir", data, "--update-manifest", "--no-download", "--quiet"]] \
        if weight_ids else []
    steps.append(["-m", "agcnn_zoo", "results", "--write-readme", "README.md"])
    pipelines = ["eval/natural_pipelines.py", "--write-readme", "README.md"]
    steps.append(pipelines + (["--data-dir", data, "--models", ",".join(pipeline_ids)]
                              if pipeline_ids else ["--no-measure"]))
    for step in steps:
        print("running: python", " ".join(step), flush=True)
        if subprocess.run([sys.executable, *step], cwd=checkout).returncode:
            # the weights are installed; a later --install finds what is still unmeasured
            raise SystemExit(f"python {' '.join(step[:3])} failed (its message is above); the "
                             "weights are installed: fix the cause and run --install again")


def natural_copy(record_path: Path, staged: Path) -> Path:
    """A run trained on transposed digits, staged in the natural frame: its weight with the
    transposition folded in (``agcnn_zoo.hub.convert.fold_transposition_file``) and its record
    updated (sha256, size, ``origin.frame``); returns the staged record. The run folder itself
    is left as it is."""
    import json
    from agcnn_zoo.hub.convert import FOLDED, fold_transposition_file
    from agcnn_zoo.io import atomic_write_bytes
    from agcnn_zoo.io.strict_json import load_strict
    rec = load_strict(record_path)
    staged.mkdir(exist_ok=True)
    weight = staged / rec["file"]
    rec["sha256"] = fold_transposition_file(record_path.parent / rec["file"], weight,
                                            rec["file"][: -len(".safetensors")])
    rec["size"] = weight.stat().st_size
    rec["origin"]["frame"] = FOLDED
    rec["preprocessing"].pop("orientation", None)
    out = staged / "record.json"
    atomic_write_bytes(out, (json.dumps(rec, indent=2) + "\n").encode())
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder of the run folders (outside the repository)")
    p.add_argument("--data-dir", required=True, help="folder holding the MNIST IDX files")
    p.add_argument("--lanes", type=int, default=2, help="runs at a time")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads of each run it starts (a started run keeps its own count)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--names", default="*", help="fnmatch pattern over the campaign's names")
    p.add_argument("--device", default="cpu",
                   help="cpu (nice'd single-thread lanes) or cuda / cuda:N (every lane on the GPU)")
    p.add_argument("--time-limit", type=float, default=None, metavar="S",
                   help="this call's budget in seconds: runs checkpoint and stop when it is spent "
                        "and no run starts after it; the same command continues them")
    p.add_argument("--dry-run", action="store_true",
                   help="print the queue (each started run's epochs and hours left) and the "
                        "hours the unfinished runs still take, and stop")
    p.add_argument("--install", action="store_true",
                   help="add every finished run to the package's manifest instead of training, "
                        "measure the new weights on mnist-rot-aux and regenerate the README's "
                        "tables")
    args = p.parse_args(argv)
    if args.lanes < 1:
        p.error("--lanes must be at least 1")
    if args.threads < 1:
        p.error("--threads must be at least 1")
    if args.time_limit is not None and args.time_limit <= 0:
        p.error("--time-limit must be a positive number of seconds")
    if args.device != "cpu" and not args.device.startswith("cuda"):
        p.error(f"--device must be cpu, cuda or cuda:N, got {args.device!r}")
    deadline = time.time() + args.time_limit if args.time_limit else None
    root = Path(args.out).resolve()
    seeds = [int(s) for s in args.seeds.split(",")]
    queue = plan(args.names, seeds)
    if not queue:
        p.error(f"--names {args.names!r} matches none of {', '.join(ORDER)}")
    ids = [f"{n}.{TAG.format(seed=s)}" for n, s in queue]
    done = [(root / i / "record.json").exists() for i in ids]
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package
    from agcnn_zoo.hub.manifest import load_manifest, manifest_path
    from agcnn_zoo.train.recipes import recipe_for
    # the weights this checkout ships: their runs are over, whatever RUNS holds
    shipped = {i: r for i, r in load_manifest(manifest_path())["weights"].items() if i in ids}
    for (name, _), i, d in zip(queue, ids, done):
        if i in shipped or d or started_on(root / f"{i}.log") is None:
            print(f"{'shipped' if i in shipped else 'done   ' if d else 'pending'} {i}")
            continue
        print(f"started {i}: {progress(root / i, recipe_for(name).epochs) or 'no epoch ended yet'}")
    waiting = sum(d and i not in shipped for i, d in zip(ids, done))
    if waiting:
        print(f"{waiting} finished run(s) not in the manifest yet: --install adds them")
    if args.device == "cpu" and not all(d or i in shipped for i, d in zip(ids, done)):
        runs, single, wall = hours_left(queue, root, args.lanes, shipped)
        print(f"left on the CPU: {runs} of {len(ids)} runs, about {single:.1f} h of one-thread "
              f"training, about {wall:.1f} h on {args.lanes} lane(s)"
              + (f" (at one-thread rates: {args.threads} threads a run take less)"
                 if args.threads > 1 else ""))
    if args.dry_run:
        return 0
    if args.install:
        from agcnn_zoo.io.errors import ZooIOError
        from agcnn_zoo.train import install
        installed, refused = [], []
        for i, d in zip(ids, done):
            if d:
                record = root / i / "record.json"
                try:
                    if trained_transposed(record):
                        record = natural_copy(record, root / f"{i}.natural")
                    installed.append(install(record, package=True))
                except ZooIOError as e:  # one run's fault (a limited run, say): the others go on
                    print(f"not installed {i}: {e}", file=sys.stderr, flush=True)
                    refused.append(i)
                    continue
                print("installed", installed[-1], flush=True)
        if installed:
            measure_and_tabulate(unmeasured(load_manifest(manifest_path()), installed),
                                 args.data_dir, through_no_pipeline(installed))
        return 1 if refused else 0

    root.mkdir(parents=True, exist_ok=True)
    todo = []
    for (name, seed), wid, finished in zip(queue, ids, done):
        if finished or wid in shipped:
            continue
        # a started run keeps its device and thread count: its checkpoint resumes
        # bit-identically with them only (the trainer refuses other threads)
        device, threads = started_with(root / f"{wid}.log") or (args.device, args.threads)
        if device != args.device:
            print(f"passed by {wid}: it started on {device} and continues there")
            continue
        todo.append((name, seed, wid, threads))
    if todo and args.device != "cpu":
        import torch
        if not torch.cuda.is_available():
            p.error(f"--device {args.device}: CUDA is not available on this machine "
                    f"({len(todo)} run(s) to train); leave out --device to train on the CPU")
    lock = threading.Lock()
    failures, stopped = [], []
    env = dict(os.environ)
    if args.device != "cpu":
        env.setdefault("AGCNN_ZOO_CHUNK_ELEMENTS", str(GPU_CHUNK_ELEMENTS))

    def lane(k: int) -> None:
        while True:
            with lock:
                left = None if deadline is None else deadline - time.time()
                if not todo or (left is not None and left < 1):
                    return
                name, seed, wid, threads = todo.pop(0)
            t0 = time.time()
            say(f"lane {k}: {wid} started ({threads} thread(s))")
            with open(root / f"{wid}.log", "ab") as log:
                if log.tell() == 0:
                    log.write(f"{DEVICE_PREFIX}{args.device}{THREADS_SEPARATOR}{threads}\n"
                              .encode())
                    log.flush()
                # run in the checkout, so that ``-m agcnn_zoo`` is this checkout's package (a
                # frozen worktree's, not an installed one), with the data path made absolute
                rc = subprocess.call(command(name, seed, root / wid,
                                             str(Path(args.data_dir).resolve()), args.device, left,
                                             threads),
                                     stdout=log, stderr=subprocess.STDOUT,
                                     env={**env, "OMP_NUM_THREADS": str(threads)},
                                     cwd=Path(__file__).resolve().parents[1])
            hours = (time.time() - t0) / 3600
            if rc == STOPPED_AT_TIME_LIMIT:
                say(f"lane {k}: {wid} stopped at the time limit after {hours:.2f} h "
                    "(checkpointed: the same command continues it)")
                stopped.append(wid)
                continue
            say(f"lane {k}: {wid} ended rc {rc} after {hours:.2f} h")
            if rc:
                failures.append(wid)

    threads = [threading.Thread(target=lane, args=(k,)) for k in range(args.lanes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        print(f"campaign ended: {len(failures)} failed run(s) {failures}")
        return 1
    unstarted = [wid for _, _, wid, _ in todo]
    if stopped or unstarted:
        print(f"time limit reached: {len(stopped)} run(s) stopped, {len(unstarted)} not started; "
              "run the same command again to continue")
        return STOPPED_AT_TIME_LIMIT
    print("campaign ended")
    return 0


if __name__ == "__main__":
    sys.exit(main())
