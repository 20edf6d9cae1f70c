"""Export a zoo model to a deployment network of plain PyTorch modules.

``export(model)`` returns an eval-mode deep copy in which every lifting / group convolution is
replaced by an ``nn.Conv2d`` holding its expanded filter bank (all ``|H|`` transformed copies
of each filter, the output factor folded in), wrapped only to move between the group layout
``[B, C, |H|, X, Y]`` and the plane layout ``[B, C |H|, X, Y]`` (a view); CPU inference
convolves in channels_last, like the source layer. Batch norms stay ``GroupBatchNorm`` (an
``nn.BatchNorm3d``) / ``nn.BatchNorm2d``, dropout becomes ``nn.Dropout``; pooling and
activations are the model's own tensor operations. The result computes the same logits as the
model in eval mode, contains no group machinery (no filter transforms, no caches) and traces
cleanly with ``torch.jit.trace`` / ``torch.export`` / ONNX.

alpha_F models (``af_*``, ``coa_*``) are supported: their attention modules are exported too
(the p4/p4m channel-attention MLPs become two bias-free ``nn.Linear`` with the permuted weight
matrices, the spatial / co-attention filters become ``nn.Conv2d``). Full alpha attention
(``a_*``, ``ach_*``, ``asp_*``) attends to the responses of every (input channel, group
element) before they are summed, which no plain convolution computes: exporting such a model
raises ``ValueError`` (an attentive layer whose attention modules are both None is exported as
the convolution it then is).

The exported model is a snapshot: later changes to the source model's weights do not reach it.

Tracing: ``torch.jit.trace(export(model), x)`` records the same operations in either grad mode
(layout and pooling shortcuts are switched off while tracing) and the traced module reproduces
the logits. Trace under ``torch.no_grad()`` (or pass ``check_trace=False``): in the default grad
mode tracing works, but its sanity check (``check_trace``, which re-traces under no_grad)
reports a spurious difference, a renamed TorchScript class type of the last convolution.

ONNX: ``to_onnx(model, path)`` (``pip install 'agcnn-zoo[onnx]'``: onnx, onnxruntime to run
it) writes the exported network with a dynamic batch axis; ``onnxruntime`` reproduces the
logits to float32 rounding.
"""
from __future__ import annotations

import copy
from typing import Callable, Dict, Type

import torch
import torch.nn.functional as F
from torch import nn

from . import nn as gnn
from .nn.attentive_conv import _FullAlphaConv, _modulate
from .nn.cache import CachedBanks
from .nn.conv import conv_input, lifting_bank

__all__ = ["export", "to_onnx", "ExportError", "PlaneConv", "GroupPlaneConv", "FeatureAttentiveConv",
           "ChannelMLPAttention", "StatsSpatialAttention", "Gate"]


class ExportError(ValueError):
    """The model holds a layer that has no plain-convolution equivalent (full alpha attention)."""


# ----------------------------------------------------------------------------- exported layers
def _conv2d(weight: torch.Tensor, layer) -> nn.Conv2d:
    out_c, in_c, k = weight.shape[0], weight.shape[1], weight.shape[-1]
    conv = nn.Conv2d(in_c, out_c, k, stride=layer.stride, padding=layer.padding,
                     dilation=layer.dilation, bias=False)
    with torch.no_grad():
        conv.weight.copy_(weight)
    return conv.to(weight.device)


class PlaneConv(nn.Module):
    """A lifting convolution as ``nn.Conv2d``: ``[B, C, X, Y] -> [B, O, |H|, X', Y']``."""

    def __init__(self, conv: nn.Conv2d, group_order: int, nhwc_min_channels: int = 1):
        super().__init__()
        self.conv = conv
        self.group_order = group_order
        self.nhwc_min_channels = nhwc_min_channels

    def forward(self, x):
        # the same memory layout as the source layer (NHWC for CPU inference), hence the same
        # oneDNN kernels and the same rounding
        x = conv_input(x, self.training, self.nhwc_min_channels)
        return self.conv(x).unflatten(1, (-1, self.group_order))


class GroupPlaneConv(PlaneConv):
    """A group convolution as ``nn.Conv2d`` on ``[B, C |H|, X, Y]``: ``[B, C, |H|, X, Y] -> [B, O, |H|, X', Y']``."""

    def forward(self, x):
        return super().forward(x.flatten(1, 2))


