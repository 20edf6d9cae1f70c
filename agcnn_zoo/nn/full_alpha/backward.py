"""The hand-written backward of the full-alpha attention term: the chunk recomputed and
differentiated (``_alpha_chunk_backward``), and the autograd function of a whole layer that
runs it chunk by chunk (``_AlphaAttention``)."""
from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from . import plan as _plan
from .forward import (Geometry, MaxRecord, _alpha_chunk, _as_channels_last, _channel_alpha,
                      _channel_sum_max, _mlp_input, _responses, _spatial_mean, _spatial_pre,
                      _unfold)
from .plan import RECORDED_BACKWARD_MERGE, _chunk_args, _run_chunks, merge_chunks

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
    alpha = mu = ubar = mx = None
    if f1 is not None:
        mu, ubar = _spatial_mean(u, kr)
        mx = y.amax(-1) if rec is None else rec.mx
        alpha = _channel_alpha(mu, mx, f1, f2)
    if wsp is None:
        d_alpha, d_kr, d_u = _channel_term_backward(u, kr, alpha, g_ql)
        e = d_wsp = None                          # e: the response-sized part of dY
    else:
        d_alpha, d_kr, d_u, e, d_wsp = _spatial_term_backward(u, y, kr, alpha, g_ql, wsp, geo)
    d_kr = d_kr.contiguous()
    u = u.view(b, j, c, kk, hw)
    d_f1 = d_f2 = None
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
    if e is not None:      # dY's response-sized part, through the responses' two factors
        e = e.view(b * j * c, q, hw)
        u_t = u.reshape(b * j * c, kk, hw).transpose(1, 2)
        d_kr += torch.bmm(e, u_t).view(b, j, c, q, kk).sum(0)
        d_u += torch.bmm(kb.transpose(1, 2), e).view(b, j, c, kk, hw)
    d_x = _fold(d_u, x.shape, geo) if needs_x else None
    return d_x, d_kr, d_f1, d_f2, d_wsp


def _channel_term_backward(u, kr, alpha, g_ql):
    """Without spatial attention, ``R = sum_{j,c} alpha Y``: ``dY = alpha G`` is
    rank-structured, so ``(d_alpha, d_kr, d_u)`` all come from GEMMs on ``u``."""
    j, c, q, kk = kr.shape
    b, hw = g_ql.shape[0], g_ql.shape[2]
    t = torch.bmm(u.view(b, j * c * kk, hw), g_ql.transpose(1, 2)).view(b, j, c, kk, q)
    d_alpha = _filter_dot(kr, t)
    d_kr = _sample_sum(alpha, t)
    w_t = (alpha.unsqueeze(-1) * kr).permute(0, 1, 2, 4, 3).reshape(b, j * c * kk, q)
    return d_alpha, d_kr, torch.bmm(w_t, g_ql).view(b, j, c, kk, hw)


def _spatial_term_backward(u, y, kr, alpha, g_ql, wsp, geo: Geometry):
    """With spatial attention: ``(d_alpha, d_kr, d_u, e, d_wsp)``, ``e`` the response-sized
    part of ``dY`` (the gradient through the channel max, dense), the rest through GEMMs."""
    j, c, q, kk = kr.shape
    b, hw = g_ql.shape[0], g_ql.shape[2]
    a = y if alpha is None else y * alpha.unsqueeze(-1)
    sa, ma = _channel_sum_max(a)
    stats = torch.stack([sa.permute(0, 3, 1, 2), ma.permute(0, 3, 1, 2)], 2)
    beta = _spatial_pre(stats, wsp, geo).sigmoid_()                      # [b, L, J, Q]
    g_l = g_ql.transpose(1, 2).unsqueeze(2)                              # [b, L, 1, Q]
    d_sa = beta * g_l                                                    # direct path
    d_pre = (stats[:, :, 0] * g_l).mul_(beta).mul_(1 - beta)             # through beta
    d_stats, d_wsp = _spatial_backward(d_pre, stats, wsp, geo)
    d_sa += d_stats[:, :, 0]
    d_ma = d_stats[:, :, 1].permute(0, 2, 3, 1)                          # [b, J, Q, L]
    d_sa = d_sa.permute(0, 2, 1, 3).reshape(b * j, hw, q)                # [b*J, L, Q]
    # dA = dSA (same for every c) + dMA at the channel maxima (shared among ties)
    if c == 1:
        e = d_ma.unsqueeze(2).contiguous()
    else:
        e = _share_among_maxima(a, ma.unsqueeze(2), d_ma, 2)                # [b, J, C, Q, L]
    del a, stats
    # the dSA part through GEMMs: t[b,j,(c,u),q] = sum_l u dSA
    t = torch.bmm(u.view(b * j, c * kk, hw), d_sa).view(b, j, c, kk, q)
    d_alpha = None
    if alpha is None:
        d_kr = t.sum(0).permute(0, 1, 3, 2)
        w_t = kr.permute(0, 1, 3, 2).reshape(1, j, c * kk, q)
    else:
        d_alpha = _filter_dot(kr, t)
        d_alpha += torch.einsum("bjcql,bjcql->bjcq", e, y)
        d_kr = _sample_sum(alpha, t)
        w_t = (alpha.unsqueeze(-1) * kr).permute(0, 1, 2, 4, 3).reshape(b, j, c * kk, q)
        e.mul_(alpha.unsqueeze(-1))                                      # now dY (sparse part)
    d_u = torch.matmul(w_t, d_sa.view(b, j, hw, q).transpose(2, 3)).view(b, j, c, kk, hw)
    return d_alpha, d_kr, d_u, e, d_wsp


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
        run = _plan.run_recomputed_chunk if len(plan) > 1 else (lambda fn, *args: fn(*args))
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
