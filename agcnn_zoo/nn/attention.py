"""Attention modules of the paper (Romero et al. 2020), with the original's parameter shapes.

Two families:

* alpha_F ("feature-map" attention, ``fAtt*`` in the original): computed from the INPUT feature
  map of a convolution and applied to it before the convolution.
  - ``FeatureChannelAttention`` (planes) / ``GroupChannelAttention`` (group maps): a two-layer
    bias-free MLP on the global spatial mean and max of every channel, ``alpha = sigmoid(z(mean)
    + z(max))``. On group maps the MLP weights are permuted along the group axis like G-filters
    (they are 1x1 group convolutions), so alpha is equivariant.
  - ``FeatureSpatialAttention`` / ``GroupSpatialAttention``: a lifting / group convolution of the
    channel-wise mean and max maps, then a sigmoid (the lifting version first takes the max over
    the group axis, so beta is a plane map).
  - ``CoAttention`` / ``GroupCoAttention``: the co-attentive comparison layer (``RomHog`` in
    the original): a 1x1 lifting / group convolution of the whole input, then a sigmoid.
* full alpha (``Att*``): computed from the per-input-channel RESPONSES of a convolution. These
  modules only hold parameters and derive the transformed banks; the computation lives in
  ``attentive_conv.py`` (it must be chunked to bound memory).
  - ``ResponseChannelAttention``: a separate MLP per output channel over the input channels.
  - ``ResponseSpatialAttention``: per output channel, a 2-channel (mean, max over input
    channels) lifting / group filter, applied to every input group element separately.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..groups import get_group
from . import reference as ref
from .base import Layer
from .filter_banks import CachedBanks
from .conv import GroupConv, LiftingConv, group_bank, lifting_bank
from .exported import ChannelMLPAttention, Gate, StatsSpatialAttention


def _init_mlp(t: torch.Tensor, fan_in: int) -> None:
    # kaiming_uniform(a=sqrt(5)) on a linear layer gives U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    bound = 1.0 / math.sqrt(max(fan_in, 1))
    nn.init.uniform_(t, -bound, bound)


def _hidden(channels: int, ratio: int) -> int:
    if ratio < 1 or channels // ratio < 1:
        raise ValueError(f"attention ratio {ratio} leaves no hidden unit for {channels} channels")
    return channels // ratio


def _mean_max(x: torch.Tensor) -> torch.Tensor:
    """Global spatial mean and max, stacked on a new leading axis: ``[2, *x.shape[:-2]]``."""
    return torch.stack([x.mean(dim=(-2, -1)), x.amax(dim=(-2, -1))])


# ---------------------------------------------------------------------------------- alpha_F
class FeatureChannelAttention(Layer):
    """alpha over the channels of a plane map ``[B, C, X, Y] -> [B, C, 1, 1]`` (plain linear
    algebra: one formulation serves both paths, and the layer is its own export)."""

    def __init__(self, channels: int, ratio: int = 1):
        super().__init__()
        hidden = _hidden(channels, ratio)
        self.weight_fc1 = nn.Parameter(torch.empty(hidden, channels))
        self.weight_fc2 = nn.Parameter(torch.empty(channels, hidden))
        _init_mlp(self.weight_fc1, channels)
        _init_mlp(self.weight_fc2, hidden)

    def param_axes(self) -> dict:
        return {"weight_fc1": (None, False), "weight_fc2": (None, False)}

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        s = _mean_max(x)                                            # [2, B, C]
        z = F.relu(s @ self.weight_fc1.t()) @ self.weight_fc2.t()
        return torch.sigmoid(z[0] + z[1])[..., None, None]

    def forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        return self._mlp(x)

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        return self._mlp(x)

    def export(self) -> nn.Module:
        return copy.deepcopy(self)


class GroupChannelAttention(Layer, CachedBanks):
    """alpha over the channels of a group map ``[B, C, n, X, Y] -> [B, C, n, 1, 1]``.

    ``h[b, q, i] = relu(sum_{c, j} w1[q, c, perm_i(j)] s[b, c, j])``,
    ``z[b, c, i] = sum_{q, j} w2[c, q, perm_i(j)] h[b, q, j]``, with ``perm_i(j) = g_i^-1 g_j``.
    """

    def __init__(self, channels: int, group="p4", ratio: int = 1):
        super().__init__()
        self.group = get_group(group)
        n = self.group.order
        hidden = _hidden(channels, ratio)
        self.weight_fc1 = nn.Parameter(torch.empty(hidden, channels, n))
        self.weight_fc2 = nn.Parameter(torch.empty(channels, hidden, n))
        _init_mlp(self.weight_fc1, channels)
        _init_mlp(self.weight_fc2, hidden)

    def param_axes(self) -> dict:
        return {"weight_fc1": (2, False), "weight_fc2": (2, False)}

    def matrices(self):
        """The two MLP weights as matrices ``[(out, i), (in, j)]`` with entries
        ``w[out, in, perm[i, j]]`` (built fresh, not cached)."""
        perm = self.group.axis_permutations.to(self.weight_fc1.device)

        def matrix(w):
            m = w[:, :, perm]                                      # [out, in, n_i, n_j]
            return m.permute(0, 2, 1, 3).flatten(2).flatten(0, 1)
        return matrix(self.weight_fc1), matrix(self.weight_fc2)

    def banks(self):
        return (self.cached_bank("fc1", lambda: self.matrices()[0], [self.weight_fc1]),
                self.cached_bank("fc2", lambda: self.matrices()[1], [self.weight_fc2]))

    def forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        m1, m2 = self.banks()
        s = _mean_max(x).flatten(2)                                 # [2, B, C*n]
        z = F.relu(s @ m1.t()) @ m2.t()
        return torch.sigmoid(z[0] + z[1]).unflatten(1, x.shape[1:3])[..., None, None]

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        return ref.group_channel_attention(self, x)

    @torch.no_grad()
    def export(self) -> ChannelMLPAttention:
        m1, m2 = self.matrices()
        fc1 = nn.Linear(m1.shape[1], m1.shape[0], bias=False).to(m1.device)
        fc2 = nn.Linear(m2.shape[1], m2.shape[0], bias=False).to(m2.device)
        fc1.weight.copy_(m1)
        fc2.weight.copy_(m2)
        return ChannelMLPAttention(fc1, fc2, self.group.order)


def _mean_max_channels(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)


class FeatureSpatialAttention(LiftingConv):
    """beta over the plane: ``sigmoid(max_i Lift([mean_c x, max_c x])_i)``, ``[B, 1, X, Y]``."""
    nhwc_min_channels = 4   # its 2-plane input convolves faster in NCHW

    def __init__(self, kernel_size: int = 7, group="p4", dilation: int = 1):
        super().__init__(2, 1, kernel_size, group, padding=dilation * (kernel_size // 2),
                         dilation=dilation)

    check_input = Layer.check_input    # any number of channels: it sees their mean and max

    def forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv_fast(_mean_max_channels(x)).amax(dim=2))

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv_reference(_mean_max_channels(x)).amax(dim=2))

    def export(self) -> nn.Module:
        return StatsSpatialAttention(self.export_conv(), pool_group_axis=True)


class GroupSpatialAttention(GroupConv):
    """beta over a group map: ``sigmoid(GConv([mean_c x, max_c x]))``, ``[B, 1, n, X, Y]``
    (the Haar factor of the group convolution included, as in the original)."""

    def __init__(self, kernel_size: int = 7, group="p4", dilation: int = 1):
        super().__init__(2, 1, kernel_size, group, padding=dilation * (kernel_size // 2),
                         dilation=dilation)

    check_input = Layer.check_input    # any number of channels: it sees their mean and max

    def forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv_fast(_mean_max_channels(x)))

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv_reference(_mean_max_channels(x)))

    def export(self) -> nn.Module:
        return StatsSpatialAttention(self.export_conv(), pool_group_axis=False)


class CoAttention(LiftingConv):
    """Co-attentive comparison on planes: ``sigmoid(max_i Lift_1x1(x)_i)``, ``[B, 1, X, Y]``."""

    def __init__(self, channels: int, group="p4"):
        super().__init__(channels, 1, 1, group)

    check_input = Layer.check_input    # the input of the convolution it gates

    def forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv_fast(x).amax(dim=2))

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv_reference(x).amax(dim=2))

    def export(self) -> nn.Module:
        return Gate(self.export_conv(), pool_group_axis=True)


class GroupCoAttention(GroupConv):
    """Co-attentive comparison on group maps: ``sigmoid(GConv_1x1(x))``, ``[B, 1, n, X, Y]``."""

    def __init__(self, channels: int, group="p4"):
        super().__init__(channels, 1, 1, group)

    check_input = Layer.check_input    # the input of the convolution it gates

    def forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv_fast(x))

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv_reference(x))

    def export(self) -> nn.Module:
        return Gate(self.export_conv(), pool_group_axis=False)


# ------------------------------------------------------------------------------- full alpha
class ResponseChannelAttention(CachedBanks):
    """Parameters of full-alpha channel attention for an attentive conv with ``out_channels``
    outputs and ``in_channels`` inputs; ``lifting`` selects the Z2 (no input group axis) form.

    ``banks()`` gives ``F1[o, i, q, c, j]`` and ``F2[o, i, c, q, j]`` (``j`` the input group
    element, a singleton for lifting) so that, for response statistics ``s[b, c, j, o, i]``,
    ``h = relu(sum_c F1 s)`` and ``z = sum_q F2 h`` (``j`` is not summed).
    """

    def __init__(self, out_channels: int, in_channels: int, group="p4", ratio: int = 1,
                 lifting: bool = False):
        super().__init__()
        self.group = get_group(group)
        self.lifting = lifting
        hidden = _hidden(in_channels, ratio)
        tail = () if lifting else (self.group.order,)
        self.weight_fc1 = nn.Parameter(torch.empty(out_channels, hidden, in_channels, *tail))
        self.weight_fc2 = nn.Parameter(torch.empty(out_channels, in_channels, hidden, *tail))
        _init_mlp(self.weight_fc1, in_channels)
        _init_mlp(self.weight_fc2, hidden)

    def param_axes(self) -> dict:
        axis = None if self.lifting else 3
        return {"weight_fc1": (axis, False), "weight_fc2": (axis, False)}

    def _expand(self, w: torch.Tensor) -> torch.Tensor:
        n = self.group.order
        if self.lifting:      # same MLP for every output element i, one input "element"
            return w.unsqueeze(1).unsqueeze(-1).expand(-1, n, -1, -1, 1)
        perm = self.group.axis_permutations.to(w.device)
        return w[..., perm].permute(0, 3, 1, 2, 4)            # [o, i, a, b, j]

    def banks(self):
        return (self.cached_bank("fc1", lambda: self._expand(self.weight_fc1), [self.weight_fc1]),
                self.cached_bank("fc2", lambda: self._expand(self.weight_fc2), [self.weight_fc2]))


class ResponseSpatialAttention(CachedBanks):
    """Parameters of full-alpha spatial attention: ``weight [O, 2, k, k]`` (lifting) or
    ``[O, 2, n, k, k]``; ``bank()`` gives ``[O, n, 2, J, k, k]`` (J = 1 for lifting)."""

    def __init__(self, out_channels: int, kernel_size: int = 7, group="p4", dilation: int = 1,
                 lifting: bool = False):
        super().__init__()
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size of the spatial attention must be an odd positive int "
                             f"(the attention map keeps the size of the responses), got "
                             f"{kernel_size!r}; the paper uses 7")
        self.group = get_group(group)
        self.lifting = lifting
        self.kernel_size, self.dilation = kernel_size, dilation
        self.padding = dilation * (kernel_size // 2)
        tail = () if lifting else (self.group.order,)
        self.weight = nn.Parameter(torch.empty(out_channels, 2, *tail, kernel_size, kernel_size))
        s = 1.0 / math.sqrt(2 * kernel_size ** 2)
        nn.init.uniform_(self.weight, -s, s)

    def param_axes(self) -> dict:
        return {"weight": (None if self.lifting else 2, True)}

    def _build(self) -> torch.Tensor:
        o, k, n = self.weight.shape[0], self.kernel_size, self.group.order
        if self.lifting:
            return lifting_bank(self.weight, self.group).reshape(o, n, 2, 1, k, k)
        return group_bank(self.weight, self.group)

    def bank(self) -> torch.Tensor:
        return self.cached_bank("sp", self._build, [self.weight])
