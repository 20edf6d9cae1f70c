"""torch.fx symbolic tracing of zoo models.

``symbolic_trace(model)`` traces the model's structure (stages, batch norms, ReLUs, pooling,
residual sums, dense concatenations, heads) and keeps the zoo's convolutions and dropout whole,
as leaf modules (``LEAF_MODULES``). The graph then runs each of them exactly as the model does,
so it reproduces the model's outputs bit for bit. timm's fx feature extraction gets the same
leaves (``timm_compat`` registers them when timm is imported).

Layer by layer:

* full alpha convolutions (``AttLiftingConv`` / ``AttGroupConv`` with attention: ``a_*``,
  ``ach_*``, ``asp_*``) cannot be traced through: they compute the attention in a loop over
  chunks of samples and output channels whose number depends on the batch size, through custom
  autograd functions. Traced through, they raise ``torch.fx.proxy.TraceError`` saying so.
* plain lifting / group convolutions, alpha_F and co-attentive convolutions (and their
  attention modules) can be traced through (``torch.fx.symbolic_trace(model)`` works on every
  model without full alpha), but the graph then rebuilds the filter bank on every call and
  convolves in NCHW, where the model caches the bank and uses NHWC on CPU: the same outputs to
  float rounding, not bit for bit, and slower. Hence leaves by default.
* ``Dropout``: its training mask is drawn on CPU from 64-bit integers; traced through it is
  ``nn.Dropout`` (same distribution, another random stream). A leaf keeps the model's stream.
* batch norm, pooling, activations and the models' own code trace through.
"""
from __future__ import annotations

from typing import Sequence, Type

import torch
from torch import nn

from .nn import Dropout, GroupConv, LiftingConv

__all__ = ["LEAF_MODULES", "ZooTracer", "symbolic_trace"]

#: module types kept whole in a trace (subclasses included: every zoo convolution kind)
LEAF_MODULES: tuple = (LiftingConv, GroupConv, Dropout)


class ZooTracer(torch.fx.Tracer):
    """``torch.fx.Tracer`` that keeps ``leaf_modules`` (default ``LEAF_MODULES``) whole."""

    def __init__(self, leaf_modules: Sequence[Type[nn.Module]] = LEAF_MODULES, **kwargs):
        super().__init__(**kwargs)
        self.zoo_leaf_modules = tuple(leaf_modules)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, self.zoo_leaf_modules) or super().is_leaf_module(m, module_qualified_name)


def symbolic_trace(model: nn.Module, leaf_modules: Sequence[Type[nn.Module]] = LEAF_MODULES
                   ) -> torch.fx.GraphModule:
    """A ``GraphModule`` of ``model`` traced with ``ZooTracer`` (its ``forward``)."""
    tracer = ZooTracer(leaf_modules)
    graph = tracer.trace(model)
    return torch.fx.GraphModule(tracer.root, graph, type(model).__name__)
