"""The layer contract (agcnn_zoo/nn/base.py) and the tests that guard it.

* Inside ``reference_path()`` no fast formulation runs: every fast kernel is made to raise and
  every layer kind, and a model of every family, still runs forward and backward. The same
  harness outside ``reference_path()`` must hit a fast kernel (the control that it can fail).
* The reference path derives its constants (pi/2, pi, 2 pi / n) and group-axis permutations
  itself, so a wrong constant in the fast path is a fast-vs-reference difference.
* The full-alpha p4m output factor is pinned (AttGroupConv without attention == GroupConv / 4).
* The p4m per-layer golden of the original (a p4m DenseNet on PCam) is reproduced, fast and
  reference path.
* Every layer's ``export()`` and ``check_equivariance()`` hooks.
"""
from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import agcnn_zoo
from agcnn_zoo import nn as gnn
from agcnn_zoo.groups import P4, P4M
from agcnn_zoo.hub.convert import convert_state_dict, load_original_checkpoint
from agcnn_zoo.nn import full_alpha, pooling
from agcnn_zoo.nn import reference as ref
from agcnn_zoo.nn.filter_banks import CachedBanks
from agcnn_zoo.registry import get_entry
from conftest import CHECKPOINTS, GOLDEN, checkpoint_path, shared

GROUPS = [P4, P4M]


class FastPathUsed(AssertionError):
    pass


def _all_subclasses(cls):
    """The package's subclasses of ``cls`` (not those a test defines)."""
    out = set()
    for sub in cls.__subclasses__():
        out |= ({sub} if sub.__module__.startswith("agcnn_zoo.") else set()) | _all_subclasses(sub)
    return out


def _raise(what):
    def fail(*args, **kwargs):
        raise FastPathUsed(f"{what} ran while the reference path was requested")
    return fail


@pytest.fixture
def fast_kernels_raise(monkeypatch):
    """Every fast formulation of the package raises FastPathUsed."""
    for cls in _all_subclasses(gnn.Layer) | {gnn.FullAlphaConv}:
        for name in ("forward_fast", "conv_fast"):
            if name in vars(cls):
                monkeypatch.setattr(cls, name, _raise(f"{cls.__name__}.{name}"))
    monkeypatch.setattr(full_alpha, "attention_term", _raise("full_alpha.attention_term"))
    monkeypatch.setattr(pooling, "spatial_max_pool_fast", _raise("spatial_max_pool_fast"))
    monkeypatch.setattr(pooling, "_max_pool2x2", _raise("pooling._max_pool2x2"))
    # filter banks (gathered and cached) belong to the fast path only
    monkeypatch.setattr(CachedBanks, "cached_bank", _raise("CachedBanks.cached_bank"))


def _rca(g, lifting, cin=3, cout=4):
    return gnn.ResponseChannelAttention(cout, cin, g, 1, lifting=lifting)


def _rsa(g, lifting, cout=4):
    return gnn.ResponseSpatialAttention(cout, 3, g, lifting=lifting)


#: name -> (builder(group), input kind): one of every layer kind
LAYERS = {
    "lifting": (lambda g: gnn.LiftingConv(3, 4, 3, g, padding=1), "plane"),
    "group": (lambda g: gnn.GroupConv(3, 4, 3, g, padding=1), "group"),
    "fatt_lifting": (lambda g: gnn.FAttLiftingConv(
        3, 4, 3, g, channel_attention=gnn.FeatureChannelAttention(3),
        spatial_attention=gnn.FeatureSpatialAttention(3, g), padding=1), "plane"),
    "fatt_group": (lambda g: gnn.FAttGroupConv(
        3, 4, 3, g, channel_attention=gnn.GroupChannelAttention(3, g),
        spatial_attention=gnn.GroupSpatialAttention(3, g), padding=1), "group"),
    "co_lifting": (lambda g: gnn.FAttLiftingConv(
        3, 4, 3, g, spatial_attention=gnn.CoAttention(3, g)), "plane"),
    "co_group": (lambda g: gnn.FAttGroupConv(
        3, 4, 3, g, spatial_attention=gnn.GroupCoAttention(3, g)), "group"),
    "att_lifting": (lambda g: gnn.AttLiftingConv(3, 4, 3, g, _rca(g, True), _rsa(g, True)), "plane"),
    "att_group": (lambda g: gnn.AttGroupConv(3, 4, 3, g, _rca(g, False), _rsa(g, False)), "group"),
    "att_group_plain": (lambda g: gnn.AttGroupConv(3, 4, 3, g), "group"),
    "batch_norm": (lambda g: gnn.GroupBatchNorm(3), "group"),
    "dropout": (lambda g: gnn.Dropout(0.3), "group"),
    "max_pool": (lambda g: gnn.SpatialMaxPool(2), "group"),
    "avg_pool": (lambda g: gnn.SpatialAvgPool(2), "group"),
}


def _input(kind, g, size=8, batch=2):
    gen = torch.Generator().manual_seed(0)
    shape = (batch, 3, size, size) if kind == "plane" else (batch, 3, g.order, size, size)
    return torch.randn(*shape, generator=gen, requires_grad=True)


