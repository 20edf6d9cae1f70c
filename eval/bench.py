#!/usr/bin/env python
"""Speed and memory of the zoo's models, as ratios against the naive reference path and the
exported plain-convolution network.

    python eval/bench.py [--models PATTERN] [--batch-sizes 128] [--threads 2] [--repeats 3]
                         [--modes eval,train] [--device auto|cpu|cuda] [--json PATH]

For every model, mode (eval forward under no_grad; train step = forward, backward, SGD step)
and path -- ``fast`` (the library), ``reference`` (``agcnn_zoo.nn.reference_path()``: filters
rebuilt by Python loops every call, full response tensors materialised, i.e. the original's
formulation) and ``export`` (``agcnn_zoo.export.export``: plain nn.Conv2d / BatchNorm, eval only,
the limit) -- it reports images/s (median of ``--repeats`` timed calls after two warm-up calls) and
peak memory: on CUDA ``torch.cuda.max_memory_allocated``; on CPU each measurement runs in a
fresh process and the peak is its maximum resident set size minus the resident size just before
the first call (model, input and optimizer already built). Ratios: fast / reference speed,
reference / fast memory, fast / export speed. Random weights: speed does not depend on them.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def time_calls(step, repeats: int, sync=None) -> float:
    """Median seconds of ``repeats`` calls of ``step`` after two warm-up calls (caches, the
    allocator's thresholds); with ``repeats == 0`` the one cold call."""
    warmup = 2 if repeats else 0
    times = []
    for i in range(repeats + max(warmup, 1)):
        t0 = time.perf_counter()
        step()
        if sync is not None:
            sync()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(name: str, batch: int, mode: str, path: str, repeats: int, device: str,
            threads: int) -> dict:
    """One measurement, in this process."""
    import agcnn_zoo as zoo
    from agcnn_zoo.nn import reference_path
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = zoo.create_model(name).to(device)
    c, h, w = zoo.model_info(name)["input_size"]
    x = torch.randn(batch, c, h, w, device=device)
    y = torch.randint(0, model.num_classes, (batch,), device=device)
    if path == "export":
        from agcnn_zoo.export import export
        model = export(model.eval())
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step():
        if mode == "eval":
            with torch.no_grad():
                model(x)
        else:
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()

    model.train(mode == "train")
    ctx = reference_path() if path == "reference" else _null()
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() if cuda else rss_bytes()
    with ctx:
        sec = time_calls(step, repeats, torch.cuda.synchronize if cuda else None)
    peak = torch.cuda.max_memory_allocated() if cuda else peak_rss_bytes()
    return {"model": name, "batch": batch, "mode": mode, "path": path, "seconds": sec,
            "images_per_s": batch / sec, "peak_bytes": max(0, peak - base), "device": device,
            "threads": threads}


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def run_isolated(module: str, *args) -> dict:
    """``<module>.measure(*args)`` (a script of this folder) in a fresh process, so that its
    peak RSS is its own; a failure comes back as ``{"error": last line of stderr}``."""
    code = ("import json, sys; sys.path.insert(0, %r); from %s import measure; "
            "print(json.dumps(measure(*json.loads(sys.argv[1]))))"
            % (str(Path(__file__).parent), module))
    out = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True,
                         text=True)
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_isolated(*args) -> dict:
    return run_isolated("bench", *args)


def _fmt_mem(b):
    return f"{b / 2**20:8.1f} MiB" if b is not None else "       -    "


def ratios(new: dict, base: dict):
    """(speed of ``new`` / speed of ``base``, peak memory of ``base`` / peak memory of ``new``)."""
    return (new["images_per_s"] / base["images_per_s"],
            base["peak_bytes"] / max(new["peak_bytes"], 1))


def format_cell(label: str, r: dict, error_width: int = 40) -> str:
    """One table cell: images/s and peak memory, or the error of a failed measurement."""
    if "images_per_s" in r:
        return f" | {label} {r['images_per_s']:9.4g} img/s {_fmt_mem(r['peak_bytes'])}"
    return f" | {label} {r.get('error', '-')[:error_width]}" if r else ""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="p4cnn_rotmnist,af_p4cnn_rotmnist,a_p4cnn_rotmnist",
                   help="comma-separated names or fnmatch patterns")
    p.add_argument("--batch-sizes", default="128")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--modes", default="eval,train")
    p.add_argument("--paths", default="fast,reference,export")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    import agcnn_zoo as zoo
    names = []
    for pat in args.models.split(","):
        names += [n for n in zoo.list_models(pat) if n not in names]
    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    rows = []
    for name in names:
        for batch in [int(b) for b in args.batch_sizes.split(",")]:
            for mode in args.modes.split(","):
                res = {}
                for path in args.paths.split(","):
                    if path == "export" and mode == "train":
                        continue
                    r = (measure_isolated if device == "cpu" else measure)(
                        name, batch, mode, path, args.repeats, device, args.threads)
                    res[path] = r
                    rows.append({**r, "model": name, "batch": batch, "mode": mode, "path": path})
                f, rf, ex = res.get("fast", {}), res.get("reference", {}), res.get("export", {})
                line = f"{name:24s} b={batch:<4d} {mode:5s}"
                for label, r in (("fast", f), ("ref", rf), ("export", ex)):
                    line += format_cell(label, r)
                if "images_per_s" in f and "images_per_s" in rf:
                    speed, memory = ratios(f, rf)
                    line += f" | speed x{speed:.1f} vs ref, memory 1/{memory:.1f}"
                if "images_per_s" in f and "images_per_s" in ex:
                    line += f" | {f['images_per_s'] / ex['images_per_s']:.2f} of export speed"
                print(line, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
