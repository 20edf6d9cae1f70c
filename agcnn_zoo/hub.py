"""Fetch, verify and cache the published weights.

``fetch_weights(name)`` returns a local safetensors file; ``load_state_dict(name)`` reads it once,
checks sha256 and size on those very bytes and only then parses them. The hosts of a manifest
record are tried in order:

* ``huggingface``: ``hf_hub_download`` of the file at the pinned 40-hex revision, into the
  Hugging Face cache; the file is then checked against the manifest's sha256 and size.
* ``original``: the authors' ``model.pth`` at a pinned URL, checked against its own sha256 (or
  git blob id), converted with :func:`agcnn_zoo.convert.convert_checkpoint` and checked against
  the manifest's sha256 of our safetensors file.

Caches are looked at before any network use: our converted file first, then the Hugging Face
cache (a filesystem lookup, no request). A cached file is hashed on every load; a corrupted one
is deleted and :class:`IntegrityError` raised, so the next call downloads it again.

Environment (read at call time, not at import):

``AGCNN_ZOO_CACHE``
    our cache folder (default ``torch.hub.get_dir()/agcnn_zoo``); when set, the Hugging Face
    cache moves to ``$AGCNN_ZOO_CACHE/huggingface`` too.
``AGCNN_ZOO_MIRROR``
    a folder laid out as ``<dir>/<host>/<path>``: ``https://<host>/<path>`` (and a Hugging Face
    file, as ``<dir>/huggingface.co/<repo_id>/resolve/<revision>/<filename>``) is read from
    there. While it is set the network is never used: a file missing from the mirror is a
    failure of that host, not a fallback to the internet (an air-gapped site wants to know).
``AGCNN_ZOO_TIMEOUT``
    seconds before a silent connection is given up (default 30).
``HF_ENDPOINT``, ``HF_HUB_CACHE``, ``HF_HOME``
    as in huggingface_hub, but honoured when set after import.
``HF_HUB_OFFLINE=1``
    no network for any host: caches and the mirror only.

Every failure is a :class:`WeightsError`; when no host delivers, :class:`WeightsUnavailableError`
lists each host's own error (:class:`IntegrityError`, :class:`DownloadError` and its subclasses
:class:`UnexpectedContentError` and :class:`TruncatedDownloadError`) and says what to do.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Dict, Iterator, List, NamedTuple, Optional, Tuple, Union

from tqdm.auto import tqdm

__all__ = ["fetch_weights", "load_state_dict", "verify_file", "cache_dir", "hf_cache_dir",
           "cached_weights_path", "WeightsError", "IntegrityError", "DownloadError",
           "UnexpectedContentError", "TruncatedDownloadError", "WeightsUnavailableError",
           "UnpinnedWeightsWarning", "HostFailure", "DEFAULT_TIMEOUT"]

DEFAULT_TIMEOUT = 30.0
_CHUNK = 1 << 16
_HF_DEFAULT_HOST = "huggingface.co"


# ----------------------------------------------------------------------------- errors

class WeightsError(RuntimeError):
    """Base of every error about getting or checking published weights."""


class IntegrityError(WeightsError):
    """Bytes that are not the ones the manifest pins (sha256, git blob id or size)."""

    def __init__(self, file: Union[str, Path], expected: object, actual: object, what: str = "sha256"):
        self.file, self.expected, self.actual, self.what = str(file), expected, actual, what
        super().__init__(f"{file}: {what} mismatch: expected {expected}, got {actual}")


class DownloadError(WeightsError):
    """A host that did not deliver: network error, HTTP error, not in the mirror, offline."""

    def __init__(self, url: str, reason: str, status: Optional[int] = None):
        self.url, self.reason, self.status = url, reason, status
        super().__init__(f"{url}: {reason}")


class UnexpectedContentError(DownloadError):
    """The host answered with something else than the file (typically an HTML page)."""


class TruncatedDownloadError(DownloadError):
    """The connection ended before the announced number of bytes arrived."""

    def __init__(self, url: str, expected: int, received: int):
        self.expected, self.received = expected, received
        super().__init__(url, f"truncated download: {received} of {expected} bytes received")


class HostFailure(NamedTuple):
    host: str      # a one-line description of the host
    error: Exception


class WeightsUnavailableError(WeightsError):
    """No host delivered verified weights; ``failures`` holds each host's own error."""

    def __init__(self, name: str, failures: List[HostFailure], hint: str = ""):
        self.name, self.failures = name, list(failures)
        lines = [f"could not get verified weights for {name!r}; tried:"]
        lines += [f"  - {f.host}: {type(f.error).__name__}: {_without_url(f.error, f.host)}"
                  for f in self.failures]
        if hint:
            lines.append(hint)
        super().__init__("\n".join(lines))


