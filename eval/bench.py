#!/usr/bin/env python
"""Speed and memory of the zoo's models, as ratios against the naive reference path, the
exported plain-convolution network and (optionally) an older checkout of the zoo.

    python eval/bench.py [--models PATTERN] [--batch-sizes 128] [--threads 2] [--repeats 3]
                         [--rounds 1] [--modes eval,train] [--paths fast,compiled,reference,export]
                         [--baseline PATH] [--device auto|cpu|cuda] [--json PATH]

For every model, mode (eval forward under no_grad; train step = forward, backward, SGD step)
and path -- ``fast`` (the library, full-alpha layers on the eager kernel), ``compiled`` (the same
with ``set_full_alpha_backend(model, "compiled")``: torch.compile of the no-grad full-alpha
chunk; a training step runs the eager kernel either way, so its two rows differ by noise only),
``reference`` (``agcnn_zoo.nn.reference_path()``: filters rebuilt by Python loops every
call, full response tensors materialised, i.e. the original's formulation), ``export``
(``agcnn_zoo.export.export``: plain nn.Conv2d / BatchNorm, eval only, the limit) and, with
``--baseline PATH``, ``baseline`` (the fast path of the agcnn_zoo package found in PATH, e.g. a
``git worktree`` of an older commit: the speed before a change, measured in the same run) -- it
reports images/s (median of ``--repeats`` timed calls after two warm-up calls; the first call,
which includes compiling, is reported apart; with ``--rounds N`` every path is measured N times,
interleaved, and the medians are reported) and peak memory: on CUDA
``torch.cuda.max_memory_allocated``; on CPU each measurement runs in a fresh process and the
peak is its maximum resident set size minus the resident size just before the first call
(model, input and optimizer already built). Ratios: fast (and compiled) / reference speed,
reference / fast memory, fast / export speed, fast (and compiled) / baseline speed. Random
weights: speed does not depend on them.
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
            threads: int, baseline: str = None) -> dict:
    """One measurement, in this process (for ``path == "baseline"``, a fresh process: the
    package is imported from ``baseline``)."""
    if path == "baseline":
        if "agcnn_zoo" in sys.modules:
            raise RuntimeError("the baseline must be measured in a fresh process")
        sys.path.insert(0, str(Path(baseline).resolve()))
    import agcnn_zoo as zoo
    from agcnn_zoo.nn import reference_path
    if path == "baseline" and not Path(zoo.__file__).resolve().is_relative_to(
            Path(baseline).resolve()):
        raise RuntimeError(f"imported agcnn_zoo from {zoo.__file__}, not from {baseline}")
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = zoo.create_model(name).to(device)
    if path == "compiled":
        from agcnn_zoo.nn import set_full_alpha_backend
        set_full_alpha_backend(model, "compiled")
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
    sync = torch.cuda.synchronize if cuda else None
    with ctx:
        first = time_calls(step, 0, sync)          # compiling, allocator warm-up
        sec = time_calls(step, repeats, sync)
    peak = torch.cuda.max_memory_allocated() if cuda else peak_rss_bytes()
    return {"model": name, "batch": batch, "mode": mode, "path": path, "seconds": sec,
            "images_per_s": batch / sec, "first_call_s": first,
            "peak_bytes": max(0, peak - base), "device": device, "threads": threads,
            "package": str(Path(zoo.__file__).parent)}


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


def combine(results: list) -> dict:
    """Rounds of one measurement: the median speed and peak memory, the first round's first
    call (the cold compile), or the first error."""
    ok = [r for r in results if "images_per_s" in r]
    if not ok:
        return results[0]
    return {**ok[0], "images_per_s": statistics.median(r["images_per_s"] for r in ok),
            "peak_bytes": statistics.median(r["peak_bytes"] for r in ok), "rounds": len(ok)}


def format_row(name: str, batch: int, mode: str, res: dict) -> str:
    """One line: every path's cell, then the ratios between them."""
    line = f"{name:24s} b={batch:<4d} {mode:5s}"
    for label, path in (("fast", "fast"), ("compiled", "compiled"), ("ref", "reference"),
                        ("export", "export"), ("baseline", "baseline")):
        line += format_cell(label, res.get(path, {}))
    ok = {p for p, r in res.items() if "images_per_s" in r}
    for new in ("fast", "compiled"):
        if new in ok and "reference" in ok:
            speed, memory = ratios(res[new], res["reference"])
            line += f" | {new} x{speed:.1f} vs ref, memory 1/{memory:.1f}"
        if new in ok and "baseline" in ok:
            line += f" | {new} x{ratios(res[new], res['baseline'])[0]:.2f} vs baseline"
    if "fast" in ok and "export" in ok:
        line += f" | {res['fast']['images_per_s'] / res['export']['images_per_s']:.2f} of export speed"
    if "compiled" in ok:
        line += f" | compiled first call {res['compiled']['first_call_s']:.0f} s"
    return line


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="a_p4cnn_rotmnist,ach_p4cnn_rotmnist,asp_p4cnn_rotmnist",
                   help="comma-separated names or fnmatch patterns (default: the three full-alpha "
                        "kinds alpha, alpha_Ch, alpha_Sp)")
    p.add_argument("--batch-sizes", default="128")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rounds", type=int, default=1,
                   help="measure every path this many times, interleaved, and report medians "
                        "(a shared or throttled CPU drifts by tens of percent within minutes)")
    p.add_argument("--modes", default="eval,train")
    p.add_argument("--paths", default="fast,compiled,reference,export")
    p.add_argument("--baseline", default=None, metavar="PATH",
                   help="also measure the fast path of the agcnn_zoo package in PATH (e.g. "
                        "`git worktree add /tmp/before <commit>`), in the same run")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    paths = args.paths.split(",")
    if args.baseline:
        if not (Path(args.baseline) / "agcnn_zoo" / "__init__.py").is_file():
            p.error(f"--baseline {args.baseline}: no agcnn_zoo package in it (give the root of a "
                    "checkout, e.g. made by `git worktree add /tmp/before <commit>`)")
        paths.append("baseline")
    import agcnn_zoo as zoo
    names = []
    for pat in args.models.split(","):
        names += [n for n in zoo.list_models(pat) if n not in names]
    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    rows = []
    for name in names:
        for batch in [int(b) for b in args.batch_sizes.split(",")]:
            for mode in args.modes.split(","):
                runs = {path: [] for path in paths if not (path == "export" and mode == "train")}
                for _ in range(args.rounds):      # paths interleaved: drift hits all alike
                    for path, got in runs.items():
                        isolated = device == "cpu" or path == "baseline"
                        r = (measure_isolated if isolated else measure)(
                            name, batch, mode, path, args.repeats, device, args.threads,
                            args.baseline)
                        got.append(r)
                        rows.append({**r, "model": name, "batch": batch, "mode": mode,
                                     "path": path})
                print(format_row(name, batch, mode, {p: combine(rs) for p, rs in runs.items()}),
                      flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
