"""The layer constructors every family builds from: plain, alpha_F, full alpha, co-attentive.

Families choose a kind per hook (``stem`` / ``conv`` / ``norm`` / ``head_conv``) and pass their
own numbers (ratios, kernels, dilations); the attention modules are wired here once. Modules
are created in the order the original does (attention before the convolution that owns it),
so seeded random initialisations do not change.
"""
from __future__ import annotations

import math

from torch import nn

from .. import nn as gnn

__all__ = ["z2_conv", "lifting", "group_conv", "alpha_f_lifting", "alpha_f_group",
           "full_alpha_lifting", "full_alpha_group", "co_attentive_lifting",
           "co_attentive_group", "norm", "HE_WSCALE", "he_normal_plane_convs",
           "reset_group_conv_parameters"]

#: the CIFAR / PCam originals' wscale: He initialisation
HE_WSCALE = math.sqrt(2.0)


# ----------------------------------------------------------------------------------- plain
def z2_conv(cin, cout, k, padding=0) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=padding, bias=False)


def lifting(cin, cout, k, group, padding=0) -> gnn.LiftingConv:
    return gnn.LiftingConv(cin, cout, k, group, padding=padding)


def group_conv(cin, cout, k, group, padding=0) -> gnn.GroupConv:
    return gnn.GroupConv(cin, cout, k, group, padding=padding)


def norm(c, group) -> nn.Module:
    """Batch norm of the original (eps 2e-5): per channel, shared over the group axis."""
    return gnn.plane_batch_norm(c) if group is None else gnn.GroupBatchNorm(c)


# --------------------------------------------------------------------------------- alpha_F
def alpha_f_lifting(cin, cout, k, group, spatial_kernel=7, dilation=1, padding=0):
    """Channel attention (ratio 1) and spatial attention on the input image, then lifting."""
    return gnn.FAttLiftingConv(
        cin, cout, k, group, channel_attention=gnn.FeatureChannelAttention(cin, 1),
        spatial_attention=gnn.FeatureSpatialAttention(spatial_kernel, group, dilation=dilation),
        padding=padding)


def alpha_f_group(cin, cout, k, group, ratio, spatial_kernel=7, dilation=1, padding=0):
    """Group channel attention (hidden size ``cin // ratio``) and group spatial attention on
    the input map, then the group convolution."""
    return gnn.FAttGroupConv(
        cin, cout, k, group, channel_attention=gnn.GroupChannelAttention(cin, group, ratio),
        spatial_attention=gnn.GroupSpatialAttention(spatial_kernel, group, dilation=dilation),
        padding=padding)


# ------------------------------------------------------------------------------ full alpha
def full_alpha_lifting(cin, cout, k, group, channel=True, spatial=True, spatial_kernel=7,
                       padding=0):
    """Attention on the responses of every input channel (channel MLP ratio 1)."""
    return gnn.AttLiftingConv(
        cin, cout, k, group,
        channel_attention=gnn.ResponseChannelAttention(cout, cin, group, 1, lifting=True)
        if channel else None,
        spatial_attention=gnn.ResponseSpatialAttention(cout, spatial_kernel, group, lifting=True)
        if spatial else None,
        padding=padding)


def full_alpha_group(cin, cout, k, group, ratio, channel=True, spatial=True, spatial_kernel=7,
                     padding=0):
    """Attention on the responses of every (input channel, input group element)."""
    return gnn.AttGroupConv(
        cin, cout, k, group,
        channel_attention=gnn.ResponseChannelAttention(cout, cin, group, ratio) if channel else None,
        spatial_attention=gnn.ResponseSpatialAttention(cout, spatial_kernel, group)
        if spatial else None,
        padding=padding)


# -------------------------------------------------------------------------- co-attentive
def co_attentive_lifting(cin, cout, k, group, padding=0):
    """A sigmoid 1x1 lifting convolution of the input gates it (``RomHog``)."""
    return gnn.FAttLiftingConv(cin, cout, k, group, spatial_attention=gnn.CoAttention(cin, group),
                               padding=padding)


def co_attentive_group(cin, cout, k, group, padding=0):
    return gnn.FAttGroupConv(cin, cout, k, group,
                             spatial_attention=gnn.GroupCoAttention(cin, group), padding=padding)


def reset_group_conv_parameters(model: nn.Module, wscale: float) -> None:
    """The original's init for every conv-type group layer (spatial-attention filters too):
    U(-s, s), s = wscale / sqrt(C_in k^2)."""
    for m in model.modules():
        if isinstance(m, (gnn.LiftingConv, gnn.GroupConv)):
            m.reset_parameters(wscale)


def he_normal_plane_convs(model: nn.Module) -> None:
    """The CIFAR / PCam originals' init for every plain ``nn.Conv2d`` of ``model``:
    N(0, HE_WSCALE / sqrt(fan_in))."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, HE_WSCALE / math.sqrt(m.weight[0].numel()))