def _without_url(error: Exception, host: str) -> str:
    """The error's message without the URL the host line already shows."""
    msg = str(error)
    for prefix in (getattr(error, "url", None), getattr(error, "file", None)):
        if prefix and prefix in host and msg.startswith(prefix + ": "):
            return msg[len(prefix) + 2:]
    return msg


class UnpinnedWeightsWarning(UserWarning):
    """A weight whose safetensors sha256 the manifest does not pin yet (checked via its source)."""


# ----------------------------------------------------------------------------- environment

def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _offline() -> bool:
    return _env_true("HF_HUB_OFFLINE")


def _timeout() -> float:
    raw = os.environ.get("AGCNN_ZOO_TIMEOUT")
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"AGCNN_ZOO_TIMEOUT must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"AGCNN_ZOO_TIMEOUT must be positive, got {raw!r}")
    return value


def _mirror() -> Optional[Path]:
    raw = os.environ.get("AGCNN_ZOO_MIRROR")
    return Path(raw).expanduser() if raw else None


def cache_dir() -> Path:
    """Our cache of converted / verified safetensors files."""
    env = os.environ.get("AGCNN_ZOO_CACHE")
    if env:
        return Path(env).expanduser()
    import torch.hub
    return Path(torch.hub.get_dir()) / "agcnn_zoo"


def hf_cache_dir() -> str:
    """Where Hugging Face files are cached (huggingface_hub's layout)."""
    env = os.environ.get("AGCNN_ZOO_CACHE")
    if env:
        return str(Path(env).expanduser() / "huggingface")
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    from huggingface_hub import constants
    return constants.HF_HUB_CACHE


def _hf_endpoint() -> Optional[str]:
    raw = os.environ.get("HF_ENDPOINT")
    return raw.rstrip("/") if raw else None


# ----------------------------------------------------------------------------- records, paths

def _record(name: str, record: Optional[dict]) -> dict:
    if record is None:
        from .manifest import manifest_path, weight_record
        record = weight_record(name)
        if record is None:
            raise WeightsError(f"{name!r} has no published weights in the manifest ({manifest_path()})")
    for field in ("file", "hosts"):
        if field not in record:
            raise ValueError(f"weights record of {name!r} lacks {field!r}")
    if not record.get("sha256") and not record.get("git_blob_sha1"):
        raise ValueError(f"weights record of {name!r} has neither sha256 nor git_blob_sha1")
    return record


def cached_weights_path(name: str, record: Optional[dict] = None) -> Path:
    """Where the verified safetensors of ``name`` lives in our cache: the hash prefix in the
    name lets a new manifest version sit beside an old one (as torch.hub's ``name-<hash>``)."""
    record = _record(name, record)
    stem, suffix = os.path.splitext(os.path.basename(record["file"]))
    tag = record["sha256"][:10] if record.get("sha256") else "blob" + record["git_blob_sha1"][:10]
    return cache_dir() / f"{stem}-{tag}{suffix or '.safetensors'}"


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256.json")


def _expected_digest(record: dict, path: Path) -> Tuple[str, Optional[int]]:
    """(sha256, size) a file must have: the manifest's, or for an unpinned weight the one
    computed when its verified source was converted (recorded next to the file)."""
    if record.get("sha256"):
        return record["sha256"], record.get("size")
    side = _sidecar(path)
    try:
        info = json.loads(side.read_text(encoding="utf-8"))
        return info["sha256"], info.get("size")
    except (OSError, ValueError, KeyError):
        raise IntegrityError(path, "a sha256 recorded at conversion (" + side.name + ")",
                             "none recorded") from None


def _git_blob_sha1(path: Path) -> str:
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _sha256(path: Path) -> str:
    from .convert import sha256_file
    return sha256_file(path)


def verify_file(path: Union[str, Path], sha256: str, size: Optional[int] = None) -> None:
    """Raise :class:`IntegrityError` unless the file has this size and sha256."""
    path = Path(path)
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise IntegrityError(path, size, actual_size, what="size")
    actual = _sha256(path)
    if actual != sha256:
        raise IntegrityError(path, sha256, actual)


