"""The forward of one full-alpha chunk: unfolded input, responses, their statistics, channel
and spatial attention, and the ``MaxRecord`` a training forward keeps for alpha_Ch (see the
package docstring for the layout and the chunking)."""
from __future__ import annotations

from typing import NamedTuple, Tuple

import torch
import torch.nn.functional as F

def _mlp_input(mu, mx):
    """The statistics ``[b, J, C, Q]`` as the MLP's batched input ``[J, Q, C, 2b]``."""
    return torch.stack([mu, mx]).permute(2, 4, 3, 0, 1).flatten(3)


def _channel_alpha(mu, mx, f1, f2):
    """alpha ``[b, J, C, Q]`` from the response statistics (same shape) and the MLP banks
    ``f1 [J, Q, h, C]``, ``f2 [J, Q, C, h]``: one MLP per (j, Q) over the input channels."""
    h = torch.relu(torch.matmul(f1, _mlp_input(mu, mx)))                     # [J, Q, h, 2b]
    z = torch.matmul(f2, h).unflatten(3, (2, mu.shape[0]))                   # [J, Q, C, 2, b]
    return torch.sigmoid(z[:, :, :, 0] + z[:, :, :, 1]).permute(3, 0, 2, 1)  # [b, J, C, Q]


class Geometry(NamedTuple):
    k: int
    stride: int
    padding: int
    dilation: int
    sp_padding: object       # int or (int, int) after cropping
    sp_dilation: int
    out_hw: Tuple[int, int]


def _unfold(x: torch.Tensor, geo: Geometry) -> torch.Tensor:
    """``[b, J, C, H, W] -> [b*J*C, k*k, X'*Y']``: the receptive field of every output pixel
    (a strided view copied once; ``F.unfold`` is several times slower on CPU)."""
    b, j, c = x.shape[:3]
    k, (oh, ow) = geo.k, geo.out_hw
    if geo.padding:
        x = F.pad(x, (geo.padding,) * 4)
    span = geo.dilation * (k - 1) + 1
    win = x.unfold(3, span, geo.stride).unfold(4, span, geo.stride)        # [b, J, C, X', Y', s, s]
    if geo.dilation > 1:
        win = win[..., :: geo.dilation, :: geo.dilation]
    return win[:, :, :, :oh, :ow].permute(0, 1, 2, 5, 6, 3, 4).reshape(b * j * c, k * k, oh * ow)


def _responses(x, kr, geo):
    """Unfolded input ``u [b*J*C, kk, L]``, expanded filters ``kb [b*J*C, Q, kk]`` and the
    un-summed responses ``Y = kb @ u`` as ``[b, J, C, Q, L]`` (one batched GEMM)."""
    b, j, c = x.shape[:3]
    q, kk = kr.shape[2], kr.shape[3]
    u = _unfold(x, geo)
    kb = kr.expand(b, j, c, q, kk).reshape(b * j * c, q, kk)
    return u, kb, torch.bmm(kb, u).view(b, j, c, q, -1)


def _spatial_mean(u, kr):
    """Spatial mean of ``Y`` without ``Y``: filters . mean receptive field, ``[b, J, C, Q]``;
    also returns the mean receptive field ``[b, J, C, kk]``."""
    j, c, q, kk = kr.shape
    ubar = u.view(-1, j, c, kk, u.shape[-1]).mean(-1)
    return torch.matmul(kr, ubar.unsqueeze(-1)).squeeze(-1), ubar


def _channel_sum_max(a):
    """Sum and max over the input channels of ``[b, J, C, Q, L]``: two ``[b, J, Q, L]``."""
    if a.shape[2] == 1:
        return a[:, :, 0], a[:, :, 0]
    return a.sum(2), a.amax(2)


def _spatial_pre(stats, wsp, geo):
    """Pre-sigmoid spatial attention from pixel-major statistics ``[b, L, 2, J, Q]``:
    one depthwise conv over the ``2 J Q`` maps, then the sum of the two halves -> ``[b, L, J, Q]``."""
    b, hw, _, j, q = stats.shape
    g = j * q
    ks = tuple(wsp.shape[-2:])
    if ks == (1, 1):      # (cropped to) a pointwise filter: a per-channel scale
        d = stats.view(b, hw, 2 * g) * wsp.reshape(2 * g)
        return (d[..., :g] + d[..., g:]).view(b, hw, j, q)
    d = F.conv2d(_as_channels_last(stats, geo.out_hw), wsp.reshape(2 * g, 1, *ks), None, 1,
                 geo.sp_padding, geo.sp_dilation, groups=2 * g)
    return (d[:, :g] + d[:, g:]).permute(0, 2, 3, 1).reshape(b, hw, j, q)


