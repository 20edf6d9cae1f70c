"""Training runs that are safe to resume, share and kill: crafted and broken checkpoints, the
user's own files, two processes on one folder, kills at chosen writes (a real SIGKILL of a child
process), broken data files, strict JSON, and --update-manifest that is checked before training
and leaves the old or the new state."""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from agcnn_zoo.train.checkpoint import CHECKPOINT, LEGACY_CHECKPOINT, load_checkpoint, save_checkpoint

from conftest import DATA, REPO, shared

FAST = ["--dataset", "mnist-rot-gen", "--limit-train", "256", "--limit-val", "128",
        "--limit-test", "128", "--threads", "1", "--no-progress"]


def _env(tmp_path: Path) -> dict:
    # this checkout's package, an isolated cache (and so an isolated user manifest)
    return dict(os.environ, PYTHONPATH=str(REPO), AGCNN_ZOO_CACHE=str(tmp_path / "cache"))


def cli(tmp_path: Path, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", "agcnn_zoo", *args], capture_output=True,
                          text=True, timeout=timeout, env=_env(tmp_path), cwd=REPO)


def train_cli(tmp_path, out, *extra, epochs=1):
    return cli(tmp_path, "train", "p4cnn_rotmnist", *FAST, "--data-dir", str(shared(DATA)),
               "--epochs", str(epochs), "--out", str(out), *extra)


def assert_one_line_error(proc, *words):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    err = proc.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("error: ")
    for w in words:
        assert w in err, (w, err)


# ----------------------------------------------------------------------------- crafted files

class _RunsCode:
    """A pickle payload of the kind an attacker puts into a shared run folder."""

    def __init__(self, marker: Path, how: str):
        self.marker, self.how = marker, how

    def __reduce__(self):
        if self.how == "system":
            return (os.system, (f"touch {self.marker}",))
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


@pytest.mark.parametrize("name,how", [(LEGACY_CHECKPOINT, "system"), (LEGACY_CHECKPOINT, "exec"),
                                      (CHECKPOINT, "system"), (CHECKPOINT, "exec")])
def test_a_crafted_pickle_checkpoint_runs_nothing_on_resume(tmp_path, name, how):
    out, marker = tmp_path / "shared_run", tmp_path / "pwned"
    out.mkdir()
    payload = {"ident": _RunsCode(marker, how), "epoch": 1}
    (out / name).write_bytes(pickle.dumps(payload))
    torch.save(payload, out / "other.pt")  # torch's own pickle container too
    if name == CHECKPOINT:
        (out / name).write_bytes((out / "other.pt").read_bytes())
    p = train_cli(tmp_path, out, "--resume")
    assert_one_line_error(p, str(out / name))
    assert not marker.exists()
    assert sorted(f.name for f in out.iterdir()) == sorted([name, "other.pt"])  # nothing written


@pytest.mark.parametrize("content,words", [
    (b"", ["not a readable checkpoint"]),
    (os.urandom(4096), ["not a readable checkpoint"]),
    (b"\xff" * 8 + b"{}" + b"\0" * 8, ["not a readable checkpoint"]),
])
def test_a_broken_checkpoint_is_one_line_naming_the_file(tmp_path, content, words):
    out = tmp_path / "run"
    out.mkdir()
    (out / CHECKPOINT).write_bytes(content)
    p = train_cli(tmp_path, out, "--resume")
    assert_one_line_error(p, str(out / CHECKPOINT), *words)


def test_checkpoints_of_other_programs_or_without_the_runs_keys_are_refused(tmp_path):
    from safetensors.torch import save_file
    out = tmp_path / "run"
    out.mkdir()
    save_file({"w": torch.zeros(3)}, str(out / CHECKPOINT))  # a safetensors file, not ours
    assert_one_line_error(train_cli(tmp_path, out, "--resume"), "not an agcnn-zoo run checkpoint")
    save_checkpoint(out / CHECKPOINT, {"model": {"w": torch.zeros(3)}, "epoch": 1})  # ours, keys missing
    assert_one_line_error(train_cli(tmp_path, out, "--resume"), "lacks ident", str(out / CHECKPOINT))


