"""weights_manifest.json is the single source of truth: validate it and recompute what can be
recomputed (parameter counts from the models, sha256 from every file reachable offline)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import agcnn_zoo as zoo
from agcnn_zoo.hub.convert import convert_checkpoint, sha256_file
from agcnn_zoo.hub.manifest import load_manifest, save_manifest, validate_manifest
from agcnn_zoo.registry import get_entry
from conftest import MIRROR, REPO, shared

MANIFEST = load_manifest(REPO / "weights_manifest.json")
RECORDS = MANIFEST["weights"]
AUTHORS = sorted(k for k, r in RECORDS.items() if r["origin"]["kind"] == "authors_checkpoint")
TRAINED = sorted(k for k, r in RECORDS.items() if r["origin"]["kind"] == "trained")
EMBEDDED = REPO / "agcnn_zoo" / "weights"

# the authors' logs, quoted in ../shared/reference/README.md
AUTHORS_LOGS = {"z2cnn_rotmnist": 95.192, "p4cnn_rotmnist": 97.862, "a_p4cnn_rotmnist": 98.356,
                "af_p4cnn_rotmnist": 98.338, "p4m_densenet_pcam": 89.12353515625,
                "af_p4m_allcnnc_cifar": 93.47}


def _mirror_path(url: str) -> Path:
    return shared(MIRROR) / url.split("://", 1)[1]


def test_manifest_is_valid():
    assert validate_manifest(MANIFEST) == []


def test_validator_catches_problems():
    broken = load_manifest(REPO / "weights_manifest.json")
    rec = next(iter(broken["weights"].values()))
    rec["sha256"] = "abc"
    rec["hosts"].insert(0, {"type": "huggingface", "repo_id": "x/y", "revision": "main"})
    del rec["accuracy"]["paper"]["confirmed"]
    problems = "\n".join(validate_manifest(broken))
    assert "64 lowercase hex" in problems and "40-hex revision" in problems
    assert "'confirmed'" in problems
    with pytest.raises(ValueError, match="invalid manifest"):
        save_manifest(broken, REPO / "never-written.json")
    assert not (REPO / "never-written.json").exists()


def test_every_record_is_the_authors_or_ours():
    assert sorted(AUTHORS + TRAINED) == sorted(RECORDS) and AUTHORS and TRAINED
    assert all("." not in k for k in AUTHORS)  # the authors' weights are the untagged ones
    assert all("." in k for k in TRAINED)      # ours always carry a tag


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_parameter_counts_match_the_models(name):
    rec = RECORDS[name]
    entry = get_entry(name.split(".", 1)[0])
    assert sum(p.numel() for p in entry.fn().parameters()) == rec["num_params"]
    assert entry.model_class == rec["architecture"]


@pytest.mark.parametrize("name", TRAINED)
def test_trained_weights_ship_embedded_and_their_hashes_recompute(name):
    rec = RECORDS[name]
    assert rec["hosts"][0] == {"type": "package", "path": rec["file"]}
    f = EMBEDDED / rec["file"]
    assert f.stat().st_size == rec["size"] <= 512 * 1024
    assert sha256_file(f) == rec["sha256"]
    from agcnn_zoo.hub.convert import load_safetensors
    tensors, meta = load_safetensors(f)
    assert meta["agcnn_zoo.trained"] == "agcnn-zoo" and meta["agcnn_zoo.model"] == name.split(".")[0]
    entry = get_entry(name.split(".", 1)[0])
    entry.fn().load_state_dict(tensors, strict=True)


# the authors' checkpoints small enough to embed (<= 512 KB converted): all but CIFAR-10's
EMBEDDED_AUTHORS = ["a_p4cnn_rotmnist", "af_p4cnn_rotmnist", "p4cnn_rotmnist",
                    "p4m_densenet_pcam", "z2cnn_rotmnist"]


@pytest.mark.parametrize("name", EMBEDDED_AUTHORS)
def test_small_authors_weights_ship_embedded_as_the_first_host(name):
    rec = RECORDS[name]
    assert rec["hosts"][0] == {"type": "package", "path": rec["file"]}
    assert rec["hosts"][1]["type"] == "original"  # the authors' file stays the fallback
    f = EMBEDDED / rec["file"]
    assert f.stat().st_size == rec["size"] <= 512 * 1024
    assert sha256_file(f) == rec["sha256"]
    licence = (EMBEDDED / "LICENSE-att_gconvs").read_text()
    assert licence.startswith("MIT License") and "Erik J Bekkers" in licence


def test_every_weight_that_fits_is_embedded():
    fits = sorted(k for k, r in RECORDS.items() if r["size"] and r["size"] <= 512 * 1024)
    assert fits == sorted(EMBEDDED_AUTHORS + TRAINED)
    shipped = sorted(p.name for p in EMBEDDED.glob("*.safetensors"))
    assert shipped == sorted(RECORDS[k]["file"] for k in fits)


@pytest.mark.parametrize("name", AUTHORS)
def test_hashes_recomputed_from_reachable_files(name, tmp_path):
    rec = RECORDS[name]
    originals = [h for h in rec["hosts"] if h["type"] == "original"]
    assert originals, "every weight keeps its pinned original URL"
    src = _mirror_path(originals[0]["url"])
    if rec["sha256"] is None:
        # known only by its upstream git blob id (absent offline): nothing to recompute here,
        # but the record must say how the download is verified
        assert not src.exists()
        assert len(rec["git_blob_sha1"]) == 40 and originals[0]["git_blob_sha1"] == rec["git_blob_sha1"]
        return
    assert src.exists(), f"{name}: {src} not in the mirror"
    assert sha256_file(src) == originals[0]["sha256"] == rec["origin"]["sha256"]
    assert src.stat().st_size == originals[0]["size"]
    dst = tmp_path / rec["file"]
    sha = convert_checkpoint(src, dst, name)
    assert sha == rec["sha256"] == hashlib.sha256(dst.read_bytes()).hexdigest()
    assert dst.stat().st_size == rec["size"]


@pytest.mark.parametrize("name", TRAINED)
def test_trained_records_say_how_they_were_made(name):
    rec = RECORDS[name]
    acc, t = rec["accuracy"], rec["training"]
    assert acc["checkpoint"]["top1"] is None  # no authors' log: it is not their file
    assert acc["paper"]["confirmed"] is False
    assert t["epochs_run"] == t["recipe"]["epochs"] and 1 <= t["selected_epoch"] <= t["epochs_run"]
    assert t["shortened"] == (t["recipe"]["epochs"] < t["recipe_epochs"])
    assert t["limits"] == {"train": None, "val": None, "test": None}
    # the validated protocol: 10,000 train + 2,000 validate; the fixed schedule: all 12,000,
    # no validation, the last epoch
    if t.get("selection") == "last epoch":
        assert (t["data"]["train"], t["data"]["val"], t["val_top1"]) == (12000, 0, None)
        assert t["selected_epoch"] == t["epochs_run"] and rec["origin"]["frame"].startswith("natural")
    else:
        assert (t["data"]["train"], t["data"]["val"]) == (10000, 2000)
    assert t["dataset"] == "mnist-rot-gen"
    assert t["test"]["dataset"] == "mnist-rot-aux" and t["test"]["images"] == 10000
    assert rec["preprocessing"]["mean"] == [t["data"]["normalize"]["mean"]]
    measured = [m for m in acc["measured"] if m["dataset"] == "mnist-rot-aux"]
    assert measured and measured[0]["images"] == 10000
    # eval/reproduce.py (the set's own normalisation) and the run (training statistics) agree
    assert abs(measured[0]["top1"] - t["test"]["top1"]) < 0.2


@pytest.mark.parametrize("name", AUTHORS)
def test_accuracies_are_kept_apart_and_honest(name):
    acc = RECORDS[name]["accuracy"]
    assert acc["checkpoint"]["top1"] == pytest.approx(AUTHORS_LOGS[name])
    # PAPER.md: nothing of the paper's tables could be confirmed from a primary copy
    assert acc["paper"]["confirmed"] is False and acc["paper"]["source"]
    for m in acc["measured"]:
        assert m["dataset"] and m["device"] and m["date"] and 0 <= m["top1"] <= 100


def test_pcam_weight_is_recorded_as_the_plain_p4m_densenet():
    rec = RECORDS.get("p4m_densenet_pcam")
    assert rec is not None and rec["architecture"] == "P4MDenseNet"
    assert "af_p4m_densenet_pcam" not in RECORDS
    assert "f_att_p4m_densenet" in rec["origin"]["run"]
    assert any("plain" in n and "f_att_p4m_densenet" in n for n in rec["notes"])


def test_published_list_matches_manifest():
    assert zoo.list_models(pretrained=True) == sorted({k.split(".", 1)[0] for k in RECORDS})
    assert zoo.list_pretrained() == sorted(RECORDS)
