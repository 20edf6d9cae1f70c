"""Pooling on group feature maps ``[B, C, n, X, Y]``."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .base import Layer, dispatch, fast_path_allowed


def _planewise(fn, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    # every (channel, group element) plane is pooled on its own
    y = fn(x.flatten(1, 2), *args, **kwargs)
    return y.unflatten(1, x.shape[1:3])


def _max_pool2x2(x: torch.Tensor) -> torch.Tensor:
    # the max of four strided views: exact, and several times faster than CPU max_pool2d on
    # NCHW maps; used without autograd only (torch.maximum splits the gradient on ties,
    # max_pool2d gives it to one element)
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    x = x[..., :h, :w]
    return torch.maximum(torch.maximum(x[..., 0::2, 0::2], x[..., 1::2, 0::2]),
                         torch.maximum(x[..., 0::2, 1::2], x[..., 1::2, 1::2]))


def _planes_max_pool(x, kernel_size, stride=None, padding=0):
    stride = kernel_size if stride is None else stride
    # the same values either way (a max is exact): only speed is decided at run time
    if (kernel_size == stride == 2 and padding == 0
            and fast_path_allowed(x, cpu_only=True, no_grad_for=(x,))
            and not x.is_contiguous(memory_format=torch.channels_last)):
        return _max_pool2x2(x)
    return F.max_pool2d(x, kernel_size, stride, padding)


def spatial_max_pool_fast(x, kernel_size, stride=None, padding=0):
    return _planewise(_planes_max_pool, x, kernel_size, stride, padding)


def spatial_max_pool_reference(x, kernel_size, stride=None, padding=0):
    return _planewise(F.max_pool2d, x, kernel_size, stride, padding)


def spatial_max_pool(x, kernel_size, stride=None, padding=0):
    """2D max pooling of every (channel, group element) plane of ``[B, C, n, X, Y]``."""
    return dispatch(spatial_max_pool_fast, spatial_max_pool_reference, x, kernel_size, stride,
                    padding)


def spatial_avg_pool(x, kernel_size, stride=None, padding=0):
    return _planewise(F.avg_pool2d, x, kernel_size, stride, padding)


class SpatialMaxPool(Layer):
    def __init__(self, kernel_size: int, stride: int | None = None, padding: int = 0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride or kernel_size, padding

    def forward_fast(self, x):
        return spatial_max_pool_fast(x, self.kernel_size, self.stride, self.padding)

    def forward_reference(self, x):
        return spatial_max_pool_reference(x, self.kernel_size, self.stride, self.padding)

    def export(self) -> nn.Module:
        return copy.deepcopy(self)


class SpatialAvgPool(SpatialMaxPool):
    """One formulation (``F.avg_pool2d`` per plane) serves both paths."""

    def forward_fast(self, x):
        return spatial_avg_pool(x, self.kernel_size, self.stride, self.padding)

    forward_reference = forward_fast


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
