#!/usr/bin/env python
"""Time of every full-alpha layer of a model and, with ``--baseline PATH``, of the same layers
with the full-alpha kernel of another checkout, alternated in one process.

    python eval/bench_layers.py [--models a_p4cnn_rotmnist] [--batch-size 128] [--threads 2]
                                [--rounds 5] [--baseline PATH] [--json PATH]

Whole-process timings on a shared VM drift by up to 20% within minutes, which hides a change of
a few percent. Here both kernels run the same layers on the same inputs in one process, round
after round, and the medians are compared. Their ratio is what the change did. Each layer gets
the input it sees in the model (captured by a forward hook on one random batch):

* ``train`` is the layer's forward and backward (output gradient of ones);
* ``eval`` is its forward without gradients, in eval mode.

The baseline's kernel ``PATH/agcnn_zoo/nn/full_alpha/`` (or, in older checkouts, the file
``full_alpha.py``; e.g. from ``git worktree add
/tmp/before <commit>``) is loaded as a module of its own and swapped in for the kernel the
layers call. A kernel with another interface fails with a clear message. Before timing, the
script checks that both kernels give the same layer outputs.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agcnn_zoo import create_model  # noqa: E402
from agcnn_zoo.nn import attentive_conv  # noqa: E402
from agcnn_zoo.nn.attentive_conv import FullAlphaConv  # noqa: E402

#: the kernel of a checkout: a package (this one) or, in older checkouts, one file
KERNEL_PACKAGE = Path("agcnn_zoo", "nn", "full_alpha")
KERNEL_FILE = Path("agcnn_zoo", "nn", "full_alpha.py")


def kernel_path(checkout: Path):
    """The kernel's ``__init__.py`` (a package) or its single file in ``checkout``, or None."""
    for path in (checkout / KERNEL_PACKAGE / "__init__.py", checkout / KERNEL_FILE):
        if path.is_file():
            return path
    return None


def load_kernel(checkout: Path):
    """The full-alpha kernel of another checkout, imported under a name of its own (its
    modules import only torch and each other)."""
    path = kernel_path(checkout)
    name = "agcnn_zoo.nn._baseline_full_alpha"
    package = [str(path.parent)] if path.name == "__init__.py" else None
    spec = importlib.util.spec_from_file_location(name, path, submodule_search_locations=package)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module           # its submodules import each other through the name
    spec.loader.exec_module(module)      # a missing function shows on the first layer call
    return module


def layer_inputs(model, batch: int):
    """Every full-alpha layer of ``model`` with the input it receives for one random batch."""
    layers = [m for m in model.modules() if isinstance(m, FullAlphaConv) and m.has_attention()]
    seen = {}
    hooks = [m.register_forward_hook(lambda mod, args, out: seen.__setitem__(mod, args[0].detach()))
             for m in layers]
    try:
        with torch.no_grad():
            model(torch.randn(batch, *model.pretrained_cfg["input_size"]))
    finally:
        for h in hooks:
            h.remove()
    return [(m, seen[m]) for m in layers]


def train_call(layer, x):
    layer.train()
    layer.zero_grad(set_to_none=True)
    xi = x.clone().requires_grad_()
    out = layer(xi)
    out.backward(torch.ones_like(out))


def eval_call(layer, x):
    layer.eval()
    with torch.no_grad():
        return layer(x)


def seconds(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def run_model(name: str, kernels: dict, batch: int, rounds: int) -> list:
    torch.manual_seed(0)
    model = create_model(name).train()
    rows = []
    for i, (layer, x) in enumerate(layer_inputs(model, batch)):
        outs = {}
        for k, module in kernels.items():
            attentive_conv.kernel = module
            try:
                outs[k] = eval_call(layer, x)
                for _ in range(2):                                    # warm-up
                    train_call(layer, x)
            except (TypeError, AttributeError) as exc:   # a kernel with another interface
                raise SystemExit(f"the {k} kernel cannot run this checkout's layers ({exc}); "
                                 "compare checkouts whose kernels share the functions and "
                                 "arguments that agcnn_zoo/nn/attentive_conv.py calls") from exc
        ref = outs["current"]
        diff = max(((o - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()
                   for o in outs.values())
        if diff > 1e-4:
            raise SystemExit(f"{name} layer {i + 1}: the kernels' outputs differ by {diff:.1e} "
                             "(relative); they do not compute the same layer")
        times = {k: {"train": [], "eval": []} for k in kernels}
        order = list(kernels.items())
        for r in range(rounds):
            # the order alternates (ABBA...): whatever the first call of a round pays, both pay
            for k, module in (order if r % 2 == 0 else order[::-1]):
                attentive_conv.kernel = module
                times[k]["train"].append(seconds(train_call, layer, x))
                times[k]["eval"].append(seconds(eval_call, layer, x))
        row = {"model": name, "layer": i + 1, "input": list(x.shape),
               "max_relative_output_difference": diff}
        for k in kernels:
            for mode in ("train", "eval"):
                row[f"{k}_{mode}_ms"] = 1e3 * statistics.median(times[k][mode])
        rows.append(row)
    return rows


def report(rows: list, kernels: dict) -> None:
    modes = ("train", "eval")
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]
        sums = {f"{k}_{m}_ms": sum(r[f"{k}_{m}_ms"] for r in mine) for k in kernels for m in modes}
        print(f"{name} (batch {mine[0]['input'][0]}; ms, medians)")
        labelled = [(f"c{r['layer']}", str(r["input"]), r) for r in mine] + [("sum", "", sums)]
        for label, shape, r in labelled:
            line = (f"  {label:>4} {shape:>24}  train {r['current_train_ms']:8.1f}"
                    f" ({100 * r['current_train_ms'] / sums['current_train_ms']:3.0f}%)"
                    f"  eval {r['current_eval_ms']:7.1f}")
            if "baseline" in kernels:
                line += (f"  | baseline train {r['baseline_train_ms']:8.1f}"
                         f" eval {r['baseline_eval_ms']:7.1f}"
                         f"  | x{r['baseline_train_ms'] / r['current_train_ms']:.2f} train,"
                         f" x{r['baseline_eval_ms'] / r['current_eval_ms']:.2f} eval vs baseline")
            print(line)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="a_p4cnn_rotmnist,ach_p4cnn_rotmnist,asp_p4cnn_rotmnist")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--baseline", type=Path, help="a checkout (e.g. a git worktree of an older "
                   "commit) whose full-alpha kernel is timed against this one")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if args.rounds < 1 or args.batch_size < 1 or args.threads < 1:
        p.error("--rounds, --batch-size and --threads must be positive")
    if args.baseline is not None and kernel_path(args.baseline) is None:
        p.error(f"{args.baseline} has no {KERNEL_PACKAGE}/ (nor {KERNEL_FILE}): pass a checkout "
                "of agcnn-zoo (git worktree add /tmp/before <commit>)")
    torch.set_num_threads(args.threads)
    current = attentive_conv.kernel
    kernels = {"current": current}
    if args.baseline is not None:
        kernels["baseline"] = load_kernel(args.baseline)
    rows = []
    try:
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            rows += run_model(name, kernels, args.batch_size, args.rounds)
    finally:
        attentive_conv.kernel = current
    if not rows:
        p.error("no full-alpha layers in --models (a_*, ach_*, asp_* models have them)")
    report(rows, kernels)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
