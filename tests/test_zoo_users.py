"""Using the weights as zoo users do: timm conventions (pretrained cfgs, data config, heads,
generic keyword arguments), fine-tuning heads and the preprocessing transforms."""
from __future__ import annotations

import logging

import pytest
import torch
from PIL import Image

import agcnn_zoo as zoo
from agcnn_zoo import hub
from agcnn_zoo.api import resolve_weight, split_weight_id
from agcnn_zoo.hub.manifest import load_manifest
from agcnn_zoo.pretrained_cfg import pretrained_cfg
from conftest import DATA

timm = pytest.importorskip("timm")
import timm.data  # noqa: E402

WEIGHTS = sorted(load_manifest()["weights"])
#: one model per family and attention kind (the slow full-alpha ResNet left out)
FAMILIES = ["z2cnn_rotmnist", "p4cnn_rotmnist", "a_p4cnn_rotmnist", "af_p4cnn_rotmnist",
            "coa_p4cnn_rotmnist", "allcnnc_cifar", "af_p4m_allcnnc_cifar", "resnet44_cifar",
            "af_p4m_resnet44_cifar", "densenet_pcam", "af_p4_densenet_pcam", "p4m_densenet_pcam"]


@pytest.fixture
def offline(monkeypatch, tmp_path, mirror_dir):
    monkeypatch.setenv("AGCNN_ZOO_MIRROR", str(mirror_dir))
    monkeypatch.setenv("AGCNN_ZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _published_state(weight_id):
    wid, record = resolve_weight(weight_id)
    try:
        return hub.load_state_dict(wid, record)
    except (FileNotFoundError, hub.WeightsUnavailableError) as e:
        pytest.skip(f"{wid}: no file offline ({type(e).__name__})")


def _input(model, batch=2, seed=0, dtype=torch.float32):
    c, h, w = model.pretrained_cfg["input_size"]
    return torch.randn(batch, c, h, w, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ------------------------------------------------------------------------------- timm configs
@pytest.mark.parametrize("weight_id", WEIGHTS)
def test_timm_data_config_equals_the_weights_preprocessing(weight_id):
    record = load_manifest()["weights"][weight_id]
    pre = record["preprocessing"]
    name, tag = split_weight_id(weight_id)
    if tag is None:
        cfg = timm.data.resolve_model_data_config(timm.create_model(name))
    else:
        cfg = timm.data.resolve_data_config(pretrained_cfg=pretrained_cfg(weight_id))
    assert tuple(cfg["input_size"]) == tuple(pre["input_size"])
    c = pre["input_size"][0]
    assert len(cfg["mean"]) == len(cfg["std"]) == c
    assert list(cfg["mean"]) == pytest.approx(pre["mean"]) and list(cfg["std"]) == pytest.approx(pre["std"])
    assert cfg["crop_pct"] == 1.0 and cfg["interpolation"] == "bilinear"
    registered = timm.models.get_pretrained_cfg(weight_id)
    assert registered.input_size == tuple(pre["input_size"])
    assert registered.num_classes == pre["num_classes"] and registered.paper_ids == "arXiv:2002.03830"
    assert registered.has_weights


def test_rotmnist_preprocessing_has_numbers_and_says_they_are_an_estimate():
    for wid in ("z2cnn_rotmnist", "p4cnn_rotmnist", "a_p4cnn_rotmnist", "af_p4cnn_rotmnist"):
        pre = load_manifest()["weights"][wid]["preprocessing"]
        assert pre["mean"] == [0.130693] and pre["std"] == [0.289791]
        est = pre["normalize_estimate"]
        assert "12,000 MNIST training digits" in est["measured_on"] and "estimate" in est["note"]
        assert abs(est["mean"] - pre["mean"][0]) < 1e-6 and abs(est["std"] - pre["std"][0]) < 1e-6


def test_timm_lists_the_manifests_weights():
    assert timm.list_pretrained("*rotmnist*") == zoo.list_pretrained("*rotmnist*")
    assert set(zoo.list_pretrained()) <= set(timm.list_pretrained())
    assert timm.is_model_pretrained("a_p4cnn_rotmnist")
    assert timm.is_model_pretrained("ach_p4cnn_rotmnist")  # ours, its default
    assert not timm.is_model_pretrained("p4_allcnnc_cifar")
    # a model without weights still has its dataset's configuration
    cfg = timm.models.get_pretrained_cfg("p4_allcnnc_cifar")
    assert cfg.input_size == (3, 32, 32) and not cfg.has_weights


def test_model_carries_a_flat_timm_cfg(offline):
    model = timm.create_model("p4m_densenet_pcam", pretrained=True)
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 96, 96) and cfg["num_classes"] == 2
    assert cfg["mean"] == (0.701, 0.538, 0.692) and cfg["std"] == (0.235, 0.277, 0.213)
    assert cfg["first_conv"] == "c1" and cfg["classifier"] == "c_out"
    assert cfg["license"] == "mit" and cfg["paper_ids"] == "arXiv:2002.03830"
    assert cfg["weight_id"] == "p4m_densenet_pcam" and cfg["tag"] is None
    assert cfg["architecture"] == "p4m_densenet_pcam" and cfg["model_class"] == "P4MDenseNet"
    assert cfg["origin_url"].startswith("https://raw.githubusercontent.com/dwromero/att_gconvs/")
    assert cfg["weights"]["sha256"] == load_manifest()["weights"]["p4m_densenet_pcam"]["sha256"]
    assert "hf_hub_id" not in cfg          # no huggingface host in the manifest yet
    t = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
    x = t(Image.new("RGB", (96, 96), (255, 128, 0)))
    assert x.shape == (3, 96, 96)
    assert x[:, 0, 0].tolist() == pytest.approx([(1 - 0.701) / 0.235, (128 / 255 - 0.538) / 0.277,
                                                 (0 - 0.692) / 0.213], abs=1e-5)
    assert zoo.create_model("p4_allcnnc_cifar").pretrained_cfg["weights"] is None


# ------------------------------------------------------------------------- heads and features
@pytest.mark.parametrize("name", FAMILIES)
def test_forward_head_of_forward_features_is_forward(name):
    torch.manual_seed(0)
    model = zoo.create_model(name).eval()
    x = _input(model)
    with torch.no_grad():
        logits = model(x)
        feats = model.forward_features(x)
        assert torch.equal(model.forward_head(feats), logits)
        pooled = model.forward_head(feats, pre_logits=True)
    assert logits.shape == (2, model.num_classes)
    assert pooled.shape == (2, model.head_hidden_size) and feats.shape[1] == model.num_features
    assert model.get_classifier() is getattr(model, model.classifier_names[0]) or \
        set(model.get_classifier()) == set(model.classifier_names)


@pytest.mark.parametrize("name", ["p4cnn_rotmnist", "af_p4m_allcnnc_cifar", "p4m_resnet44_cifar",
                                  "af_p4_densenet_pcam"])
def test_reset_classifier(name):
    torch.manual_seed(0)
    model = zoo.create_model(name).eval()
    x = _input(model)
    with torch.no_grad():
        feats = model.forward_features(x)
        backbone = {k: v.clone() for k, v in model.state_dict().items()
                    if k not in model.classifier_keys(model.state_dict())}
        model.reset_classifier(3)
        assert model.num_classes == 3 and model(x).shape == (2, 3)
        assert not model.training
        model.reset_classifier(0)
        assert isinstance(model.get_classifier(), torch.nn.Identity)
        assert torch.equal(model(x), model.forward_head(feats, pre_logits=True))
        assert model.state_dict().keys() == backbone.keys()
    with pytest.raises(ValueError, match="num_classes"):
        model.reset_classifier(-1)
    without = zoo.create_model(name, num_classes=0)
    assert without.state_dict().keys() == backbone.keys()


@pytest.mark.parametrize("weight_id", WEIGHTS)
def test_pretrained_with_a_new_head_keeps_every_tensor_the_class_count_does_not_shape(
        weight_id, offline, caplog):
    published = _published_state(weight_id)
    name = split_weight_id(weight_id)[0]
    torch.manual_seed(0)
    with caplog.at_level(logging.INFO, logger="agcnn_zoo"):
        model = timm.create_model(weight_id, pretrained=True, num_classes=5)
    assert model.num_classes == 5 and not model.training
    state = model.state_dict()
    assert state.keys() == published.keys()
    fresh = set(model.class_dependent_keys(state))
    assert fresh and fresh <= set(model.classifier_keys(state))
    for k, v in published.items():
        if k not in fresh:
            assert torch.equal(state[k], v), k
    # every fresh tensor belongs to a module one of whose tensors has another shape now
    reshaped = {k.rpartition(".")[0] for k in state if state[k].shape != published[k].shape}
    assert {k.rpartition(".")[0] for k in fresh} == reshaped
    for mod in model.classifier_names:
        assert published[f"{mod}.weight"].shape[0] == model.pretrained_cfg["num_classes"]
        assert state[f"{mod}.weight"].shape[0] == 5
    lines = [r.getMessage() for r in caplog.records if r.name == "agcnn_zoo"]
    assert len(lines) == 1 and "new head with 5 classes instead of" in lines[0]
    assert all(k in lines[0] for k in fresh)
    c, h, w = model.pretrained_cfg["input_size"]
    with torch.no_grad():
        assert model(torch.randn(2, c, h, w)).shape == (2, 5)
    assert name in timm.list_models()


#: what a new head resets, by kind of classifier (the authors' checkpoints)
NEW_HEAD_RESETS = {
    # full alpha: one attention MLP and one spatial filter per output channel, i.e. per class
    "a_p4cnn_rotmnist": {"c7.weight", "c7.channel_attention.weight_fc1",
                         "c7.channel_attention.weight_fc2", "c7.spatial_attention.weight"},
    # alpha_F: the attention sees c7's input (the backbone's 10 channels): kept
    "af_p4cnn_rotmnist": {"c7.weight"},
    "p4cnn_rotmnist": {"c7.weight"},
    "p4m_densenet_pcam": {"c_out.weight"},
}


@pytest.mark.parametrize("weight_id", sorted(NEW_HEAD_RESETS))
def test_a_new_head_resets_only_what_the_class_count_shapes(weight_id, offline):
    published = _published_state(weight_id)
    torch.manual_seed(0)
    model = zoo.create_model(weight_id, pretrained=True, num_classes=5)
    state = model.state_dict()
    assert set(model.class_dependent_keys(state)) == NEW_HEAD_RESETS[weight_id]
    kept = [k for k in state if k not in NEW_HEAD_RESETS[weight_id]]
    assert all(torch.equal(state[k], published[k]) for k in kept)
    assert not any(torch.equal(state[k], published[k]) for k in NEW_HEAD_RESETS[weight_id]
                   if state[k].shape == published[k].shape)
    if weight_id == "af_p4cnn_rotmnist":
        assert "c7.channel_attention.weight_fc1" in kept and "c7.spatial_attention.weight" in kept
    # reset_classifier on the pretrained model keeps the same tensors
    pretrained = zoo.create_model(weight_id, pretrained=True)
    pretrained.reset_classifier(3)
    for k, v in pretrained.state_dict().items():
        assert torch.equal(v, published[k]) == (k not in NEW_HEAD_RESETS[weight_id]), k


def test_class_dependent_keys_leave_the_random_state_alone():
    model = zoo.create_model("af_p4m_allcnnc_cifar")
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    keys = model.class_dependent_keys(model.state_dict())
    assert torch.equal(torch.rand(3), expected)
    # All-CNN-C's classifier: c9 (one map per class) and bn9 (per class), not c9's attention
    assert set(keys) == {"c9.weight", "bn9.weight", "bn9.bias", "bn9.running_mean",
                         "bn9.running_var", "bn9.num_batches_tracked"}


def test_generic_keyword_arguments():
    assert zoo.create_model("p4cnn_rotmnist", drop_rate=0.1).dropout.p == 0.1
    assert zoo.create_model("p4_allcnnc_cifar", drop_rate=0.25).dp.p == 0.25
    zoo.create_model("resnet44_cifar", drop_rate=0.0)
    with pytest.raises(ValueError, match="resnet44_cifar has no dropout"):
        zoo.create_model("resnet44_cifar", drop_rate=0.1)
    with pytest.raises(ValueError, match="densenet_pcam does not take 'img_size'"):
        zoo.create_model("densenet_pcam", img_size=64)
    with pytest.raises(ValueError, match="p4cnn_rotmnist does not take 'foo'"):
        timm.create_model("p4cnn_rotmnist", foo=1)
    model = zoo.create_model("p4cnn_rotmnist", in_chans=3)
    assert model(torch.randn(2, 3, 28, 28)).shape == (2, 10)
    assert model.c1.weight.shape[1] == 3
    model = zoo.create_model("af_p4m_allcnnc_cifar", in_chans=1)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="in_chans=3 has no exact adaptation"):
        zoo.create_model("af_p4cnn_rotmnist", pretrained=True, in_chans=3)
    with pytest.raises(ValueError, match="in_chans"):
        zoo.create_model("p4cnn_rotmnist", in_chans=0)


