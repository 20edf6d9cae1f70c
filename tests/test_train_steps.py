"""Checkpoints inside an epoch (a CIFAR-10 epoch of a p4m network takes hours on a CPU): a run
stopped after any step, or SIGKILLed between checkpoints, resumes bit-identical to an
uninterrupted one; the clock that decides when; the budget's shortened schedules and the plan."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from _cifar import jpeg_subset
from agcnn_zoo.train import ResumeError, recipe_for, train
from agcnn_zoo.train.checkpoint import CHECKPOINT, load_checkpoint
from agcnn_zoo.train.allocate import allocate, run_seconds
from agcnn_zoo.train.budget import epochs_within, shortened
from agcnn_zoo.train.clock import CheckpointClock, TrainingStopped
from agcnn_zoo.train.speed import Speed
from conftest import REPO

SMALL = dict(dataset="cifar10-jpeg", limit_train=40, limit_val=10, limit_test=10, threads=1,
             progress=False, epochs=2, batch_size=16)


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.setenv("AGCNN_ZOO_CACHE", str(tmp_path / "cache"))
    return jpeg_subset(tmp_path / "data", 5)


def test_stopped_after_every_step_then_resumed_is_bit_identical(tmp_path, data):
    full = train("allcnnc_cifar", out=tmp_path / "full", data_dir=data, **SMALL)
    stops = []
    while True:  # stop_at in the past: every call trains one step, checkpoints and stops
        try:
            done = train("allcnnc_cifar", out=tmp_path / "steps", data_dir=data, resume=True,
                         speed=Speed(checkpoint_every_s=3600, stop_at=0.0), **SMALL)
            break
        except TrainingStopped as e:
            stops.append((e.epoch, e.step))
            state = load_checkpoint(tmp_path / "steps" / CHECKPOINT)
            assert (state["epoch"], state["step"]) == (e.epoch, e.step)
            # no weight written yet: the checkpoint is the only safetensors file
            assert [f.name for f in (tmp_path / "steps").glob("*.safetensors")] == [CHECKPOINT]
    # 40 images in batches of 16: three steps an epoch; a stop inside each epoch, one at its end
    assert stops == [(0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert done.weight.read_bytes() == full.weight.read_bytes()
    strip = lambda p: [{k: v for k, v in json.loads(l).items() if k != "seconds"}  # noqa: E731
                       for l in p.read_text().splitlines()]
    assert strip(tmp_path / "steps" / "metrics.jsonl") == strip(tmp_path / "full" / "metrics.jsonl")
    # a run stopped inside epoch 2 cannot end at epoch 1
    train("allcnnc_cifar", out=tmp_path / "inside", data_dir=data, **{**SMALL, "epochs": 1})
    with pytest.raises(TrainingStopped):
        train("allcnnc_cifar", out=tmp_path / "inside", data_dir=data, resume=True,
              speed=Speed(checkpoint_every_s=3600, stop_at=0.0), **SMALL)
    with pytest.raises(ResumeError, match="inside epoch 2"):
        train("allcnnc_cifar", out=tmp_path / "inside", data_dir=data, resume=True,
              **{**SMALL, "epochs": 1})


def test_sigkill_between_mid_epoch_checkpoints_then_resume_is_bit_identical(tmp_path, data):
    args = ["train", "allcnnc_cifar", "--dataset", "cifar10-jpeg", "--data-dir", str(data),
            "--epochs", "1", "--batch-size", "4", "--limit-train", "40", "--limit-val", "4",
            "--limit-test", "4", "--threads", "1", "--no-progress"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    full = subprocess.run([sys.executable, "-m", "agcnn_zoo", *args, "--out", str(tmp_path / "full")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert full.returncode == 0, full.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "agcnn_zoo", *args, "--out", str(out),
                             "--checkpoint-every", "0.000001"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt, deadline = out / CHECKPOINT, time.time() + 300
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # after the first checkpoint: inside the only epoch
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    state = load_checkpoint(ckpt)
    assert state["epoch"] == 0 and 1 <= state["step"] < 10
    assert not (out / "allcnnc_cifar.safetensors").exists()
    resumed = subprocess.run([sys.executable, "-m", "agcnn_zoo", *args, "--out", str(out), "--resume"],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    name = "allcnnc_cifar.safetensors"
    assert (out / name).read_bytes() == (tmp_path / "full" / name).read_bytes()


def test_the_clock_saves_on_time_and_stops_at_its_limit():
    now = [100.0]
    clock = CheckpointClock(every_s=10, stop_at=130, now=lambda: now[0])
    assert clock.after_step() is None
    now[0] = 110.0
    assert clock.after_step() == "save"
    clock.saved()
    now[0] = 115.0
    assert clock.after_step() is None and not clock.should_stop()
    now[0] = 130.0
    assert clock.after_step() == "stop" and clock.should_stop()
    assert not CheckpointClock().active and CheckpointClock().after_step() is None
    with pytest.raises(ValueError, match="positive number of seconds"):
        Speed(checkpoint_every_s=0)


def test_a_shortened_schedule_scales_milestones_and_the_learning_rate():
    r = recipe_for("allcnnc_cifar")  # 350 epochs, [200, 250, 300], lr 0.05 at batch 128
    s = shortened(r, 35)
    assert (s.epochs, s.milestones, s.lr, s.batch_size) == (35, (20, 25, 30), 0.05, 128)
    big = shortened(r, 350, 512)
    assert (big.epochs, big.milestones, big.lr, big.batch_size) == (350, (200, 250, 300), 0.2, 512)
    tiny = shortened(recipe_for("resnet44_cifar"), 4)  # [50, 100, 150] of 300 -> 1, 1, 2: merged
    assert tiny.milestones == (1, 2)
    assert shortened(r, 1).milestones == ()
    with pytest.raises(ValueError, match="1 to 350 epochs"):
        shortened(r, 351)
    with pytest.raises(ValueError, match="only ever raises the batch"):
        shortened(r, 10, 64)
    assert epochs_within(100.0, 1000.0, 45000, 5000) == 2  # 45 s + 5000 / 3000 s an epoch


def test_the_plan_resumes_first_then_cheapest_complete_recipe_first():
    rates = {"allcnnc_cifar": 20000.0, "resnet44_cifar": 10000.0, "p4m_allcnnc_cifar": 2000.0}
    full_a = run_seconds(shortened(recipe_for("allcnnc_cifar"), 350, 512), 20000.0)
    plans, later = allocate(rates, full_a + 60, batch=512)
    assert [(p.name, p.complete) for p in plans] == [("allcnnc_cifar", True), ("resnet44_cifar", False)]
    assert plans[0].recipe.batch_size == 512 and plans[0].recipe.lr == pytest.approx(0.2)
    assert plans[1].recipe.epochs < 300 and later == ["p4m_allcnnc_cifar"]
    # too little time for min_epochs: nothing shortened, everything waits
    plans, later = allocate(rates, 30, batch=512, min_epochs=5)
    assert plans == [] and sorted(later) == sorted(rates)
    # a run started earlier keeps its recipe and goes first, even when it is the dearest
    cut = shortened(recipe_for("p4m_allcnnc_cifar"), 20, 512)
    plans, _ = allocate(rates, full_a + 60, batch=512, frozen={"p4m_allcnnc_cifar": (cut, 7)})
    assert plans[0].name == "p4m_allcnnc_cifar" and plans[0].resumed and plans[0].recipe == cut


def test_the_full_alpha_chunk_budget_follows_the_gpu_memory(monkeypatch):
    from types import SimpleNamespace

    import agcnn_zoo as zoo
    from agcnn_zoo.train import speed as sp
    monkeypatch.delenv("AGCNN_ZOO_CHUNK_ELEMENTS", raising=False)
    assert sp.chunk_budget(torch.device("cpu")) is None  # the CPU cache decides there
    for total, budget in ((80e9, 1 << 27), (16e9, 1 << 24), (100e6, 1 << 20), (1e13, 1 << 28)):
        monkeypatch.setattr(torch.cuda, "get_device_properties",
                            lambda dev, t=total: SimpleNamespace(total_memory=int(t)))
        assert sp.chunk_budget(torch.device("cuda", 0)) == budget
    # runs sharing one GPU (the rot-MNIST campaign's lanes) each take the part they are given
    monkeypatch.setenv("AGCNN_ZOO_CHUNK_ELEMENTS", str(1 << 24))
    assert sp.chunk_budget(torch.device("cuda", 0)) == 1 << 24
    assert sp.chunk_budget(torch.device("cpu")) is None  # there the layers read it themselves
    monkeypatch.delenv("AGCNN_ZOO_CHUNK_ELEMENTS")
    model = zoo.create_model("a_p4cnn_rotmnist")
    sp.prepare_model(model, Speed(chunk_elements=12345), torch.device("cpu"))
    budgets = {m.max_chunk_elements for m in model.modules() if hasattr(m, "max_chunk_elements")}
    assert budgets == {12345}
    assert sp.for_device(torch.device("cuda")) == Speed(data_on_device=True, benchmark=True)
    assert sp.for_device(torch.device("cpu"), compile=True) == Speed(compile=True)
