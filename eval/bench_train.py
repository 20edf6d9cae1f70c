#!/usr/bin/env python
"""Training speed of the CIFAR-10 names and what it implies: per name, training images/s and peak
memory on this machine (the engine's own step: uint8 pixels, the recipe's augmentation and
optimizer; on a GPU bf16 autocast, channels_last and data resident there), the time of one
epoch (45,000 training + 5,000 validation images) and of the authors' whole recipe, the
floating-point operations of one training image, and what one H100 would take at an assumed
sustained rate.

    python eval/bench_train.py [--models '*_cifar'] [--batch 64] [--small-batch 2]
                               [--small 'a_*'] [--threads 2] [--steps 2] [--device auto]
                               [--compile] [--no-flops] [--tflops 50,120] [--json PATH]

``--small`` names (full alpha everywhere: a training step of 64 images takes over an hour on a
2-core CPU) are measured at ``--small-batch``. On a CPU each name runs in a fresh process and its
peak memory is that process's peak resident size minus its size before the first step; on a GPU
it is ``torch.cuda.max_memory_allocated``. The H100 column divides the counted operations by
``--tflops`` (sustained, not peak: the H100's dense bf16 peak is 989 TFLOP/s; eager PyTorch
reaches a few to about ten percent of it on ResNet-sized CIFAR networks, less where
elementwise and gather work dominate, as in full alpha): an estimate to size a GPU call, not a
measurement. ``eval/campaign.py`` measures on the device itself before it plans.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import resource
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TRAIN_IMAGES, VAL_IMAGES = 45000, 5000


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def measure_one(name: str, batch: int, device: str, threads: int, steps: int, compile_: bool,
                flops: bool, max_seconds: float = None) -> dict:
    """One name, in this process (a failure, e.g. out of GPU memory, comes back as ``error``)."""
    import torch
    from agcnn_zoo.train.speed import Speed, for_device
    from agcnn_zoo.train.throughput import measure_training, training_flops
    torch.set_num_threads(threads)
    cuda = device.startswith("cuda")
    speed = for_device(torch.device(device), compile=compile_) if cuda else Speed(compile=compile_)
    before = _rss()
    try:
        r = measure_training(name, batch, device, amp="bf16" if cuda else None,
                             channels_last=cuda, speed=speed, steps=steps, threads=threads,
                             time_limit=max_seconds)
    except (RuntimeError, MemoryError) as e:  # torch.cuda.OutOfMemoryError is a RuntimeError
        if cuda:
            torch.cuda.empty_cache()
        return {"model": name, "batch": batch, "error": f"{type(e).__name__}: {str(e)[:200]}"}
    if cuda:
        torch.cuda.empty_cache()
    if not cuda:
        r["peak_bytes"] = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before)
    if flops:
        r["train_flops"] = training_flops(name)
    return r


def _isolated(*args) -> dict:
    out = subprocess.run([sys.executable, __file__, "--one", json.dumps(args)], capture_output=True,
                         text=True)
    if out.returncode:
        lines = out.stderr.strip().splitlines()
        return {"model": args[0], "error": lines[-1] if lines else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _hms(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.0f} d"


def row(r: dict, tflops) -> str:
    from agcnn_zoo.train.budget import epoch_seconds
    from agcnn_zoo.train.recipes import recipe_for
    if "error" in r:
        return f"| `{r['model']}` | {r.get('batch', '-')} | {r['error'][:80]} |"
    epochs = recipe_for(r["model"]).epochs
    epoch = epoch_seconds(r["images_per_s"], TRAIN_IMAGES, VAL_IMAGES)
    peak = r.get("peak_bytes")
    cells = [f"`{r['model']}`", str(r["batch"]), f"{r['images_per_s']:.3g}",
             f"{peak / 2**20:,.0f} MiB" if peak is not None else "-", _hms(epoch),
             f"{_hms(epoch * epochs)} ({epochs} ep.)"]
    if "train_flops" in r:
        f = r["train_flops"]
        cells.append(f"{f / 1e9:.2f}")
        for t in tflops:  # the validation forward costs a third of a training step
            per_epoch = f * (TRAIN_IMAGES + VAL_IMAGES / 3) / (t * 1e12)
            cells.append(f"{_hms(per_epoch)} / {_hms(per_epoch * epochs)}")
    return "| " + " | ".join(cells) + " |"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="*_cifar", help="fnmatch pattern(s), comma-separated")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--small", default="a_*", help="names measured at --small-batch")
    p.add_argument("--small-batch", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up step")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="per name, start no step after this many seconds (slow names: fewer steps)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--compile", action="store_true", help="torch.compile the training forward")
    p.add_argument("--no-flops", action="store_true", help="skip counting operations")
    p.add_argument("--tflops", default="50,120", help="sustained H100 TFLOP/s for the estimate")
    p.add_argument("--json", default=None)
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(measure_one(*json.loads(args.one))))
        return 0
    if min(args.batch, args.small_batch, args.steps, args.threads) < 1:
        p.error("--batch, --small-batch, --steps and --threads must be at least 1")
    import torch
    import agcnn_zoo as zoo
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = "cuda" if cuda else "cpu"
    names = []
    for pat in args.models.split(","):
        names += [n for n in zoo.list_models(pat) if n not in names]
    if not names:
        p.error(f"--models {args.models!r} matches no model")
    tflops = [float(t) for t in args.tflops.split(",")]
    label = torch.cuda.get_device_name() if device == "cuda" else f"cpu, {args.threads} threads"
    head = ["model", "batch", "train img/s", "peak memory", "epoch", "recipe"]
    if not args.no_flops:
        head += ["GFLOP / train img"] + [f"H100 at {t:g} TFLOP/s: epoch / recipe" for t in tflops]
    print(f"training speed on {label} (epoch: {TRAIN_IMAGES:,} training + {VAL_IMAGES:,} "
          f"validation images)")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head), flush=True)
    results = []
    for name in names:
        batch = args.small_batch if fnmatch.fnmatchcase(name, args.small) else args.batch
        a = (name, batch, device, args.threads, args.steps, args.compile, not args.no_flops,
             args.max_seconds)
        r = _isolated(*a) if device == "cpu" else measure_one(*a)
        results.append(r)
        print(row(r, tflops), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
