"""Host kind ``local``: a weight a user trained and installed on this machine.

``{"type": "local", "path": "<file name>"}`` names a file in the folder of the user manifest
that lists the record (``<cache root>/user/`` by default, see
:func:`agcnn_zoo.hub.manifest.user_manifest_path`). The folder is attached when that manifest
is merged into the catalogue; a package manifest may not hold such hosts. The record pins sha256
and size, checked on every load as for any host; the file is never written or deleted by the
cache logic. A file on this machine: :func:`read` hands its verified bytes on.
"""
from __future__ import annotations

from pathlib import Path

from ...io.errors import DownloadError
from ..pin import read_in_place

#: the largest weight a user manifest may list
MAX_BYTES = 1 << 30


def path_of(host) -> Path:
    if not host.folder:
        raise DownloadError(host.path, "a local host is read only from a user manifest "
                                       "(its folder is where the file lies)",
                            hint="install the weight with `python -m agcnn_zoo train ... "
                                 "--update-manifest`, or list it in a user manifest")
    return Path(host.folder) / host.path


def read(record, host) -> bytes:
    """The file's bytes, verified against the record's pin."""
    return read_in_place(
        record, path_of(host), MAX_BYTES, what="weights",
        missing="the installed weight is gone from the user folder",
        missing_hint="install it again from its run folder (train --resume --update-manifest), "
                     "or remove its record from the user manifest",
        modified_hint="the installed file was modified: install it again from its run folder")


def fetch(record, host, target: Path, *, progress: bool = False) -> Path:
    read(record, host)
    return path_of(host)
