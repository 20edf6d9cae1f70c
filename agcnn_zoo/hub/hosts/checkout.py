"""Host kind ``checkout``: a weight file in the repository folder laid out as the Hugging Face
repository it is published to (``hf/agcnn-zoo/`` at the root of a git clone or a torch.hub
checkout), for weights over the package's 512 KB limit (the trained CIFAR-10 weights, 5-11 MB).

``{"type": "checkout", "path": "<file name>"}`` reads ``<folder>/<file name>``, where the folder
is ``$AGCNN_ZOO_HF_CLONE`` when set (a clone of the Hugging Face repository, or any folder laid
out like it), else ``hf/agcnn-zoo`` beside the ``agcnn_zoo`` package that is running (present in
a clone or a torch.hub checkout, absent from an installed wheel: then the next host is tried).
Files are at most :data:`MAX_BYTES`; the record must pin sha256 and size, checked on every load as
for any other host. A file on this machine: :func:`read` hands its verified bytes on, and the
cache logic never writes or deletes it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ...io import env
from ...io.errors import DownloadError, IntegrityError, UnsafeFileError
from ..pin import read_in_place

#: the folder of a checkout, relative to the repository root: named as the Hugging Face repo
FOLDER = Path("hf") / "agcnn-zoo"
#: the repository root of the running package (read at call time: tests may replace it)
REPO_ROOT = Path(__file__).resolve().parents[3]
#: the variable naming a folder that stands in for ``REPO_ROOT / FOLDER``
CLONE_ENV = "AGCNN_ZOO_HF_CLONE"
#: the largest file of this host (Hugging Face takes any size; the repository keeps them small)
MAX_BYTES = 12 * 1024 * 1024


def folder() -> Path:
    return env.hf_clone() or Path(REPO_ROOT) / FOLDER


def path_of(host) -> Path:
    return folder() / host.path


def read(record, host) -> bytes:
    """The file's bytes, verified against the record's pin (type and size checked first)."""
    return read_in_place(
        record, path_of(host), MAX_BYTES, what="checkout weights",
        size_hint="publish a file this large on the Hugging Face host instead",
        missing=f"not in this checkout ({folder()})",
        missing_hint=f"run from a git clone of agcnn-zoo, set {CLONE_ENV} to a clone of its "
                     f"Hugging Face repository, or let the next host deliver it",
        modified_hint="the file in the checkout was modified: restore it (git checkout -- hf/) "
                      "or delete it to use the next host")


def fetch(record, host, target: Path, *, progress: bool = False) -> Path:
    read(record, host)
    return path_of(host)


def cached(record, host) -> Optional[Path]:
    """The checkout's file when it is there and verifies (a filesystem read, no network)."""
    try:
        read(record, host)
    except (DownloadError, IntegrityError, UnsafeFileError, OSError):
        return None
    return path_of(host)


def hint_line(record, host) -> Optional[str]:
    return (f"  put {record.file} (from a clone of this repository's {FOLDER}/ or of its "
            f"Hugging Face repository) in {folder()}, or")
