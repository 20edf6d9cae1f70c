"""Moving a network's weights into the transposed image frame, exactly.

The authors' rot-MNIST files store every digit transposed w.r.t. MNIST, so their checkpoints
(and anything trained on those files) compute ``f(x^T)`` for a digit ``x`` as people hold it.
:func:`transposed_state_dict` gives the weights of the same network computing ``g(x) = f(x^T)``
(:func:`fold_transposition` does it in place), so the published weights take natural digits.

Why it is exact: transposing the plane (T) is a reflection. For a plane filter,
``corr(x^T, w) = corr(x, w^T)^T``; for the group element ``g_i`` a filter is turned by,
``T g_i T = g_{c(i)}`` (``Group.transpose_conjugates``; for p4 ``c(i) = -i``). So every plane
axis of a filter is transposed and every relative group axis is re-indexed by ``c``; batch norms
(per channel), pooling, ReLU and the attention statistics (means and maxima over space or
channels) commute with both, and the final max over the group axis and 1x1 logits do not see
them. Each layer says which axes its parameters have (``Layer.param_axes``); a module holding
parameters it does not describe is refused rather than guessed.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Mapping, Optional, Tuple

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..groups import get_group

__all__ = ["transposed_state_dict", "fold_transposition", "param_axes"]

Axes = Tuple[Optional[int], bool]


def param_axes(module: nn.Module) -> Dict[str, Axes]:
    """``{name: (group axis or None, plane)}`` for the tensors ``module`` holds itself."""
    if isinstance(module, _BatchNorm):  # per channel, shared over the group axis and the plane
        return {n: (None, False) for n in ("weight", "bias", "running_mean", "running_var",
                                           "num_batches_tracked")}
    if isinstance(module, nn.Conv2d):
        return {"weight": (None, True), "bias": (None, False)}
    axes = getattr(module, "param_axes", None)
    return axes() if callable(axes) else {}


def _moved(t: torch.Tensor, axes: Axes, conj: Optional[torch.Tensor]) -> torch.Tensor:
    group_axis, plane = axes
    if plane:
        t = t.transpose(-2, -1)
    if group_axis is not None:
        t = t.index_select(group_axis, conj.to(t.device))
    return t.contiguous()


def transposed_state_dict(model: nn.Module, state: Optional[Mapping[str, torch.Tensor]] = None
                          ) -> "OrderedDict[str, torch.Tensor]":
    """The state dict with which ``model`` computes on ``x`` what it computed with ``state``
    (default: its own) on ``x.transpose(-2, -1)``; keys, shapes and dtypes unchanged."""
    state = model.state_dict() if state is None else state
    group = getattr(model, "group_name", None)
    conj = torch.tensor(get_group(group).transpose_conjugates) if group else None
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for prefix, module in model.named_modules():
        own = [n for n, _ in module.named_parameters(recurse=False)] + \
              [n for n, _ in module.named_buffers(recurse=False) if f"{prefix}.{n}".lstrip(".") in state]
        if not own:
            continue
        axes = param_axes(module)
        unknown = [n for n in own if n not in axes]
        if unknown:
            raise ValueError(f"{type(module).__name__} ({prefix or 'the model'}) holds "
                             f"{', '.join(unknown)} without saying which axes they have: define "
                             f"param_axes() for it (agcnn_zoo/nn/base.py)")
        for name in own:
            key = f"{prefix}.{name}" if prefix else name
            if key in state:
                out[key] = _moved(state[key], axes[name], conj)
    missing = [k for k in state if k not in out]
    if missing:
        raise ValueError(f"state-dict keys outside the model's modules: {', '.join(missing)}")
    return OrderedDict((k, out[k]) for k in state)


@torch.no_grad()
def fold_transposition(model: nn.Module) -> nn.Module:
    """Move ``model`` into the transposed frame in place (see :func:`transposed_state_dict`)."""
    model.load_state_dict(transposed_state_dict(model))
    return model
