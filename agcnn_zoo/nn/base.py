"""The layer contract: what every layer of ``agcnn_zoo.nn`` promises.

* ``forward(x)`` validates the input (``check_input``) and then runs ``forward_fast(x)`` or,
  inside ``with reference_path():``, ``forward_reference(x)``. That choice is made HERE and
  nowhere else (``dispatch``), so a new fast path cannot forget it: a layer only supplies the
  two formulations. The fast-vs-reference tests rely on this (a forgotten check would make
  them compare the fast path with itself), and ``tests/test_layer_contract.py`` runs every
  layer kind under ``reference_path()`` with every fast formulation made to raise.
* ``export()`` returns the layer's deployment form built from plain PyTorch modules (see
  ``agcnn_zoo.export``), or raises ``ExportError`` saying why there is none.
* ``check_equivariance(x)`` measures ``max |f(g.x) - g.f(x)|`` for every element of the
  layer's group (the public ``agcnn_zoo.check_equivariance`` with the layer's own group).
* ``param_axes()`` says, for each parameter the layer holds itself, which axis indexes group
  elements (relative, as in a group filter) and whether its last two axes are a filter's
  plane; ``orientation.py`` uses it to move a network into the transposed image frame.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import nn

from ..equivariance import check_equivariance
from . import reference as _reference
from .tracing import fx_tracing

__all__ = ["Layer", "ExportError", "dispatch", "fast_path_allowed", "grad_wanted", "FX", "JIT",
           "COMPILE"]

#: the recorders a run-time shortcut can be hidden from: torch.fx symbolic tracing, torch.jit
#: tracing, torch.compile (and torch.export)
FX, JIT, COMPILE = "fx", "jit", "compile"


class ExportError(ValueError):
    """The model holds a layer that has no plain-convolution equivalent (full alpha attention)."""


def dispatch(fast: Callable, reference: Callable, *args, **kwargs):
    """The one fast/reference switch: ``reference(*args)`` inside ``reference_path()``, else
    ``fast(*args)``. Layers reach it through ``Layer.forward``; functional forms (pooling) call
    it directly."""
    return (reference if _reference.enabled() else fast)(*args, **kwargs)


def grad_wanted(*tensors: torch.Tensor) -> bool:
    """Whether autograd records this call for one of ``tensors`` (grad mode on and one of them
    requires a gradient)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def fast_path_allowed(x: Optional[torch.Tensor] = None, *, training: bool = False,
                      cpu_only: bool = False, no_grad_mode: bool = False,
                      no_grad_for: Sequence[torch.Tensor] = (),
                      unless: Sequence[str] = (FX, JIT, COMPILE)) -> bool:
    """The one test of whether a run-time shortcut (a memory layout, a cached filter bank, an
    in-place op, a hand-written kernel) may replace the plain operations on this call. Each
    keyword names what the shortcut depends on; it is refused
    ``training``: in training mode (pass the module's ``training`` for eval-only shortcuts);
    ``unless``: while one of these recorders (``FX``, ``JIT``, ``COMPILE``) records the call: a
    symbolic trace sees proxies, and a recorded run-time branch would be frozen into the graph;
    ``cpu_only``: when ``x`` is not on the CPU;
    ``no_grad_mode``: whenever grad mode is on; ``no_grad_for``: when autograd records the call
    for one of these tensors.
    Which path a layer runs at all (fast or reference) is ``dispatch``'s choice, not this."""
    if training:
        return False
    if (FX in unless and fx_tracing()) or (JIT in unless and torch.jit.is_tracing()) or \
            (COMPILE in unless and torch.compiler.is_compiling()):
        return False
    if cpu_only and x.device.type != "cpu":
        return False
    if no_grad_mode and torch.is_grad_enabled():
        return False
    return not (no_grad_for and grad_wanted(*no_grad_for))


class Layer(nn.Module):
    """Base class of the zoo's layers (no parameters of its own: state dicts are unchanged).

    Subclasses define ``forward_fast`` and ``forward_reference`` (same signature, same result
    to float rounding), optionally ``check_input`` and ``export``. They must not override
    ``forward``. Put ``Layer`` first among the bases when mixing with a torch module
    (``class GroupBatchNorm(Layer, nn.BatchNorm3d)``) so that this ``forward`` wins, and call
    the torch module's forward by its class name (``nn.BatchNorm3d.forward(self, x)``), not
    ``super().forward``, which would come back here.
    """

    #: the symmetry group the layer is equivariant to (a ``groups.Group``), None if it has none
    group = None

    def forward(self, x):
        if not fx_tracing():        # a symbolic trace has no shapes to check
            self.check_input(x)
        return dispatch(self.forward_fast, self.forward_reference, x)

    def check_input(self, x) -> None:
        """Raise a ValueError that says the expected shape; default: accept anything."""

    def forward_fast(self, x):
        raise NotImplementedError(f"{type(self).__name__} must define forward_fast(x)")

    def forward_reference(self, x):
        raise NotImplementedError(
            f"{type(self).__name__} must define forward_reference(x): the readable formulation "
            "the fast path is tested against (see agcnn_zoo/nn/reference.py)")

    def param_axes(self) -> dict:
        """``{parameter name: (group axis or None, whether the last two axes are a plane)}``
        for the parameters this module holds itself (not its children's); none by default."""
        return {}

    def export(self) -> nn.Module:
        """The deployment form of this layer (plain PyTorch modules, same eval output)."""
        raise ExportError(f"{type(self).__name__} has no plain-module form: define export() "
                          "returning one (see agcnn_zoo/nn/exported.py)")

    def check_equivariance(self, x, group=None, **kwargs):
        """``[(i, max |f(g_i . x) - g_i . f(x)|)]`` for the layer's group (or ``group``);
        keyword arguments as ``agcnn_zoo.check_equivariance``. Call ``.eval()`` first."""
        group = self.group if group is None else group
        if group is None:
            raise ValueError(f"{type(self).__name__} has no group; pass group='p4' or 'p4m'")
        return check_equivariance(self, x, group=group, **kwargs)
