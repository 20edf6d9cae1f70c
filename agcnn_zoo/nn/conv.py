"""Lifting (Z2 -> G) and group (G -> G) convolutions, exactly as the original computes them.

* Lifting: ``y[b, o, i] = x[b] * (L_i W)[o]`` (cross-correlation), no scale factor.
* Group:   ``y[b, o, i] = scale * sum_{c, j} x[b, c, j] * K_i[o, c, j]``; the original's scale is
  the Haar measure of the grid, pi/2 (p4) or pi (p4m); we fold it into the filter bank.

The filter bank is built with one gather from a precomputed integer index (no Python loop per
group element) and cached in eval mode (see ``filter_banks.py``). Inference on CPU runs in
channels_last (see ``layout.py``).

Both are ``Layer``s (``base.py``): ``forward_fast`` is the gathered bank and one conv2d,
``forward_reference`` the readable loop of ``reference.py``. ``conv_fast`` / ``conv_reference``
are the same two convolutions as building blocks for subclasses (attention, alpha_F) that
transform the input or output around them; ``export_conv()`` is the plain ``nn.Conv2d`` form.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..groups import Group, get_group
from . import reference as ref
from .base import Layer
from .filter_banks import CachedBanks
from .layout import conv_input
from .exported import GroupPlaneConv, PlaneConv, conv2d_of


def _pair_int(v, name):
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ValueError(f"{name} must be a non-negative int, got {v!r}")
    return v


def lifting_bank(weight: torch.Tensor, group: Group, shape=None) -> torch.Tensor:
    """``[O, C, k, k] -> [O * n, C, k, k]``, output channel ``o * n + i`` holds ``L_i W[o]``
    (``shape``: the weight's shape as ints, for a symbolic trace that has no tensor shapes)."""
    o, c, k, _ = weight.shape if shape is None else shape
    idx = group.plane_filter_index(k).to(weight.device)
    bank = weight.reshape(o, c, k * k)[:, :, idx]              # [O, C, n, k*k]
    return bank.transpose(1, 2).reshape(o * group.order, c, k, k)


def group_bank(weight: torch.Tensor, group: Group, shape=None) -> torch.Tensor:
    """``[O, C, n, k, k] -> [O, n_out, C, n_in, k, k]`` holding ``K_i[o, c, j]`` (``shape`` as
    for ``lifting_bank``)."""
    o, c, n_in, k, _ = weight.shape if shape is None else shape
    idx = group.group_filter_index(k, n_in).to(weight.device)
    bank = weight.reshape(o, c, n_in * k * k)[:, :, idx]       # [O, C, n_out, n_in*k*k]
    return bank.transpose(1, 2).reshape(o, group.order, c, n_in, k, k)


def check_group_map(x: torch.Tensor, channels: int, n: int, layer: str) -> None:
    if x.dim() != 5 or x.shape[1] != channels or x.shape[2] != n:
        raise ValueError(f"{layer} expects a group feature map of shape [B, {channels}, {n}, X, Y], "
                         f"got {tuple(x.shape)}")


def check_plane_map(x: torch.Tensor, channels: int, layer: str) -> None:
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"{layer} expects an image batch of shape [B, {channels}, X, Y], "
                         f"got {tuple(x.shape)}")


class _GConv(Layer, CachedBanks):
    """What lifting and group convolutions share: their geometry, the original's initialisation,
    the fast/reference dispatch and the export; subclasses give the weight and the bank."""
    #: below this many input planes inference stays NCHW (NHWC was slower there)
    nhwc_min_channels = 1

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, group,
                 stride: int, padding: int, dilation: int):
        super().__init__()
        self.group = get_group(group)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = kernel_size
        self.stride = _pair_int(stride, "stride")
        self.padding = _pair_int(padding, "padding")
        self.dilation = _pair_int(dilation, "dilation")

    def reset_parameters(self, wscale: float = 1.0) -> None:
        # the original's init: U(-s, s), s = wscale / sqrt(fan_in), where a group convolution's
        # fan-in leaves out the input group axis
        s = wscale / math.sqrt(self.in_channels * self.kernel_size ** 2)
        nn.init.uniform_(self.weight, -s, s)

    def forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_fast(x)

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_reference(x)

    def export(self) -> nn.Module:
        return self.export_conv()

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"group={self.group.name}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}")


