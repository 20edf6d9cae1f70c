"""Every layer of agcnn_zoo.nn: exact equivariance for p4 and p4m, train/eval behaviour of the
filter-bank cache, and the fast path against the readable ``reference_path()``.

On spatial sizes. A stride-1 correlation with symmetric padding maps output pixel x to an input
window centred at ``x - p + d(k-1)/2``: a unit-slope map that sends the output centre to the
input centre, so rotating / flipping about the centre commutes with it for odd AND even sizes
and kernels. With stride s the sampled windows are symmetric about the input centre only when
the last window ends on the last (padded) pixel, i.e. ``(X + 2p - d(k-1) - 1) % s == 0``;
otherwise a rotation moves the sampling grid and equivariance is lost (tested below).
Pooling is the same with (k, s, p). So stride-2 cases use k3/p1 on odd sizes or k2/p0 on even.
"""
from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Callable, Sequence

import pytest
import torch

from agcnn_zoo import check_equivariance
from agcnn_zoo import nn as gnn
from agcnn_zoo.groups import P4, P4M, Group
from agcnn_zoo.nn import full_alpha

GROUPS = [P4, P4M]
B, C_IN, C_OUT = 2, 3, 4
TOL = 1e-5


def exact_stride(size, k, s, p, d=1):
    return (size + 2 * p - d * (k - 1) - 1) % s == 0


@dataclass
class Case:
    name: str
    build: Callable[[Group], torch.nn.Module]
    kind: str                     # "plane" or "group": the input
    sizes: Sequence[int] = (7, 8)
    batch_norm: bool = False
    cached: bool = True           # derives filter banks (CachedBanks somewhere inside)
    full_alpha: bool = False

    def __str__(self):
        return self.name


def _rca(g, lifting, ratio=1):
    return gnn.ResponseChannelAttention(C_OUT, C_IN, g, ratio, lifting=lifting)


def _rsa(g, lifting, k=3, d=1):
    return gnn.ResponseSpatialAttention(C_OUT, k, g, dilation=d, lifting=lifting)


