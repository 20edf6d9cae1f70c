"""An inter-process lock per produced file (fcntl.flock; released by the OS when a process dies)."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .files import cache_errors, ensure_dir, remove_stale_parts


@contextmanager
def file_lock(target: Path, what: str = "cache") -> Iterator[None]:
    """Exclusive lock for producing ``target``; on entry the temp files a killed process left
    for that target are removed (nobody else can be writing them while we hold the lock).
    Without fcntl (Windows) it only cleans nothing and locks nothing: atomic renames still keep
    files whole, the work may just be done twice."""
    target = Path(target)
    lock_dir = ensure_dir(target.parent / ".locks", what)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with cache_errors(lock_dir, what):
        f = open(lock_dir / (target.name + ".lock"), "a+b")
    with f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            remove_stale_parts(target)
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
