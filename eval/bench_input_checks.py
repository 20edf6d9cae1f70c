#!/usr/bin/env python
"""What the input value checks cost on the forward path (``agcnn_zoo.input_checks``).

    python eval/bench_input_checks.py [--models p4cnn_rotmnist,...] [--batch-sizes 1,32]
                                      [--threads 2] [--repeats 10] [--rounds 5]

For every model and batch size, an eval forward under no_grad is timed with the checks on
(``model.check_input_values = True``, the default) and off, alternated in one process over
``--rounds`` rounds of ``--repeats`` calls; the check alone (``input_checks.check_input_values``:
one ``aminmax`` over the input and a host sync) is timed too. It prints the fastest call of
each (the least disturbed by other processes on a shared machine) and the ratios checked /
unchecked forward and check / forward, and the ratio of the medians. Random weights: speed
does not depend on them.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import agcnn_zoo as zoo  # noqa: E402
from agcnn_zoo.input_checks import check_input_values  # noqa: E402

DEFAULT_MODELS = "z2cnn_rotmnist,p4cnn_rotmnist,a_p4cnn_rotmnist,p4m_resnet44_cifar"


def call_seconds(fn, repeats: int) -> list:
    fn()                                    # warm-up (caches, allocator)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def measure(name: str, batch: int, repeats: int, rounds: int) -> dict:
    torch.manual_seed(0)
    model = zoo.create_model(name).eval()
    cfg = model.pretrained_cfg
    x = torch.randn(batch, *cfg["input_size"])
    on, off, check = [], [], []
    with torch.no_grad():
        for _ in range(rounds):
            model.check_input_values = True
            on += call_seconds(lambda: model(x), repeats)
            model.check_input_values = False
            off += call_seconds(lambda: model(x), repeats)
            check += call_seconds(lambda: check_input_values(x, cfg["mean"], cfg["std"]), repeats)
    return {"model": name, "batch": batch, "checked_s": min(on), "unchecked_s": min(off),
            "check_s": min(check), "median_ratio": statistics.median(on) / statistics.median(off)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated model names")
    p.add_argument("--batch-sizes", default="1,32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    if args.repeats < 1 or args.rounds < 1:
        p.error("--repeats and --rounds must be positive")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, eval forward under no_grad; "
          f"fastest of {args.rounds} alternated rounds of {args.repeats} calls")
    print(f"{'model':24s} {'batch':>5s} {'checked ms':>11s} {'unchecked ms':>13s} "
          f"{'checked/unchecked':>18s} {'(medians)':>10s} {'check alone us':>15s} "
          f"{'check/forward':>14s}")
    for name in args.models.split(","):
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            r = measure(name, batch, args.repeats, args.rounds)
            print(f"{name:24s} {batch:5d} {1e3 * r['checked_s']:11.3f} {1e3 * r['unchecked_s']:13.3f} "
                  f"{r['checked_s'] / r['unchecked_s']:18.3f} {r['median_ratio']:10.3f} "
                  f"{1e6 * r['check_s']:15.1f} "
                  f"{r['check_s'] / r['unchecked_s']:14.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