def test_one_flipped_byte_of_the_stored_best_weight_is_refused(tmp_path):
    out = tmp_path / "run"
    assert train_cli(tmp_path, out, epochs=1).returncode == 0
    path = out / CHECKPOINT
    weight = (out / "p4cnn_rotmnist.safetensors").read_bytes()
    state = load_checkpoint(path)
    target = state["best"]["state"]["c1.weight"]
    data = bytearray(path.read_bytes())
    # the raw float32 bytes of the best c1 weight, found in the file and altered by one bit
    raw = target.contiguous().numpy().tobytes()
    at = data.find(raw)
    assert at > 0
    data[at + 5] ^= 0x10
    path.write_bytes(bytes(data))
    p = train_cli(tmp_path, out, "--resume", epochs=2)
    assert_one_line_error(p, str(path), "do not match the sha256 recorded")
    assert (out / "p4cnn_rotmnist.safetensors").read_bytes() == weight  # nothing written


def test_a_checkpoint_with_a_non_numeric_array_or_a_dangling_tensor_is_refused(tmp_path):
    from agcnn_zoo.train.checkpoint import CheckpointError
    import numpy as np
    path = tmp_path / CHECKPOINT
    save_checkpoint(path, {"a": np.zeros(3, dtype=np.uint32)})
    assert load_checkpoint(path)["a"].dtype == np.uint32
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    for tree in ({"a": {"$nd": "t0", "dtype": "object"}}, {"a": {"$t": "t9"}}):
        save_file(load_file(str(path)), str(path), metadata={**meta, "state": json.dumps(tree)})
        with pytest.raises(CheckpointError):
            load_checkpoint(path)


# ----------------------------------------------------------------------------- the user's files

@pytest.mark.parametrize("user_file", ["metrics.jsonl", "record.json", "p4cnn_rotmnist.safetensors",
                                       "curves.png"])
def test_a_fresh_run_never_replaces_the_users_files(tmp_path, user_file):
    out = tmp_path / "mine"
    out.mkdir()
    (out / user_file).write_text("the user's own file\n")
    p = train_cli(tmp_path, out)
    assert_one_line_error(p, user_file, "never replaces what it did not create")
    assert (out / user_file).read_text() == "the user's own file\n"
    assert sorted(f.name for f in out.iterdir()) == [user_file]


def test_a_resumed_run_refuses_a_file_it_did_not_write(tmp_path):
    out = tmp_path / "run"
    assert train_cli(tmp_path, out, epochs=1).returncode == 0
    (out / "record.json").unlink()
    (out / "p4cnn_rotmnist.safetensors").rename(tmp_path / "kept.safetensors")
    ck = load_checkpoint(out / CHECKPOINT)
    save_checkpoint(out / CHECKPOINT, {**ck, "outputs": [CHECKPOINT, "metrics.jsonl"]})
    (out / "record.json").write_text("{}\n")  # now the user's
    p = train_cli(tmp_path, out, "--resume", epochs=2)
    assert_one_line_error(p, "record.json", "which this run did not write")
    assert (out / "record.json").read_text() == "{}\n"


# ----------------------------------------------------------------------------- one run per folder

def _wait_for(path: Path, proc, seconds=240) -> None:
    deadline = time.time() + seconds
    while not path.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert path.exists(), "the first run never started"


