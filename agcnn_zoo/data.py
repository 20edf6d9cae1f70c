"""Test sets of the zoo's weights: readers of the original file formats, and safe downloads.

Every reader returns an :class:`EvalSet` (a map-style ``torch.utils.data.Dataset`` that also
yields whole batches in a fixed order) holding the images preprocessed exactly as the original
training code fed them to the models.

Canonical test sets (the ones the authors' logs were measured on):

``rotmnist``
    mnist_rotation_new (Larochelle et al. 2007), the zip holding
    ``mnist_all_rotation_normalized_float_train_valid.amat`` (12,000 rows) and
    ``mnist_all_rotation_normalized_float_test.amat`` (50,000 rows): each text row is 784 pixel
    values in [0, 1] then the label written as a float. Orientation: like the authors (who used
    Cohen & Welling's npz conversion), each row is reshaped **row-major** (C order) to 28x28;
    the digits then appear transposed w.r.t. MNIST (the .amat files store MNIST images column by
    column), and this transposed orientation is the one the checkpoints expect. Normalisation:
    subtract the scalar mean of all 12,000 x 784 training pixels, divide by the scalar
    population std (ddof=0) of the centred training pixels, both in float64 as the original
    (numpy) code did; the two numbers are cached in ``rotmnist_stats.json`` next to the data.
``cifar10``
    the CIFAR-10 test split as torchvision stores it (``cifar-10-batches-py/test_batch``, a
    pickle with ``data`` uint8 [10000, 3072] in R, G, B planes and ``labels``); ToTensor scaling
    then ImageNet mean/std, as the authors' torchvision pipeline.
``pcam``
    PatchCamelyon test split (``camelyonpatch_level_2_split_test_x.h5`` key ``x`` uint8
    [32768, 96, 96, 3], ``..._y.h5`` key ``y`` [32768, 1, 1, 1]); ToTensor scaling then the
    authors' rounded mean/std. Needs h5py.

Auxiliary sets (offline stand-ins, always reported under their own names):

``mnist-rot-aux``
    the MNIST test digits (IDX files), digit ``i`` rotated counter-clockwise by angle ``a_i``
    degrees about the image centre, bilinear, zero fill (torchvision ``rotate`` semantics),
    where ``a = torch.rand(10000, generator=torch.Generator().manual_seed(0),
    dtype=torch.float64) * 360``; then transposed into the rot-MNIST orientation and normalised
    with the scalar mean/std of the 10,000 rotated digits. NOT the paper's rot-MNIST.
``cifar10-jpeg``
    a lossy JPEG copy of the CIFAR-10 test set in ImageFolder layout (``<class>/NNNN.jpg``),
    same preprocessing as ``cifar10``.

Downloads go to a temp file beside the target, are checked against a recorded checksum and only
then renamed into place (``os.replace``), so a failed or corrupt download never leaves a file.
A checksum recorded as *verified* must match (else :class:`ChecksumError`); one copied from a
public loader but never checked here (``verified=False``) only warns on mismatch, and the file is
then checked structurally (row counts, shapes, label range) when read.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pickle
import shutil
import struct
import tarfile
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

__all__ = ["EvalSet", "RotMNIST", "MNISTRotAux", "CIFAR10Test", "CIFAR10JPEG", "PCamTest",
           "Remote", "DataNotFoundError", "ChecksumError", "DownloadError", "EVAL_SETS",
           "CANONICAL_SET", "load_eval_set", "default_data_dir", "download_url", "md5_file",
           "rotate_digits", "read_idx", "MNIST_ROT_AUX_SEED"]

PathLike = Union[str, Path]

#: environment variables: where data lives; "1" forbids any download
DATA_ENV = "AGCNN_ZOO_DATA"
OFFLINE_ENV = "AGCNN_ZOO_OFFLINE"

#: the seed of the auxiliary set's rotation angles (part of that dataset's definition)
MNIST_ROT_AUX_SEED = 0

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PCAM_MEAN = (0.701, 0.538, 0.692)
PCAM_STD = (0.235, 0.277, 0.213)


# ----------------------------------------------------------------------------- errors / paths

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
        super().__init__("\n".join(lines))


class ChecksumError(ValueError):
    """A downloaded or existing file does not have its recorded checksum."""


class DownloadError(OSError):
    """A download failed (HTTP error, connection refused, truncated transfer)."""


def default_data_dir() -> Path:
    return Path(os.environ.get(DATA_ENV) or Path.home() / ".cache" / "agcnn_zoo" / "data")


def _offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes")


def md5_file(path: PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Remote:
    """A published file: its URL, the name it is stored under and its md5 (``md5_of``: of the
    downloaded bytes, or of the content after gunzip); ``verified`` says whether that md5 was
    checked against a real copy (see the module docstring for what a mismatch does)."""
    url: str
    filename: str
    md5: Optional[str] = None
    verified: bool = False
    md5_of: str = "download"  # "download" or "gunzipped"
    source: str = ""


# ----------------------------------------------------------------------------- downloads

def download_url(url: str, dest: PathLike, md5: Optional[str] = None, *, strict: bool = True,
                 progress: bool = True, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` through a temp file in the same folder.

    The md5 is computed while streaming; with ``strict`` a mismatch raises
    :class:`ChecksumError` and nothing is left behind, without it a mismatch only warns.
    HTTP errors, refused connections and truncated transfers raise :class:`DownloadError`.
    """
    from tqdm.auto import tqdm

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        try:
            response = urllib.request.urlopen(url, timeout=timeout)
        except urllib.error.HTTPError as e:
            raise DownloadError(f"download of {url} failed: HTTP {e.code} {e.reason}") from e
        except (urllib.error.URLError, OSError) as e:
            raise DownloadError(f"download of {url} failed: {getattr(e, 'reason', e)}") from e
        h = hashlib.md5()
        received = 0
        with response, os.fdopen(fd, "wb") as out:
            total = response.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name,
                      disable=not progress) as bar:
                while block := response.read(1 << 20):
                    out.write(block)
                    h.update(block)
                    received += len(block)
                    bar.update(len(block))
            out.flush()
            os.fsync(out.fileno())
        if total is not None and received != total:
            raise DownloadError(f"download of {url} truncated: {received} of {total} bytes")
        got = h.hexdigest()
        if md5 and got != md5:
            msg = f"{url}: md5 {got}, expected {md5}"
            if strict:
                raise ChecksumError(msg + "; the download was discarded")
            warnings.warn(msg + " (the expected value was never verified here; keeping the "
                          "file, it is checked structurally when read)", stacklevel=2)
        os.replace(tmp, dest)
        return dest
    except BaseException:
        try:
            os.close(fd)
        except OSError:
            pass
        Path(tmp).unlink(missing_ok=True)
        raise


