"""The shared I/O layer against real servers on 127.0.0.1 and real files: bounded downloads
(size cap, overall deadline), the mirror's guards, the environment switches, atomic writes and
the cleanup of what killed downloads leave behind."""
from __future__ import annotations

import io
import os
import time

import pytest

from _servers import StaticHost, isolate_env
from agcnn_zoo import io as zio
from agcnn_zoo.io import download, mirror_path


@pytest.fixture
def served(tmp_path, monkeypatch):
    isolate_env(tmp_path, monkeypatch)
    root = tmp_path / "served"
    (root / "files.example").mkdir(parents=True)
    payload = bytes(range(256)) * 64  # 16 KiB
    (root / "files.example" / "f.bin").write_bytes(payload)
    with StaticHost(root) as server:
        yield server, f"{server.url}/files.example/f.bin", payload


def test_plain_download_and_hash_while_streaming(served):
    server, url, payload = served
    out, seen = io.BytesIO(), []
    assert download(url, out, expected_size=len(payload), on_chunk=seen.append) == len(payload)
    assert out.getvalue() == payload and b"".join(seen) == payload


def test_an_endless_body_is_stopped_by_the_size_cap_and_by_the_deadline(served, monkeypatch):
    server, url, payload = served
    server.set_fault(url, "endless")
    out = io.BytesIO()
    with pytest.raises(zio.TooLargeError, match="transfer stopped") as info:
        download(url, out, max_size=1 << 20)
    assert not info.value.announced and len(out.getvalue()) <= 1 << 20
    assert info.value.hint
    # no size known at all: the overall deadline ends it
    monkeypatch.setenv("AGCNN_ZOO_DEADLINE", "1.5")
    out = io.BytesIO()
    start = time.monotonic()
    with pytest.raises(zio.DeadlineError, match="more than 1.5 s"):
        download(url, out)
    assert time.monotonic() - start < 10


def test_a_trickling_server_is_cut_off_by_the_deadline_not_the_read_timeout(served, monkeypatch):
    server, url, payload = served
    server.set_fault(url, "trickle")  # one byte per second: no single read ever times out
    monkeypatch.setenv("AGCNN_ZOO_TIMEOUT", "30")
    out = io.BytesIO()
    start = time.monotonic()
    with pytest.raises(zio.DeadlineError) as info:
        download(url, out, expected_size=len(payload), deadline=2.0)
    assert time.monotonic() - start < 8
    assert len(out.getvalue()) <= 5 and "AGCNN_ZOO_DEADLINE" in info.value.hint


def test_a_content_length_above_the_expected_size_is_refused_before_reading(served):
    server, url, payload = served
    server.set_fault(url, "huge")
    out = io.BytesIO()
    start = time.monotonic()
    with pytest.raises(zio.TooLargeError, match="refused before reading") as info:
        download(url, out, expected_size=len(payload))
    assert info.value.announced and info.value.got == 10 << 30
    assert out.getvalue() == b"" and time.monotonic() - start < 5


def test_html_is_refused_whatever_its_label(served):
    server, url, _ = served
    for fault in ("html", "html_as_binary"):
        server.set_fault(url, fault)
        with pytest.raises(zio.UnexpectedContentError, match="HTML"):
            download(url, io.BytesIO())


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "-1", "0", "soon", "1e999"])
def test_bad_timeouts_are_refused_with_a_hint(served, monkeypatch, raw):
    _, url, _ = served
    for var in ("AGCNN_ZOO_TIMEOUT", "AGCNN_ZOO_DEADLINE"):
        monkeypatch.setenv(var, raw)
        with pytest.raises(zio.ConfigError, match=var) as info:
            download(url, io.BytesIO())
        assert isinstance(info.value, ValueError) and var in info.value.hint
        monkeypatch.delenv(var)


def test_offline_switch_refuses_the_network(served, monkeypatch):
    server, url, _ = served
    monkeypatch.setenv("AGCNN_ZOO_OFFLINE", "1")
    with pytest.raises(zio.OfflineError, match="AGCNN_ZOO_OFFLINE"):
        download(url, io.BytesIO())
    monkeypatch.delenv("AGCNN_ZOO_OFFLINE")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # only for the Hugging Face host
    download(url, io.BytesIO())
    with pytest.raises(zio.OfflineError):
        download(url, io.BytesIO(), huggingface=True)
    assert server.count("GET") == 1


# ----------------------------------------------------------------------------- the mirror

@pytest.fixture
def mirror(tmp_path, monkeypatch):
    isolate_env(tmp_path, monkeypatch)
    m = tmp_path / "mirror"
    (m / "host.example" / "a").mkdir(parents=True)
    (m / "host.example" / "b.bin").write_bytes(b"inside")
    (tmp_path / "secret.bin").write_bytes(b"outside the mirror")
    monkeypatch.setenv("AGCNN_ZOO_MIRROR", str(m))
    return m


def test_mirror_serves_its_files(mirror):
    out = io.BytesIO()
    download("https://host.example/b.bin", out)
    assert out.getvalue() == b"inside"


