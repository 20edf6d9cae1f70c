"""eval/rotmnist_campaign.py: the queue of the rot-MNIST seed campaign, and the installation of
runs trained on transposed digits (folded into the natural frame, exactly)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import torch

from agcnn_zoo.hub.convert import load_safetensors, safetensors_bytes
from agcnn_zoo.hub.hosts import package
from agcnn_zoo.hub.manifest import load_manifest
from agcnn_zoo.nn.orientation import transposed_state_dict
from agcnn_zoo.registry import get_entry

from conftest import REPO

SCRIPT = REPO / "eval" / "rotmnist_campaign.py"


def _campaign():
    spec = importlib.util.spec_from_file_location("rotmnist_campaign", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_queue_is_every_rotmnist_name_three_seeds_cheapest_first(tmp_path):
    (tmp_path / "p4cnn_rotmnist.rotgen12k_s1").mkdir()
    (tmp_path / "p4cnn_rotmnist.rotgen12k_s1" / "record.json").write_text("{}")
    p = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--data-dir", "x",
                        "--dry-run"], capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.split("\n")[:-1]
    assert len(lines) == 21
    assert lines[0] == "pending p4cnn_rotmnist.rotgen12k_s0"
    assert lines[1] == "done    p4cnn_rotmnist.rotgen12k_s1"
    assert lines[-1] == "pending a_p4cnn_rotmnist.rotgen12k_s2"
    names = [line.split()[1].split(".")[0] for line in lines]
    import agcnn_zoo as zoo
    assert sorted(set(names)) == zoo.list_models("*_rotmnist")
    command = _campaign().command("p4cnn_rotmnist", 2, tmp_path / "r", "DATA")
    for flag in ("--no-validation", "--resume"):
        assert flag in command
    assert command[command.index("--tag") + 1] == "rotgen12k_s2"
    assert command[command.index("--threads") + 1] == "1"


def test_a_run_of_the_transposed_frame_is_staged_folded(tmp_path, monkeypatch):
    """A run as agcnn-zoo trained it before the weights took natural digits: its weight is the
    package's trained p4cnn weight moved back into the transposed frame. Staging folds it again:
    the bytes of the package's file come back, the record says so, and it installs."""
    wid = "p4cnn_rotmnist.zoo_rotgen_s0"
    rec = load_manifest()["weights"][wid]
    tensors, meta = load_safetensors(package.WEIGHTS_DIR / rec["file"])
    model = get_entry("p4cnn_rotmnist").fn()
    old_frame = transposed_state_dict(model, tensors)
    run = tmp_path / "run"
    run.mkdir()
    old_meta = {k: v for k, v in meta.items() if k != "agcnn_zoo.frame"}
    (run / rec["file"]).write_bytes(safetensors_bytes(old_frame, old_meta))
    old_rec = json.loads(json.dumps(rec))
    old_rec["preprocessing"]["orientation"] = "transposed w.r.t. MNIST"
    (run / "record.json").write_text(json.dumps(old_rec))
    staged = _campaign().natural_copy(run / "record.json", tmp_path / "staged")
    new = json.loads(staged.read_text())
    weight = staged.parent / rec["file"]
    assert weight.read_bytes() == (package.WEIGHTS_DIR / rec["file"]).read_bytes()
    assert (new["sha256"], new["size"]) == (rec["sha256"], rec["size"])
    assert "folded" in new["origin"]["frame"] and "orientation" not in new["preprocessing"]
    assert (run / rec["file"]).read_bytes() != weight.read_bytes()  # the run is left alone
    # installed as the campaign does (into the package), here into copies
    from agcnn_zoo.train import install
    manifest = tmp_path / "manifest.json"
    manifest.write_text((REPO / "weights_manifest.json").read_text())
    monkeypatch.setattr(package, "WEIGHTS_DIR", tmp_path / "weights")
    assert install(staged, manifest=manifest, package=True) == wid
    got, _ = load_safetensors(tmp_path / "weights" / rec["file"])
    assert all(torch.equal(got[k], v) for k, v in tensors.items())
    assert json.loads(manifest.read_text())["weights"][wid]["sha256"] == rec["sha256"]