def _run(layer, x, train):
    layer.train(train)
    y = layer(x)
    y.square().sum().backward()
    return y


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_reference_path_runs_no_fast_kernel_in_any_layer(name, train, fast_kernels_raise):
    build, kind = LAYERS[name]
    for g in GROUPS:
        layer = build(g)
        with gnn.reference_path():
            _run(layer, _input(kind, g), train)
        # the control: outside the reference path the same call reaches a fast kernel
        with pytest.raises(FastPathUsed):
            _run(layer, _input(kind, g), train)


def test_reference_path_runs_no_fast_kernel_in_the_functional_pooling(fast_kernels_raise):
    x = _input("group", P4)
    with gnn.reference_path():
        gnn.spatial_max_pool(x, 2, 2)
    with pytest.raises(FastPathUsed):
        gnn.spatial_max_pool(x, 2, 2)


#: one model of every family and every layer kind they use (small enough for CPU tests)
MODELS = ["z2cnn_rotmnist", "p4cnn_rotmnist", "a_p4cnn_rotmnist", "af_p4cnn_rotmnist",
          "coa_p4cnn_rotmnist", "af_p4m_allcnnc_cifar", "af_p4m_densenet_pcam"]


@pytest.mark.parametrize("name", MODELS)
def test_reference_path_runs_no_fast_kernel_in_any_family(name, fast_kernels_raise):
    model = get_entry(name).fn()
    c, h, w = get_entry(name).preprocessing["input_size"]
    x = torch.randn(1, c, h, w, generator=torch.Generator().manual_seed(0))
    for train in (True, False):
        model.train(train)
        with gnn.reference_path():
            model(x).sum().backward()
    with pytest.raises(FastPathUsed):    # the control
        model(x)


def test_every_layer_defines_both_paths_and_only_base_reads_the_switch():
    for cls in _all_subclasses(gnn.Layer):
        assert "forward" not in vars(cls), f"{cls.__name__} overrides forward: define forward_fast"
        assert cls.forward_fast is not gnn.Layer.forward_fast, cls.__name__
        assert cls.forward_reference is not gnn.Layer.forward_reference, cls.__name__
    # ``reference.enabled()`` is read in exactly one place: base.dispatch
    readers = []
    for path in Path(gnn.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "enabled":
                readers.append(path.name)
    assert readers == ["base.py"], readers


def test_a_layer_without_a_reference_says_what_to_define():
    class Half(gnn.Layer):
        def forward_fast(self, x):
            return x

    assert torch.equal(Half()(torch.ones(1)), torch.ones(1))
    with gnn.reference_path(), pytest.raises(NotImplementedError, match="forward_reference"):
        Half()(torch.ones(1))


# --------------------------------------------------------- the reference path's own constants
def test_reference_constants_come_from_their_definitions():
    assert ref.haar_measure(P4) == math.pi / 2 and ref.haar_measure(P4M) == math.pi
    assert ref.full_alpha_factor(P4, lifting=False) == math.pi / 2
    assert ref.full_alpha_factor(P4M, lifting=False) == math.pi / 4
    assert ref.full_alpha_factor(P4M, lifting=True) == 1.0
    for g in GROUPS:
        for i in range(g.order):
            assert torch.equal(ref.axis_permutation(g, i), g.axis_permutations[i]), (g.name, i)


@pytest.mark.parametrize("g", GROUPS, ids=lambda g: g.name)
@pytest.mark.parametrize("build", [lambda g: gnn.GroupConv(3, 4, 3, g),
                                   lambda g: gnn.AttGroupConv(3, 4, 3, g, _rca(g, False), _rsa(g, False)),
                                   lambda g: gnn.GroupSpatialAttention(3, g)],
                         ids=["group", "att_group", "group_spatial"])
def test_a_wrong_fast_path_constant_is_a_fast_vs_reference_difference(build, g):
    """The reference does not read ``layer.scale``: a wrong factor cannot hide there."""
    layer = build(g).train()
    x = _input("group", g).detach()
    with torch.no_grad():
        with gnn.reference_path():
            y_ref = layer(x)
        torch.testing.assert_close(layer(x), y_ref, rtol=1e-5, atol=1e-5)
        layer.scale *= 2.0
        with gnn.reference_path():
            assert torch.equal(layer(x), y_ref)
        assert (layer(x) - y_ref).abs().max() > 1e-3


@pytest.mark.parametrize("g, factor", [(P4, 1.0), (P4M, 0.25)], ids=["p4", "p4m"])
def test_full_alpha_output_factor_is_two_pi_over_n(g, factor):
    """AttConvGG multiplies by 2 pi / |H| (SPEC 3.6), ConvGG by its Haar measure: equal for p4,
    a quarter of it for p4m. Pinned on both paths, with the same weights and no attention."""
    torch.manual_seed(0)
    att = gnn.AttGroupConv(3, 4, 3, g, padding=1).double()
    plain = gnn.GroupConv(3, 4, 3, g, padding=1).double()
    plain.weight.data.copy_(att.weight.data)
    x = _input("group", g).detach().double()
    for use_reference in (False, True):
        with torch.no_grad(), gnn.reference_path(use_reference):
            torch.testing.assert_close(att(x), factor * plain(x), rtol=1e-12, atol=1e-12)
    assert att.scale == pytest.approx(2 * math.pi / g.order)


# ----------------------------------------------------------------------- p4m per-layer golden
P4M_LAYERS = (["c1", "bn_out", "c_out"] + [f"block_layers.{i}" for i in range(5)]
              + [f"trans_layers.{i}" for i in range(4)])


@pytest.mark.parametrize("use_reference", [False, True], ids=["fast", "reference"])
def test_p4m_densenet_reproduces_every_layer_of_the_original(use_reference):
    """The authors' p4m DenseNet (published as f_att_p4m_densenet, a plain P4MDenseNet) on the
    original's inputs: every block, transition and the classifier match its outputs."""
    name = "p4m_densenet_pcam"
    exp, folder = CHECKPOINTS[name]
    golden = load_file(shared(GOLDEN / "intermediates" / f"{exp}__{folder}.safetensors"))
    model = get_entry(name).fn()
    model.load_state_dict(convert_state_dict(load_original_checkpoint(checkpoint_path(name)), model))
    model.eval()
    seen = {}
    modules = dict(model.named_modules())
    hooks = [modules[n].register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o))
             for n in P4M_LAYERS]
    try:
        with torch.no_grad(), gnn.reference_path(use_reference):
            logits = model(golden["input"])
    finally:
        for h in hooks:
            h.remove()
    for n in P4M_LAYERS:
        assert seen[n].shape == golden[n].shape, n
        scale = max(1.0, golden[n].abs().max().item())
        assert (seen[n] - golden[n]).abs().max().item() <= 1e-4 * scale, n
    assert (logits - golden["logits"]).abs().max().item() <= 1e-4


