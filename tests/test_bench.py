"""eval/bench.py runs end to end and reports every path (a smoke test: no timing is asserted)."""
from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO


def test_bench_reports_fast_reference_and_export(tmp_path):
    out_json = tmp_path / "bench.json"
    out = subprocess.run([sys.executable, str(REPO / "eval" / "bench.py"), "--models", "p4cnn_rotmnist",
                          "--batch-sizes", "2", "--repeats", "0", "--modes", "eval",
                          "--paths", "fast,reference,export", "--json", str(out_json)],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out_json.read_text())
    assert sorted(r["path"] for r in rows) == ["export", "fast", "reference"]
    assert all(r["images_per_s"] > 0 and r["peak_bytes"] >= 0 for r in rows)
    assert "vs ref" in out.stdout and "of export speed" in out.stdout


def test_bench_measures_a_baseline_checkout_interleaved_in_rounds(tmp_path):
    """``--baseline`` imports the package of another checkout (here the repository itself, as
    a stand-in for a worktree of an older commit) in its own processes."""
    out_json = tmp_path / "bench.json"
    out = subprocess.run([sys.executable, str(REPO / "eval" / "bench.py"), "--models", "ach_p4cnn_rotmnist",
                          "--batch-sizes", "2", "--repeats", "0", "--modes", "train", "--rounds", "2",
                          "--paths", "fast", "--baseline", str(REPO), "--json", str(out_json)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out_json.read_text())
    assert [r["path"] for r in rows] == ["fast", "baseline"] * 2
    assert {r["package"] for r in rows} == {str(REPO / "agcnn_zoo")}
    assert all(r["images_per_s"] > 0 and r["first_call_s"] > 0 for r in rows)
    assert "fast x" in out.stdout and "vs baseline" in out.stdout


def test_bench_refuses_a_baseline_without_the_package(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "eval" / "bench.py"), "--baseline", str(tmp_path)],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 2
    assert "no agcnn_zoo package in it" in out.stderr and "git worktree add" in out.stderr


def _fake_original(root):
    """A stand-in checkout with the original's package layout whose P4CNN is the zoo's own."""
    (root / "attgconv").mkdir(parents=True)
    pkg = root / "experiments" / "rot_mnist" / "models"
    pkg.mkdir(parents=True)
    (root / "experiments" / "__init__.py").write_text("")
    (root / "experiments" / "rot_mnist" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("from agcnn_zoo.models.rotmnist import P4CNN\n")
    return root


def test_bench_original_times_both_implementations(tmp_path):
    original = _fake_original(tmp_path / "att_gconvs")
    out_json = tmp_path / "orig.json"
    out = subprocess.run([sys.executable, str(REPO / "eval" / "bench_original.py"),
                          "--original", str(original), "--models", "p4cnn_rotmnist",
                          "--batch-sizes", "2", "--repeats", "1", "--json", str(out_json)],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out_json.read_text())
    assert sorted((r["impl"], r["mode"]) for r in rows) == [
        ("original", "eval"), ("original", "train"), ("zoo", "eval"), ("zoo", "train"),
        ("zoo-compiled", "eval"), ("zoo-compiled", "train")]
    assert all(r["images_per_s"] > 0 for r in rows)
    assert [r["relative_logit_difference"] for r in rows if r["mode"] == "eval"] == [0.0] * 3
    assert "zoo x" in out.stdout and "zoo-compiled x" in out.stdout


def test_bench_original_refuses_a_folder_that_is_not_the_original(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "eval" / "bench_original.py"),
                          "--original", str(tmp_path)], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 2
    assert "not a checkout of dwromero/att_gconvs" in out.stderr
