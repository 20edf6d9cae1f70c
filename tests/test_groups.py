"""p4 / p4m: element order and actions, group axioms, axis permutations and filter transforms
(SPEC.md section 2), and the fast gather indices against the readable loop transforms."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from agcnn_zoo.groups import P4, P4M, Group, get_group

GROUPS = [P4, P4M]


def rot(a, r):
    return torch.rot90(a, r, dims=[-2, -1])


def flip_rows(a):
    return torch.flip(a, dims=[-2])


# ------------------------------------------------------------------- elements and plane action
def test_orders_names_and_haar():
    assert (P4.order, P4M.order) == (4, 8)
    assert P4.haar == pytest.approx(math.pi / 2, abs=0) and P4M.haar == pytest.approx(math.pi, abs=0)
    assert get_group("p4") is P4 and get_group("SE2") is P4
    assert get_group("P4M") is P4M and get_group("E2") is P4M and get_group(P4M) is P4M
    with pytest.raises(ValueError, match="p4m"):
        get_group("p6")


def test_p4_element_i_is_rot90_i():
    a = torch.randn(2, 3, 5, 5)
    for i in range(4):
        assert torch.equal(P4.act_on_plane(a, i), rot(a, i))
    # rot90 direction of SPEC 1: R([[0,1],[2,3]]) = [[1,3],[0,2]]
    assert P4.act_on_plane(torch.tensor([[0, 1], [2, 3]]), 1).tolist() == [[1, 3], [0, 2]]


def test_p4m_element_4a_plus_r_is_rotate_then_flip_rows():
    a = torch.randn(2, 3, 6, 6)
    for m, r in itertools.product(range(2), range(4)):
        expected = flip_rows(rot(a, r)) if m else rot(a, r)
        assert torch.equal(P4M.act_on_plane(a, 4 * m + r), expected)
    # mirror is the slow index: element 4 is the bare row flip, element 1 the bare quarter turn
    t = torch.tensor([[0, 1], [2, 3]])
    assert P4M.act_on_plane(t, 4).tolist() == [[2, 3], [0, 1]]
    assert P4M.act_on_plane(t, 1).tolist() == [[1, 3], [0, 2]]
    # F R (element 5) differs from R F: the order of the two operations matters
    assert P4M.act_on_plane(t, 5).tolist() == flip_rows(rot(t, 1)).tolist()
    assert P4M.act_on_plane(t, 5).tolist() != rot(flip_rows(t), 1).tolist()


def test_all_elements_act_differently():
    probe = torch.arange(16.0).reshape(4, 4)
    for g in GROUPS:
        images = {tuple(g.act_on_plane(probe, i).flatten().tolist()) for i in range(g.order)}
        assert len(images) == g.order


# ----------------------------------------------------------------------------- group axioms
@pytest.mark.parametrize("g", GROUPS, ids=lambda g: g.name)
def test_cayley_table_is_a_group(g: Group):
    n, table = g.order, g.cayley
    assert all(sorted(row) == list(range(n)) for row in table)                 # Latin square
    assert all(sorted(col) == list(range(n)) for col in zip(*table))
    assert all(table[0][j] == j and table[j][0] == j for j in range(n))        # identity = 0
    for i, j, k in itertools.product(range(n), repeat=3):                      # associativity
        assert table[table[i][j]][k] == table[i][table[j][k]]
    for i in range(n):                                                         # inverses
        assert table[i][g.inverse[i]] == 0 and table[g.inverse[i]][i] == 0
        assert g.compose(i, g.inverse[i]) == 0


@pytest.mark.parametrize("g", GROUPS, ids=lambda g: g.name)
def test_cayley_matches_composition_of_plane_actions(g: Group):
    a = torch.randn(5, 5)
    for i, j in itertools.product(range(g.order), repeat=2):
        assert torch.equal(g.act_on_plane(g.act_on_plane(a, j), i), g.act_on_plane(a, g.compose(i, j)))


def test_known_products():
    assert P4.cayley[1][1] == 2 and P4.inverse == [0, 3, 2, 1]
    # p4m: F R F = R^-1, every mirror is its own inverse, R^-1 = R^3
    assert P4M.compose(4, P4M.compose(1, 4)) == 3
    assert P4M.inverse == [0, 3, 2, 1, 4, 5, 6, 7]
    assert P4M.compose(1, 4) != P4M.compose(4, 1)       # non-abelian


# ----------------------------------------------------------------------- axis permutations
def test_axis_permutations_listed_in_spec():
    assert P4.axis_permutations[1].tolist() == [3, 0, 1, 2]
    assert P4M.axis_permutations[1].tolist() == [3, 0, 1, 2, 5, 6, 7, 4]    # R
    assert P4M.axis_permutations[4].tolist() == [4, 5, 6, 7, 0, 1, 2, 3]    # F (flip dims -2)
    assert P4M.axis_permutations[6].tolist() == [6, 7, 4, 5, 2, 3, 0, 1]    # flip dims -1 = F R^2
    x = torch.randn(6, 6)
    assert torch.equal(P4M.act_on_plane(x, 6), torch.flip(x, dims=[-1]))


@pytest.mark.parametrize("g", GROUPS, ids=lambda g: g.name)
def test_axis_permutations_are_g_inverse_times_g_j(g: Group):
    perm = g.axis_permutations
    assert perm.dtype == torch.long and perm.shape == (g.order, g.order)
    assert perm[0].tolist() == list(range(g.order))
    for i, j in itertools.product(range(g.order), repeat=2):
        assert perm[i, j] == g.compose(g.inverse[i], j)


def _independent_lifting(x, w, g, padding=1):
    """Lifting correlation written from SPEC 3: y[:, o, i] = x * (L_i W)[o] (plain conv2d)."""
    return torch.stack([F.conv2d(x, g.act_on_plane(w, i), padding=padding) for i in range(g.order)],
                       dim=2)


@pytest.mark.parametrize("size", [7, 8])
def test_spec_2_3_relations_on_an_independent_lifting_conv(size):
    """SPEC 2.3 written out: y' = L y[:, :, perm] with the literal permutations."""
    torch.manual_seed(0)
    x, w = torch.randn(2, 3, size, size, dtype=torch.float64), torch.randn(4, 3, 3, 3, dtype=torch.float64)
    cases = [
        (P4, lambda t: rot(t, 1), [3, 0, 1, 2]),
        (P4M, lambda t: rot(t, 1), [3, 0, 1, 2, 5, 6, 7, 4]),
        (P4M, flip_rows, [4, 5, 6, 7, 0, 1, 2, 3]),
        (P4M, lambda t: torch.flip(t, dims=[-1]), [6, 7, 4, 5, 2, 3, 0, 1]),
    ]
    for g, act, perm in cases:
        y = _independent_lifting(x, w, g)
        y_t = _independent_lifting(act(x), w, g)
        torch.testing.assert_close(y_t, act(y[:, :, perm]), rtol=0, atol=1e-12)
        # ... and the library's action reproduces it
        for i in range(g.order):
            if torch.equal(g.act_on_plane(x, i), act(x)):
                torch.testing.assert_close(g.act_on_group_map(y, i), y_t, rtol=0, atol=1e-12)
                break
        else:
            pytest.fail("transformation not found among the group elements")