def _gunzip_to(src: Path, dest: Path) -> Path:
    """Decompress ``src`` to ``dest`` atomically."""
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with gzip.open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def _content_md5(path: Path) -> str:
    """md5 of a file's content, gunzipped first when it is a .gz file."""
    if path.suffix != ".gz":
        return md5_file(path)
    h = hashlib.md5()
    with gzip.open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _fetch(remote: Remote, folder: Path, *, dataset: str, needed: Sequence[str], data_dir: Path,
           looked_in: Sequence[Path], urls: Sequence[str], progress: bool) -> Path:
    """Download one published file into ``folder``; network trouble becomes a
    :class:`DataNotFoundError` that says what to put where."""
    if _offline():
        raise DataNotFoundError(dataset, needed, data_dir, looked_in, urls,
                                reason=f"downloads disabled by {OFFLINE_ENV}")
    try:
        return download_url(remote.url, folder / remote.filename,
                            md5=remote.md5 if remote.md5_of == "download" else None,
                            strict=remote.verified, progress=progress)
    except DownloadError as e:
        raise DataNotFoundError(dataset, needed, data_dir, looked_in, urls, reason=str(e)) from e


def _check_md5(path: Path, md5: Optional[str], verified: bool, gunzipped: bool = False) -> None:
    if not md5:
        return
    got = _content_md5(path) if gunzipped else md5_file(path)
    if got == md5:
        return
    msg = f"{path}: md5 {got}{' (gunzipped)' if gunzipped else ''}, expected {md5}"
    if verified:
        raise ChecksumError(msg + ": not the canonical file (pass verify=False to read it anyway)")
    warnings.warn(msg + " (the expected value was never verified here)", stacklevel=3)


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


