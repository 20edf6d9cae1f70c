"""Training data: a train / validation / test triple per dataset, preprocessed as the authors'
pipelines did. Model selection uses the validation split, carved from the training data; the
test split is built only when the selected weight is evaluated (once, at the end of a run).

``rotmnist``
    mnist_rotation_new: its 12,000-row train_valid file, split as its authors (Larochelle et
    al. 2007) did: the first 10,000 rows train, the last 2,000 validate; test: its 50,000 rows.
    Normalised with the scalar mean / population std of all 12,000 training images.
``mnist-rot-gen``
    an offline stand-in, generated from the MNIST TRAINING digits (never test digits):
    ``g = torch.Generator().manual_seed(MNIST_ROT_GEN_SEED)``; 12,000 digits
    ``torch.randperm(60000, generator=g)[:12000]``, angles ``torch.rand(12000, generator=g,
    dtype=float64) * 360`` degrees counter-clockwise (bilinear, zero fill), then transposed into
    the rot-MNIST orientation. First 10,000 train, last 2,000 validate; normalised with the scalar
    mean / population std of the 12,000 (recorded as numbers). Test: ``mnist-rot-aux`` (the
    rotated MNIST test digits) normalised with these training statistics.
``cifar10``
    torchvision's ``cifar-10-batches-py``: ``data_batch_1..5`` (50,000), the first 45,000 train,
    the last 5,000 validate; test: ``test_batch``. ImageNet mean/std after ToTensor scaling.
``pcam``
    PatchCamelyon's own train (262,144) / valid (32,768) / test (32,768) h5 files, read from disk
    batch by batch; the authors' rounded mean/std after ToTensor scaling.
"""
from __future__ import annotations

import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .. import data as zdata

__all__ = ["Source", "TrainingData", "load_training_data", "TRAINING_SETS", "MNIST_ROT_GEN_SEED",
           "augment_batch", "MNIST_TRAIN_REMOTES"]

PathLike = Union[str, Path]

#: part of the definition of mnist-rot-gen (which digits, which angles)
MNIST_ROT_GEN_SEED = 0
MNIST_ROT_GEN_SIZES = (10000, 2000)

MNIST_TRAIN_REMOTES = {
    # md5 of the gunzipped content, checked against the canonical copy in shared/data/mnist
    "images": zdata.Remote("https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz",
                           "train-images-idx3-ubyte.gz", "6bbc9ace898e44ae57da46a324031adb",
                           verified=True, md5_of="gunzipped"),
    "labels": zdata.Remote("https://ossci-datasets.s3.amazonaws.com/mnist/train-labels-idx1-ubyte.gz",
                           "train-labels-idx1-ubyte.gz", "a25bea736e30d166cdddb491f175f624",
                           verified=True, md5_of="gunzipped"),
}


