"""The CPU-specific parts of the fast path: channels_last inference, the layout-keeping group
batch norm, the strided 2x2 max pool and the cheaper dropout mask. Each is checked against the
plain PyTorch operation it replaces, and the reference path must keep the plain operations."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from agcnn_zoo import nn as gnn
from agcnn_zoo.nn import reference_path
from agcnn_zoo.nn.dropout import keep_mask
from agcnn_zoo.registry import get_entry
from conftest import golden_path
from test_fast_paths import _model

CL = torch.channels_last


def _is_nhwc(group_map: torch.Tensor) -> bool:
    return group_map.flatten(1, 2).is_contiguous(memory_format=CL) and not group_map.is_contiguous()


# ----------------------------------------------------------------------- channels_last inference
@pytest.mark.parametrize("group", ["p4", "p4m"])
def test_inference_convolves_in_channels_last_with_the_same_result(group):
    torch.manual_seed(0)
    lift = gnn.LiftingConv(1, 3, 3, group).eval()
    gconv = gnn.GroupConv(3, 5, 3, group, padding=1).eval()
    x = torch.randn(2, 1, 11, 11)
    with torch.no_grad():
        h = lift(x)
        y = gconv(h)
    assert _is_nhwc(h) and _is_nhwc(y), "CPU inference should hand on NHWC-backed group maps"
    h_ref = lift(x)                       # autograd on: NCHW, the plain layout
    y_ref = gconv(h_ref)
    assert h_ref.is_contiguous() and y_ref.is_contiguous()
    torch.testing.assert_close(h, h_ref.detach(), rtol=0, atol=1e-6)
    torch.testing.assert_close(y, y_ref.detach(), rtol=0, atol=1e-5)


def test_training_keeps_nchw():
    conv = gnn.GroupConv(3, 4, 3, "p4").train()
    with torch.no_grad():
        assert conv(torch.randn(2, 3, 4, 6, 6)).is_contiguous()


def test_group_batch_norm_inference_is_the_batchnorm3d_map_and_keeps_the_layout():
    torch.manual_seed(0)
    bn = gnn.GroupBatchNorm(3)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(-2, 2)
        bn.bias.uniform_(-1, 1)
    plain = torch.nn.BatchNorm3d(3, eps=bn.eps)
    plain.load_state_dict(bn.state_dict())
    bn.eval(), plain.eval()
    x = torch.randn(2, 3, 8, 5, 5)
    nhwc = x.flatten(1, 2).contiguous(memory_format=CL).unflatten(1, (3, 8))
    with torch.no_grad():
        ref = plain(x)
        for inp in (x, nhwc):
            torch.testing.assert_close(bn(inp), ref, rtol=1e-6, atol=1e-6)
        assert _is_nhwc(bn(nhwc))
        with reference_path():
            assert torch.equal(bn(x), ref)
    with pytest.raises(ValueError, match=r"\[B, 3, n, X, Y\]"):
        bn(torch.randn(2, 3, 5, 5))


def test_p4cnn_inference_stays_nhwc_between_layers():
    model = _model("p4cnn_rotmnist").eval()
    seen = {}
    hooks = [getattr(model, n).register_forward_hook(
        lambda m, i, o, n=n: seen.__setitem__(n, _is_nhwc(o))) for n in ("c2", "bn2", "c3", "bn5")]
    with torch.no_grad():
        model(load_file(golden_path("p4cnn_rotmnist"))["input"][:4])
    for h in hooks:
        h.remove()
    assert seen == {"c2": True, "bn2": True, "c3": True, "bn5": True}


# ------------------------------------------------------------------------------------ max pool
@pytest.mark.parametrize("size", [(6, 6), (7, 9), (2, 3)])
def test_strided_max_pool_equals_max_pool2d(size):
    x = torch.randn(3, 4, 8, *size)
    x[0, 0, 0, :2, :2] = 1.5                      # ties
    expected = F.max_pool2d(x.flatten(1, 2), 2, 2).unflatten(1, (4, 8))
    with torch.no_grad():
        assert torch.equal(gnn.spatial_max_pool(x, 2, 2), expected)
        nhwc = x.flatten(1, 2).contiguous(memory_format=CL).unflatten(1, (4, 8))
        assert torch.equal(gnn.spatial_max_pool(nhwc, 2, 2), expected)
    # with autograd: max_pool2d itself (the gradient goes to one maximal element)
    xg = x.clone().requires_grad_()
    gnn.spatial_max_pool(xg, 2, 2).sum().backward()
    xr = x.clone().requires_grad_()
    F.max_pool2d(xr.flatten(1, 2), 2, 2).sum().backward()
    assert torch.equal(xg.grad, xr.grad)


def test_max_pool_keeps_nan():
    x = torch.zeros(1, 1, 1, 4, 4)
    x[..., 1, 1] = float("nan")
    with torch.no_grad():
        y = gnn.spatial_max_pool(x, 2, 2)
    assert torch.isnan(y[..., 0, 0]).all() and (y[..., 1, 1] == 0).all()


# ------------------------------------------------------------------------------------- dropout
def test_keep_mask_keeps_each_element_with_probability_one_minus_p():
    torch.manual_seed(0)
    for p in (0.1, 0.3, 0.5):
        m = keep_mask((1001, 999), p)
        assert m.dtype == torch.bool and m.shape == (1001, 999)
        frac = m.float().mean().item()
        # 1e6 Bernoulli draws: standard deviation < 5e-4
        assert abs(frac - (1 - p)) < 3e-3, (p, frac)
    # neighbouring elements are not correlated (both halves of a random word are used)
    m = keep_mask((2_000_000,), 0.5).float()
    both = (m[0::2] * m[1::2]).mean().item()
    assert abs(both - 0.25) < 3e-3


def test_dropout_scales_kept_elements_and_is_seeded():
    d = gnn.Dropout(0.3).train()
    x = torch.rand(64, 10, 4, 6, 6) + 0.5
    torch.manual_seed(1)
    y = d(x)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / 0.7)
    torch.manual_seed(1)
    assert torch.equal(d(x), y), "the mask must follow torch's seed"
    xg = x.clone().requires_grad_()
    torch.manual_seed(1)
    d(xg).sum().backward()
    torch.testing.assert_close(xg.grad, kept.float() / 0.7)
    assert torch.equal(d.eval()(x), x)


def test_reference_path_keeps_torch_dropout():
    d = gnn.Dropout(0.3).train()
    x = torch.randn(8, 100)
    torch.manual_seed(2)
    with reference_path():
        y = d(x)
    torch.manual_seed(2)
    assert torch.equal(y, F.dropout(x, 0.3, True))


def test_models_use_the_cheaper_dropout():
    for name in ("p4cnn_rotmnist", "p4_allcnnc_cifar"):
        model = get_entry(name).fn()
        drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
        assert drops and all(isinstance(m, gnn.Dropout) for m in drops), name


# ------------------------------------------------------------------------ full alpha backward
def _whole_batch_fills(prof, shapes) -> int:
    """aten::fill_ / zero_ events on a tensor of one of ``shapes`` in a profile."""
    return len([e for e in prof.events() if e.name in ("aten::fill_", "aten::zero_")
                and e.input_shapes and tuple(e.input_shapes[0]) in shapes])


def test_chunked_full_alpha_backward_fills_one_input_gradient_not_one_per_chunk():
    """Each chunk's gradient goes into one whole-layer input gradient; slicing the input per
    chunk under autograd used to zero-fill a whole-batch gradient for every chunk (O(B^2))."""
    from torch.profiler import ProfilerActivity, profile
    torch.manual_seed(0)
    layer = gnn.AttGroupConv(3, 4, 3, "p4",
                             channel_attention=gnn.ResponseChannelAttention(4, 3, "p4", 1),
                             spatial_attention=gnn.ResponseSpatialAttention(4, 7, "p4")).train()
    x = torch.randn(6, 3, 4, 9, 9, requires_grad=True)
    layer.max_chunk_elements = 3 * 4 * 4 * 7 * 7          # one (sample, output channel) slice
    out = layer(x)
    whole = {(6, 4, 3, 9, 9), (6, 3, 4, 9, 9)}
    # positive control: the counter sees the regression it guards against (one whole-batch
    # zero-filled gradient per chunk, as torch.zeros_like per chunk did)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as control:
        for _ in range(24):
            torch.zeros_like(x)
    assert _whole_batch_fills(control, whole) >= 24
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        out.square().sum().backward()
    fills = _whole_batch_fills(prof, whole)
    assert fills <= 2, f"{fills} whole-batch gradient fills for 24 chunks"
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_fast_path_allowed_refuses_each_condition_it_names():
    from agcnn_zoo.nn.base import FX, fast_path_allowed, grad_wanted
    x = torch.zeros(2, requires_grad=True)
    assert fast_path_allowed(x, cpu_only=True) and fast_path_allowed(unless=())
    assert not fast_path_allowed(training=True, unless=())
    assert not fast_path_allowed(no_grad_mode=True)
    assert not fast_path_allowed(no_grad_for=(x,)) and grad_wanted(x)
    assert fast_path_allowed(no_grad_for=(x.detach(),)) and not grad_wanted(x.detach())
    with torch.no_grad():
        assert fast_path_allowed(no_grad_mode=True) and fast_path_allowed(no_grad_for=(x,))
    meta = torch.zeros(2, device="meta")
    assert fast_path_allowed(meta, unless=(FX,)) and not fast_path_allowed(meta, cpu_only=True)