# ----------------------------------------------------------------------------- rot-MNIST

ROTMNIST_REMOTE = Remote(
    url="http://www.iro.umontreal.ca/~lisa/icml2007data/mnist_rotation_new.zip",
    filename="mnist_rotation_new.zip",
    md5="0f9a947ff3d30e95cd685462cbf3b847", verified=False,
    source="recorded by one public loader; never checked against a real download here")
ROTMNIST_FILES = {"train": "mnist_all_rotation_normalized_float_train_valid.amat",
                  "test": "mnist_all_rotation_normalized_float_test.amat"}
ROTMNIST_SIZES = {"train": 12000, "test": 50000}
ROTMNIST_STATS = "rotmnist_stats.json"


def _parse_amat(lines: Iterator[str], expected: Optional[int], desc: str, progress: bool,
                chunk: int = 2000) -> Tuple[np.ndarray, np.ndarray]:
    """Rows of ``784 pixels + label`` -> (images float32 [N, 28, 28] row-major, labels int64)."""
    from tqdm.auto import tqdm

    images, labels = [], []
    buf: List[str] = []
    with tqdm(total=expected, unit="row", desc=f"reading {desc}", disable=not progress) as bar:
        def flush():
            rows = np.loadtxt(buf, dtype=np.float64, ndmin=2)
            if rows.shape[1] != 785:
                raise ValueError(f"{desc}: rows of {rows.shape[1]} numbers, expected 784 pixels "
                                 f"+ 1 label")
            lab = rows[:, 784]
            if not np.all((lab == np.round(lab)) & (lab >= 0) & (lab <= 9)):
                raise ValueError(f"{desc}: labels must be the integers 0-9")
            px = rows[:, :784]
            if px.min() < -1e-6 or px.max() > 1 + 1e-6:
                raise ValueError(f"{desc}: pixel values outside [0, 1]")
            # row-major reshape, as the authors' npz conversion: MNIST transposed
            images.append(px.reshape(-1, 28, 28).astype(np.float32))
            labels.append(lab.astype(np.int64))
            bar.update(len(buf))
            buf.clear()

        for line in lines:
            if line.strip():
                buf.append(line)
                if len(buf) == chunk:
                    flush()
        if buf:
            flush()
    if not images:
        raise ValueError(f"{desc}: no rows")
    return np.concatenate(images), np.concatenate(labels)


