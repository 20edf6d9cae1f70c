"""publish(): verified files and model cards go to a (fake) Hugging Face endpoint in one commit,
the revision is pinned in the manifest, and the hub then fetches the very same bytes from it."""
from __future__ import annotations

import hashlib
import json
import shutil
import urllib.parse
import urllib.request

import pytest
import torch
from safetensors.torch import load_file

from _servers import FakeHFHub, isolate_env, tampered
from agcnn_zoo import hub
from agcnn_zoo.hub.hosts import package
from agcnn_zoo.hub.manifest import load_manifest, validate_manifest
from agcnn_zoo.hub.publish import model_card, publish
from agcnn_zoo.registry import get_entry
from conftest import MIRROR, REPO, checkpoint_path, golden_path, shared, as_published_input

REPO_ID = "agcnn-test/zoo"


@pytest.fixture
def env(tmp_path, monkeypatch):
    isolate_env(tmp_path, monkeypatch)
    monkeypatch.setenv("AGCNN_ZOO_MIRROR", str(shared(MIRROR)))  # build from the authors' files, offline

    real_urlopen = urllib.request.urlopen

    def local_only(request, *args, **kwargs):  # the fake hub on 127.0.0.1 only
        url = request.full_url if isinstance(request, urllib.request.Request) else request
        if urllib.parse.urlsplit(url).hostname != "127.0.0.1":
            raise AssertionError(f"no request may leave 127.0.0.1: {url}")
        return real_urlopen(request, *args, **kwargs)
    monkeypatch.setattr(urllib.request, "urlopen", local_only)
    manifest = tmp_path / "weights_manifest.json"
    shutil.copyfile(REPO / "weights_manifest.json", manifest)
    return manifest


def unpin(manifest, name):
    """Turn ``name``'s record into the form of a weight known only by its source's git blob id."""
    data = json.loads(manifest.read_text())
    rec = data["weights"][name]
    pth = checkpoint_path(name).read_bytes()
    blob = hashlib.sha1(b"blob %d\0" % len(pth) + pth).hexdigest()
    pinned = rec["sha256"], rec["size"]
    rec.update(sha256=None, size=None, git_blob_sha1=blob)
    # a weight known only by its source cannot be embedded: its package host goes too
    rec["hosts"] = [h for h in rec["hosts"] if h["type"] != "package"]
    rec["hosts"][0].pop("sha256")
    rec["hosts"][0]["git_blob_sha1"] = blob
    manifest.write_text(json.dumps(data, indent=2))
    return pinned


