"""What every dataset reader shares: the :class:`EvalSet` base, errors, the data folder, and
downloads through the one I/O layer (:mod:`agcnn_zoo.io`).

Downloads (:func:`download_url`, :func:`fetch_remote`) stream into a temp file beside the
target, size-capped and under the overall deadline, refuse HTML pages, hash while streaming,
run the dataset's own structural check on the temp file, and only then rename it into place:
a file that fails any check is removed and named in the error. A checksum recorded as
*verified* must match (:class:`ChecksumError`); one copied from a public loader but never
checked here (``verified=False``) only warns, and the structural check decides.
"""
from __future__ import annotations

import hashlib
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence, Tuple, Union

import torch
from torch.utils.data import Dataset

from ..io import env as _env
from ..io.download import download
from ..io.errors import DownloadError, IntegrityError, ZooIOError
from ..io.files import atomic_writer, file_digest, md5_file
from ..io.locks import file_lock

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

__all__ = ["EvalSet", "Remote", "DataNotFoundError", "ChecksumError", "DataFormatError",
           "DataFileError", "reading", "scalar_mean_std",
           "DownloadError", "default_data_dir", "download_url", "md5_file", "fetch_remote",
           "check_md5", "DATA_ENV", "OFFLINE_ENV", "PathLike"]

PathLike = Union[str, Path]

#: environment variables: where data lives; "1" forbids any download (weights too)
DATA_ENV = _env.DATA_ENV
OFFLINE_ENV = _env.OFFLINE_ENV


class DataNotFoundError(FileNotFoundError):
    """A test set is not on disk (and could not be downloaded). The message says which files
    are needed, where to put them and where they are published."""

    def __init__(self, dataset: str, files: Sequence[str], data_dir: Path,
                 looked_in: Sequence[Path], urls: Sequence[str], reason: str = ""):
        self.dataset, self.files, self.data_dir = dataset, list(files), Path(data_dir)
        self.looked_in, self.urls = [Path(p) for p in looked_in], list(urls)
        where = ", ".join(str(p) for p in self.looked_in)
        lines = [f"{dataset}: test data not found{' (' + reason + ')' if reason else ''}.",
                 f"  needed: {', '.join(self.files)}",
                 f"  put them in: {self.looked_in[0]} (looked in: {where}; the data dir is "
                 f"{self.data_dir}, set by --data-dir or ${DATA_ENV})"]
        lines += [f"  published at: {u}" for u in self.urls] or ["  no public download: copy the files by hand"]
        self.hint = f"put the files in {self.looked_in[0]}, or pass download=True"
        #: the same as one line (command lines print this)
        self.message = (f"{dataset}: test data not found{' (' + reason + ')' if reason else ''}: "
                        f"needs {', '.join(self.files)} in {self.looked_in[0]} (looked in: "
                        f"{where}); published at: {', '.join(self.urls) or 'no public download'}")
        super().__init__("\n".join(lines))


class ChecksumError(IntegrityError):
    """A downloaded or existing file does not have its recorded checksum."""
    default_hint = ("the file is not the canonical one: delete it and download it again "
                    "(or pass verify=False to read it anyway)")


class DataFormatError(IntegrityError, ValueError):
    """A downloaded file that is not what it should be (an HTML page, a broken archive, wrong
    members); it was removed before being kept."""
    default_hint = "retry the download; a proxy or captive portal may have answered instead"


class DataFileError(IntegrityError, ValueError):
    """A data file on disk that cannot be read as what it should be (a truncated or
    corrupted archive, a text file under a .gz name, a wrong shape)."""
    default_hint = ("delete that file and download it again (--download), or copy a good copy "
                    "of it there")

    def __init__(self, path: PathLike, reason: str, hint: Optional[str] = None):
        self.path, self.reason = str(path), reason
        ZooIOError.__init__(self, f"{path}: {reason}", hint)


@contextmanager
def reading(path: PathLike, what: str) -> Iterator[None]:
    """Turn the errors of decoding a data file (gzip, EOF, OS) into :class:`DataFileError`
    naming the file; errors that already name it pass through."""
    import gzip
    import zlib
    try:
        yield
    except ZooIOError:
        raise
    except EOFError:
        raise DataFileError(path, f"ends early: a truncated {what}") from None
    except (gzip.BadGzipFile, zlib.error) as e:
        raise DataFileError(path, f"not a readable gzip file ({e})") from None
    except OSError as e:
        raise DataFileError(path, f"cannot be read ({e.strerror or e})") from None


