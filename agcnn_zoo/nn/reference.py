"""The readable reference path: the original implementation's formulation, written plainly.

Filter banks are rebuilt on every call by applying each group element in a Python loop, and
full alpha attention materialises the whole un-summed response tensor
``[B, O, n, C, n_in, X, Y]`` in the original's layout. The fast path of every layer is tested
against this one, and ``eval/bench.py`` measures speed-ups against it.

Switch it on for a block of code with ``with reference_path(): ...`` (``base.dispatch`` is the
only reader of the switch).

Independence from the fast path: the output factors are derived here from their definitions
(``haar_measure``, ``full_alpha_factor``), never read from ``layer.scale``, and the group-axis
permutations from the group's defining relations (``axis_permutation``), not from the group's
tables, so a wrong constant or table in the fast path shows up as a fast-vs-reference difference.
"""
from __future__ import annotations

import contextlib
import math
import threading

import torch
import torch.nn.functional as F

_state = threading.local()


def enabled() -> bool:
    return getattr(_state, "on", False)


@contextlib.contextmanager
def reference_path(on: bool = True):
    """Run every layer on its reference (naive) path inside the block."""
    previous = enabled()
    _state.on = on
    try:
        yield
    finally:
        _state.on = previous


# ----------------------------------------------------------- constants, from their definitions
def haar_measure(group) -> float:
    """The original ``ConvGG``'s factor: the measure of its grid on the circle, 2 pi / 4 for
    the four rotations, twice that with mirrors (SPEC 1.1-1.2): pi/2 (p4), pi (p4m)."""
    mirrors = 1 + max(a for a, _ in group.elements)
    return mirrors * (2 * math.pi / 4)


def full_alpha_factor(group, lifting: bool) -> float:
    """The original ``AttConvGG``'s factor ``2 pi / N_h`` (pi/2 for p4, pi/4 for p4m; SPEC
    3.6); ``AttConvRnG`` has none (SPEC 3.5)."""
    return 1.0 if lifting else 2 * math.pi / len(group.elements)


def group_conv_factor(layer) -> float:
    return haar_measure(layer.group) if layer.scale_argument is None else layer.scale_argument


def _element_matrix(a: int, r: int):
    """``F^a R^r`` as an integer 2x2 matrix (R the quarter turn, F a reflection): any faithful
    pair with ``F R F = R^-1`` gives the same group structure as the plane action."""
    m = [[1, 0], [0, 1]]
    for _ in range(r % 4):
        m = [[-m[1][0], -m[1][1]], [m[0][0], m[0][1]]]           # R @ m, R = [[0, -1], [1, 0]]
    if a:
        m = [m[0], [-m[1][0], -m[1][1]]]                          # F @ m, F = diag(1, -1)
    return m


def axis_permutation(group, i: int):
    """``[index(g_i^-1 g_j) for j]`` from matrices of the elements (not the group's tables)."""
    mats = [_element_matrix(a, r) for a, r in group.elements]

    def mul(p, q):
        return [[sum(p[x][k] * q[k][y] for k in range(2)) for y in range(2)] for x in range(2)]
    inv = mats.index(next(m for m in mats if mul(m, mats[i]) == [[1, 0], [0, 1]]))
    return torch.tensor([mats.index(mul(mats[inv], mats[j])) for j in range(len(mats))])


def act_on_group_map(f: torch.Tensor, group, i: int, group_dim: int) -> torch.Tensor:
    """``(g_i . f)[..., j, ...] = L_i f[..., index(g_i^-1 g_j), ...]`` on the axis ``group_dim``."""
    return group.act_on_plane(f.index_select(group_dim, axis_permutation(group, i).to(f.device)), i)


def _stack_split(y: torch.Tensor, out_channels: int) -> torch.Tensor:
    # the original orders output channels (element i, channel o) and stacks the n chunks on dim 2
    return torch.stack(torch.split(y, out_channels, dim=1), dim=2)


def lifting_filters(weight, group):
    return torch.stack([group.act_on_plane(weight, i) for i in range(group.order)])   # [n, O, C, k, k]


def group_filters(weight, group):
    return torch.stack([act_on_group_map(weight, group, i, group_dim=2)
                        for i in range(group.order)])                                 # [n, O, C, J, k, k]


def lifting_conv(layer, x):
    w = lifting_filters(layer.weight, layer.group).flatten(0, 1)
    y = F.conv2d(x, w, None, layer.stride, layer.padding, layer.dilation)
    return _stack_split(y, layer.out_channels)


def group_conv(layer, x):
    n, o, c, j, k, _ = (w := group_filters(layer.weight, layer.group)).shape
    y = F.conv2d(x.reshape(x.shape[0], c * j, *x.shape[-2:]), w.reshape(n * o, c * j, k, k), None,
                 layer.stride, layer.padding, layer.dilation)
    return _stack_split(y, o) * group_conv_factor(layer)