# ------------------------------------------------------------------------------- transforms
def test_transforms_from_pil_and_uint8():
    t = zoo.transforms("p4cnn_rotmnist")
    digit = torch.zeros(28, 28, dtype=torch.uint8)
    digit[3, 5] = 255
    x = t(digit)
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    mean, std = 0.130693, 0.289791
    assert x[0, 3, 5].item() == pytest.approx((1 - mean) / std)     # as the user holds it
    assert x[0, 5, 3].item() == pytest.approx(-mean / std)
    assert torch.equal(t(Image.fromarray(digit.numpy())), x)
    torch.testing.assert_close(t(digit.unsqueeze(0).expand(3, 28, 28)), x, atol=1e-3, rtol=0)  # RGB->grey
    assert t(digit.expand(4, 1, 28, 28)).shape == (4, 1, 28, 28)             # a batch
    assert zoo.transforms("p4cnn_rotmnist", transpose=True)(digit)[0, 5, 3] > 2.9  # stored frame
    big = zoo.transforms("p4m_densenet_pcam")(Image.new("RGB", (192, 192), (255, 255, 255)))
    assert big.shape == (3, 96, 96)
    assert big[:, 10, 10].tolist() == pytest.approx([(1 - 0.701) / 0.235, (1 - 0.538) / 0.277,
                                                      (1 - 0.692) / 0.213], abs=1e-5)
    cifar = zoo.transforms("allcnnc_cifar")(torch.full((3, 32, 32), 255, dtype=torch.uint8))
    assert cifar[:, 0, 0].tolist() == pytest.approx([(1 - m) / s for m, s in
                                                     zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])