def test_publish_pins_the_revision_and_the_hub_fetches_the_same_bytes(env, tmp_path, monkeypatch):
    manifest = env
    before = load_manifest(manifest)["weights"]
    z2_pinned = unpin(manifest, "z2cnn_rotmnist")
    # the rot-MNIST weights: their sources are in the reference mirror (others may not be)
    names = sorted(n for n in before if n.endswith("_rotmnist"))
    assert len(names) >= 4
    lines = []
    with pytest.warns(hub.UnpinnedWeightsWarning):
        with FakeHFHub() as fake:
            revision = publish(REPO_ID, manifest_path=manifest, endpoint=fake.endpoint,
                               names=names, progress=False, log=lines.append)
            uploaded = fake.files(REPO_ID, revision)
            commit_calls = fake.count("POST", "/commit/")

            after = load_manifest(manifest)
            assert validate_manifest(after) == []
            assert revision == fake.repos[REPO_ID]["main"] and len(revision) == 40
            assert commit_calls == 1  # one commit for every file
            assert set(after["weights"]) == set(before)
            for name in names:
                rec = after["weights"][name]
                # the embedded file stays first (no network), the hub before the other hosts
                hosts = [h for h in rec["hosts"] if h["type"] != "package"]
                if name != "z2cnn_rotmnist":
                    assert rec["hosts"][0] == {"type": "package", "path": rec["file"]}
                assert hosts[0] == {"type": "huggingface", "repo_id": REPO_ID,
                                    "revision": revision, "filename": rec["file"]}
                assert hosts[1:] == [h for h in before[name]["hosts"] if h["type"] != "package"] \
                    or name == "z2cnn_rotmnist"
                assert hashlib.sha256(uploaded[rec["file"]]).hexdigest() == rec["sha256"]
                assert len(uploaded[rec["file"]]) == rec["size"]
                card = uploaded[f"cards/{name}.md"].decode()
                assert rec["sha256"] in card and f"{rec['num_params']:,}" in card
                assert f"{rec['accuracy']['checkpoint']['top1']:g}%" in card
            # the unpinned record got the hash of the file built from its verified source
            z2 = after["weights"]["z2cnn_rotmnist"]
            assert (z2["sha256"], z2["size"]) == z2_pinned
            readme = uploaded["README.md"].decode()
            assert readme.startswith("---\nlicense: mit\n") and "cards/p4cnn_rotmnist.md" in readme
            assert any(revision in line for line in lines)

            # a fresh machine: empty caches, no mirror, only the fake hub reachable
            monkeypatch.setenv("AGCNN_ZOO_CACHE", str(tmp_path / "fresh_cache"))
            monkeypatch.delenv("AGCNN_ZOO_MIRROR")
            monkeypatch.setenv("HF_ENDPOINT", fake.endpoint)
            monkeypatch.setattr(package, "WEIGHTS_DIR", tmp_path / "empty")  # not embedded
            name = "af_p4cnn_rotmnist"
            rec = after["weights"][name]
            path = hub.fetch_weights(name, rec, progress=False)
            assert fake.count("GET", f"/resolve/{revision}/{rec['file']}") == 1
            assert path == hub.cached_weights_path(name, rec)
            assert path.read_bytes() == uploaded[rec["file"]]
            model = get_entry(name).fn()
            model.load_state_dict(hub.load_state_dict(name, rec, progress=False), strict=True)
            golden = load_file(golden_path(name))
            with torch.no_grad():
                out = model.eval()(as_published_input(name, golden["input"]))
                assert (out - golden["logits"]).abs().max() <= 1e-4


def test_republishing_replaces_the_host_of_that_repo_only(env, monkeypatch):
    manifest = env
    data = json.loads(manifest.read_text())
    other = {"type": "huggingface", "repo_id": "someone/else", "revision": "ef" * 20,
             "filename": "p4cnn_rotmnist.safetensors"}
    data["weights"]["p4cnn_rotmnist"]["hosts"].insert(1, other)
    manifest.write_text(json.dumps(data, indent=2))
    with FakeHFHub() as fake:
        first = publish(REPO_ID, manifest_path=manifest, endpoint=fake.endpoint,
                        names=["p4cnn_rotmnist", "z2cnn_rotmnist"], progress=False, log=lambda s: None)
        monkeypatch.setenv("HF_ENDPOINT", fake.endpoint)  # the endpoint argument defaults to it
        second = publish(REPO_ID, manifest_path=manifest, names=["p4cnn_rotmnist"],
                         progress=False, log=lambda s: None)
    assert first != second
    weights = load_manifest(manifest)["weights"]
    hosts = weights["p4cnn_rotmnist"]["hosts"]
    assert [(h["type"], h.get("repo_id")) for h in hosts] == [
        ("package", None), ("huggingface", REPO_ID), ("huggingface", "someone/else"),
        ("original", None)]
    assert hosts[1]["revision"] == second
    assert weights["z2cnn_rotmnist"]["hosts"][1]["revision"] == first
    assert [h["type"] for h in weights["a_p4cnn_rotmnist"]["hosts"]] == ["package", "original"]