def _verify_source(path: Path, host: dict, url: str) -> None:
    size = path.stat().st_size
    if host.get("size") is not None and size != host["size"]:
        raise IntegrityError(url, host["size"], size, what="size")
    if host.get("sha256"):
        actual = _sha256(path)
        if actual != host["sha256"]:
            raise IntegrityError(url, host["sha256"], actual)
    elif host.get("git_blob_sha1"):
        actual = _git_blob_sha1(path)
        if actual != host["git_blob_sha1"]:
            raise IntegrityError(url, host["git_blob_sha1"], actual, what="git blob id")
    else:
        raise IntegrityError(url, "a sha256 or git_blob_sha1 in the manifest", "none", what="pin")


def _discard(path: Path) -> None:
    """Remove a bad file; for a Hugging Face snapshot link, the blob it points to as well."""
    path = Path(path)
    if path.is_symlink():
        Path(os.path.realpath(path)).unlink(missing_ok=True)
    path.unlink(missing_ok=True)
    _sidecar(path).unlink(missing_ok=True)


@contextmanager
def _file_lock(target: Path) -> Iterator[None]:
    """Exclusive inter-process lock for producing ``target`` (fcntl; a no-op without it:
    atomic renames still keep the file whole, only the work may be done twice)."""
    lock_dir = target.parent / ".locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with open(lock_dir / (target.name + ".lock"), "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


# ----------------------------------------------------------------------------- transfers

def _looks_like_html(head: bytes) -> bool:
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:64]
    # '<' then text: a binary header may start with 0x3c but has control bytes right after
    return text[:1] == b"<" and all(b >= 32 or b in b"\t\r\n" for b in text)


def _mirror_path(mirror: Path, url: str) -> Path:
    parts = urllib.parse.urlsplit(url)
    rel = urllib.parse.unquote(parts.path).lstrip("/")
    candidate = (mirror / parts.netloc / rel).resolve()
    if not str(candidate).startswith(str(mirror.resolve()) + os.sep):
        raise DownloadError(url, f"refusing a path outside the mirror {mirror}")
    return candidate


def _bar(total: Optional[int], desc: str, progress: bool):
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                disable=not progress, leave=False)


def _copy_from_mirror(src: Path, url: str, out: BinaryIO, progress: bool, desc: str) -> None:
    with open(src, "rb") as f, _bar(src.stat().st_size, desc, progress) as bar:
        first = True
        while chunk := f.read(_CHUNK):
            if first and _looks_like_html(chunk):
                raise UnexpectedContentError(url, f"the mirror holds an HTML page, not the file ({src})")
            first = False
            out.write(chunk)
            bar.update(len(chunk))


def _download(url: str, out: BinaryIO, *, progress: bool, desc: str) -> None:
    """Stream ``url`` into ``out`` (from the mirror when one is set); refuse HTML pages and
    short bodies."""
    mirror = _mirror()
    if mirror is not None:
        src = _mirror_path(mirror, url)
        if not src.is_file():
            raise DownloadError(url, f"not in the mirror (looked for {src}); the network is not "
                                     f"used while AGCNN_ZOO_MIRROR is set")
        _copy_from_mirror(src, url, out, progress, desc)
        return
    if _offline():
        raise DownloadError(url, "offline mode (HF_HUB_OFFLINE=1): the network is not used")
    from . import __version__
    request = urllib.request.Request(url, headers={"User-Agent": f"agcnn-zoo/{__version__}",
                                                   "Accept-Encoding": "identity"})
    try:
        response = urllib.request.urlopen(request, timeout=_timeout())
    except urllib.error.HTTPError as e:
        e.close()
        raise DownloadError(url, f"HTTP {e.code} {e.reason}", status=e.code) from None
    except urllib.error.URLError as e:
        raise DownloadError(url, f"network error: {e.reason}") from None
    except (OSError, http.client.HTTPException) as e:  # timeouts, resets, bad status lines
        raise DownloadError(url, f"network error: {e}") from None
    with response:
        ctype = response.headers.get("Content-Type", "")
        if "text/html" in ctype.lower():
            raise UnexpectedContentError(url, f"served an HTML page (Content-Type: {ctype}) "
                                              f"instead of the file", status=response.status)
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        received, first = 0, True
        with _bar(length, desc, progress) as bar:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except http.client.IncompleteRead as e:
                    raise TruncatedDownloadError(url, length or -1, received + len(e.partial)) from None
                except (OSError, http.client.HTTPException) as e:
                    raise DownloadError(url, f"connection lost after {received} bytes: {e}") from None
                if not chunk:
                    break
                if first and _looks_like_html(chunk):
                    raise UnexpectedContentError(url, "served an HTML page instead of the file "
                                                      f"(Content-Type: {ctype or 'none'})")
                first = False
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        if length is not None and received != length:
            raise TruncatedDownloadError(url, length, received)


