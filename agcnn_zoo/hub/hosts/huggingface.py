"""Host kind ``huggingface``: ``hf_hub_download`` of the file at the pinned 40-hex revision,
into the Hugging Face cache; the file is then checked against the record's sha256 and size.

With ``AGCNN_ZOO_MIRROR`` set, the file is read from
``<mirror>/huggingface.co/<repo_id>/resolve/<revision>/<filename>`` into our cache instead.
``AGCNN_ZOO_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``: only the Hugging Face cache is looked at. A
host whose repo id or revision is malformed fails alone; the next host is tried.
"""
from __future__ import annotations

import os
import urllib.parse
from pathlib import Path
from typing import Optional

from tqdm.auto import tqdm

from ...io import env
from ...io.download import download
from ...io.errors import DownloadError, IntegrityError, OfflineError
from ...io.files import atomic_writer
from ...io.locks import file_lock
from ..cache import discard, hf_cache_dir, hf_endpoint, require_regular_entry
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


class _QuietBar(tqdm):
    def __init__(self, *args, **kwargs):
        kwargs.pop("name", None)
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


def _verify(path: Path, record: WeightRecord) -> None:
    Pin.of(record).read(path, MAX_WEIGHTS_BYTES)


def fetch(record: WeightRecord, host: HuggingFaceHost, target: Path, *,
          progress: bool = False) -> Path:
    _check_usable(record, host)
    name = filename(record, host)
    if env.mirror() is not None:
        # laid out under huggingface.co whatever HF_ENDPOINT says: the mirror is keyed by origin
        origin = url(host, name, f"https://{DEFAULT_HOST}")
        with file_lock(target):
            if require_regular_entry(target):
                return target
            with atomic_writer(target, "mirror") as out:
                download(origin, out, expected_size=record.size, progress=progress,
                         desc=record.weight_id)
                out.flush()
                _verify(Path(out.name), record)
        return target
    where = url(host, name)
    if env.offline(huggingface=True):
        raise OfflineError(where, "offline mode (AGCNN_ZOO_OFFLINE=1 or HF_HUB_OFFLINE=1) and "
                                  f"not in the Hugging Face cache {hf_cache_dir()}")
    from huggingface_hub import hf_hub_download
    try:
        path = Path(hf_hub_download(host.repo_id, name, revision=host.revision,
                                    endpoint=hf_endpoint(), cache_dir=hf_cache_dir(),
                                    etag_timeout=env.timeout(),
                                    tqdm_class=None if env.show_progress(progress) else _QuietBar))
    except Exception as e:  # huggingface_hub / httpx errors of every kind
        raise DownloadError(where, f"{type(e).__name__}: {e}") from None
    try:
        _verify(path, record)
    except IntegrityError:
        discard(path)
        raise
    return path


def hint_line(record, host) -> Optional[str]:
    return None
