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
forward nothing of a chunk is kept but its inputs (views) and its ``[b_c, O_c |H|, X', Y']``
output; in backward one chunk at a time is recomputed and differentiated, holding at most
about ``6 E`` floats (``Y``, ``A`` and their gradients, masks of the max reductions), and its
gradients are added into the layer's input and bank gradients. The layer output, the plain
convolution, its saved input and the input gradient are the only whole-batch tensors.
The default ``E`` (``DEFAULT_MAX_CHUNK_ELEMENTS``, 2^20, 4 MiB of float32) keeps a chunk in
the CPU caches; on GPUs set ``layer.max_chunk_elements`` (or :func:`set_max_chunk_elements`)
to a larger budget, e.g. 2^26.
"""
from __future__ import annotations

from typing import List, NamedTuple, Tuple

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

__all__ = ["Geometry", "attention_term", "chunk_plan", "crop_spatial", "run_recomputed_chunk"]


def _channel_alpha(mu, mx, f1, f2):
    """alpha ``[b, J, C, Q]`` from the response statistics (same shape) and the MLP banks
    ``f1 [J, Q, h, C]``, ``f2 [J, Q, C, h]``: one MLP per (j, Q) over the input channels."""
    s = torch.stack([mu, mx]).permute(2, 4, 3, 0, 1).flatten(3)               # [J, Q, C, 2b]
    h = torch.relu(torch.matmul(f1, s))                                      # [J, Q, h, 2b]
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


def _fold(du: torch.Tensor, shape, geo: Geometry) -> torch.Tensor:
    """Adjoint of ``_unfold``: ``[b, J, C, k*k, L] -> [b, J, C, H, W]`` (overlaps summed)."""
    b, j, c, h, w = shape
    k, p, s, d, (oh, ow) = geo.k, geo.padding, geo.stride, geo.dilation, geo.out_hw
    out = du.new_zeros(b, j, c, h + 2 * p, w + 2 * p)
    du = du.view(b, j, c, k, k, oh, ow)
    for r in range(k):
        for t in range(k):
            out[..., r * d: r * d + s * (oh - 1) + 1: s, t * d: t * d + s * (ow - 1) + 1: s] += du[:, :, :, r, t]
    return out[..., p: p + h, p: p + w]


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


def _alpha_chunk(x, kr, f1, f2, wsp, geo: Geometry, inplace: bool):
    """The attention term ``R = sum_{c,j} beta alpha Y`` for one chunk (no output factor).

    x ``[b, J, C, H, W]`` (input group axis first); kr ``[J, C, Q, k*k]`` (Q = (o, i) of the
    chunk); f1 ``[J, Q, h, C]`` / f2 ``[J, Q, C, h]`` or None; wsp ``[2, J, Q, ks, ks]`` (mean
    filters already divided by C) or None. ``inplace``: no autograd, reuse buffers.
    Returns ``[b, Q, X', Y']`` (contiguous).
    """
    b, j, c = x.shape[:3]
    q = kr.shape[2]
    u, kb, y = _responses(x, kr, geo)
    alpha = None
    if f1 is not None:
        alpha = _channel_alpha(_spatial_mean(u, kr)[0], y.amax(-1), f1, f2)  # [b, J, C, Q]
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


def _share_among_maxima(t, t_max, grad, dim: int) -> torch.Tensor:
    """The gradient of ``t.amax(dim)`` for ``grad``: equal shares to every maximal entry.
    The mask is written as floats straight away (bool masks cost a conversion pass and a slow
    integer sum on CPU)."""
    mask = torch.eq(t, t_max, out=torch.empty_like(t))
    return mask.mul_((grad / mask.sum(dim)).unsqueeze(dim))


def _alpha_chunk_backward(x, kr, f1, f2, wsp, geo: Geometry, grad, needs_x: bool):
    """Gradients of ``_alpha_chunk`` for the output gradient ``grad``, the chunk recomputed:
    ``(d_x, d_kr, d_f1, d_f2, d_wsp)``. The linear parts run as GEMMs on the unfolded input
    instead of response-sized products. Max reductions pass their gradient to every maximal
    entry in equal parts, exactly like ``torch.amax``."""
    b, j, c = x.shape[:3]
    q, kk = kr.shape[2], kr.shape[3]
    hw = geo.out_hw[0] * geo.out_hw[1]
    u, kb, y = _responses(x, kr, geo)
    g_ql = grad.reshape(b, q, hw)
    alpha = mlp_in = None
    if f1 is not None:
        mu, ubar = _spatial_mean(u, kr)
        mx = y.amax(-1)
        with torch.enable_grad():
            mlp_in = [t.detach().requires_grad_() for t in (mu, mx, f1, f2)]
            alpha_g = _channel_alpha(*mlp_in)
        alpha = alpha_g.detach()
    d_alpha = d_wsp = None
    e = None                                      # response-sized part of dY / alpha
    if wsp is None:
        # R = sum_{j,c} alpha Y: dY = alpha G (rank-structured), all through GEMMs on u
        t = torch.bmm(u.view(b, j * c * kk, hw), g_ql.transpose(1, 2)).view(b, j, c, kk, q)
        d_alpha = torch.einsum("jcqu,bjcuq->bjcq", kr, t)
        d_kr = torch.einsum("bjcq,bjcuq->jcqu", alpha, t)
        w_t = (alpha.unsqueeze(-1) * kr).permute(0, 1, 2, 4, 3).reshape(b, j * c * kk, q)
        d_u = torch.bmm(w_t, g_ql).view(b, j, c, kk, hw)
    else:
        a = y if alpha is None else y * alpha.unsqueeze(-1)
        sa, ma = _channel_sum_max(a)
        stats = torch.stack([sa.permute(0, 3, 1, 2), ma.permute(0, 3, 1, 2)], 2)
        beta = _spatial_pre(stats, wsp, geo).sigmoid_()                  # [b, L, J, Q]
        g_l = g_ql.transpose(1, 2).unsqueeze(2)                          # [b, L, 1, Q]
        d_sa = beta * g_l                                                # direct path
        d_pre = (stats[:, :, 0] * g_l).mul_(beta).mul_(1 - beta)         # through beta
        d_stats, d_wsp = _spatial_backward(d_pre, stats, wsp, geo)
        d_sa += d_stats[:, :, 0]
        d_ma = d_stats[:, :, 1].permute(0, 2, 3, 1)                      # [b, J, Q, L]
        d_sa = d_sa.permute(0, 2, 1, 3).reshape(b * j, hw, q)            # [b*J, L, Q]
        # dA = dSA (same for every c) + dMA at the channel maxima (shared among ties)
        if c == 1:
            e = d_ma.unsqueeze(2).contiguous()
        else:
            e = _share_among_maxima(a, ma.unsqueeze(2), d_ma, 2)            # [b, J, C, Q, L]
        del a, stats
        # the dSA part through GEMMs: t[b,j,(c,u),q] = sum_l u dSA
        t = torch.bmm(u.view(b * j, c * kk, hw), d_sa).view(b, j, c, kk, q)
        if alpha is None:
            d_kr = t.sum(0).permute(0, 1, 3, 2)
            w_t = kr.permute(0, 1, 3, 2).reshape(1, j, c * kk, q)
        else:
            d_alpha = torch.einsum("jcqu,bjcuq->bjcq", kr, t)
            d_alpha += torch.einsum("bjcql,bjcql->bjcq", e, y)
            d_kr = torch.einsum("bjcq,bjcuq->jcqu", alpha, t)
            w_t = (alpha.unsqueeze(-1) * kr).permute(0, 1, 2, 4, 3).reshape(b, j, c * kk, q)
            e.mul_(alpha.unsqueeze(-1))                                  # now dY (sparse part)
        d_u = torch.matmul(w_t, d_sa.view(b, j, hw, q).transpose(2, 3)).view(b, j, c, kk, hw)
    d_f1 = d_f2 = None
    if f1 is not None:
        d_mu, d_mx, d_f1, d_f2 = torch.autograd.grad(alpha_g, mlp_in, d_alpha)
        # spatial max: gradient to the maximal pixels (shared among ties)
        e_max = _share_among_maxima(y, mx.unsqueeze(-1), d_mx, -1)
        e = e_max if e is None else e.add_(e_max)
        del e_max
        # spatial mean, through the mean receptive field
        d_kr += torch.einsum("bjcq,bjcu->jcqu", d_mu, ubar)
        d_u += (torch.einsum("jcqu,bjcq->bjcu", kr, d_mu) / hw).unsqueeze(-1)
    del y
    if e is not None:
        e = e.view(b * j * c, q, hw)
        d_kr += torch.bmm(e, u.transpose(1, 2)).view(b, j, c, q, kk).sum(0)
        d_u += torch.bmm(kb.transpose(1, 2), e).view(b, j, c, kk, hw)
    d_x = _fold(d_u, x.shape, geo) if needs_x else None
    return d_x, d_kr, d_f1, d_f2, d_wsp


class _AlphaAttention(torch.autograd.Function):
    """The attention term of a whole full-alpha layer, ``[B, O n, X', Y']``, computed chunk by
    chunk and keeping nothing but its inputs: in backward every chunk is recomputed (activation
    checkpointing) and differentiated by hand, one at a time, its gradients written into
    whole-layer gradient tensors (slicing the input per chunk under autograd would instead
    allocate a whole-batch zero gradient for every chunk)."""

    @staticmethod
    def forward(ctx, x, kr, f1, f2, wsp, geo, plan):
        ctx.save_for_backward(x, kr, f1, f2, wsp)
        ctx.geo, ctx.plan = geo, plan
        run = run_recomputed_chunk if len(plan) > 1 else (lambda fn, *args: fn(*args))
        return _run_chunks(x, kr, f1, f2, wsp, geo, plan,
                           lambda *args: run(_alpha_chunk, *args, geo, True))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, kr, f1, f2, wsp = ctx.saved_tensors
        needs_x = ctx.needs_input_grad[0]
        d_x = torch.zeros_like(x) if needs_x else None
        d_kr = torch.zeros_like(kr)
        d_f1 = None if f1 is None else torch.zeros_like(f1)
        d_f2 = None if f2 is None else torch.zeros_like(f2)
        d_wsp = None if wsp is None else torch.zeros_like(wsp)
        for rows, qs in ctx.plan:
            xb, krq, f1q, f2q, wspq = _chunk_args(x, kr, f1, f2, wsp, rows, qs)
            dx, dkr, df1, df2, dwsp = _alpha_chunk_backward(
                xb, krq, f1q, f2q, wspq, ctx.geo, grad[rows, qs], needs_x)
            if needs_x:
                d_x[rows] += dx
            d_kr[:, :, qs] += dkr
            if f1 is not None:
                d_f1[:, qs] += df1
                d_f2[:, qs] += df2
            if wsp is not None:
                d_wsp[:, :, qs] += dwsp
        return d_x, d_kr, d_f1, d_f2, d_wsp, None, None


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


def _spatial_backward(d_pre, stats, wsp, geo):
    """Gradients of ``_spatial_pre`` for ``d_pre [b, L, J, Q]``: ``(d_stats [b, L, 2, J, Q],
    d_wsp)`` (the same d_pre reaches both halves of the depthwise output)."""
    b, hw, _, j, q = stats.shape
    g = j * q
    ks = tuple(wsp.shape[-2:])
    d_d = torch.cat([d_pre.reshape(b, hw, g)] * 2, -1)                      # [b, L, 2G]
    if ks == (1, 1):
        w = wsp.reshape(2 * g)
        d_stats = (d_d * w).view(b, hw, 2, j, q)
        d_wsp = (d_d * stats.view(b, hw, 2 * g)).sum((0, 1)).view(wsp.shape)
        return d_stats, d_wsp
    pad, dil = _pair(geo.sp_padding), _pair(geo.sp_dilation)
    d_out = _as_channels_last(d_d, geo.out_hw)
    st = _as_channels_last(stats, geo.out_hw)
    d_stats = torch.ops.aten.convolution_backward(
        d_out, st, wsp.reshape(2 * g, 1, *ks), None, [1, 1], pad, dil, False, [0, 0], 2 * g,
        [True, False, False])[0]
    d_stats = d_stats.permute(0, 2, 3, 1).reshape(b, hw, 2, j, q)
    # the filter gradient as a depthwise convolution of every padded statistic map with its
    # output gradient as the filter (the dilation becomes the stride), summed over the samples:
    # oneDNN's depthwise weight-gradient kernel was ~20x slower than its forward on CPU
    st = F.pad(st.transpose(0, 1), (pad[1], pad[1], pad[0], pad[0]))            # [2G, b, ...]
    d_w = F.conv2d(st.reshape(1, 2 * g * b, *st.shape[-2:]),
                   d_out.transpose(0, 1).reshape(2 * g * b, 1, *geo.out_hw), None, dil, 0, 1,
                   2 * g * b)
    return d_stats, d_w.view(2 * g, b, *ks).sum(1).view(wsp.shape)


def _pair(v):
    return list(v) if isinstance(v, (tuple, list)) else [v, v]


def run_recomputed_chunk(fn, *args):
    """Runs the forward of one chunk of a split full-alpha layer that needs gradients
    (``_AlphaAttention`` keeps only the layer's inputs and recomputes each chunk in backward).
    A module-level hook so that tests can count those chunks (not ``torch.utils.checkpoint``:
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


def attention_term(x, kr, f1, f2, wsp, geo: Geometry, plan, needs_grad: bool) -> torch.Tensor:
    """``R = sum_{c,j} beta alpha Y`` of a whole layer, ``[B, Q, X', Y']``, chunk by chunk.

    x ``[B, J, C, H, W]`` (input group axis first); kr ``[J, C, Q, k*k]``; f1 / f2 the channel
    MLP banks ``[J, Q, h, C]`` / ``[J, Q, C, h]`` or None; wsp ``[2, J, Q, ks, ks]`` (mean
    filters divided by C) or None; ``plan`` from ``chunk_plan``. ``needs_grad``: differentiable
    (each chunk recomputed in backward), else computed in place without autograd."""
    if needs_grad:
        return _AlphaAttention.apply(x, kr, f1, f2, wsp, geo, plan)
    return _run_chunks(x, kr, f1, f2, wsp, geo, plan,
                       lambda *args: _alpha_chunk(*args, geo, inplace=True))
