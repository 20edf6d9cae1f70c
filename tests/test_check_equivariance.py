"""agcnn_zoo.check_equivariance: escnn's contract (transform the input vs transform the
output, one error per group element), on lifting layers, group layers and whole networks, and
it catches layers broken on purpose."""
from __future__ import annotations

import pytest
import torch

import agcnn_zoo as zoo
from agcnn_zoo import nn as gnn
from agcnn_zoo.groups import P4, P4M


class ShiftedGroupConv(gnn.GroupConv):
    """Broken on purpose: adds a fixed, non-symmetric ramp to the output (breaks the spatial
    part of equivariance)."""

    def forward(self, x):
        y = super().forward(x)
        ramp = torch.arange(y.shape[-1], dtype=y.dtype, device=y.device)
        return y + 0.1 * ramp


class FrozenAxisGroupConv(gnn.GroupConv):
    """Broken on purpose: uses ONE filter for every output group element (no transformed
    copies), so rotating the input does not permute the group axis of the output."""

    def forward(self, x):
        w = self.weight                                                   # [O, C, n, k, k]
        y = torch.nn.functional.conv2d(x.flatten(1, 2), w.flatten(1, 2), padding=self.padding)
        return y.unsqueeze(2).expand(-1, -1, self.group.order, -1, -1)


@pytest.mark.parametrize("g", [P4, P4M], ids=lambda g: g.name)
def test_equivariant_layers_report_rounding_only(g):
    torch.manual_seed(0)
    lift = gnn.LiftingConv(3, 4, 3, g, padding=1).double()
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    errs = zoo.check_equivariance(lift, x, g.name)
    assert [i for i, _ in errs] == list(range(g.order))
    assert max(e for _, e in errs) < 1e-12
    gconv = gnn.GroupConv(3, 4, 3, g, padding=1).double()
    h = torch.randn(2, 3, g.order, 8, 8, dtype=torch.float64)
    assert max(e for _, e in zoo.check_equivariance(gconv, h, g)) < 1e-12
    assert len(zoo.check_equivariance(gconv, h, g, elements=[1, 3])) == 2


@pytest.mark.parametrize("broken", [ShiftedGroupConv, FrozenAxisGroupConv])
@pytest.mark.parametrize("g", [P4, P4M], ids=lambda g: g.name)
def test_it_catches_a_broken_layer(broken, g):
    torch.manual_seed(0)
    good = gnn.GroupConv(3, 4, 3, g, padding=1).double()
    bad = broken(3, 4, 3, g, padding=1).double()
    bad.load_state_dict(good.state_dict())
    h = torch.randn(2, 3, g.order, 8, 8, dtype=torch.float64)
    assert max(e for _, e in zoo.check_equivariance(good, h, g)) < 1e-12
    errs = dict(zoo.check_equivariance(bad, h, g))
    assert errs[0] == 0.0                       # the identity is never an error
    assert max(errs.values()) > 1e-2


def test_whole_networks_are_invariant():
    torch.manual_seed(0)
    model = zoo.create_model("af_p4cnn_rotmnist").double().eval()
    x = torch.randn(2, 1, 28, 28, dtype=torch.float64)
    errs = zoo.check_equivariance(model, x, "p4")        # logits [B, 10]: invariant
    assert max(e for _, e in errs) < 1e-10
    # the backbone's output is a map on the group: equivariant, checked as such
    # (forward_features folds the group axis into the channels, timm's NCHW)
    errs = zoo.check_equivariance(model.forward_group_features, x, "p4")
    assert max(e for _, e in errs) < 1e-10
    # a Z2 CNN is not rotation invariant, and the check says so
    z2 = zoo.create_model("z2cnn_rotmnist").double().eval()
    assert max(e for _, e in zoo.check_equivariance(z2, x, "p4")) > 1e-3


def test_arguments_are_checked():
    conv = gnn.GroupConv(2, 2, 3, "p4")
    with pytest.raises(ValueError, match="elements 0..3"):
        zoo.check_equivariance(conv, torch.randn(1, 2, 4, 5, 5), "p4", elements=[4])
    with pytest.raises(ValueError, match="4 elements on axis 2"):
        zoo.check_equivariance(conv, torch.randn(1, 2, 8, 5, 5), "p4")
    with pytest.raises(ValueError, match="unknown kind"):
        zoo.check_equivariance(conv, torch.randn(1, 2, 4, 5, 5), "p4", output_kind="rotated")
    lift = gnn.LiftingConv(1, 2, 3, "p4")
    errs = zoo.check_equivariance(lift, torch.randn(1, 1, 5, 5), "p4", relative=True)
    assert all(e < 1e-5 for _, e in errs)
