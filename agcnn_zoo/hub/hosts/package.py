"""Host kind ``package``: a small safetensors file shipped inside the installed package.

``{"type": "package", "path": "<file name>"}`` reads ``WEIGHTS_DIR/<file name>``
(``agcnn_zoo/weights/``, package data carried by wheels). Such files are at most
:data:`MAX_BYTES` (512 KB); the record must pin their sha256 and size, which are checked on every
load as for any other host. The cache logic never writes or deletes them (``OWNS_FILES``).
Tests point :data:`WEIGHTS_DIR` at another folder with monkeypatch.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

from ...io.errors import DownloadError, IntegrityError, UnsafeFileError
from ...io.files import read_checked

#: the folder of embedded weights (read at call time: tests may replace it)
WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights"
#: the largest embedded weight file accepted
MAX_BYTES = 512 * 1024
OWNS_FILES = False


def path_of(host) -> Path:
    return Path(WEIGHTS_DIR) / host.path


def restore_hint(path: Path) -> str:
    """How to get a shipped file back: from git in a checkout (an editable install reads the
    checkout, which pip does not rewrite), else by reinstalling the wheel."""
    root = Path(WEIGHTS_DIR).resolve().parents[1]
    if (root / ".git").exists():
        rel = path.resolve().relative_to(root) if path.resolve().is_relative_to(root) else path
        return (f"this is a git checkout (an editable install reads it, and pip does not restore "
                f"it): run `git -C {root} checkout -- {rel}`")
    return "reinstall it: pip install --force-reinstall --no-deps agcnn-zoo"


def read_verified(record, host) -> bytes:
    """The file's bytes after checking type and size (before reading) and sha256."""
    path = path_of(host)
    if not record.sha256 or record.size is None:
        raise IntegrityError(path, "a sha256 and size pinned in the manifest", "none",
                             what="pin", hint="package weights must pin sha256 and size")
    if record.size > MAX_BYTES:
        raise UnsafeFileError(path, f"the record pins {record.size} bytes; package weights are "
                                    f"at most {MAX_BYTES} bytes",
                              hint="publish a file this large on a download host instead")
    if not path.exists() and not path.is_symlink():
        raise DownloadError(str(path), "not shipped in this installation of agcnn-zoo",
                            hint=restore_hint(path) + "; or let the next host deliver it")
    data = read_checked(path, size=record.size, max_size=MAX_BYTES, follow_symlinks=False)
    actual = hashlib.sha256(data).hexdigest()
    if actual != record.sha256:
        raise IntegrityError(path, record.sha256, actual,
                             hint="the installed package file was modified: " + restore_hint(path))
    return data


def fetch(record, host, target: Path, *, progress: bool = False) -> Path:
    read_verified(record, host)
    return path_of(host)


def cached(record, host) -> Optional[Path]:
    return None


def hint_line(record, host) -> Optional[str]:
    return None
