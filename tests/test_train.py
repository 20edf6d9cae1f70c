"""The training engine on real digits (a few hundred MNIST training digits, rotated): recipes,
splits, determinism, exact resume after SIGKILL, torchrun, the CLI's errors."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from agcnn_zoo.train import ResumeError, recipe_for, train
from agcnn_zoo.train.checkpoint import CHECKPOINT, load_checkpoint
from agcnn_zoo.train.splits import load_training_data

from conftest import DATA, REPO, shared

SMALL = dict(dataset="mnist-rot-gen", limit_train=256, limit_val=128, limit_test=128, threads=1,
             progress=False)


def _weights(result) -> bytes:
    return Path(result.weight).read_bytes()


def _cli(*args, timeout=300, **popen):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "agcnn_zoo", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=REPO, **popen)


# ----------------------------------------------------------------------------- recipes

def test_rotmnist_recipe_is_the_authors():
    r = recipe_for("ach_p4cnn_rotmnist")
    assert (r.optimizer, r.lr, r.weight_decay, r.batch_size, r.epochs, r.schedule, r.augment) == \
        ("adam", 1e-3, 1e-4, 128, 100, "constant", ())
    assert recipe_for("z2cnn_rotmnist").epochs == 300


def test_cifar_and_pcam_recipes_are_the_authors():
    a = recipe_for("af_p4m_allcnnc_cifar")
    assert (a.optimizer, a.momentum, a.lr, a.weight_decay, a.epochs, a.milestones, a.gamma) == \
        ("sgd", 0.9, 0.05, 1e-3, 350, (200, 250, 300), 0.1)
    assert a.augment == ("hflip", "crop32_pad4")
    r = recipe_for("a_p4m_resnet44_cifar")
    assert (r.lr, r.weight_decay, r.epochs, r.milestones) == (0.05, 0.0, 300, (50, 100, 150))
    p = recipe_for("p4m_densenet_pcam")
    assert (p.optimizer, p.batch_size, p.schedule, p.plateau_factor, p.plateau_patience) == \
        ("adam", 64, "plateau", 0.5, 20)


def test_every_registered_name_has_a_recipe():
    import agcnn_zoo as zoo
    for name in zoo.list_models():
        assert recipe_for(name).dataset in ("rotmnist", "cifar10", "pcam")


def test_overrides_are_checked():
    r = recipe_for("p4cnn_rotmnist")
    assert r.overridden(epochs=3, lr=2e-3).epochs == 3
    assert r.overridden(lr=1).lr == 1.0  # an int where a float belongs is fine
    with pytest.raises(TypeError, match="'epochs' takes a int"):
        r.overridden(epochs="3")
    with pytest.raises(TypeError, match="unknown recipe field 'epoch'"):
        r.overridden(epoch=3)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        r.overridden(batch_size=0)


def test_info_shows_the_recipe():
    import agcnn_zoo as zoo
    info = zoo.model_info("asp_p4cnn_rotmnist")
    assert info["training_recipe"]["optimizer"] == "adam"
    assert info["training_recipe"]["epochs"] == 100


# ----------------------------------------------------------------------------- data

def test_mnist_rot_gen_splits_are_disjoint_and_from_training_digits():
    d = load_training_data("mnist-rot-gen", "rotmnist", shared(DATA), progress=False)
    assert (len(d.train), len(d.val)) == (10000, 2000)
    train_ids, val_ids = set(d.train.ids), set(d.val.ids)
    assert len(train_ids) == 10000 and len(val_ids) == 2000 and not train_ids & val_ids
    assert all(i.startswith("mnist-train:") for i in train_ids | val_ids)
    test = d.load_test()
    assert len(test) == 10000 and all(i.startswith("mnist-test:") for i in test.ids)
    # normalised with the recorded training statistics: the training images have mean 0, std 1
    x, _ = d.train.batch(torch.arange(10000))
    v, _ = d.val.batch(torch.arange(2000))
    both = torch.cat([x, v]).double()
    assert abs(float(both.mean())) < 1e-5 and abs(float(both.std(unbiased=False)) - 1) < 1e-5
    assert 0.1 < d.info["normalize"]["mean"] < 0.2
    # every digit is one of the MNIST training images' labels, classes balanced-ish
    counts = torch.bincount(d.train.labels, minlength=10)
    assert counts.min() > 800


def test_a_model_for_other_data_is_refused():
    with pytest.raises(ValueError, match="use one of cifar10"):
        load_training_data("mnist-rot-gen", "cifar10", shared(DATA))


# ----------------------------------------------------------------------------- engine

def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    a = train("p4cnn_rotmnist", out=tmp_path / "a", epochs=1, seed=3, data_dir=shared(DATA), **SMALL)
    b = train("p4cnn_rotmnist", out=tmp_path / "b", epochs=1, seed=3, data_dir=shared(DATA), **SMALL)
    c = train("p4cnn_rotmnist", out=tmp_path / "c", epochs=1, seed=4, data_dir=shared(DATA), **SMALL)
    assert _weights(a) == _weights(b)
    assert _weights(a) != _weights(c)
    rec = a.record
    assert rec["origin"]["kind"] == "trained" and rec["training"]["seed"] == 3
    assert rec["training"]["recipe"]["epochs"] == 1 and rec["training"]["shortened"]
    assert rec["training"]["limits"] == {"train": 256, "val": 128, "test": 128}
    assert rec["training"]["test"]["dataset"] == "mnist-rot-aux"
    assert rec["training"]["test"]["images"] == 128 and rec["accuracy"]["measured"] == []
    assert rec["accuracy"]["checkpoint"]["top1"] is None
    lines = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == [1]


def test_one_epoch_then_resume_to_two_equals_two_epochs(tmp_path):
    two = train("p4cnn_rotmnist", out=tmp_path / "two", epochs=2, data_dir=shared(DATA), **SMALL)
    train("p4cnn_rotmnist", out=tmp_path / "r", epochs=1, data_dir=shared(DATA), **SMALL)
    resumed = train("p4cnn_rotmnist", out=tmp_path / "r", epochs=2, resume=True, data_dir=shared(DATA), **SMALL)
    assert _weights(resumed) == _weights(two)
    assert resumed.record["training"]["epochs_run"] == 2
    with pytest.raises(ResumeError, match="has 2 epochs already"):
        train("p4cnn_rotmnist", out=tmp_path / "r", epochs=1, resume=True, data_dir=shared(DATA), **SMALL)
    last = load_checkpoint(tmp_path / "r" / CHECKPOINT)
    ref = load_checkpoint(tmp_path / "two" / CHECKPOINT)
    for k, v in ref["model"].items():
        assert torch.equal(v, last["model"][k]), k
    assert last["metrics"][1]["val_top1"] == ref["metrics"][1]["val_top1"]
    try:
        import matplotlib  # noqa: F401  (optional extra: the curves are drawn only with it)
    except ImportError:
        return
    assert (tmp_path / "r" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_existing_run_is_never_overwritten_and_resume_checks_the_settings(tmp_path):
    train("p4cnn_rotmnist", out=tmp_path / "r", epochs=1, data_dir=shared(DATA), **SMALL)
    with pytest.raises(ResumeError, match="pass --resume"):
        train("p4cnn_rotmnist", out=tmp_path / "r", epochs=1, data_dir=shared(DATA), **SMALL)
    with pytest.raises(ResumeError, match="settings"):
        train("p4cnn_rotmnist", out=tmp_path / "r", epochs=2, resume=True, data_dir=shared(DATA),
              **{**SMALL, "limit_train": 128})
    with pytest.raises(ResumeError, match="recipe"):
        train("p4cnn_rotmnist", out=tmp_path / "r", epochs=2, resume=True, lr=0.01, data_dir=shared(DATA), **SMALL)


def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path):
    args = ["train", "p4cnn_rotmnist", "--dataset", "mnist-rot-gen", "--data-dir", str(shared(DATA)),
            "--epochs", "3", "--limit-train", "2048", "--limit-val", "128", "--limit-test", "128",
            "--threads", "1", "--no-progress"]
    full = _cli(*args, "--out", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr
    out = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "agcnn_zoo", *args, "--out", str(out)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (out / CHECKPOINT).exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.3)  # well inside epoch 2 (an epoch of 2,048 digits takes seconds)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    state = load_checkpoint(out / CHECKPOINT)
    assert state["epoch"] == 1, "the kill was meant to land in epoch 2"
    assert not (out / "p4cnn_rotmnist.safetensors").exists()
    assert not [p for p in out.iterdir() if p.name.endswith(".part")]
    resumed = _cli(*args, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert (out / "p4cnn_rotmnist.safetensors").read_bytes() == \
        (tmp_path / "full" / "p4cnn_rotmnist.safetensors").read_bytes()
    assert (out / "metrics.jsonl").read_text().count("\n") == 3


def test_torchrun_two_processes_agree(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed beside this python")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = tmp_path / "ddp"
    p = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "agcnn_zoo",
                        "train", "p4cnn_rotmnist", "--dataset", "mnist-rot-gen", "--data-dir",
                        str(shared(DATA)), "--out", str(out), "--epochs", "1", "--limit-train", "256",
                        "--limit-val", "128", "--limit-test", "128", "--threads", "1",
                        "--no-progress"], capture_output=True, text=True, timeout=300, env=env,
                       cwd=REPO)
    assert p.returncode == 0, p.stderr[-3000:]
    rec = json.loads((out / "record.json").read_text())
    hashes = rec["training"]["rank_state_sha256"]
    assert rec["training"]["world_size"] == 2 and len(hashes) == 2 and hashes[0] == hashes[1]


# ----------------------------------------------------------------------------- CLI errors

def test_cli_unknown_name_exits_2_with_a_suggestion(tmp_path):
    p = _cli("train", "p4cnn_rotmnst", "--out", str(tmp_path / "x"))
    assert p.returncode == 2 and "did you mean p4cnn_rotmnist" in p.stderr


def test_cli_override_of_the_wrong_type_exits_2(tmp_path):
    p = _cli("train", "p4cnn_rotmnist", "--epochs", "two", "--out", str(tmp_path / "x"))
    assert p.returncode == 2 and "invalid int value: 'two'" in p.stderr


def test_cli_missing_data_exits_2_naming_files_and_url(tmp_path):
    p = _cli("train", "p4cnn_rotmnist", "--dataset", "mnist-rot-gen", "--data-dir",
             str(tmp_path / "empty"), "--out", str(tmp_path / "x"))
    assert p.returncode == 2
    assert "train-images-idx3-ubyte.gz" in p.stderr and "https://" in p.stderr
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())
    p = _cli("train", "p4cnn_rotmnist", "--data-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "y"))
    assert p.returncode == 2 and "mnist_rotation_new.zip" in p.stderr


def test_readme_results_table_is_the_generated_one():
    from agcnn_zoo.results import BEGIN, END, results_table
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text.split(BEGIN, 1)[1].split(END, 1)[0]
    assert block == "\n" + results_table("rotmnist", "mnist-rot-aux"), \
        "README's results table is stale: python -m agcnn_zoo results --write-readme README.md"
    from agcnn_zoo.results import SEED_BEGIN, SEED_END, seed_table
    block = text.split(SEED_BEGIN, 1)[1].split(SEED_END, 1)[0]
    assert block == "\n" + seed_table("mnist-rot-aux"), \
        "README's seed table is stale: python -m agcnn_zoo results --write-readme README.md"


def test_seed_table_means_spreads_and_verdicts():
    """Synthetic seed records: mean and sample std per name, n of 3 where seeds are missing, and
    the verdict of each attentive variant against p4cnn."""
    import statistics
    from agcnn_zoo.results import seed_table

    def rec(top1):
        return {"accuracy": {"paper": {"top1": None}, "measured": [
            {"dataset": "mnist-rot-aux", "top1": top1, "images": 10000}]}}
    weights = {"p4cnn_rotmnist": rec(98.0)}
    for s, v in enumerate([97.6, 97.8, 97.7]):
        weights[f"p4cnn_rotmnist.rotgen12k_s{s}"] = rec(v)
    for s, v in enumerate([98.3, 98.4, 98.2]):       # clearly above p4cnn
        weights[f"a_p4cnn_rotmnist.rotgen12k_s{s}"] = rec(v)
    for s, v in enumerate([97.8, 97.6, 97.9]):       # within the spread
        weights[f"af_p4cnn_rotmnist.rotgen12k_s{s}"] = rec(v)
    for s, v in enumerate([97.69, 97.70, 97.70]):    # 0.003 below p4cnn: rounds to zero
        weights[f"asp_p4cnn_rotmnist.rotgen12k_s{s}"] = rec(v)
    weights["ach_p4cnn_rotmnist.rotgen12k_s0"] = rec(99.0)   # one seed only
    weights["ach_p4cnn_rotmnist.zoo_rotgen_s1"] = rec(10.0)  # another protocol: not counted
    table = seed_table(manifest={"weights": weights})
    first = table.split("Each attentive variant", 1)[0]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in first.splitlines() if line.startswith("| `")}
    std = statistics.stdev([97.6, 97.8, 97.7])
    assert rows["`p4cnn_rotmnist`"][:3] == ["3 of 3", f"97.70 ± {std:.2f}", "97.60, 97.80, 97.70"]
    assert rows["`p4cnn_rotmnist`"][3] == "98.00"
    assert rows["`ach_p4cnn_rotmnist`"][:2] == ["1 of 3", "99.00"]
    paired = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
              for line in table.split("verdict |", 1)[1].splitlines() if line.startswith("| `")}
    verdicts = {name: cells[2] for name, cells in paired.items()}
    assert verdicts["`a_p4cnn_rotmnist`"] == "exceeds the seed spread"
    assert verdicts["`af_p4cnn_rotmnist`"] == "within the seed spread"
    assert verdicts["`ach_p4cnn_rotmnist`"] == (
        "incomplete (1 of 3 seeds; `p4cnn_rotmnist` 3 of 3): no verdict")
    assert "not measured yet" in verdicts["`coa_p4cnn_rotmnist`"]
    assert paired["`asp_p4cnn_rotmnist`"][0] == "+0.00"  # not "-0.00"


# ----------------------------------------------------------------------------- into the zoo

def test_a_trained_weight_ships_and_loads_through_the_verified_path(tmp_path, monkeypatch):
    import shutil

    import agcnn_zoo as zoo
    from agcnn_zoo.hub.hosts import package
    from agcnn_zoo.io import IntegrityError
    from agcnn_zoo.train import install
    manifest = tmp_path / "weights_manifest.json"
    shutil.copyfile(REPO / "weights_manifest.json", manifest)
    monkeypatch.setenv("AGCNN_ZOO_MANIFEST", str(manifest))
    monkeypatch.setenv("AGCNN_ZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(package, "WEIGHTS_DIR", tmp_path / "embedded")
    # a limited run is a smoke test, never a zoo weight
    small = train("coa_p4cnn_rotmnist", out=tmp_path / "small", epochs=1, tag="t", data_dir=shared(DATA), **SMALL)
    with pytest.raises(ValueError, match="smoke test"):
        install(small.out / "record.json", manifest, package=True)
    # one whole epoch on the whole split (the weight's record is what --update-manifest adds)
    run = train("coa_p4cnn_rotmnist", out=tmp_path / "run", epochs=1, tag="t", data_dir=shared(DATA),
                dataset="mnist-rot-gen", threads=2, progress=False)
    assert install(run.out / "record.json", manifest, default=True, package=True) == "coa_p4cnn_rotmnist.t"
    assert (tmp_path / "embedded" / "coa_p4cnn_rotmnist.t.safetensors").stat().st_mode & 0o777 == 0o644
    assert "coa_p4cnn_rotmnist" in zoo.list_models(pretrained=True)
    assert zoo.model_info("coa_p4cnn_rotmnist")["weight_id"] == "coa_p4cnn_rotmnist.t"
    # the same id installed again (a resumed, longer run) stays the name's default
    install(run.out / "record.json", manifest, package=True)
    assert zoo.model_info("coa_p4cnn_rotmnist")["weight_id"] == "coa_p4cnn_rotmnist.t"
    model = zoo.create_model("coa_p4cnn_rotmnist", pretrained=True)  # the default: ours
    for k, v in load_checkpoint(run.out / CHECKPOINT)["best"]["state"].items():
        assert torch.equal(model.state_dict()[k], v), k
    # tampered: refused, never loaded
    f = tmp_path / "embedded" / "coa_p4cnn_rotmnist.t.safetensors"
    data = bytearray(f.read_bytes())
    data[-5] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(Exception) as err:
        zoo.create_model("coa_p4cnn_rotmnist.t", pretrained=True)
    assert isinstance(err.value, IntegrityError) or isinstance(err.value.__cause__, IntegrityError), err.value
    # the authors' weight of a name is never replaced by an untagged run of ours
    with pytest.raises(ValueError, match="train with --tag"):
        rec = json.loads((run.out / "record.json").read_text())
        rec["file"] = "p4cnn_rotmnist.safetensors"
        (run.out / "p4cnn_rotmnist.safetensors").write_bytes(run.weight.read_bytes())
        (run.out / "other.json").write_text(json.dumps(rec))
        install(run.out / "other.json", manifest, package=True)
