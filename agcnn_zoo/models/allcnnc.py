"""CIFAR-10 All-CNN-C family (Springenberg et al. 2015, in the G-CNN form of Cohen & Welling
2016), identical to the original ``experiments/cifar10/models/allcnnc.py``: AllCNNC,
P4AllCNNC, fA_P4AllCNNC, P4MAllCNNC, fA_P4MAllCNNC.

Skeleton (32x32 input; k = 3 and padding 1 unless noted; C1 base width, C2 = 2 * C1)::

    h = relu(bn1(c1(dropout_0.2(x))))               # 32
    h = relu(bn2(c2(h)))
    h = dropout_0.5(relu(bn3(maxpool2(c3(h)))))     # 32 -> 16
    h = relu(bn4(c4(h)));  h = relu(bn5(c5(h)))
    h = dropout_0.5(relu(bn6(maxpool2(c6(h)))))     # 16 -> 8
    h = relu(bn7(c7(h)))
    h = relu(bn8(c8(h)))                            # 1x1
    h = relu(bn9(c9(h)))                            # 1x1, 10 channels; the ReLU after bn9 is the original's
    logits = mean over space (and the group axis)

The original builds c3 and c6 with stride 2 and then replaces them by stride-1 convolutions
followed by 2x2 max pooling ("really_equivariant"); only the replacement exists here (and in
its state dicts). Module names are the original's, so its state dicts load key for key.

One deliberate difference: the original ends with ``.squeeze()``, which also drops the batch
axis for a batch of one; here the logits are always ``[B, num_classes]``.
"""
from __future__ import annotations

from functools import partial

import torch.nn.functional as F
from torch import nn

from .. import nn as gnn
from . import factory as make
from ._base import Stage, ZooModel
from .registration import original_classes, register_class


class _AllCNNCNet(ZooModel):
    dataset = "cifar10"
    in_chans = 3
    image_size = (32, 32)
    base_channels: int = 96
    classifier_names = ("c9", "bn9")
    feature_map_size = (8, 8)
    drop_rate_arg = "p"   # timm's drop_rate sets the dropout after the two pooling stages

    def __init__(self, num_classes: int = 10, p_init: float = 0.2, p: float = 0.5,
                 in_chans: int | None = None):
        super().__init__()
        self._set_in_chans(in_chans)
        requested = self._check_num_classes(num_classes)
        self.num_classes = num_classes = requested or 10
        c1, c2 = self.base_channels, 2 * self.base_channels
        self.c1 = self.stem(self.in_chans, c1)
        self.c2 = self.conv(c1, c1, 3)
        self.c3 = self.conv(c1, c1, 3)
        self.c4 = self.conv(c1, c2, 3)
        self.c5 = self.conv(c2, c2, 3)
        self.c6 = self.conv(c2, c2, 3)
        self.c7 = self.conv(c2, c2, 3)
        self.c8 = self.conv(c2, c2, 1)
        self.c9 = self.head_conv(c2, num_classes)
        self.dp_init = gnn.Dropout(p_init)
        self.dp = gnn.Dropout(p)
        widths = [c1] * 3 + [c2] * 5 + [num_classes]
        for i, w in enumerate(widths, start=1):
            setattr(self, f"bn{i}", self.norm(w))
        self.init_weights()
        if requested == 0:
            self.reset_classifier(0)

    # hooks the variants override
    def stem(self, cin, cout):
        raise NotImplementedError

    def conv(self, cin, cout, k):
        raise NotImplementedError

    def head_conv(self, cin, cout):
        """c9: a 1x1 convolution to one map per class, the same kind as ``conv``."""
        return self.conv(cin, cout, 1)

    def spatial_pool(self, h):
        raise NotImplementedError

    def init_weights(self, module=None):
        """The original's initialisation of every convolution of ``module`` (default: all)."""
        raise NotImplementedError

    def build_classifier(self, num_classes):
        c9 = self.head_conv(2 * self.base_channels, num_classes)
        self.init_weights(c9)
        return {"c9": c9, "bn9": self.norm(num_classes)}

    def feature_stages(self):
        """Eight levels, one per convolution block c1..c8 (with its batch norm, ReLU, and the
        pooling and dropout after c3 and c6); the last is relu(bn8(c8(.))): ``[B, 2 C1, 8, 8]``
        (``[B, 2 C1, n, 8, 8]``)."""
        c1, c2 = self.base_channels, 2 * self.base_channels
        widths, reductions = [c1] * 3 + [c2] * 5, [1, 1, 2, 2, 2, 4, 4, 4]
        return [Stage(f"c{i}", w, r, partial(self._block, i))
                for i, w, r in zip(range(1, 9), widths, reductions)]

    def _block(self, i, h):
        conv, bn = getattr(self, f"c{i}"), getattr(self, f"bn{i}")
        if i == 1:
            return F.relu(bn(conv(self.dp_init(h))))
        if i in (3, 6):
            return self.dp(F.relu(bn(self.spatial_pool(conv(h)))))
        return F.relu(bn(conv(h)))

    def classify(self, h):
        """The classifier: relu(bn9(c9(.))) (c9 a 1x1 convolution to one map per class), then
        the global average over space (and group): invariant to the group's action."""
        return self._global_avg_pool(F.relu(self.bn9(self.c9(h))))


