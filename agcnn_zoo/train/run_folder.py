"""A run folder is owned by one run at a time and holds only what runs wrote.

* :func:`claim` holds an exclusive lock (``.run.lock``, with the holder's pid) for the whole
  run: a second run or resume on the same folder is refused at once, naming that pid. The lock
  is released by the OS if the process dies, and its file is removed when the run ends.
* The run writes only files it created: a fresh run refuses a folder that already holds a file
  under one of its output names (the user's own ``metrics.jsonl``, say); a resumed run accepts
  the files its checkpoint lists as written by the run, and refuses any other.
* On entry the temp files (``.<name>.<kind>-<hex>.part``) that a killed run left beside its
  outputs are removed: while the lock is held nobody else can be writing them.
* A folder the claim created is removed again if the run ends before writing anything.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, List, Optional

from ..io.errors import ZooIOError
from ..io.files import cache_errors, remove_stale_parts

__all__ = ["RunFolderError", "RunBusyError", "claim", "LOCK_NAME", "foreign_outputs"]

LOCK_NAME = ".run.lock"


class RunFolderError(ZooIOError, ValueError):
    """The run folder cannot be used as asked (it holds files the run did not write, ...)."""
    default_hint = "choose another --out (a new or empty folder), or move those files away"


class RunBusyError(RunFolderError):
    """Another live process holds the run folder."""
    default_hint = "wait for that run to end (or stop it), or choose another --out"


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "a process whose pid is not recorded yet"


def _lock(folder: Path):
    """The open, locked lock file of ``folder``; :class:`RunBusyError` when another holds it."""
    import fcntl
    path = folder / LOCK_NAME
    while True:
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        with cache_errors(path, "run folder"):
            fd = os.open(path, flags, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunBusyError(f"{folder} is in use by another training run ({_holder(path)})") from None
        # the previous holder may have removed the file between our open and our lock: then we
        # hold a lock nobody else can see, and must lock the file that is there now
        try:
            same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd, path
        os.close(fd)


def foreign_outputs(folder: Path, names: Iterable[str], owned: Iterable[str] = ()) -> List[str]:
    """Those of ``names`` that exist in ``folder`` (as anything) without being ``owned``."""
    owned = set(owned)
    return [n for n in names if n not in owned and os.path.lexists(folder / n)]


@contextmanager
def claim(folder: Path, outputs: Iterable[str]) -> Iterator[Path]:
    """Hold ``folder`` for one run (see the module docstring); ``outputs`` are the file names the
    run may write, whose stale temp files are removed on entry."""
    folder = Path(folder)
    created = not folder.exists()
    with cache_errors(folder, "run folder"):
        folder.mkdir(parents=True, exist_ok=True)
    if not folder.is_dir():
        raise RunFolderError(f"{folder} is not a folder", hint="choose a folder for --out")
    try:
        import fcntl  # noqa: F401
    except ImportError:  # pragma: no cover - Windows: no lock, the rest still holds
        yield folder
        return
    fd, path = _lock(folder)
    try:
        for name in outputs:
            remove_stale_parts(folder / name)
        yield folder
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
        os.close(fd)
        if created:
            try:
                folder.rmdir()  # only when the run wrote nothing at all
            except OSError:
                pass


def refuse_foreign(folder: Path, names: Iterable[str], owned: Optional[Iterable[str]] = None,
                   resumed: bool = False) -> None:
    """Raise :class:`RunFolderError` when ``folder`` holds one of ``names`` that the run did not
    write (``owned``: the names the checkpoint lists)."""
    foreign = foreign_outputs(folder, names, owned or ())
    if foreign:
        which = ", ".join(foreign)
        if resumed:
            raise RunFolderError(f"{folder} holds {which}, which this run did not write; it would "
                                 f"be replaced when the run writes its outputs",
                                 hint=f"move {which} out of the folder, then resume")
        raise RunFolderError(f"{folder} already holds {which}; a fresh run writes files of those "
                             f"names and never replaces what it did not create")
