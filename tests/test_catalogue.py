"""The weight catalogue (issue #25): one rule turns NAME / NAME.TAG into a weight, for every
caller; one manifest load per file state; the preprocessing definition typed."""
import json
import os

import pytest
import torch

import agcnn_zoo as zoo
from agcnn_zoo import hub
from agcnn_zoo.hub.catalogue import Catalogue, catalogue
from agcnn_zoo.hub.manifest import load_manifest, manifest_path
from agcnn_zoo.hub.weight_id import WeightId
from agcnn_zoo.preprocess import Preprocessing
from agcnn_zoo.pretrained_cfg import pretrained_cfg


def test_weight_id_parses_and_composes():
    assert WeightId.parse("p4cnn_rotmnist.rotgen12k_s0") == WeightId("p4cnn_rotmnist", "rotgen12k_s0")
    assert str(WeightId.parse("p4cnn_rotmnist")) == "p4cnn_rotmnist"
    assert str(WeightId.of("p4cnn_rotmnist", "")) == "p4cnn_rotmnist"
    assert str(WeightId.of("p4cnn_rotmnist", "s1")) == "p4cnn_rotmnist.s1"
    for bad in ("p4cnn_rotmnist.S1", "a.b.c", "", ".tag", "a..b"):
        with pytest.raises(ValueError, match="weight id"):
            WeightId.parse(bad)
    with pytest.raises(ValueError, match="tag"):
        WeightId("p4cnn_rotmnist", "Upper")


def _names_with_only_tagged_weights():
    cat = catalogue()
    return [m for m in cat.models() if m not in cat.weights_of(m) and cat.default_of(m)]


def test_every_caller_resolves_an_untagged_name_to_the_same_weight(cache):
    names = _names_with_only_tagged_weights()
    assert names, "the manifest has no name whose default weight is tagged"
    import hubconf
    cat = catalogue()
    for name in names:
        default = cat.default_of(name)
        assert "." in default and cat.resolve(name)[0] == default
        assert zoo.api.resolve_weight(name)[0] == default
        assert pretrained_cfg(name)["weight_id"] == default
        assert zoo.model_info(name)["weight_id"] == default
        assert hub.resolve_record(name).weight_id == default
        assert "raises" not in getattr(hubconf, name).__doc__.splitlines()[0]
        assert default in getattr(hubconf, name).__doc__.splitlines()[0]
    # the hub's load and create_model load the same bytes for the untagged name
    name = names[0]
    state = hub.load_state_dict(name)
    model = zoo.create_model(name, pretrained=True)
    assert model.pretrained_cfg["weight_id"] == cat.default_of(name)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_a_name_without_the_authors_weight_defaults_to_its_seed_campaign_s0():
    """The rule, not a score: the fixed-protocol seed 0 (README, Published weights)."""
    from agcnn_zoo.results import ROTMNIST_ORDER, SEED_PROTOCOL
    cat = catalogue()
    ruled = [m for m in ROTMNIST_ORDER if m not in cat.weights_of(m)
             and f"{m}.{SEED_PROTOCOL}_s0" in cat.weights_of(m)]
    assert len(ruled) >= 3, ruled  # ach_, asp_, coa_: the authors published none
    for name in ruled:
        assert cat.default_of(name) == f"{name}.{SEED_PROTOCOL}_s0", name
    for name in ROTMNIST_ORDER:
        if name in cat.weights_of(name):
            assert cat.default_of(name) == name  # the authors' weight stays the default


def test_hubconf_says_raises_only_for_names_without_weights():
    import hubconf
    cat = catalogue()
    for name in zoo.list_models():
        first = getattr(hubconf, name).__doc__.splitlines()[0]
        assert ("raises" in first) == (cat.default_of(name) is None), name