CASES = [
    # -- plain convolutions
    Case("lift_k3_p1", lambda g: gnn.LiftingConv(C_IN, C_OUT, 3, g, padding=1), "plane"),
    Case("lift_k3_dil2", lambda g: gnn.LiftingConv(C_IN, C_OUT, 3, g, padding=1, dilation=2), "plane"),
    Case("lift_k4_p0", lambda g: gnn.LiftingConv(C_IN, C_OUT, 4, g), "plane"),
    Case("lift_k3_s2_p1", lambda g: gnn.LiftingConv(C_IN, C_OUT, 3, g, stride=2, padding=1), "plane",
         sizes=(7, 9)),
    Case("lift_k2_s2", lambda g: gnn.LiftingConv(C_IN, C_OUT, 2, g, stride=2), "plane", sizes=(8,)),
    Case("gconv_k3_p1", lambda g: gnn.GroupConv(C_IN, C_OUT, 3, g, padding=1), "group"),
    Case("gconv_k3_p0", lambda g: gnn.GroupConv(C_IN, C_OUT, 3, g), "group"),
    Case("gconv_k3_dil2_p2", lambda g: gnn.GroupConv(C_IN, C_OUT, 3, g, padding=2, dilation=2), "group"),
    Case("gconv_k4_p0", lambda g: gnn.GroupConv(C_IN, C_OUT, 4, g), "group"),
    Case("gconv_k1", lambda g: gnn.GroupConv(C_IN, C_OUT, 1, g), "group"),
    Case("gconv_k3_s2_p1", lambda g: gnn.GroupConv(C_IN, C_OUT, 3, g, stride=2, padding=1), "group",
         sizes=(7, 9)),
    Case("gconv_k2_s2", lambda g: gnn.GroupConv(C_IN, C_OUT, 2, g, stride=2), "group", sizes=(8,)),
    # -- pooling and batch norm
    Case("maxpool_k2_s2", lambda g: gnn.SpatialMaxPool(2, 2), "group", sizes=(8,), cached=False),
    Case("maxpool_k3_s2_p1", lambda g: gnn.SpatialMaxPool(3, 2, 1), "group", sizes=(7,), cached=False),
    Case("avgpool_k2_s2", lambda g: gnn.SpatialAvgPool(2, 2), "group", sizes=(8,), cached=False),
    Case("avgpool_k3_s1_p1", lambda g: gnn.SpatialAvgPool(3, 1, 1), "group", cached=False),
    Case("group_bn", lambda g: _random_bn(gnn.GroupBatchNorm(C_IN)), "group", batch_norm=True,
         cached=False),
    # -- alpha_F attention
    Case("fatt_lift_ch_sp", lambda g: gnn.FAttLiftingConv(
        C_IN, C_OUT, 3, g, gnn.FeatureChannelAttention(C_IN, 1),
        gnn.FeatureSpatialAttention(7, g, dilation=2), padding=1), "plane"),
    Case("fatt_lift_ch", lambda g: gnn.FAttLiftingConv(
        C_IN, C_OUT, 3, g, channel_attention=gnn.FeatureChannelAttention(C_IN, 1)), "plane"),
    Case("fatt_lift_sp", lambda g: gnn.FAttLiftingConv(
        C_IN, C_OUT, 3, g, spatial_attention=gnn.FeatureSpatialAttention(5, g), padding=1), "plane"),
    Case("fatt_gconv_ch_sp", lambda g: gnn.FAttGroupConv(
        C_IN, C_OUT, 3, g, gnn.GroupChannelAttention(C_IN, g, 1),
        gnn.GroupSpatialAttention(5, g, dilation=2), padding=1), "group"),
    Case("fatt_gconv_ch", lambda g: gnn.FAttGroupConv(
        C_IN, C_OUT, 3, g, channel_attention=gnn.GroupChannelAttention(C_IN, g, 3)), "group"),
    Case("fatt_gconv_sp", lambda g: gnn.FAttGroupConv(
        C_IN, C_OUT, 4, g, spatial_attention=gnn.GroupSpatialAttention(3, g)), "group"),
    # -- co-attentive comparison layers
    Case("coatt_lift", lambda g: gnn.FAttLiftingConv(
        C_IN, C_OUT, 3, g, spatial_attention=gnn.CoAttention(C_IN, g)), "plane"),
    Case("coatt_gconv", lambda g: gnn.FAttGroupConv(
        C_IN, C_OUT, 3, g, spatial_attention=gnn.GroupCoAttention(C_IN, g), padding=1), "group"),
    # -- attention modules on their own
    Case("feature_channel_attention", lambda g: gnn.FeatureChannelAttention(C_IN, 1), "plane",
         cached=False),
    Case("group_channel_attention", lambda g: gnn.GroupChannelAttention(C_IN, g, 1), "group"),
    Case("feature_spatial_attention", lambda g: gnn.FeatureSpatialAttention(5, g, dilation=2), "plane"),
    Case("group_spatial_attention", lambda g: gnn.GroupSpatialAttention(5, g), "group"),
    Case("co_attention", lambda g: gnn.CoAttention(C_IN, g), "plane"),
    Case("group_co_attention", lambda g: gnn.GroupCoAttention(C_IN, g), "group"),
    # -- full alpha attention
    Case("att_lift_full", lambda g: gnn.AttLiftingConv(
        C_IN, C_OUT, 3, g, _rca(g, True), _rsa(g, True), padding=1), "plane", full_alpha=True),
    Case("att_lift_ch", lambda g: gnn.AttLiftingConv(
        C_IN, C_OUT, 3, g, channel_attention=_rca(g, True)), "plane", full_alpha=True),
    Case("att_lift_sp_dil2", lambda g: gnn.AttLiftingConv(
        C_IN, C_OUT, 3, g, spatial_attention=_rsa(g, True, 3, 2), dilation=2, padding=2), "plane",
         full_alpha=True),
    Case("att_lift_none", lambda g: gnn.AttLiftingConv(C_IN, C_OUT, 3, g), "plane", full_alpha=True),
    Case("att_gconv_full", lambda g: gnn.AttGroupConv(
        C_IN, C_OUT, 3, g, _rca(g, False, 3), _rsa(g, False), padding=1), "group", full_alpha=True),
    Case("att_gconv_full_k4", lambda g: gnn.AttGroupConv(
        C_IN, C_OUT, 4, g, _rca(g, False), _rsa(g, False, 5)), "group", full_alpha=True),
    Case("att_gconv_ch", lambda g: gnn.AttGroupConv(
        C_IN, C_OUT, 3, g, channel_attention=_rca(g, False)), "group", full_alpha=True),
    Case("att_gconv_sp_dil2", lambda g: gnn.AttGroupConv(
        C_IN, C_OUT, 3, g, spatial_attention=_rsa(g, False, 3, 2), padding=1), "group",
         full_alpha=True),
    Case("att_gconv_none", lambda g: gnn.AttGroupConv(C_IN, C_OUT, 3, g, padding=1), "group",
         full_alpha=True),
    Case("att_gconv_full_s2", lambda g: gnn.AttGroupConv(
        C_IN, C_OUT, 3, g, _rca(g, False), _rsa(g, False), stride=2, padding=1), "group",
         sizes=(7, 9), full_alpha=True),
]
CASE_IDS = [c.name for c in CASES]
BY_NAME = {c.name: c for c in CASES}