class FeatureAttentiveConv(nn.Module):
    """alpha_F: ``conv(x - beta (alpha x))`` with exported attention modules."""

    def __init__(self, conv: PlaneConv, channel_attention, spatial_attention):
        super().__init__()
        self.conv = conv
        self.channel_attention = channel_attention
        self.spatial_attention = spatial_attention

    def forward(self, x):
        return self.conv(_modulate(x, self.channel_attention, self.spatial_attention))


class ChannelMLPAttention(nn.Module):
    """p4/p4m channel attention on group maps: ``sigmoid(fc2(relu(fc1(s))))`` summed over the
    spatial mean and max ``s`` of every (channel, group element): ``[B, C, n, 1, 1]``."""

    def __init__(self, fc1: nn.Linear, fc2: nn.Linear, group_order: int):
        super().__init__()
        self.fc1, self.fc2, self.group_order = fc1, fc2, group_order

    def forward(self, x):
        s = torch.stack([x.mean(dim=(-2, -1)), x.amax(dim=(-2, -1))]).flatten(2)   # [2, B, C n]
        z = self.fc2(F.relu(self.fc1(s)))
        return torch.sigmoid(z[0] + z[1]).unflatten(1, (-1, self.group_order))[..., None, None]


class StatsSpatialAttention(nn.Module):
    """Spatial attention from the channel mean and max maps: ``sigmoid(conv([mean, max]))``,
    with a max over the group axis for the plane version."""

    def __init__(self, conv: PlaneConv, pool_group_axis: bool):
        super().__init__()
        self.conv, self.pool_group_axis = conv, pool_group_axis

    def forward(self, x):
        y = self.conv(torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], 1))
        return torch.sigmoid(y.amax(dim=2) if self.pool_group_axis else y)


class Gate(nn.Module):
    """Co-attention: ``sigmoid(conv(x))``, with a max over the group axis for the plane version."""

    def __init__(self, conv: PlaneConv, pool_group_axis: bool):
        super().__init__()
        self.conv, self.pool_group_axis = conv, pool_group_axis

    def forward(self, x):
        y = self.conv(x)
        return torch.sigmoid(y.amax(dim=2) if self.pool_group_axis else y)


# --------------------------------------------------------------------------------- converters
@torch.no_grad()
def _lifting(layer: gnn.LiftingConv) -> PlaneConv:
    bank = lifting_bank(layer.weight, layer.group) * getattr(layer, "scale", 1.0)
    return PlaneConv(_conv2d(bank, layer), layer.group.order, layer.nhwc_min_channels)


@torch.no_grad()
def _group(layer: gnn.GroupConv) -> GroupPlaneConv:
    o, c, n, k = layer.out_channels, layer.in_channels, layer.group.order, layer.kernel_size
    bank = gnn.conv.group_bank(layer.weight, layer.group).reshape(o * n, c * n, k, k) * layer.scale
    return GroupPlaneConv(_conv2d(bank, layer), n, layer.nhwc_min_channels)


def _plain_conv(layer):
    return _lifting(layer) if isinstance(layer, gnn.LiftingConv) else _group(layer)


def _feature_attentive(layer):
    return FeatureAttentiveConv(_plain_conv(layer), _convert(layer.channel_attention),
                                _convert(layer.spatial_attention))


def _full_alpha(layer):
    if layer.channel_attention is not None or layer.spatial_attention is not None:
        raise ExportError(
            f"{type(layer).__name__} applies full alpha attention to the un-summed responses of "
            "every input channel and group element; no plain convolution computes that, so "
            "models with full alpha attention (a_*, ach_*, asp_*) cannot be exported")
    return _plain_conv(layer)


@torch.no_grad()
def _group_channel_attention(mod: gnn.GroupChannelAttention) -> ChannelMLPAttention:
    m1, m2 = mod._matrix(mod.weight_fc1), mod._matrix(mod.weight_fc2)
    fc1 = nn.Linear(m1.shape[1], m1.shape[0], bias=False).to(m1.device)
    fc2 = nn.Linear(m2.shape[1], m2.shape[0], bias=False).to(m2.device)
    fc1.weight.copy_(m1)
    fc2.weight.copy_(m2)
    return ChannelMLPAttention(fc1, fc2, mod.group.order)


def _feature_channel_attention(mod: gnn.FeatureChannelAttention) -> nn.Module:
    return copy.deepcopy(mod)  # plain linear algebra already


def _batch_norm(bn: gnn.GroupBatchNorm) -> gnn.GroupBatchNorm:
    # kept as is: a BatchNorm3d whose inference is one per-channel affine map on the
    # [B, C n, X, Y] view (the same arithmetic and memory layout as the source model)
    return copy.deepcopy(bn)


