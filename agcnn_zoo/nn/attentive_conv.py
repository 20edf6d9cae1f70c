"""The paper's attentive convolutions.

alpha_F (``FAttLiftingConv`` / ``FAttGroupConv``): attention on the input feature map, then a
plain lifting / group convolution:  ``x_hat = x - beta * (alpha * x)``, ``y = Conv(x_hat)``.
(The original writes every attention as ``x - attention(x)``, i.e. ``x * (1 - alpha beta)``.)

Full alpha (``AttLiftingConv`` / ``AttGroupConv``): attention on the responses of every
(input channel, input group element) before they are summed:
``Y[b,o,i,c,j] = x[b,c,j] * K_i[o,c,j]``, ``alpha`` from the spatial mean/max of ``Y``,
``beta`` from the channel mean/max of ``alpha Y``, ``y = scale * sum_{c,j} (Y - beta alpha Y)``.
The un-summed ``Y`` is ``C * n_in`` times larger than the output. The original materialises it
whole; here it is computed in chunks of output channels (every step is independent across
output channels, so this is exact) and, when gradients are needed, each chunk is recomputed in
backward instead of stored (activation checkpointing). The largest live intermediate is then
about ``max_chunk_elements`` floats (a handful of them), whatever the batch or width.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from . import reference as ref
from .attention import ResponseChannelAttention, ResponseSpatialAttention
from .cache import CachedBanks
from .conv import GroupConv, LiftingConv, check_group_map, check_plane_map, group_bank, lifting_bank

#: default bound (in float elements) on one chunk of un-summed responses
DEFAULT_MAX_CHUNK_ELEMENTS = 1 << 22


def _modulate(x: torch.Tensor, channel_attention, spatial_attention) -> torch.Tensor:
    if channel_attention is None and spatial_attention is None:
        return x
    a = x if channel_attention is None else channel_attention(x) * x
    if spatial_attention is not None:
        a = spatial_attention(a) * a
    return x - a


class FAttLiftingConv(LiftingConv):
    """alpha_F lifting convolution (``fAttConvRnG``); dilation of the conv is 1 as in the original."""

    def __init__(self, in_channels, out_channels, kernel_size, group="p4", channel_attention=None,
                 spatial_attention=None, stride=1, padding=0):
        super().__init__(in_channels, out_channels, kernel_size, group, stride, padding)
        self.channel_attention = channel_attention
        self.spatial_attention = spatial_attention

    def forward(self, x):
        check_plane_map(x, self.in_channels, type(self).__name__)
        return self.conv(_modulate(x, self.channel_attention, self.spatial_attention))


class FAttGroupConv(GroupConv):
    """alpha_F group convolution (``fAttConvGG``), Haar factor included."""

    def __init__(self, in_channels, out_channels, kernel_size, group="p4", channel_attention=None,
                 spatial_attention=None, stride=1, padding=0):
        super().__init__(in_channels, out_channels, kernel_size, group, stride, padding)
        self.channel_attention = channel_attention
        self.spatial_attention = spatial_attention

    def forward(self, x):
        check_group_map(x, self.in_channels, self.group.order, type(self).__name__)
        return self.conv(_modulate(x, self.channel_attention, self.spatial_attention))


# ------------------------------------------------------------------------------- full alpha
def _alpha_chunk(x, resp_bank, fc1, fc2, sp_bank, stride, padding, dilation, sp_padding,
                 sp_dilation, scale):
    """Full alpha attention for a chunk of output channels.

    x ``[B, C, J, X, Y]``; resp_bank ``[Oc, n, C, J, k, k]``; fc1 ``[Oc, n, q, C, J]``;
    fc2 ``[Oc, n, C, q, J]``; sp_bank ``[Oc, n, 2, J, ks, ks]``. Returns ``[B, Oc, n, X', Y']``.
    """
    b, c, j = x.shape[:3]
    oc, n, k = resp_bank.shape[0], resp_bank.shape[1], resp_bank.shape[-1]
    # one group per input plane (c, j): every response Y[b, c, j, o, i] kept separate
    w = resp_bank.permute(2, 3, 0, 1, 4, 5).reshape(c * j * oc * n, 1, k, k)
    resp = F.conv2d(x.flatten(1, 2), w, None, stride, padding, dilation, groups=c * j)
    resp = resp.view(b, c, j, oc, n, *resp.shape[-2:])
    att = resp
    if fc1 is not None:
        s = _spatial_stats(resp)                                             # [2, B, C, J, Oc, n]
        h = F.relu(torch.einsum("tbcjoi,oiqcj->tbqjoi", s, fc1))
        z = torch.einsum("tbqjoi,oicqj->tbcjoi", h, fc2)
        alpha = torch.sigmoid(z[0] + z[1])
        att = alpha[..., None, None] * resp
    if sp_bank is not None:
        ks = sp_bank.shape[-1]
        stats = torch.stack([att.mean(dim=1), att.amax(dim=1)], dim=4)       # [B, J, Oc, n, 2, X, Y]
        wsp = sp_bank.permute(3, 0, 1, 2, 4, 5).reshape(j * oc * n, 2, ks, ks)
        beta = torch.sigmoid(F.conv2d(stats.flatten(1, 4), wsp, None, 1, sp_padding, sp_dilation,
                                      groups=j * oc * n))
        att = beta.view(b, 1, j, oc, n, *beta.shape[-2:]) * att
    out = (resp - att) if att is not resp else resp
    return out.sum(dim=(1, 2)) * scale


def _spatial_stats(resp):
    return torch.stack([resp.mean(dim=(-2, -1)), resp.amax(dim=(-2, -1))])


class _FullAlphaConv(CachedBanks):
    """Shared machinery of the full-alpha attentive convolutions."""

    lifting: bool

    def _init_attention(self, channel_attention, spatial_attention):
        for name, mod, cls in (("channel_attention", channel_attention, ResponseChannelAttention),
                               ("spatial_attention", spatial_attention, ResponseSpatialAttention)):
            if mod is not None and not isinstance(mod, cls):
                raise TypeError(f"{name} must be a {cls.__name__} or None, got {type(mod).__name__}")
            if mod is not None and mod.lifting != self.lifting:
                raise ValueError(f"{name}: lifting={mod.lifting} does not match the convolution")
        self.channel_attention = channel_attention
        self.spatial_attention = spatial_attention
        self.max_chunk_elements = DEFAULT_MAX_CHUNK_ELEMENTS

    def response_bank(self) -> torch.Tensor:
        """``[O, n, C, J, k, k]``, unscaled."""
        def build():
            if self.lifting:
                o, c, k, _ = self.weight.shape
                return lifting_bank(self.weight, self.group).reshape(o, self.group.order, c, 1, k, k)
            return group_bank(self.weight, self.group)
        return self.cached_bank("resp", build, [self.weight])

    def _attentive(self, x5: torch.Tensor) -> torch.Tensor:
        ca, sa = self.channel_attention, self.spatial_attention
        bank = self.response_bank()
        fc1, fc2 = ca.banks() if ca is not None else (None, None)
        spb = sa.bank() if sa is not None else None
        sp_pad = sa.padding if sa is not None else 0
        sp_dil = sa.dilation if sa is not None else 1
        b, c, j, h, w = x5.shape
        o, n = bank.shape[:2]
        oh = (h + 2 * self.padding - self.dilation * (self.kernel_size - 1) - 1) // self.stride + 1
        ow = (w + 2 * self.padding - self.dilation * (self.kernel_size - 1) - 1) // self.stride + 1
        per_channel = max(1, b * c * j * n * oh * ow)
        step = max(1, min(o, self.max_chunk_elements // per_channel))
        grad = torch.is_grad_enabled() and (x5.requires_grad or any(
            p.requires_grad for p in self.parameters()))
        outs = []
        for o0 in range(0, o, step):
            sl = slice(o0, o0 + step)
            args = (x5, bank[sl], None if fc1 is None else fc1[sl], None if fc2 is None else fc2[sl],
                    None if spb is None else spb[sl], self.stride, self.padding, self.dilation,
                    sp_pad, sp_dil, self.scale)
            if grad and step < o:
                outs.append(checkpoint(_alpha_chunk, *args, use_reentrant=False))
            else:
                outs.append(_alpha_chunk(*args))
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)

    def _has_attention(self) -> bool:
        return self.channel_attention is not None or self.spatial_attention is not None


class AttLiftingConv(_FullAlphaConv, LiftingConv):
    """Full-alpha attentive lifting convolution (``AttConvRnG``); no scale factor."""

    lifting = True

    def __init__(self, in_channels, out_channels, kernel_size, group="p4", channel_attention=None,
                 spatial_attention=None, stride=1, padding=0, dilation=1):
        LiftingConv.__init__(self, in_channels, out_channels, kernel_size, group, stride, padding,
                             dilation)
        self.scale = 1.0
        self._init_attention(channel_attention, spatial_attention)

    def forward(self, x):
        check_plane_map(x, self.in_channels, type(self).__name__)
        if ref.enabled():
            return ref.att_conv(self, x.unsqueeze(2))
        if not self._has_attention():
            return self.conv(x)
        return self._attentive(x.unsqueeze(2))


class AttGroupConv(_FullAlphaConv, GroupConv):
    """Full-alpha attentive group convolution (``AttConvGG``).

    Its output factor is the original's ``2 pi / n`` (pi/2 for p4, equal to the Haar factor of
    GroupConv; pi/4 for p4m, where GroupConv uses pi).
    """

    lifting = False

    def __init__(self, in_channels, out_channels, kernel_size, group="p4", channel_attention=None,
                 spatial_attention=None, stride=1, padding=0, dilation=1):
        GroupConv.__init__(self, in_channels, out_channels, kernel_size, group, stride, padding,
                           dilation)
        self.scale = 2 * math.pi / self.group.order
        self._init_attention(channel_attention, spatial_attention)

    def forward(self, x):
        check_group_map(x, self.in_channels, self.group.order, type(self).__name__)
        if ref.enabled():
            return ref.att_conv(self, x)
        if not self._has_attention():
            return self.conv(x)
        return self._attentive(x)
