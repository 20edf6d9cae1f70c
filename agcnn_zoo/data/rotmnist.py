"""rot-MNIST (mnist_rotation_new, Larochelle et al. 2007): the canonical test set of the
rot-MNIST weights.

The zip holds ``mnist_all_rotation_normalized_float_train_valid.amat`` (12,000 rows) and
``mnist_all_rotation_normalized_float_test.amat`` (50,000 rows): each text row is 784 pixel
values in [0, 1] then the label written as a float. The authors' npz conversion
(``train_all.npz`` / ``test.npz``, arrays ``data`` and ``labels``) is read as well.

Both store every digit **transposed** w.r.t. MNIST (a row-major reshape of a row gives the
transposed digit): the reader transposes them back, so it returns digits as MNIST holds them,
the frame every zoo weight takes (the authors' checkpoints were converted with the
transposition folded in, see ``agcnn_zoo.nn.orientation``). Images are normalised with the
scalar mean / population std of the training pixels (float64), cached in
``rotmnist_stats.json``. NaN or infinite pixels, pixels outside [0, 1] and non-integer labels
are refused. A downloaded zip is checked (a zip holding both members) before it is kept; npz
files are read without unpickling (``allow_pickle=False``).
"""
from __future__ import annotations

import io
import json
import warnings
import zipfile
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import numpy as np
import torch

from ..io.download import looks_like_html
from ..io.env import show_progress
from ..io.errors import CacheError
from ..io.files import atomic_write_bytes, md5_file
from ._common import (DataFormatError, DataNotFoundError, EvalSet, PathLike, Remote,
                      default_data_dir, fetch_remote, reading, scalar_mean_std)

__all__ = ["RotMNIST", "ROTMNIST_REMOTE", "ROTMNIST_FILES", "ROTMNIST_NPZ", "ROTMNIST_SIZES",
           "ROTMNIST_STATS", "check_rotmnist_zip", "read_npz"]


ROTMNIST_REMOTE = Remote(
    url="http://www.iro.umontreal.ca/~lisa/icml2007data/mnist_rotation_new.zip",
    filename="mnist_rotation_new.zip",
    md5="0f9a947ff3d30e95cd685462cbf3b847", verified=False,
    source="recorded by one public loader; never checked against a real download here",
    max_size=512 << 20)
ROTMNIST_FILES = {"train": "mnist_all_rotation_normalized_float_train_valid.amat",
                  "test": "mnist_all_rotation_normalized_float_test.amat"}
#: the authors' npz conversion of the same two files
ROTMNIST_NPZ = {"train": "train_all.npz", "test": "test.npz"}
ROTMNIST_SIZES = {"train": 12000, "test": 50000}
ROTMNIST_STATS = "rotmnist_stats.json"


