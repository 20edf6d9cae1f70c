"""Batch norm on group feature maps: one mean/var/affine per channel, shared over the group
axis and space (what keeps it equivariant). Same parameters and buffers as nn.BatchNorm3d,
eps 2e-5 as in every model of the original."""
from __future__ import annotations

from torch import nn


class GroupBatchNorm(nn.BatchNorm3d):
    def __init__(self, num_features: int, eps: float = 2e-5, momentum: float = 0.1):
        super().__init__(num_features, eps=eps, momentum=momentum)

    def _check_input_dim(self, input):
        if input.dim() != 5:
            raise ValueError(f"GroupBatchNorm expects [B, {self.num_features}, n, X, Y], "
                             f"got {tuple(input.shape)}")


def plane_batch_norm(num_features: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(num_features, eps=2e-5)
