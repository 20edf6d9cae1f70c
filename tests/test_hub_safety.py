"""The hub never deletes what it does not own, refuses records that could make it, and turns
every cache problem into a WeightsError with a hint; the ``package`` host kind; typed records
that round-trip every field."""
from __future__ import annotations

import copy
import errno
import hashlib
import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from _servers import StaticHost, dead_url, files_under, isolate_env, tampered
from agcnn_zoo import hub
from agcnn_zoo.hub import records as zrecords
from agcnn_zoo.hub.convert import convert_checkpoint
from agcnn_zoo.hub.hosts import package as package_host
from agcnn_zoo.hub.manifest import load_manifest, save_manifest, validate_manifest
from agcnn_zoo.registry import get_entry
from conftest import MIRROR, REPO, checkpoint_path, golden_path, shared, as_published_input

NAME = "p4cnn_rotmnist"


def record(name: str = NAME) -> dict:
    """The manifest record without its embedded copy: these tests exercise the download hosts."""
    rec = copy.deepcopy(load_manifest(REPO / "weights_manifest.json")["weights"][name])
    rec["hosts"] = [h for h in rec["hosts"] if h["type"] != "package"]
    return rec


def via(server: StaticHost, name: str = NAME) -> dict:
    rec = record(name)
    for host in rec["hosts"]:
        if host["type"] == "original":
            host["url"] = server.url_for(host["url"])
    return rec


def assert_golden(name: str, state: dict):
    model = get_entry(name).fn()
    model.load_state_dict(state, strict=True)
    golden = load_file(golden_path(name))
    with torch.no_grad():
        assert (model.eval()(as_published_input(name, golden["input"])) - golden["logits"]).abs().max().item() <= 1e-4


def snapshot(folder: Path, skip: Path) -> dict:
    return {str(p): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and not p.is_symlink() and skip not in p.parents}


# ----------------------------------------------------------------------------- ownership

def test_a_symlinked_cache_entry_is_refused_and_its_target_survives(cache, url_host, tmp_path):
    rec = via(url_host)
    target = hub.cached_weights_path(NAME, rec)
    good = hub.fetch_weights(NAME, rec, progress=False).read_bytes()
    target.unlink()
    victim = tmp_path / "elsewhere" / "precious.safetensors"
    victim.parent.mkdir()
    victim.write_bytes(tampered(good))  # fails verification if it were read
    target.symlink_to(victim)
    for call in (hub.load_state_dict, hub.fetch_weights):
        with pytest.raises(hub.UnsafeFileError, match="symlink") as info:
            call(NAME, rec, progress=False)
        assert "remove" in info.value.hint
    assert victim.read_bytes() == tampered(good) and target.is_symlink()
    # the same with a link to good bytes: still not followed, still not deleted
    victim.write_bytes(good)
    with pytest.raises(hub.UnsafeFileError):
        hub.load_state_dict(NAME, rec, progress=False)
    assert victim.read_bytes() == good and url_host.count("GET", "model.pth") == 1


def test_a_cache_entry_that_is_a_fifo_is_refused_without_reading(cache, url_host):
    rec = via(url_host)
    target = hub.cached_weights_path(NAME, rec)
    target.parent.mkdir(parents=True)
    os.mkfifo(target)
    start = time.monotonic()
    with pytest.raises(hub.UnsafeFileError, match="not a regular file"):
        hub.load_state_dict(NAME, rec, progress=False)
    assert time.monotonic() - start < 5 and target.exists()
    # a 2 GB sparse file: its size is checked before a byte is read
    target.unlink()
    with open(target, "wb") as f:
        f.truncate(2 << 30)
    start = time.monotonic()
    with pytest.raises(hub.IntegrityError, match="size mismatch"):
        hub.load_state_dict(NAME, rec, progress=False)
    assert time.monotonic() - start < 5 and not target.exists()  # ours, regular: removed


def test_every_failure_class_carries_a_hint():
    import inspect
    from agcnn_zoo import io as zio
    from agcnn_zoo.data import ChecksumError, DataFormatError
    from agcnn_zoo.hub import errors as herrors
    classes = {c for m in (zio.errors, herrors) for _, c in inspect.getmembers(m, inspect.isclass)
               if issubclass(c, zio.ZooIOError)} | {ChecksumError, DataFormatError}
    bases = {zio.ZooIOError, zio.CacheError, hub.WeightsUnavailableError}  # hint given per case
    assert len(classes) > 15
    for cls in classes - bases:
        assert cls.default_hint, f"{cls.__name__} has no hint"
    assert data_download_error_is_the_hub_one()