def _describe_bytes(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(64)
    return "an HTML page" if looks_like_html(head) else f"a file starting with {head[:16]!r}"


def check_rotmnist_zip(path: Path) -> None:
    """Raise ValueError unless ``path`` is a zip holding both .amat members."""
    if not zipfile.is_zipfile(path):
        raise ValueError(f"not a zip archive ({_describe_bytes(path)})")
    with zipfile.ZipFile(path) as zf:
        members = {n.rsplit("/", 1)[-1] for n in zf.namelist()}
        bad = zf.testzip()
    missing = [m for m in ROTMNIST_FILES.values() if m not in members]
    if missing:
        raise ValueError(f"the zip lacks {', '.join(missing)}")
    if bad is not None:
        raise ValueError(f"corrupt member {bad} in the zip")


def _checked(px: np.ndarray, lab: np.ndarray, desc: str) -> Tuple[np.ndarray, np.ndarray]:
    """Rows of 784 stored pixels and their labels -> (natural-orientation images float32
    [N, 28, 28], labels int64), refusing what the published files cannot hold."""
    if px.ndim != 2 or px.shape[1] != 784 or len(px) != len(lab):
        raise ValueError(f"{desc}: {px.shape} pixels for {len(lab)} labels, expected 784 per row")
    if not np.all((lab == np.round(lab)) & (lab >= 0) & (lab <= 9)):
        raise ValueError(f"{desc}: labels must be the integers 0-9")
    if not np.isfinite(px).all():
        raise ValueError(f"{desc}: NaN or infinite pixel values")
    if px.size and (px.min() < -1e-6 or px.max() > 1 + 1e-6):
        raise ValueError(f"{desc}: pixel values outside [0, 1]")
    # a row-major reshape gives the stored (transposed) digit; transpose it back
    images = px.reshape(-1, 28, 28).transpose(0, 2, 1).astype(np.float32)
    return np.ascontiguousarray(images), lab.astype(np.int64)


def read_npz(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    """The authors' npz conversion (``data`` [N, 1, 28, 28] or [N, 784], ``labels`` [N])."""
    with reading(path, "npz file"):
        try:
            with np.load(path, allow_pickle=False) as z:
                if "data" not in z.files or "labels" not in z.files:
                    raise ValueError(f"{path}: holds {', '.join(z.files) or 'nothing'}, expected "
                                     f"the arrays 'data' and 'labels'")
                data, labels = np.asarray(z["data"]), np.asarray(z["labels"]).reshape(-1)
        except (ValueError, OSError, zipfile.BadZipFile) as e:
            raise DataFormatError(path, "the authors' npz conversion (data, labels)", str(e),
                                  what="structure") from None
    return _checked(data.reshape(len(data), -1).astype(np.float64), labels.astype(np.float64), str(path))


def _parse_amat(lines: Iterator[str], expected: Optional[int], desc: str, progress: bool,
                chunk: int = 2000) -> Tuple[np.ndarray, np.ndarray]:
    """Rows of ``784 pixels + label`` -> (natural-orientation images float32 [N, 28, 28],
    labels int64)."""
    from tqdm.auto import tqdm

    images, labels = [], []
    buf: List[str] = []
    with tqdm(total=expected, unit="row", desc=f"reading {desc}", disable=not show_progress(progress)) as bar:
        def flush():
            rows = np.loadtxt(buf, dtype=np.float64, ndmin=2)
            if rows.shape[1] != 785:
                raise ValueError(f"{desc}: rows of {rows.shape[1]} numbers, expected 784 pixels "
                                 f"+ 1 label")
            px, lab = _checked(rows[:, :784], rows[:, 784], desc)
            images.append(px)
            labels.append(lab)
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
            if all((folder / f).is_file() for f in ROTMNIST_NPZ.values()):
                return folder, folder / ROTMNIST_NPZ["train"]
            if (folder / ROTMNIST_REMOTE.filename).is_file():
                return folder, folder / ROTMNIST_REMOTE.filename
        looked = self._candidates()
        if not download:
            raise DataNotFoundError("rotmnist", needed, self.data_dir, looked,
                                    [ROTMNIST_REMOTE.url])
        path = fetch_remote(ROTMNIST_REMOTE, looked[0], dataset="rotmnist", needed=needed,
                            data_dir=self.data_dir, looked_in=looked, urls=[ROTMNIST_REMOTE.url],
                            progress=self.progress, check=check_rotmnist_zip)
        return looked[0], path

    def _lines(self, split: str) -> Iterator[str]:
        member = ROTMNIST_FILES[split]
        if self.source.is_dir():
            with open(self.source / member, encoding="ascii") as f:
                yield from f
            return
        if not zipfile.is_zipfile(self.source):
            raise DataFormatError(self.source, "a zip archive", _describe_bytes(self.source),
                                  what="structure",
                                  hint=f"delete {self.source} and retry with download=True "
                                       f"(or put the two .amat files there)")
        with zipfile.ZipFile(self.source) as zf:
            names = [n for n in zf.namelist() if n.rsplit("/", 1)[-1] == member]
            if not names:
                raise ValueError(f"{self.source} holds no {member} (members: "
                                 f"{', '.join(zf.namelist())})")
            with zf.open(names[0]) as raw:
                yield from io.TextIOWrapper(raw, encoding="ascii")

    def _read(self, split: str) -> Tuple[np.ndarray, np.ndarray]:
        if self.source.suffix == ".npz":
            images, labels = read_npz(self.source.with_name(ROTMNIST_NPZ[split]))
        else:
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
        mean, std = scalar_mean_std(train)
        record = {"mean": mean, "std": std, "images": int(len(train)),
                  "how": "scalar mean / population std of all training pixels (float64)",
                  "source": fingerprint}
        try:
            atomic_write_bytes(cache, (json.dumps(record, indent=2) + "\n").encode(),
                               what="data folder")
        except (OSError, CacheError) as e:  # a read-only data dir: recompute next time
            warnings.warn(f"could not cache rot-MNIST statistics at {cache}: {e}", stacklevel=2)
        return mean, std

    def _images(self, start: int, stop: int) -> torch.Tensor:
        x = self._raw[start:stop].to(torch.float64)
        return ((x - self.mean) / self.std).to(torch.float32).unsqueeze(1)

    def describe(self) -> dict:
        return {**super().describe(), "source": str(self.source), "split": self.split,
                "orientation": "MNIST's (the stored rows, transposed w.r.t. MNIST, transposed back)",
                "normalize": {"mean": self.mean, "std": self.std,
                              "of": "the 12,000 training images"}}
