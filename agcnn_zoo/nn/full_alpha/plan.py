"""Which chunks a layer runs (whole samples x output slots within a budget of response
entries), how their inputs are cut and their outputs joined, and the hook that runs a chunk
that will be recomputed in backward."""
from __future__ import annotations

from typing import List, Tuple

import torch

from .forward import Geometry

def _chunk_args(x, kr, f1, f2, wsp, rows: slice, qs: slice):
    return (x[rows], kr[:, :, qs], None if f1 is None else f1[:, qs],
            None if f2 is None else f2[:, qs], None if wsp is None else wsp[:, :, qs])


def _run_chunks(x, kr, f1, f2, wsp, geo: Geometry, plan, chunk_fn) -> torch.Tensor:
    """``chunk_fn(*chunk inputs)`` for every (samples, output slots) chunk of ``plan``, written
    into one ``[B, O n, X', Y']`` tensor."""
    out = x.new_empty(x.shape[0], kr.shape[2], *geo.out_hw)
    for rows, qs in plan:
        out[rows, qs] = chunk_fn(*_chunk_args(x, kr, f1, f2, wsp, rows, qs))
    return out


def run_recomputed_chunk(fn, *args):
    """Runs the forward of one chunk of a split full-alpha layer that needs gradients
    (``_AlphaAttention`` keeps only the layer's inputs and recomputes each chunk in backward).
    A module-level hook (called as ``plan.run_recomputed_chunk``) so that tests can count those
    chunks (not ``torch.utils.checkpoint``:
    the recomputation is ``_AlphaAttention.backward``'s own)."""
    return fn(*args)


def crop_spatial(wsp: torch.Tensor, padding: int, dilation: int, out_hw):
    """Drop the spatial-attention taps that only ever see zero padding (maps smaller than the
    filter, e.g. 1x1 maps of a 1x1 convolution): same result, far less work."""
    ks = wsp.shape[-1]
    r = ks // 2
    if padding != dilation * r or ks % 2 == 0:
        return wsp, padding
    keep = [min(r, (size - 1) // dilation) for size in out_hw]
    if keep == [r, r]:
        return wsp, padding
    wsp = wsp[..., r - keep[0]: r + keep[0] + 1, r - keep[1]: r + keep[1] + 1]
    return wsp, (dilation * keep[0], dilation * keep[1])


def chunk_plan(batch: int, out_channels: int, group_order: int, per_sample_channel: int,
               budget: int) -> List[Tuple[slice, slice]]:
    """Chunks ``(samples, output slots)`` such that one chunk's response tensor has at most
    ``budget`` entries (``per_sample_channel``: the responses of one sample and one output
    channel), or exactly one (sample, output channel) slice if that alone is larger."""
    b, o, n = batch, out_channels, group_order
    if o * per_sample_channel <= budget:
        bstep, ostep = max(1, min(b, budget // (o * per_sample_channel))), o
    else:
        bstep, ostep = 1, max(1, budget // per_sample_channel)
    return [(slice(b0, min(b, b0 + bstep)), slice(o0 * n, min(o, o0 + ostep) * n))
            for b0 in range(0, b, bstep) for o0 in range(0, o, ostep)]


#: how many consecutive forward chunks (same output slots) one backward chunk of alpha_Ch
#: takes (its backward holds no responses, so larger chunks cost no cache). a_Ch-P4CNN at
#: batch 128 (2^20 budget, one sample per forward chunk), backward of the 24x24 layer for
#: 1 / 2 / 4 / 8 / 16: 163 / 146 / 102 / 86 / 92 ms; the 10x10 layer 44 / 32 / 27 / 31 / 29
RECORDED_BACKWARD_MERGE = 8


def merge_chunks(plan, most: int) -> List[Tuple[slice, slice]]:
    """``plan`` with runs of up to ``most`` chunks of consecutive samples and the same output
    slots joined into one."""
    merged: List[Tuple[slice, slice]] = []
    run = 0
    for rows, qs in plan:
        if merged and run < most and merged[-1][1] == qs and merged[-1][0].stop == rows.start:
            merged[-1] = (slice(merged[-1][0].start, rows.stop), qs)
            run += 1
        else:
            merged.append((rows, qs))
            run = 1
    return merged