def _random_bn(bn):
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    return bn


def make(case: Case, g: Group, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return case.build(g)


def make_input(case: Case, g: Group, size: int, seed: int = 1, channels: int = C_IN) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    shape = (B, channels, size, size) if case.kind == "plane" else (B, channels, g.order, size, size)
    return torch.randn(shape, generator=gen)


def equivariance_error(layer, x, g: Group) -> float:
    """max over g of max |layer(g.x) - g.layer(x)| (``agcnn_zoo.check_equivariance``), relative
    to max(1, max |layer(x)|): float32 sums of a few hundred terms of size ~1 round at ~1e-6 of
    their magnitude."""
    return max(err for _, err in check_equivariance(layer, x, g, relative=True))


def assert_close_scaled(a, b, what):
    # max abs 1e-5 relative to the magnitude (sums over many pixels can reach tens)
    scale = max(1.0, b.abs().max().item())
    err = (a - b).abs().max().item()
    assert err <= TOL * scale, f"{what}: max abs diff {err:.3g} (magnitude {scale:.3g})"


def _params_and_cases():
    for case, g in itertools.product(CASES, GROUPS):
        for size in case.sizes:
            yield pytest.param(case, g, size, id=f"{case.name}-{g.name}-{size}")


# ------------------------------------------------------------------------------ equivariance
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("case,g,size", list(_params_and_cases()))
def test_equivariance(case, g, size, mode):
    layer = make(case, g).train(mode == "train")
    x = make_input(case, g, size)
    with torch.no_grad():
        err = equivariance_error(layer, x, g)
        assert layer(x).abs().max() > 1e-3          # not trivially zero
    assert err <= TOL, f"{case.name} {g.name} size {size} {mode}: max abs diff {err:.3g}"


@pytest.mark.parametrize("g", GROUPS, ids=lambda g: g.name)
@pytest.mark.parametrize("name,size", [("lift_k3_s2_p1", 8), ("gconv_k3_s2_p1", 8),
                                       ("gconv_k2_s2", 7), ("maxpool_k2_s2", 7),
                                       ("att_gconv_full_s2", 8)])
def test_strided_layers_break_equivariance_on_unsuitable_sizes(name, size, g):
    """Control for the size rule above (and for the test itself): the same layers on sizes
    where the stride grid is not centred are NOT equivariant."""
    case = BY_NAME[name]
    assert size not in case.sizes
    layer = make(case, g).eval()
    with torch.no_grad():
        assert equivariance_error(layer, make_input(case, g, size), g) > 1e-2


@pytest.mark.parametrize("g", GROUPS, ids=lambda g: g.name)
@pytest.mark.parametrize("mode", ["max", "mean"])
def test_group_pool_is_invariant_on_the_group_axis(g, mode):
    pool = gnn.GroupPool(mode)
    x = torch.randn(B, C_IN, g.order, 6, 6)
    y = pool(x)
    assert y.shape == (B, C_IN, 6, 6)
    for i in range(g.order):
        # the group axis is pooled away: only the plane action remains
        torch.testing.assert_close(pool(g.act_on_group_map(x, i)), g.act_on_plane(y, i), rtol=0, atol=TOL)
    with pytest.raises(ValueError, match="max"):
        gnn.GroupPool("sum")


TRAINED = ["lift_k3_dil2", "gconv_k3_p1", "group_bn", "fatt_lift_ch_sp", "fatt_gconv_ch_sp",
           "coatt_lift", "coatt_gconv", "att_lift_full", "att_gconv_full"]


@pytest.mark.parametrize("g", GROUPS, ids=lambda g: g.name)
@pytest.mark.parametrize("name", TRAINED)
def test_equivariance_after_optimizer_steps(name, g):
    """Equivariance must not depend on the weights: train a few Adam steps on random data."""
    case = BY_NAME[name]
    layer = make(case, g).train()
    before = copy.deepcopy(layer.state_dict())
    opt = torch.optim.Adam(layer.parameters(), lr=0.05)
    for step in range(3):
        x = make_input(case, g, 7, seed=10 + step)
        y = layer(x)
        loss = (y - torch.randn_like(y)).pow(2).mean() + y[..., :2, :].mean()  # not symmetric
        opt.zero_grad()
        loss.backward()
        opt.step()
    changed = [k for k, v in layer.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.endswith("weight") for k in changed)
    for mode in (True, False):
        layer.train(mode)
        for size in case.sizes:
            with torch.no_grad():
                err = equivariance_error(layer, make_input(case, g, size, seed=99), g)
            assert err <= TOL, f"after training, {'train' if mode else 'eval'} size {size}: {err:.3g}"


# ------------------------------------------------------------------- train / eval and caches
def _bank_buffers(module):
    return sorted(n for n, _ in module.named_buffers() if n.split(".")[-1].startswith("_bank_"))


@pytest.mark.parametrize("g", GROUPS, ids=lambda g: g.name)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_state_dict_keys_equal_in_train_and_eval_and_caches_are_not_persistent(case, g):
    layer = make(case, g).train()
    x = make_input(case, g, case.sizes[0])
    layer(x)
    keys_train = list(layer.state_dict())
    assert _bank_buffers(layer) == []                       # training never caches
    layer.eval()
    with torch.no_grad():
        layer(x)
    assert list(layer.state_dict()) == keys_train
    banks = _bank_buffers(layer)
    assert bool(banks) == case.cached, banks                # eval caches banks ...
    assert not any(k.split(".")[-1].startswith("_bank_") for k in layer.state_dict())  # ... privately
    layer.train()
    assert _bank_buffers(layer) == []                       # .train() drops them
    assert list(layer.state_dict()) == keys_train


@pytest.mark.parametrize("g", GROUPS, ids=lambda g: g.name)
@pytest.mark.parametrize("case", [c for c in CASES if not c.batch_norm], ids=lambda c: c.name)
def test_train_and_eval_outputs_equal_without_batch_norm(case, g):
    layer = make(case, g)
    x = make_input(case, g, case.sizes[-1])
    y_train = layer.train()(x)
    layer.eval()
    y_eval_grad = layer(x)                                  # eval with parameter gradients wanted
    with torch.no_grad():
        y_eval = layer(x)                                   # eval through the cache
        y_eval_again = layer(x)
    # CPU inference convolves in channels_last: other kernels, other rounding (a few ulp)
    scale = max(1.0, y_train.abs().max().item())
    assert (y_eval - y_train.detach()).abs().max().item() <= 1e-6 * scale * 4
    torch.testing.assert_close(y_eval_grad.detach(), y_train.detach(), rtol=0, atol=1e-6)
    assert torch.equal(y_eval, y_eval_again)


def test_group_bn_train_and_eval_differ_as_batch_norm_should():
    bn = _random_bn(gnn.GroupBatchNorm(C_IN))
    x = torch.randn(4, C_IN, 4, 5, 5) * 3 + 1
    y = bn.train()(x)
    # train mode: statistics per channel over batch, group axis and space
    mean = x.mean(dim=(0, 2, 3, 4), keepdim=True)
    var = x.var(dim=(0, 2, 3, 4), unbiased=False, keepdim=True)
    ref = (x - mean) / torch.sqrt(var + 2e-5) * bn.weight.view(1, -1, 1, 1, 1) + bn.bias.view(1, -1, 1, 1, 1)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    assert bn.eps == 2e-5
    assert not torch.allclose(bn.eval()(x), y, atol=1e-2)
    with pytest.raises(ValueError, match=r"\[B, 3, n, X, Y\]"):
        bn(torch.randn(2, C_IN, 5, 5))


def _fresh_reference_output(layer, x):
    with torch.no_grad(), gnn.reference_path():
        return layer(x)


INVALIDATION_CASES = ["lift_k3_p1", "gconv_k3_p1", "fatt_gconv_ch_sp", "fatt_lift_ch_sp", "coatt_gconv",
                      "att_lift_full", "att_gconv_full", "group_channel_attention",
                      "group_spatial_attention"]


@pytest.mark.parametrize("g", GROUPS, ids=lambda g: g.name)
@pytest.mark.parametrize("name", INVALIDATION_CASES)
def test_eval_cache_follows_in_place_edits_of_every_parameter(name, g):
    case = BY_NAME[name]
    layer = make(case, g).eval()
    x = make_input(case, g, 7)
    for pname, p in layer.named_parameters():
        with torch.no_grad():
            y_before = layer(x)                       # cache built (or reused)
            p.mul_(-1.5).add_(0.1)                    # in-place edit in eval mode
            y_after = layer(x)
        assert not torch.allclose(y_after, y_before, atol=1e-4), f"editing {pname} changed nothing"
        assert_close_scaled(y_after, _fresh_reference_output(layer, x), f"after editing {pname}")


@pytest.mark.parametrize("name", ["gconv_k3_p1", "fatt_gconv_ch_sp", "att_gconv_full"])
def test_eval_cache_follows_edits_in_inference_mode_and_data_assignment(name):
    case, g = BY_NAME[name], P4
    layer = make(case, g).eval()
    x = make_input(case, g, 7)
    with torch.inference_mode():
        y0 = layer(x)
        layer.weight.mul_(2.0)
        y1 = layer(x)
    assert not torch.allclose(y0, y1, atol=1e-4)
    assert_close_scaled(y1, _fresh_reference_output(layer, x), "edit in inference mode")
    layer.weight.data = torch.randn_like(layer.weight)      # new storage, not an in-place op
    with torch.no_grad():
        y2 = layer(x)
    assert_close_scaled(y2, _fresh_reference_output(layer, x), ".data assignment")


@pytest.mark.parametrize("g", GROUPS, ids=lambda g: g.name)
@pytest.mark.parametrize("name", INVALIDATION_CASES)
def test_eval_cache_follows_load_state_dict(name, g):
    case = BY_NAME[name]
    layer, other = make(case, g, seed=0).eval(), make(case, g, seed=5).eval()
    x = make_input(case, g, 8)
    with torch.no_grad():
        y_old, y_other = layer(x), other(x)
        layer.load_state_dict(other.state_dict())
        y_new = layer(x)
    assert not torch.allclose(y_old, y_other, atol=1e-4)
    torch.testing.assert_close(y_new, y_other, rtol=0, atol=1e-6)


def test_eval_cache_follows_dtype_change():
    case, g = BY_NAME["att_gconv_full"], P4M
    layer = make(case, g).eval()
    x = make_input(case, g, 7)
    with torch.no_grad():
        layer(x)
        layer.double()
        y = layer(x.double())
    assert y.dtype == torch.float64
    torch.testing.assert_close(y, _fresh_reference_output(layer, x.double()), rtol=0, atol=1e-12)


# ------------------------------------------------------------------ fast path vs reference
def _forward_and_grads(layer, x, seed=3):
    x = x.clone().requires_grad_(True)
    y = layer(x)
    probe = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed))
    params = [p for p in layer.parameters() if p.requires_grad]
    grads = torch.autograd.grad((y * probe).sum(), [x] + params)
    return y.detach(), grads


