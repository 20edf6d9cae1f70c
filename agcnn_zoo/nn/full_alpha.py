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
The default ``E`` (``cache_budget.default_chunk_elements()``, from the largest CPU cache
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

from typing import Callable, List, NamedTuple, Tuple

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

__all__ = ["BACKENDS", "Geometry", "MaxRecord", "attention_term", "chunk_forward", "chunk_plan",
           "crop_spatial", "merge_chunks", "run_recomputed_chunk"]


def _mlp_input(mu, mx):
    """The statistics ``[b, J, C, Q]`` as the MLP's batched input ``[J, Q, C, 2b]``."""
    return torch.stack([mu, mx]).permute(2, 4, 3, 0, 1).flatten(3)


def _channel_alpha(mu, mx, f1, f2):
    """alpha ``[b, J, C, Q]`` from the response statistics (same shape) and the MLP banks
    ``f1 [J, Q, h, C]``, ``f2 [J, Q, C, h]``: one MLP per (j, Q) over the input channels."""
    h = torch.relu(torch.matmul(f1, _mlp_input(mu, mx)))                     # [J, Q, h, 2b]
    z = torch.matmul(f2, h).unflatten(3, (2, mu.shape[0]))                   # [J, Q, C, 2, b]
    return torch.sigmoid(z[:, :, :, 0] + z[:, :, :, 1]).permute(3, 0, 2, 1)  # [b, J, C, Q]


def _channel_alpha_backward(d_alpha, alpha, mu, mx, f1, f2):
    """``(d_mu, d_mx, d_f1, d_f2)`` of ``_channel_alpha`` by hand: a nested autograd graph
    per chunk cost more than the MLP itself."""
    s = _mlp_input(mu, mx)
    h = torch.relu(torch.matmul(f1, s))
    dz = (d_alpha * alpha * (1 - alpha)).permute(1, 3, 2, 0)                 # [J, Q, C, b]
    dz = torch.cat([dz, dz], 3)                         # both statistics feed the same sum
    d_f2 = torch.matmul(dz, h.transpose(2, 3))
    d_h = torch.matmul(f2.transpose(2, 3), dz) * (h > 0)
    d_f1 = torch.matmul(d_h, s.transpose(2, 3))
    d_s = torch.matmul(f1.transpose(2, 3), d_h).unflatten(3, (2, mu.shape[0]))   # [J, Q, C, 2, b]
    d_s = d_s.permute(3, 4, 0, 2, 1)                                         # [2, b, J, C, Q]
    return d_s[0], d_s[1], d_f1, d_f2


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


def _spatial_max_backward(rec: MaxRecord, d_mx, u, kr, d_kr, d_u) -> None:
    """Adds the gradient of the spatial max (``d_mx [b, J, C, Q]``) to ``d_kr [J, C, Q, kk]``
    and ``d_u [b, J, C, kk, L]`` in place: each maximum's gradient goes to its position, split
    in equal parts among tied positions like ``torch.amax``; gathers and scatters of the
    unfolded input ``u`` instead of response-sized masks."""
    b, j, c, kk, hw = u.shape
    q = kr.shape[2]
    w = (d_mx / rec.count).contiguous()
    w.view(-1)[rec.rows] = 0.0                           # tied rows: below, by their masks
    idx = rec.idx.unsqueeze(3).expand(b, j, c, kk, q)
    d_kr += _sample_sum(w, torch.gather(u, 4, idx))
    d_u.scatter_add_(4, idx, w.unsqueeze(3) * kr.transpose(2, 3))
    if rec.rows.numel():
        bjc, jcq = rec.rows // q, rec.rows % (j * c * q)
        share = d_mx.reshape(-1)[rec.rows] / rec.count.reshape(-1)[rec.rows]
        e = rec.masks * share.unsqueeze(1)                                     # [n, L]
        ur = u.reshape(b * j * c, kk, hw)[bjc]                                 # [n, kk, L]
        d_kr.view(j * c * q, kk).index_add_(0, jcq, torch.bmm(ur, e.unsqueeze(2)).squeeze(2))
        krr = kr.reshape(j * c * q, kk)[jcq]
        d_u.view(b * j * c, kk, hw).index_add_(0, bjc, krr.unsqueeze(2) * e.unsqueeze(1))


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


# ``einsum`` would run the next two as one tiny matrix product per (j, c, q), which loops on
# CPU: 4x slower than a product and a sum with 128 samples in a chunk (measured)
def _filter_dot(kr, t):
    """``sum_u kr[j,c,q,u] t[b,j,c,u,q]`` -> ``[b, J, C, Q]``."""
    return (kr.transpose(2, 3) * t).sum(3)


def _sample_sum(w, t):
    """``sum_b w[b,j,c,q] t[b,j,c,u,q]`` -> ``[J, C, Q, kk]``."""
    return (w.unsqueeze(3) * t).sum(0).transpose(2, 3)


def _share_among_maxima(t, t_max, grad, dim: int) -> torch.Tensor:
    """The gradient of ``t.amax(dim)`` for ``grad``: equal shares to every maximal entry.
    The mask is written as floats straight away (bool masks cost a conversion pass and a slow
    integer sum on CPU)."""
    mask = torch.eq(t, t_max, out=torch.empty_like(t))
    return mask.mul_((grad / mask.sum(dim)).unsqueeze(dim))


def _alpha_chunk_backward(x, kr, f1, f2, wsp, geo: Geometry, grad, needs_x: bool,
                          rec: MaxRecord = None):
    """Gradients of ``_alpha_chunk`` for the output gradient ``grad``, the chunk recomputed:
    ``(d_x, d_kr, d_f1, d_f2, d_wsp)``. The linear parts run as GEMMs on the unfolded input
    instead of response-sized products. Without spatial attention the spatial max goes through
    the forward's ``rec`` (gathers and scatters) and no response is recomputed at all; with it,
    through dense masks of the recomputed responses (``rec`` None). Max reductions pass their
    gradient to every maximal entry in equal parts, exactly like ``torch.amax``."""
    b, j, c = x.shape[:3]
    q, kk = kr.shape[2], kr.shape[3]
    hw = geo.out_hw[0] * geo.out_hw[1]
    if wsp is None:
        u, kb, y = _unfold(x, geo), None, None
    else:
        u, kb, y = _responses(x, kr, geo)
    g_ql = grad.reshape(b, q, hw)
    alpha = None
    if f1 is not None:
        mu, ubar = _spatial_mean(u, kr)
        mx = y.amax(-1) if rec is None else rec.mx
        alpha = _channel_alpha(mu, mx, f1, f2)
    d_alpha = d_wsp = None
    e = None                                      # response-sized part of dY
    if wsp is None:
        # R = sum_{j,c} alpha Y: dY = alpha G (rank-structured), all through GEMMs on u
        t = torch.bmm(u.view(b, j * c * kk, hw), g_ql.transpose(1, 2)).view(b, j, c, kk, q)
        d_alpha = _filter_dot(kr, t)
        d_kr = _sample_sum(alpha, t)
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
            d_alpha = _filter_dot(kr, t)
            d_alpha += torch.einsum("bjcql,bjcql->bjcq", e, y)
            d_kr = _sample_sum(alpha, t)
            w_t = (alpha.unsqueeze(-1) * kr).permute(0, 1, 2, 4, 3).reshape(b, j, c * kk, q)
            e.mul_(alpha.unsqueeze(-1))                                  # now dY (sparse part)
        d_u = torch.matmul(w_t, d_sa.view(b, j, hw, q).transpose(2, 3)).view(b, j, c, kk, hw)
    d_kr = d_kr.contiguous()
    d_f1 = d_f2 = None
    u = u.view(b, j, c, kk, hw)
    if f1 is not None:
        d_mu, d_mx, d_f1, d_f2 = _channel_alpha_backward(d_alpha, alpha, mu, mx, f1, f2)
        if rec is None:        # the responses are at hand: a dense mask (shared among ties)
            e_max = _share_among_maxima(y, mx.unsqueeze(-1), d_mx, -1)
            e = e_max if e is None else e.add_(e_max)
            del e_max
        else:
            _spatial_max_backward(rec, d_mx, u, kr, d_kr, d_u)
        # spatial mean, through the mean receptive field
        d_kr += torch.einsum("bjcq,bjcu->jcqu", d_mu, ubar)
        d_u += (torch.einsum("jcqu,bjcq->bjcu", kr, d_mu) / hw).unsqueeze(-1)
    del y
    if e is not None:
        e = e.view(b * j * c, q, hw)
        u_t = u.reshape(b * j * c, kk, hw).transpose(1, 2)
        d_kr += torch.bmm(e, u_t).view(b, j, c, q, kk).sum(0)
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
        # the spatial max is recorded only where the backward would otherwise recompute the
        # responses for it alone (alpha_Ch); with spatial attention it recomputes them anyway
        # and the dense masks cost less than recording them (measured)
        ctx.records = _LayerRecords(x, kr, plan) if f1 is not None and wsp is None else None
        keep = None if ctx.records is None else ctx.records.add
        run = run_recomputed_chunk if len(plan) > 1 else (lambda fn, *args: fn(*args))
        return _run_chunks(x, kr, f1, f2, wsp, geo, plan,
                           lambda *args: run(_alpha_chunk, *args, geo, True, keep))

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
        plan = ctx.plan
        if ctx.records is not None:
            # alpha_Ch's backward recomputes no responses: it holds the unfolded input and its
            # gradient, 2 k^2 / Q_c floats per response entry, so up to 3 Q_c / k^2 forward
            # chunks fit in the 6 E floats of the other kinds; fewer, larger GEMMs
            q_c = plan[0][1].stop - plan[0][1].start
            plan = merge_chunks(plan, max(1, min(RECORDED_BACKWARD_MERGE, 3 * q_c // kr.shape[3])))
        for rows, qs in plan:
            xb, krq, f1q, f2q, wspq = _chunk_args(x, kr, f1, f2, wsp, rows, qs)
            rec = None if ctx.records is None else ctx.records.chunk(rows, qs)
            dx, dkr, df1, df2, dwsp = _alpha_chunk_backward(
                xb, krq, f1q, f2q, wspq, ctx.geo, grad[rows, qs], needs_x, rec)
            if needs_x:
                d_x[rows] += dx
            d_kr[:, :, qs] += dkr
            if f1 is not None:
                d_f1[:, qs] += df1
                d_f2[:, qs] += df2
            if wsp is not None:
                d_wsp[:, :, qs] += dwsp
        return d_x, d_kr, d_f1, d_f2, d_wsp, None, None


class _LayerRecords:
    """The ``MaxRecord`` of every chunk of a layer, written into whole-layer tensors. Small
    tensors that outlive their chunk fragment the heap (each next chunk then takes fresh
    pages for its responses: measured 1.3 GB instead of 0.15 GB of peak memory for the
    forward of a_p4cnn at batch 128), so a chunk's record is copied here and dropped. Tied
    rows are kept by their layer coordinates, so that the backward may cut other chunks."""

    def __init__(self, x, kr, plan):
        shape = (*x.shape[:3], kr.shape[2])                                  # [B, J, C, Q]
        self.mx, self.count = x.new_empty(shape), x.new_empty(shape)
        self.idx = torch.empty(shape, dtype=torch.long, device=x.device)
        self.plan, self.added = plan, 0
        self.tie_at: List[torch.Tensor] = []     # [n, 4] (b, j, c, q) of the layer
        self.tie_masks: List[torch.Tensor] = []

    def _slices(self, rows: slice, qs: slice):
        return [t[rows, :, :, qs] for t in (self.mx, self.idx, self.count)]

    def add(self, rec: MaxRecord) -> None:
        rows, qs = self.plan[self.added]
        self.added += 1
        for whole, part in zip(self._slices(rows, qs), rec[:3]):
            whole.copy_(part)
        if rec.rows.numel():                         # usually none
            at = torch.stack(torch.unravel_index(rec.rows, rec.mx.shape), 1)
            at[:, 0] += rows.start
            at[:, 3] += qs.start
            self.tie_at.append(at)
            self.tie_masks.append(rec.masks)

    def chunk(self, rows: slice, qs: slice) -> MaxRecord:
        mx, idx, count = self._slices(rows, qs)
        if len(self.tie_at) > 1:                     # joined once, on the first lookup
            self.tie_at, self.tie_masks = [torch.cat(self.tie_at)], [torch.cat(self.tie_masks)]
        if not self.tie_at:
            return MaxRecord(mx, idx, count, torch.empty(0, dtype=torch.long, device=mx.device),
                             torch.empty(0, 0, dtype=torch.bool, device=mx.device))
        at, masks = self.tie_at[0], self.tie_masks[0]
        inside = ((at[:, 0] >= rows.start) & (at[:, 0] < rows.stop)
                  & (at[:, 3] >= qs.start) & (at[:, 3] < qs.stop))
        at = at[inside]
        _, j, c, q = mx.shape
        local = (((at[:, 0] - rows.start) * j + at[:, 1]) * c + at[:, 2]) * q + at[:, 3] - qs.start
        return MaxRecord(mx, idx, count, local, masks[inside])


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
