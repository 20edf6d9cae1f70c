"""The weight hub: both host kinds over real HTTP on 127.0.0.1, the mirror, every failure mode,
the cache (no request once cached, corruption caught on load) and concurrent processes."""
from __future__ import annotations

import copy
import hashlib
import json
import multiprocessing
import urllib.request
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from _servers import FakeHFHub, StaticHost, dead_url, files_under, isolate_env, tampered
from agcnn_zoo import hub
from agcnn_zoo.hub.convert import convert_checkpoint
from agcnn_zoo.hub.manifest import load_manifest
from agcnn_zoo.registry import get_entry
from conftest import MIRROR, checkpoint_path, golden_path, shared, as_published_input

NAME = "p4cnn_rotmnist"  # small and fast; af_p4cnn_rotmnist (alpha_F) for the HF path
REPO_ID = "agcnn-test/zoo"


def manifest_record(name: str) -> dict:
    """The manifest record without its embedded copy (these tests exercise the download hosts;
    the embedded host is tested in test_hub_safety.py and test_manifest.py)."""
    rec = copy.deepcopy(load_manifest()["weights"][name])
    rec["hosts"] = [h for h in rec["hosts"] if h["type"] != "package"]
    return rec


def via(server: StaticHost, name: str) -> dict:
    """The manifest record with its original URL served by ``server``."""
    rec = manifest_record(name)
    for host in rec["hosts"]:
        if host["type"] == "original":
            host["url"] = server.url_for(host["url"])
    return rec


def pth_url(rec: dict) -> str:
    return next(h["url"] for h in rec["hosts"] if h["type"] == "original")


def assert_reproduces_golden(name: str, state: dict):
    model = get_entry(name).fn()
    model.load_state_dict(state, strict=True)
    golden = load_file(golden_path(name))
    with torch.no_grad():
        out = model.eval()(as_published_input(name, golden["input"]))
    assert (out - golden["logits"]).abs().max().item() <= 1e-4


def converted_bytes(name: str, tmp_path) -> bytes:
    dst = tmp_path / f"{name}.built.safetensors"
    convert_checkpoint(checkpoint_path(name), dst, name)
    return dst.read_bytes()


def on_the_hub_alone(fake: FakeHFHub, tmp_path, monkeypatch):
    """(record, revision) of NAME published on ``fake`` at a new revision, with that one
    Hugging Face host, ``HF_ENDPOINT`` pointing at ``fake``."""
    rec = manifest_record(NAME)
    oid = fake.commit(REPO_ID, {rec["file"]: converted_bytes(NAME, tmp_path)})
    rec["hosts"] = [{"type": "huggingface", "repo_id": REPO_ID, "revision": oid,
                     "filename": rec["file"]}]
    monkeypatch.setenv("HF_ENDPOINT", fake.endpoint)
    return rec, oid


# ----------------------------------------------------------------------------- success paths

def test_original_url_download_is_verified_converted_cached_and_reproduces_golden(cache, url_host):
    rec = via(url_host, NAME)
    state = hub.load_state_dict(NAME, rec, progress=False)
    assert_reproduces_golden(NAME, state)
    path = hub.fetch_weights(NAME, rec, progress=False)
    assert path == hub.cached_weights_path(NAME, rec) and path.parent == cache
    assert hashlib.sha256(path.read_bytes()).hexdigest() == rec["sha256"]
    assert path.stat().st_size == rec["size"]
    assert files_under(cache) == [path.name]  # no .pth, no temp file left behind
    assert url_host.count("GET", "model.pth") == 1
    # cached: loading again (and fetching) makes no request at all
    before = len(url_host.requests)
    again = hub.load_state_dict(NAME, rec, progress=False)
    assert len(url_host.requests) == before
    assert all(torch.equal(again[k], state[k]) for k in state)


def test_huggingface_download_is_verified_cached_and_reproduces_golden(cache, tmp_path, monkeypatch):
    name = "af_p4cnn_rotmnist"
    with FakeHFHub() as fake:
        rec = manifest_record(name)
        oid = fake.commit(REPO_ID, {rec["file"]: converted_bytes(name, tmp_path)})
        rec["hosts"].insert(0, {"type": "huggingface", "repo_id": REPO_ID, "revision": oid,
                                "filename": rec["file"]})
        rec["hosts"][1]["url"] = dead_url("/never/used.pth")
        monkeypatch.setenv("HF_ENDPOINT", fake.endpoint)  # read at call time
        state = hub.load_state_dict(name, rec, progress=False)
        assert_reproduces_golden(name, state)
        path = hub.fetch_weights(name, rec, progress=False)
        # our own bounded download into our cache; huggingface_hub's cache is only read
        assert path == hub.cached_weights_path(name, rec) and path.parent == cache
        assert files_under(cache) == [path.name]
        assert files_under(hub.hf_cache_dir()) == []
        assert fake.count("GET", f"/resolve/{oid}/{rec['file']}") == 1
        before = len(fake.requests)
        hub.load_state_dict(name, rec, progress=False)
        assert len(fake.requests) == before  # cached: not even a HEAD


