"""An inter-process lock per produced file (fcntl.flock; released by the OS when a process dies).

The lock file ``.locks/<target name>.lock`` exists only while a process holds it: the holder
removes it (and the ``.locks`` folder when that is empty) on release, so a failed download or
a read-only run leaves nothing behind. A process that opened the file just before its holder
removed it notices (the path no longer names the inode it locked) and locks the new file.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .files import cache_errors, ensure_dir, remove_stale_parts

LOCKS_DIR = ".locks"


def _acquire(path: Path, what: str) -> int:
    import fcntl
    while True:
        ensure_dir(path.parent, what)  # a releasing holder may have just removed the folder
        with cache_errors(path.parent, what):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
            except FileNotFoundError:
                continue  # ... or removed it after ensure_dir: make it again
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder before us removed this file: lock the one there now


@contextmanager
def file_lock(target: Path, what: str = "cache") -> Iterator[None]:
    """Exclusive lock for producing ``target``; on entry the temp files a killed process left
    for that target are removed (nobody else can be writing them while we hold the lock).
    Without fcntl (Windows) it only cleans nothing and locks nothing: atomic renames still keep
    files whole, the work may just be done twice."""
    target = Path(target)
    try:
        import fcntl  # noqa: F401
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    folder = target.parent / LOCKS_DIR
    path = folder / (target.name + ".lock")
    fd = _acquire(path, what)
    try:
        remove_stale_parts(target)
        yield
    finally:
        try:
            os.unlink(path)  # while still holding it: a waiter then sees a new inode
        except OSError:
            pass
        os.close(fd)
        try:
            folder.rmdir()  # only succeeds when no other lock lives there
        except OSError:
            pass


@contextmanager
def folder_lock(folder: Path, what: str = "folder") -> Iterator[None]:
    """Exclusive lock on a folder itself (flock of its descriptor): serialises the processes that
    update files in it without creating any file there."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with cache_errors(folder, what):
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
