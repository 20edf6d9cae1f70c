#!/usr/bin/env python
"""The zoo's fast path against the authors' own implementation, side by side.

    git clone https://github.com/dwromero/att_gconvs /tmp/att_gconvs   # never vendored here
    python eval/bench_original.py --original /tmp/att_gconvs [--models ...] [--batch-sizes 128]

For every model it builds the original class (``experiments.<dataset>.models``, found by the
registry's ``original_class``) and the zoo model, gives both the same random weights (the zoo
keeps the original's parameter names), checks that their eval logits agree, then times an eval
forward (no_grad) and a training step (forward, backward, SGD step) of each, every measurement
in a fresh process (``bench.py``'s helpers): images/s (median of ``--repeats`` calls after
warm-up calls; the first call, which includes compiling, is reported apart) and peak resident
memory above the process's size before the first call (with ``--rounds N``: the medians of N
interleaved measurements). The zoo runs with each full-alpha backend of ``--zoo`` (``zoo``:
the eager kernel; ``zoo-compiled``: torch.compile of its no-grad chunk function). It prints the
zoo / original ratios. Nothing of the original is copied into this repository: it is imported
from the path given.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench import (combine, format_cell, peak_rss_bytes, ratios, rss_bytes,  # noqa: E402
                   run_isolated, time_calls)

#: the original repository's model package for each of the zoo's datasets
ORIGINAL_PACKAGES = {"rotmnist": "experiments.rot_mnist.models",
                     "cifar10": "experiments.cifar10.models",
                     "pcam": "experiments.pcam.models"}


def _original_model(name: str, original: str):
    import agcnn_zoo as zoo
    from agcnn_zoo.registry import get_entry
    entry = get_entry(name)
    if entry.original_class is None:
        raise ValueError(f"{name} has no counterpart in the original code")
    if original not in sys.path:
        sys.path.insert(0, original)
    module = importlib.import_module(ORIGINAL_PACKAGES[entry.dataset])
    return getattr(module, entry.original_class)(), zoo.create_model(name)


def measure(name: str, impl: str, original: str, batch: int, mode: str, repeats: int,
            threads: int) -> dict:
    """One measurement of ``impl`` ('original' or 'zoo'), in this process."""
    import agcnn_zoo as zoo
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    orig, ours = _original_model(name, original)
    orig.load_state_dict(ours.state_dict(), strict=True)
    c, h, w = zoo.model_info(name)["input_size"]
    x = torch.randn(batch, c, h, w)
    y = torch.randint(0, ours.num_classes, (batch,))
    check = None
    if mode == "eval":
        with torch.no_grad():
            a, b = orig.eval()(x[:8]), ours.eval()(x[:8])
        check = (a.reshape(b.shape) - b).abs().max().item() / max(1.0, a.abs().max().item())
    if impl == "zoo-compiled":
        from agcnn_zoo.nn import set_full_alpha_backend
        set_full_alpha_backend(ours, "compiled")
    model = orig if impl == "original" else ours
    del orig, ours
    model.train(mode == "train")
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step():
        if mode == "eval":
            with torch.no_grad():
                model(x)
        else:
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x).reshape(batch, -1), y).backward()
            opt.step()

    base = rss_bytes()
    first = time_calls(step, 0)                    # compiling, allocator warm-up
    sec = time_calls(step, repeats)
    return {"model": name, "impl": impl, "batch": batch, "mode": mode, "seconds": sec,
            "images_per_s": batch / sec, "first_call_s": first,
            "peak_bytes": max(0, peak_rss_bytes() - base),
            "relative_logit_difference": check, "threads": threads}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--original", required=True,
                   help="a checkout of github.com/dwromero/att_gconvs")
    p.add_argument("--models", default="a_p4cnn_rotmnist,ach_p4cnn_rotmnist,asp_p4cnn_rotmnist",
                   help="comma-separated names (default: the three full-alpha kinds)")
    p.add_argument("--zoo", default="eager,compiled",
                   help="the zoo's full-alpha backends to measure: eager, compiled or both")
    p.add_argument("--batch-sizes", default="128")
    p.add_argument("--modes", default="eval,train")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--rounds", type=int, default=1,
                   help="measure every implementation this many times, interleaved, and report "
                        "medians")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    original = str(Path(args.original).resolve())
    if not (Path(original) / "attgconv").is_dir():
        p.error(f"{original} is not a checkout of dwromero/att_gconvs (no attgconv/ in it); "
                "git clone https://github.com/dwromero/att_gconvs")
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    backends = args.zoo.split(",")
    if not backends or set(backends) - {"eager", "compiled"}:
        p.error(f"--zoo {args.zoo}: give eager, compiled or eager,compiled")
    impls = ["original"] + [{"eager": "zoo", "compiled": "zoo-compiled"}[b] for b in backends]
    rows = []
    for name in args.models.split(","):
        for batch in [int(b) for b in args.batch_sizes.split(",")]:
            for mode in args.modes.split(","):
                runs = {impl: [] for impl in impls}
                for _ in range(args.rounds):      # interleaved: drift hits all alike
                    for impl, got in runs.items():
                        got.append(run_isolated("bench_original", name, impl, original, batch,
                                                mode, args.repeats, args.threads))
                        rows.append(got[-1])
                res = {impl: combine(rs) for impl, rs in runs.items()}
                o = res["original"]
                line = f"{name:22s} b={batch:<4d} {mode:5s}"
                for impl, r in res.items():
                    line += format_cell(impl, r, 60)
                for impl, z in res.items():
                    if impl == "original" or "images_per_s" not in o or "images_per_s" not in z:
                        continue
                    speed, memory = ratios(z, o)
                    line += f" | {impl} x{speed:.2f} speed, memory 1/{memory:.1f}"
                    if z.get("relative_logit_difference") is not None:
                        line += f", logits differ by {z['relative_logit_difference']:.1e} (rel.)"
                print(line, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
