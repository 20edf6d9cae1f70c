#!/usr/bin/env python
"""The rot-MNIST seed campaign: every rot-MNIST name, three seeds, on the fixed-schedule
protocol (the authors' recipe on all 12,000 mnist-rot-gen digits, no validation split, the weight
after the last epoch is the result), run as lanes of single-thread trainings in the background.

    python eval/rotmnist_campaign.py --out RUNS --data-dir ../shared/data [--lanes 2]
                                     [--seeds 0,1,2] [--names PATTERN] [--dry-run]

Each run is ``python -m agcnn_zoo train NAME --dataset mnist-rot-gen --no-validation --seed S
--tag rotgen12k_sS --threads 1 --resume --out RUNS/NAME.rotgen12k_sS`` under ``nice``, its output
in ``RUNS/NAME.rotgen12k_sS.log``. Runs go cheapest name first (all seeds of a name before the
next name); a lane takes the next run that has no ``record.json`` yet. Killing the campaign and
starting it again continues every unfinished run from its last epoch (bit-identical: the same
thread count). Keep RUNS outside the repository so that it outlives a checkout.

``--install`` adds every finished run to the package's manifest and ``agcnn_zoo/weights/``
(``agcnn_zoo.train.install(..., package=True)``: these weights ship); the README's seed table is
then ``python -m agcnn_zoo results --write-readme README.md``.
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

#: the campaign's names, cheapest run first. Training rates at one thread, batch 128
#: (``eval/bench.py --modes train --threads 1``, 2-core VM) and the hours of one run they imply
#: (12,000 digits x the recipe's epochs): p4cnn 472 img/s (0.7 h), coa 372 (0.9 h), z2cnn 1,001
#: (300 epochs: 1.0 h), af 263 (1.3 h), ach 145 (2.3 h), asp 51 (6.5 h), a 43 (7.8 h)
ORDER = ("p4cnn_rotmnist", "coa_p4cnn_rotmnist", "z2cnn_rotmnist", "af_p4cnn_rotmnist",
         "ach_p4cnn_rotmnist", "asp_p4cnn_rotmnist", "a_p4cnn_rotmnist")
TAG = "rotgen12k_s{seed}"


def plan(names_pattern: str, seeds) -> list:
    return [(name, seed) for name in ORDER if fnmatch.fnmatchcase(name, names_pattern)
            for seed in seeds]


def command(name: str, seed: int, out: Path, data_dir: str) -> list:
    return [sys.executable, "-m", "agcnn_zoo", "train", name, "--dataset", "mnist-rot-gen",
            "--no-validation", "--seed", str(seed), "--tag", TAG.format(seed=seed),
            "--threads", "1", "--resume", "--no-progress", "--data-dir", data_dir,
            "--out", str(out)]


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
    p.add_argument("--lanes", type=int, default=2, help="runs at a time (one thread each)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--names", default="*", help="fnmatch pattern over the campaign's names")
    p.add_argument("--dry-run", action="store_true", help="print the queue and stop")
    p.add_argument("--install", action="store_true",
                   help="add every finished run to the manifest instead of training")
    p.add_argument("--transposed-frame", action="store_true",
                   help="with --install: the runs were trained by an agcnn-zoo that fed digits "
                        "transposed (before weights took them as MNIST holds them): fold the "
                        "transposition into each weight first (exact; recorded in the manifest)")
    args = p.parse_args(argv)
    if args.lanes < 1:
        p.error("--lanes must be at least 1")
    root = Path(args.out).resolve()
    seeds = [int(s) for s in args.seeds.split(",")]
    queue = plan(args.names, seeds)
    if not queue:
        p.error(f"--names {args.names!r} matches none of {', '.join(ORDER)}")
    ids = [f"{n}.{TAG.format(seed=s)}" for n, s in queue]
    done = [(root / i / "record.json").exists() for i in ids]
    for i, d in zip(ids, done):
        print(f"{'done   ' if d else 'pending'} {i}")
    if args.dry_run:
        return 0
    if args.install:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package
        from agcnn_zoo.train import install
        for i, d in zip(ids, done):
            if d:
                record = root / i / "record.json"
                if args.transposed_frame:
                    record = natural_copy(record, root / f"{i}.natural")
                print("installed", install(record, package=True))
        return 0

    root.mkdir(parents=True, exist_ok=True)
    todo = [(n, s, i) for (n, s), i, d in zip(queue, ids, done) if not d]
    lock = threading.Lock()
    failures = []

    def lane(k: int) -> None:
        while True:
            with lock:
                if not todo:
                    return
                name, seed, wid = todo.pop(0)
            t0 = time.time()
            print(f"lane {k}: {wid} started", flush=True)
            with open(root / f"{wid}.log", "ab") as log:
                rc = subprocess.call(["nice", "-n", "10", *command(name, seed, root / wid, args.data_dir)],
                                     stdout=log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "OMP_NUM_THREADS": "1"})
            print(f"lane {k}: {wid} ended rc {rc} after {(time.time() - t0) / 3600:.2f} h", flush=True)
            if rc:
                failures.append(wid)

    threads = [threading.Thread(target=lane, args=(k,)) for k in range(args.lanes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"campaign ended: {len(failures)} failed run(s) {failures}" if failures else "campaign ended")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