class Source:
    """One split: raw pixels (uint8, or float in [0, 1]) [N, C, H, W] and int64 labels;
    :meth:`batch` returns normalised float32 images, augmented first when asked.
    ``ids`` names the underlying images (to check that splits are disjoint)."""

    def __init__(self, raw: torch.Tensor, labels: torch.Tensor, mean: Sequence[float],
                 std: Sequence[float], ids: Optional[Sequence[str]] = None):
        if raw.dim() != 4 or len(raw) != len(labels):
            raise ValueError(f"images {tuple(raw.shape)} and labels {tuple(labels.shape)} do not fit")
        self.raw, self.labels = raw, labels.to(torch.int64)
        c = raw.shape[1]
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1).expand(1, c, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1).expand(1, c, 1, 1)
        self.ids = list(ids) if ids is not None else None

    def __len__(self) -> int:
        return int(self.labels.numel())

    def _raw(self, idx: torch.Tensor) -> torch.Tensor:
        return self.raw[idx]

    def batch(self, idx: torch.Tensor, augment: Sequence[str] = (),
              generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        x = self._raw(idx)
        x = x.to(torch.float32).div_(255.0) if x.dtype == torch.uint8 else x.to(torch.float32)
        if augment:
            x = augment_batch(x, augment, generator)
        return (x - self.mean) / self.std, self.labels[idx]

    def limited(self, n: Optional[int]) -> "Source":
        """The first ``n`` images (all when None)."""
        if n is None or n >= len(self):
            return self
        if n < 1:
            raise ValueError(f"a limit must be >= 1, got {n}")
        out = object.__new__(type(self))
        out.__dict__.update(self.__dict__)
        out.raw, out.labels = self.raw[:n], self.labels[:n]
        out.ids = self.ids[:n] if self.ids is not None else None
        return out


class H5Source(Source):
    """A split read from an h5 file batch by batch (PCam: uint8 [N, 96, 96, 3])."""

    def __init__(self, x_path: Path, labels: torch.Tensor, mean, std, key: str = "x"):
        self.path, self.key = Path(x_path), key
        self.raw = None
        self._h5 = None
        self._n = len(labels)
        self.labels = labels.to(torch.int64)
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)
        self.ids = None

    def __len__(self) -> int:
        return int(self.labels.numel())

    def _raw(self, idx: torch.Tensor) -> torch.Tensor:
        if self._h5 is None:
            self._h5 = zdata._require_h5py().File(self.path, "r")
        order = torch.argsort(idx)
        sorted_idx = idx[order].numpy()  # h5py wants increasing indices
        unique, inverse = np.unique(sorted_idx, return_inverse=True)
        block = torch.from_numpy(np.asarray(self._h5[self.key][unique]))[torch.from_numpy(inverse)]
        out = torch.empty_like(block)
        out[order] = block
        return out.permute(0, 3, 1, 2)

    def limited(self, n: Optional[int]) -> "Source":
        if n is None or n >= len(self):
            return self
        out = H5Source(self.path, self.labels[:n], [0.0], [1.0], self.key)
        out.mean, out.std = self.mean, self.std
        return out


def augment_batch(x: torch.Tensor, augment: Sequence[str], generator: Optional[torch.Generator]
                  ) -> torch.Tensor:
    """The authors' torchvision augmentations, per sample, on [0, 1] images [B, C, H, W]:
    ``hflip`` (RandomHorizontalFlip, p 0.5) then ``crop32_pad4`` (RandomCrop(32, padding=4),
    zero padding). Random numbers come from ``generator`` (seeded per epoch by the engine)."""
    b = x.shape[0]
    for a in augment:
        if a == "hflip":
            flip = torch.rand(b, generator=generator) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        elif a == "crop32_pad4":
            h, w = x.shape[-2:]
            if (h, w) != (32, 32):
                raise ValueError(f"crop32_pad4 needs 32x32 images, got {h}x{w}")
            padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
            oy = torch.randint(0, 9, (b,), generator=generator)
            ox = torch.randint(0, 9, (b,), generator=generator)
            rows = (oy[:, None] + torch.arange(32))[:, None, :, None]
            cols = (ox[:, None] + torch.arange(32))[:, None, None, :]
            bi = torch.arange(b)[:, None, None, None]
            ci = torch.arange(x.shape[1])[None, :, None, None]
            x = padded[bi, ci, rows, cols]
        else:
            raise ValueError(f"unknown augmentation {a!r}")
    return x


@dataclass
class TrainingData:
    """What a run trains on. ``test`` is built on demand (``load_test()``), once."""
    dataset: str
    train: Source
    val: Source
    test_name: str
    load_test: Callable[[], Source]
    info: Dict[str, object] = field(default_factory=dict)


# ----------------------------------------------------------------------------- readers