def test_a_huggingface_endpoint_that_sends_too_much_or_too_slowly_is_cut_off(cache, tmp_path,
                                                                             monkeypatch):
    """The Hub's files come through the project's own bounded downloader: a body that never ends
    stops at the pinned size, a Content-Length above it is refused before the body, a trickle
    is ended by AGCNN_ZOO_DEADLINE; nothing is left in either cache. (huggingface_hub's own
    download wrote 11 GB of an endless body for a 100 KB pin before this.)"""
    with FakeHFHub() as fake:
        rec, oid = on_the_hub_alone(fake, tmp_path, monkeypatch)
        monkeypatch.setenv("AGCNN_ZOO_DEADLINE", "2")
        for fault, error, words in (("endless", hub.TooLargeError, "transfer stopped"),
                                    ("huge", hub.TooLargeError, "refused before reading"),
                                    ("trickle", hub.DeadlineError, "more than 2 s")):
            fake.set_fault(rec["file"], fault)
            with pytest.raises(hub.WeightsUnavailableError) as info:
                hub.fetch_weights(NAME, rec, progress=False)
            err = info.value.failures[0].error
            assert type(err) is error and words in str(err), (fault, err)
            assert files_under(cache.parent) == [], fault
        assert fake.body_bytes_sent < rec["size"] + (4 << 20)  # the endless body was not read on


def test_mirror_needs_no_server_and_no_network(cache, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the network was used although AGCNN_ZOO_MIRROR is set")
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setenv("AGCNN_ZOO_MIRROR", str(shared(MIRROR)))
    # the manifest's own record, less the embedded copy (which would need no mirror at all)
    state = hub.load_state_dict("z2cnn_rotmnist", manifest_record("z2cnn_rotmnist"), progress=False)
    assert_reproduces_golden("z2cnn_rotmnist", state)
    # a file the mirror lacks fails that host without falling back to the network
    rec = manifest_record(NAME)
    rec["hosts"][0]["url"] = rec["hosts"][0]["url"].replace("/model.pth", "/missing.pth")
    with pytest.raises(hub.WeightsUnavailableError) as info:
        hub.fetch_weights(NAME, rec, progress=False)
    err = info.value.failures[0].error
    assert type(err) is hub.MirrorError and "not in the mirror" in str(err)
    assert files_under(cache) == ["z2cnn_rotmnist-" + manifest_record("z2cnn_rotmnist")["sha256"][:10]
                                  + ".safetensors"]


def test_mirror_also_serves_huggingface_files(cache, tmp_path, monkeypatch):
    rec = manifest_record(NAME)
    rev = "ab" * 20
    mirror = tmp_path / "mirror"
    target = mirror / "huggingface.co" / REPO_ID / "resolve" / rev / rec["file"]
    target.parent.mkdir(parents=True)
    target.write_bytes(converted_bytes(NAME, tmp_path))
    rec["hosts"] = [{"type": "huggingface", "repo_id": REPO_ID, "revision": rev, "filename": rec["file"]}]
    monkeypatch.setenv("AGCNN_ZOO_MIRROR", str(mirror))
    assert_reproduces_golden(NAME, hub.load_state_dict(NAME, rec, progress=False))
    assert hub.fetch_weights(NAME, rec, progress=False) == hub.cached_weights_path(NAME, rec)


def test_one_cache_root_follows_xdg_and_agcnn_zoo_cache(tmp_path, monkeypatch):
    from agcnn_zoo import data
    isolate_env(tmp_path, monkeypatch)
    monkeypatch.delenv("AGCNN_ZOO_CACHE")
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert hub.cache_dir() == tmp_path / "home" / ".cache" / "agcnn_zoo" / "weights"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.cache_dir() == tmp_path / "xdg" / "agcnn_zoo" / "weights"
    assert data.default_data_dir() == tmp_path / "xdg" / "agcnn_zoo" / "data"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # ignored, as the XDG rule says
    assert hub.cache_dir() == tmp_path / "home" / ".cache" / "agcnn_zoo" / "weights"
    # AGCNN_ZOO_CACHE moves the whole root; AGCNN_ZOO_DATA the data alone
    monkeypatch.setenv("AGCNN_ZOO_CACHE", str(tmp_path / "mine"))
    assert hub.cache_dir() == tmp_path / "mine" / "weights"
    assert data.default_data_dir() == tmp_path / "mine" / "data"
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path / "sets"))
    assert data.default_data_dir() == tmp_path / "sets"
    # the Hugging Face host keeps huggingface_hub's own cache unless the root is moved
    assert hub.hf_cache_dir() == str(tmp_path / "mine" / "huggingface")
    monkeypatch.delenv("AGCNN_ZOO_CACHE")
    assert hub.hf_cache_dir() == str(tmp_path / "hf_home" / "hub")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    assert hub.hf_cache_dir() == str(tmp_path / "elsewhere")


