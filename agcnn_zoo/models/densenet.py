"""PatchCamelyon DenseNet family (after Veeling et al. 2018), identical to the original
``experiments/pcam/models/densenet.py``: DenseNet, P4DenseNet, fA_P4DenseNet, P4MDenseNet,
fA_P4MDenseNet.

Network (96x96 input, 5 dense blocks, growth G0 = ``n_channels``, stride 1, padding 0 everywhere)::

    h = c1(x)                                           # 3x3, 3 -> G0              96 -> 94
    for i in 0..3:  h = trans_layers[i](block_layers[i](h))
    h = relu(bn_out(block_layers[4](h)))                 # 6 * G0 channels
    h = c_out(h)                                         # 1x1 -> 2
    logits = average over the remaining 2x2 map [group models: then over the group axis]

    DenseBlock(x):      cat([conv3x3(relu(bn(x))), crop1(x)], dim=1)   # new features first
    TransitionBlock(x): avgpool2(conv1x1(relu(bn(x))))                 # channels unchanged

Spatial sizes 96 -> 94 -> 92 -> 46 -> 44 -> 22 -> 20 -> 10 -> 8 -> 4 -> 2 -> 1. Module names are
the original's, so its state dicts load key for key. The default ``n_channels`` of each class
is the one the original's ``run_experiment.py`` builds it with (26, 13, 13, 9, 9; the original
classes default to 24, a value no experiment uses).
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .. import nn as gnn
from . import factory as make
from ._base import Stage, ZooModel
from .registration import original_classes, register_class


#: alpha_F spatial attention of dense block i and transition i: (kernel size, dilation)
_BLOCK_SPATIAL = [(7, 4), (7, 4), (7, 3), (7, 2), (5, 1)]
_TRANSITION_SPATIAL = [(7, 4), (7, 4), (7, 3), (7, 1)]


def _avg_pool2(h: torch.Tensor, group_map: bool) -> torch.Tensor:
    return gnn.spatial_avg_pool(h, 2, 2) if group_map else F.avg_pool2d(h, 2, 2)


class DenseBlock(nn.Module):
    """``cat([conv(relu(bn(x))), x cropped by one pixel at each border])``."""

    def __init__(self, bn: nn.Module, conv: nn.Module):
        super().__init__()
        self.bn = bn
        self.conv = conv

    def forward(self, x):
        h = self.conv(F.relu(self.bn(x)))
        return torch.cat([h, x[..., 1:-1, 1:-1]], dim=1)


class TransitionBlock(nn.Module):
    """``avgpool2(conv1x1(relu(bn(x))))``."""

    def __init__(self, bn: nn.Module, conv: nn.Module, group_map: bool = False):
        super().__init__()
        self.bn = bn
        self.conv = conv
        self.group_map = group_map      # [B, C, n, X, Y] maps (a static choice)

    def forward(self, x):
        return _avg_pool2(self.conv(F.relu(self.bn(x))), self.group_map)


@register_class("densenet_pcam", original_class="DenseNet")
class DenseNet(ZooModel):
    """DenseNet on Z2 (plain convolutions, growth 26; 130,598 parameters)."""
    dataset = "pcam"
    in_chans = 3
    image_size = (96, 96)
    num_blocks = 5
    num_classes = 2
    classifier_names = ("c_out",)
    feature_map_size = (2, 2)

    def __init__(self, n_channels: int = 26, num_classes: int = 2, in_chans: int | None = None):
        super().__init__()
        self._set_in_chans(in_chans)
        requested = self._check_num_classes(num_classes)
        self.num_classes = num_classes = requested or 2
        growth = width = n_channels
        self.c1 = self.stem(self.in_chans, width)
        blocks, transitions = [], []
        for i in range(self.num_blocks - 1):
            blocks.append(DenseBlock(self.norm(width), self.conv(width, growth, 3, i)))
            width += growth
            transitions.append(TransitionBlock(self.norm(width), self.transition_conv(width, i),
                                               self.group_name is not None))
        blocks.append(DenseBlock(self.norm(width),
                                 self.conv(width, growth, 3, self.num_blocks - 1)))
        width += growth
        self.block_layers = nn.Sequential(*blocks)
        self.trans_layers = nn.Sequential(*transitions)
        self.bn_out = self.norm(width)
        self.head_width = width
        self.growth = growth
        self.c_out = self.head_conv(width, num_classes)
        self.init_weights()
        if requested == 0:
            self.reset_classifier(0)

    # hooks the variants override (i: index of the dense block / transition; the
    # transition's 1x1 conv is this family's one extra hook)
    def stem(self, cin, cout):
        return make.z2_conv(cin, cout, 3)

    def conv(self, cin, cout, k, i):
        return make.z2_conv(cin, cout, k)

    def transition_conv(self, c, i):
        return self.conv(c, c, 1, i)

    def head_conv(self, cin, cout):
        return make.z2_conv(cin, cout, 1)

    def init_weights(self, module=None):
        make.he_normal_plane_convs(self if module is None else module)

    def build_classifier(self, num_classes):
        c_out = self.head_conv(self.head_width, num_classes)
        self.init_weights(c_out)
        return {"c_out": c_out}

    def feature_stages(self):
        """Six levels: c1, each dense block with its transition (2x2 average pooling), and the
        last dense block followed by relu(bn_out(.)): ``[B, 6 G0, 2, 2]`` (``[B, 6 G0, n, 2, 2]``)
        at the end."""
        g, n = self.growth, self.num_blocks
        stages = [Stage("c1", g, 1, self.c1)]
        for i in range(n - 1):
            stages.append(Stage(f"block_layers.{i}", g * (i + 2), 2 ** (i + 1),
                                partial(self._dense_stage, i)))
        stages.append(Stage(f"block_layers.{n - 1}", g * (n + 1), 2 ** (n - 1),
                            lambda h: F.relu(self.bn_out(self.block_layers[-1](h)))))
        return stages

    def _dense_stage(self, i, h):
        return self.trans_layers[i](self.block_layers[i](h))

    def classify(self, h):
        """The 1x1 classifier ``c_out``, then the average over the remaining map (and group)."""
        h = self.c_out(h)
        if self.group_name is not None:
            # the original: average_pooling_Rn(kernel = map size, stride 2), then the group mean
            h = gnn.spatial_avg_pool(h, h.shape[-1], 2, 0).mean(dim=2)
        else:
            h = F.avg_pool2d(h, h.shape[-1])
        return h.flatten(1)   # [B, num_classes, 1, 1] -> [B, num_classes]


@register_class("p4_densenet_pcam", original_class="P4DenseNet")
class P4DenseNet(DenseNet):
    """p4-DenseNet: lifting + p4 group convolutions, growth 13 (129,649 parameters)."""
    group_name = "p4"

    def __init__(self, n_channels: int = 13, num_classes: int = 2, in_chans: int | None = None):
        super().__init__(n_channels, num_classes, in_chans)

    def stem(self, cin, cout):
        return make.lifting(cin, cout, 3, self.group_name)

    def conv(self, cin, cout, k, i):
        return make.group_conv(cin, cout, k, self.group_name)

    def head_conv(self, cin, cout):
        return make.group_conv(cin, cout, 1, self.group_name)

    def init_weights(self, module=None):
        make.reset_group_conv_parameters(self if module is None else module, make.HE_WSCALE)


@register_class("p4m_densenet_pcam", original_class="P4MDenseNet")
class P4MDenseNet(P4DenseNet):
    """p4m-DenseNet: lifting + p4m group convolutions, growth 9 (124,209 parameters).

    The authors' PCam checkpoint published as ``f_att_p4m_densenet`` (89.12% test accuracy in
    their log) is in fact this plain model, ``P4MDenseNet(n_channels=9)`` without any attention:
    the original ``run_experiment.py`` maps that name to this class, and the file holds no
    attention weights (its keys carry the ``module.`` prefix of nn.DataParallel). Its weights
    are therefore those of ``p4m_densenet_pcam``, not of ``af_p4m_densenet_pcam``.
    """
    group_name = "p4m"

    def __init__(self, n_channels: int = 9, num_classes: int = 2, in_chans: int | None = None):
        super().__init__(n_channels, num_classes, in_chans)


class _FeatureAttentionMixin:
    """alpha_F in every layer. First layer: channel attention (ratio 1) and 7x7 spatial attention
    with dilation 4. Dense / transition convolutions: group channel attention with ratio
    ``C_in // 2`` (hidden size 2) and spatial attention with the per-layer kernel sizes and
    dilations of ``_BLOCK_SPATIAL`` / ``_TRANSITION_SPATIAL``. ``c_out``: ratio ``C_in // 2``,
    3x3 spatial attention."""

    def _fatt_group_conv(self, cin, cout, k, spatial_kernel, dilation):
        return make.alpha_f_group(cin, cout, k, self.group_name, max(1, cin // 2),
                                  spatial_kernel, dilation)

    def stem(self, cin, cout):
        return make.alpha_f_lifting(cin, cout, 3, self.group_name, 7, dilation=4)

    def conv(self, cin, cout, k, i):
        return self._fatt_group_conv(cin, cout, k, *_BLOCK_SPATIAL[i])

    def transition_conv(self, c, i):
        return self._fatt_group_conv(c, c, 1, *_TRANSITION_SPATIAL[i])

    def head_conv(self, cin, cout):
        return self._fatt_group_conv(cin, cout, 1, 3, 1)


@register_class("af_p4_densenet_pcam", original_class="fA_P4DenseNet")
class FAP4DenseNet(_FeatureAttentionMixin, P4DenseNet):
    """alpha_F-p4-DenseNet (original ``fA_P4DenseNet``), growth 13, with dilated spatial
    attention (140,453 parameters)."""


@register_class("af_p4m_densenet_pcam", original_class="fA_P4MDenseNet")
class FAP4MDenseNet(_FeatureAttentionMixin, P4MDenseNet):
    """alpha_F-p4m-DenseNet (original ``fA_P4MDenseNet``), growth 9, with dilated spatial
    attention (141,221 parameters). The original defines this class but its experiment script
    never builds it; no weights of it were published (the checkpoint named
    ``f_att_p4m_densenet`` is a plain P4MDenseNet)."""


#: the original's class name -> ours, for the converter and the golden files
ORIGINAL_CLASSES = original_classes(__name__)
