"""The one error hierarchy of agcnn-zoo's I/O (weights and data alike).

Every failure is a :class:`ZooIOError` (``agcnn_zoo.hub.WeightsError`` is the same class, under
its historic name) and carries a ``hint``: one sentence saying how to fix it, appended to the
message.

    ZooIOError (= WeightsError)
    ├── ConfigError            a bad environment variable or argument (also a ValueError)
    ├── DownloadError          a source that did not deliver
    │   ├── OfflineError           the network is switched off
    │   ├── MirrorError            not in (or refused by) AGCNN_ZOO_MIRROR
    │   ├── UnexpectedContentError an HTML page instead of the file
    │   ├── TruncatedDownloadError fewer bytes than announced
    │   ├── TooLargeError          more bytes than the file may have
    │   └── DeadlineError          the whole transfer took too long
    ├── IntegrityError         bytes that are not the pinned ones (sha256, git blob id, size,
    │                          structure)
    ├── UnsafeFileError        not a regular file, too large, a symlink where none may be
    └── CacheError             the cache cannot be written
        ├── CacheNotWritableError  read-only folder, no permission
        ├── DiskFullError          no space left
        └── CachePathError         the cache path (or a parent) is a file
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union


class ZooIOError(RuntimeError):
    """Base of every I/O failure of agcnn-zoo; ``hint`` says how to fix it."""

    default_hint = ""

    def __init__(self, message: str, hint: Optional[str] = None):
        self.message = message
        self.hint = hint if hint is not None else self.default_hint
        super().__init__(message + (f"\n  hint: {self.hint}" if self.hint else ""))


#: historic name of the root class (``except WeightsError`` catches every I/O failure)
WeightsError = ZooIOError


class ConfigError(ZooIOError, ValueError):
    """A bad setting: an environment variable or argument that cannot be used."""
    default_hint = "fix or unset the setting named in the message"


class DownloadError(ZooIOError):
    """A source that did not deliver: network error, HTTP error, not in the mirror, offline."""

    default_hint = ("check the network, or download the file by hand into a folder laid out as "
                    "<dir>/<host>/<path> and set AGCNN_ZOO_MIRROR=<dir>")

    def __init__(self, url: str, reason: str, status: Optional[int] = None,
                 hint: Optional[str] = None):
        self.url, self.reason, self.status = url, reason, status
        super().__init__(f"{url}: {reason}", hint)


class OfflineError(DownloadError):
    default_hint = "unset AGCNN_ZOO_OFFLINE (and HF_HUB_OFFLINE), or put the file in a cache or mirror"


class MirrorError(DownloadError):
    default_hint = ("put the file at <mirror>/<host>/<path> (the network is never used while "
                    "AGCNN_ZOO_MIRROR is set), or unset AGCNN_ZOO_MIRROR")


class UnexpectedContentError(DownloadError):
    """The source answered with something else than the file (typically an HTML page)."""
    default_hint = ("a proxy or captive portal may answer instead of the server: sign in or fix "
                    "the proxy, or use AGCNN_ZOO_MIRROR")


class TruncatedDownloadError(DownloadError):
    """The connection ended before the announced number of bytes arrived."""
    default_hint = "retry; a flaky connection cut the transfer short"

    def __init__(self, url: str, expected: int, received: int):
        self.expected, self.received = expected, received
        super().__init__(url, f"truncated download: {received} of {expected} bytes received")


class TooLargeError(DownloadError):
    """The source announced or sent more bytes than the file may have."""
    default_hint = "the source does not serve the pinned file: check the URL, or use a mirror"

    def __init__(self, url: str, limit: int, got: int, announced: bool):
        self.limit, self.got, self.announced = limit, got, announced
        how = "announced" if announced else "sent more than"
        super().__init__(url, f"{how} {got} bytes, more than the {limit} the file may have"
                         + ("; refused before reading" if announced else "; transfer stopped"))


class DeadlineError(DownloadError):
    """The whole transfer did not finish within the overall deadline."""
    default_hint = ("a very slow link: raise AGCNN_ZOO_DEADLINE (seconds for a whole transfer), "
                    "or download by hand and use AGCNN_ZOO_MIRROR")


class IntegrityError(ZooIOError):
    """Bytes that are not the pinned ones (sha256, git blob id, size or structure)."""
    default_hint = ("the file was corrupted or replaced; it was not used. Retry (a bad cached "
                    "copy is removed), or fetch it again from another host")

    def __init__(self, file: Union[str, Path], expected: object, actual: object,
                 what: str = "sha256", hint: Optional[str] = None):
        self.file, self.expected, self.actual, self.what = str(file), expected, actual, what
        super().__init__(f"{file}: {what} mismatch: expected {expected}, got {actual}", hint)


class UnsafeFileError(ZooIOError):
    """A file that is refused without being read: not a regular file (FIFO, device, directory),
    a symlink where none may be, a size that is not the pinned one, or a path outside its folder."""
    default_hint = "remove or replace that path by hand; agcnn-zoo never deletes what it did not create"

    def __init__(self, path: Union[str, Path], reason: str, hint: Optional[str] = None):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}", hint)


class CacheError(ZooIOError):
    """The cache cannot be written."""

    def __init__(self, path: Union[str, Path], reason: str, hint: Optional[str] = None):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}", hint)


class CacheNotWritableError(CacheError):
    default_hint = ("point AGCNN_ZOO_CACHE at a writable folder, or fill the read-only cache "
                    "elsewhere with `python -m agcnn_zoo download`")


class DiskFullError(CacheError):
    default_hint = "free some space, or point AGCNN_ZOO_CACHE (or the data dir) at a larger disk"


class CachePathError(CacheError):
    default_hint = "the cache folder (or one of its parents) is a file: set AGCNN_ZOO_CACHE to a folder"


def one_line(error: BaseException) -> str:
    """An error as one line for a command line: what went wrong (naming the file), then what to
    do (a :class:`ZooIOError`'s hint), without a traceback."""
    message = getattr(error, "message", None)
    if not isinstance(message, str):
        lines = str(error).strip().splitlines()
        message = lines[0] if lines else type(error).__name__
        if type(error) is KeyError:
            message = f"missing key {message}"
    hint = getattr(error, "hint", None)
    text = message + (f" (to fix: {hint})" if hint else "")
    return " ".join(text.split())