def _as_channels_last(t, out_hw):
    """``[b, L, ...]`` (contiguous) as a channels-last ``[b, prod(...), X', Y']`` view."""
    return t.reshape(t.shape[0], *out_hw, -1).permute(0, 3, 1, 2)


class MaxRecord(NamedTuple):
    """Where the spatial max of every response row ``(b, j, c, q)`` of a chunk lies, kept by a
    training forward so that the backward needs no response tensor for it: ``mx`` the maxima
    and ``idx`` their first positions ``[b, J, C, Q]``, ``count`` how many positions share
    each maximum (float); for the rows where several do, ``rows`` (flat row numbers) and their
    ``masks [n, X'Y']`` (bool)."""
    mx: torch.Tensor
    idx: torch.Tensor
    count: torch.Tensor
    rows: torch.Tensor
    masks: torch.Tensor


def _locate_max(y) -> MaxRecord:
    """The ``MaxRecord`` of responses ``y [b, J, C, Q, L]`` (ties happen: zero receptive
    fields give equal responses, e.g. a filter whose responses are <= 0 peaks at every zero
    pixel)."""
    hw = y.shape[-1]
    mx = y.amax(-1)
    # a float mask, its row sums and its position sums (a matrix-vector product): ``max(dim)``
    # with indices, bool masks and integer sums are each ~10x slower on CPU (measured)
    mask = torch.eq(y, mx.unsqueeze(-1), out=torch.empty_like(y)).view(-1, hw)
    count = mask.sum(1)
    pos = torch.mv(mask, torch.arange(hw, dtype=y.dtype, device=y.device))
    tied = (count > 1).nonzero().squeeze(1)
    # an untied row's position sum is its position; tied rows use their masks (and are clamped
    # here only to stay valid indices)
    idx = pos.round().long().clamp_(0, hw - 1).view(mx.shape)
    return MaxRecord(mx, idx, count.view(mx.shape), tied, mask[tied] > 0)


def _alpha_chunk(x, kr, f1, f2, wsp, geo: Geometry, inplace: bool, record=None):
    """The attention term ``R = sum_{c,j} beta alpha Y`` for one chunk (no output factor).

    x ``[b, J, C, H, W]`` (input group axis first); kr ``[J, C, Q, k*k]`` (Q = (o, i) of the
    chunk); f1 ``[J, Q, h, C]`` / f2 ``[J, Q, C, h]`` or None; wsp ``[2, J, Q, ks, ks]`` (mean
    filters already divided by C) or None. ``inplace``: no autograd, reuse buffers.
    ``record``: called with the chunk's ``MaxRecord`` (only with channel attention).
    Returns ``[b, Q, X', Y']`` (contiguous).
    """
    b, j, c = x.shape[:3]
    q = kr.shape[2]
    u, kb, y = _responses(x, kr, geo)
    alpha = None
    if f1 is not None:
        if record is None:
            mx = y.amax(-1)
        else:
            rec = _locate_max(y)
            record(rec)
            mx = rec.mx
        alpha = _channel_alpha(_spatial_mean(u, kr)[0], mx, f1, f2)          # [b, J, C, Q]
    if wsp is None:
        # no spatial attention: R = sum_{j,c} alpha Y, one GEMM with alpha-scaled filters
        w = (alpha.unsqueeze(-1) * kr).permute(0, 3, 1, 2, 4).reshape(b, q, -1)
        return torch.bmm(w, u.view(b, -1, u.shape[-1])).view(b, q, *geo.out_hw)
    if alpha is not None:
        y = y.mul_(alpha.unsqueeze(-1)) if inplace else y * alpha.unsqueeze(-1)
    sa, ma = _channel_sum_max(y)                                             # [b, J, Q, L]
    # written pixel-major, so that the depthwise conv runs channels-last
    stats = torch.stack([sa.permute(0, 3, 1, 2), ma.permute(0, 3, 1, 2)], 2)  # [b, L, 2, J, Q]
    pre = _spatial_pre(stats, wsp, geo)
    if inplace:
        r = pre.sigmoid_().mul_(stats[:, :, 0]).sum(2)                       # [b, L, Q]
    else:
        r = (pre.sigmoid() * stats[:, :, 0]).sum(2)
    return r.transpose(1, 2).contiguous().view(b, q, *geo.out_hw)
