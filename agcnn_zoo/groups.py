"""The point groups p4 and p4m acting on the square pixel grid.

Conventions (those of the original implementation, so the authors' weights load unchanged):

* Feature maps on a group are tensors ``[B, C, n, X, Y]``; the group axis is dim 2 and
  ``n = |H|`` (4 for p4, 8 for p4m). ``X`` is dim -2 (rows), ``Y`` dim -1 (columns).
* ``R`` is the quarter turn ``torch.rot90(a, 1, dims=(-2, -1))`` and ``F`` the row reversal
  ``torch.flip(a, dims=(-2,))``.
* p4: element ``i`` (0..3) acts on the plane as ``R^i``.
* p4m: element ``j = 4*a + r`` (a in {0, 1} the mirror, the slow index; r in 0..3 the
  rotation, the fast index) acts as ``F^a R^r``: first rotate, then mirror the rows.
* A filter on the plane transforms as ``L_h W`` (the plane action on its last two dims).
* A filter on the group ``W[..., n, k, k]`` transforms as
  ``K_h[..., j, :, :] = L_h W[..., index(h^-1 g_j), :, :]``: the spatial action plus a
  permutation of the group axis. Feature maps on the group transform the same way, which is
  what makes lifting and group convolutions equivariant.

Everything is derived from the plane action of the generators, so the Cayley table, the
inverses and the group-axis permutations are exact integer tables computed once.
"""
from __future__ import annotations

import math
from functools import cached_property
from typing import Callable, Dict, List, Tuple

import torch

__all__ = ["Group", "P4", "P4M", "get_group"]


def _rot(a: torch.Tensor, r: int) -> torch.Tensor:
    return torch.rot90(a, r, dims=(-2, -1)) if r % 4 else a


def _mirror(a: torch.Tensor) -> torch.Tensor:
    return torch.flip(a, dims=(-2,))


class Group:
    """A finite group of grid symmetries (subgroup of the square's symmetries)."""

    def __init__(self, name: str, elements: List[Tuple[int, int]]):
        self.name = name
        # element index -> (mirror a, rotation r); the plane action is F^a R^r
        self.elements = list(elements)
        self.order = len(elements)
        self._index = {e: i for i, e in enumerate(self.elements)}

    def __repr__(self) -> str:
        return f"Group({self.name!r}, order={self.order})"

    # -- plane action -------------------------------------------------------------------------
    def act_on_plane(self, a: torch.Tensor, i: int) -> torch.Tensor:
        """``L_{g_i}`` applied to the last two (spatial) dims of ``a``."""
        m, r = self.elements[i]
        out = _rot(a, r)
        return _mirror(out) if m else out

    # -- group structure (exact integer tables, derived from the plane action) -----------------
    @cached_property
    def cayley(self) -> List[List[int]]:
        """``cayley[i][j]`` = index of ``g_i g_j`` (as operators: apply g_j, then g_i)."""
        probe = torch.arange(9.0).reshape(3, 3)  # no symmetry, so every element acts differently
        images = [self.act_on_plane(probe, k) for k in range(self.order)]

        def find(t: torch.Tensor) -> int:
            for k, img in enumerate(images):
                if torch.equal(img, t):
                    return k
            raise AssertionError("the element set is not closed under composition")

        return [[find(self.act_on_plane(images[j], i)) for j in range(self.order)]
                for i in range(self.order)]

    @cached_property
    def transpose_conjugates(self) -> List[int]:
        """``[j for each i]`` with ``g_j = T g_i T`` (T: transposing the plane, a reflection the
        group need not contain): the element a transposed network uses where the original used
        ``g_i`` (for p4, the inverse rotation)."""
        probe = torch.arange(9.0).reshape(3, 3)
        images = [self.act_on_plane(probe, k) for k in range(self.order)]
        out = []
        for i in range(self.order):
            conj = self.act_on_plane(probe.t(), i).t()
            out.append(next(k for k, img in enumerate(images) if torch.equal(img, conj)))
        return out

    @cached_property
    def inverse(self) -> List[int]:
        return [row.index(0) for row in self.cayley]

    def compose(self, i: int, j: int) -> int:
        return self.cayley[i][j]

    @cached_property
    def axis_permutations(self) -> torch.Tensor:
        """``perm[i, j] = index(g_i^-1 g_j)``: the group-axis reindexing of the action of g_i.

        For a map on the group, ``(g_i . f)[:, :, j] = L_i f[:, :, perm[i, j]]``.
        """
        return torch.tensor([[self.cayley[self.inverse[i]][j] for j in range(self.order)]
                             for i in range(self.order)], dtype=torch.long)

    @property
    def haar(self) -> float:
        """Measure of the group used by the original group convolution: pi/2 (p4), pi (p4m)."""
        return (2 * math.pi / 4) * (self.order // 4)

    # -- actions on tensors ---------------------------------------------------------------------
    def act_on_group_map(self, f: torch.Tensor, i: int, group_dim: int = 2) -> torch.Tensor:
        """Action of g_i on a function on the group: spatial transform + axis permutation."""
        perm = self.axis_permutations[i].to(f.device)
        return self.act_on_plane(f.index_select(group_dim, perm), i)

    def transform_plane_filters(self, w: torch.Tensor) -> torch.Tensor:
        """Stack ``L_i w`` for every element: ``[*w.shape[:-2]] -> [n, ...]`` (readable path)."""
        return torch.stack([self.act_on_plane(w, i) for i in range(self.order)])

    def transform_group_filters(self, w: torch.Tensor) -> torch.Tensor:
        """Stack ``K_i`` for a filter on the group ``w[..., n_in, k, k]`` (readable path)."""
        return torch.stack([self.act_on_group_map(w, i, group_dim=-3) for i in range(self.order)])

    # -- index tables for fast transforms (one gather instead of a Python loop) -----------------
    def plane_filter_index(self, k: int) -> torch.Tensor:
        """``idx[i, p]``: flat spatial index of ``(L_i w)`` entry p in ``w`` (k x k filters)."""
        return self._cached_index(("plane", k), lambda: self.transform_plane_filters(
            torch.arange(k * k).reshape(k, k)).reshape(self.order, k * k))

    def group_filter_index(self, k: int, n_in: int | None = None) -> torch.Tensor:
        """``idx[i, p]``: flat index into ``w[n_in, k, k]`` of entry p of ``K_i``."""
        n_in = self.order if n_in is None else n_in
        if n_in != self.order:
            raise ValueError(f"{self.name}: group filters need n_in == {self.order}, got {n_in}")
        return self._cached_index(("group", k), lambda: self.transform_group_filters(
            torch.arange(n_in * k * k).reshape(n_in, k, k)).reshape(self.order, n_in * k * k))

    def _cached_index(self, key, build: Callable[[], torch.Tensor]) -> torch.Tensor:
        cache: Dict = self.__dict__.setdefault("_index_cache", {})
        if key not in cache:
            cache[key] = build().contiguous()
        return cache[key]


P4 = Group("p4", [(0, r) for r in range(4)])
P4M = Group("p4m", [(a, r) for a in range(2) for r in range(4)])

_GROUPS = {"p4": P4, "p4m": P4M, "se2": P4, "e2": P4M}


def get_group(group) -> Group:
    """``'p4'`` / ``'p4m'`` (or the original's ``'SE2'`` / ``'E2'``) or a Group -> Group."""
    if isinstance(group, Group):
        return group
    try:
        return _GROUPS[str(group).lower()]
    except KeyError:
        raise ValueError(f"unknown group {group!r}; expected 'p4' or 'p4m'") from None
