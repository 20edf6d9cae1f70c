"""Dropout with a cheaper mask on CPU.

``torch.bernoulli_`` draws one Mersenne-Twister number and does a float comparison per element,
single-threaded: on the rot-MNIST models it was a fifth of a CPU training step. The fast path
draws 64-bit integers (two masks per draw) and keeps an element when 30 of its uniform bits
are at or above ``round(p * 2^30)``: every element is kept independently with probability
``1 - p`` (to within 2^-30) and scaled by ``1 / (1 - p)``, as ``nn.Dropout`` does; only the
random stream differs. CUDA keeps the fused native kernel, and the reference path keeps
``nn.Dropout``'s Bernoulli draws.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .base import FX, Layer, fast_path_allowed

_BITS = 30
_MASK = (1 << _BITS) - 1


def keep_mask(shape, p: float, device=None) -> torch.Tensor:
    """Boolean mask of ``shape``; each entry True with probability ``1 - p``, independently."""
    n = math.prod(shape)
    # an unbounded int64 random_() is uniform on [0, 2^63): each 32-bit half of a word has at
    # least 31 uniform low bits (the ranged form is ~1.6x slower on CPU)
    words = torch.empty((n + 1) // 2, dtype=torch.int64, device=device).random_()
    halves = words.view(torch.int32)[:n].view(shape)
    return halves.bitwise_and_(_MASK) >= round(p * (1 << _BITS))


class Dropout(Layer, nn.Dropout):
    """``nn.Dropout`` (same arguments, same distribution) with the CPU mask above; the
    reference path is ``nn.Dropout`` itself."""

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        return nn.Dropout.forward(self, x)

    def forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        if (not self.training or self.p == 0.0 or self.p == 1.0 or self.inplace
                or not fast_path_allowed(x, cpu_only=True, unless=(FX,))):
            return nn.Dropout.forward(self, x)
        return (x * keep_mask(x.shape, self.p, x.device)).mul_(1.0 / (1.0 - self.p))

    def export(self) -> nn.Module:
        return nn.Dropout(self.p, self.inplace)
