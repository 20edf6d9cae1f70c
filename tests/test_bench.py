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


# ------------------------------------------------------------- eval/bench_layers.py (per layer)
def _bench_layers(*args, cwd):
    return subprocess.run([sys.executable, str(REPO / "eval" / "bench_layers.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd)


def test_bench_layers_times_a_baseline_kernel_layer_by_layer(tmp_path):
    """The repository itself stands in for a worktree of an older commit: its kernel file is
    loaded as a second module and both run every full-alpha layer of the model."""
    out_json = tmp_path / "layers.json"
    out = _bench_layers("--models", "asp_p4cnn_rotmnist", "--batch-size", 2, "--rounds", 2,
                        "--baseline", REPO, "--json", out_json, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out_json.read_text())
    assert [r["layer"] for r in rows] == list(range(1, 8))      # the 7 layers of P4CNN
    assert [r["input"][1:] for r in rows][:2] == [[1, 28, 28], [10, 4, 26, 26]]
    assert all(r[f"{k}_{m}_ms"] > 0 for r in rows for k in ("current", "baseline")
               for m in ("train", "eval"))
    assert all(r["max_relative_output_difference"] == 0.0 for r in rows)   # one kernel, twice
    assert out.stdout.count("vs baseline") == 8                   # 7 layers and the sum


def test_bench_layers_refuses_a_kernel_that_computes_another_layer(tmp_path):
    import shutil
    kernel = tmp_path / "agcnn_zoo" / "nn" / "full_alpha"
    shutil.copytree(REPO / "agcnn_zoo" / "nn" / "full_alpha", kernel,
                    ignore=shutil.ignore_patterns("__pycache__"))
    init = kernel / "__init__.py"
    init.write_text(init.read_text() + "\n_exact = attention_term\n\n\n"
                    "def attention_term(*args, **kwargs):\n    return 2 * _exact(*args, **kwargs)\n")
    out = _bench_layers("--models", "ach_p4cnn_rotmnist", "--batch-size", 2, "--rounds", 1,
                        "--baseline", tmp_path, cwd=tmp_path)
    assert out.returncode != 0
    assert "the kernels' outputs differ" in out.stderr and "layer 1" in out.stderr


def test_bench_layers_explains_a_kernel_with_another_interface(tmp_path):
    kernel = tmp_path / "agcnn_zoo" / "nn" / "full_alpha.py"
    kernel.parent.mkdir(parents=True)
    kernel.write_text("def attention_term(x, kr, geo):\n    return x\n")
    out = _bench_layers("--models", "ach_p4cnn_rotmnist", "--batch-size", 2, "--rounds", 1,
                        "--baseline", tmp_path, cwd=tmp_path)
    assert out.returncode != 0
    assert "the baseline kernel cannot run this checkout's layers" in out.stderr


def test_bench_layers_refuses_a_baseline_without_the_kernel(tmp_path):
    out = _bench_layers("--baseline", tmp_path, cwd=REPO)
    assert out.returncode == 2
    assert "has no agcnn_zoo/nn/full_alpha/" in out.stderr and "git worktree add" in out.stderr


def test_bench_input_checks_prints_the_ratios():
    """eval/bench_input_checks.py runs (a smoke test: no timing is asserted)."""
    out = subprocess.run([sys.executable, str(REPO / "eval" / "bench_input_checks.py"),
                          "--models", "z2cnn_rotmnist", "--batch-sizes", "2", "--repeats", "1",
                          "--rounds", "1"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "checked/unchecked" in out.stdout and "z2cnn_rotmnist" in out.stdout
