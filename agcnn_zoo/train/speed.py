"""Speed options of a training run (:class:`Speed`), kept apart from the run's settings: they
change how fast a run goes and when it checkpoints, not what it trains, so a run may be resumed
with other ones (``RunSettings`` and the recipe are what a checkpoint is checked against).

``data_on_device``    the training and validation pixels (uint8) are moved to the device once;
                      batches and their augmentation are made there (nothing crosses the bus)
``compile``           ``torch.compile`` of the training forward (the first steps compile)
``benchmark``         cuDNN autotuning and non-deterministic kernels (GPU speed; a resumed run
                      then matches an uninterrupted one to float rounding, not bit for bit)
``chunk_elements``    the full-alpha chunk budget; None: ``AGCNN_ZOO_CHUNK_ELEMENTS``, else the
                      device memory on a GPU (:func:`chunk_budget`), the CPU cache otherwise
``checkpoint_every_s`` also checkpoint inside an epoch, at most this many seconds apart
``stop_at``           a ``time.time()`` at which the run checkpoints and stops
                      (:class:`agcnn_zoo.train.clock.TrainingStopped`)

bf16 autocast and channels_last are ``RunSettings`` (``amp``, ``channels_last``): they change
the arithmetic, so a run records them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from ..io import env
from ..nn import set_max_chunk_elements

__all__ = ["Speed", "chunk_budget", "configure_backends", "prepare_model", "for_device"]

#: entries of one full-alpha response chunk per byte of GPU memory: a chunk's forward and
#: backward hold about a dozen float32 tensors of that size, so 1/512 keeps them under 10%
_CHUNK_SHARE = 512
_MIN_CHUNK, _MAX_CHUNK = 1 << 20, 1 << 28


@dataclass(frozen=True)
class Speed:
    data_on_device: bool = False
    compile: bool = False
    benchmark: bool = False
    chunk_elements: Optional[int] = None
    checkpoint_every_s: Optional[float] = None
    stop_at: Optional[float] = None

    def __post_init__(self):
        if self.chunk_elements is not None and (isinstance(self.chunk_elements, bool) or
                                                not isinstance(self.chunk_elements, int) or
                                                self.chunk_elements < 1):
            raise ValueError(f"chunk_elements must be a positive int, got {self.chunk_elements!r}")
        if self.checkpoint_every_s is not None and not self.checkpoint_every_s > 0:
            raise ValueError(f"checkpoint_every_s must be a positive number of seconds, got "
                             f"{self.checkpoint_every_s!r}")


def for_device(device: torch.device, **changes) -> Speed:
    """The options that pay on ``device``: on a GPU data resident there and cuDNN autotuning;
    on a CPU none (the batches are already in memory, and the CPU path stays bit-exact)."""
    base = dict(data_on_device=True, benchmark=True) if torch.device(device).type == "cuda" else {}
    return Speed(**{**base, **changes})


def chunk_budget(device: torch.device) -> Optional[int]:
    """The full-alpha chunk budget for a GPU: ``AGCNN_ZOO_CHUNK_ELEMENTS`` when set (several
    runs sharing one GPU each take a part of it), else its memory / 512, as a power of two in
    [2^20, 2^28] (80 GB gives 2^27); None on a CPU (the layers size it from the CPU cache and
    read the same variable)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    override = env.chunk_elements()
    if override is not None:
        return override
    total = torch.cuda.get_device_properties(device).total_memory
    return int(min(_MAX_CHUNK, max(_MIN_CHUNK, 1 << int(math.log2(total // _CHUNK_SHARE)))))


def configure_backends(speed: Speed, device: torch.device) -> None:
    """Process-wide switches for ``speed`` on ``device`` (the engine set the deterministic ones
    first; they stay unless ``benchmark``)."""
    if torch.device(device).type != "cuda":
        return
    torch.backends.cuda.matmul.allow_tf32 = True   # float32 matmuls outside autocast
    torch.backends.cudnn.allow_tf32 = True
    if speed.benchmark:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = True


def prepare_model(model: torch.nn.Module, speed: Speed, device: torch.device) -> None:
    """Set the full-alpha chunk budget of every attentive layer of ``model`` (in place)."""
    budget = speed.chunk_elements or chunk_budget(device)
    if budget is not None:
        set_max_chunk_elements(model, budget)


def compiled(module: torch.nn.Module, speed: Speed) -> torch.nn.Module:
    """``module`` itself, or its ``torch.compile`` wrapper when ``speed.compile``."""
    return torch.compile(module) if speed.compile else module