#: layer type -> converter; the most derived registered type of a module wins
CONVERTERS: Dict[Type[nn.Module], Callable[[nn.Module], nn.Module]] = {
    gnn.LiftingConv: _lifting,
    gnn.GroupConv: _group,
    gnn.FAttLiftingConv: _feature_attentive,
    gnn.FAttGroupConv: _feature_attentive,
    _FullAlphaConv: _full_alpha,
    gnn.FeatureChannelAttention: _feature_channel_attention,
    gnn.GroupChannelAttention: _group_channel_attention,
    gnn.FeatureSpatialAttention: lambda m: StatsSpatialAttention(_lifting(m), True),
    gnn.GroupSpatialAttention: lambda m: StatsSpatialAttention(_group(m), False),
    gnn.CoAttention: lambda m: Gate(_lifting(m), True),
    gnn.GroupCoAttention: lambda m: Gate(_group(m), False),
    gnn.GroupBatchNorm: _batch_norm,
    gnn.Dropout: lambda m: nn.Dropout(m.p, m.inplace),
}


def _converter(mod: nn.Module):
    for cls in type(mod).__mro__:
        if cls in CONVERTERS:
            return CONVERTERS[cls]
    return None


def _convert(mod):
    if mod is None:
        return None
    fn = _converter(mod)
    if fn is None:
        raise ExportError(f"no exporter for {type(mod).__name__}")
    return fn(mod)


def _replace_children(module: nn.Module) -> None:
    for name, child in list(module.named_children()):
        fn = _converter(child)
        if fn is not None:
            setattr(module, name, fn(child))
        elif isinstance(child, CachedBanks):
            raise ExportError(f"no exporter for {type(child).__name__} at {name!r}")
        else:
            _replace_children(child)


def export(model: nn.Module) -> nn.Module:
    """A deployment copy of ``model`` (eval mode) built from plain convolutions; see the module
    docstring. Raises ``ExportError`` (a ValueError) for models with full alpha attention."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"export expects an nn.Module, got {type(model).__name__}")
    for name, mod in model.named_modules():
        if isinstance(mod, _FullAlphaConv):
            _full_alpha(mod)                       # raises early, before any copying
    exported = copy.deepcopy(model).eval()
    fn = _converter(exported)
    if fn is not None:                             # a bare layer
        return fn(exported).eval()
    _replace_children(exported)
    return exported.eval()


def to_onnx(model: nn.Module, path, input_size=None, opset: int = 17, dynamic_batch: bool = True):
    """Write ``export(model)`` (or ``model`` itself if it is already exported) to the ONNX file
    ``path``: input ``"input"`` ``[B, C, H, W]`` (the model's normalised input), output
    ``"logits"`` ``[B, num_classes]``, the batch axis dynamic unless ``dynamic_batch=False``.
    ``input_size`` (C, H, W) defaults to the model's ``pretrained_cfg``. Raises
    ``ExportError`` for full alpha models (see ``export``). Returns the path."""
    from pathlib import Path
    try:
        import onnx  # noqa: F401  (the exporter needs it)
    except ImportError as e:
        raise ImportError("ONNX export needs the onnx package: pip install 'agcnn-zoo[onnx]'") from e
    exported = model if not any(isinstance(m, CachedBanks) for m in model.modules()) else export(model)
    exported = exported.eval()
    if input_size is None:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        if "input_size" not in cfg:
            raise ValueError("pass input_size=(C, H, W): the model has no pretrained_cfg")
        input_size = cfg["input_size"]
    ref = next(iter(exported.parameters()), None)
    x = torch.zeros(2, *input_size, dtype=ref.dtype if ref is not None else torch.float32,
                    device=ref.device if ref is not None else "cpu")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
    import io
    import warnings
    from .io.files import atomic_write_bytes
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # the TorchScript exporter (kept: the dynamo one needs onnxscript and changes the graph)
        # announces its own deprecation; and tracing turns the input-shape checks into
        # constants, which is what a fixed C x H x W network wants (batch stays dynamic)
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based "
                                "ONNX export", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="The feature will be removed",
                                category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(exported, (x,), buffer, input_names=["input"],
                          output_names=["logits"], dynamic_axes=axes, opset_version=opset,
                          dynamo=False)
    atomic_write_bytes(path, buffer.getvalue(), what="ONNX file")  # nothing half-written
    return path