class RotMNIST(EvalSet):
    """mnist_rotation_new, read from the published zip or from its two extracted .amat files.

    Files are looked for in ``<data_dir>/mnist_rotation_new/`` then ``<data_dir>/``; with
    ``download=True`` the zip is fetched into the first. Only ``split="test"`` is needed for
    evaluation (``"train"`` also works); the training file is always read once to compute the
    normalisation, which is then cached in ``rotmnist_stats.json``.
    """
    name = "rotmnist"
    serves = "rotmnist"
    canonical = True
    input_size = (1, 28, 28)

    def __init__(self, data_dir: Optional[PathLike] = None, split: str = "test",
                 download: bool = False, progress: bool = True):
        if split not in ROTMNIST_FILES:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self.data_dir = Path(data_dir) if data_dir else default_data_dir()
        self.split = split
        self.expected_size = ROTMNIST_SIZES[split]
        self.progress = progress
        self.folder, self.source = self._locate(download)
        self.mean, self.std = self._stats()
        raw, labels = self._read(split)
        self._raw = torch.from_numpy(raw)
        self.labels = torch.from_numpy(labels)

    # where the data is: the two .amat files, else the zip
    def _candidates(self) -> List[Path]:
        return [self.data_dir / "mnist_rotation_new", self.data_dir]

    def _locate(self, download: bool) -> Tuple[Path, Path]:
        needed = [ROTMNIST_REMOTE.filename + " (or its two files " + ", ".join(
            ROTMNIST_FILES.values()) + ")"]
        for folder in self._candidates():
            if all((folder / f).is_file() for f in ROTMNIST_FILES.values()):
                return folder, folder
            if (folder / ROTMNIST_REMOTE.filename).is_file():
                return folder, folder / ROTMNIST_REMOTE.filename
        looked = self._candidates()
        if not download:
            raise DataNotFoundError("rotmnist", needed, self.data_dir, looked,
                                    [ROTMNIST_REMOTE.url])
        path = _fetch(ROTMNIST_REMOTE, looked[0], dataset="rotmnist", needed=needed,
                      data_dir=self.data_dir, looked_in=looked, urls=[ROTMNIST_REMOTE.url],
                      progress=self.progress)
        return looked[0], path

    def _lines(self, split: str) -> Iterator[str]:
        member = ROTMNIST_FILES[split]
        if self.source.is_dir():
            with open(self.source / member, encoding="ascii") as f:
                yield from f
            return
        with zipfile.ZipFile(self.source) as zf:
            names = [n for n in zf.namelist() if n.rsplit("/", 1)[-1] == member]
            if not names:
                raise ValueError(f"{self.source} holds no {member} (members: "
                                 f"{', '.join(zf.namelist())})")
            with zf.open(names[0]) as raw:
                yield from io.TextIOWrapper(raw, encoding="ascii")

    def _read(self, split: str) -> Tuple[np.ndarray, np.ndarray]:
        images, labels = _parse_amat(self._lines(split), ROTMNIST_SIZES[split],
                                     ROTMNIST_FILES[split], self.progress)
        if len(labels) != ROTMNIST_SIZES[split]:
            warnings.warn(f"{ROTMNIST_FILES[split]}: {len(labels)} rows, the published file has "
                          f"{ROTMNIST_SIZES[split]}", stacklevel=3)
        return images, labels

    def _source_fingerprint(self) -> dict:
        if self.source.is_dir():
            p = self.source / ROTMNIST_FILES["train"]
        else:
            p = self.source
        st = p.stat()
        return {"file": p.name, "size": st.st_size, "md5": md5_file(p)}

    def _stats(self) -> Tuple[float, float]:
        """Scalar mean and population std of the training pixels (cached next to the data)."""
        cache = self.folder / ROTMNIST_STATS
        fingerprint = self._source_fingerprint()
        if cache.is_file():
            try:
                cached = json.loads(cache.read_text())
                if cached.get("source") == fingerprint:
                    return float(cached["mean"]), float(cached["std"])
            except (ValueError, KeyError, TypeError):
                pass  # unreadable cache: recompute
        train, _ = self._read("train")
        x = train.astype(np.float64)
        mean = float(x.mean())
        std = float((x - mean).std())  # ddof=0 on the centred data, as the original
        record = {"mean": mean, "std": std, "images": int(len(train)),
                  "how": "scalar mean / population std of all training pixels (float64)",
                  "source": fingerprint}
        try:
            from .convert import atomic_write_bytes
            atomic_write_bytes(cache, (json.dumps(record, indent=2) + "\n").encode())
        except OSError as e:  # a read-only data dir: recompute next time
            warnings.warn(f"could not cache rot-MNIST statistics at {cache}: {e}", stacklevel=2)
        return mean, std

    def _images(self, start: int, stop: int) -> torch.Tensor:
        x = self._raw[start:stop].to(torch.float64)
        return ((x - self.mean) / self.std).to(torch.float32).unsqueeze(1)

    def describe(self) -> dict:
        return {**super().describe(), "source": str(self.source), "split": self.split,
                "orientation": "row-major reshape of the .amat rows (MNIST transposed)",
                "normalize": {"mean": self.mean, "std": self.std,
                              "of": "the 12,000 training images"}}


# ----------------------------------------------------------------------------- MNIST (aux)

MNIST_REMOTES = {
    # md5 of the gunzipped content: robust to gzip headers (timestamps) differing between copies;
    # checked here against the canonical copy in shared/data/mnist.
    "images": Remote("https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz",
                     "t10k-images-idx3-ubyte.gz", "2646ac647ad5339dbf082846283269ea",
                     verified=True, md5_of="gunzipped"),
    "labels": Remote("https://ossci-datasets.s3.amazonaws.com/mnist/t10k-labels-idx1-ubyte.gz",
                     "t10k-labels-idx1-ubyte.gz", "27ae3e4e09519cfbb04c329615203637",
                     verified=True, md5_of="gunzipped"),
}


