"""``check_equivariance``: measure how far a module is from commuting with the group's action.

The contract is escnn's ``check_equivariance``: for every group element ``g``, transform the
input and run the module, run the module and transform its output, and report the difference.
Inputs are plane maps ``[B, C, X, Y]`` (a lifting layer, a whole network) or maps on the group
``[B, C, n, X, Y]`` (group layers); outputs are transformed according to their shape (see
``output_kind``). Group conventions are those of ``agcnn_zoo.groups``.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from .groups import Group, get_group

__all__ = ["check_equivariance", "act"]


def act(t: torch.Tensor, group: Group, i: int, kind: str = "auto") -> torch.Tensor:
    """``g_i`` acting on ``t``: ``"plane"`` (spatial transform of the last two dims),
    ``"group"`` (spatial transform and group-axis permutation, axis 2), ``"invariant"`` (nothing);
    ``"auto"``: by dimension (5: group, 3 or 4: plane, otherwise invariant)."""
    if kind == "auto":
        kind = "group" if t.dim() == 5 else "plane" if t.dim() in (3, 4) else "invariant"
    if kind == "group":
        return group.act_on_group_map(t, i)
    if kind == "plane":
        return group.act_on_plane(t, i)
    if kind == "invariant":
        return t
    raise ValueError(f"unknown kind {kind!r}; expected auto, plane, group or invariant")


def check_equivariance(module: nn.Module, x: torch.Tensor, group="p4",
                       elements: Optional[Sequence[int]] = None, input_kind: str = "auto",
                       output_kind: str = "auto", relative: bool = False) -> List[Tuple[int, float]]:
    """``[(i, error_i)]`` for every element ``g_i`` of ``group`` (or of ``elements``), with
    ``error_i = max |module(g_i . x) - g_i . module(x)|``.

    ``input_kind`` / ``output_kind``: how ``g_i`` acts on the module's input / output, ``"auto"`` by
    dimension (``[B, C, n, X, Y]``: a map on the group; ``[B, C, X, Y]``: a plane map;
    ``[B, K]``: invariant, e.g. logits), or ``"plane"``, ``"group"``, ``"invariant"``.
    ``relative=True`` divides every error by ``max(1, max |module(x)|)``. The module runs as it
    is (call ``.eval()`` first for batch norm statistics and dropout) without gradients.
    Float64 inputs and weights give errors at the level of float64 rounding for an exactly
    equivariant module; float32 around 1e-6 of the output's magnitude.
    """
    g = get_group(group)
    idx = list(range(g.order)) if elements is None else [int(i) for i in elements]
    for i in idx:
        if not 0 <= i < g.order:
            raise ValueError(f"{g.name} has elements 0..{g.order - 1}, got {i}")
    if input_kind == "auto" and x.dim() == 5 and x.shape[2] != g.order:
        raise ValueError(f"a group map for {g.name} needs {g.order} elements on axis 2, got "
                         f"{tuple(x.shape)}")
    with torch.no_grad():
        y = module(x)
        scale = max(1.0, y.abs().max().item()) if relative else 1.0
        out = []
        for i in idx:
            y_t = module(act(x, g, i, input_kind))
            expected = act(y, g, i, output_kind)
            if y_t.shape != expected.shape:
                raise ValueError(f"the output of the transformed input has shape "
                                 f"{tuple(y_t.shape)}, expected {tuple(expected.shape)}")
            out.append((i, (y_t - expected).abs().max().item() / scale))
    return out