def test_transforms_on_real_digits_reproduce_the_evaluation_path(offline, mnist_dir):
    """2,000 rotated MNIST test digits: rotated as uint8 images and passed through
    ``transforms(weight)`` they score what the existing evaluation path (float rotation, the
    set's own mean/std; tests/_mnist.py) scores."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF
    from _mnist import load_mnist_test, rotated_digits
    n = 2000
    images, labels = load_mnist_test(mnist_dir, n)
    reference = rotated_digits(images, seed=0)
    gen = torch.Generator().manual_seed(0)
    angles = torch.rand(n, generator=gen, dtype=torch.float64) * 360.0       # the same angles
    rotated = torch.stack([TF.rotate(img.unsqueeze(0), float(a), InterpolationMode.BILINEAR)
                           for img, a in zip(images, angles)])
    assert rotated.dtype == torch.uint8
    for wid in ("p4cnn_rotmnist", "z2cnn_rotmnist"):
        model = zoo.create_model(wid, pretrained=True)
        ours = zoo.transforms(wid)(rotated)
        with torch.no_grad():
            acc_ref = (model(reference).argmax(1) == labels).float().mean().item() * 100
            acc = (model(ours).argmax(1) == labels).float().mean().item() * 100
            acc_wrong_frame = (model(zoo.transforms(wid, transpose=True)(rotated)).argmax(1)
                               == labels).float().mean().item() * 100
        assert acc_ref > 94
        assert abs(acc - acc_ref) <= 0.5, (wid, acc, acc_ref)
        assert acc_wrong_frame < acc_ref - 20       # the frame matters


def test_reproduce_reports_the_exact_rotmnist_statistics():
    from agcnn_zoo import reproduce
    record = load_manifest()["weights"]["p4cnn_rotmnist"]
    data = {"name": "rotmnist", "canonical": True,
            "normalize": {"mean": 0.1305, "std": 0.2975, "of": "the 12,000 training images"}}
    note = reproduce.normalisation_report(record, data)
    assert "0.130500 / 0.297500" in note and "estimate: 0.130693 / 0.289791" in note
    assert reproduce.normalisation_report(record, {**data, "canonical": False}) is None
    assert reproduce.normalisation_report(load_manifest()["weights"]["p4m_densenet_pcam"], data) is None