def read_idx(path: PathLike) -> np.ndarray:
    """An IDX file of unsigned bytes (MNIST), gzipped or not."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4:
        raise ValueError(f"{path}: not an IDX file")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: {body.size} bytes of data for shape {shape}")
    return body.reshape(shape)


def rotate_digits(images: torch.Tensor, angles_deg: torch.Tensor) -> torch.Tensor:
    """Rotate each image [N, C, H, W] counter-clockwise by its angle (degrees) about its centre:
    bilinear, zero fill, pixel-centre coordinates (torchvision ``rotate`` semantics, batched)."""
    if images.dim() != 4 or angles_deg.shape != (images.shape[0],):
        raise ValueError("rotate_digits needs images [N, C, H, W] and one angle per image")
    r = torch.deg2rad(angles_deg.to(torch.float64))
    c, s, z = torch.cos(r), torch.sin(r), torch.zeros_like(r)
    theta = torch.stack([torch.stack([c, -s, z], -1), torch.stack([s, c, z], -1)], 1)
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class MNISTRotAux(EvalSet):
    """Auxiliary offline set: the MNIST test digits, each rotated by a seeded random angle and
    transposed into the rot-MNIST orientation (see the module docstring). Files
    (``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``) are looked for in
    ``<data_dir>``, ``<data_dir>/mnist`` and ``<data_dir>/MNIST/raw`` (torchvision's layout)."""
    name = "mnist-rot-aux"
    serves = "rotmnist"
    canonical = False
    expected_size = 10000
    input_size = (1, 28, 28)

    def __init__(self, data_dir: Optional[PathLike] = None, download: bool = False,
                 progress: bool = True, seed: int = MNIST_ROT_AUX_SEED, verify: bool = True):
        self.data_dir = Path(data_dir) if data_dir else default_data_dir()
        self.seed = seed
        paths = self._locate(download, progress)
        if verify:
            for key, p in paths.items():
                _check_md5(p, MNIST_REMOTES[key].md5, True, gunzipped=True)
        digits = torch.from_numpy(read_idx(paths["images"]).copy())
        labels = torch.from_numpy(read_idx(paths["labels"]).astype(np.int64))
        if digits.dim() != 3 or digits.shape[1:] != (28, 28) or len(digits) != len(labels):
            raise ValueError(f"MNIST files of shapes {tuple(digits.shape)} / {tuple(labels.shape)}")
        self.paths = paths
        gen = torch.Generator().manual_seed(seed)
        self.angles = torch.rand(len(digits), generator=gen, dtype=torch.float64) * 360.0
        rotated = rotate_digits(digits.to(torch.float32).div(255.0).unsqueeze(1), self.angles)
        rotated = rotated.transpose(-2, -1).contiguous()  # into the rot-MNIST orientation
        x = rotated.to(torch.float64)
        self.mean = float(x.mean())
        self.std = float((x - self.mean).pow(2).mean().sqrt())
        self._x = ((x - self.mean) / self.std).to(torch.float32)
        self.labels = labels

    def _candidates(self) -> List[Path]:
        return [self.data_dir, self.data_dir / "mnist", self.data_dir / "MNIST" / "raw"]

    def _locate(self, download: bool, progress: bool) -> Dict[str, Path]:
        def find(filename: str) -> Optional[Path]:
            for folder in self._candidates():
                for name in (filename, filename[:-3]):  # gzipped or not
                    if (folder / name).is_file():
                        return folder / name
            return None

        found = {k: find(r.filename) for k, r in MNIST_REMOTES.items()}
        missing = [k for k, p in found.items() if p is None]
        if missing:
            needed = [r.filename for r in MNIST_REMOTES.values()]
            urls = [r.url for r in MNIST_REMOTES.values()]
            looked = self._candidates()
            if not download:
                raise DataNotFoundError(self.name, needed, self.data_dir, looked, urls)
            for k in missing:
                found[k] = _fetch(MNIST_REMOTES[k], looked[0], dataset=self.name, needed=needed,
                                  data_dir=self.data_dir, looked_in=looked, urls=urls,
                                  progress=progress)
        return found

    def _images(self, start: int, stop: int) -> torch.Tensor:
        return self._x[start:stop]

    def describe(self) -> dict:
        return {**super().describe(), "source": {k: str(p) for k, p in self.paths.items()},
                "rotation": f"seed {self.seed}: angle_i = U[0, 360) degrees "
                            f"(torch.rand float64), bilinear, zero fill, then transposed",
                "normalize": {"mean": self.mean, "std": self.std,
                              "of": "the rotated digits themselves"},
                "note": "auxiliary set made from the MNIST test digits; not mnist_rotation_new"}


# ----------------------------------------------------------------------------- CIFAR-10

CIFAR10_REMOTE = Remote("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                        "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
                        verified=True, source="torchvision.datasets.CIFAR10")
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TEST_MD5 = "40351d587109b95175f43aff81a1287e"  # test_batch, as torchvision checks it


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings and numpy arrays, nothing that could run code."""
    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.numeric", "_frombuffer"),
                ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def _load_cifar_pickle(path: Path) -> dict:
    with open(path, "rb") as f:
        obj = _ArraysOnlyUnpickler(f, encoding="latin1").load()
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: not a CIFAR batch (a {type(obj).__name__})")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


class _NormalisedUint8(EvalSet):
    """Images stored as uint8 [N, C, H, W]: ToTensor scaling, then per-channel mean/std."""
    mean: Tuple[float, ...] = IMAGENET_MEAN
    std: Tuple[float, ...] = IMAGENET_STD

    def _normalise(self, x_uint8_nchw: torch.Tensor) -> torch.Tensor:
        x = x_uint8_nchw.to(torch.float32).div(255.0)
        m = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        s = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        return (x - m) / s


class CIFAR10Test(_NormalisedUint8):
    """CIFAR-10 test split from torchvision's ``cifar-10-batches-py`` folder (looked for in
    ``<data_dir>`` and ``<data_dir>/cifar10``). ``verify`` checks ``test_batch`` against its
    canonical md5 before reading it."""
    name = "cifar10"
    serves = "cifar10"
    canonical = True
    expected_size = 10000
    input_size = (3, 32, 32)

    def __init__(self, data_dir: Optional[PathLike] = None, download: bool = False,
                 progress: bool = True, verify: bool = True):
        self.data_dir = Path(data_dir) if data_dir else default_data_dir()
        folder = self._locate(download, progress)
        path = folder / "test_batch"
        if verify:
            _check_md5(path, CIFAR10_TEST_MD5, verified=True)
        batch = _load_cifar_pickle(path)
        data = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch["labels"], dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
            raise ValueError(f"{path}: data {data.shape}, {len(labels)} labels")
        if labels.min() < 0 or labels.max() > 9:
            raise ValueError(f"{path}: labels outside 0-9")
        meta = folder / "batches.meta"
        if meta.is_file():
            names = [n.decode() if isinstance(n, bytes) else n
                     for n in _load_cifar_pickle(meta).get("label_names", [])]
            if names and tuple(names) != CIFAR10_CLASSES:
                raise ValueError(f"{meta}: label names {names} are not CIFAR-10's")
        # each row: 1024 red, 1024 green, 1024 blue values, each plane row-major
        self._x = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
        self.labels = torch.from_numpy(labels)
        self.path = path

    def _candidates(self) -> List[Path]:
        return [self.data_dir / CIFAR10_FOLDER, self.data_dir / "cifar10" / CIFAR10_FOLDER]

    def _locate(self, download: bool, progress: bool) -> Path:
        for folder in self._candidates():
            if (folder / "test_batch").is_file():
                return folder
        needed = [f"{CIFAR10_FOLDER}/test_batch", f"{CIFAR10_FOLDER}/batches.meta"]
        looked = self._candidates()
        if not download:
            raise DataNotFoundError(self.name, needed, self.data_dir, looked, [CIFAR10_REMOTE.url])
        archive = _fetch(CIFAR10_REMOTE, self.data_dir, dataset=self.name, needed=needed,
                         data_dir=self.data_dir, looked_in=looked, urls=[CIFAR10_REMOTE.url],
                         progress=progress)
        out = looked[0]
        out.mkdir(parents=True, exist_ok=True)
        from .convert import atomic_write_bytes
        with tarfile.open(archive, "r:gz") as tar:  # only the two regular files we need
            for wanted in ("test_batch", "batches.meta"):
                member = tar.getmember(f"{CIFAR10_FOLDER}/{wanted}")
                if not member.isfile():
                    raise ValueError(f"{archive}: {member.name} is not a regular file")
                atomic_write_bytes(out / wanted, tar.extractfile(member).read())
        return out

    def _images(self, start: int, stop: int) -> torch.Tensor:
        return self._normalise(self._x[start:stop])

    def describe(self) -> dict:
        return {**super().describe(), "source": str(self.path),
                "normalize": {"mean": list(self.mean), "std": list(self.std)}}


class CIFAR10JPEG(_NormalisedUint8):
    """Auxiliary offline set: CIFAR-10 test images as JPEG in ImageFolder layout (looked for in
    ``<data_dir>/cifar10/test_jpeg``, ``<data_dir>/test_jpeg`` and ``<data_dir>``). Class
    folders are read in CIFAR-10's label order, files in name order. Lossy: accuracy here runs a
    little below the canonical set's."""
    name = "cifar10-jpeg"
    serves = "cifar10"
    canonical = False
    expected_size = 10000
    input_size = (3, 32, 32)

    def __init__(self, data_dir: Optional[PathLike] = None, download: bool = False,
                 progress: bool = True):
        self.data_dir = Path(data_dir) if data_dir else default_data_dir()
        self.root = self._locate()
        files, labels = [], []
        for label, cls in enumerate(CIFAR10_CLASSES):
            for p in sorted((self.root / cls).iterdir()):
                if p.suffix.lower() in (".jpg", ".jpeg", ".png"):
                    files.append(p)
                    labels.append(label)
        self.files = files
        self.labels = torch.tensor(labels, dtype=torch.int64)

    def _candidates(self) -> List[Path]:
        return [self.data_dir / "cifar10" / "test_jpeg", self.data_dir / "test_jpeg", self.data_dir]

    def _locate(self) -> Path:
        for folder in self._candidates():
            if all((folder / c).is_dir() for c in CIFAR10_CLASSES):
                return folder
        raise DataNotFoundError(self.name, [f"test_jpeg/{c}/NNNN.jpg" for c in CIFAR10_CLASSES[:2]]
                                + ["... (one folder per class)"], self.data_dir,
                                self._candidates(), [])

    def _images(self, start: int, stop: int) -> torch.Tensor:
        from PIL import Image

        arrays = []
        for p in self.files[start:stop]:
            with Image.open(p) as im:
                arrays.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
        if tuple(x.shape[1:]) != self.input_size:
            raise ValueError(f"{self.root}: images of size {tuple(x.shape[1:])}, expected 32x32 RGB")
        return self._normalise(x)

    def describe(self) -> dict:
        return {**super().describe(), "source": str(self.root),
                "normalize": {"mean": list(self.mean), "std": list(self.std)},
                "note": "lossy JPEG copy of the CIFAR-10 test set"}