# ----------------------------------------------------------------------------- failures

@pytest.mark.parametrize("fault, error, what", [
    ("tamper", hub.IntegrityError, "sha256"),
    ("short", hub.IntegrityError, "size"),
    ("truncate", hub.TruncatedDownloadError, None),
    ("html", hub.UnexpectedContentError, None),
    ("html_as_binary", hub.UnexpectedContentError, None),
    ("404", hub.DownloadError, None),
])
def test_bad_url_responses_give_dedicated_errors_and_leave_nothing(cache, url_host, fault, error, what):
    rec = via(url_host, NAME)
    url_host.set_fault(pth_url(rec), fault)
    with pytest.raises(hub.WeightsUnavailableError) as info:
        hub.load_state_dict(NAME, rec, progress=False)
    [failure] = info.value.failures
    assert type(failure.error) is error
    if what:
        assert failure.error.what == what
    if fault == "404":
        assert failure.error.status == 404
    assert pth_url(rec) in str(info.value) and "AGCNN_ZOO_MIRROR" in str(info.value)
    assert files_under(cache) == []
    # nothing poisoned: once the host behaves, the same call succeeds
    url_host.set_fault(pth_url(rec), None)
    assert_reproduces_golden(NAME, hub.load_state_dict(NAME, rec, progress=False))


def test_tampered_huggingface_file_is_discarded_and_the_next_host_used(cache, url_host, tmp_path,
                                                                      monkeypatch):
    with FakeHFHub() as fake:
        rec = via(url_host, NAME)
        oid = fake.commit(REPO_ID, {rec["file"]: converted_bytes(NAME, tmp_path)})
        hf_host = {"type": "huggingface", "repo_id": REPO_ID, "revision": oid, "filename": rec["file"]}
        monkeypatch.setenv("HF_ENDPOINT", fake.endpoint)
        fake.set_fault(rec["file"], "tamper")
        only_hf = dict(rec, hosts=[hf_host])
        with pytest.raises(hub.WeightsUnavailableError) as info:
            hub.fetch_weights(NAME, only_hf, progress=False)
        assert type(info.value.failures[0].error) is hub.IntegrityError
        assert files_under(cache.parent) == []  # neither cache keeps a tampered file
        # with the original URL behind it, the tampered HF file is skipped and the URL used
        rec["hosts"].insert(0, hf_host)
        path = hub.fetch_weights(NAME, rec, progress=False)
        assert path == hub.cached_weights_path(NAME, rec)
        # a file missing at the pinned revision
        path.unlink()
        fake.set_fault(rec["file"], "404")
        with pytest.raises(hub.WeightsUnavailableError) as info:
            hub.fetch_weights(NAME, only_hf, progress=False)
        assert type(info.value.failures[0].error) is hub.DownloadError
        assert "HTTP 404" in str(info.value) and f"/resolve/{oid}/" in str(info.value)
        assert files_under(cache) == []