@pytest.mark.parametrize("second", [[], ["--resume"]])
def test_a_second_run_on_a_busy_folder_is_refused_naming_the_holder(tmp_path, second):
    out = tmp_path / "run"
    args = ["train", "p4cnn_rotmnist", *FAST, "--data-dir", str(shared(DATA)), "--epochs", "50",
            "--out", str(out)]
    first = subprocess.Popen([sys.executable, "-m", "agcnn_zoo", *args, *second], cwd=REPO,
                             env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(out / ".run.lock", first)
        p = train_cli(tmp_path, out, *second, "--resume", epochs=50)
        assert_one_line_error(p, "in use by another training run", f"pid {first.pid}")
    finally:
        first.kill()
        first.wait()
    # the holder died: the folder is free again (the OS released the lock)
    epochs = load_checkpoint(out / CHECKPOINT)["epoch"] if (out / CHECKPOINT).exists() else 1
    done = train_cli(tmp_path, out, "--resume", epochs=epochs)
    assert done.returncode == 0, done.stderr
    assert not (out / ".run.lock").exists()


# ----------------------------------------------------------------------------- kills at chosen writes

KILLER = r"""
import os, runpy, signal, sys
target, when, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
seen = [0]
def hit():
    seen[0] += 1
    if seen[0] >= nth:
        os.kill(os.getpid(), signal.SIGKILL)
real_replace, real_fsync = os.replace, os.fsync
def replace(src, dst, *a, **k):
    if when == "rename" and os.path.basename(str(dst)) == target:
        hit()
    return real_replace(src, dst, *a, **k)
def fsync(fd):
    name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
    if when == "fsync" and name.startswith("." + target + "."):
        hit()
    return real_fsync(fd)
os.replace, os.fsync = replace, fsync
sys.argv = ["agcnn_zoo"] + sys.argv[4:]
runpy.run_module("agcnn_zoo", run_name="__main__")
"""


def killed_at(tmp_path, target: str, when: str, nth: int, *args):
    p = subprocess.run([sys.executable, "-c", KILLER, target, when, str(nth), *args],
                       capture_output=True, text=True, timeout=300, env=_env(tmp_path), cwd=REPO)
    assert p.returncode == -signal.SIGKILL, (p.returncode, p.stderr[-2000:])
    return p


def parts(folder: Path):
    return sorted(f.name for f in folder.rglob("*") if f.name.endswith(".part"))


@pytest.mark.parametrize("when,nth", [("fsync", 2), ("rename", 2)])
def test_a_kill_while_writing_the_checkpoint_then_resume_leaves_no_temp_file(tmp_path, when, nth):
    out = tmp_path / "run"
    args = ["train", "p4cnn_rotmnist", *FAST, "--data-dir", str(shared(DATA)), "--epochs", "2",
            "--out", str(out)]
    killed_at(tmp_path, CHECKPOINT, when, nth, *args)  # during epoch 2's checkpoint
    assert parts(out) and load_checkpoint(out / CHECKPOINT)["epoch"] == 1
    ref = train_cli(tmp_path, tmp_path / "ref", epochs=2)
    done = cli(tmp_path, *args, "--resume")
    assert done.returncode == 0, done.stderr
    assert parts(out) == []
    assert (out / "p4cnn_rotmnist.safetensors").read_bytes() == \
        (tmp_path / "ref" / "p4cnn_rotmnist.safetensors").read_bytes() and ref.returncode == 0


def _manifest_state(target_manifest: Path):
    data = json.loads(target_manifest.read_text()) if target_manifest.exists() else {"weights": {}}
    files = sorted(f.name for f in target_manifest.parent.glob("*.safetensors"))
    return data["weights"], files


#: a complete (unlimited) one-epoch run: only such a run may be installed
RUN = ["train", "z2cnn_rotmnist", "--dataset", "mnist-rot-gen", "--threads", "2", "--no-progress",
       "--epochs", "1", "--tag", "k"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("finished")
    p = cli(base, *RUN, "--data-dir", str(shared(DATA)), "--out", str(base / "run"))
    assert p.returncode == 0, p.stderr
    return base / "run"


def copy_run(finished: Path, to: Path) -> Path:
    import shutil
    shutil.copytree(finished, to)
    return to


@pytest.mark.parametrize("target,when", [("manifest.json", "fsync"), ("manifest.json", "rename"),
                                          ("z2cnn_rotmnist.k.safetensors", "rename"),
                                          (".manifest.json.install.json", "rename")])
def test_a_kill_during_update_manifest_leaves_the_old_or_the_new_state(tmp_path, finished_run,
                                                                        target, when):
    out, user = copy_run(finished_run, tmp_path / "run"), tmp_path / "cache" / "user"
    # the run is complete: --resume goes straight to writing its outputs and installing them
    args = [*RUN, "--data-dir", str(shared(DATA)), "--out", str(out), "--resume", "--update-manifest"]
    nth = 2 if target.endswith(".safetensors") else 1  # the run folder's copy is written first
    killed_at(tmp_path, target, when, nth, *args)
    weights, files = _manifest_state(user / "manifest.json")
    old = ("z2cnn_rotmnist.k" not in weights and files == [])
    new = ("z2cnn_rotmnist.k" in weights and files == ["z2cnn_rotmnist.k.safetensors"])
    if not (old or new):  # killed between the weight and the manifest: the journal says so
        assert (user / ".manifest.json.install.json").exists()
    # the next installation completes or drops it, and cleans up what the kill left
    again = cli(tmp_path, *args)
    assert again.returncode == 0, again.stderr
    weights, files = _manifest_state(user / "manifest.json")
    assert "z2cnn_rotmnist.k" in weights and files == ["z2cnn_rotmnist.k.safetensors"]
    assert parts(user) == [] and parts(out) == []
    assert not (user / ".manifest.json.install.json").exists()
    probe = subprocess.run([sys.executable, "-c", "import agcnn_zoo as z; "
                            "z.create_model('z2cnn_rotmnist.k', pretrained=True); print('ok')"],
                           capture_output=True, text=True, env=_env(tmp_path), cwd=REPO)
    assert probe.stdout.strip() == "ok", probe.stderr


# ----------------------------------------------------------------------------- --update-manifest

@pytest.mark.parametrize("extra,words", [
    (["--limit-train", "64"], ["limited run"]),
    ([], ["the authors' weight", "--tag"]),
    (["--tag", "x", "--default"], ["already has a default weight"]),
    (["--tag", "x", "--into-package"], []),  # a small weight may go into the package
])
def test_update_manifest_refuses_before_training(tmp_path, extra, words):
    out = tmp_path / "never"
    args = ["train", "p4cnn_rotmnist", "--data-dir", str(tmp_path / "no_data"), "--out", str(out),
            "--update-manifest", *extra]
    p = cli(tmp_path, *args)
    if words:
        assert_one_line_error(p, *words)
    else:  # nothing refused it up front: it went on to look for data (and found none)
        assert_one_line_error(p, "mnist_rotation_new.zip")
    assert not out.exists()


def test_a_weight_too_large_to_ship_is_refused_before_training(tmp_path):
    """What ships goes into the package (at most 512 KB) or the repository's hf/agcnn-zoo/ (at
    most 12 MiB); a_p4m_resnet44_cifar (19 MB) fits neither: refused before any data is read."""
    p = cli(tmp_path, "train", "a_p4m_resnet44_cifar", "--tag", "x", "--update-manifest",
            "--into-package", "--data-dir", str(tmp_path), "--out", str(tmp_path / "never"))
    assert_one_line_error(p, "over the 12,582,912-byte limit of checkout weights")
    assert not (tmp_path / "never").exists()


def test_install_goes_to_the_users_manifest_and_create_model_finds_it(tmp_path, finished_run,
                                                                        monkeypatch):
    from agcnn_zoo.hub.hosts import package
    from agcnn_zoo.train import install
    out = copy_run(finished_run, tmp_path / "run")
    before = sorted(p.name for p in Path(package.WEIGHTS_DIR).iterdir())
    r = cli(tmp_path, *RUN, "--data-dir", str(shared(DATA)), "--out", str(out), "--resume",
            "--update-manifest")
    assert r.returncode == 0, r.stderr
    user = tmp_path / "cache" / "user"
    assert sorted(p.name for p in user.iterdir()) == ["manifest.json", "z2cnn_rotmnist.k.safetensors"]
    assert sorted(p.name for p in Path(package.WEIGHTS_DIR).iterdir()) == before
    rec = json.loads((user / "manifest.json").read_text())["weights"]["z2cnn_rotmnist.k"]
    assert rec["hosts"] == [{"type": "local", "path": "z2cnn_rotmnist.k.safetensors"}]
    monkeypatch.setenv("AGCNN_ZOO_CACHE", str(tmp_path / "cache"))
    import agcnn_zoo as zoo
    model = zoo.create_model("z2cnn_rotmnist.k", pretrained=True)
    state = load_checkpoint(out / CHECKPOINT)["best"]["state"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    # installing the same run again changes nothing; a tampered copy is refused on load
    text = (user / "manifest.json").read_text()
    assert install(out / "record.json") == "z2cnn_rotmnist.k"
    assert (user / "manifest.json").read_text() == text
    # a measurement recorded on these bytes survives installing them again
    edited = json.loads(text)
    measured = [{"dataset": "mnist-rot-aux", "top1": 50.0, "images": 10, "device": "cpu",
                 "date": "2026-12-06"}]
    edited["weights"]["z2cnn_rotmnist.k"]["accuracy"]["measured"] = measured
    (user / "manifest.json").write_text(json.dumps(edited, indent=2))
    install(out / "record.json")
    again = json.loads((user / "manifest.json").read_text())["weights"]["z2cnn_rotmnist.k"]
    assert again["accuracy"]["measured"] == measured
    f = user / "z2cnn_rotmnist.k.safetensors"
    data = bytearray(f.read_bytes())
    data[-3] ^= 1
    f.write_bytes(bytes(data))
    with pytest.raises(Exception, match="sha256"):
        zoo.create_model("z2cnn_rotmnist.k", pretrained=True)


def test_install_refuses_a_record_with_a_duplicated_key(tmp_path):
    from agcnn_zoo.io.strict_json import JSONFileError
    from agcnn_zoo.train import install
    rec = tmp_path / "record.json"
    rec.write_text('{"file": "a.safetensors", "sha256": "00", "file": "b.safetensors"}')
    with pytest.raises(JSONFileError, match="'file' appears twice"):
        install(rec, manifest=tmp_path / "m.json")


# ----------------------------------------------------------------------------- data files

@pytest.mark.parametrize("damage", ["truncated", "text"])
def test_a_broken_training_gz_is_one_line_naming_the_file(tmp_path, damage):
    data = tmp_path / "data"
    data.mkdir()
    for f in shared(DATA / "mnist").glob("train-*.gz"):
        (data / f.name).write_bytes(f.read_bytes())
    bad = data / "train-images-idx3-ubyte.gz"
    if damage == "truncated":
        bad.write_bytes(bad.read_bytes()[: 200_000])
    else:
        bad.write_text("this is not gzip\n")
    p = cli(tmp_path, "train", "p4cnn_rotmnist", "--dataset", "mnist-rot-gen", "--data-dir", str(data),
            "--out", str(tmp_path / "run"))
    assert_one_line_error(p, str(bad))
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- manifests

def _manifest_text() -> str:
    return (REPO / "weights_manifest.json").read_text()


def test_a_weight_id_twice_in_the_manifest_is_refused_by_name(tmp_path, monkeypatch):
    from agcnn_zoo.hub.manifest import load_manifest
    from agcnn_zoo.io.strict_json import JSONFileError
    text = _manifest_text()
    body = text.split('"weights": {', 1)[1]
    first = body.split('\n    "', 2)
    # the first record repeated (its sha256 altered): a bad copy hiding behind a good one
    rec_text = '"' + first[1].rstrip().rstrip(",")
    evil = text.replace('"weights": {', '"weights": {\n    ' + rec_text.replace('"sha256": "', '"sha256": "0', 1)[:] + ",", 1)
    path = tmp_path / "m.json"
    path.write_text(evil)
    wid = rec_text.split('"', 2)[1]
    with pytest.raises(JSONFileError, match=f"'{wid}' appears twice"):
        load_manifest(path)
    monkeypatch.setenv("AGCNN_ZOO_MANIFEST", str(path))
    p = subprocess.run([sys.executable, "-m", "agcnn_zoo", "list"], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=REPO)
    assert p.returncode == 1 and f"'{wid}' appears twice" in p.stderr and "Traceback" not in p.stderr


def test_a_field_twice_inside_a_record_is_refused_by_name(tmp_path):
    from agcnn_zoo.hub.manifest import load_manifest
    from agcnn_zoo.io.strict_json import JSONFileError
    text = _manifest_text().replace('"sha256": "', '"sha256": "' + "0" * 64 + '",\n      "sha256": "', 1)
    path = tmp_path / "m.json"
    path.write_text(text)
    with pytest.raises(JSONFileError, match="'sha256' appears twice"):
        load_manifest(path)


def test_a_missing_manifest_named_by_the_variable_names_the_variable(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), AGCNN_ZOO_MANIFEST=str(tmp_path / "nonexistent"))
    for cmd in ([sys.executable, "-m", "agcnn_zoo", "list"],
                [sys.executable, str(REPO / "eval" / "reproduce.py"), "--models", "z2cnn_rotmnist"]):
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
        assert p.returncode == 1, p.stderr
        assert "AGCNN_ZOO_MANIFEST" in p.stderr and "Traceback" not in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_download_replaces_a_malformed_cached_weight(tmp_path, monkeypatch):
    """A file that is not the pinned weight at the cached path: download fetches it again (from
    the mirror) instead of reporting the bad file as fetched."""
    from agcnn_zoo.__main__ import main
    from agcnn_zoo.hub import cache as hub_cache, get_record
    from conftest import MIRROR
    monkeypatch.setenv("AGCNN_ZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("AGCNN_ZOO_MIRROR", str(shared(MIRROR)))
    name = "p4m_densenet_pcam"
    # the packaged copy aside: only the cache and the mirror can serve it
    rec = get_record(name).to_dict()
    rec["hosts"] = [h for h in rec["hosts"] if h["type"] != "package"]
    manifest = json.loads(_manifest_text())
    manifest["weights"][name] = rec
    m = tmp_path / "m.json"
    m.write_text(json.dumps(manifest))
    monkeypatch.setenv("AGCNN_ZOO_MANIFEST", str(m))
    path = hub_cache.cached_weights_path(get_record(name))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":1}junk")
    assert main(["download", "--quiet", name]) == 0
    import hashlib
    assert hashlib.sha256(path.read_bytes()).hexdigest() == rec["sha256"]


def test_a_failed_data_download_leaves_no_lock_behind(tmp_path, monkeypatch):
    from agcnn_zoo import data
    monkeypatch.setenv("AGCNN_ZOO_OFFLINE", "")
    monkeypatch.setenv("AGCNN_ZOO_MIRROR", str(tmp_path / "empty_mirror"))
    (tmp_path / "empty_mirror").mkdir()
    folder = tmp_path / "user_data"
    with pytest.raises(data.DataNotFoundError):
        data.MNISTRotAux(folder, download=True, progress=False)
    leftovers = [p for p in folder.rglob("*")] if folder.exists() else []
    assert not [p for p in leftovers if ".lock" in p.name or p.name == ".locks"], leftovers
