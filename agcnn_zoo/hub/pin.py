"""The one verification seam of the weight hub: a pin (sha256 and size) and the reads that
check it.

Every host hands on bytes that passed :meth:`Pin.read` or :meth:`Pin.check`: the file's type
and size are checked before a byte is read, its bytes are read once and hashed once, and only
those bytes are used (parsed, converted, written). A mismatch is an :class:`IntegrityError`
naming the file and both values.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from ..io.errors import DownloadError, IntegrityError, UnsafeFileError
from ..io.files import read_checked, sha256_bytes

__all__ = ["Pin", "MAX_WEIGHTS_BYTES", "read_in_place"]

#: the largest safetensors file read when the record pins no size
MAX_WEIGHTS_BYTES = 1 << 30


@dataclass(frozen=True)
class Pin:
    sha256: str
    size: Optional[int] = None

    @classmethod
    def of(cls, record, what: str = "weights") -> "Pin":
        """The pin of a weight record (which must pin a sha256)."""
        if not record.sha256:
            raise IntegrityError(record.file, f"a sha256 pinned in the manifest for these {what}",
                                 "none", what="pin", hint="pin the file's sha256 and size in the "
                                                          "manifest")
        return cls(record.sha256, record.size)

    def check(self, data: bytes, where: Union[str, Path], hint: Optional[str] = None) -> bytes:
        """``data`` itself, after checking its size and sha256."""
        if self.size is not None and len(data) != self.size:
            raise IntegrityError(where, self.size, len(data), what="size", hint=hint)
        actual = sha256_bytes(data)
        if actual != self.sha256:
            raise IntegrityError(where, self.sha256, actual, hint=hint)
        return data

    def read(self, path: Union[str, Path], max_size: int, follow_symlinks: bool = True,
             hint: Optional[str] = None) -> bytes:
        """The verified bytes of ``path`` (type and size checked before reading, read once)."""
        data = read_checked(path, size=self.size, max_size=max_size, follow_symlinks=follow_symlinks)
        return self.check(data, path, hint)


def read_in_place(record, path: Path, max_bytes: int, *, what: str, missing: str,
                  missing_hint: str, modified_hint: str,
                  size_hint: Optional[str] = None) -> bytes:
    """The verified bytes of a weight a host hands over where it lies (the package, a checkout,
    the user's folder): with ``size_hint``, the record must pin a size within ``max_bytes``;
    an absent file is a :class:`DownloadError` (``missing``), a symlink is not followed, and a
    changed file is an :class:`IntegrityError` (``modified_hint``)."""
    pin = Pin.of(record, what)
    if size_hint is not None and (pin.size is None or pin.size > max_bytes):
        raise UnsafeFileError(path, f"the record pins {pin.size} bytes; {what} are at most "
                                    f"{max_bytes} bytes", hint=size_hint)
    if not path.exists() and not path.is_symlink():
        raise DownloadError(str(path), missing, hint=missing_hint)
    return pin.read(path, max_bytes, follow_symlinks=False, hint=modified_hint)
