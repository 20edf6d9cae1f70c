"""Where verified weights are kept, and the only code that deletes anything there.

``<cache root>/weights`` (the root is ``AGCNN_ZOO_CACHE``, default ``$XDG_CACHE_HOME/agcnn_zoo``,
see :func:`agcnn_zoo.io.env.cache_root`) holds our safetensors files
(``<stem>-<sha256[:10]>.safetensors``) and, for a weight pinned only by its source's git blob
id, that verified source (``<stem>-blob<id[:10]>.source.pth``). The Hugging Face cache moves to
``$AGCNN_ZOO_CACHE/huggingface`` when the variable is set.

Deleting: :func:`discard` removes a bad file only if it is a regular file inside one of the two
caches (folder resolved, containment checked); it never follows a symlink to delete its target,
except a Hugging Face snapshot link whose blob lies inside the Hugging Face cache. A record is
validated before any path is built from it, so a path never leaves the cache.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Optional

from ..io import env
from ..io.env import cache_root
from ..io.errors import UnsafeFileError
from ..io.files import as_cache_error, is_within, safe_remove
from .records import OriginalHost, WeightRecord


def cache_dir() -> Path:
    """Our cache of converted / verified safetensors files: ``<cache root>/weights``."""
    return cache_root() / "weights"


def hf_cache_dir() -> str:
    """Where Hugging Face files are cached (huggingface_hub's layout)."""
    configured = env.hf_cache_dir()
    if configured is not None:
        return configured
    from huggingface_hub import constants
    return constants.HF_HUB_CACHE


def hf_endpoint() -> Optional[str]:
    return env.hf_endpoint()


def _inside(path: Path, root: Path) -> Path:
    if not is_within(path, root):
        raise UnsafeFileError(path, f"would lie outside the cache {root}; refused")
    return path


def cached_weights_path(record: WeightRecord) -> Path:
    """Where the verified safetensors of ``record`` lives in our cache: the hash prefix in the
    name lets a new manifest version sit beside an old one (as torch.hub's ``name-<hash>``)."""
    stem, suffix = os.path.splitext(record.file)
    tag = record.sha256[:10] if record.sha256 else "blob" + str(record.git_blob_sha1)[:10]
    root = cache_dir()
    return _inside(root / f"{stem}-{tag}{suffix or '.safetensors'}", root)


def cached_source_path(record: WeightRecord, host: OriginalHost) -> Path:
    """Where the verified source checkpoint of an unpinned record is kept."""
    stem = os.path.splitext(record.file)[0]
    pin = host.git_blob_sha1 or host.sha256 or ""
    root = cache_dir()
    return _inside(root / f"{stem}-blob{pin[:10]}.source.pth", root)


def entry_state(path: Path) -> Optional[str]:
    """None if nothing is at ``path``, "file" for a regular file, else what it is."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None  # nothing there (a parent that is a file is reported when writing)
    except OSError as e:
        raise as_cache_error(e, path) from e
    if stat.S_ISREG(st.st_mode):
        return "file"
    return "symlink" if stat.S_ISLNK(st.st_mode) else "not a regular file"


def require_regular_entry(path: Path) -> bool:
    """Whether our cache holds a regular file at ``path``; anything else there (a symlink, a
    FIFO, a folder) is refused without being read or removed."""
    state = entry_state(path)
    if state is None:
        return False
    if state != "file":
        raise UnsafeFileError(path, f"cache entry is a {state}; it is neither read nor removed",
                              hint=f"remove {path} by hand (agcnn-zoo only deletes regular files "
                                   f"it wrote); it will be downloaded again")
    return True


def is_cache_path(path: Path) -> bool:
    return is_within(path, cache_dir()) or is_within(path, Path(hf_cache_dir()))


def discard(path: Path) -> bool:
    """Remove a bad cached file (see the module docstring); returns whether it was removed."""
    path = Path(path)
    ours, hf = cache_dir(), Path(hf_cache_dir())
    if is_within(path, ours) and not is_within(path, hf):
        return safe_remove(path, ours)
    if is_within(path, hf):
        removed = False
        if os.path.islink(path):
            blob = Path(os.path.realpath(path))
            removed = safe_remove(blob, hf)  # the blob itself, only if inside the HF cache
            removed = safe_remove(path, hf, allow_symlink=True) or removed
            return removed
        return safe_remove(path, hf)
    return False


def is_within_ours(path: Path) -> bool:
    """Inside our own cache folder but not in the Hugging Face cache (whose entries are links)."""
    return is_within(path, cache_dir()) and not is_within(path, Path(hf_cache_dir()))