# ----------------------------------------------------------------------------- PCam

_ZENODO = "https://zenodo.org/record/2546921/files/"
PCAM_REMOTES = {
    # md5 of the gunzipped .h5, as recorded by one public loader (kaiko-ai/eva); not checked here
    "x": Remote(_ZENODO + "camelyonpatch_level_2_split_test_x.h5.gz",
                "camelyonpatch_level_2_split_test_x.h5.gz", "2614b2e6717d6356be141d9d6dbfcb7e",
                verified=False, md5_of="gunzipped", source="kaiko-ai/eva PatchCamelyon loader"),
    "y": Remote(_ZENODO + "camelyonpatch_level_2_split_test_y.h5.gz",
                "camelyonpatch_level_2_split_test_y.h5.gz", "11ed647efe9fe457a4eb45df1dba19ba",
                verified=False, md5_of="gunzipped", source="kaiko-ai/eva PatchCamelyon loader"),
}


def _require_h5py():
    try:
        import h5py
    except ImportError as e:
        raise ImportError("reading PCam needs h5py: pip install h5py "
                          "(or pip install agcnn-zoo[pcam])") from e
    return h5py


class PCamTest(_NormalisedUint8):
    """PatchCamelyon test split from the two h5 files (looked for in ``<data_dir>/pcam`` and
    ``<data_dir>``, torchvision's file names). Images are read from disk batch by batch."""
    name = "pcam"
    serves = "pcam"
    canonical = True
    expected_size = 32768
    input_size = (3, 96, 96)
    num_classes = 2
    mean = PCAM_MEAN
    std = PCAM_STD

    def __init__(self, data_dir: Optional[PathLike] = None, download: bool = False,
                 progress: bool = True):
        h5py = _require_h5py()
        self.data_dir = Path(data_dir) if data_dir else default_data_dir()
        self.paths = self._locate(download, progress)
        with h5py.File(self.paths["y"], "r") as f:
            if "y" not in f:
                raise ValueError(f"{self.paths['y']}: no dataset 'y' (keys: {list(f.keys())})")
            y = np.asarray(f["y"][()])
        with h5py.File(self.paths["x"], "r") as f:
            if "x" not in f:
                raise ValueError(f"{self.paths['x']}: no dataset 'x' (keys: {list(f.keys())})")
            shape, dtype = f["x"].shape, f["x"].dtype
        if len(shape) != 4 or tuple(shape[1:]) != (96, 96, 3) or dtype != np.uint8:
            raise ValueError(f"{self.paths['x']}: x is {dtype} {shape}, expected uint8 [N, 96, 96, 3]")
        if y.shape[0] != shape[0] or y.size != shape[0]:
            raise ValueError(f"{self.paths['y']}: y {y.shape} does not fit {shape[0]} images")
        y = y.reshape(-1).astype(np.int64)
        if y.min() < 0 or y.max() > 1:
            raise ValueError(f"{self.paths['y']}: labels outside 0-1")
        self.labels = torch.from_numpy(y)
        self._h5 = None  # opened lazily, per process (h5py handles do not survive fork)

    def _candidates(self) -> List[Path]:
        return [self.data_dir / "pcam", self.data_dir]

    def _locate(self, download: bool, progress: bool) -> Dict[str, Path]:
        names = {k: r.filename[:-3] for k, r in PCAM_REMOTES.items()}
        for folder in self._candidates():
            if all((folder / n).is_file() for n in names.values()):
                return {k: folder / n for k, n in names.items()}
        looked = self._candidates()
        urls = [r.url for r in PCAM_REMOTES.values()]
        needed = list(names.values())
        if not download:
            raise DataNotFoundError(self.name, needed, self.data_dir, looked, urls)
        out = looked[0]
        found = {}
        for k, remote in PCAM_REMOTES.items():
            target = out / names[k]
            if not target.is_file():
                gz = _fetch(remote, out, dataset=self.name, needed=needed, data_dir=self.data_dir,
                            looked_in=looked, urls=urls, progress=progress)
                _gunzip_to(gz, target)
                gz.unlink()
                _check_md5(target, remote.md5, remote.verified)
            found[k] = target
        return found

    def _images(self, start: int, stop: int) -> torch.Tensor:
        if self._h5 is None:
            self._h5 = _require_h5py().File(self.paths["x"], "r")
        x = torch.from_numpy(np.asarray(self._h5["x"][start:stop])).permute(0, 3, 1, 2)
        return self._normalise(x)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_h5"] = None
        return state

    def describe(self) -> dict:
        return {**super().describe(), "source": {k: str(p) for k, p in self.paths.items()},
                "normalize": {"mean": list(self.mean), "std": list(self.std)}}


# ----------------------------------------------------------------------------- registry

#: evaluation set name -> reader
EVAL_SETS = {"rotmnist": RotMNIST, "cifar10": CIFAR10Test, "pcam": PCamTest,
             "mnist-rot-aux": MNISTRotAux, "cifar10-jpeg": CIFAR10JPEG}
#: a model's training dataset -> its canonical test set
CANONICAL_SET = {"rotmnist": "rotmnist", "cifar10": "cifar10", "pcam": "pcam"}


def load_eval_set(name: str, data_dir: Optional[PathLike] = None, download: bool = False,
                  progress: bool = True) -> EvalSet:
    """The evaluation set ``name`` (one of :data:`EVAL_SETS`)."""
    try:
        cls = EVAL_SETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(EVAL_SETS)}") from None
    return cls(data_dir, download=download, progress=progress)