def default_data_dir() -> Path:
    """``$AGCNN_ZOO_DATA``, else ``data`` in the one cache root (beside the weights)."""
    return _env.data_dir() or _env.cache_root() / "data"


def _offline() -> bool:
    return _env.offline()


@dataclass(frozen=True)
class Remote:
    """A published file: its URL, the name it is stored under and its md5 (``md5_of``: of the
    downloaded bytes, or of the content after gunzip); ``verified`` says whether that md5 was
    checked against a real copy (see the module docstring for what a mismatch does);
    ``max_size`` caps the download."""
    url: str
    filename: str
    md5: Optional[str] = None
    verified: bool = False
    md5_of: str = "download"  # "download" or "gunzipped"
    source: str = ""
    max_size: Optional[int] = 4 << 30


def download_url(url: str, dest: PathLike, md5: Optional[str] = None, *, strict: bool = True,
                 progress: bool = True, timeout: Optional[float] = None,
                 max_size: Optional[int] = None,
                 check: Optional[Callable[[Path], None]] = None) -> Path:
    """Download ``url`` to ``dest`` through a temp file in the same folder.

    The md5 is computed while streaming; with ``strict`` a mismatch raises
    :class:`ChecksumError` and nothing is left behind, without it a mismatch only warns.
    ``check(path)`` runs on the complete temp file before it is kept; whatever it raises
    (``ValueError`` becomes :class:`DataFormatError`) leaves nothing behind either. HTTP
    errors, refused connections, HTML pages, oversized and truncated transfers raise
    :class:`DownloadError` subclasses.
    """
    dest = Path(dest)
    with atomic_writer(dest, "download", what="data folder") as out:
        h = hashlib.md5()
        download(url, out, max_size=max_size, progress=progress, desc=dest.name,
                 on_chunk=h.update, timeout=timeout)
        out.flush()
        got = h.hexdigest()
        if md5 and got != md5:
            if strict:
                raise ChecksumError(dest, md5, got, what="md5",
                                    hint=f"the download from {url} was discarded; retry, or "
                                         f"fetch the file by hand")
            warnings.warn(f"{url}: md5 {got}, expected {md5} (the expected value was never "
                          f"verified here; keeping the file, it is checked structurally)",
                          stacklevel=2)
        if check is not None:
            try:
                check(Path(out.name))
            except ZooIOError:
                raise
            except (ValueError, OSError, EOFError) as e:
                raise DataFormatError(dest, f"a valid {dest.name}", f"{e}", what="structure",
                                      hint=f"the download from {url} was removed; retry, or "
                                           f"fetch the file by hand") from None
    return dest


def fetch_remote(remote: Remote, folder: Path, *, dataset: str, needed: Sequence[str],
                 data_dir: Path, looked_in: Sequence[Path], urls: Sequence[str], progress: bool,
                 check: Optional[Callable[[Path], None]] = None) -> Path:
    """Download one published file into ``folder``; network trouble becomes a
    :class:`DataNotFoundError` that says what to put where (a file that arrived but fails its
    checks raises :class:`ChecksumError` / :class:`DataFormatError`, naming it)."""
    if _offline():
        raise DataNotFoundError(dataset, needed, data_dir, looked_in, urls,
                                reason=f"downloads disabled by {OFFLINE_ENV}")
    dest = folder / remote.filename
    try:
        # the lock also clears the temp files a killed download of this file left behind
        with file_lock(dest, what="data folder"):
            if dest.is_file():  # another process downloaded it while we waited
                return dest
            return download_url(remote.url, dest,
                                md5=remote.md5 if remote.md5_of == "download" else None,
                                strict=remote.verified, progress=progress,
                                max_size=remote.max_size, check=check)
    except DownloadError as e:
        raise DataNotFoundError(dataset, needed, data_dir, looked_in, urls,
                                reason=f"download of {remote.filename} failed and nothing was "
                                       f"kept: {e.message}") from e