def _compare_fast_and_reference(layer, x, label):
    y_fast, g_fast = _forward_and_grads(layer, x)
    with gnn.reference_path():
        y_ref, g_ref = _forward_and_grads(layer, x)
    assert_close_scaled(y_fast, y_ref, f"{label} forward")
    names = ["input"] + [n for n, p in layer.named_parameters() if p.requires_grad]
    assert len(g_fast) == len(g_ref) == len(names)
    for n, a, b in zip(names, g_fast, g_ref):
        assert_close_scaled(a, b, f"{label} grad {n}")
    return y_fast


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("g", GROUPS, ids=lambda g: g.name)
@pytest.mark.parametrize("case", [c for c in CASES if c.cached], ids=lambda c: c.name)
def test_fast_path_equals_reference_path(case, g, mode):
    layer = make(case, g).train(mode == "train")
    for size in case.sizes:
        _compare_fast_and_reference(layer, make_input(case, g, size), f"{case.name} {mode} {size}")
    if mode == "eval":
        # no_grad eval (the cached banks) and input-only gradients with frozen weights
        x = make_input(case, g, case.sizes[0])
        with torch.no_grad():
            y_cached = layer(x)
        assert_close_scaled(y_cached, _fresh_reference_output(layer, x), "cached eval forward")
        layer.requires_grad_(False)
        _compare_fast_and_reference(layer, x, f"{case.name} frozen eval")
        assert _bank_buffers(layer) or not case.cached


