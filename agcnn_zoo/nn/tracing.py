"""Whether the current call is being traced or compiled rather than run.

Layers choose memory layouts, cached filter banks and shortcuts from run-time state (device,
grad mode, training), and models check their input's values. None of that may happen while a
tracer records the graph: a symbolic trace (torch.fx) sees proxies, not tensors, and a recorded
data-dependent branch would be frozen into the graph.
"""
from __future__ import annotations

import torch

try:  # newer torch tells fx's symbolic tracing apart from torch.export
    from torch.fx._symbolic_trace import is_fx_symbolic_tracing as _fx
except ImportError:  # pragma: no cover - older torch (>= 2.1, the package's lower bound)
    from torch.fx._symbolic_trace import is_fx_tracing as _fx

__all__ = ["fx_tracing", "tracing"]


def fx_tracing() -> bool:
    """True while ``torch.fx`` symbolically traces a module (tensors are proxies)."""
    return bool(_fx())


def tracing() -> bool:
    """True under ``torch.fx`` symbolic tracing, ``torch.jit`` tracing or scripting,
    ``torch.compile`` and ``torch.export`` (which the ONNX exporters use)."""
    return (fx_tracing() or torch.jit.is_tracing() or torch.jit.is_scripting()
            or torch.compiler.is_compiling())