def content_md5(path: Path) -> str:
    """md5 of a file's content, gunzipped first when it is a .gz file."""
    import gzip
    with reading(path, "file"):
        return file_digest(path, "md5", opener=gzip.open if path.suffix == ".gz" else open)


def check_md5(path: Path, md5: Optional[str], verified: bool, gunzipped: bool = False) -> None:
    if not md5:
        return
    got = content_md5(path) if gunzipped else md5_file(path)
    if got == md5:
        return
    msg = f"{path}: md5 {got}{' (gunzipped)' if gunzipped else ''}, expected {md5}"
    if verified:
        raise ChecksumError(path, md5, got, what="md5" + (" (gunzipped)" if gunzipped else ""))
    warnings.warn(msg + " (the expected value was never verified here)", stacklevel=3)


def scalar_mean_std(x) -> Tuple[float, float]:
    """The scalar mean and population std (ddof 0) of every pixel of a digit set, in float64:
    the authors' rot-MNIST normalisation (their numpy ``x.mean()`` / ``x.std()``). The one place
    these statistics are computed (a tensor or a numpy array)."""
    import numpy as np
    x64 = x.to(torch.float64) if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x, dtype=np.float64))
    mean = float(x64.mean())
    return mean, float((x64 - mean).pow(2).mean().sqrt())


def require_finite(x, what: str) -> None:
    """Refuse NaN or infinite values (numpy array or tensor)."""
    import numpy as np
    ok = bool(torch.isfinite(x).all()) if isinstance(x, torch.Tensor) else bool(np.isfinite(x).all())
    if not ok:
        raise ValueError(f"{what}: NaN or infinite values")


def integer_labels(y, what: str):
    """``y`` as int64, refusing non-integral values (0.7 is not a label)."""
    import numpy as np
    y = np.asarray(y)
    if y.dtype.kind in "iu":
        return y.astype(np.int64)
    if y.dtype.kind == "b":
        raise ValueError(f"{what}: labels must be integers, got booleans")
    if y.dtype.kind == "f" and y.size and np.isfinite(y).all() and np.all(y == np.round(y)):
        return y.astype(np.int64)
    raise ValueError(f"{what}: labels must be integers, got {y.dtype} values such as "
                     f"{y.reshape(-1)[:3].tolist()}")


# ----------------------------------------------------------------------------- base class

class EvalSet(Dataset):
    """Preprocessed test images and labels in a fixed order.

    ``name``: the dataset name results are reported under; ``serves``: the training dataset of
    the models it evaluates (rotmnist, cifar10, pcam); ``canonical``: whether it is the test set
    the authors measured on; ``expected_size``: the size of the complete set.
    """
    name: str = ""
    serves: str = ""
    canonical: bool = False
    expected_size: Optional[int] = None
    input_size: Tuple[int, int, int] = (1, 28, 28)
    num_classes: int = 10

    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.numel())

    def _images(self, start: int, stop: int) -> torch.Tensor:
        """Preprocessed images ``start:stop`` as float32 [B, C, H, W]."""
        raise NotImplementedError

    def __getitem__(self, index: int):
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {self.name} ({n} images)")
        index %= n
        return self._images(index, index + 1)[0], int(self.labels[index])

    def batches(self, batch_size: int, limit: Optional[int] = None
                ) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """``(images, labels)`` batches of the first ``limit`` images (all by default), in order."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = len(self) if limit is None else min(int(limit), len(self))
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            yield self._images(start, stop), self.labels[start:stop]

    def describe(self) -> dict:
        """What was read and how it was preprocessed (for reports)."""
        return {"name": self.name, "images": len(self), "canonical": self.canonical}


class _NormalisedUint8(EvalSet):
    """Images stored as uint8 [N, C, H, W]: ToTensor scaling, then per-channel mean/std."""
    mean: Tuple[float, ...] = IMAGENET_MEAN
    std: Tuple[float, ...] = IMAGENET_STD

    def _normalise(self, x_uint8_nchw: torch.Tensor) -> torch.Tensor:
        x = x_uint8_nchw.to(torch.float32).div(255.0)
        m = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        s = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        return (x - m) / s
