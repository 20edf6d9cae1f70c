"""Equivariant layers for p4 / p4m: convolutions, attention, pooling, batch norm.

Every layer is a ``Layer`` (``base.py``): ``forward`` dispatches to ``forward_fast`` or, inside
``reference_path()``, to ``forward_reference``; ``export()`` gives its plain-module form and
``check_equivariance(x)`` measures its equivariance error.
"""
from .attention import (CoAttention, FeatureChannelAttention, FeatureSpatialAttention,
                        GroupChannelAttention, GroupCoAttention, GroupSpatialAttention,
                        ResponseChannelAttention, ResponseSpatialAttention)
from .attentive_conv import (AttGroupConv, AttLiftingConv,
                             FAttGroupConv, FAttLiftingConv, FullAlphaConv,
                             set_full_alpha_backend, set_max_chunk_elements)
from .base import ExportError, Layer
from .filter_banks import CachedBanks
from .dropout import Dropout
from .conv import GroupConv, LiftingConv
from .norm import GroupBatchNorm, plane_batch_norm
from .pooling import (GroupPool, SpatialAvgPool, SpatialMaxPool, spatial_avg_pool,
                      spatial_max_pool)
from .reference import reference_path

__all__ = [n for n in dir() if not n.startswith("_")]
