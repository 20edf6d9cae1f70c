"""Host kind ``original``: the authors' ``model.pth`` at a pinned https URL, converted here.

The source is streamed (size-capped at its pinned size, see :func:`agcnn_zoo.io.download`),
checked against its own sha256 or git blob id, converted with
:func:`agcnn_zoo.hub.convert.convert_checkpoint_bytes` and checked against the record's sha256.

Records without a pinned sha256 (the CIFAR alpha_F-p4m weight: its upstream file is pinned
only by its git blob id, and it is not available offline, so the sha256 of our converted file
cannot be computed and pinned here). Nothing recorded in the cache is ever trusted for them:

* the verified source is kept in the cache (``<stem>-blob<id>.source.pth``);
* :func:`derive` checks that source against the manifest's git blob id (size and type checked
  before reading) on every load, converts it again (the conversion is deterministic) and only
  the bytes of that conversion are used; a cached converted file whose bytes differ from them
  is removed and reported (:class:`IntegrityError`);
* the sha256 computed this way is shown in an :class:`UnpinnedWeightsWarning` (and pinned in
  the manifest by ``publish``), so that a maintainer can pin it.
"""
from __future__ import annotations

import urllib.parse
import warnings
from pathlib import Path
from typing import Optional, Tuple

from ...io.download import download
from ...io.errors import DownloadError, IntegrityError, UnsafeFileError
from ...io.files import (atomic_write_bytes, atomic_writer, check_regular_file, create_exclusive,
                         git_blob_sha1_file, remove_stale_parts, sha256_bytes, sha256_file,
                         temp_name)
from ...io.locks import file_lock
from ..cache import cached_source_path, discard, require_regular_entry
from ..convert import CheckpointError, convert_checkpoint_bytes
from ..errors import UnpinnedWeightsWarning
from ..pin import Pin
from ..records import OriginalHost, WeightRecord
#: the largest source checkpoint downloaded when the manifest pins no size
MAX_SOURCE_BYTES = 2 << 30


def verify_source(path: Path, host: OriginalHost, url: str) -> None:
    """Raise :class:`IntegrityError` unless ``path`` is the pinned source."""
    size = check_regular_file(path, max_size=MAX_SOURCE_BYTES)
    if host.size is not None and size != host.size:
        raise IntegrityError(url, host.size, size, what="size")
    if host.sha256:
        actual = sha256_file(path)
        if actual != host.sha256:
            raise IntegrityError(url, host.sha256, actual)
    elif host.git_blob_sha1:
        actual = git_blob_sha1_file(path)
        if actual != host.git_blob_sha1:
            raise IntegrityError(url, host.git_blob_sha1, actual, what="git blob id")
    else:  # parse_host refuses this; kept as a guard
        raise IntegrityError(url, "a sha256 or git_blob_sha1 in the manifest", "none", what="pin")


def _convert(record: WeightRecord, source: Path, url: str) -> bytes:
    try:
        return convert_checkpoint_bytes(source, record.model_name)
    except CheckpointError as e:
        raise IntegrityError(url, f"a checkpoint that fits {record.model_name}", str(e),
                             what="content") from None


def _download_source(host: OriginalHost, dest: Path, progress: bool, desc: str) -> None:
    """Stream the source into ``dest`` (atomically) and verify it there."""
    with atomic_writer(dest, "source") as out:
        download(host.url, out, expected_size=host.size, max_size=host.size or MAX_SOURCE_BYTES,
                 progress=progress, desc=desc)
        out.flush()
        verify_source(Path(out.name), host, host.url)


def fetch(record: WeightRecord, host: OriginalHost, target: Path, *, progress: bool = False) -> Path:
    if not record.has_sha256:
        path, _ = derive(record, host, target, progress=progress, download_ok=True)
        return path
    with file_lock(target):
        if require_regular_entry(target):  # another process produced it while we waited
            return target
        with atomic_writer(target, "converted") as out:
            src_tmp = temp_name(target, "source")
            try:
                with create_exclusive(src_tmp) as s:
                    download(host.url, s, expected_size=host.size,
                             max_size=host.size or MAX_SOURCE_BYTES, progress=progress,
                             desc=record.weight_id)
                verify_source(src_tmp, host, host.url)
                data = _convert(record, src_tmp, host.url)
            finally:
                src_tmp.unlink(missing_ok=True)
            out.write(Pin.of(record).check(data, target))
    return target


def derive(record: WeightRecord, host: Optional[OriginalHost], target: Path, *,
           progress: bool = False, download_ok: bool = True) -> Tuple[Path, bytes]:
    """(path, bytes) of an unpinned record's safetensors file, derived from its source
    verified by git blob id just now (see the module docstring). Downloads the source when the
    cache lacks a valid one (and ``download_ok``)."""
    host = host or next(h for h in record.hosts if isinstance(h, OriginalHost))
    source = cached_source_path(record, host)
    with file_lock(target):
        remove_stale_parts(source)  # what a killed download of the source left
        have = False
        try:
            have = require_regular_entry(source)
            if have:
                verify_source(source, host, str(source))
        except (IntegrityError, UnsafeFileError):
            if discard(source) or not source.exists():
                have = False
            else:
                raise
            if not download_ok:
                raise
        if not have:
            if not download_ok:
                raise DownloadError(host.url, "the verified source is not cached")
            _download_source(host, source, progress, record.weight_id)
        data = _convert(record, source, host.url)
        sha = sha256_bytes(data)
        if require_regular_entry(target):
            with open(target, "rb") as f:
                cached = f.read(len(data) + 1)
            if cached != data:
                discard(target)
                raise IntegrityError(target, sha, sha256_bytes(cached),
                                     hint="the cached file is not what its verified source "
                                          "converts to; it was removed, retry")
        else:
            atomic_write_bytes(target, data, what="cache")
    warnings.warn(f"{record.weight_id}: the manifest pins no sha256 for {record.file}; its source "
                  f"was verified by git blob id {host.git_blob_sha1} and converted again: sha256 "
                  f"{sha} ({len(data)} bytes). Pin these in the manifest.",
                  UnpinnedWeightsWarning, stacklevel=4)
    return target, data


def cached(record, host) -> Optional[Path]:
    return None


def hint_line(record: WeightRecord, host: OriginalHost) -> Optional[str]:
    rel = urllib.parse.urlsplit(host.url)
    pin = f"sha256 {host.sha256}" if host.sha256 else f"git blob {host.git_blob_sha1}"
    return (f"  download {host.url} ({pin}) to <dir>/{rel.netloc}{rel.path} and "
            f"set AGCNN_ZOO_MIRROR=<dir>, or")