def test_offline_without_cache_is_a_clear_error(cache, monkeypatch):
    rec = manifest_record(NAME)
    rec["hosts"][0]["url"] = dead_url("/raw.githubusercontent.com/model.pth")
    with pytest.raises(hub.WeightsUnavailableError) as info:
        hub.load_state_dict(NAME, rec, progress=False)
    msg = str(info.value)
    assert "network error" in msg and "refused" in msg.lower()
    assert "AGCNN_ZOO_MIRROR" in msg and rec["hosts"][0]["sha256"] in msg
    assert files_under(cache) == []
    # HF_HUB_OFFLINE=1: the Hugging Face host is not contacted (the other hosts may be)
    with FakeHFHub() as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.endpoint)
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        rec["hosts"].insert(0, {"type": "huggingface", "repo_id": REPO_ID, "revision": "cd" * 20,
                                "filename": rec["file"]})
        with pytest.raises(hub.WeightsUnavailableError) as info:
            hub.fetch_weights(NAME, rec, progress=False)
        assert [type(f.error) for f in info.value.failures] == [hub.OfflineError, hub.DownloadError]
        assert "offline" in str(info.value.failures[0].error)
        # AGCNN_ZOO_OFFLINE=1, the one switch: no host at all is contacted
        monkeypatch.delenv("HF_HUB_OFFLINE")
        monkeypatch.setenv("AGCNN_ZOO_OFFLINE", "1")
        with pytest.raises(hub.WeightsUnavailableError) as info:
            hub.fetch_weights(NAME, rec, progress=False)
        assert [type(f.error) for f in info.value.failures] == [hub.OfflineError] * 2
        assert all("offline" in str(f.error) for f in info.value.failures)
        assert all(isinstance(f.error, hub.DownloadError) and f.error.hint
                   for f in info.value.failures)
        assert fake.requests == []


def test_a_silent_host_times_out(cache, url_host, monkeypatch):
    rec = via(url_host, NAME)
    url_host.set_fault(pth_url(rec), "stall")
    monkeypatch.setenv("AGCNN_ZOO_TIMEOUT", "0.3")
    with pytest.raises(hub.WeightsUnavailableError) as info:
        hub.fetch_weights(NAME, rec, progress=False)
    err = info.value.failures[0].error
    assert type(err) is hub.DownloadError and "timed out" in str(err)
    assert files_under(cache) == []
    monkeypatch.setenv("AGCNN_ZOO_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="AGCNN_ZOO_TIMEOUT"):
        hub.fetch_weights(NAME, rec, progress=False)


def test_corrupted_cache_file_is_caught_on_load_and_replaced_on_retry(cache, url_host):
    rec = via(url_host, NAME)
    path = hub.fetch_weights(NAME, rec, progress=False)
    good = path.read_bytes()
    path.write_bytes(tampered(good))
    with pytest.raises(hub.IntegrityError) as info:
        hub.load_state_dict(NAME, rec, progress=False)
    assert info.value.expected == rec["sha256"] and info.value.actual != rec["sha256"]
    assert info.value.file == str(path)
    assert not path.exists()  # deleted, never parsed
    assert_reproduces_golden(NAME, hub.load_state_dict(NAME, rec, progress=False))
    assert url_host.count("GET", "model.pth") == 2
    path.write_bytes(good[:-100])
    with pytest.raises(hub.IntegrityError, match="size mismatch"):
        hub.load_state_dict(NAME, rec, progress=False)
    assert not path.exists()


def test_a_copy_in_the_huggingface_cache_is_used_and_caught_when_corrupted(cache, tmp_path,
                                                                            monkeypatch):
    """A file the user already has in huggingface_hub's cache (``huggingface-cli download``)
    is used without a request, checked on every load, deleted when corrupted (the snapshot link
    and its blob), and the next load downloads it again, into our cache."""
    from huggingface_hub import hf_hub_download
    with FakeHFHub() as fake:
        rec, oid = on_the_hub_alone(fake, tmp_path, monkeypatch)
        path = Path(hf_hub_download(REPO_ID, rec["file"], revision=oid, endpoint=fake.endpoint,
                                    cache_dir=hub.hf_cache_dir()))
        gets = fake.count("GET", "/resolve/")
        assert hub.fetch_weights(NAME, rec, progress=False) == path
        assert_reproduces_golden(NAME, hub.load_state_dict(NAME, rec, progress=False))
        assert fake.count("GET", "/resolve/") == gets
        blob = path.resolve()
        blob.write_bytes(tampered(blob.read_bytes()))
        with pytest.raises(hub.IntegrityError):
            hub.load_state_dict(NAME, rec, progress=False)
        assert not path.exists() and not blob.exists()
        hub.load_state_dict(NAME, rec, progress=False)  # downloaded again
        assert fake.count("GET", "/resolve/") == gets + 1
        assert hub.fetch_weights(NAME, rec, progress=False) == hub.cached_weights_path(NAME, rec)


def unpinned(rec: dict) -> dict:
    """``rec`` as a weight known only by its source's git blob id (as the CIFAR weight)."""
    pth = checkpoint_path(NAME).read_bytes()
    blob_id = hashlib.sha1(b"blob %d\0" % len(pth) + pth).hexdigest()
    rec.update(sha256=None, size=None, git_blob_sha1=blob_id)
    rec["hosts"][0].pop("sha256")
    rec["hosts"][0]["git_blob_sha1"] = blob_id
    return rec


def test_unpinned_weight_is_derived_from_its_verified_source_on_every_load(cache, url_host):
    rec = via(url_host, NAME)
    pinned_sha = rec["sha256"]
    unpinned(rec)
    with pytest.warns(hub.UnpinnedWeightsWarning, match="pins no sha256") as warned:
        state = hub.load_state_dict(NAME, rec, progress=False)
    assert pinned_sha in str(warned[-1].message)  # deterministic conversion: the pinned file's hash
    assert_reproduces_golden(NAME, state)
    path = hub.cached_weights_path(NAME, rec)
    source = cache / f"p4cnn_rotmnist-blob{rec['git_blob_sha1'][:10]}.source.pth"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == pinned_sha
    assert files_under(cache) == sorted([path.name, source.name])  # no recorded hash to trust
    assert path.stat().st_mode & 0o777 == 0o644 and source.stat().st_mode & 0o777 == 0o644
    # swap the cached file for NaN weights and forge a "recorded hash" beside it: not trusted
    nan_state = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                 for k, v in state.items()}
    from safetensors.torch import save as st_save
    forged = st_save(nan_state)
    path.write_bytes(forged)
    path.with_name(path.name + ".sha256.json").write_text(json.dumps(
        {"sha256": hashlib.sha256(forged).hexdigest(), "size": len(forged)}))
    with pytest.raises(hub.IntegrityError):
        hub.load_state_dict(NAME, rec, progress=False)
    assert not path.exists()
    # derived again from the cached verified source, without a request
    before = url_host.count("GET", "model.pth")
    with pytest.warns(hub.UnpinnedWeightsWarning):
        assert_reproduces_golden(NAME, hub.load_state_dict(NAME, rec, progress=False))
    assert url_host.count("GET", "model.pth") == before
    # a tampered cached source fails its git blob id, is removed and downloaded again
    source.write_bytes(tampered(source.read_bytes()))
    with pytest.warns(hub.UnpinnedWeightsWarning):
        assert_reproduces_golden(NAME, hub.load_state_dict(NAME, rec, progress=False))
    assert url_host.count("GET", "model.pth") == before + 1
    # a tampered source on the server fails its git blob id
    for p in (path, source, path.with_name(path.name + ".sha256.json")):
        p.unlink()
    url_host.set_fault(pth_url(rec), "tamper")
    with pytest.raises(hub.WeightsUnavailableError) as info:
        hub.load_state_dict(NAME, rec, progress=False)
    assert info.value.failures[0].error.what == "git blob id"
    assert files_under(cache) == []


