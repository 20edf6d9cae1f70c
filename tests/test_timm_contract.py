"""timm's model contract on every registered name: default_cfg / pretrained_cfg, num_features,
forward_features / forward_head (pre_logits), get_classifier / reset_classifier(0) and
global_pool, feature_info with features_only=True and out_indices, set_grad_checkpointing, and
torch.fx tracing (zoo leaves: bit for bit; plain torch.fx: every model without full alpha)."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import agcnn_zoo as zoo
from agcnn_zoo import fx as zfx
from agcnn_zoo.nn import FullAlphaConv

timm = pytest.importorskip("timm")

NAMES = zoo.list_models()
#: full alpha everywhere at ResNet44 depth: 15-30 CPU-seconds per image in eval
SLOW = {"a_p4m_resnet44_cifar"}
FULL_ALPHA = {n for n in NAMES if n.startswith(("a_", "ach_", "asp_"))}


def _input(model, batch, seed=0, dtype=torch.float32):
    c, h, w = model.default_cfg["input_size"]
    return torch.randn(batch, c, h, w, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _model(name, **kwargs):
    torch.manual_seed(0)
    return timm.create_model(name, **kwargs).eval()


@pytest.mark.parametrize("name", NAMES)
@torch.no_grad()
def test_the_timm_model_interface(name):
    model = _model(name)
    batch = 1 if name in SLOW else 2
    x = _input(model, batch)
    final, inters = model.forward_intermediates(x)
    logits = model(x)
    cfg = model.default_cfg
    assert cfg is model.pretrained_cfg
    assert timm.models.get_pretrained_cfg(name).pool_size == cfg["pool_size"]
    # forward_features: an NCHW map of num_features channels and pool_size
    n = model.group_order
    assert final.shape == (batch, model.num_features, *cfg["pool_size"])
    assert model.num_features == model.head_hidden_size * n
    assert torch.equal(model.forward_head(final), logits)
    # pre-logits: the map averaged over space and the group axis
    pre = model.forward_head(final, pre_logits=True)
    assert pre.shape == (batch, model.head_hidden_size)
    by_channel = final.reshape(batch, model.head_hidden_size, -1).mean(-1)
    torch.testing.assert_close(pre, by_channel, rtol=1e-5, atol=1e-6 * by_channel.abs().max().item())
    # feature_info describes the stage maps (the last one is forward_features')
    info = model.feature_info
    assert len(info) == len(inters) >= 3
    size = cfg["input_size"][1:]
    for d, o in zip(info, inters):
        assert o.shape[:2] == (batch, d["num_chs"]) and d["group_order"] == n
        assert all(s <= math.ceil(full / d["reduction"]) for s, full in zip(o.shape[2:], size))
        model.get_submodule(d["module"])
    assert [d["reduction"] for d in info] == sorted(d["reduction"] for d in info)
    assert torch.equal(inters[-1], final)
    # the classifier: cfg names it, reset_classifier(0) removes it, global_pool="" unpools
    names = cfg["classifier"] if isinstance(cfg["classifier"], tuple) else (cfg["classifier"],)
    assert set(names) == set(model.classifier_names)
    assert all(f"{c}.weight" in model.state_dict() for c in names)
    assert f"{cfg['first_conv']}.weight" in model.state_dict()
    model.reset_classifier(0)
    assert model.num_classes == 0 and isinstance(model.get_classifier(), nn.Identity)
    assert torch.equal(model.forward_head(final), pre)
    model.reset_classifier(0, "")
    assert torch.equal(model.forward_head(final), final)
    with pytest.raises(ValueError, match="num_classes=0"):
        model.reset_classifier(3, "")
    with pytest.raises(ValueError, match="global_pool must be"):
        model.reset_classifier(0, "max")


@pytest.mark.parametrize("name", ["p4cnn_rotmnist", "af_p4m_allcnnc_cifar", "p4m_resnet44_cifar",
                                  "af_p4_densenet_pcam", "z2cnn_rotmnist"])
def test_forward_features_fold_the_group_axis(name):
    model = _model(name)
    x = _input(model, 2)
    with torch.no_grad():
        group_map = model.forward_group_features(x)
        folded = model.forward_features(x)
        logits = model(x)
        assert torch.equal(model.forward_head(group_map), logits)      # either layout
    n = model.group_order
    if n == 1:
        assert torch.equal(group_map, folded)
    else:
        assert group_map.shape == (2, model.head_hidden_size, n, *model.default_cfg["pool_size"])
        assert torch.equal(folded.unflatten(1, (-1, n)), group_map)   # channel c n + g


def test_global_pool_and_num_classes_zero_from_create_model():
    model = _model("p4cnn_rotmnist", num_classes=0, global_pool="")
    x = _input(model, 2)
    with torch.no_grad():
        assert torch.equal(model(x), model.forward_features(x))
        assert model(x).shape == (2, 40, 4, 4)
    with pytest.raises(ValueError, match="num_classes=0"):
        zoo.create_model("p4cnn_rotmnist", global_pool="")
    pooled = _model("p4cnn_rotmnist", num_classes=0)
    with torch.no_grad():
        assert pooled(x).shape == (2, 10)


@pytest.mark.parametrize("name", NAMES)
def test_features_only(name):
    model = _model(name)
    indices = (0,) if name in SLOW else None
    feats = _model(name, features_only=True, out_indices=indices)
    backbone = {k: v for k, v in model.state_dict().items()
                if k not in model.classifier_keys(model.state_dict())}
    assert feats.state_dict().keys() == {f"model.{k}" for k in backbone}
    feats.model.load_state_dict(backbone)
    assert all(getattr(feats.model, c) is None for c in model.classifier_names)
    x = _input(model, 1 if name in SLOW else 2)
    with torch.no_grad():
        outs = feats(x)
        expected = model.forward_intermediates(x, indices, intermediates_only=True)
    assert len(outs) == len(expected) == len(feats.feature_info)
    for o, e in zip(outs, expected):
        assert torch.equal(o, e)
    info = feats.feature_info
    assert info.channels() == [o.shape[1] for o in outs]
    full = model.feature_info
    assert info.reduction() == [full[i]["reduction"] for i in info.out_indices]
    assert info.module_name() == [full[i]["module"] for i in info.out_indices]
    assert len(full) >= 3 and (indices or tuple(range(len(full)))) == info.out_indices


def test_features_only_with_published_weights(tmp_path, monkeypatch, mirror_dir):
    monkeypatch.setenv("AGCNN_ZOO_MIRROR", str(mirror_dir))
    monkeypatch.setenv("AGCNN_ZOO_CACHE", str(tmp_path / "cache"))
    feats = timm.create_model("p4cnn_rotmnist", pretrained=True, features_only=True,
                              out_indices=(-2, -1))
    model = zoo.create_model("p4cnn_rotmnist", pretrained=True)
    assert not feats.training and feats.feature_info.out_indices == (4, 5)
    assert feats.feature_info.module_name() == ["c5", "c6"]
    for k, v in feats.model.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k
    assert feats.pretrained_cfg["weight_id"] == "p4cnn_rotmnist"


def test_feature_arguments_are_checked():
    with pytest.raises(ValueError, match="out of range: the model has 6 levels"):
        zoo.create_model("p4cnn_rotmnist", features_only=True, out_indices=(6,))
    with pytest.raises(ValueError, match="needs features_only=True"):
        zoo.create_model("p4cnn_rotmnist", out_indices=(1,))
    with pytest.raises(ValueError, match="feature_cls='fx' is not available"):
        zoo.create_model("p4cnn_rotmnist", features_only=True, feature_cls="fx")
    assert zoo.create_model("p4cnn_rotmnist", features_only=True, out_indices=2
                            ).feature_info.out_indices == (4, 5)


def _checkpointed_step(model, x, checkpointing):
    model = copy.deepcopy(model).train()
    model.set_grad_checkpointing(checkpointing)
    calls = []
    # a pre-hook: the recomputation may stop inside the module once it has what backward needs
    model.get_submodule(model.first_conv_name).register_forward_pre_hook(lambda *a: calls.append(1))
    torch.manual_seed(1)                       # the same dropout masks
    loss = model(x).square().mean()
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    return loss.detach(), grads, model.state_dict(), len(calls)


@pytest.mark.parametrize("name", NAMES)
def test_grad_checkpointing_gives_the_same_step(name):
    # the registered depth of a_p4m_resnet44 takes minutes per training step on a CPU; one
    # block per stage has the same layer kinds
    kwargs = {"num_blocks": 1} if name in SLOW else {}
    torch.manual_seed(0)
    model = zoo.create_model(name, **kwargs)
    x = _input(model, 2)
    loss, grads, state, calls = _checkpointed_step(model, x, False)
    loss_c, grads_c, state_c, calls_c = _checkpointed_step(model, x, True)
    assert (calls, calls_c) == (1, 2)          # the first stage ran again in backward
    assert torch.equal(loss, loss_c)
    for k, g in grads.items():   # recomputation may sum in another order: a few float32 ulps
        torch.testing.assert_close(grads_c[k], g, rtol=1e-5, atol=1e-6 * (1 + g.abs().max().item()))
    for k, v in state.items():                 # batch-norm statistics updated once
        assert torch.equal(state_c[k], v), k


@pytest.mark.parametrize("name", NAMES)
def test_fx_graph_with_zoo_leaves_reproduces_the_model(name):
    model = _model(name)
    x = _input(model, 1 if name in SLOW else 2)
    graph = zfx.symbolic_trace(model)
    with torch.no_grad():
        assert torch.equal(graph(x), model(x))
    modules = {n.target for n in graph.graph.nodes if n.op == "call_module"}
    assert model.first_conv_name in modules
    assert not any(n.op == "call_method" and n.target == "aminmax" for n in graph.graph.nodes)


@pytest.mark.parametrize("name", NAMES)
def test_plain_torch_fx_traces_every_model_without_full_alpha(name):
    model = _model(name).double()
    if name in FULL_ALPHA:
        with pytest.raises(torch.fx.proxy.TraceError, match="cannot be traced symbolically"):
            torch.fx.symbolic_trace(model)
        return
    graph = torch.fx.symbolic_trace(model)
    assert not any(isinstance(graph.get_submodule(n.target), FullAlphaConv)
                   for n in graph.graph.nodes if n.op == "call_module")
    x = _input(model, 2, dtype=torch.float64)
    with torch.no_grad():
        y, yg = model(x), graph(x)
    # the same function: traced through, convolutions run NCHW with rebuilt filter banks
    # (random-init ResNets reach 1e27, where float64 rounding still shows at 1e-11)
    assert (yg - y).abs().max() <= 1e-9 * y.abs().max()


@pytest.mark.filterwarnings("ignore:NOTE. The nodes obtained by tracing the model in train mode")
def test_torchvision_feature_extraction_with_the_zoo_leaves():
    from torchvision.models.feature_extraction import create_feature_extractor
    model = _model("af_p4cnn_rotmnist")
    extractor = create_feature_extractor(model, {"c3": "c3", "bn6": "bn6"},
                                         tracer_kwargs={"leaf_modules": list(zfx.LEAF_MODULES)})
    x = _input(model, 2)
    inputs = {}
    model.c3.register_forward_hook(lambda m, i, o: inputs.update(c3=o))
    model.bn6.register_forward_hook(lambda m, i, o: inputs.update(bn6=o))
    with torch.no_grad():
        out = extractor(x)
        model(x)
    assert torch.equal(out["c3"], inputs["c3"]) and torch.equal(out["bn6"], inputs["bn6"])