class LiftingConv(_GConv):
    """Z2 -> G convolution; weight ``[out, in, k, k]``; output ``[B, out, n, X', Y']``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, group="p4",
                 stride: int = 1, padding: int = 0, dilation: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, group, stride, padding, dilation)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.reset_parameters()
        self.group.plane_filter_index(kernel_size)   # build the index tables now, not mid-trace

    def param_axes(self) -> dict:
        """See ``Layer.param_axes``: a plane filter."""
        return {"weight": (None, True)}

    def filter_bank(self) -> torch.Tensor:
        shape = (self.out_channels, self.in_channels, self.kernel_size, self.kernel_size)
        return self.cached_bank("conv", lambda: lifting_bank(self.weight, self.group, shape),
                                [self.weight])

    def conv_fast(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(conv_input(x, self.training, self.nhwc_min_channels), self.filter_bank(), None,
                     self.stride, self.padding, self.dilation)
        return y.unflatten(1, (self.out_channels, self.group.order))

    def conv_reference(self, x: torch.Tensor) -> torch.Tensor:
        return ref.lifting_conv(self, x)

    def check_input(self, x: torch.Tensor) -> None:
        check_plane_map(x, self.in_channels, type(self).__name__)

    @torch.no_grad()
    def export_conv(self) -> PlaneConv:
        """The convolution as an ``nn.Conv2d`` (output factor, if any, folded in)."""
        bank = lifting_bank(self.weight, self.group) * getattr(self, "scale", 1.0)
        return PlaneConv(conv2d_of(bank, self), self.group.order, self.nhwc_min_channels)


class GroupConv(_GConv):
    """G -> G convolution; weight ``[out, in, n, k, k]``; output ``[B, out, n, X', Y']``.

    ``scale`` defaults to the original's Haar factor (pi/2 for p4, pi for p4m).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, group="p4",
                 stride: int = 1, padding: int = 0, dilation: int = 1, scale: float | None = None):
        super().__init__(in_channels, out_channels, kernel_size, group, stride, padding, dilation)
        self.scale = self.group.haar if scale is None else float(scale)
        #: an explicit ``scale`` argument (None: the original's factor, which the reference
        #: path derives on its own instead of reading ``self.scale``)
        self.scale_argument = None if scale is None else float(scale)
        n = self.group.order
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, n, kernel_size, kernel_size))
        self.reset_parameters()
        self.group.group_filter_index(kernel_size)   # build the index tables now, not mid-trace

    def param_axes(self) -> dict:
        """See ``Layer.param_axes``: a group filter (relative group axis 2, then the plane)."""
        return {"weight": (2, True)}

    def filter_bank(self) -> torch.Tensor:
        """``[O * n, C * n, k, k]``, scale folded in."""
        def build():
            o, c, n, k = self.out_channels, self.in_channels, self.group.order, self.kernel_size
            bank = group_bank(self.weight, self.group, (o, c, n, k, k))
            return (bank * self.scale).reshape(o * n, c * n, k, k)
        return self.cached_bank("conv", build, [self.weight])

    def conv_fast(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(conv_input(x.flatten(1, 2), self.training, self.nhwc_min_channels),
                     self.filter_bank(), None, self.stride, self.padding, self.dilation)
        return y.unflatten(1, (self.out_channels, self.group.order))

    def conv_reference(self, x: torch.Tensor) -> torch.Tensor:
        return ref.group_conv(self, x)

    def check_input(self, x: torch.Tensor) -> None:
        check_group_map(x, self.in_channels, self.group.order, type(self).__name__)

    @torch.no_grad()
    def export_conv(self) -> GroupPlaneConv:
        """The convolution as an ``nn.Conv2d`` on ``[B, C n, X, Y]`` (output factor folded in)."""
        o, c, n, k = self.out_channels, self.in_channels, self.group.order, self.kernel_size
        bank = group_bank(self.weight, self.group).reshape(o * n, c * n, k, k) * self.scale
        return GroupPlaneConv(conv2d_of(bank, self), n, self.nhwc_min_channels)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale={self.scale:.6g}"
