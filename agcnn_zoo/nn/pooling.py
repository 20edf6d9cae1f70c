"""Pooling on group feature maps ``[B, C, n, X, Y]``."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _planewise(fn, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    # every (channel, group element) plane is pooled on its own
    y = fn(x.flatten(1, 2), *args, **kwargs)
    return y.unflatten(1, x.shape[1:3])


def spatial_max_pool(x, kernel_size, stride=None, padding=0):
    return _planewise(F.max_pool2d, x, kernel_size, stride, padding)


def spatial_avg_pool(x, kernel_size, stride=None, padding=0):
    return _planewise(F.avg_pool2d, x, kernel_size, stride, padding)


class SpatialMaxPool(nn.Module):
    def __init__(self, kernel_size: int, stride: int | None = None, padding: int = 0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride or kernel_size, padding

    def forward(self, x):
        return spatial_max_pool(x, self.kernel_size, self.stride, self.padding)


class SpatialAvgPool(SpatialMaxPool):
    def forward(self, x):
        return spatial_avg_pool(x, self.kernel_size, self.stride, self.padding)


class GroupPool(nn.Module):
    """Pool over the group axis (dim 2): the result is invariant to the group's axis permutations."""

    def __init__(self, mode: str = "max"):
        super().__init__()
        if mode not in ("max", "mean"):
            raise ValueError(f"GroupPool mode must be 'max' or 'mean', got {mode!r}")
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=2) if self.mode == "max" else x.mean(dim=2)

    def extra_repr(self):
        return f"mode={self.mode!r}"
