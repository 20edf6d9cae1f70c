"""Files on disk: hashing, atomic writes, checked reads, safe removal, stale temp files.

* Temp files are named ``.<target name>.<kind>-<16 hex>.part`` beside their target
  (:func:`temp_name`); :func:`remove_stale_parts` deletes only regular files matching exactly
  that pattern, only in the target's own folder: what a killed download left behind.
* :func:`atomic_writer` / :func:`atomic_write_bytes` write such a temp file, fsync it, make it
  0644 (group- and world-readable, so a shared cache works) and rename it over the target.
* :func:`safe_remove` deletes a regular file only if it lies inside the given root after
  resolving its folder, and never through (or a) symlink.
* :func:`check_regular_file` looks at a file's type and size before anything reads it (a FIFO
  or a 2 GB sparse file is refused without reading a byte).
* :func:`cache_errors` turns the OS errors of writing into :class:`CacheError` subclasses.
"""
from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator, Optional, Union

from .errors import (CacheError, CacheNotWritableError, CachePathError, DiskFullError,
                     IntegrityError, UnsafeFileError, ZooIOError)

PathLike = Union[str, Path]
FILE_MODE = 0o644
_CHUNK = 1 << 20
_KIND = re.compile(r"^[a-z0-9_]+$")


# ----------------------------------------------------------------------------- hashing

