"""Host kind ``checkout``: a trained CIFAR-10 weight (over the package's 512 KB) kept in the
repository's hf/agcnn-zoo/ folder, loaded from there with its sha256 checked, never copied to or
deleted by the cache, and published unchanged to a (fake, 127.0.0.1) Hugging Face hub."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from _cifar import jpeg_subset
from _servers import FakeHFHub, isolate_env
from agcnn_zoo import create_model, hub
from agcnn_zoo.hub.hosts import checkout
from agcnn_zoo.hub.manifest import load_manifest
from agcnn_zoo.train.checkpoint import CHECKPOINT, load_checkpoint
from agcnn_zoo.hub.publish import publish
from agcnn_zoo.hub.records import RecordError, parse_record
from agcnn_zoo.io import IntegrityError
from agcnn_zoo.train import install, train
from conftest import REPO


@pytest.fixture
def trained(tmp_path, monkeypatch):
    """A real (short) allcnnc_cifar run on real JPEGs, installed into a scratch manifest and a
    scratch hf/agcnn-zoo/ folder."""
    cache = isolate_env(tmp_path, monkeypatch)
    data = jpeg_subset(tmp_path / "data", 2)
    run = train("allcnnc_cifar", dataset="cifar10-jpeg", data_dir=data, out=tmp_path / "run",
                tag="t", epochs=1, batch_size=8, limit_train=16, limit_val=4, limit_test=4,
                threads=1, progress=False)
    manifest = tmp_path / "weights_manifest.json"
    shutil.copyfile(REPO / "weights_manifest.json", manifest)
    folder = tmp_path / "clone"
    monkeypatch.setenv("AGCNN_ZOO_HF_CLONE", str(folder))
    monkeypatch.setenv("AGCNN_ZOO_MANIFEST", str(manifest))
    assert install(run.out / "record.json", manifest, default=True, package=True,
                   allow_limited=True) == \
        "allcnnc_cifar.t"
    return run, manifest, folder, cache


def test_a_trained_weight_loads_from_the_checkout_folder(trained, tmp_path):
    run, manifest, folder, cache = trained
    rec = load_manifest(manifest)["weights"]["allcnnc_cifar.t"]
    assert rec["hosts"] == [{"type": "checkout", "path": "allcnnc_cifar.t.safetensors"}]
    assert 512 * 1024 < rec["size"] <= checkout.MAX_BYTES
    assert rec["training"]["dataset"] == "cifar10-jpeg"
    assert any("JPEG-compressed" in n for n in rec["notes"])
    assert (folder / rec["file"]).read_bytes() == run.weight.read_bytes()
    card = (folder / "cards" / "allcnnc_cifar.t.md").read_text()
    assert rec["sha256"] in card and "cifar10-jpeg" in card
    assert "allcnnc_cifar.t" in (folder / "README.md").read_text()
    model = create_model("allcnnc_cifar", pretrained=True)  # ours is the name's default
    best = load_checkpoint(run.out / CHECKPOINT)["best"]["state"]
    for k, v in best.items():
        assert torch.equal(model.state_dict()[k], v), k
    assert hub.fetch_weights("allcnnc_cifar.t", progress=False) == folder / rec["file"]
    assert not cache.exists() or not list(cache.glob("*.safetensors"))  # read in place
    # modified in the checkout: refused and left alone (the cache logic never deletes it)
    data = bytearray((folder / rec["file"]).read_bytes())
    data[-3] ^= 1
    (folder / rec["file"]).write_bytes(bytes(data))
    with pytest.raises(Exception) as err:
        create_model("allcnnc_cifar.t", pretrained=True)
    assert isinstance(err.value, IntegrityError) or isinstance(err.value.__cause__, IntegrityError)
    assert (folder / rec["file"]).read_bytes() == bytes(data)
    # absent (an installed wheel has no hf/ folder): the message names the folder to fill
    (folder / rec["file"]).unlink()
    with pytest.raises(hub.WeightsUnavailableError) as err:
        hub.fetch_weights("allcnnc_cifar.t", progress=False)
    assert str(folder) in str(err.value) and "AGCNN_ZOO_HF_CLONE" in str(err.value)
    # a symlink in its place is refused, not followed
    (folder / rec["file"]).symlink_to(run.weight)
    with pytest.raises(hub.WeightsUnavailableError, match="symlink"):
        hub.fetch_weights("allcnnc_cifar.t", progress=False)


def test_the_checkout_folder_publishes_unchanged(trained, tmp_path, monkeypatch):
    run, manifest, folder, _ = trained
    with FakeHFHub() as fake:
        revision = publish("agcnn-test/agcnn-zoo", manifest_path=manifest, endpoint=fake.endpoint,
                           names=["allcnnc_cifar.t"], progress=False, log=lambda s: None)
        uploaded = fake.files("agcnn-test/agcnn-zoo", revision)
        rec = load_manifest(manifest)["weights"]["allcnnc_cifar.t"]
        # the local copy stays first (no network), the hub behind it
        assert [h["type"] for h in rec["hosts"]] == ["checkout", "huggingface"]
        assert uploaded[rec["file"]] == (folder / rec["file"]).read_bytes()
        assert rec["sha256"] in uploaded["cards/allcnnc_cifar.t.md"].decode()
        # no checkout copy (a wheel), fresh cache: the hub serves the same verified bytes
        monkeypatch.setenv("AGCNN_ZOO_HF_CLONE", str(tmp_path / "no_clone"))
        monkeypatch.setenv("AGCNN_ZOO_CACHE", str(tmp_path / "fresh_cache"))
        monkeypatch.setenv("HF_ENDPOINT", fake.endpoint)
        path = hub.fetch_weights("allcnnc_cifar.t", progress=False)
        assert fake.count("GET", f"/resolve/{revision}/{rec['file']}") == 1
        assert path == hub.cached_weights_path("allcnnc_cifar.t")
        assert path.read_bytes() == run.weight.read_bytes()


def test_checkout_records_are_checked_when_parsed_and_loaded(tmp_path, monkeypatch):
    base = {"file": "x.safetensors", "sha256": "0" * 64, "size": 10}
    with pytest.raises(RecordError, match="plain file name inside hf/agcnn-zoo"):
        parse_record("allcnnc_cifar.t", {**base, "hosts": [{"type": "checkout", "path": "../x"}]})
    rec = parse_record("allcnnc_cifar.t", {**base, "size": checkout.MAX_BYTES + 1,
                                           "hosts": [{"type": "checkout", "path": "x.safetensors"}]})
    monkeypatch.setenv("AGCNN_ZOO_HF_CLONE", str(tmp_path))
    (tmp_path / "x.safetensors").write_bytes(b"0" * 10)
    with pytest.raises(hub.UnsafeFileError, match="at most"):
        checkout.read(rec, rec.hosts[0])
    assert json.loads(json.dumps(rec.to_dict()))["hosts"] == [{"type": "checkout",
                                                             "path": "x.safetensors"}]
