"""rot-MNIST CNNs of the paper (7 layers, 3x3 filters, no padding), identical to the original
``experiments/rot_mnist/models``: Z2CNN, P4CNN and its attentive variants.

Skeleton (28x28 input): c1 -> bn1 -> relu -> dropout, c2 -> bn2 -> relu, 2x2 max pool,
c3..c6 each -> bn -> relu -> dropout, c7 (4x4 filters, 10 outputs) -> max over the group axis.
Module names are the original's, so checkpoints load key for key. Hooks (the family
vocabulary, see ``_base.py``): ``stem`` (c1), ``conv`` (c2..c6), ``head_conv`` (c7), ``norm``,
``spatial_pool``; every layer is built with the class's ``group_name``.
"""
from __future__ import annotations

from functools import partial

import torch.nn.functional as F

from .. import nn as gnn
from . import factory as make
from ._base import Stage, ZooModel
from .registration import original_classes, register_class

#: original key -> our key (identity: modules keep the original names)
KEY_MAP: dict = {}


class _RotMNISTNet(ZooModel):
    dataset = "rotmnist"
    in_chans = 1
    image_size = (28, 28)
    classifier_names = ("c7",)
    feature_map_size = (4, 4)
    drop_rate_arg = "dropout"   # timm's drop_rate sets the dropout after c1 and c3..c6

    def __init__(self, channels: int, num_classes: int = 10, dropout: float = 0.3,
                 in_chans: int | None = None):
        super().__init__()
        self._set_in_chans(in_chans)
        self.num_classes = self._check_num_classes(num_classes) or 10
        self.channels = c = channels
        self.c1 = self.stem(self.in_chans, c)
        for i in range(2, 7):
            setattr(self, f"c{i}", self.conv(c, c, 3))
        self.c7 = self.head_conv(c, self.num_classes)
        for i in range(1, 7):
            setattr(self, f"bn{i}", self.norm(c))
        self.dropout = gnn.Dropout(dropout)
        if num_classes == 0:
            self.reset_classifier(0)

    # hooks the variants override
    def stem(self, cin, cout):
        raise NotImplementedError

    def conv(self, cin, cout, k):
        raise NotImplementedError

    def head_conv(self, cin, cout):
        """c7: a 4x4 convolution to one output per class, the same kind as ``conv``."""
        return self.conv(cin, cout, 4)

    def spatial_pool(self, h):
        return gnn.spatial_max_pool(h, 2, 2)

    def invariant_logits(self, h):
        return h.amax(dim=2).flatten(1)

    def build_classifier(self, num_classes):
        return {"c7": self.head_conv(self.channels, num_classes)}

    def feature_stages(self):
        """Six levels, one per convolution block (c1..c6 with its batch norm, ReLU and dropout;
        c2's with the pooling): ``[B, C, n, X, Y]`` (``[B, C, X, Y]`` for Z2CNN), 4 x 4 after c6."""
        c = self.channels
        return [Stage("c1", c, 1, self._block1), Stage("c2", c, 2, self._block2)] + [
            Stage(f"c{i}", c, 2, partial(self._block, i)) for i in range(3, 7)]

    def _block1(self, x):
        return self.dropout(F.relu(self.bn1(self.c1(x))))

    def _block2(self, h):
        return self.spatial_pool(F.relu(self.bn2(self.c2(h))))

    def _block(self, i, h):
        return self.dropout(F.relu(getattr(self, f"bn{i}")(getattr(self, f"c{i}")(h))))

    def classify(self, h):
        """The classifier c7 (a 4x4 convolution to one output per class), then the max over the
        group axis."""
        return self.invariant_logits(self.c7(h))

    def features(self, x):
        """``c7``'s output (before the max over the group axis)."""
        return self.c7(self.forward_backbone(x))


@register_class("z2cnn_rotmnist", original_class="Z2CNN")
class Z2CNN(_RotMNISTNet):
    """Plain CNN baseline (21,620 parameters)."""

    def __init__(self, num_classes=10, dropout=0.3, in_chans=None):
        super().__init__(20, num_classes, dropout, in_chans)

    def stem(self, cin, cout):
        return make.z2_conv(cin, cout, 3)

    def conv(self, cin, cout, k):
        return make.z2_conv(cin, cout, k)

    def spatial_pool(self, h):
        return F.max_pool2d(h, 2, 2)

    def invariant_logits(self, h):
        return h.flatten(1)


@register_class("p4cnn_rotmnist", original_class="P4CNN")
class P4CNN(_RotMNISTNet):
    """p4 G-CNN (Cohen & Welling 2016) as in the paper (24,610 parameters)."""
    group_name = "p4"

    def __init__(self, num_classes=10, dropout=0.3, in_chans=None):
        super().__init__(10, num_classes, dropout, in_chans)

    def stem(self, cin, cout):
        return make.lifting(cin, cout, 3, self.group_name)

    def conv(self, cin, cout, k):
        return make.group_conv(cin, cout, k, self.group_name)


@register_class("a_p4cnn_rotmnist", original_class="A_P4CNN")
class AP4CNN(P4CNN):
    """alpha-P4CNN: full alpha attention (channel + spatial) in every layer (73,130 parameters)."""
    channel, spatial = True, True

    def stem(self, cin, cout):
        return make.full_alpha_lifting(cin, cout, 3, self.group_name, self.channel, self.spatial)

    def conv(self, cin, cout, k):
        return make.full_alpha_group(cin, cout, k, self.group_name, 2, self.channel, self.spatial)


@register_class("ach_p4cnn_rotmnist", original_class="A_Ch_P4CNN")
class AChP4CNN(AP4CNN):
    """alpha_Ch-P4CNN: full alpha, channel attention only (48,630 parameters)."""
    channel, spatial = True, False


@register_class("asp_p4cnn_rotmnist", original_class="A_Sp_P4CNN")
class ASpP4CNN(AP4CNN):
    """alpha_Sp-P4CNN: full alpha, spatial attention only (49,110 parameters)."""
    channel, spatial = False, True


@register_class("af_p4cnn_rotmnist", original_class="fA_P4CNN")
class FAP4CNN(P4CNN):
    """alpha_F-P4CNN: attention on the input feature maps of every layer (29,462 parameters).
    The first layer's spatial attention is dilated (7x7, dilation 4), as in the original."""

    def stem(self, cin, cout):
        return make.alpha_f_lifting(cin, cout, 3, self.group_name, 7, dilation=4)

    def conv(self, cin, cout, k):
        return make.alpha_f_group(cin, cout, k, self.group_name, 2, 7)


@register_class("coa_p4cnn_rotmnist", original_class="RomHog_fA_P4CNN")
class CoAP4CNN(P4CNN):
    """Co-attentive P4CNN (Romero & Hoogendoorn 2019's comparison layer; ``RomHog_fA_P4CNN``):
    a sigmoid 1x1 lifting / group convolution of the input gates it (24,851 parameters)."""

    def stem(self, cin, cout):
        return make.co_attentive_lifting(cin, cout, 3, self.group_name)

    def conv(self, cin, cout, k):
        return make.co_attentive_group(cin, cout, k, self.group_name)


#: the original's class name -> ours, for the converter and the golden files
ORIGINAL_CLASSES = original_classes(__name__)