def _mnist_train_files(data_dir: Path, download: bool, progress: bool) -> Dict[str, Path]:
    candidates = [data_dir, data_dir / "mnist", data_dir / "MNIST" / "raw"]

    def find(filename: str) -> Optional[Path]:
        for folder in candidates:
            for name in (filename, filename[:-3]):
                if (folder / name).is_file():
                    return folder / name
        return None

    found = {k: find(r.filename) for k, r in MNIST_TRAIN_REMOTES.items()}
    missing = [k for k, p in found.items() if p is None]
    if missing:
        needed = [r.filename for r in MNIST_TRAIN_REMOTES.values()]
        urls = [r.url for r in MNIST_TRAIN_REMOTES.values()]
        if not download:
            raise zdata.DataNotFoundError("mnist-rot-gen", needed, data_dir, candidates, urls,
                                          reason="the MNIST training set; pass --download to fetch it")
        for k in missing:
            found[k] = zdata._fetch(MNIST_TRAIN_REMOTES[k], candidates[0], dataset="mnist-rot-gen",
                                    needed=needed, data_dir=data_dir, looked_in=candidates,
                                    urls=urls, progress=progress)
    for k, p in found.items():
        zdata._check_md5(p, MNIST_TRAIN_REMOTES[k].md5, True, gunzipped=True)
    return found


def generate_mnist_rot(data_dir: Path, download: bool = False, progress: bool = True,
                       seed: int = MNIST_ROT_GEN_SEED) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """(rotated digits [12000, 1, 28, 28] in [0, 1] rot-MNIST orientation, labels, MNIST indices,
    description) of mnist-rot-gen."""
    paths = _mnist_train_files(Path(data_dir), download, progress)
    digits = torch.from_numpy(zdata.read_idx(paths["images"]).copy())
    labels = torch.from_numpy(zdata.read_idx(paths["labels"]).astype(np.int64))
    if tuple(digits.shape) != (60000, 28, 28) or len(labels) != 60000:
        raise ValueError(f"{paths['images']}: expected the 60,000 MNIST training digits, got "
                         f"{tuple(digits.shape)} / {len(labels)} labels")
    g = torch.Generator().manual_seed(seed)
    n = sum(MNIST_ROT_GEN_SIZES)
    chosen = torch.randperm(60000, generator=g)[:n]
    angles = torch.rand(n, generator=g, dtype=torch.float64) * 360.0
    x = zdata.rotate_digits(digits[chosen].to(torch.float32).div(255.0).unsqueeze(1), angles)
    x = x.transpose(-2, -1).contiguous()
    info = {"source": {k: str(p) for k, p in paths.items()}, "generator_seed": seed,
            "mnist_train_indices": "torch.randperm(60000, generator=g)[:12000]",
            "rotation": "angle_i = U[0, 360) degrees (torch.rand float64, same generator), "
                        "bilinear, zero fill, counter-clockwise, then transposed"}
    return x, labels[chosen], chosen, info


def _stats(x: torch.Tensor) -> Tuple[float, float]:
    """Scalar mean and population std (float64), as the original's numpy code."""
    x64 = x.to(torch.float64)
    mean = float(x64.mean())
    return mean, float((x64 - mean).pow(2).mean().sqrt())


def _mnist_rot_gen(data_dir: Path, download: bool, progress: bool) -> TrainingData:
    x, y, chosen, info = generate_mnist_rot(data_dir, download, progress)
    mean, std = _stats(x)
    n_train = MNIST_ROT_GEN_SIZES[0]
    ids = [f"mnist-train:{int(i)}" for i in chosen]
    train = Source(x[:n_train], y[:n_train], [mean], [std], ids[:n_train])
    val = Source(x[n_train:], y[n_train:], [mean], [std], ids[n_train:])

    def load_test() -> Source:
        aux = zdata.MNISTRotAux(data_dir, download=download, progress=progress)
        raw = (aux._x.to(torch.float64) * aux.std + aux.mean).to(torch.float32)  # its pixels back
        return Source(raw, aux.labels, [mean], [std],
                      [f"mnist-test:{i}" for i in range(len(aux.labels))])

    info.update({"train": n_train, "val": MNIST_ROT_GEN_SIZES[1],
                 "split": "first 10,000 of the 12,000 generated digits train, last 2,000 validate",
                 "normalize": {"mean": mean, "std": std, "of": "the 12,000 generated digits"}})
    return TrainingData("mnist-rot-gen", train, val, "mnist-rot-aux", load_test, info)