@register_class("allcnnc_cifar", original_class="AllCNNC")
class AllCNNC(_AllCNNCNet):
    """All-CNN-C on Z2 (plain convolutions, 96/192 channels; 1,370,996 parameters)."""
    base_channels = 96

    def stem(self, cin, cout):
        return self.conv(cin, cout, 3)

    def conv(self, cin, cout, k):
        return make.z2_conv(cin, cout, k, padding=k // 2)

    def spatial_pool(self, h):
        return F.max_pool2d(h, 2, 2)

    def init_weights(self, module=None):
        # the original (after Cohen & Welling): N(0, 0.05) for every convolution
        for m in (self if module is None else module).modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.05)


@register_class("p4_allcnnc_cifar", original_class="P4AllCNNC")
class P4AllCNNC(_AllCNNCNet):
    """p4-All-CNN-C: lifting + p4 group convolutions, 48/96 channels (1,370,372 parameters)."""
    group_name = "p4"
    base_channels = 48
    wscale = 0.035  # the original's init U(-s, s), s = 0.035 / sqrt(C_in k^2)

    def stem(self, cin, cout):
        return make.lifting(cin, cout, 3, self.group_name, padding=1)

    def conv(self, cin, cout, k):
        return make.group_conv(cin, cout, k, self.group_name, padding=k // 2)

    def spatial_pool(self, h):
        return gnn.spatial_max_pool(h, 2, 2)

    def init_weights(self, module=None):
        make.reset_group_conv_parameters(self if module is None else module, self.wscale)


class _FeatureAttentionMixin:
    """alpha_F in every layer: channel attention (first layer ratio 1, then ratio 16) and 7x7
    spatial attention on the input of each convolution, the 1x1 c8 and c9 included."""
    channel_ratio = 16
    spatial_kernel = 7

    def stem(self, cin, cout):
        return make.alpha_f_lifting(cin, cout, 3, self.group_name, self.spatial_kernel, padding=1)

    def conv(self, cin, cout, k):
        return make.alpha_f_group(cin, cout, k, self.group_name, self.channel_ratio,
                                  self.spatial_kernel, padding=k // 2)


@register_class("af_p4_allcnnc_cifar", original_class="fA_P4AllCNNC")
class FAP4AllCNNC(_FeatureAttentionMixin, P4AllCNNC):
    """alpha_F-p4-All-CNN-C (original ``fA_P4AllCNNC``): attention on the input feature maps of
    every layer; channel-attention hidden sizes 3 (48 channels) and 6 (96) (1,400,120 parameters)."""


@register_class("p4m_allcnnc_cifar", original_class="P4MAllCNNC")
class P4MAllCNNC(P4AllCNNC):
    """p4m-All-CNN-C: lifting + p4m group convolutions, 32/64 channels (1,219,252 parameters)."""
    group_name = "p4m"
    base_channels = 32


@register_class("af_p4m_allcnnc_cifar", original_class="fA_P4MAllCNNC")
class FAP4MAllCNNC(_FeatureAttentionMixin, P4MAllCNNC):
    """alpha_F-p4m-All-CNN-C (original ``fA_P4MAllCNNC``): channel attention permuted along the
    p4m group axis, hidden sizes 2 (32 channels) and 4 (64) (1,249,192 parameters). The authors'
    CIFAR-10 checkpoint of this model (93.47% in their log) is not published in a reachable form."""


#: the original's class name -> ours, for the converter and the golden files
ORIGINAL_CLASSES = original_classes(__name__)
