"""The paper's attentive convolutions.

alpha_F (``FAttLiftingConv`` / ``FAttGroupConv``): attention on the input feature map, then a
plain lifting / group convolution:  ``x_hat = x - beta * (alpha * x)``, ``y = Conv(x_hat)``.
(The original writes every attention as ``x - attention(x)``, i.e. ``x * (1 - alpha beta)``.)

Full alpha (``AttLiftingConv`` / ``AttGroupConv``): attention on the responses of every
(input channel c, input group element j) before they are summed:
``Y[b,o,i,c,j] = x[b,c,j] * K_i[o,c,j]``, ``alpha`` from the spatial mean/max of ``Y``,
``beta`` from the channel mean/max of ``A = alpha Y``, ``y = s * sum_{c,j} (Y - beta A)``.

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

import math
from typing import NamedTuple, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from . import reference as ref
from .attention import ResponseChannelAttention, ResponseSpatialAttention
from .cache import CachedBanks
from .conv import GroupConv, LiftingConv, check_group_map, check_plane_map, group_bank, lifting_bank

#: default bound (in tensor elements) on one chunk of un-summed responses (4 MiB of float32)
DEFAULT_MAX_CHUNK_ELEMENTS = 1 << 20


def _modulate(x: torch.Tensor, channel_attention, spatial_attention) -> torch.Tensor:
    if channel_attention is None and spatial_attention is None:
        return x
    a = x if channel_attention is None else channel_attention(x) * x
    if spatial_attention is None:
        return x - a
    beta = spatial_attention(a)
    if a is x or torch.is_grad_enabled() or ref.enabled() or torch.jit.is_tracing():
        return x - beta * a
    # inference: x - beta * a written over a (one pass, no new map-sized buffers)
    return torch.addcmul(x, beta, a, value=-1, out=a)


class FAttLiftingConv(LiftingConv):
    """alpha_F lifting convolution (``fAttConvRnG``); dilation of the conv is 1 as in the original."""

    def __init__(self, in_channels, out_channels, kernel_size, group="p4", channel_attention=None,
                 spatial_attention=None, stride=1, padding=0):
        super().__init__(in_channels, out_channels, kernel_size, group, stride, padding)
        self.channel_attention = channel_attention
        self.spatial_attention = spatial_attention

    def forward(self, x):
        check_plane_map(x, self.in_channels, type(self).__name__)
        return self.conv(_modulate(x, self.channel_attention, self.spatial_attention))


class FAttGroupConv(GroupConv):
    """alpha_F group convolution (``fAttConvGG``), Haar factor included."""

    def __init__(self, in_channels, out_channels, kernel_size, group="p4", channel_attention=None,
                 spatial_attention=None, stride=1, padding=0):
        super().__init__(in_channels, out_channels, kernel_size, group, stride, padding)
        self.channel_attention = channel_attention
        self.spatial_attention = spatial_attention

    def forward(self, x):
        check_group_map(x, self.in_channels, self.group.order, type(self).__name__)
        return self.conv(_modulate(x, self.channel_attention, self.spatial_attention))


# ------------------------------------------------------------------------------- full alpha
def _channel_alpha(mu, mx, f1, f2):
    """alpha ``[b, J, C, Q]`` from the response statistics (same shape) and the MLP banks
    ``f1 [J, Q, h, C]``, ``f2 [J, Q, C, h]``: one MLP per (j, Q) over the input channels."""
    s = torch.stack([mu, mx]).permute(2, 4, 3, 0, 1).flatten(3)               # [J, Q, C, 2b]
    h = torch.relu(torch.matmul(f1, s))                                      # [J, Q, h, 2b]
    z = torch.matmul(f2, h).unflatten(3, (2, mu.shape[0]))                   # [J, Q, C, 2, b]
    return torch.sigmoid(z[:, :, :, 0] + z[:, :, :, 1]).permute(3, 0, 2, 1)  # [b, J, C, Q]


class _Geometry(NamedTuple):
    k: int
    stride: int
    padding: int
    dilation: int
    sp_padding: object       # int or (int, int) after cropping
    sp_dilation: int
    out_hw: Tuple[int, int]


def _unfold(x: torch.Tensor, geo: _Geometry) -> torch.Tensor:
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


def _fold(du: torch.Tensor, shape, geo: _Geometry) -> torch.Tensor:
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


def _alpha_chunk(x, kr, f1, f2, wsp, geo: _Geometry, inplace: bool):
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


def _alpha_chunk_backward(x, kr, f1, f2, wsp, geo: _Geometry, grad, needs_x: bool):
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
        run = checkpoint if len(plan) > 1 else (lambda fn, *args: fn(*args))
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


def _run_chunks(x, kr, f1, f2, wsp, geo: _Geometry, plan, chunk_fn) -> torch.Tensor:
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


def checkpoint(fn, *args):
    """Runs one chunk of a split full-alpha layer that needs gradients (``_AlphaAttention``
    keeps only the layer's inputs and recomputes each chunk in backward). A module-level hook
    so that tests can count the chunks."""
    return fn(*args)


def _crop_spatial(wsp: torch.Tensor, padding: int, dilation: int, out_hw):
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


def set_max_chunk_elements(module: nn.Module, elements: int) -> nn.Module:
    """Set the chunk budget of every full-alpha layer in ``module`` (e.g. 2**26 on a GPU)."""
    if not isinstance(elements, int) or elements < 1:
        raise ValueError(f"elements must be a positive int, got {elements!r}")
    for m in module.modules():
        if isinstance(m, _FullAlphaConv):
            m.max_chunk_elements = elements
    return module


class _FullAlphaConv(CachedBanks):
    """Shared machinery of the full-alpha attentive convolutions."""

    lifting: bool
    # inputs and outputs stay NCHW: the chunks gather receptive fields plane by plane
    # (``_unfold``), which an NHWC-backed map makes slower than the plain convolution gains
    nhwc_min_channels = 1 << 62

    def _init_attention(self, channel_attention, spatial_attention):
        for name, mod, cls in (("channel_attention", channel_attention, ResponseChannelAttention),
                               ("spatial_attention", spatial_attention, ResponseSpatialAttention)):
            if mod is not None and not isinstance(mod, cls):
                raise TypeError(f"{name} must be a {cls.__name__} or None, got {type(mod).__name__}")
            if mod is not None and mod.lifting != self.lifting:
                raise ValueError(f"{name}: lifting={mod.lifting} does not match the convolution")
        self.channel_attention = channel_attention
        self.spatial_attention = spatial_attention
        self.max_chunk_elements = DEFAULT_MAX_CHUNK_ELEMENTS

    def response_bank(self) -> torch.Tensor:
        """``[O, n, C, J, k, k]``, unscaled."""
        def build():
            if self.lifting:
                o, c, k, _ = self.weight.shape
                return lifting_bank(self.weight, self.group).reshape(o, self.group.order, c, 1, k, k)
            return group_bank(self.weight, self.group)
        return self.cached_bank("resp", build, [self.weight])

    # -- banks in the layouts of _alpha_chunk (cached in eval mode like every filter bank)
    def _chunk_banks(self):
        def resp():
            bank = self.response_bank()                                   # [O, n, C, J, k, k]
            o, n, c, j, k, _ = bank.shape
            return bank.permute(3, 2, 0, 1, 4, 5).reshape(j, c, o * n, k * k)
        kr = self.cached_bank("chunk_resp", resp, [self.weight])
        f1 = f2 = wsp = None
        ca, sa = self.channel_attention, self.spatial_attention
        if ca is not None:
            def mlp():
                b1, b2 = ca.banks()                                       # [O, n, h, C, J], [O, n, C, h, J]
                return (b1.permute(4, 0, 1, 2, 3).flatten(1, 2).contiguous(),
                        b2.permute(4, 0, 1, 2, 3).flatten(1, 2).contiguous())
            f1 = self.cached_bank("chunk_fc1", lambda: mlp()[0], [ca.weight_fc1, ca.weight_fc2])
            f2 = self.cached_bank("chunk_fc2", lambda: mlp()[1], [ca.weight_fc1, ca.weight_fc2])
        if sa is not None:
            def spatial():
                bank = sa.bank()                                          # [O, n, 2, J, ks, ks]
                o, n, _, j, ks, _ = bank.shape
                w = bank.permute(2, 3, 0, 1, 4, 5).reshape(2, j, o * n, ks, ks)
                # the channel MEAN statistic is fed as a channel SUM: fold 1/C into its filters
                return torch.cat([w[:1] / self.in_channels, w[1:]])
            wsp = self.cached_bank("chunk_sp", spatial, [sa.weight])
        return kr, f1, f2, wsp

    def _chunking(self, batch: int, per_sample_channel: int):
        """(samples, output channels) per chunk for a response budget of max_chunk_elements."""
        budget = int(self.max_chunk_elements)
        o = self.out_channels
        if o * per_sample_channel <= budget:
            return max(1, min(batch, budget // (o * per_sample_channel))), o
        return 1, max(1, budget // per_sample_channel)

    def _attentive(self, x: torch.Tensor, x5: torch.Tensor) -> torch.Tensor:
        """``x`` the layer input, ``x5`` the same as ``[B, C, J, H, W]``."""
        plain = self.conv(x)                                              # s * sum_{c,j} Y
        kr, f1, f2, wsp = self._chunk_banks()
        sa = self.spatial_attention
        b, c, j = x5.shape[:3]
        n, o = self.group.order, self.out_channels
        out_hw = tuple(plain.shape[-2:])
        per_sample_channel = c * j * n * out_hw[0] * out_hw[1]
        bstep, ostep = self._chunking(b, per_sample_channel)
        needs_grad = torch.is_grad_enabled() and (x5.requires_grad or any(
            p.requires_grad for p in self.parameters()))
        xt = x5.transpose(1, 2)                                           # [B, J, C, H, W] view
        sp_padding, sp_dilation = (sa.padding, sa.dilation) if sa is not None else (0, 1)
        if wsp is not None:
            wsp, sp_padding = _crop_spatial(wsp, sp_padding, sp_dilation, out_hw)
        geo = _Geometry(self.kernel_size, self.stride, self.padding, self.dilation, sp_padding,
                        sp_dilation, out_hw)
        plan = [(slice(b0, min(b, b0 + bstep)), slice(o0 * n, min(o, o0 + ostep) * n))
                for b0 in range(0, b, bstep) for o0 in range(0, o, ostep)]
        if needs_grad:
            att = _AlphaAttention.apply(xt, kr, f1, f2, wsp, geo, plan)
        else:
            att = _run_chunks(xt, kr, f1, f2, wsp, geo, plan,
                              lambda *args: _alpha_chunk(*args, geo, inplace=True))
        return plain - self.scale * att.unflatten(1, (o, n))

    def _has_attention(self) -> bool:
        return self.channel_attention is not None or self.spatial_attention is not None


class AttLiftingConv(_FullAlphaConv, LiftingConv):
    """Full-alpha attentive lifting convolution (``AttConvRnG``); no scale factor."""

    lifting = True

    def __init__(self, in_channels, out_channels, kernel_size, group="p4", channel_attention=None,
                 spatial_attention=None, stride=1, padding=0, dilation=1):
        LiftingConv.__init__(self, in_channels, out_channels, kernel_size, group, stride, padding,
                             dilation)
        self.scale = 1.0
        self._init_attention(channel_attention, spatial_attention)

    def forward(self, x):
        check_plane_map(x, self.in_channels, type(self).__name__)
        if ref.enabled():
            return ref.att_conv(self, x.unsqueeze(2))
        if not self._has_attention():
            return self.conv(x)
        return self._attentive(x, x.unsqueeze(2))


class AttGroupConv(_FullAlphaConv, GroupConv):
    """Full-alpha attentive group convolution (``AttConvGG``).

    Its output factor is the original's ``2 pi / n`` (pi/2 for p4, equal to the Haar factor of
    GroupConv; pi/4 for p4m, where GroupConv uses pi).
    """

    lifting = False

    def __init__(self, in_channels, out_channels, kernel_size, group="p4", channel_attention=None,
                 spatial_attention=None, stride=1, padding=0, dilation=1):
        GroupConv.__init__(self, in_channels, out_channels, kernel_size, group, stride, padding,
                           dilation)
        self.scale = 2 * math.pi / self.group.order
        self._init_attention(channel_attention, spatial_attention)

    def forward(self, x):
        check_group_map(x, self.in_channels, self.group.order, type(self).__name__)
        if ref.enabled():
            return ref.att_conv(self, x)
        if not self._has_attention():
            return self.conv(x)
        return self._attentive(x, x)