def _rotmnist(data_dir: Path, download: bool, progress: bool) -> TrainingData:
    full = zdata.RotMNIST(data_dir, split="train", download=download, progress=progress)
    raw = full._raw.unsqueeze(1)
    n = len(full)
    if n != 12000:
        raise ValueError(f"{full.source}: {n} training rows; the split needs the published 12,000")
    ids = [f"rotmnist-train:{i}" for i in range(n)]
    train = Source(raw[:10000], full.labels[:10000], [full.mean], [full.std], ids[:10000])
    val = Source(raw[10000:], full.labels[10000:], [full.mean], [full.std], ids[10000:])

    def load_test() -> Source:
        test = zdata.RotMNIST(data_dir, split="test", download=download, progress=progress)
        return Source(test._raw.unsqueeze(1), test.labels, [full.mean], [full.std],
                      [f"rotmnist-test:{i}" for i in range(len(test))])

    info = {"source": str(full.source), "train": 10000, "val": 2000,
            "split": "rows 0-9,999 of the train_valid file train, rows 10,000-11,999 validate "
                     "(the dataset's own split)",
            "normalize": {"mean": full.mean, "std": full.std, "of": "the 12,000 training images"}}
    return TrainingData("rotmnist", train, val, "rotmnist", load_test, info)


_CIFAR_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]


def _cifar_folder(data_dir: Path, download: bool, progress: bool) -> Path:
    candidates = [data_dir / zdata.CIFAR10_FOLDER, data_dir / "cifar10" / zdata.CIFAR10_FOLDER]
    for folder in candidates:
        if all((folder / b).is_file() for b in _CIFAR_BATCHES + ["test_batch"]):
            return folder
    needed = [f"{zdata.CIFAR10_FOLDER}/{b}" for b in _CIFAR_BATCHES + ["test_batch"]]
    url = zdata.CIFAR10_REMOTE.url
    if not download:
        raise zdata.DataNotFoundError("cifar10", needed, data_dir, candidates, [url])
    archive = zdata._fetch(zdata.CIFAR10_REMOTE, data_dir, dataset="cifar10", needed=needed,
                           data_dir=data_dir, looked_in=candidates, urls=[url], progress=progress)
    out = candidates[0]
    out.mkdir(parents=True, exist_ok=True)
    from ..convert import atomic_write_bytes
    with tarfile.open(archive, "r:gz") as tar:  # only the regular files we need
        for wanted in _CIFAR_BATCHES + ["test_batch", "batches.meta"]:
            member = tar.getmember(f"{zdata.CIFAR10_FOLDER}/{wanted}")
            if not member.isfile():
                raise ValueError(f"{archive}: {member.name} is not a regular file")
            atomic_write_bytes(out / wanted, tar.extractfile(member).read())
    return out


def _read_cifar_batch(path: Path) -> Tuple[torch.Tensor, torch.Tensor]:
    batch = zdata._load_cifar_pickle(path)
    data = np.asarray(batch["data"], dtype=np.uint8)
    labels = np.asarray(batch["labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise ValueError(f"{path}: data {data.shape}, {len(labels)} labels")
    if labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"{path}: labels outside 0-9")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels)


def _cifar10(data_dir: Path, download: bool, progress: bool) -> TrainingData:
    folder = _cifar_folder(data_dir, download, progress)
    parts = [_read_cifar_batch(folder / b) for b in _CIFAR_BATCHES]
    x = torch.cat([p[0] for p in parts])
    y = torch.cat([p[1] for p in parts])
    n_val = len(x) // 10  # 5,000 of the canonical 50,000
    n_train = len(x) - n_val
    ids = [f"cifar10-train:{i}" for i in range(len(x))]
    m, s = zdata.IMAGENET_MEAN, zdata.IMAGENET_STD
    train = Source(x[:n_train], y[:n_train], m, s, ids[:n_train])
    val = Source(x[n_train:], y[n_train:], m, s, ids[n_train:])

    def load_test() -> Source:
        tx, ty = _read_cifar_batch(folder / "test_batch")
        return Source(tx, ty, m, s, [f"cifar10-test:{i}" for i in range(len(tx))])

    info = {"source": str(folder), "train": n_train, "val": n_val,
            "split": "the first 45,000 of data_batch_1..5 train, the last 5,000 validate",
            "normalize": {"mean": list(m), "std": list(s)}}
    return TrainingData("cifar10", train, val, "cifar10", load_test, info)