def file_digest(path: PathLike, algorithm: str, chunk: int = _CHUNK, opener=open) -> str:
    """Hex digest of a file read in chunks (``opener=gzip.open`` hashes the gunzipped content);
    hashlib.file_digest needs Python 3.11."""
    h = hashlib.new(algorithm)
    with opener(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_file(path: PathLike, chunk: int = _CHUNK) -> str:
    return file_digest(path, "sha256", chunk)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_hasher():
    """An incremental sha256 (``update`` / ``hexdigest``), for digests of several pieces."""
    return hashlib.sha256()


def md5_file(path: PathLike, chunk: int = _CHUNK) -> str:
    return file_digest(path, "md5", chunk)


def git_blob_sha1_bytes(data: bytes) -> str:
    """Git's object id of a blob holding ``data`` (``git hash-object``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def git_blob_sha1_file(path: PathLike) -> str:
    size = os.stat(path).st_size
    h = hashlib.sha1(b"blob %d\0" % size)
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------- OS errors

@contextmanager
def cache_errors(path: PathLike, what: str = "cache") -> Iterator[None]:
    """Turn the OS errors of writing under ``path`` into :class:`CacheError` subclasses."""
    try:
        yield
    except ZooIOError:
        raise
    except OSError as e:
        raise as_cache_error(e, path, what) from e


def as_cache_error(e: OSError, path: PathLike, what: str = "cache") -> CacheError:
    where = getattr(e, "filename", None) or path
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(where, f"no space left writing the {what}")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return CacheNotWritableError(where, f"the {what} is not writable ({e.strerror})")
    if e.errno in (errno.ENOTDIR, errno.EEXIST) or isinstance(e, (NotADirectoryError, FileExistsError)):
        return CachePathError(where, f"the {what} path or one of its parents is not a folder "
                                     f"({e.strerror})")
    return CacheError(where, f"cannot write the {what}: {e}",
                      hint="check that the folder exists, is a folder and is writable")


def ensure_dir(folder: PathLike, what: str = "cache") -> Path:
    folder = Path(folder)
    with cache_errors(folder, what):
        folder.mkdir(parents=True, exist_ok=True)
        if not folder.is_dir():
            raise CachePathError(folder, f"the {what} path is not a folder")
    return folder


# ----------------------------------------------------------------------------- temp files

def temp_name(target: PathLike, kind: str = "tmp") -> Path:
    """A fresh temp path beside ``target`` in our own pattern (see :func:`remove_stale_parts`)."""
    if not _KIND.match(kind):
        raise ValueError(f"temp kind must match [a-z0-9_]+, got {kind!r}")
    target = Path(target)
    return target.with_name(f".{target.name}.{kind}-{secrets.token_hex(8)}.part")


def _part_pattern(target: Path) -> "re.Pattern[str]":
    return re.compile(r"^\." + re.escape(target.name) + r"\.[a-z0-9_]+-[0-9a-f]{16}\.part$")


def remove_stale_parts(target: PathLike) -> int:
    """Delete the temp files of ``target`` that a killed process left in its folder.

    Call it only while holding ``target``'s lock (:func:`agcnn_zoo.io.locks.file_lock`): then no
    live process is writing one. Only regular files whose name matches our exact pattern are
    removed; a symlink or anything else is left alone. Returns how many were removed."""
    target = Path(target)
    pattern, removed = _part_pattern(target), 0
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return 0
    for entry in entries:
        if pattern.match(entry.name) and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
                removed += 1
            except OSError:
                pass
    return removed


def create_exclusive(path: Path) -> BinaryIO:
    """Open a new file for writing (never an existing one, never through a symlink)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    return open(path, "wb", opener=lambda p, _: os.open(p, flags, FILE_MODE))


def publish_file(tmp: PathLike, target: PathLike) -> None:
    """Make a finished temp file 0644 and rename it over ``target`` (atomic)."""
    os.chmod(tmp, FILE_MODE)
    os.replace(tmp, target)


@contextmanager
def atomic_writer(target: PathLike, kind: str = "tmp", what: str = "cache") -> Iterator[BinaryIO]:
    """``with atomic_writer(path) as f: f.write(...)``: the target appears whole (mode 0644)
    when the block ends without an error, and not at all otherwise. OS errors become
    :class:`CacheError` subclasses."""
    target = Path(target)
    ensure_dir(target.parent, what)
    tmp = temp_name(target, kind)
    try:
        with cache_errors(target, what):
            f = create_exclusive(tmp)
        try:
            with f:
                yield f
                with cache_errors(target, what):
                    f.flush()
                    os.fsync(f.fileno())
        except OSError as e:
            if isinstance(e, ZooIOError):
                raise
            raise as_cache_error(e, target, what) from e
        with cache_errors(target, what):
            publish_file(tmp, target)
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def atomic_write_bytes(path: PathLike, data: bytes, what: str = "file") -> None:
    """Write ``data`` to ``path`` atomically (temp file, fsync, 0644, rename)."""
    with atomic_writer(path, "write", what) as f:
        f.write(data)


# ----------------------------------------------------------------------------- reads, removal

def check_regular_file(path: PathLike, size: Optional[int] = None, max_size: Optional[int] = None,
                       follow_symlinks: bool = True) -> int:
    """The size of ``path`` after checking, without reading it, that it is a regular file of
    the expected ``size`` (or at most ``max_size``). Raises :class:`UnsafeFileError` otherwise
    (``IntegrityError`` for a wrong size of a pinned file)."""
    st = os.stat(path) if follow_symlinks else os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeFileError(path, "is a symlink; cache entries must be regular files")
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeFileError(path, "is not a regular file (a FIFO, device or folder); not read")
    if size is not None and st.st_size != size:
        raise IntegrityError(path, size, st.st_size, what="size")
    if max_size is not None and st.st_size > max_size:
        raise UnsafeFileError(path, f"{st.st_size} bytes, more than the {max_size} allowed; not read")
    return st.st_size


def read_checked(path: PathLike, size: Optional[int] = None, max_size: Optional[int] = None,
                 follow_symlinks: bool = True) -> bytes:
    """The bytes of a regular file whose size was checked before reading (and again after)."""
    check_regular_file(path, size, max_size, follow_symlinks)
    flags = os.O_RDONLY | (0 if follow_symlinks else getattr(os, "O_NOFOLLOW", 0))
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFileError(path, "is not a regular file; not read")
        limit = size if size is not None else max_size
        data = f.read(limit + 1 if limit is not None else -1)
    if size is not None and len(data) != size:
        raise IntegrityError(path, size, len(data), what="size")
    if max_size is not None and len(data) > max_size:
        raise UnsafeFileError(path, f"more than the {max_size} bytes allowed; not read")
    return data


def is_within(path: PathLike, root: PathLike) -> bool:
    """Whether ``path`` (its folder resolved, its last component as is) lies inside ``root``."""
    path, root = Path(path), Path(root)
    try:
        parent = path.parent.resolve(strict=False)
        root = root.resolve(strict=False)
    except OSError:
        return False
    full = parent / path.name
    return path.name not in ("", ".", "..") and (parent == root or root in parent.parents) \
        and full != root


def safe_remove(path: PathLike, root: PathLike, *, allow_symlink: bool = False) -> bool:
    """Delete ``path`` only if it is a regular file inside ``root`` (never a symlink's target).

    With ``allow_symlink`` a symlink inside ``root`` is unlinked itself (its target stays).
    Returns whether something was deleted; errors of the deletion itself are swallowed (the
    caller reports the problem that made it delete)."""
    path = Path(path)
    if not is_within(path, root):
        return False
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if stat.S_ISLNK(st.st_mode) and not allow_symlink:
        return False
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        return False
    try:
        os.unlink(path)
        return True
    except OSError:
        return False
