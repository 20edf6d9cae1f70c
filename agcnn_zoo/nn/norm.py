"""Batch norm on group feature maps: one mean/var/affine per channel, shared over the group
axis and space (what keeps it equivariant). Same parameters and buffers as nn.BatchNorm3d,
eps 2e-5 as in every model of the original."""
from __future__ import annotations

import copy

import torch.nn.functional as F
from torch import nn

from .base import Layer, fast_path_allowed
from .tracing import fx_tracing

#: the original's batch-norm settings, in every model (SPEC 5)
EPS, MOMENTUM = 2e-5, 0.1


class GroupBatchNorm(Layer, nn.BatchNorm3d):
    """``forward_reference`` is ``nn.BatchNorm3d`` itself; ``forward_fast`` the same map on a
    layout-preserving view in eval mode (see below)."""

    def __init__(self, num_features: int, eps: float = EPS, momentum: float = MOMENTUM):
        super().__init__(num_features, eps=eps, momentum=momentum)

    def _check_input_dim(self, input):
        if not fx_tracing() and input.dim() != 5:
            raise ValueError(f"GroupBatchNorm expects [B, {self.num_features}, n, X, Y], "
                             f"got {tuple(input.shape)}")

    def forward_reference(self, x):
        return nn.BatchNorm3d.forward(self, x)

    def forward_fast(self, x):
        if (not fast_path_allowed(training=self.training, unless=())
                or not self.track_running_stats or self.running_mean is None):
            return nn.BatchNorm3d.forward(self, x)
        # with running statistics it is a per-channel affine map: apply it to the
        # [B, C n, X, Y] view with each statistic repeated n times, which keeps the memory
        # layout (BatchNorm3d turns an NHWC-backed group map into a contiguous copy, 4x slower)
        self._check_input_dim(x)
        n = x.shape[2]

        def rep(t):
            return None if t is None else t.repeat_interleave(n)
        y = F.batch_norm(x.flatten(1, 2), rep(self.running_mean), rep(self.running_var),
                         rep(self.weight), rep(self.bias), False, 0.0, self.eps)
        return y.unflatten(1, x.shape[1:3])

    def export(self) -> nn.Module:
        # kept as is: a BatchNorm3d whose inference is one per-channel affine map on the
        # [B, C n, X, Y] view (the same arithmetic and memory layout as the source model)
        return copy.deepcopy(self)


def plane_batch_norm(num_features: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(num_features, eps=EPS, momentum=MOMENTUM)