FULL_ALPHA = [c for c in CASES if c.full_alpha and "none" not in c.name]


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("g", GROUPS, ids=lambda g: g.name)
@pytest.mark.parametrize("case", FULL_ALPHA, ids=lambda c: c.name)
def test_full_alpha_chunked_and_checkpointed_equals_reference(case, g, mode, monkeypatch):
    calls = []
    real_hook = full_alpha.plan.run_recomputed_chunk

    def counting_hook(*args, **kwargs):
        calls.append(1)
        return real_hook(*args, **kwargs)

    monkeypatch.setattr(full_alpha.plan, "run_recomputed_chunk", counting_hook)
    layer = make(case, g).train(mode == "train")
    x = make_input(case, g, case.sizes[0])
    y_whole = layer(x).detach()
    assert calls == []                                       # one chunk: no checkpointing
    # responses of ONE (sample, output channel): C * J * n * X' * Y'
    one_slice = C_IN * (1 if case.kind == "plane" else g.order) * g.order * y_whole.shape[-1] ** 2
    # budgets of one slice (every output channel apart) and of whole samples (batch split)
    for budget, min_chunks in ((one_slice, C_OUT), (C_OUT * one_slice, B)):
        layer.max_chunk_elements = budget
        calls.clear()
        y_chunked = _compare_fast_and_reference(layer, x, f"{case.name} chunks of {budget} {mode}")
        assert len(calls) >= min_chunks, f"budget {budget}: {len(calls)} checkpointed chunks"
        assert_close_scaled(y_chunked, y_whole, "chunked vs whole")
    # an uneven split (3 channels, then 1) without gradients: no checkpoint, same output
    layer.max_chunk_elements = 3 * one_slice
    calls.clear()
    with torch.no_grad():
        assert_close_scaled(layer(x), y_whole, "uneven chunks, no grad")
    assert calls == []


def test_layers_reject_wrong_input_shapes():
    with pytest.raises(ValueError, match=r"\[B, 3, X, Y\]"):
        gnn.LiftingConv(3, 4, 3, "p4")(torch.randn(2, 2, 7, 7))
    with pytest.raises(ValueError, match=r"\[B, 3, 8, X, Y\]"):
        gnn.GroupConv(3, 4, 3, "p4m")(torch.randn(2, 3, 4, 7, 7))
    with pytest.raises(ValueError, match=r"\[B, 3, 4, X, Y\]"):
        gnn.AttGroupConv(3, 4, 3, "p4", _rca("p4", False))(torch.randn(2, 3, 7, 7))
    with pytest.raises(ValueError, match="lifting"):
        gnn.AttGroupConv(3, 4, 3, "p4", channel_attention=_rca("p4", True))
    with pytest.raises(ValueError, match="stride"):
        gnn.GroupConv(3, 4, 3, "p4", stride=-1)
