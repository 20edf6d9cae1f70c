"""How fast a model trains, measured on the engine's own path: uint8 pixels in a
:class:`~agcnn_zoo.train.splits.Source` (on the device when ``speed.data_on_device``), the
recipe's augmentation, autocast and channels_last as in a run, the recipe's optimizer; and how
many floating-point operations one training image costs (``torch.utils.flop_counter``).

Used by ``eval/bench_train.py`` (the table that sizes the GPU work) and by ``eval/campaign.py``
(its plan starts from rates measured on the device it runs on).
"""
from __future__ import annotations

import time
from typing import Optional

import torch
import torch.nn.functional as F

from ..api import create_model, model_info
from ..registry import get_entry
from .recipes import recipe_for
from .speed import Speed, compiled, configure_backends, prepare_model
from .splits import Source

__all__ = ["measure_training", "training_flops"]


def _synthetic(name: str, n: int, device: torch.device, on_device: bool) -> Source:
    c, h, w = model_info(name)["input_size"]
    g = torch.Generator().manual_seed(0)
    raw = torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    prep = get_entry(name).preprocessing
    mean, std = prep.get("mean", [0.5] * c), prep.get("std", [0.25] * c)
    src = Source(raw, labels, mean, std)
    return src.to(device) if on_device else src


def _step_fn(name: str, batch: int, device: torch.device, amp: Optional[str],
             channels_last: bool, speed: Speed, steps: int):
    recipe = recipe_for(name)
    torch.manual_seed(0)
    model = create_model(name).to(device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    prepare_model(model, speed, device)
    fwd = compiled(model, speed)
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum or 0.9,
                          weight_decay=recipe.weight_decay)
    src = _synthetic(name, batch * steps, device, speed.data_on_device)
    gen = torch.Generator().manual_seed(1)
    counter = [0]

    def step() -> None:
        i = counter[0] % steps
        counter[0] += 1
        x, y = src.batch(torch.arange(i * batch, (i + 1) * batch), recipe.augment, gen)
        x, y = x.to(device, non_blocking=True), y.to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if amp == "bf16" else _Null()
        with ctx:
            loss = F.cross_entropy(fwd(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def measure_training(name: str, batch: int, device="cpu", *, amp: Optional[str] = None,
                     channels_last: bool = False, speed: Optional[Speed] = None, steps: int = 3,
                     warmup: int = 1, threads: Optional[int] = None,
                     time_limit: Optional[float] = None) -> dict:
    """Training images/s of ``name`` at ``batch`` (median of ``steps`` timed steps after
    ``warmup`` untimed ones; the first step's time is reported apart: it includes compiling and
    cuDNN autotuning) and the peak memory of the device (CUDA: ``max_memory_allocated``; on a
    CPU the caller measures a fresh process's peak RSS, see ``eval/bench_train.py``). With
    ``time_limit``, no step starts after that many seconds (a slow model is timed on fewer
    steps; at least one)."""
    device = torch.device(device)
    speed = speed or Speed()
    if threads:
        torch.set_num_threads(threads)
    configure_backends(speed, device)
    step = _step_fn(name, batch, device, amp, channels_last, speed, max(steps, 1))
    cuda = device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(warmup + steps):
        if times and time_limit is not None and sum(times) > time_limit:
            break
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    timed = sorted(times[warmup:]) or times
    median = timed[len(timed) // 2]
    return {"model": name, "batch": batch, "device": str(device), "amp": amp,
            "channels_last": channels_last, "compile": speed.compile,
            "images_per_s": batch / median, "step_s": median, "first_step_s": times[0],
            "peak_bytes": torch.cuda.max_memory_allocated(device) if cuda else None,
            "threads": torch.get_num_threads(), "timed_steps": len(times[warmup:])}


def training_flops(name: str, batch: int = 2) -> float:
    """Floating-point operations of one training step per image (forward, backward; counted by
    ``torch.utils.flop_counter`` on a CPU in float32: convolutions and matrix products, which
    is what tensor cores run; elementwise work is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode
    step = _step_fn(name, batch, torch.device("cpu"), None, False, Speed(), 1)
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops() / batch