def data_download_error_is_the_hub_one() -> bool:
    from agcnn_zoo import data
    return data.DownloadError is hub.DownloadError and issubclass(hub.DownloadError, hub.WeightsError)


def test_a_non_hex_hash_is_refused_at_load_and_nothing_outside_the_cache_is_touched(
        cache, tmp_path, monkeypatch):
    victim = tmp_path / "victim.safetensors"
    victim.write_bytes(b"not ours")
    data = load_manifest(REPO / "weights_manifest.json")
    data["weights"][NAME]["sha256"] = "../../../" + "victim"[:1] * 55
    bad = tmp_path / "manifest.json"
    bad.write_text(json.dumps(data))
    monkeypatch.setenv("AGCNN_ZOO_MANIFEST", str(bad))
    before = snapshot(tmp_path, cache)
    for call in (hub.load_state_dict, hub.fetch_weights, hub.cached_weights_path):
        with pytest.raises(hub.RecordError, match="64 lowercase hex") as info:
            call(NAME)
        assert "manifest" in info.value.hint and isinstance(info.value, hub.WeightsError)
    assert snapshot(tmp_path, cache) == before and files_under(cache) == []
    assert any("64 lowercase hex" in p for p in validate_manifest(data))
    # the other records of that manifest still load
    assert hub.get_record("z2cnn_rotmnist", data).sha256 == data["weights"]["z2cnn_rotmnist"]["sha256"]


@pytest.mark.parametrize("url, match", [
    ("file:///etc/passwd", "scheme 'file' refused"),
    ("data:application/octet-stream;base64,AAAA", "scheme 'data' refused"),
    ("http://raw.githubusercontent.com/x/model.pth", "needs an https url"),
    ("https://evil.example/model.pth", "not on the allow-list"),
    ("https://raw.githubusercontent.com/a/../../model.pth", "'..' segments refused"),
])
def test_records_with_unsafe_urls_are_refused(cache, url, match):
    rec = record()
    rec["hosts"][0]["url"] = url
    with pytest.raises(hub.RecordError, match=match):
        hub.fetch_weights(NAME, rec, progress=False)


def test_a_killed_download_leaves_no_stray_files_after_the_next_load(cache, tmp_path):
    with StaticHost(shared(MIRROR), delay=60) as slow:  # a body that takes a minute: killed midway
        rec = via(slow)
        ctx = multiprocessing.get_context("spawn")
        child = ctx.Process(target=_fetch_in_child, args=(NAME, rec))
        child.start()
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not any(
                    p.name.endswith(".part") and p.stat().st_size > 0 for p in cache.glob(".*.part")):
                time.sleep(0.2)
            parts = [p.name for p in cache.glob(".*.part")]
            assert parts, "the child never started writing"
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.join(timeout=30)
    assert child.exitcode == -signal.SIGKILL
    assert any(f.endswith(".part") for f in files_under(cache))  # what a killed process leaves
    with StaticHost(shared(MIRROR)) as server:
        rec = via(server)
        assert_golden(NAME, hub.load_state_dict(NAME, rec, progress=False))
    assert files_under(cache) == [hub.cached_weights_path(NAME, rec).name]


def _fetch_in_child(name, rec):
    from agcnn_zoo import hub as child_hub
    child_hub.trust_host("127.0.0.1", http=True)
    child_hub.fetch_weights(name, rec, progress=False)


# ----------------------------------------------------------------------------- cache errors

