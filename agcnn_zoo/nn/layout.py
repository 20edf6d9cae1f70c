"""The memory layout a convolution should see: NHWC (channels_last) for CPU inference.

oneDNN's NHWC kernels are about 1.5x faster at the zoo's channel counts, and the layout flows
through the group batch norm, ReLU and pooling unchanged (``[B, C, n, X, Y]`` stays a view of
an NHWC ``[B, C n, X, Y]``). With autograd the maps stay NCHW: batch-norm training on NHWC
group maps costs more than the convolution gains. Shared by the layers and their exported
forms (same layout, same kernels, same rounding).
"""
from __future__ import annotations

import torch

from .base import fast_path_allowed


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1 and x.is_contiguous():
        # one channel: the same memory, strided as NHWC, so oneDNN also returns NHWC
        b, _, h, w = x.shape
        return x.as_strided(x.shape, (h * w, 1, w, 1))
    return x.contiguous(memory_format=torch.channels_last)


def conv_input(x: torch.Tensor, training: bool, min_channels: int = 1) -> torch.Tensor:
    """``x`` in the layout its convolution should see (NHWC for CPU inference)."""
    if (not fast_path_allowed(x, training=training, cpu_only=True, no_grad_mode=True)
            or x.shape[1] < min_channels):
        return x
    return _nhwc(x)
