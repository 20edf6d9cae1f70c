"""The main job (agcnn_zoo.reproduce, run as eval/reproduce.py) end to end, offline: the published rot-MNIST weights (through
``zoo.create_model(pretrained=True)`` and the shared mirror) on rotated MNIST test digits, the
verdict rules, the reports, the manifest update and the missing-data exit code.

Kept cheap for a 2-core CPU: alpha-P4CNN (full attention) runs at about 5-8 digits/s there, so
it sees 200 digits and the three other weights 2,000 (the full 10,000-digit runs are measured by
hand, not here)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from agcnn_zoo import data
from agcnn_zoo.hub.manifest import load_manifest, save_manifest
from conftest import REPO

SCRIPT = REPO / "eval" / "reproduce.py"
ROTMNIST_WEIGHTS = ["a_p4cnn_rotmnist", "af_p4cnn_rotmnist", "p4cnn_rotmnist", "z2cnn_rotmnist"]


@pytest.fixture(scope="module")
def reproduce():
    from agcnn_zoo import reproduce
    return reproduce


@pytest.fixture(autouse=True)
def offline_weights(tmp_path, monkeypatch):
    # the rot-MNIST weights ship in the package: no mirror, no network, a private cache
    monkeypatch.delenv("AGCNN_ZOO_MIRROR", raising=False)
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    monkeypatch.setenv("AGCNN_ZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv(data.OFFLINE_ENV, "1")


def manifest_copy(tmp_path: Path, edit=None) -> Path:
    manifest = load_manifest()
    if edit:
        edit(manifest["weights"])
    path = tmp_path / "manifest.json"
    save_manifest(manifest, path)
    return path


def run(reproduce, *argv) -> int:
    return reproduce.main(["--quiet", *map(str, argv)])


def results(path: Path) -> dict:
    return {r["model"]: r for r in json.loads(path.read_text())["results"]}


# ----------------------------------------------------------------------------- end to end

def test_rotmnist_weights_on_rotated_mnist_digits(reproduce, mnist_dir, tmp_path):
    reports = []
    for models, limit in (("z2cnn_rotmnist,p4cnn_rotmnist,af_p4cnn_rotmnist", 2000),
                          ("a_p4cnn_rotmnist", 200)):
        js, md = tmp_path / f"{limit}.json", tmp_path / f"{limit}.md"
        code = run(reproduce, "--models", models, "--dataset", "mnist-rot-aux", "--data-dir",
                   mnist_dir, "--limit", limit, "--batch-size", 100, "--device", "cpu",
                   "--json", js, "--markdown", md)
        assert code == 0
        reports.append((results(js), md.read_text(), limit))
    measured = {}
    for res, markdown, limit in reports:
        for name, r in res.items():
            assert r["dataset"] == "mnist-rot-aux" and r["images"] == limit
            assert r["verdict"] == "INFO"  # an auxiliary set, no recorded expectation
            assert r["correct"] == round(r["measured"] * limit / 100)
            assert r["images_per_s"] > 0 and r["device"].startswith("cpu")
            assert f"| {name} | mnist-rot-aux | {limit} |" in markdown
            measured[name] = r["measured"]
    assert sorted(measured) == ROTMNIST_WEIGHTS
    assert measured["z2cnn_rotmnist"] >= 94.0
    for name in ("p4cnn_rotmnist", "af_p4cnn_rotmnist", "a_p4cnn_rotmnist"):
        assert measured[name] >= 97.0, (name, measured[name])


def test_recorded_aux_expectation_gives_pass_or_fail(reproduce, mnist_dir, tmp_path):
    args = ("--models", "z2cnn_rotmnist", "--dataset", "mnist-rot-aux", "--data-dir", mnist_dir,
            "--limit", 300, "--device", "cpu")
    js = tmp_path / "info.json"
    assert run(reproduce, *args, "--json", js) == 0
    got = results(js)["z2cnn_rotmnist"]
    assert got["verdict"] == "INFO"

    def recorded(top1, images=300):
        def edit(weights):
            weights["z2cnn_rotmnist"]["accuracy"]["measured"] = [
                {"dataset": "mnist-rot-aux", "top1": top1, "images": images,
                 "device": got["device"], "date": "2020-01-01", "torch": "x"}]
        return edit

    good = manifest_copy(tmp_path, recorded(got["measured"]))
    assert run(reproduce, *args, "--manifest", good, "--json", js) == 0
    assert results(js)["z2cnn_rotmnist"]["verdict"] == "PASS"
    assert results(js)["z2cnn_rotmnist"]["expected_from"] == "recorded"

    wrong = manifest_copy(tmp_path, recorded(got["measured"] - 0.5))  # off by 0.5 points
    md = tmp_path / "fail.md"
    assert run(reproduce, *args, "--manifest", wrong, "--json", js, "--markdown", md) == 1
    r = results(js)["z2cnn_rotmnist"]
    assert r["verdict"] == "FAIL" and r["delta"] == pytest.approx(0.5)
    assert "| FAIL |" in md.read_text()

    # a recorded value for another number of images is no expectation for this run
    other = manifest_copy(tmp_path, recorded(got["measured"] - 0.5, images=10000))
    assert run(reproduce, *args, "--manifest", other, "--json", js) == 0
    assert results(js)["z2cnn_rotmnist"]["verdict"] == "INFO"


def test_the_plan_names_only_real_downloads_and_scales_with_the_weights(reproduce, mnist_dir,
                                                                        tmp_path, capsys):
    args = ("--dataset", "mnist-rot-aux", "--limit", 100, "--device", "cpu")
    assert run(reproduce, "--models", "z2cnn_rotmnist", "--data-dir", mnist_dir, *args) == 0
    plan_line = capsys.readouterr().out.splitlines()[1]
    per_weight = reproduce.COSTS["mnist-rot-aux"].seconds_per_weight
    assert reproduce.expected_time("mnist-rot-sample", 1) == "about 1 s on 2 CPU cores"
    assert plan_line.split() == ["mnist-rot-aux", "1", "weight(s);", "on", "disk,", "nothing",
                                 "to", "download;", "about", f"{per_weight:.0f}", "s", "on", "2",
                                 "CPU", "cores"]

    # no files: the plan names the download, and its time grows with the weights asked for
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(reproduce, "--models", "z2cnn_rotmnist,p4cnn_rotmnist", "--data-dir", empty,
               *args) == 2
    out = capsys.readouterr().out
    assert (f"mnist-rot-aux    2 weight(s); download MNIST t10k-{{images,labels}} IDX (1.6 MB); "
            f"about {2 * per_weight:.0f} s") in out
    assert "MISSING" in out

    # a file on disk that fails its check is reported after the plan, as an error of the run
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (bad / name).write_bytes((mnist_dir / name).read_bytes()[:-100])  # truncated
    js = tmp_path / "bad.json"
    assert run(reproduce, "--models", "z2cnn_rotmnist", "--data-dir", bad, *args,
               "--json", js) == 1
    captured = capsys.readouterr()
    assert "on disk, nothing to download" in captured.out.splitlines()[1]
    assert results(js)["z2cnn_rotmnist"]["verdict"] == "ERROR"
    assert "t10k-" in captured.err


def synthetic_rotmnist(folder: Path, mnist_dir: Path, n_test: int = 400) -> Path:
    """A small mnist_rotation_new look-alike from real MNIST test digits: rotated, and stored in
    the .amat layout (a row-major flattening of the rot-MNIST-oriented, i.e. transposed, digit)."""
    images = torch.from_numpy(data.read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")[:n_test + 300].copy())
    labels = data.read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz")[:n_test + 300]
    angles = torch.rand(len(images), generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 360
    rotated = data.rotate_digits(images.float().div(255).unsqueeze(1), angles)[:, 0]
    stored = rotated.transpose(-2, -1).clamp(0, 1).reshape(len(images), 784).numpy()

    def text(rows, labs):
        return "".join(" ".join(f"{v:.7g}" for v in row) + f" {float(lab)}\n"
                       for row, lab in zip(rows, labs))

    folder.mkdir(parents=True)
    path = folder / "mnist_rotation_new.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(data.ROTMNIST_FILES["train"], text(stored[n_test:], labels[n_test:]))
        zf.writestr(data.ROTMNIST_FILES["test"], text(stored[:n_test], labels[:n_test]))
    return path


@pytest.mark.filterwarnings("ignore:.*rows, the published file has")
def test_the_authors_npz_layout_scores_as_the_amat_layout(reproduce, mnist_dir, tmp_path):
    """The same stored digits (transposed, as mnist_rotation_new keeps them) as .amat rows and as
    the authors' npz conversion: the published weights score the same on both."""
    amat_dir, npz_dir = tmp_path / "amat", tmp_path / "npz"
    zip_path = synthetic_rotmnist(amat_dir / "mnist_rotation_new", mnist_dir, n_test=300)
    (npz_dir / "mnist_rotation_new").mkdir(parents=True)
    with zipfile.ZipFile(zip_path) as zf:
        for split, member in data.ROTMNIST_FILES.items():
            rows = np.loadtxt(zf.read(member).decode().splitlines(), ndmin=2)
            np.savez(npz_dir / "mnist_rotation_new" / data.ROTMNIST_NPZ[split],
                     data=rows[:, :784].reshape(-1, 1, 28, 28).astype(np.float32),
                     labels=rows[:, 784].astype(np.float32))
    scores = {}
    for folder in (amat_dir, npz_dir):
        js = tmp_path / f"{folder.name}.json"
        assert run(reproduce, "--models", "p4cnn_rotmnist", "--data-dir", folder, "--device",
                   "cpu", "--json", js) == 0
        scores[folder.name] = results(js)["p4cnn_rotmnist"]["measured"]
    assert scores["amat"] == scores["npz"] and scores["amat"] >= 95.0


