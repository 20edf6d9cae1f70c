"""The no-grad chunk function: op by op (``"eager"``) or through ``torch.compile``
(``"compiled"``)."""
from __future__ import annotations

from typing import Callable, List

import torch

from .forward import _alpha_chunk

BACKENDS = ("eager", "compiled")
_compiled: List[Callable] = []
#: distinct chunk shapes one process may compile (7 layers x 2 chunk shapes per model, several
#: models in one process); past dynamo's default limit (8) it would silently run eagerly
COMPILED_SHAPES_LIMIT = 256


def chunk_forward(backend: str) -> Callable:
    """The no-grad chunk function of ``backend``: ``"eager"`` (``_alpha_chunk`` op by op) or
    ``"compiled"`` (the same through ``torch.compile``, which fuses the chunk's element-wise
    passes and reductions over the cache-resident responses; built on first use)."""
    if backend == "eager":
        return _alpha_chunk
    if backend != "compiled":
        raise ValueError(f"unknown full-alpha backend {backend!r}; choose one of {BACKENDS}")
    if not _compiled:
        _compiled.append(_compile(_alpha_chunk))
    return _compiled[0]


def _compile(fn):
    compiled = torch.compile(fn, dynamic=False, fullgraph=True)

    def run(*args):
        try:
            with torch._dynamo.config.patch(recompile_limit=COMPILED_SHAPES_LIMIT):
                return compiled(*args)
        except Exception as exc:  # inductor's own errors (no C++ compiler, ...) are opaque
            if type(exc).__module__.startswith("torch._"):
                first = str(exc).splitlines()[0] if str(exc) else ""
                raise RuntimeError(
                    f"torch.compile of the full-alpha kernel failed ({type(exc).__name__}: "
                    f"{first}); on CPU it needs a C++ compiler (gcc or clang). Use the eager "
                    "kernel instead: agcnn_zoo.nn.set_full_alpha_backend(model, 'eager')") from exc
            raise
    return run
