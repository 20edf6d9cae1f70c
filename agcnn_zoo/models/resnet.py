"""CIFAR-10 ResNet-44 family (pre-activation ResNet of Cohen & Welling 2016), identical to the
original ``experiments/cifar10/models/resnet.py``: ResNet, P4MResNet, fA_P4MResNet; plus
``AP4MResNet``, a full-alpha p4m-ResNet44 that is new in this zoo (not in the paper).

Network (32x32 input, ``num_blocks`` = 7 blocks per stage, stage widths nc32 / nc16 / nc8)::

    h = c1(x)                                   # 3x3, 3 -> nc32; no BN / ReLU right after it
    h = layers_nc32(h)                          # 7 blocks nc32 -> nc32            (32x32)
    h = layers_nc16(h)                          # block 0: nc32 -> nc16, downsample (16x16)
    h = layers_nc8(h)                           # block 0: nc16 -> nc8,  downsample (8x8)
    h = avgpool_8x8(relu(bn_out(h)))
    logits = c_out(h)                           # 1x1 -> 10  [group models: mean over the group axis]

Block (pre-activation)::

    h = c1(relu(bn1(x)));  if downsample: h = maxpool2(h)
    h = c2(relu(bn2(h)))
    s = fiber_map(x);      if downsample: s = maxpool2(s)      # identity, or a 1x1 conv when widths change
    return s + h

As in the original, the stride-2 convolutions of the first block of stages 2 and 3 are replaced
by stride-1 convolutions followed by 2x2 max pooling (this keeps the network exactly
equivariant). Module names are the original's, so its state dicts load key for key.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import nn as gnn
from . import factory as make
from ._base import Stage, ZooModel
from .registration import original_classes, register_class


def _max_pool2(h: torch.Tensor, group_map: bool) -> torch.Tensor:
    return gnn.spatial_max_pool(h, 2, 2) if group_map else F.max_pool2d(h, 2, 2)


class ResBlock(nn.Module):
    """Pre-activation residual block; ``net`` supplies the layer constructors (not stored)."""

    def __init__(self, net: "ResNet", in_channels: int, out_channels: int, downsample: bool,
                 linear_fiber_map: bool):
        super().__init__()
        if not linear_fiber_map and in_channels != out_channels:
            raise ValueError("an identity fiber map needs in_channels == out_channels, got "
                             f"{in_channels} and {out_channels}")
        self.downsample = downsample
        self.group_map = net.group_name is not None   # [B, C, n, X, Y] maps (a static choice)
        self.bn1 = net.norm(in_channels)
        self.c1 = net.conv(in_channels, out_channels, 3)
        self.bn2 = net.norm(out_channels)
        self.c2 = net.conv(out_channels, out_channels, 3)
        self.fiber_map = (net.conv(in_channels, out_channels, 1) if linear_fiber_map
                          else nn.Sequential())

    def forward(self, x):
        h = self.c1(F.relu(self.bn1(x)))
        if self.downsample:
            h = _max_pool2(h, self.group_map)
        h = self.c2(F.relu(self.bn2(h)))
        s = self.fiber_map(x)
        if self.downsample:
            s = _max_pool2(s, self.group_map)
        return s + h


@register_class("resnet44_cifar", original_class="ResNet")
class ResNet(ZooModel):
    """ResNet44 on Z2 (plain convolutions, 32/64/128 channels; 2,636,064 parameters)."""
    dataset = "cifar10"
    in_chans = 3
    image_size = (32, 32)
    classifier_names = ("c_out",)
    feature_map_size = (8, 8)

    def __init__(self, num_blocks: int = 7, nc32: int = 32, nc16: int = 64, nc8: int = 128,
                 num_classes: int = 10, in_chans: int | None = None):
        super().__init__()
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        self._set_in_chans(in_chans)
        requested = self._check_num_classes(num_classes)
        self.num_classes = num_classes = requested or 10
        self.head_width = nc8
        self.stage_widths = (nc32, nc16, nc8)
        self.c1 = self.stem(self.in_chans, nc32)
        self.layers_nc32 = self._stage(nc32, nc32, num_blocks, first_downsamples=False)
        self.layers_nc16 = self._stage(nc32, nc16, num_blocks, first_downsamples=True)
        self.layers_nc8 = self._stage(nc16, nc8, num_blocks, first_downsamples=True)
        self.bn_out = self.norm(nc8)
        self.c_out = self.head_conv(nc8, num_classes)
        self.init_weights()
        if requested == 0:
            self.reset_classifier(0)

    def _stage(self, cin, cout, num_blocks, first_downsamples):
        blocks = [ResBlock(self, cin if i == 0 else cout, cout,
                           downsample=first_downsamples and i == 0,
                           linear_fiber_map=first_downsamples and i == 0)
                  for i in range(num_blocks)]
        return nn.Sequential(*blocks)

    # hooks the variants override
    def stem(self, cin, cout):
        return make.z2_conv(cin, cout, 3, padding=1)

    def conv(self, cin, cout, k):
        return make.z2_conv(cin, cout, k, padding=k // 2)

    def head_conv(self, cin, cout):
        return make.z2_conv(cin, cout, 1)

    def init_weights(self, module=None):
        make.he_normal_plane_convs(self if module is None else module)

    def prepare_input(self, x):
        return x

    def global_spatial_pool(self, h):
        return F.avg_pool2d(h, h.shape[-1])

    def build_classifier(self, num_classes):
        c_out = self.head_conv(self.head_width, num_classes)
        self.init_weights(c_out)
        return {"c_out": c_out}

    def feature_stages(self):
        """Four levels: c1, the three stages of residual blocks (the last one followed by
        relu(bn_out(.))): ``[B, nc8, 8, 8]`` (``[B, nc8, n, 8, 8]``) at the end."""
        return [Stage("c1", self.stage_widths[0], 1, lambda x: self.c1(self.prepare_input(x))),
                Stage("layers_nc32", self.stage_widths[0], 1, self.layers_nc32),
                Stage("layers_nc16", self.stage_widths[1], 2, self.layers_nc16),
                Stage("layers_nc8", self.stage_widths[2], 4,
                      lambda h: F.relu(self.bn_out(self.layers_nc8(h))))]

    def classify(self, h):
        """Global 8x8 average pool, the 1x1 classifier ``c_out`` (and the mean over the group axis)."""
        h = self.c_out(self.global_spatial_pool(h))
        if self.group_name is not None:
            h = h.mean(dim=2)  # invariant pooling over the group axis
        return h.flatten(1)   # [B, num_classes, 1, 1] -> [B, num_classes]


@register_class("p4m_resnet44_cifar", original_class="P4MResNet")
class P4MResNet(ResNet):
    """p4m-ResNet44: lifting + p4m group convolutions, 11/23/45 channels (2,621,683 parameters)."""
    group_name = "p4m"

    def __init__(self, num_blocks: int = 7, nc32: int = 11, nc16: int = 23, nc8: int = 45,
                 num_classes: int = 10, in_chans: int | None = None):
        super().__init__(num_blocks, nc32, nc16, nc8, num_classes, in_chans)

    def stem(self, cin, cout):
        return make.lifting(cin, cout, 3, self.group_name, padding=1)

    def conv(self, cin, cout, k):
        return make.group_conv(cin, cout, k, self.group_name, padding=k // 2)

    def head_conv(self, cin, cout):
        return make.group_conv(cin, cout, 1, self.group_name)

    def init_weights(self, module=None):
        make.reset_group_conv_parameters(self if module is None else module, make.HE_WSCALE)

    def global_spatial_pool(self, h):
        return gnn.spatial_avg_pool(h, h.shape[-1], 1, 0)


@register_class("af_p4m_resnet44_cifar", original_class="fA_P4MResNet")
class FAP4MResNet(P4MResNet):
    """alpha_F-p4m-ResNet44 (original ``fA_P4MResNet``; 2,693,911 parameters).

    Every convolution is an alpha_F one: the first layer with channel attention (ratio 1) and
    7x7 spatial attention, every block convolution, 1x1 fiber map and the 1x1 ``c_out`` with
    p4m channel attention of hidden size 2 (ratio ``C_in // 2``) and 7x7 spatial attention.

    Kept identical to the original: ``forward`` first mirrors the input horizontally,
    ``torch.flip(x, dims=[-1])``. The network is p4m-invariant, so this changes the logits only
    by float rounding, but it is part of the function the authors trained.
    """
    spatial_kernel = 7

    def prepare_input(self, x):
        return torch.flip(x, dims=[-1])

    def stem(self, cin, cout):
        return make.alpha_f_lifting(cin, cout, 3, self.group_name, self.spatial_kernel, padding=1)

    def conv(self, cin, cout, k):
        return make.alpha_f_group(cin, cout, k, self.group_name, max(1, cin // 2),
                                  self.spatial_kernel, padding=k // 2)

    def head_conv(self, cin, cout):
        return self.conv(cin, cout, 1)


@register_class("a_p4m_resnet44_cifar", original_class=None)
class AP4MResNet(P4MResNet):
    """alpha-p4m-ResNet44: full alpha attention in every convolution (new in this zoo, not in
    the paper; no original class, no published weights).

    Design:

    * Same network as P4MResNet (widths 11/23/45, 7 blocks per stage, pre-activation blocks,
      max-pool downsampling, BN eps 2e-5, He-style init ``sqrt(2)/sqrt(C_in k^2)`` of the conv
      weights), every lifting / group convolution replaced by its full-alpha version
      (``AttLiftingConv`` / ``AttGroupConv``): attention on the per-(input channel, input group
      element) responses before they are summed, ``y = s * sum_{c,j} Y (1 - alpha beta)``.
    * First layer: attentive, ``ResponseChannelAttention(11, 3, ratio=1)`` (as the original's
      alpha models treat their few-channel input layers) and 7x7 ``ResponseSpatialAttention``.
    * Block convolutions and the 1x1 fiber maps: ``ResponseChannelAttention`` with ratio
      ``C_in // 2`` (hidden size 2, like fA_P4MResNet) and 7x7 ``ResponseSpatialAttention``.
      The channel attention's MLP weights are permuted along the input group axis with the p4m
      axis permutation (the natural generalisation of the original's p4-only
      ``ChannelAttentionGG``), so alpha is p4m-equivariant.
    * ``c_out`` (1x1 conv applied after the global 8x8 average pool, on a 1x1 map): channel
      attention only. Spatial attention on a 1x1 map would reduce to the centre tap of its
      filter (a per-element scalar gate), so it is left out.
    * No mirror-flip of the input (the flip in fA_P4MResNet has no effect on an invariant
      network beyond rounding).
    * Output factor of every ``AttGroupConv``: the original's ``2 pi / |H|`` = pi/4 for p4m,
      not the Haar factor pi of ``GroupConv``. Consequence: with the same weights and no
      attention an attentive layer gives 1/4 of P4MResNet's output, so P4MResNet weights do not
      transfer without a x4 rescale; at initialisation (alpha, beta ~ 0.5, so 1 - alpha beta ~
      0.75) each residual branch and the logits start about 5x smaller than in P4MResNet (the
      batch norms in front of every convolution renormalise the branch inputs, so training is
      unaffected beyond a smaller initial residual contribution).
    * Size: 4,756,879 parameters (the per-output-channel attention filters dominate the
      increase over P4MResNet's 2,621,683).
    * Cost: the un-summed response tensor ``[O, |H|, C, |H|, X, Y]`` is largest in
      ``layers_nc8.0.c1`` and ``layers_nc8.0.fiber_map`` (45 x 8 x 23 x 8 x 16 x 16 =
      16,957,440 floats, 67.8 MB per sample in float32; about 400M response entries per sample
      over the whole network). ``AttGroupConv`` computes it in chunks of output channels with
      activation checkpointing, so live memory stays bounded, but the compute is large: about
      15-30 CPU-seconds per image for one eval forward pass (2 threads); a GPU is needed for
      real use.
    """

    def __init__(self, num_blocks: int = 7, nc32: int = 11, nc16: int = 23, nc8: int = 45,
                 num_classes: int = 10, spatial_kernel: int = 7, in_chans: int | None = None):
        self.spatial_kernel = spatial_kernel
        super().__init__(num_blocks, nc32, nc16, nc8, num_classes, in_chans)

    def stem(self, cin, cout):
        return make.full_alpha_lifting(cin, cout, 3, self.group_name,
                                       spatial_kernel=self.spatial_kernel, padding=1)

    def conv(self, cin, cout, k):
        return make.full_alpha_group(cin, cout, k, self.group_name, max(1, cin // 2),
                                     spatial_kernel=self.spatial_kernel, padding=k // 2)

    def head_conv(self, cin, cout):
        return make.full_alpha_group(cin, cout, 1, self.group_name, max(1, cin // 2),
                                     spatial=False)


#: the original's class name -> ours, for the converter and the golden files
ORIGINAL_CLASSES = original_classes(__name__)
