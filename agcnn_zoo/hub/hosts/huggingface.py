"""Host kind ``huggingface``: the file at the pinned 40-hex revision
(``<HF_ENDPOINT>/<repo_id>/resolve/<revision>/<filename>``), downloaded into our cache by the
project's own bounded downloader (:mod:`agcnn_zoo.io.download`: at most the pinned size,
``AGCNN_ZOO_TIMEOUT`` a read, ``AGCNN_ZOO_DEADLINE`` in all) and checked against the record's
sha256 and size. A copy already in the Hugging Face cache (``huggingface-cli download``, say) is
used first and checked on every load as well; nothing is written there. Public repositories
only: no token is sent (it would follow the Hub's redirect to its file servers).

With ``AGCNN_ZOO_MIRROR`` set, the file is read from
``<mirror>/huggingface.co/<repo_id>/resolve/<revision>/<filename>`` instead.
``AGCNN_ZOO_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``: only the caches are looked at. A host whose
repo id or revision is malformed fails alone; the next host is tried.
"""
from __future__ import annotations

import os
import urllib.parse
from pathlib import Path
from typing import Optional

from ...io import env
from ...io.download import download
from ...io.errors import DownloadError, OfflineError
from ...io.files import atomic_writer
from ...io.locks import file_lock
from ..cache import hf_cache_dir, hf_endpoint, require_regular_entry
from ..pin import MAX_WEIGHTS_BYTES, Pin
from ..records import HuggingFaceHost, WeightRecord

DEFAULT_HOST = "huggingface.co"


def filename(record: WeightRecord, host: HuggingFaceHost) -> str:
    return host.filename or os.path.basename(record.file)


def url(host: HuggingFaceHost, name: str, endpoint: Optional[str] = None) -> str:
    base = endpoint or hf_endpoint() or f"https://{DEFAULT_HOST}"
    return f"{base}/{host.repo_id}/resolve/{host.revision}/{urllib.parse.quote(name)}"


def _check_usable(record: WeightRecord, host: HuggingFaceHost) -> None:
    if host.problem:
        raise DownloadError(host.describe(), host.problem,
                            hint="fix the repo_id (ORG/NAME) and revision (40 hex digits) of "
                                 "this host in the manifest")
    if not record.sha256:
        raise DownloadError(host.describe(), "the manifest pins no sha256 to check a Hugging "
                                             "Face file against",
                            hint="pin the file's sha256 and size in the manifest")


def cached(record: WeightRecord, host: HuggingFaceHost) -> Optional[Path]:
    """The file in the Hugging Face cache at the pinned revision: a filesystem lookup only."""
    if host.problem or not record.sha256:
        return None
    from huggingface_hub import try_to_load_from_cache
    try:
        found = try_to_load_from_cache(host.repo_id, filename(record, host),
                                       cache_dir=hf_cache_dir(), revision=host.revision)
    except Exception:  # a malformed id or a broken cache: not cached
        return None
    return Path(found) if isinstance(found, str) and os.path.isfile(found) else None


def _verify(path: Path, record: WeightRecord) -> None:
    Pin.of(record).read(path, MAX_WEIGHTS_BYTES)


def fetch(record: WeightRecord, host: HuggingFaceHost, target: Path, *,
          progress: bool = False) -> Path:
    _check_usable(record, host)
    name = filename(record, host)
    mirror = env.mirror() is not None
    # the mirror is keyed by origin: laid out under huggingface.co whatever HF_ENDPOINT says
    where = url(host, name, f"https://{DEFAULT_HOST}" if mirror else None)
    if not mirror and env.offline(huggingface=True):
        raise OfflineError(where, "offline mode (AGCNN_ZOO_OFFLINE=1 or HF_HUB_OFFLINE=1) and "
                                  f"not in the Hugging Face cache {hf_cache_dir()}")
    with file_lock(target):
        if require_regular_entry(target):
            return target
        # our own bounded download, not huggingface_hub's: that one writes whatever a server
        # sends (seen: 11 GB for a 100 KB pin) and knows no overall deadline
        with atomic_writer(target, "download") as out:
            download(where, out, expected_size=record.size,
                     max_size=record.size or MAX_WEIGHTS_BYTES, progress=progress,
                     desc=record.weight_id, huggingface=True)
            out.flush()
            _verify(Path(out.name), record)
    return target


def hint_line(record, host) -> Optional[str]:
    return None
