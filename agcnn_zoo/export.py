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

import torch
from torch import nn

from .io.files import atomic_write_bytes
from .nn.base import ExportError, Layer
from .nn.exported import (ChannelMLPAttention, FeatureAttentiveConv, Gate, GroupPlaneConv,
                          PlaneConv, StatsSpatialAttention)
from .nn.filter_banks import CachedBanks

__all__ = ["export", "to_onnx", "ExportError", "PlaneConv", "GroupPlaneConv", "FeatureAttentiveConv",
           "ChannelMLPAttention", "StatsSpatialAttention", "Gate"]


def _replace_children(module: nn.Module) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, Layer):
            setattr(module, name, child.export())      # the layer knows its plain form
        elif isinstance(child, CachedBanks):
            raise ExportError(f"no exporter for {type(child).__name__} at {name!r}: make it an "
                              "agcnn_zoo.nn.Layer with an export() method")
        else:
            _replace_children(child)


def export(model: nn.Module) -> nn.Module:
    """A deployment copy of ``model`` (eval mode) built from plain convolutions; see the module
    docstring. Raises ``ExportError`` (a ValueError) for models with full alpha attention."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"export expects an nn.Module, got {type(model).__name__}")
    exported = copy.deepcopy(model).eval()
    if isinstance(exported, Layer):                # a bare layer
        return exported.export().eval()
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
