"""CIFAR-10 test sets: the canonical pickle batch and the auxiliary lossy JPEG copy.

``cifar10``: the test split as torchvision stores it (``cifar-10-batches-py/test_batch``, a
pickle with ``data`` uint8 [10000, 3072] in R, G, B planes and ``labels``), unpickled with an
allow-list (arrays only, nothing that runs code); ToTensor scaling then ImageNet mean/std.
``cifar10-jpeg``: a lossy JPEG copy in ImageFolder layout (``<class>/NNNN.jpg``), same
preprocessing. Labels must be integers; a downloaded archive is checked before it is kept.
"""
from __future__ import annotations

import pickle
import tarfile
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch

from ..io.files import atomic_write_bytes
from ._common import (IMAGENET_MEAN, IMAGENET_STD, DataNotFoundError, PathLike, Remote,
                      _NormalisedUint8, check_md5, default_data_dir, fetch_remote,
                      integer_labels)

__all__ = ["CIFAR10Test", "CIFAR10JPEG", "read_cifar10_train", "read_cifar_batch", "CIFAR10_REMOTE", "CIFAR10_FOLDER", "CIFAR10_TEST_MD5",
           "CIFAR10_CLASSES", "IMAGENET_MEAN", "IMAGENET_STD"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")


CIFAR10_REMOTE = Remote("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                        "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
                        verified=True, source="torchvision.datasets.CIFAR10",
                        max_size=512 << 20)
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


def check_cifar_archive(path: Path) -> None:
    """Raise ValueError unless ``path`` is a tar.gz holding the two regular files we read."""
    try:
        with tarfile.open(path, "r:gz") as tar:
            for wanted in ("test_batch", "batches.meta"):
                member = tar.getmember(f"{CIFAR10_FOLDER}/{wanted}")
                if not member.isfile():
                    raise ValueError(f"{member.name} is not a regular file")
    except (tarfile.TarError, KeyError, EOFError, OSError) as e:
        raise ValueError(f"not the CIFAR-10 archive: {e}") from None


CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))


def read_cifar_batch(path: Path):
    """(uint8 images [N, 3, 32, 32], int64 labels) of one CIFAR-10 pickle batch."""
    batch = _load_cifar_pickle(path)
    data = np.asarray(batch["data"], dtype=np.uint8)
    labels = integer_labels(batch["labels"], str(path))
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise ValueError(f"{path}: data {data.shape}, {len(labels)} labels")
    if labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"{path}: labels outside 0-9")
    # each row: 1024 red, 1024 green, 1024 blue values, each plane row-major
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels)


def read_cifar10_train(data_dir: Optional[PathLike] = None, download: bool = False,
                       progress: bool = True):
    """``(images uint8 [N, 3, 32, 32], labels, folder)`` of ``data_batch_1..5`` in torchvision's
    ``cifar-10-batches-py`` folder (``<data_dir>`` or ``<data_dir>/cifar10``); downloaded and
    extracted (those regular files only) when asked."""
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    looked = [data_dir / CIFAR10_FOLDER, data_dir / "cifar10" / CIFAR10_FOLDER]
    wanted = CIFAR10_TRAIN_BATCHES + ("test_batch", "batches.meta")
    folder = next((f for f in looked if all((f / b).is_file() for b in CIFAR10_TRAIN_BATCHES)), None)
    if folder is None:
        needed = [f"{CIFAR10_FOLDER}/{b}" for b in wanted]
        if not download:
            raise DataNotFoundError("cifar10", needed, data_dir, looked, [CIFAR10_REMOTE.url])
        archive = fetch_remote(CIFAR10_REMOTE, data_dir, dataset="cifar10", needed=needed,
                               data_dir=data_dir, looked_in=looked, urls=[CIFAR10_REMOTE.url],
                               progress=progress, check=check_cifar_archive)
        folder = looked[0]
        with tarfile.open(archive, "r:gz") as tar:
            for name in wanted:
                member = tar.getmember(f"{CIFAR10_FOLDER}/{name}")
                if not member.isfile():
                    raise ValueError(f"{archive}: {member.name} is not a regular file")
                atomic_write_bytes(folder / name, tar.extractfile(member).read())
    parts = [read_cifar_batch(folder / b) for b in CIFAR10_TRAIN_BATCHES]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]), folder


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
            check_md5(path, CIFAR10_TEST_MD5, verified=True)
        self._x, self.labels = read_cifar_batch(path)
        meta = folder / "batches.meta"
        if meta.is_file():
            names = [n.decode() if isinstance(n, bytes) else n
                     for n in _load_cifar_pickle(meta).get("label_names", [])]
            if names and tuple(names) != CIFAR10_CLASSES:
                raise ValueError(f"{meta}: label names {names} are not CIFAR-10's")
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
        archive = fetch_remote(CIFAR10_REMOTE, self.data_dir, dataset=self.name, needed=needed,
                               data_dir=self.data_dir, looked_in=looked, urls=[CIFAR10_REMOTE.url],
                               progress=progress, check=check_cifar_archive)
        out = looked[0]
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