def test_a_bad_file_stops_publishing_before_any_upload(env, tmp_path):
    manifest = env
    original = manifest.read_bytes()
    files = tmp_path / "files"
    files.mkdir()
    rec = load_manifest(manifest)["weights"]["p4cnn_rotmnist"]
    good = hub.fetch_weights("p4cnn_rotmnist", rec, progress=False).read_bytes()
    (files / rec["file"]).write_bytes(tampered(good))
    with FakeHFHub() as fake:
        with pytest.raises(hub.IntegrityError):  # after a good one: still nothing uploaded
            publish(REPO_ID, manifest_path=manifest, endpoint=fake.endpoint, files_dir=files,
                    names=["a_p4cnn_rotmnist", "p4cnn_rotmnist"], progress=False,
                    log=lambda s: None)
        assert fake.requests == []
        # the same folder with the right bytes is used as is
        (files / rec["file"]).write_bytes(good)
        publish(REPO_ID, manifest_path=manifest, endpoint=fake.endpoint, files_dir=files,
                names=["p4cnn_rotmnist"], progress=False, log=lambda s: None)
    assert manifest.read_bytes() != original


def test_bad_arguments_are_refused(env):
    with pytest.raises(ValueError, match="ORG/NAME"):
        publish("no-slash", manifest_path=env)
    with pytest.raises(ValueError, match="not in the manifest"):
        publish(REPO_ID, manifest_path=env, names=["p4_allcnnc_cifar"])


def test_model_card_carries_accuracies_origin_licence_and_caveats():
    rec = load_manifest()["weights"]["p4cnn_rotmnist"]
    rec = json.loads(json.dumps(rec))
    caveat = ("The authors published this checkpoint as 'f_att_p4m_densenet', but their run script "
              "maps that name to the plain P4MDenseNet(n_channels=9) class")
    rec["notes"].insert(0, caveat)
    rec["accuracy"]["paper"]["top1"] = None
    rec["accuracy"]["measured"] = [{"dataset": "rotmnist test", "top1": 97.86, "images": 50000,
                                    "device": "cpu", "date": "2025-01-01"}]
    card = model_card("p4cnn_rotmnist", rec, REPO_ID)
    assert caveat in card
    assert "| paper | not reported (unconfirmed)" in card
    assert "97.862%" in card and "97.86%" in card and "50000 images" in card
    assert rec["origin"]["url"] in card and rec["license"]["text"] in card
    assert "transposed" in card  # preprocessing
    assert "create_model('p4cnn_rotmnist', pretrained=True)" in card


def test_a_weight_trained_here_publishes_like_any_other(env, tmp_path, monkeypatch):
    """Ours (tagged, shipped in the package) goes to the hub with its card, and a machine whose
    package lacks the file then loads it from the hub."""
    from agcnn_zoo.hub.hosts import package
    manifest = env
    wid = next(k for k, r in load_manifest(manifest)["weights"].items()
               if r["origin"]["kind"] == "trained")
    with FakeHFHub() as fake:
        revision = publish(REPO_ID, manifest_path=manifest, endpoint=fake.endpoint, names=[wid],
                           progress=False, log=lambda s: None)
        uploaded = fake.files(REPO_ID, revision)
        rec = load_manifest(manifest)["weights"][wid]
        assert [h["type"] for h in rec["hosts"]] == ["package", "huggingface"]
        card = uploaded[f"cards/{wid}.md"].decode()
        assert rec["sha256"] in card and "Trained by agcnn-zoo (not the authors' weights)" in card
        assert "no retraining" not in card
        embedded = (package.WEIGHTS_DIR / rec["file"]).read_bytes()
        assert uploaded[rec["file"]] == embedded
        # no embedded copy, no mirror: the hub serves the same verified bytes
        monkeypatch.setattr(package, "WEIGHTS_DIR", tmp_path / "empty")
        monkeypatch.setenv("AGCNN_ZOO_CACHE", str(tmp_path / "fresh_cache"))
        monkeypatch.delenv("AGCNN_ZOO_MIRROR")
        monkeypatch.setenv("HF_ENDPOINT", fake.endpoint)
        monkeypatch.setenv("AGCNN_ZOO_MANIFEST", str(manifest))
        path = hub.fetch_weights(wid, rec, progress=False)
        assert fake.count("GET", f"/resolve/{revision}/{rec['file']}") == 1
        assert path == hub.cached_weights_path(wid, rec) and path.read_bytes() == embedded