_ZENODO = "https://zenodo.org/record/2546921/files/"


def _pcam_split(data_dir: Path, split: str, download: bool, progress: bool) -> Tuple[Path, torch.Tensor]:
    h5py = zdata._require_h5py()
    names = {k: f"camelyonpatch_level_2_split_{split}_{k}.h5" for k in ("x", "y")}
    candidates = [data_dir / "pcam", data_dir]
    for folder in candidates:
        if all((folder / n).is_file() for n in names.values()):
            break
    else:
        urls = [_ZENODO + n + ".gz" for n in names.values()]
        if not download:
            raise zdata.DataNotFoundError("pcam", list(names.values()), data_dir, candidates, urls)
        folder = candidates[0]
        for k, n in names.items():
            if not (folder / n).is_file():
                remote = zdata.Remote(_ZENODO + n + ".gz", n + ".gz")
                gz = zdata._fetch(remote, folder, dataset="pcam", needed=list(names.values()),
                                  data_dir=data_dir, looked_in=candidates, urls=urls,
                                  progress=progress)
                zdata._gunzip_to(gz, folder / n)
                gz.unlink()
    xp, yp = folder / names["x"], folder / names["y"]
    with h5py.File(yp, "r") as f:
        y = np.asarray(f["y"][()])
    with h5py.File(xp, "r") as f:
        shape, dtype = f["x"].shape, f["x"].dtype
    if len(shape) != 4 or tuple(shape[1:]) != (96, 96, 3) or dtype != np.uint8:
        raise ValueError(f"{xp}: x is {dtype} {shape}, expected uint8 [N, 96, 96, 3]")
    if y.size != shape[0]:
        raise ValueError(f"{yp}: {y.size} labels for {shape[0]} images")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() > 1:
        raise ValueError(f"{yp}: labels must be integers 0 or 1")
    return xp, torch.from_numpy(y.reshape(-1).astype(np.int64))


def _pcam(data_dir: Path, download: bool, progress: bool) -> TrainingData:
    m, s = zdata.PCAM_MEAN, zdata.PCAM_STD
    tx, ty = _pcam_split(data_dir, "train", download, progress)
    vx, vy = _pcam_split(data_dir, "valid", download, progress)

    def load_test() -> Source:
        x, y = _pcam_split(data_dir, "test", download, progress)
        return H5Source(x, y, m, s)

    info = {"source": str(tx.parent), "train": len(ty), "val": len(vy),
            "split": "PatchCamelyon's own train / valid / test files",
            "normalize": {"mean": list(m), "std": list(s)}}
    return TrainingData("pcam", H5Source(tx, ty, m, s), H5Source(vx, vy, m, s), "pcam", load_test, info)


#: training dataset -> (reader, the model dataset it serves)
TRAINING_SETS: Dict[str, Tuple[Callable[..., TrainingData], str]] = {
    "rotmnist": (_rotmnist, "rotmnist"),
    "mnist-rot-gen": (_mnist_rot_gen, "rotmnist"),
    "cifar10": (_cifar10, "cifar10"),
    "pcam": (_pcam, "pcam"),
}


def load_training_data(name: str, serves: str, data_dir: Optional[PathLike] = None,
                       download: bool = False, progress: bool = True) -> TrainingData:
    """The splits of training dataset ``name`` for a model trained on ``serves`` data."""
    if name not in TRAINING_SETS:
        raise ValueError(f"unknown training dataset {name!r}; known: {', '.join(TRAINING_SETS)}")
    reader, target = TRAINING_SETS[name]
    if target != serves:
        usable = [k for k, (_, t) in TRAINING_SETS.items() if t == serves]
        raise ValueError(f"dataset {name!r} holds {target} images; this model takes {serves} "
                         f"images: use one of {', '.join(usable)}")
    root = Path(data_dir) if data_dir else zdata.default_data_dir()
    return reader(root, download, progress)
