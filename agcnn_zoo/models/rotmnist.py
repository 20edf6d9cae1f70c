"""rot-MNIST CNNs of the paper (7 layers, 3x3 filters, no padding), identical to the original
``experiments/rot_mnist/models``: Z2CNN, P4CNN and its attentive variants.

Skeleton (28x28 input): c1 -> bn1 -> relu -> dropout, c2 -> bn2 -> relu, 2x2 max pool,
c3..c6 each -> bn -> relu -> dropout, c7 (4x4 filters, 10 outputs) -> max over the group axis.
Module names are the original's, so checkpoints load key for key.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import nn as gnn
from ..registry import register_model_class
from ._base import ZooModel

#: original key -> our key (identity: modules keep the original names)
KEY_MAP: dict = {}


class _RotMNISTNet(ZooModel):
    in_chans = 1
    input_size = (28, 28)
    classifier_names = ("c7",)
    drop_rate_arg = "dropout"   # timm's drop_rate sets the dropout after c1 and c3..c6

    def __init__(self, channels: int, num_classes: int = 10, dropout: float = 0.3,
                 in_chans: int | None = None):
        super().__init__()
        self._set_in_chans(in_chans)
        self.num_classes = self._check_num_classes(num_classes) or 10
        self.channels = c = channels
        self.c1 = self.first_conv(self.in_chans, c)
        for i in range(2, 7):
            setattr(self, f"c{i}", self.group_conv(c, c, 3))
        self.c7 = self.group_conv(c, self.num_classes, 4)
        for i in range(1, 7):
            setattr(self, f"bn{i}", self.batch_norm(c))
        self.dropout = gnn.Dropout(dropout)
        if num_classes == 0:
            self.reset_classifier(0)

    # hooks the variants override
    def first_conv(self, cin, cout):
        raise NotImplementedError

    def group_conv(self, cin, cout, k):
        raise NotImplementedError

    def batch_norm(self, c):
        return gnn.GroupBatchNorm(c)

    def pool(self, h):
        return gnn.spatial_max_pool(h, 2, 2)

    def pool_logits(self, h):
        return h.amax(dim=2).flatten(1)

    def build_classifier(self, num_classes):
        return {"c7": self.group_conv(self.channels, num_classes, 4)}

    def forward_features(self, x):
        """c1..c6 with their batch norms, ReLUs, dropout and the pooling: ``[B, C, n, 4, 4]``
        (``[B, C, 4, 4]`` for Z2CNN)."""
        h = self.dropout(F.relu(self.bn1(self.c1(x))))
        h = self.pool(F.relu(self.bn2(self.c2(h))))
        for i in range(3, 7):
            h = self.dropout(F.relu(getattr(self, f"bn{i}")(getattr(self, f"c{i}")(h))))
        return h

    def head(self, h):
        """The classifier c7 (a 4x4 convolution to one output per class), then the max over the
        group axis."""
        return self.pool_logits(self.c7(h))

    def features(self, x):
        """``c7``'s output (before the max over the group axis)."""
        return self.c7(self.forward_features(x))


class Z2CNN(_RotMNISTNet):
    """Plain CNN baseline (21,620 parameters)."""

    def __init__(self, num_classes=10, dropout=0.3, in_chans=None):
        super().__init__(20, num_classes, dropout, in_chans)

    def first_conv(self, cin, cout):
        return nn.Conv2d(cin, cout, 3, bias=False)

    def group_conv(self, cin, cout, k):
        return nn.Conv2d(cin, cout, k, bias=False)

    def batch_norm(self, c):
        return gnn.plane_batch_norm(c)

    def pool(self, h):
        return F.max_pool2d(h, 2, 2)

    def pool_logits(self, h):
        return h.flatten(1)


class P4CNN(_RotMNISTNet):
    """p4 G-CNN (Cohen & Welling 2016) as in the paper (24,610 parameters)."""
    group_name = "p4"

    def __init__(self, num_classes=10, dropout=0.3, in_chans=None):
        super().__init__(10, num_classes, dropout, in_chans)

    def first_conv(self, cin, cout):
        return gnn.LiftingConv(cin, cout, 3, "p4")

    def group_conv(self, cin, cout, k):
        return gnn.GroupConv(cin, cout, k, "p4")


