"""eval/campaign.py --smoke on the real JPEGs: every CIFAR name trains end to end on the CPU (the
loss falls, a record is written, the reproduce harness runs) and the files load through
create_model, torch.hub and timm; a campaign killed mid-run resumes from the folder carried into
the next call and ends with the same weight.

``a_p4m_resnet44_cifar`` (full alpha in every layer: about two minutes per training step of two
images on the 2-core CPU) is left out of the test for time; ``--smoke`` runs it by default."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from _cifar import jpeg_subset
from conftest import REPO

NAMES = ["allcnnc_cifar", "p4_allcnnc_cifar", "af_p4_allcnnc_cifar", "p4m_allcnnc_cifar",
         "af_p4m_allcnnc_cifar", "resnet44_cifar", "p4m_resnet44_cifar", "af_p4m_resnet44_cifar"]


def campaign(*args, **popen):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, str(REPO / "eval" / "campaign.py"), *args], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **popen)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    mp = pytest.MonkeyPatch()
    mp.setenv("AGCNN_ZOO_CACHE", str(root / "cache"))
    try:
        data = jpeg_subset(root / "data", 6)
        proc = campaign("--smoke", "--out", str(root / "out"), "--data-dir", str(data),
                        "--names", ",".join(NAMES))
        log = proc.communicate(timeout=3000)[0]
        yield root / "out", data, proc.returncode, log
    finally:
        mp.undo()


def test_smoke_trains_every_cifar_name_end_to_end(smoke):
    out, _, rc, log = smoke
    assert rc == 0, log[-4000:]
    state = json.loads((out / "campaign.json").read_text())
    call = state["calls"][-1]
    assert call["smoke_problems"] == [] and call["reproduce_exit"] == 0
    assert sorted(call["finished"]) == sorted(f"{n}.smoke" for n in NAMES)
    for name in NAMES:
        run = out / "runs" / f"{name}.smoke"
        rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
        assert rows[-1]["train_loss"] < rows[0]["train_loss"], name
        rec = json.loads((run / "record.json").read_text())
        assert rec["training"]["dataset"] == "cifar10-jpeg" and rec["training"]["shortened"]
        assert rec["hosts"] == [{"type": "checkout", "path": f"{name}.smoke.safetensors"}]
        assert rec["training"]["test"]["dataset"] == "cifar10-jpeg"
        assert not (run / "checkpoint.safetensors").exists()  # removed once the weight is written
        assert (out / "hf" / "agcnn-zoo" / "cards" / f"{name}.smoke.md").is_file()
    measured = json.loads((out / "reproduce.json").read_text())
    assert {r["model"] for r in measured["results"]} == {f"{n}.smoke" for n in NAMES}


def test_smoke_weights_load_through_create_model_torch_hub_and_timm(smoke, monkeypatch):
    import timm

    import agcnn_zoo as zoo
    out, _, rc, log = smoke
    assert rc == 0, log[-4000:]
    monkeypatch.setenv("AGCNN_ZOO_MANIFEST", str(out / "weights_manifest.json"))
    monkeypatch.setenv("AGCNN_ZOO_HF_CLONE", str(out / "hf" / "agcnn-zoo"))
    for name in NAMES:
        wid = f"{name}.smoke"
        state = zoo.create_model(wid, pretrained=True).state_dict()
        from safetensors.torch import load_file
        saved = load_file(str(out / "runs" / wid / f"{wid}.safetensors"))
        assert all(torch.equal(state[k], v) for k, v in saved.items()), name
        t = timm.create_model(wid, pretrained=True)
        assert all(torch.equal(t.state_dict()[k], v) for k, v in saved.items()), name
        if name != "af_p4m_allcnnc_cifar":  # that name's default is the authors' weight
            h = torch.hub.load(str(REPO), name, source="local", pretrained=True)
            assert all(torch.equal(h.state_dict()[k], v) for k, v in saved.items()), name


def test_a_killed_campaign_resumes_from_the_carried_folder(smoke, tmp_path, monkeypatch):
    out, data, rc, log = smoke
    assert rc == 0, log[-4000:]
    monkeypatch.setenv("AGCNN_ZOO_CACHE", str(tmp_path / "cache"))
    first = tmp_path / "call1"
    args = ["--smoke", "--data-dir", str(data), "--names", "allcnnc_cifar", "--checkpoint-every",
            "0.000001"]
    proc = campaign(*args, "--out", str(first), start_new_session=True)
    ckpt = first / "runs" / "allcnnc_cifar.smoke" / "checkpoint.safetensors"
    deadline = time.time() + 600
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the campaign and its training run, mid-epoch
    proc.communicate()
    assert not (first / "runs" / "allcnnc_cifar.smoke" / "record.json").exists()
    # the next call: the folder comes back carried into a fresh checkout
    carried = tmp_path / "carried"
    shutil.copytree(first, carried)
    second = campaign(*args, "--out", str(tmp_path / "call2"), "--resume-from", str(carried))
    text = second.communicate(timeout=1200)[0]
    assert second.returncode == 0, text[-3000:]
    assert "resumed from" in text
    wid = "allcnnc_cifar.smoke.safetensors"
    assert (tmp_path / "call2" / "runs" / "allcnnc_cifar.smoke" / wid).read_bytes() == \
        (out / "runs" / "allcnnc_cifar.smoke" / wid).read_bytes()


def test_a_budget_too_small_for_any_epoch_probes_plans_and_trains_nothing(tmp_path, monkeypatch):
    """The path of a GPU call, on the CPU: the probe measures the name on the device, the plan
    finds that not even a shortened run of min_epochs fits, nothing starts, the state says why."""
    monkeypatch.setenv("AGCNN_ZOO_CACHE", str(tmp_path / "cache"))
    data = jpeg_subset(tmp_path / "data", 2)
    proc = campaign("--out", str(tmp_path / "out"), "--data-dir", str(data), "--device", "cpu",
                    "--names", "allcnnc_cifar", "--budget", "120", "--reserve", "60",
                    "--probe-seconds", "1", "--threads", "1")
    text = proc.communicate(timeout=900)[0]
    assert proc.returncode == 0, text[-3000:]
    call = json.loads((tmp_path / "out" / "campaign.json").read_text())["calls"][-1]
    probe = call["probe"]["allcnnc_cifar"]
    assert probe["batch"] == 128 and probe["images_per_s"] > 0 and probe["device"] == "cpu"
    assert call["runs"] == {} and call["finished"] == []
    assert "allcnnc_cifar waits for a later call" in text
    assert not (tmp_path / "out" / "runs").exists()