@pytest.mark.filterwarnings("ignore:.*rows, the published file has")
def test_canonical_set_verdicts_and_manifest_update(reproduce, mnist_dir, tmp_path):
    data_dir = tmp_path / "data"
    synthetic_rotmnist(data_dir / "mnist_rotation_new", mnist_dir)
    js = tmp_path / "r.json"
    args = ("--models", "p4cnn_rotmnist", "--data-dir", data_dir, "--device", "cpu", "--json", js)

    # the real manifest expects the 50,000-image set: a 400-image copy gets no verdict
    assert run(reproduce, *args) == 0
    r = results(js)["p4cnn_rotmnist"]
    assert r["dataset"] == "rotmnist" and r["images"] == 400 and r["verdict"] == "INFO"
    assert "400 images" in r["message"] and r["measured"] >= 95.0
    measured = r["measured"]

    def log(top1):
        def edit(weights):
            weights["p4cnn_rotmnist"]["accuracy"]["checkpoint"].update(top1=top1, images=400)
        return edit

    # against an authors' log counting these very images: PASS within the tolerance, else FAIL
    good = manifest_copy(tmp_path, log(measured + 0.05))
    assert run(reproduce, *args, "--manifest", good) == 0
    r = results(js)["p4cnn_rotmnist"]
    assert (r["verdict"], r["expected_from"], r["complete"]) == ("PASS", "log", True)
    assert run(reproduce, *args, "--manifest", manifest_copy(tmp_path, log(measured + 1.0))) == 1
    assert results(js)["p4cnn_rotmnist"]["verdict"] == "FAIL"
    # --limit makes it informational
    good = manifest_copy(tmp_path, log(measured + 1.0))
    assert run(reproduce, *args, "--manifest", good, "--limit", 100) == 0
    assert results(js)["p4cnn_rotmnist"]["verdict"] == "INFO"

    # --update-manifest records the measurement, replacing the entry of the same set and device
    # (which, recorded for these 400 images, is also this run's expectation: PASS)
    def seeded(weights):
        weights["p4cnn_rotmnist"]["accuracy"]["measured"] = [
            {"dataset": "rotmnist", "top1": measured - 0.05, "images": 400, "device": r["device"],
             "date": "2020-01-01", "torch": "x"},
            {"dataset": "rotmnist", "top1": 2.0, "images": 50000, "device": "cuda (some GPU)",
             "date": "2020-01-01", "torch": "x"}]
    path = manifest_copy(tmp_path, seeded)
    for _ in range(2):
        assert run(reproduce, *args, "--manifest", path, "--update-manifest") == 0
        assert results(js)["p4cnn_rotmnist"]["verdict"] == "PASS"
    entries = load_manifest(path)["weights"]["p4cnn_rotmnist"]["accuracy"]["measured"]
    assert len(entries) == 2
    mine = next(e for e in entries if e["device"] == r["device"])
    assert mine["top1"] == pytest.approx(measured) and mine["images"] == 400
    assert mine["torch"] == torch.__version__ and mine["date"] != "2020-01-01"
    assert any(e["device"] == "cuda (some GPU)" and e["top1"] == 2.0 for e in entries)
    # the rest of the manifest is untouched
    before, after = load_manifest(), load_manifest(path)
    for w in (before, after):
        w["weights"]["p4cnn_rotmnist"]["accuracy"]["measured"] = []
    assert before["weights"] == after["weights"]