def test_a_name_without_weights_is_refused_the_same_way_everywhere():
    for call in (lambda: hub.load_state_dict("p4_allcnnc_cifar"),
                 lambda: zoo.create_model("p4_allcnnc_cifar", pretrained=True)):
        with pytest.raises(zoo.NoPretrainedWeightsError, match="models with weights: "):
            call()
    for call in (lambda: zoo.create_model("p4cnn_rotmnist.nope", pretrained=True),
                 lambda: zoo.transforms("p4cnn_rotmnist.nope"),
                 lambda: pretrained_cfg("p4cnn_rotmnist.nope")):
        with pytest.raises(zoo.NoPretrainedWeightsError, match="weights of p4cnn_rotmnist: "):
            call()
    assert pretrained_cfg("p4_allcnnc_cifar")["weights"] is None    # a name: its dataset's


def test_one_catalogue_per_manifest_state(tmp_path, monkeypatch):
    data = load_manifest(manifest_path())
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(data))
    monkeypatch.setenv("AGCNN_ZOO_MANIFEST", str(path))
    monkeypatch.setenv("AGCNN_ZOO_USER_MANIFEST", str(tmp_path / "no_user.json"))
    first = catalogue()
    assert catalogue() is first and isinstance(first, Catalogue)
    z2cnn = [w for w in first.ids() if WeightId.model_of(w) == "z2cnn_rotmnist"]
    assert "z2cnn_rotmnist" in z2cnn and zoo.list_models("z2cnn*", pretrained=True)
    for w in z2cnn:                  # every weight of the name, the authors' and ours
        del data["weights"][w]
    path.write_text(json.dumps(data))
    os.utime(path, ns=(1, 1))        # another modification time, whatever the clock's resolution
    second = catalogue()
    assert second is not first and not set(z2cnn) & set(second.ids())
    assert not zoo.list_models("z2cnn*", pretrained=True)


def test_a_weight_id_twice_is_refused_by_name(tmp_path, monkeypatch):
    text = manifest_path().read_text()
    body = json.loads(text)["weights"]["z2cnn_rotmnist"]
    doubled = text.replace('"weights": {', '"weights": {\n"z2cnn_rotmnist": ' + json.dumps(body)
                           + ",", 1)
    path = tmp_path / "manifest.json"
    path.write_text(doubled)
    monkeypatch.setenv("AGCNN_ZOO_MANIFEST", str(path))
    with pytest.raises(ValueError, match="z2cnn_rotmnist"):
        catalogue()


# ----------------------------------------------------------------------- the preprocessing type
def test_preprocessing_is_typed_and_feeds_the_cfg_and_the_transform():
    for wid in zoo.list_pretrained():
        prep = Preprocessing.of(wid)
        cfg = pretrained_cfg(wid)
        assert (cfg["input_size"], cfg["mean"], cfg["std"]) == (prep.input_size, prep.mean, prep.std)
        assert cfg["interpolation"] == prep.interpolation and cfg["crop_pct"] == prep.crop_pct
        assert "orientation" not in cfg      # every weight takes images as people hold them
        norm = [t for t in zoo.transforms(wid).transforms if type(t).__name__ == "Normalize"]
        assert tuple(norm[0].mean) == prep.mean and tuple(norm[0].std) == prep.std


def test_the_rotmnist_estimate_reaches_only_rotmnist_records():
    grey = {"input_size": [1, 28, 28], "num_classes": 10, "channel_order": "gray"}
    assert Preprocessing.from_record(grey, "rotmnist").mean == (0.130693,)
    # a grey record of another dataset gets that dataset's numbers (here: refused, 3 of them
    # for 1 channel), never the rot-MNIST estimate
    with pytest.raises(ValueError, match="one number per channel"):
        Preprocessing.from_record(grey, "pcam")
    rgb_pcam = {"input_size": [3, 96, 96], "num_classes": 2, "channel_order": "RGB"}
    assert Preprocessing.from_record(rgb_pcam, "pcam").mean == (0.701, 0.538, 0.692)
    with pytest.raises(ValueError, match="one number per channel"):
        Preprocessing.from_record({"input_size": [3, 32, 32], "mean": [0.1, 0.2], "std": [1, 1]},
                                  "cifar10")
    rgb = Preprocessing.from_record({"input_size": [3, 32, 32], "mean": 0.5, "std": 0.25}, "cifar10")
    assert rgb.mean == (0.5,) * 3 and rgb.num_classes == 10
