"""The user-facing API without weights: names, errors, info, timm and torch.hub entry points."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import agcnn_zoo as zoo
from conftest import REPO

REQUIRED = """z2cnn_rotmnist p4cnn_rotmnist a_p4cnn_rotmnist ach_p4cnn_rotmnist asp_p4cnn_rotmnist
af_p4cnn_rotmnist coa_p4cnn_rotmnist allcnnc_cifar p4_allcnnc_cifar af_p4_allcnnc_cifar
p4m_allcnnc_cifar af_p4m_allcnnc_cifar resnet44_cifar p4m_resnet44_cifar af_p4m_resnet44_cifar
a_p4m_resnet44_cifar densenet_pcam p4_densenet_pcam af_p4_densenet_pcam p4m_densenet_pcam
af_p4m_densenet_pcam""".split()


def test_registry_holds_every_paper_model():
    names = zoo.list_models()
    assert names == sorted(names)
    assert set(REQUIRED) <= set(names)


def test_list_models_filters_with_fnmatch():
    assert zoo.list_models("*p4cnn_rotmnist") == sorted(
        ["p4cnn_rotmnist", "a_p4cnn_rotmnist", "ach_p4cnn_rotmnist", "asp_p4cnn_rotmnist",
         "af_p4cnn_rotmnist", "coa_p4cnn_rotmnist"])
    assert zoo.list_models("no_such_*") == []
    published = zoo.list_models(pretrained=True)
    assert {"p4cnn_rotmnist", "a_p4cnn_rotmnist"} <= set(published)
    assert "allcnnc_cifar" not in published  # no weight yet
    # every rot-MNIST name has one now: the authors' or ours
    assert set(zoo.list_models("*_rotmnist")) <= set(published)


def test_unknown_name_suggests_close_names():
    with pytest.raises(zoo.UnknownModelError, match="did you mean a_p4cnn_rotmnist"):
        zoo.create_model("a_p4cnn_rotmnst")
    with pytest.raises(ValueError):  # also a ValueError for callers that catch that
        zoo.model_info("resnet45_cifar")


def test_pretrained_without_weights_is_a_clear_error():
    with pytest.raises(zoo.NoPretrainedWeightsError, match="has no published weights"):
        zoo.create_model("p4_allcnnc_cifar", pretrained=True)


def test_model_info_describes_the_model():
    info = zoo.model_info("p4cnn_rotmnist")
    assert info["architecture"] == "P4CNN" and info["num_params"] == 24610
    assert info["dataset"] == "rotmnist" and info["input_size"] == [1, 28, 28]
    assert "orientation" not in info["preprocessing"]  # the weights take digits as MNIST holds them
    assert "folded" in info["weights"]["origin"]["frame"]
    assert info["weights"]["sha256"] and info["weights"]["num_params"] == 24610
    assert zoo.model_info("p4_allcnnc_cifar")["weights"] is None


def test_constructor_kwargs_pass_through():
    model = zoo.create_model("p4cnn_rotmnist", num_classes=7)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 7)


def test_timm_sees_the_models():
    timm = pytest.importorskip("timm")  # timm is a declared dependency; present in CI
    assert "a_p4cnn_rotmnist" in timm.list_models("*p4cnn*")
    model = timm.create_model("p4cnn_rotmnist")
    assert type(model).__name__ == "P4CNN"


def test_timm_registration_happens_when_timm_is_imported_first():
    code = ("import timm, agcnn_zoo; "
            "print(sorted(timm.list_models('*resnet44_cifar')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "p4m_resnet44_cifar" in out.stdout


def test_hubconf_has_one_documented_entry_point_per_model():
    import importlib.util
    spec = importlib.util.spec_from_file_location("hubconf", REPO / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    entries = [n for n in dir(hubconf) if callable(getattr(hubconf, n)) and not n.startswith("_")]
    assert sorted(entries) == zoo.list_models()
    assert all(getattr(hubconf, n).__doc__ for n in entries)
    model = torch.hub.load(str(REPO), "p4cnn_rotmnist", source="local")
    assert type(model).__name__ == "P4CNN"


def test_cli_list_and_info(capsys):
    from agcnn_zoo.__main__ import main
    assert main(["list", "*allcnnc*", "--pretrained"]) == 0
    out = capsys.readouterr().out
    assert "af_p4m_allcnnc_cifar" in out and "p4_allcnnc_cifar" not in out
    assert main(["info", "p4cnnrotmnist"]) == 1
    assert "did you mean p4cnn_rotmnist" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "agcnn_zoo", "info", "p4cnn_rotmnist"],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert '"num_params": 24610' in out.stdout


# --------------------------------------------------------------- pretrained, offline via mirror
@pytest.fixture
def offline_mirror(monkeypatch, tmp_path, mirror_dir):
    monkeypatch.setenv("AGCNN_ZOO_MIRROR", str(mirror_dir))
    monkeypatch.setenv("AGCNN_ZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "cache" / "weights"


def _golden_error(model, name):
    from safetensors.torch import load_file
    from conftest import as_published_input, golden_path
    golden = load_file(golden_path(name))
    with torch.no_grad():
        return (model(as_published_input(name, golden["input"])) - golden["logits"]).abs().max().item()


def test_create_model_pretrained_reproduces_golden(offline_mirror):
    model = zoo.create_model("af_p4cnn_rotmnist", pretrained=True)
    assert not model.training
    assert model.pretrained_cfg["weights"]["sha256"] == zoo.model_info("af_p4cnn_rotmnist")["weights"]["sha256"]
    assert _golden_error(model, "af_p4cnn_rotmnist") <= 1e-4
    assert not list(offline_mirror.rglob("*.safetensors"))  # served from the package, not cached


def test_torch_hub_load_local_pretrained(offline_mirror):
    model = torch.hub.load(str(REPO), "a_p4cnn_rotmnist", source="local", pretrained=True)
    assert _golden_error(model, "a_p4cnn_rotmnist") <= 1e-4


def test_timm_create_model_pretrained(offline_mirror):
    timm = pytest.importorskip("timm")
    model = timm.create_model("p4cnn_rotmnist", pretrained=True)
    assert _golden_error(model, "p4cnn_rotmnist") <= 1e-4


def test_pretrained_weights_refuse_a_changed_backbone(offline_mirror):
    # a new head is timm's fine-tuning convention (tests/test_zoo_users.py); a changed backbone
    # is refused, with or without a new head
    model = zoo.create_model("p4cnn_rotmnist", pretrained=True, num_classes=5)
    assert model.c7.weight.shape[0] == 5
    with pytest.raises(ValueError, match="do not fit"):
        zoo.create_model("p4m_densenet_pcam", pretrained=True, n_channels=8)
    with pytest.raises(ValueError, match="do not fit the model outside its classifier"):
        zoo.create_model("p4m_densenet_pcam", pretrained=True, n_channels=8, num_classes=3)


def test_cli_download_and_verify(offline_mirror, capsys, tmp_path, monkeypatch):
    from agcnn_zoo.__main__ import main
    from agcnn_zoo.hub.manifest import load_manifest, save_manifest
    assert main(["download", "z2cnn_rotmnist", "--quiet"]) == 0
    assert "weights/z2cnn_rotmnist.safetensors" in capsys.readouterr().out  # the embedded copy
    # a manifest listing only the authors' URL: fetched from the mirror, converted and cached
    manifest = load_manifest()
    rec = manifest["weights"]["z2cnn_rotmnist"]
    rec["hosts"] = [h for h in rec["hosts"] if h["type"] != "package"]
    monkeypatch.setenv("AGCNN_ZOO_MANIFEST", str(save_manifest(manifest, tmp_path / "m.json")))
    assert main(["download", "z2cnn_rotmnist", "--quiet"]) == 0
    assert "z2cnn_rotmnist-" in capsys.readouterr().out
    assert main(["verify", "z2cnn_rotmnist"]) == 0
    assert "OK" in capsys.readouterr().out
    # a tampered cache file fails verification (and is removed, so the next fetch is clean)
    cached = next(offline_mirror.glob("z2cnn_rotmnist-*.safetensors"))
    data = bytearray(cached.read_bytes())
    data[-1] ^= 0xFF
    cached.write_bytes(bytes(data))
    assert main(["verify", "z2cnn_rotmnist"]) == 1
    assert "FAIL" in capsys.readouterr().out