def _publish_file(tmp: Path, target: Path) -> None:
    os.chmod(tmp, 0o644)  # temp files are created 0600; a cache is readable like any download
    os.replace(tmp, target)


def _temp_path(target: Path, suffix: str) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    return Path(tmp)


# ----------------------------------------------------------------------------- hosts

def _describe(host: dict) -> str:
    if host.get("type") == "huggingface":
        return (f"huggingface {host.get('repo_id')}@{str(host.get('revision'))[:12]} "
                f"({host.get('filename') or '?'})")
    if host.get("type") == "original":
        return f"original {host.get('url')}"
    return f"unknown host {host!r}"


def _hf_filename(record: dict, host: dict) -> str:
    return host.get("filename") or os.path.basename(record["file"])


def _hf_url(host: dict, filename: str) -> str:
    endpoint = _hf_endpoint() or f"https://{_HF_DEFAULT_HOST}"
    return f"{endpoint}/{host['repo_id']}/resolve/{host['revision']}/{urllib.parse.quote(filename)}"


def _hf_cached(record: dict, host: dict) -> Optional[Path]:
    """The file in the Hugging Face cache at the pinned revision: a filesystem lookup only."""
    from huggingface_hub import try_to_load_from_cache
    found = try_to_load_from_cache(host["repo_id"], _hf_filename(record, host),
                                   cache_dir=hf_cache_dir(), revision=host["revision"])
    return Path(found) if isinstance(found, str) and os.path.isfile(found) else None


class _QuietBar(tqdm):
    def __init__(self, *args, **kwargs):
        kwargs.pop("name", None)
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


def _fetch_huggingface(name: str, record: dict, host: dict, target: Path, progress: bool) -> Path:
    if not record.get("sha256"):
        raise DownloadError(_describe(host), "the manifest pins no sha256 to check a Hugging "
                                             "Face file against")
    filename = _hf_filename(record, host)
    url = _hf_url(host, filename)
    mirror = _mirror()
    if mirror is not None:  # a mirror of the hub: read it, verify, keep it in our cache
        # laid out under huggingface.co whatever HF_ENDPOINT says: the mirror is keyed by origin
        mirrored = _mirror_path(mirror, f"https://{_HF_DEFAULT_HOST}/{host['repo_id']}/resolve/"
                                        f"{host['revision']}/{filename}")
        if not mirrored.is_file():
            raise DownloadError(url, f"not in the mirror (looked for {mirrored}); the network is "
                                     f"not used while AGCNN_ZOO_MIRROR is set")
        return _install_verified(target, record, lambda out: _copy_from_mirror(
            mirrored, url, out, progress, name))
    if _offline():
        raise DownloadError(url, "offline mode (HF_HUB_OFFLINE=1) and not in the Hugging Face "
                                 f"cache {hf_cache_dir()}")
    from huggingface_hub import hf_hub_download
    try:
        path = Path(hf_hub_download(host["repo_id"], filename, revision=host["revision"],
                                    endpoint=_hf_endpoint(), cache_dir=hf_cache_dir(),
                                    etag_timeout=_timeout(),
                                    tqdm_class=None if progress else _QuietBar))
    except Exception as e:  # huggingface_hub / httpx errors of every kind
        raise DownloadError(url, f"{type(e).__name__}: {e}") from None
    try:
        verify_file(path, record["sha256"], record.get("size"))
    except IntegrityError:
        _discard(path)
        raise
    return path