# --------------------------------------------------------------------------- export and checks
def test_layers_export_themselves_and_full_alpha_says_why_not():
    for name, (build, kind) in LAYERS.items():
        layer = build(P4M).eval()
        x = _input(kind, P4M).detach()
        if name in ("att_lifting", "att_group"):
            with pytest.raises(gnn.ExportError, match="full alpha"):
                layer.export()
            continue
        plain = layer.export().eval()
        assert not any(isinstance(m, CachedBanks) for m in plain.modules()), name
        with torch.no_grad():
            torch.testing.assert_close(plain(x), layer(x), rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.parametrize("g", GROUPS, ids=lambda g: g.name)
def test_check_equivariance_hook_uses_the_layers_group(g):
    layer = LAYERS["att_group"][0](g).double().eval()
    x = _input("group", g, size=7).detach().double()
    errors = layer.check_equivariance(x)
    assert [i for i, _ in errors] == list(range(g.order))
    assert max(e for _, e in errors) < 1e-10
    # the hook is the public utility: the same numbers
    assert errors == agcnn_zoo.check_equivariance(layer, x, group=g)
    with pytest.raises(ValueError, match="no group"):
        gnn.Dropout(0.1).check_equivariance(x)


# ---------------------------------------------------------------------- the full-alpha budget
@pytest.mark.parametrize("g", GROUPS, ids=lambda g: g.name)
def test_any_chunk_budget_gives_the_same_outputs_and_gradients(g):
    torch.manual_seed(0)
    layer = LAYERS["att_group"][0](g).double().train()
    x = _input("group", g, size=6).detach().double()
    results = []
    one_slice = 3 * g.order * g.order * 4 * 4      # C J n X' Y': one (sample, output channel)
    for budget in (1, 3 * one_slice, 1 << 30):     # tiny (one slice a chunk), uneven, whole
        assert gnn.set_max_chunk_elements(layer, budget) is layer
        assert layer.max_chunk_elements == budget
        xi = x.clone().requires_grad_()
        layer.zero_grad()
        y = layer(xi)
        y.square().sum().backward()
        results.append((y.detach(), xi.grad, [p.grad.clone() for p in layer.parameters()]))
    for y, gx, gp in results[1:]:
        torch.testing.assert_close(y, results[0][0], rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(gx, results[0][1], rtol=1e-10, atol=1e-10)
        for a, b in zip(gp, results[0][2]):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_set_max_chunk_elements_reaches_every_full_alpha_layer_and_refuses_bad_budgets():
    model = get_entry("a_p4cnn_rotmnist").fn()
    gnn.set_max_chunk_elements(model, 1 << 26)
    layers = [m for m in model.modules() if isinstance(m, gnn.FullAlphaConv)]
    assert len(layers) == 7 and all(m.max_chunk_elements == 1 << 26 for m in layers)
    for bad in (0, -1, 2.5, True, "big"):
        with pytest.raises(ValueError, match="positive int"):
            gnn.set_max_chunk_elements(model, bad)