def group_channel_attention_matrices(module):
    n = module.group.order
    perm = [axis_permutation(module.group, i) for i in range(n)]

    def expand(w):  # F[out, i, in, j] = w[out, in, perm[i, j]]
        return torch.stack([w[:, :, perm[i]] for i in range(n)], dim=1)
    return expand(module.weight_fc1), expand(module.weight_fc2)


def group_channel_attention(module, x):
    f1, f2 = group_channel_attention_matrices(module)
    alphas = []
    for s in (x.mean(dim=(-2, -1)), x.amax(dim=-2).amax(dim=-1)):                  # [B, C, n]
        h = F.relu(torch.einsum("qicj,bcj->bqi", f1, s))
        alphas.append(torch.einsum("cjqi,bqi->bcj", f2, h))
    return torch.sigmoid(alphas[0] + alphas[1])[..., None, None]


def full_alpha_terms(layer, x5):
    """``(resp, alpha, beta)`` of a full alpha attentive conv: the responses
    ``[B, O, n, C, J, X', Y']``, the channel attention ``alpha [B, O, n, C, J]`` (None without
    channel attention) and the spatial attention ``beta [B, O, n, J, X', Y']`` (None without
    spatial attention) that ``att_conv`` applies."""
    g, w = layer.group, layer.weight
    if layer.lifting:
        kern = lifting_filters(w, g).unsqueeze(3)                                        # [n, O, C, 1, k, k]
    else:
        kern = group_filters(w, g)                                                       # [n, O, C, J, k, k]
    n, o, c, j, k, _ = kern.shape
    b = x5.shape[0]
    resp = F.conv2d(x5.reshape(b, c * j, *x5.shape[-2:]),
                    kern.permute(2, 3, 1, 0, 4, 5).reshape(c * j * o * n, 1, k, k), None,
                    layer.stride, layer.padding, layer.dilation, groups=c * j)
    xs, ys = resp.shape[-2:]
    resp = resp.view(b, c, j, o, n, xs, ys).permute(0, 3, 4, 1, 2, 5, 6).contiguous()    # [B, O, n, C, J, X, Y]
    ca, sa = layer.channel_attention, layer.spatial_attention
    alpha = beta = None
    att = resp
    if ca is not None:
        w1, w2 = ca.weight_fc1, ca.weight_fc2
        if ca.lifting:
            f1 = torch.stack([w1] * n, dim=1).unsqueeze(-1)                              # [O, n, q, C, 1]
            f2 = torch.stack([w2] * n, dim=1).unsqueeze(-1)
        else:
            f1 = torch.stack([w1[..., axis_permutation(g, i)] for i in range(n)], dim=1)
            f2 = torch.stack([w2[..., axis_permutation(g, i)] for i in range(n)], dim=1)
        z = 0
        for s in (resp.mean(dim=(-2, -1)), resp.amax(dim=-2).amax(dim=-1)):           # [B, O, n, C, J]
            h = F.relu(torch.einsum("oiqcj,boicj->boiqj", f1, s))
            z = z + torch.einsum("oicqj,boiqj->boicj", f2, h)
        alpha = torch.sigmoid(z)
        att = alpha[..., None, None] * att
    if sa is not None:
        if sa.lifting:
            ksp = lifting_filters(sa.weight, g).unsqueeze(3)                              # [n, O, 2, 1, k, k]
        else:
            ksp = group_filters(sa.weight, g)                                             # [n, O, 2, J, k, k]
        kk = ksp.shape[-1]
        stats = torch.stack([att.mean(dim=3), att.amax(dim=3)], dim=3)                   # [B, O, n, 2, J, X, Y]
        pre = F.conv2d(stats.permute(0, 1, 2, 4, 3, 5, 6).reshape(b, o * n * j * 2, xs, ys),
                       ksp.permute(1, 0, 3, 2, 4, 5).reshape(o * n * j, 2, kk, kk), None, 1,
                       sa.padding, sa.dilation, groups=o * n * j)
        beta = torch.sigmoid(pre).view(b, o, n, j, xs, ys)
    return resp, alpha, beta


def att_conv(layer, x5):
    """Full alpha attentive conv, materialising ``Y[B, O, n, C, J, X', Y']`` at once."""
    resp, alpha, beta = full_alpha_terms(layer, x5)
    factor = full_alpha_factor(layer.group, layer.lifting)
    if alpha is None and beta is None:
        return resp.sum(dim=(3, 4)) * factor
    att = resp if alpha is None else alpha[..., None, None] * resp
    if beta is not None:
        att = beta.unsqueeze(3) * att
    return (resp - att).sum(dim=(3, 4)) * factor