def _refuse_writes_under(monkeypatch, folder: Path, err: int):
    real_open = os.open

    def guarded(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and str(folder) in os.fspath(path):
            raise OSError(err, os.strerror(err), os.fspath(path))
        return real_open(path, flags, *args, **kwargs)
    monkeypatch.setattr(os, "open", guarded)


def test_a_read_only_cache_is_a_weights_error_with_a_hint(cache, url_host, monkeypatch):
    """Tests run as root, for whom chmod does not make a folder read-only: the OS refusal is
    produced by os.open itself (EROFS: a read-only mount)."""
    rec = via(url_host)
    cache.mkdir(parents=True)
    _refuse_writes_under(monkeypatch, cache, errno.EROFS)
    with pytest.raises(hub.CacheNotWritableError) as info:
        hub.fetch_weights(NAME, rec, progress=False)
    assert isinstance(info.value, hub.WeightsError) and "AGCNN_ZOO_CACHE" in info.value.hint
    assert files_under(cache) == []


def test_an_integrity_failure_is_not_hidden_by_a_read_only_cache(cache, url_host, monkeypatch):
    rec = via(url_host)
    path = hub.fetch_weights(NAME, rec, progress=False)
    path.write_bytes(tampered(path.read_bytes()))

    def no_unlink(p, *a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(p))
    monkeypatch.setattr(os, "unlink", no_unlink)
    with pytest.raises(hub.IntegrityError):
        hub.load_state_dict(NAME, rec, progress=False)


def test_disk_full_is_a_weights_error_with_a_hint(cache, url_host, monkeypatch):
    """The disk fills up while the converted file is written (a writer raising ENOSPC, as the
    OS does): a DiskFullError, and nothing is left in the cache."""
    from agcnn_zoo.io import files as zfiles
    real_create = zfiles.create_exclusive

    class FullDisk:
        def __init__(self, f):
            self.f, self.name = f, f.name

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device", self.name)

        def __getattr__(self, key):
            return getattr(self.f, key)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(zfiles, "create_exclusive", lambda p: FullDisk(real_create(p)))
    rec = via(url_host)
    with pytest.raises(hub.DiskFullError) as info:
        hub.fetch_weights(NAME, rec, progress=False)
    assert "space" in info.value.hint and isinstance(info.value, hub.WeightsError)
    assert files_under(cache) == []


def test_a_cache_path_that_is_a_file_is_a_weights_error(tmp_path, monkeypatch, url_host):
    isolate_env(tmp_path, monkeypatch)
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    monkeypatch.setenv("AGCNN_ZOO_CACHE", str(blocker / "cache"))
    with pytest.raises(hub.CachePathError) as info:
        hub.fetch_weights(NAME, via(url_host), progress=False)
    assert "AGCNN_ZOO_CACHE" in info.value.hint and blocker.read_text() == "x"


def test_cache_files_are_group_readable(cache, url_host):
    old = os.umask(0o077)
    try:
        path = hub.fetch_weights(NAME, via(url_host), progress=False)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


# ----------------------------------------------------------------------------- hosts

def test_a_bad_hf_repo_id_fails_that_host_only(cache, url_host):
    rec = via(url_host)
    rec["hosts"].insert(0, {"type": "huggingface", "repo_id": "not a repo!!", "revision": "ab" * 20,
                            "filename": rec["file"]})
    assert_golden(NAME, hub.load_state_dict(NAME, rec, progress=False))
    assert any("bad repo_id" in p for p in zrecords.record_problems(NAME, rec))
    hub.cached_weights_path(NAME, rec).unlink()
    rec["hosts"][1]["url"] = dead_url("/model.pth")
    with pytest.raises(hub.WeightsUnavailableError) as info:
        hub.fetch_weights(NAME, rec, progress=False)
    first, second = info.value.failures
    assert type(first.error) is hub.DownloadError and "bad repo_id" in str(first.error)
    assert "network error" in str(second.error)


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    folder = tmp_path / "package_weights"
    folder.mkdir()
    monkeypatch.setattr(package_host, "WEIGHTS_DIR", folder)
    return folder


def package_record(folder: Path, tmp_path: Path, data: bytes = None) -> dict:
    src = tmp_path / "built.safetensors"
    convert_checkpoint(checkpoint_path(NAME), src, NAME)
    data = src.read_bytes() if data is None else data
    (folder / "tiny.safetensors").write_bytes(data)
    rec = record()
    rec.update(file="tiny.safetensors", sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    rec["hosts"] = [{"type": "package", "path": "tiny.safetensors"},
                    {"type": "original", "url": dead_url("/model.pth"),
                     "sha256": record()["hosts"][0]["sha256"]}]
    return rec


def test_package_host_loads_verified_files_shipped_in_the_package(cache, weights_dir, tmp_path):
    rec = package_record(weights_dir, tmp_path)
    assert hub.fetch_weights(NAME, rec, progress=False) == weights_dir / "tiny.safetensors"
    assert_golden(NAME, hub.load_state_dict(NAME, rec, progress=False))
    assert files_under(cache) == []  # nothing copied, nothing written
    # tampered: refused on every load, and never deleted
    path = weights_dir / "tiny.safetensors"
    good = path.read_bytes()
    path.write_bytes(tampered(good))
    with pytest.raises(hub.WeightsUnavailableError) as info:
        hub.load_state_dict(NAME, rec, progress=False)
    assert type(info.value.failures[0].error) is hub.IntegrityError
    assert "reinstall" in info.value.failures[0].error.hint
    assert path.read_bytes() == tampered(good)
    # tampered after fetch_weights returned it: load_state_dict checks the bytes it reads
    path.write_bytes(good)
    only = dict(rec, hosts=rec["hosts"][:1])
    assert hub.fetch_weights(NAME, only, progress=False) == path
    path.write_bytes(tampered(good))
    with pytest.raises(hub.WeightsUnavailableError):
        hub.load_state_dict(NAME, only, progress=False)
    assert path.exists()


def test_package_host_refuses_files_over_512_kb(cache, weights_dir, tmp_path):
    big = b"\0" * (package_host.MAX_BYTES + 1)
    rec = package_record(weights_dir, tmp_path, big)
    with pytest.raises(hub.WeightsUnavailableError) as info:
        hub.fetch_weights(NAME, dict(rec, hosts=rec["hosts"][:1]), progress=False)
    err = info.value.failures[0].error
    assert type(err) is hub.UnsafeFileError and "at most" in str(err)
    # a record pinning a small size does not make a large file readable either
    rec["size"] = 1000
    with pytest.raises(hub.WeightsUnavailableError) as info:
        hub.fetch_weights(NAME, dict(rec, hosts=rec["hosts"][:1]), progress=False)
    assert info.value.failures[0].error.what == "size"


def test_package_host_listed_first_is_tried_before_caches_and_network(cache, weights_dir, tmp_path,
                                                                      url_host):
    rec = package_record(weights_dir, tmp_path)
    rec["hosts"][1]["url"] = url_host.url_for(record()["hosts"][0]["url"])
    assert hub.fetch_weights(NAME, rec, progress=False) == weights_dir / "tiny.safetensors"
    assert url_host.requests == []
    (weights_dir / "tiny.safetensors").unlink()  # not shipped: the next host delivers
    path = hub.fetch_weights(NAME, rec, progress=False)
    assert path.parent == cache and url_host.count("GET", "model.pth") == 1


# ----------------------------------------------------------------------------- records

def test_typed_records_round_trip_trained_and_tagged_weights(tmp_path):
    data = load_manifest(REPO / "weights_manifest.json")
    rec = copy.deepcopy(data["weights"][NAME])
    rec["origin"] = {"kind": "trained", "by": "agcnn_zoo.train"}
    rec["accuracy"]["checkpoint"] = {"top1": None, "source": "not an authors' checkpoint"}
    rec["training"] = {"recipe": "rotmnist-adam", "seed": 3, "split": "train 10000 / val 2000",
                       "epochs": 100, "times": {"wall_s": 1234.5}}
    rec["default"] = False
    data["weights"]["p4cnn_rotmnist.seed3"] = rec
    assert validate_manifest(data) == []
    typed = hub.parse_record("p4cnn_rotmnist.seed3", rec)
    assert typed.model_name == "p4cnn_rotmnist" and typed.tag == "seed3"
    assert typed.to_dict() == rec and list(typed.to_dict()) == list(rec)
    assert typed["training"]["seed"] == 3 and typed.get("default") is False
    path = save_manifest(dict(data, weights={**data["weights"], "p4cnn_rotmnist.seed3": typed}),
                         tmp_path / "m.json")
    assert load_manifest(path)["weights"]["p4cnn_rotmnist.seed3"] == rec
    assert hub.load_records(path)["p4cnn_rotmnist.seed3"].extra["training"] == rec["training"]
    for bad in ("p4cnn_rotmnist.Seed3", "p4cnn_rotmnist.", "p4cnn/rotmnist"):
        with pytest.raises(hub.RecordError, match="weight id"):
            hub.parse_record(bad, rec)
    data["weights"]["p4cnn_rotmnist.seed3"]["origin"]["kind"] = "guessed"
    assert any("origin.kind" in p for p in validate_manifest(data))
