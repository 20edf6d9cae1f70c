"""Host kind ``package``: a small safetensors file shipped inside the installed package.

``{"type": "package", "path": "<file name>"}`` reads ``WEIGHTS_DIR/<file name>``
(``agcnn_zoo/weights/``, package data carried by wheels). Such files are at most
:data:`MAX_BYTES` (512 KB); the record must pin their sha256 and size, which are checked on every
load as for any other host. The cache logic never writes or deletes them.
Tests point :data:`WEIGHTS_DIR` at another folder with monkeypatch. A file on this machine:
:func:`read` hands its verified bytes on, so a load reads and hashes them once.
"""
from __future__ import annotations

from pathlib import Path

from ..pin import read_in_place

#: the folder of embedded weights (read at call time: tests may replace it)
WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights"
#: the largest embedded weight file accepted
MAX_BYTES = 512 * 1024


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


def read(record, host) -> bytes:
    """The file's bytes, verified against the record's pin (type and size checked first)."""
    path = path_of(host)
    return read_in_place(
        record, path, MAX_BYTES, what="package weights",
        size_hint="publish a file this large on a download host instead",
        missing="not shipped in this installation of agcnn-zoo",
        missing_hint=restore_hint(path) + "; or let the next host deliver it",
        modified_hint="the installed package file was modified: " + restore_hint(path))


def fetch(record, host, target: Path, *, progress: bool = False) -> Path:
    read(record, host)
    return path_of(host)