def test_no_record_is_a_clear_error(cache):
    with pytest.raises(hub.WeightsError, match="no published weights"):
        hub.fetch_weights("p4_allcnnc_cifar")


# ----------------------------------------------------------------------------- concurrency

def _load_in_child(name, record, barrier, queue):
    try:
        from agcnn_zoo import hub as child_hub
        child_hub.trust_host("127.0.0.1", http=True)  # a fresh interpreter: trust the test server
        barrier.wait(timeout=120)
        state = child_hub.load_state_dict(name, record, progress=False)
        path = child_hub.fetch_weights(name, record, progress=False)
        queue.put(("ok", str(path), len(state)))
    except BaseException as e:  # report anything to the parent
        queue.put(("error", repr(e), 0))


def test_four_processes_loading_at_once_share_one_download(cache):
    with StaticHost(shared(MIRROR), delay=1.0) as server:  # a slow link: the four overlap
        rec = via(server, NAME)
        ctx = multiprocessing.get_context("spawn")
        barrier, queue = ctx.Barrier(4), ctx.Queue()
        procs = [ctx.Process(target=_load_in_child, args=(NAME, rec, barrier, queue))
                 for _ in range(4)]
        for p in procs:
            p.start()
        try:
            results = [queue.get(timeout=240) for _ in procs]
        finally:
            for p in procs:
                p.join(timeout=60)
        assert [r[0] for r in results] == ["ok"] * 4, results
        expected = hub.cached_weights_path(NAME, rec)
        assert {r[1] for r in results} == {str(expected)}
        assert {r[2] for r in results} == {len(get_entry(NAME).fn().state_dict())}
        assert files_under(cache) == [expected.name]
        hub.verify_file(expected, rec["sha256"], rec["size"])
        assert server.count("GET", "model.pth") == 1  # the lock let one process download
