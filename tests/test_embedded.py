"""What ships inside the package works on a fresh machine with no network, no mirror and no data:
every embedded weight loads through ``create_model(pretrained=True)``, and the embedded sample of
rotated MNIST test digits is what ``mnist-rot-aux`` makes."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import agcnn_zoo as zoo
from agcnn_zoo import data
from agcnn_zoo.data.sample import SAMPLE_DIR, SAMPLE_FILES, write_sample
from agcnn_zoo.hub.manifest import load_manifest

from conftest import REPO

WEIGHTS = load_manifest()["weights"]
SHIPPED = sorted(k for k, r in WEIGHTS.items() if r["hosts"][0]["type"] == "package")


@pytest.fixture
def fresh_offline(tmp_path, monkeypatch):
    for var in ("AGCNN_ZOO_MIRROR", "AGCNN_ZOO_MANIFEST", "HF_ENDPOINT", data.DATA_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AGCNN_ZOO_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("AGCNN_ZOO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_shipped_weights_are_the_rotmnist_and_pcam_ones_and_every_file_is_listed():
    from agcnn_zoo.hub.hosts import package
    assert {WEIGHTS[k]["dataset"] for k in SHIPPED} == {"rotmnist", "pcam"}
    listed = sorted(WEIGHTS[k]["file"] for k in SHIPPED)
    on_disk = sorted(p.name for p in Path(package.WEIGHTS_DIR).glob("*.safetensors"))
    assert listed == on_disk        # no unlisted weight in the package, none missing


@pytest.mark.parametrize("weight_id", SHIPPED)
def test_every_shipped_weight_loads_offline_with_an_empty_cache(weight_id, fresh_offline):
    model = zoo.create_model(weight_id, pretrained=True)
    assert not model.training and model.pretrained_cfg["weight_id"] == weight_id
    c, h, w = WEIGHTS[weight_id]["preprocessing"]["input_size"]
    with torch.no_grad():
        assert model(torch.zeros(1, c, h, w)).shape == (1, WEIGHTS[weight_id]["preprocessing"]["num_classes"])
    # served from the package: nothing was written to the cache
    assert not fresh_offline.exists() or not any(p.is_file() for p in fresh_offline.rglob("*"))


def test_create_model_reads_the_manifest_it_is_given(tmp_path, fresh_offline):
    manifest = load_manifest()
    with pytest.raises(zoo.NoPretrainedWeightsError):
        zoo.create_model("p4cnn_rotmnist", pretrained=True,
                         manifest={"schema": 1, "weights": {}})
    model = zoo.create_model("p4cnn_rotmnist", pretrained=True, manifest=manifest)
    assert model.pretrained_cfg["weight_id"] == "p4cnn_rotmnist"


def test_the_sample_is_small_labelled_and_reads_as_an_eval_set():
    sizes = [(SAMPLE_DIR / f).stat().st_size for f in SAMPLE_FILES.values()]
    assert all(s <= 512 * 1024 for s in sizes)
    readme = (SAMPLE_DIR / "README.md").read_text()
    assert "CC BY-SA 3.0" in readme and "LeCun" in readme
    ds = data.load_eval_set("mnist-rot-sample", "/nonexistent", download=False)
    assert len(ds) == data.SAMPLE_SIZE == 300 and ds.smoke and not ds.canonical
    x, y = next(ds.batches(300))
    assert x.shape == (300, 1, 28, 28) and x.dtype == torch.float32
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-2
    assert set(y.tolist()) == set(range(10))


def test_the_sample_is_rebuilt_byte_for_byte_from_mnist(mnist_dir, tmp_path):
    out = write_sample(mnist_dir, tmp_path / "sample")
    for name in SAMPLE_FILES.values():
        assert (out / name).read_bytes() == (SAMPLE_DIR / name).read_bytes(), name
    # and it holds the first mnist-rot-aux digits, rounded to bytes
    aux = data.MNISTRotAux(mnist_dir)
    sample = data.MNISTRotSample()
    assert torch.equal(sample.labels, aux.labels[:300])
    assert (sample.pixels - aux.pixels[:300]).abs().max() <= 0.5 / 255 + 1e-6


def test_a_pretrained_load_hashes_the_weight_once_and_needs_no_hub_client(tmp_path):
    """create_model(pretrained=True) of a packaged weight: every byte hashed once (sha256 of the
    file's size, counted at hashlib itself), and huggingface_hub never imported."""
    spec = importlib.util.spec_from_file_location("code_joints", REPO / "eval" / "code_joints.py")
    joints = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(joints)
    hashed, size, hub_client = joints.hashed_per_load(str(tmp_path))
    assert hashed == size and not hub_client