class AP4CNN(P4CNN):
    """alpha-P4CNN: full alpha attention (channel + spatial) in every layer (73,130 parameters)."""
    channel, spatial = True, True

    def first_conv(self, cin, cout):
        return gnn.AttLiftingConv(
            cin, cout, 3, "p4",
            channel_attention=gnn.ResponseChannelAttention(cout, cin, "p4", 1, lifting=True)
            if self.channel else None,
            spatial_attention=gnn.ResponseSpatialAttention(cout, 7, "p4", lifting=True)
            if self.spatial else None)

    def group_conv(self, cin, cout, k):
        return gnn.AttGroupConv(
            cin, cout, k, "p4",
            channel_attention=gnn.ResponseChannelAttention(cout, cin, "p4", 2) if self.channel else None,
            spatial_attention=gnn.ResponseSpatialAttention(cout, 7, "p4") if self.spatial else None)


class AChP4CNN(AP4CNN):
    """alpha_Ch-P4CNN: full alpha, channel attention only (48,630 parameters)."""
    channel, spatial = True, False


class ASpP4CNN(AP4CNN):
    """alpha_Sp-P4CNN: full alpha, spatial attention only (49,110 parameters)."""
    channel, spatial = False, True


class FAP4CNN(P4CNN):
    """alpha_F-P4CNN: attention on the input feature maps of every layer (29,462 parameters).
    The first layer's spatial attention is dilated (7x7, dilation 4), as in the original."""

    def first_conv(self, cin, cout):
        return gnn.FAttLiftingConv(cin, cout, 3, "p4",
                                   channel_attention=gnn.FeatureChannelAttention(cin, 1),
                                   spatial_attention=gnn.FeatureSpatialAttention(7, "p4", dilation=4))

    def group_conv(self, cin, cout, k):
        return gnn.FAttGroupConv(cin, cout, k, "p4",
                                 channel_attention=gnn.GroupChannelAttention(cin, "p4", 2),
                                 spatial_attention=gnn.GroupSpatialAttention(7, "p4"))


class CoAP4CNN(P4CNN):
    """Co-attentive P4CNN (Romero & Hoogendoorn 2019's comparison layer; ``RomHog_fA_P4CNN``):
    a sigmoid 1x1 lifting / group convolution of the input gates it (24,851 parameters)."""

    def first_conv(self, cin, cout):
        return gnn.FAttLiftingConv(cin, cout, 3, "p4", spatial_attention=gnn.CoAttention(cin, "p4"))

    def group_conv(self, cin, cout, k):
        return gnn.FAttGroupConv(cin, cout, k, "p4", spatial_attention=gnn.GroupCoAttention(cin, "p4"))


#: the original's class name -> ours, for the converter and the golden files
ORIGINAL_CLASSES = {
    "Z2CNN": Z2CNN, "P4CNN": P4CNN, "A_P4CNN": AP4CNN, "A_Ch_P4CNN": AChP4CNN,
    "A_Sp_P4CNN": ASpP4CNN, "fA_P4CNN": FAP4CNN, "RomHog_fA_P4CNN": CoAP4CNN,
}


# ----------------------------------------------------------------------------- registrations
def _register(name, cls, original):
    return register_model_class(name, cls, dataset="rotmnist", original_class=original)


z2cnn_rotmnist = _register("z2cnn_rotmnist", Z2CNN, "Z2CNN")
p4cnn_rotmnist = _register("p4cnn_rotmnist", P4CNN, "P4CNN")
a_p4cnn_rotmnist = _register("a_p4cnn_rotmnist", AP4CNN, "A_P4CNN")
ach_p4cnn_rotmnist = _register("ach_p4cnn_rotmnist", AChP4CNN, "A_Ch_P4CNN")
asp_p4cnn_rotmnist = _register("asp_p4cnn_rotmnist", ASpP4CNN, "A_Sp_P4CNN")
af_p4cnn_rotmnist = _register("af_p4cnn_rotmnist", FAP4CNN, "fA_P4CNN")
coa_p4cnn_rotmnist = _register("coa_p4cnn_rotmnist", CoAP4CNN, "RomHog_fA_P4CNN")
