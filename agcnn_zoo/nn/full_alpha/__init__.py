"""The full-alpha kernel: the attention term ``sum_{c,j} beta alpha Y`` of an attentive
convolution, computed exactly, in chunks, with a hand-written backward (functional: no
parameters, no modules; ``attentive_conv.py`` holds the layers).

How the fast path computes it (exactly, in a different order):

* ``sum_{c,j} Y`` is the plain lifting / group convolution (one dense conv2d);
  ``y = s * (conv(x) - sum_j beta_j SA_j)`` with ``SA_j = sum_c A_{c,j}``.
* ``Y`` is only needed for the two NON-linear statistics (spatial max, channel max of ``A``).
  It is produced per chunk by one batched GEMM of the unfolded input ``[k*k, X'Y']`` with the
  bank ``[|H| O, k*k]`` of every plane ``(c, j)``; the linear statistics come from GEMMs on the
  unfolded input: ``mean_xy Y = K . mean_xy(unfold x)`` and, without spatial attention,
  ``sum_{c,j} A`` is one GEMM with alpha-scaled filters (no response tensor in it).
* The spatial attention conv (2 statistics -> 1 map for every (o, i, j)) runs as ONE depthwise
  convolution over the ``2 |H| O J`` statistic maps followed by a sum of the two halves (grouped
  2->1 convolutions are several times slower on CPU); the 1/C of the channel mean is folded
  into its filters.
* The layout ``[b, j, c, (o, i), X'Y']`` makes the spatial reductions contiguous and the channel
  reductions vectorised.

Memory bound. Work is split into chunks of whole samples and output channels such that one
chunk's response tensor ``Y`` has at most ``max_chunk_elements`` entries (or, if a single
(sample, output channel) slice is larger, exactly one such slice: ``C J |H| X' Y'`` entries).
Without gradients a chunk holds ``Y`` (alpha is applied in place), its channel reductions
(``2/C`` of it) and the unfolded input (``k^2 C J X'Y'`` per sample), so the live extra memory
is below ``(1 + 2/C) E + k^2 C J X'Y' b_c + O(E / X'Y')`` floats for ``E`` = chunk elements,
whatever the batch size. With gradients each chunk runs under activation checkpointing: in
forward nothing of a chunk is kept but its inputs (views), its ``[b_c, O_c |H|, X', Y']``
output and, for alpha_Ch, its ``MaxRecord`` (three ``[b_c, J, C, Q_c]`` tensors and the masks
of tied rows); in backward one chunk at a time is recomputed and differentiated, holding at
most about ``6 E`` floats (``Y``, ``A`` and their gradients, masks of the max reductions), and its
gradients are added into the layer's input and bank gradients. The layer output, the plain
convolution, its saved input and the input gradient are the only whole-batch tensors.
The default ``E`` (``chunk_budget.default_chunk_elements()``, from the largest CPU cache
divided by those 6 floats; 2^20 for a 32 MiB L3) keeps a chunk in the CPU caches; on GPUs set
``layer.max_chunk_elements`` (or ``set_max_chunk_elements``) to a larger budget, e.g. 2^26.

Without spatial attention (alpha_Ch) the spatial max of the channel attention is located
once, in the training forward: a ``MaxRecord`` per chunk (value, first position, tie count,
and the masks of the rows with ties) lets the backward route its gradient by gathers and
scatters of the unfolded input, so that it recomputes no response at all. Its backward then
holds only the unfolded input, its gradient and small tensors, so it joins runs of forward
chunks (up to ``RECORDED_BACKWARD_MERGE``, within the same ``6 E`` floats) into one: fewer,
larger GEMMs. The tied rows are kept by their layer coordinates for that. Layers with spatial
attention recompute the responses in backward anyway (for the channel max) and use dense
masks there, which measured cheaper than recording.

Backends. Without gradients the chunk function runs op by op (``"eager"``) or through
``torch.compile`` (``"compiled"``, :func:`chunk_forward`): inductor fuses a chunk's
element-wise passes and reductions over the cache-resident ``Y`` (statistics, attention,
weighted sum) into a few loops and drops the per-op overhead. Training always runs eagerly:
compiling the training chunks as well measured no faster (ach_p4cnn, batch 128: 179 vs
230 img/s; a_p4cnn 128 vs 125) and took minutes to compile.
"""
from __future__ import annotations

import torch

from .backends import BACKENDS, COMPILED_SHAPES_LIMIT, chunk_forward
from .backward import _AlphaAttention
from .forward import Geometry, MaxRecord
from .plan import (RECORDED_BACKWARD_MERGE, _run_chunks, chunk_plan, crop_spatial, merge_chunks,
                   run_recomputed_chunk)

__all__ = ["BACKENDS", "COMPILED_SHAPES_LIMIT", "Geometry", "MaxRecord", "RECORDED_BACKWARD_MERGE",
           "attention_term", "chunk_forward", "chunk_plan", "crop_spatial", "merge_chunks",
           "run_recomputed_chunk"]


def attention_term(x, kr, f1, f2, wsp, geo: Geometry, plan, needs_grad: bool,
                   backend: str = "eager") -> torch.Tensor:
    """``R = sum_{c,j} beta alpha Y`` of a whole layer, ``[B, Q, X', Y']``, chunk by chunk.

    x ``[B, J, C, H, W]`` (input group axis first); kr ``[J, C, Q, k*k]``; f1 / f2 the channel
    MLP banks ``[J, Q, h, C]`` / ``[J, Q, C, h]`` or None; wsp ``[2, J, Q, ks, ks]`` (mean
    filters divided by C) or None; ``plan`` from ``chunk_plan``. ``needs_grad``: differentiable
    (each chunk recomputed in backward), else computed in place without autograd.
    ``backend``: the no-grad chunk function, ``"eager"`` or ``"compiled"`` (see
    :func:`chunk_forward`); training always runs eagerly."""
    forward = chunk_forward(backend)
    if needs_grad:
        return _AlphaAttention.apply(x, kr, f1, f2, wsp, geo, plan)
    return _run_chunks(x, kr, f1, f2, wsp, geo, plan, lambda *args: forward(*args, geo, True))