def _install_verified(target: Path, record: dict, write) -> Path:
    """Write a safetensors file through ``write(out)`` into a temp file, check it against the
    manifest, and move it into place (under the lock)."""
    with _file_lock(target):
        if target.exists():
            return target
        tmp = _temp_path(target, ".part")
        try:
            with open(tmp, "wb") as out:
                write(out)
            verify_file(tmp, record["sha256"], record.get("size"))
            _publish_file(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    return target


def _fetch_original(name: str, record: dict, host: dict, target: Path, progress: bool) -> Path:
    from .convert import CheckpointError, convert_checkpoint
    url = host.get("url")
    if not url:
        raise DownloadError(_describe(host), "the host has no url")
    with _file_lock(target):
        if target.exists():  # another process produced it while we waited
            return target
        source = _temp_path(target, ".pth.part")
        converted = _temp_path(target, ".converted.part")
        try:
            with open(source, "wb") as out:
                _download(url, out, progress=progress, desc=name)
            _verify_source(source, host, url)
            try:
                sha = convert_checkpoint(source, converted, name)
            except CheckpointError as e:
                raise IntegrityError(url, f"a checkpoint that fits {name}", str(e),
                                     what="content") from None
            size = converted.stat().st_size
            if record.get("sha256"):
                if record.get("size") is not None and size != record["size"]:
                    raise IntegrityError(target, record["size"], size, what="size")
                if sha != record["sha256"]:
                    raise IntegrityError(target, record["sha256"], sha)
            else:
                # nothing pins our file yet: its source was checked by git blob id; pin what we
                # computed next to the file so that every later load is checked against it
                from .convert import atomic_write_bytes
                atomic_write_bytes(_sidecar(target), json.dumps(
                    {"sha256": sha, "size": size, "source": url,
                     "source_git_blob_sha1": host.get("git_blob_sha1")}, indent=2).encode())
                warnings.warn(f"{name}: the manifest pins no sha256 for {record['file']}; its source "
                              f"was verified by git blob id and the converted file has sha256 {sha} "
                              f"({size} bytes), recorded in {_sidecar(target)}",
                              UnpinnedWeightsWarning, stacklevel=3)
            _publish_file(converted, target)
        finally:
            source.unlink(missing_ok=True)
            converted.unlink(missing_ok=True)
    return target


def _hint(name: str, record: dict, target: Path) -> str:
    lines = [f"Nothing was cached (cache: {target.parent}). To fix: check the network, or"]
    for host in record["hosts"]:
        if host.get("type") == "original" and host.get("url"):
            rel = urllib.parse.urlsplit(host["url"])
            pin = (f"sha256 {host['sha256']}" if host.get("sha256")
                   else f"git blob {host.get('git_blob_sha1')}")
            lines.append(f"  download {host['url']} ({pin}) to <dir>/{rel.netloc}{rel.path} and "
                         f"set AGCNN_ZOO_MIRROR=<dir>, or")
    if record.get("sha256"):
        lines.append(f"  put the verified {record['file']} (sha256 {record['sha256']}) at {target}.")
    else:
        lines[-1] = lines[-1][:-len(", or")] + "."
    return "\n".join(lines)


# ----------------------------------------------------------------------------- public API

def fetch_weights(name: str, record: Optional[dict] = None, *, progress: bool = True) -> Path:
    """A local safetensors file of ``name``'s published weights, verified when it was written.

    Caches first (no request at all), then the record's hosts in order; a host that fails
    leaves nothing behind and the next one is tried. Raises :class:`WeightsUnavailableError`
    (with each host's error) when none delivers."""
    record = _record(name, record)
    target = cached_weights_path(name, record)
    if target.exists():
        return target
    hf_hosts = [h for h in record["hosts"] if h.get("type") == "huggingface"]
    for host in hf_hosts:
        found = _hf_cached(record, host)
        if found is not None:
            return found
    target.parent.mkdir(parents=True, exist_ok=True)
    failures: List[HostFailure] = []
    for host in record["hosts"]:
        try:
            if host.get("type") == "huggingface":
                return _fetch_huggingface(name, record, host, target, progress)
            if host.get("type") == "original":
                return _fetch_original(name, record, host, target, progress)
            raise DownloadError(_describe(host), f"unknown host type {host.get('type')!r}")
        except WeightsError as e:
            failures.append(HostFailure(_describe(host), e))
    raise WeightsUnavailableError(name, failures, _hint(name, record, target)) from (
        failures[-1].error if failures else None)


def load_state_dict(name: str, record: Optional[dict] = None, *,
                    progress: bool = True) -> Dict[str, "torch.Tensor"]:  # noqa: F821
    """``name``'s verified state dict: the file's bytes are read once, their size and sha256
    checked, and only those checked bytes parsed. A cached file that fails the check is
    deleted (so a retry downloads it again) and :class:`IntegrityError` raised."""
    record = _record(name, record)
    path = fetch_weights(name, record, progress=progress)
    data = path.read_bytes()
    try:
        expected, size = _expected_digest(record, path)
    except IntegrityError:
        _discard(path)
        raise
    if size is not None and len(data) != size:
        _discard(path)
        raise IntegrityError(path, size, len(data), what="size")
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        _discard(path)
        raise IntegrityError(path, expected, actual)
    from safetensors.torch import load
    try:
        return load(data)
    except Exception as e:  # the manifest pins a file that is not safetensors
        raise WeightsError(f"{path}: verified bytes are not a readable safetensors file: {e}") from e
