"""The paper's attentive convolutions.

alpha_F (``FAttLiftingConv`` / ``FAttGroupConv``): attention on the input feature map, then a
plain lifting / group convolution:  ``x_hat = x - beta * (alpha * x)``, ``y = Conv(x_hat)``.
(The original writes every attention as ``x - attention(x)``, i.e. ``x * (1 - alpha beta)``.)

Full alpha (``AttLiftingConv`` / ``AttGroupConv``): attention on the responses of every
(input channel c, input group element j) before they are summed:
``Y[b,o,i,c,j] = x[b,c,j] * K_i[o,c,j]``, ``alpha`` from the spatial mean/max of ``Y``,
``beta`` from the channel mean/max of ``A = alpha Y``, ``y = s * sum_{c,j} (Y - beta A)``.

The full-alpha computation itself (chunked, exact, with a hand-written backward) is the
functional kernel ``full_alpha/``; these layers hold the parameters, build the banks in its
layouts, choose the chunks and dispatch between it and ``reference.att_conv``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from . import full_alpha as kernel
from . import reference as ref
from .attention import ResponseChannelAttention, ResponseSpatialAttention
from .base import ExportError, grad_wanted
from .chunk_budget import default_chunk_elements
from .conv import GroupConv, LiftingConv, group_bank, lifting_bank
from .exported import FeatureAttentiveConv, modulate
from .tracing import fx_tracing



def _export_attention(mod):
    return None if mod is None else mod.export()


class FAttLiftingConv(LiftingConv):
    """alpha_F lifting convolution (``fAttConvRnG``); dilation of the conv is 1 as in the original."""

    def __init__(self, in_channels, out_channels, kernel_size, group="p4", channel_attention=None,
                 spatial_attention=None, stride=1, padding=0):
        super().__init__(in_channels, out_channels, kernel_size, group, stride, padding)
        self.channel_attention = channel_attention
        self.spatial_attention = spatial_attention

    def forward_fast(self, x):
        return self.conv_fast(modulate(x, self.channel_attention, self.spatial_attention,
                                       inplace=True))

    def forward_reference(self, x):
        return self.conv_reference(modulate(x, self.channel_attention, self.spatial_attention))

    def export(self) -> nn.Module:
        return FeatureAttentiveConv(self.export_conv(), _export_attention(self.channel_attention),
                                    _export_attention(self.spatial_attention))


class FAttGroupConv(GroupConv):
    """alpha_F group convolution (``fAttConvGG``), Haar factor included."""

    def __init__(self, in_channels, out_channels, kernel_size, group="p4", channel_attention=None,
                 spatial_attention=None, stride=1, padding=0):
        super().__init__(in_channels, out_channels, kernel_size, group, stride, padding)
        self.channel_attention = channel_attention
        self.spatial_attention = spatial_attention

    forward_fast = FAttLiftingConv.forward_fast
    forward_reference = FAttLiftingConv.forward_reference
    export = FAttLiftingConv.export


# ------------------------------------------------------------------------------- full alpha
def set_max_chunk_elements(module: nn.Module, elements: int) -> nn.Module:
    """Set the chunk budget (``max_chunk_elements``, in response-tensor entries) of every
    full-alpha layer in ``module``; e.g. 2**26 on a GPU. Any budget gives the same results
    (only memory and speed change). Returns ``module``."""
    if not isinstance(elements, int) or isinstance(elements, bool) or elements < 1:
        raise ValueError(f"elements must be a positive int (e.g. 2**20 on CPU, 2**26 on a GPU), "
                         f"got {elements!r}")
    for m in module.modules():
        if isinstance(m, FullAlphaConv):
            m.max_chunk_elements = elements
    return module


def set_full_alpha_backend(module: nn.Module, backend: str) -> nn.Module:
    """Choose how every full-alpha layer in ``module`` computes its attention term without
    gradients: ``"eager"`` (the default: PyTorch ops, chunk by chunk) or ``"compiled"`` (the
    same chunk function through ``torch.compile``: the first call of each layer shape compiles
    for seconds to a minute, later calls run the fused code; on CPU it needs a C++ compiler).
    Training runs the eager kernel with either. Both give the same results to float rounding.
    Returns ``module``."""
    kernel.chunk_forward(backend)   # validates the name (and builds the compiled function)
    for m in module.modules():
        if isinstance(m, FullAlphaConv):
            m.full_alpha_backend = backend
    return module


class FullAlphaConv:
    """Shared machinery of the full-alpha attentive convolutions (a mixin before
    ``LiftingConv`` / ``GroupConv``, which supply the plain convolution and its banks)."""

    lifting: bool
    # inputs and outputs stay NCHW: the chunks gather receptive fields plane by plane
    # (``full_alpha._unfold``), which an NHWC-backed map makes slower than the plain conv gains
    nhwc_min_channels = 1 << 62

    def _init_attention(self, channel_attention, spatial_attention):
        for name, mod, cls in (("channel_attention", channel_attention, ResponseChannelAttention),
                               ("spatial_attention", spatial_attention, ResponseSpatialAttention)):
            if mod is not None and not isinstance(mod, cls):
                raise TypeError(f"{name} must be a {cls.__name__} or None, got {type(mod).__name__}")
            if mod is not None and mod.lifting != self.lifting:
                raise ValueError(f"{name}: lifting={mod.lifting} does not match the convolution "
                                 f"(build it with lifting={self.lifting})")
        self.channel_attention = channel_attention
        self.spatial_attention = spatial_attention
        self._max_chunk_elements = None
        self.full_alpha_backend = "eager"

    @property
    def max_chunk_elements(self) -> int:
        """The bound (in tensor elements) on one chunk of un-summed responses: set per layer
        (``set_max_chunk_elements``), else the default of ``chunk_budget.py`` read when used
        (2^20, 4 MiB of float32, for a 32 MiB L3; ``AGCNN_ZOO_CHUNK_ELEMENTS`` overrides it)."""
        return self._max_chunk_elements or default_chunk_elements()

    @max_chunk_elements.setter
    def max_chunk_elements(self, elements: int) -> None:
        self._max_chunk_elements = elements

    def has_attention(self) -> bool:
        return self.channel_attention is not None or self.spatial_attention is not None

    def response_bank(self) -> torch.Tensor:
        """``[O, n, C, J, k, k]``, unscaled."""
        def build():
            if self.lifting:
                o, c, k, _ = self.weight.shape
                return lifting_bank(self.weight, self.group).reshape(o, self.group.order, c, 1, k, k)
            return group_bank(self.weight, self.group)
        return self.cached_bank("resp", build, [self.weight])

    # -- banks in the layouts of the kernel (cached in eval mode like every filter bank)
    def _chunk_banks(self):
        def resp():
            bank = self.response_bank()                                   # [O, n, C, J, k, k]
            o, n, c, j, k, _ = bank.shape
            return bank.permute(3, 2, 0, 1, 4, 5).reshape(j, c, o * n, k * k)
        kr = self.cached_bank("chunk_resp", resp, [self.weight])
        f1 = f2 = wsp = None
        ca, sa = self.channel_attention, self.spatial_attention
        if ca is not None:
            def mlp():
                b1, b2 = ca.banks()                                       # [O, n, h, C, J], [O, n, C, h, J]
                return (b1.permute(4, 0, 1, 2, 3).flatten(1, 2).contiguous(),
                        b2.permute(4, 0, 1, 2, 3).flatten(1, 2).contiguous())
            f1 = self.cached_bank("chunk_fc1", lambda: mlp()[0], [ca.weight_fc1, ca.weight_fc2])
            f2 = self.cached_bank("chunk_fc2", lambda: mlp()[1], [ca.weight_fc1, ca.weight_fc2])
        if sa is not None:
            def spatial():
                bank = sa.bank()                                          # [O, n, 2, J, ks, ks]
                o, n, _, j, ks, _ = bank.shape
                w = bank.permute(2, 3, 0, 1, 4, 5).reshape(2, j, o * n, ks, ks)
                # the channel MEAN statistic is fed as a channel SUM: fold 1/C into its filters
                return torch.cat([w[:1] / self.in_channels, w[1:]])
            wsp = self.cached_bank("chunk_sp", spatial, [sa.weight])
        return kr, f1, f2, wsp

    def _attentive(self, x: torch.Tensor, x5: torch.Tensor) -> torch.Tensor:
        """``x`` the layer input, ``x5`` the same as ``[B, C, J, H, W]``."""
        plain = self.conv_fast(x)                                         # s * sum_{c,j} Y
        kr, f1, f2, wsp = self._chunk_banks()
        sa = self.spatial_attention
        b, c, j = x5.shape[:3]
        n, o = self.group.order, self.out_channels
        out_hw = tuple(plain.shape[-2:])
        plan = kernel.chunk_plan(b, o, n, c * j * n * out_hw[0] * out_hw[1],
                                 int(self.max_chunk_elements))
        needs_grad = grad_wanted(x5, *self.parameters())
        sp_padding, sp_dilation = (sa.padding, sa.dilation) if sa is not None else (0, 1)
        if wsp is not None:
            wsp, sp_padding = kernel.crop_spatial(wsp, sp_padding, sp_dilation, out_hw)
        geo = kernel.Geometry(self.kernel_size, self.stride, self.padding, self.dilation,
                              sp_padding, sp_dilation, out_hw)
        att = kernel.attention_term(x5.transpose(1, 2), kr, f1, f2, wsp, geo, plan, needs_grad,
                                    self.full_alpha_backend)
        return plain - self.scale * att.unflatten(1, (o, n))

    def forward_fast(self, x):
        if not self.has_attention():
            return self.conv_fast(x)
        if fx_tracing():
            raise torch.fx.proxy.TraceError(
                f"{type(self).__name__} (full alpha attention) cannot be traced symbolically: it "
                "computes its attention in a loop over chunks of samples and output channels, "
                "whose number depends on the batch size, through custom autograd functions. "
                "Keep it a leaf module: agcnn_zoo.fx.symbolic_trace(model), or pass "
                "leaf_modules=agcnn_zoo.fx.LEAF_MODULES to torch.fx.Tracer / torchvision's "
                "create_feature_extractor (timm's feature extraction does this once agcnn_zoo "
                "is imported)")
        x5 = x.unsqueeze(2) if self.lifting else x
        return self._attentive(x, x5)

    def forward_reference(self, x):
        return ref.att_conv(self, x.unsqueeze(2) if self.lifting else x)

    def export(self) -> nn.Module:
        if self.has_attention():
            raise ExportError(
                f"{type(self).__name__} applies full alpha attention to the un-summed responses "
                "of every input channel and group element; no plain convolution computes that, "
                "so models with full alpha attention (a_*, ach_*, asp_*) cannot be exported "
                "(export the af_* variant, or run the model itself)")
        return self.export_conv()


class AttLiftingConv(FullAlphaConv, LiftingConv):
    """Full-alpha attentive lifting convolution (``AttConvRnG``); no scale factor."""

    lifting = True

    def __init__(self, in_channels, out_channels, kernel_size, group="p4", channel_attention=None,
                 spatial_attention=None, stride=1, padding=0, dilation=1):
        LiftingConv.__init__(self, in_channels, out_channels, kernel_size, group, stride, padding,
                             dilation)
        self.scale = 1.0
        self._init_attention(channel_attention, spatial_attention)


class AttGroupConv(FullAlphaConv, GroupConv):
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