@pytest.mark.parametrize("url", [
    "https://host.example/a/../b.bin",          # stays inside, but '..' is refused as such
    "https://host.example/%2e%2e/b.bin",        # the same, percent-encoded
    "https://host.example/../../secret.bin",    # would leave the mirror
    "https://host.example/a/./../b.bin",
])
def test_mirror_refuses_dot_segments_in_the_path(mirror, url):
    out = io.BytesIO()
    with pytest.raises(zio.MirrorError, match="outside the mirror"):
        download(url, out)
    assert out.getvalue() == b""


@pytest.mark.parametrize("url", ["https://../secret.bin", "https://./host.example/b.bin",
                                 "https://user@host.example/b.bin", "https://host..example/b.bin",
                                 "https:///b.bin"])
def test_mirror_refuses_odd_hosts(mirror, url):
    with pytest.raises(zio.MirrorError, match="not a plain host name"):
        mirror_path(mirror, url)


def test_mirror_refuses_a_symlink_leading_out(mirror, tmp_path):
    (mirror / "host.example" / "link.bin").symlink_to(tmp_path / "secret.bin")
    out = io.BytesIO()
    with pytest.raises(zio.MirrorError, match="outside the mirror"):
        download("https://host.example/link.bin", out)
    assert out.getvalue() == b""


# ----------------------------------------------------------------------------- files

def test_atomic_write_is_0644_whatever_the_umask_and_leaves_no_temp(tmp_path):
    old = os.umask(0o077)
    try:
        zio.atomic_write_bytes(tmp_path / "d" / "x.json", b"{}")
    finally:
        os.umask(old)
    assert (tmp_path / "d" / "x.json").stat().st_mode & 0o777 == 0o644
    assert os.listdir(tmp_path / "d") == ["x.json"]


def test_atomic_write_errors_become_cache_errors(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    with pytest.raises(zio.CachePathError) as info:
        zio.atomic_write_bytes(blocker / "x.bin", b"x")
    assert info.value.hint
    # disk full: the OS refuses the new file
    def full(path, flags, mode=0o777, *a, **k):
        raise OSError(28, "No space left on device", path)
    monkeypatch.setattr(os, "open", full)
    with pytest.raises(zio.DiskFullError, match="no space") as info:
        zio.atomic_write_bytes(tmp_path / "y.bin", b"x")
    assert "space" in info.value.hint


def test_stale_parts_are_removed_only_when_ours(tmp_path):
    target = tmp_path / "w.safetensors"
    ours = tmp_path / ".w.safetensors.converted-0123456789abcdef.part"
    ours.write_bytes(b"left by a killed process")
    other = tmp_path / ".w.safetensors.part"          # not our pattern
    someone = tmp_path / ".x.safetensors.converted-0123456789abcdef.part"  # another target
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    link = tmp_path / ".w.safetensors.source-fedcba9876543210.part"
    link.symlink_to(victim)
    for p in (other, someone):
        p.write_bytes(b"x")
    with zio.file_lock(target):
        pass
    assert not ours.exists()
    assert other.exists() and someone.exists() and link.is_symlink() and victim.read_bytes() == b"keep me"


def test_a_lock_folder_removed_just_after_it_was_made_is_made_again(tmp_path, monkeypatch):
    """A holder that releases its lock removes the then empty ``.locks`` folder; when that
    happens between a waiter's ensure_dir and its open, the waiter makes the folder again (it
    used to fail with a CacheError: four processes loading one weight at once hit this)."""
    from agcnn_zoo.io import locks
    made = []

    def made_then_removed(folder, what="cache"):
        made.append(folder)
        folder = zio.ensure_dir(folder, what)
        if len(made) == 1:
            os.rmdir(folder)  # the releasing holder's rmdir, in the window
        return folder

    monkeypatch.setattr(locks, "ensure_dir", made_then_removed)
    target = tmp_path / "w.safetensors"
    with zio.file_lock(target):
        assert (tmp_path / locks.LOCKS_DIR / "w.safetensors.lock").is_file()
    assert len(made) == 2
    assert os.listdir(tmp_path) == []  # released: nothing left behind


def test_safe_remove_never_deletes_through_a_symlink_or_outside_its_root(tmp_path):
    root = tmp_path / "cache"
    root.mkdir()
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    (root / "link").symlink_to(victim)
    assert not zio.safe_remove(root / "link", root)
    assert not zio.safe_remove(root / ".." / "victim", root)
    assert not zio.safe_remove(victim, root)
    assert victim.read_bytes() == b"keep me" and (root / "link").is_symlink()
    (root / "mine").write_bytes(b"x")
    assert zio.safe_remove(root / "mine", root) and not (root / "mine").exists()


def test_a_fifo_and_a_sparse_giant_are_refused_without_reading(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(zio.UnsafeFileError, match="not a regular file"):
        zio.read_checked(fifo, size=10)  # would block forever if it were opened and read
    sparse = tmp_path / "sparse"
    with open(sparse, "wb") as f:
        f.truncate(2 << 30)
    start = time.monotonic()
    with pytest.raises(zio.IntegrityError, match="size mismatch"):
        zio.read_checked(sparse, size=1000)
    with pytest.raises(zio.UnsafeFileError, match="not read"):
        zio.read_checked(sparse, max_size=1 << 20)
    assert time.monotonic() - start < 1
