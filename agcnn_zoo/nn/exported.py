"""Deployment forms of the layers: plain PyTorch modules, no group machinery.

``Layer.export()`` builds these (see ``agcnn_zoo.export``): a lifting / group convolution
becomes an ``nn.Conv2d`` holding its expanded filter bank (output factor folded in), wrapped
only to move between the group layout ``[B, C, |H|, X, Y]`` and the plane layout
``[B, C |H|, X, Y]`` (a view).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layout import conv_input
from .base import FX, JIT, fast_path_allowed

__all__ = ["conv2d_of", "modulate", "PlaneConv", "GroupPlaneConv", "FeatureAttentiveConv",
           "ChannelMLPAttention", "StatsSpatialAttention", "Gate"]


@torch.no_grad()
def conv2d_of(bank: torch.Tensor, layer) -> nn.Conv2d:
    """A bias-free ``nn.Conv2d`` holding ``bank`` with ``layer``'s stride, padding, dilation."""
    out_c, in_c, k = bank.shape[0], bank.shape[1], bank.shape[-1]
    conv = nn.Conv2d(in_c, out_c, k, stride=layer.stride, padding=layer.padding,
                     dilation=layer.dilation, bias=False)
    conv.weight.copy_(bank)
    return conv.to(bank.device)


def modulate(x: torch.Tensor, channel_attention, spatial_attention,
             inplace: bool = False) -> torch.Tensor:
    """alpha_F's input modulation ``x - beta * (alpha * x)`` (the original's ``x - att(x)``;
    a missing attention is left out). ``inplace``: may overwrite the intermediate ``alpha x``
    (inference only; ignored under autograd or tracing)."""
    if channel_attention is None and spatial_attention is None:
        return x
    a = x if channel_attention is None else channel_attention(x) * x
    if spatial_attention is None:
        return x - a
    beta = spatial_attention(a)
    if not inplace or a is x or not fast_path_allowed(no_grad_mode=True, unless=(FX, JIT)):
        return x - beta * a
    # inference: x - beta * a written over a (one pass, no new map-sized buffers)
    return torch.addcmul(x, beta, a, value=-1, out=a)


class PlaneConv(nn.Module):
    """A lifting convolution as ``nn.Conv2d``: ``[B, C, X, Y] -> [B, O, |H|, X', Y']``."""

    def __init__(self, conv: nn.Conv2d, group_order: int, nhwc_min_channels: int = 1):
        super().__init__()
        self.conv = conv
        self.group_order = group_order
        self.nhwc_min_channels = nhwc_min_channels

    def forward(self, x):
        # the same memory layout as the source layer (NHWC for CPU inference), hence the same
        # oneDNN kernels and the same rounding
        x = conv_input(x, self.training, self.nhwc_min_channels)
        return self.conv(x).unflatten(1, (-1, self.group_order))


class GroupPlaneConv(PlaneConv):
    """A group convolution as ``nn.Conv2d`` on ``[B, C |H|, X, Y]``: ``[B, C, |H|, X, Y] -> [B, O, |H|, X', Y']``."""

    def forward(self, x):
        return super().forward(x.flatten(1, 2))


class FeatureAttentiveConv(nn.Module):
    """alpha_F: ``conv(x - beta (alpha x))`` with exported attention modules."""

    def __init__(self, conv: PlaneConv, channel_attention, spatial_attention):
        super().__init__()
        self.conv = conv
        self.channel_attention = channel_attention
        self.spatial_attention = spatial_attention

    def forward(self, x):
        return self.conv(modulate(x, self.channel_attention, self.spatial_attention, inplace=True))


class ChannelMLPAttention(nn.Module):
    """p4/p4m channel attention on group maps: ``sigmoid(fc2(relu(fc1(s))))`` summed over the
    spatial mean and max ``s`` of every (channel, group element): ``[B, C, n, 1, 1]``."""

    def __init__(self, fc1: nn.Linear, fc2: nn.Linear, group_order: int):
        super().__init__()
        self.fc1, self.fc2, self.group_order = fc1, fc2, group_order

    def forward(self, x):
        s = torch.stack([x.mean(dim=(-2, -1)), x.amax(dim=(-2, -1))]).flatten(2)   # [2, B, C n]
        z = self.fc2(F.relu(self.fc1(s)))
        return torch.sigmoid(z[0] + z[1]).unflatten(1, (-1, self.group_order))[..., None, None]


class StatsSpatialAttention(nn.Module):
    """Spatial attention from the channel mean and max maps: ``sigmoid(conv([mean, max]))``,
    with a max over the group axis for the plane version."""

    def __init__(self, conv: PlaneConv, pool_group_axis: bool):
        super().__init__()
        self.conv, self.pool_group_axis = conv, pool_group_axis

    def forward(self, x):
        y = self.conv(torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], 1))
        return torch.sigmoid(y.amax(dim=2) if self.pool_group_axis else y)


class Gate(nn.Module):
    """Co-attention: ``sigmoid(conv(x))``, with a max over the group axis for the plane version."""

    def __init__(self, conv: PlaneConv, pool_group_axis: bool):
        super().__init__()
        self.conv, self.pool_group_axis = conv, pool_group_axis

    def forward(self, x):
        y = self.conv(x)
        return torch.sigmoid(y.amax(dim=2) if self.pool_group_axis else y)
