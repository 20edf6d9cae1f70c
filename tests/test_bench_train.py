"""eval/bench_train.py runs end to end on the CPU and prints, per CIFAR name, training images/s,
peak memory, the epoch and recipe times they imply, the counted operations of a training image
and the H100 time they imply (a smoke test: no timing is asserted)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from agcnn_zoo.train.throughput import training_flops
from conftest import REPO


def test_bench_train_prints_a_row_per_name(tmp_path):
    out_json = tmp_path / "rates.json"
    out = subprocess.run([sys.executable, str(REPO / "eval" / "bench_train.py"), "--models",
                          "allcnnc_cifar,resnet44_cifar", "--batch", "2", "--steps", "1",
                          "--threads", "1", "--device", "cpu", "--tflops", "100",
                          "--json", str(out_json)], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out_json.read_text())
    assert [r["model"] for r in rows] == ["allcnnc_cifar", "resnet44_cifar"]
    assert all(r["images_per_s"] > 0 and r["peak_bytes"] > 0 and r["batch"] == 2 for r in rows)
    table = [l for l in out.stdout.splitlines() if l.startswith("| `")]
    assert len(table) == 2 and "(350 ep.)" in table[0] and "(300 ep.)" in table[1]
    assert "H100 at 100 TFLOP/s" in out.stdout


def test_training_flops_count_the_convolutions_of_forward_and_backward():
    # All-CNN-C's convolutions as (output pixels, out channels, in channels, kernel size):
    # forward multiply-adds, two operations each; a training step is about three forwards
    # (the input gradient of the first layer is not needed)
    convs = [(32 * 32, 96, 3, 3), (32 * 32, 96, 96, 3), (32 * 32, 96, 96, 3),
             (16 * 16, 192, 96, 3), (16 * 16, 192, 192, 3), (16 * 16, 192, 192, 3),
             (8 * 8, 192, 192, 3), (8 * 8, 192, 192, 1), (8 * 8, 10, 192, 1)]
    forward = 2 * sum(p * o * i * k * k for p, o, i, k in convs)
    flops = training_flops("allcnnc_cifar")
    assert flops == pytest.approx(3 * forward, rel=0.02)
    # p4: channels / 2, four rotations on both sides of every group convolution: 4x the work
    assert training_flops("p4_allcnnc_cifar") == pytest.approx(4 * flops, rel=0.02)