# ------------------------------------------------------------------------ filter transforms
def test_p4_group_filter_transform_is_rot_then_roll():
    w = torch.randn(3, 2, 4, 3, 3)
    bank = P4.transform_group_filters(w)                                     # [n, O, C, n_in, k, k]
    assert bank.shape == (4, 3, 2, 4, 3, 3)
    for i, j in itertools.product(range(4), repeat=2):
        assert torch.equal(bank[i, :, :, j], rot(w[:, :, (j - i) % 4], i))
    assert torch.equal(bank[0], w)


def test_p4m_group_filter_transform_table_of_spec_2_2():
    """K_i[o, c, 4a + r] = L_i(W[o, c, source]) with the source table of SPEC 2.2."""
    w = torch.randn(3, 2, 8, 3, 3)
    bank = P4M.transform_group_filters(w)
    for m, k in itertools.product(range(2), range(4)):
        i = 4 * m + k
        for a, r in itertools.product(range(2), range(4)):
            if m == 0:
                src = (0, (r - k) % 4) if a == 0 else (1, (r + k) % 4)
            else:
                src = (1, (r + k) % 4) if a == 0 else (0, (r - k) % 4)
            expected = P4M.act_on_plane(w[:, :, 4 * src[0] + src[1]], i)
            assert torch.equal(bank[i, :, :, 4 * a + r], expected), (i, a, r)
    assert torch.equal(bank[0], w)


@pytest.mark.parametrize("g", GROUPS, ids=lambda g: g.name)
def test_plane_filter_transform_stack(g: Group):
    w = torch.randn(3, 2, 4, 4)
    bank = g.transform_plane_filters(w)
    assert bank.shape == (g.order, 3, 2, 4, 4)
    for i in range(g.order):
        assert torch.equal(bank[i], g.act_on_plane(w, i))


# ---------------------------------------------------------------- fast gather index tables
@pytest.mark.parametrize("g", GROUPS, ids=lambda g: g.name)
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 7])
def test_plane_filter_index_equals_loop(g: Group, k):
    w = torch.randn(5, 3, k, k)
    idx = g.plane_filter_index(k)
    assert idx.shape == (g.order, k * k) and idx.dtype == torch.long
    fast = w.reshape(5, 3, k * k)[:, :, idx].reshape(5, 3, g.order, k, k)
    loop = g.transform_plane_filters(w)                                      # [n, O, C, k, k]
    assert torch.equal(fast.permute(2, 0, 1, 3, 4), loop)


@pytest.mark.parametrize("g", GROUPS, ids=lambda g: g.name)
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_group_filter_index_equals_loop(g: Group, k):
    n = g.order
    w = torch.randn(4, 3, n, k, k)
    idx = g.group_filter_index(k)
    assert idx.shape == (n, n * k * k)
    fast = w.reshape(4, 3, n * k * k)[:, :, idx].reshape(4, 3, n, n, k, k)   # [O, C, i, j, k, k]
    loop = g.transform_group_filters(w)                                      # [i, O, C, j, k, k]
    assert torch.equal(fast.permute(2, 0, 1, 3, 4, 5), loop)
    assert g.group_filter_index(k) is idx                                    # cached


def test_group_filter_index_rejects_other_input_group_sizes():
    with pytest.raises(ValueError, match="n_in == 4"):
        P4.group_filter_index(3, n_in=8)


@pytest.mark.parametrize("g", GROUPS, ids=lambda g: g.name)
def test_act_on_group_map_is_a_group_action(g: Group):
    """(g_i g_j) . f == g_i . (g_j . f) on maps on the group, for every pair."""
    f = torch.randn(2, 3, g.order, 5, 5)
    for i, j in itertools.product(range(g.order), repeat=2):
        lhs = g.act_on_group_map(f, g.compose(i, j))
        rhs = g.act_on_group_map(g.act_on_group_map(f, j), i)
        assert torch.equal(lhs, rhs), (i, j)
    assert torch.equal(g.act_on_group_map(f, 0), f)