def test_missing_data_offline_exits_2_naming_files_and_url(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--models", "z2cnn_rotmnist", "--data-dir",
         str(tmp_path), "--no-download", "--quiet"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)})  # this checkout's package, not an install
    assert proc.returncode == 2, proc.stderr
    for needed in ("mnist_rotation_new.zip", data.ROTMNIST_FILES["train"],
                   data.ROTMNIST_FILES["test"], str(tmp_path / "mnist_rotation_new"),
                   "http://www.iro.umontreal.ca/~lisa/icml2007data/mnist_rotation_new.zip"):
        assert needed in proc.stderr
    assert "MISSING" in proc.stdout


def offline_env(tmp_path: Path) -> dict:
    """A fresh machine with no network and no data: empty cache root, no mirror."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("AGCNN_ZOO_MIRROR", data.DATA_ENV, "AGCNN_ZOO_MANIFEST")}
    return {**env, "AGCNN_ZOO_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
            "AGCNN_ZOO_CACHE": str(tmp_path / "fresh_cache"), "PYTHONPATH": str(REPO)}


def test_zero_config_offline_run_smoke_checks_the_shipped_weights_and_exits_0(tmp_path):
    # the fast shipped weights (every one is covered by test_smoke_plan_is_every_shipped_...)
    models = "p4cnn_rotmnist*,z2cnn_rotmnist*,p4m_densenet_pcam"
    js = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--models", models, "--quiet",
                           "--json", str(js)], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path, env=offline_env(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    # what the full run takes comes first, before anything is evaluated
    assert out.index("rotmnist ") < out.index("SMOKE CHECK") and "pcam " in out.split("SMOKE")[0]
    assert "MB" in out.split("SMOKE")[0] and "min on 2 CPU cores" in out.split("SMOKE")[0]
    res = json.loads(js.read_text())["results"]
    smoke = {r["model"]: r for r in res if r["dataset"] == "mnist-rot-sample"}
    shipped_p4_z2 = sorted(k for k, r in load_manifest()["weights"].items()
                           if k.split(".")[0] in ("p4cnn_rotmnist", "z2cnn_rotmnist")
                           and any(h["type"] == "package" for h in r["hosts"]))
    assert {"p4cnn_rotmnist", "p4cnn_rotmnist.zoo_rotgen_s0", "z2cnn_rotmnist"} <= set(shipped_p4_z2)
    assert sorted(smoke) == shipped_p4_z2
    for r in smoke.values():
        assert r["verdict"] == "OK" and r["images"] == data.SAMPLE_SIZE and r["measured"] >= 94
    full = [r for r in res if r["dataset"] != "mnist-rot-sample"]
    assert {r["dataset"] for r in full} == {"rotmnist", "pcam"}
    assert all(r["verdict"] == "NOT DOWNLOADED" for r in full)
    assert "Verdicts: PASS/FAIL" in out and "(rec)" in out and "* not confirmed" in out
    last = out.strip().splitlines()
    assert last[-2].startswith(f"summary: full test sets: {len(full)} NOT DOWNLOADED; smoke check "
                               f"on the embedded sample: {len(smoke)} of {len(smoke)} weights OK")
    assert last[-1].startswith("offline: AGCNN_ZOO_OFFLINE=1 AGCNN_ZOO_MIRROR=MIRROR python "
                               "eval/reproduce.py --dataset mnist-rot-aux --data-dir MNIST_DIR")
    assert "mnist_rotation_new.zip" in out and "h5.gz" in out  # what the full run downloads
    assert not (tmp_path / "fresh_cache").exists() or not any((tmp_path / "fresh_cache").rglob("*.*"))


def test_an_explicit_data_dir_without_data_is_still_missing(reproduce, tmp_path):
    # naming a folder is asking for that data: its absence is exit 2, with no smoke check
    assert run(reproduce, "--models", "z2cnn_rotmnist", "--data-dir", tmp_path, "--no-download",
               "--json", tmp_path / "r.json") == 2
    assert [r["dataset"] for r in json.loads((tmp_path / "r.json").read_text())["results"]] == ["rotmnist"]


def test_smoke_plan_is_every_shipped_rotmnist_weight(reproduce):
    weights = load_manifest()["weights"]
    pairs = reproduce.smoke_plan(weights, reproduce.plan(weights, "*", None))
    shipped = sorted(k for k, r in weights.items()
                     if r["dataset"] == "rotmnist" and r["hosts"][0]["type"] == "package")
    assert [n for n, _ in pairs] == shipped
    assert {"z2cnn_rotmnist", "p4cnn_rotmnist", "a_p4cnn_rotmnist", "af_p4cnn_rotmnist"} <= set(shipped)
    assert {s for _, s in pairs} == {"mnist-rot-sample"}


def test_the_cli_subcommand_is_the_same_job(tmp_path, capsys):
    from agcnn_zoo.__main__ import main
    js = tmp_path / "r.json"
    code = main(["reproduce", "--models", "z2cnn_rotmnist", "--dataset", "mnist-rot-sample",
                 "--quiet", "--json", str(js)])
    assert code == 0
    r = json.loads(js.read_text())
    assert r["command"].startswith("python -m agcnn_zoo reproduce --models z2cnn_rotmnist")
    assert r["results"][0]["verdict"] == "OK"
    with pytest.raises(SystemExit):
        main(["reproduce", "--limit", "0"])
    assert "--limit must be >= 1" in capsys.readouterr().err


# ----------------------------------------------------------------------------- pieces

def test_plan_picks_canonical_or_matching_sets(reproduce):
    weights = {"p4cnn_rotmnist": {"dataset": "rotmnist"}, "x_cifar": {"dataset": "cifar10"},
               "y_pcam": {"dataset": "pcam"}}
    assert reproduce.plan(weights, "*", None) == [
        ("p4cnn_rotmnist", "rotmnist"), ("x_cifar", "cifar10"), ("y_pcam", "pcam")]
    assert reproduce.plan(weights, "*", "mnist-rot-aux") == [("p4cnn_rotmnist", "mnist-rot-aux")]
    assert reproduce.plan(weights, "*", "cifar10-jpeg") == [("x_cifar", "cifar10-jpeg")]
    assert reproduce.plan(weights, "y_*, p4*", None) == [
        ("p4cnn_rotmnist", "rotmnist"), ("y_pcam", "pcam")]
    assert reproduce.plan(weights, "nothing", None) == []


def test_expectation_rules(reproduce):
    record = {"accuracy": {"checkpoint": {"top1": 98.0, "images": 50000}, "measured": [
        {"dataset": "mnist-rot-aux", "top1": 97.0, "images": 10000, "device": "cpu (x86_64)", "date": "2024-01-01"},
        {"dataset": "mnist-rot-aux", "top1": 97.2, "images": 10000, "device": "cuda (A)", "date": "2025-01-01"}]}}
    assert reproduce.expectation(record, "rotmnist", True, 50000, "cpu (x86_64)") == (98.0, "log")
    assert reproduce.expectation(record, "rotmnist", False, 2000, "cpu (x86_64)") == (None, None)
    # the same device is preferred over a later date
    assert reproduce.expectation(record, "mnist-rot-aux", False, 10000, "cpu (x86_64)") == (97.0, "recorded")
    assert reproduce.expectation(record, "mnist-rot-aux", False, 10000, "cuda (B)") == (97.2, "recorded")
    assert reproduce.expectation(record, "mnist-rot-aux", False, 5000, "cpu (x86_64)") == (None, None)


def test_arguments_and_preprocessing_guard(reproduce, tmp_path):
    with pytest.raises(SystemExit) as e:
        reproduce.parse_args(["--update-manifest", "--limit", "10"])
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        reproduce.parse_args(["--dataset", "mnist"])
    assert run(reproduce, "--models", "no_such_model") == 2

    class FakeSet:
        name, mean, std = "cifar10", data.IMAGENET_MEAN, data.IMAGENET_STD
    reproduce.check_preprocessing({"preprocessing": {"mean": list(data.IMAGENET_MEAN)}}, FakeSet)
    with pytest.raises(ValueError, match="differs"):
        reproduce.check_preprocessing({"preprocessing": {"mean": [0.5, 0.5, 0.5]}}, FakeSet)


class AlwaysOne(torch.nn.Module):
    """Predicts class 1 for every image of the expected size."""

    def __init__(self, size):
        super().__init__()
        self.size = tuple(size)

    def forward(self, x):
        assert tuple(x.shape[1:]) == self.size and x.dtype == torch.float32
        return torch.tensor([0.0, 1.0]).repeat(len(x), 1)


def test_pcam_and_cifar_paths_with_a_stand_in_model(reproduce, tmp_path):
    from test_data import make_cifar, make_pcam

    make_pcam(tmp_path / "pcam", n=5)          # labels 0 1 0 1 0: "always 1" scores 40%
    make_cifar(tmp_path)                       # not the canonical test_batch
    record = {"accuracy": {"paper": {"top1": None, "source": "-", "confirmed": False},
                           "checkpoint": {"top1": 40.0, "images": 5, "source": "-"},
                           "measured": []}, "tolerance": 0.1}
    manifest = {"schema": 1, "weights": {
        "fake_pcam": {**record, "dataset": "pcam",
                      "preprocessing": {"mean": list(data.PCAM_MEAN), "std": list(data.PCAM_STD)}},
        "fake_cifar": {**record, "dataset": "cifar10",
                       "preprocessing": {"mean": list(data.IMAGENET_MEAN)}}}}
    mpath = tmp_path / "manifest.json"
    mpath.write_text(json.dumps(manifest))
    js = tmp_path / "r.json"
    factory = {"fake_pcam": lambda: AlwaysOne((3, 96, 96)), "fake_cifar": lambda: AlwaysOne((3, 32, 32))}
    argv = ["--quiet", "--manifest", str(mpath), "--data-dir", str(tmp_path), "--json", str(js),
            "--batch-size", 2]
    assert reproduce.main([*map(str, argv), "--models", "fake_pcam"],
                          model_factory=lambda name: factory[name]()) == 0
    r = results(js)["fake_pcam"]
    assert (r["dataset"], r["images"], r["measured"], r["verdict"]) == ("pcam", 5, 40.0, "PASS")
    # the synthetic CIFAR batch fails its canonical checksum: an ERROR, exit 1
    assert reproduce.main([*map(str, argv)], model_factory=lambda name: factory[name]()) == 1
    r = results(js)["fake_cifar"]
    assert r["verdict"] == "ERROR" and "ChecksumError" in r["message"]
    assert results(js)["fake_pcam"]["verdict"] == "PASS"


def test_the_command_summary_is_the_package_docstring_first_line():
    import agcnn_zoo.reproduce as r
    assert r.__doc__.split("\n\n")[0] == r.runner.SUMMARY
