"""Training data: a train / validation / test triple per dataset, preprocessed as the authors'
pipelines did. Model selection uses the validation split, carved from the training data; the
test split is built only when the selected weight is evaluated (once, at the end of a run).

``rotmnist``
    mnist_rotation_new (its digits transposed back into MNIST's orientation by the reader): its
    12,000-row train_valid file, split as its authors (Larochelle et
    al. 2007) did: the first 10,000 rows train, the last 2,000 validate; test: its 50,000 rows.
    Normalised with the scalar mean / population std of all 12,000 training images.
``mnist-rot-gen``
    an offline stand-in, generated from the MNIST TRAINING digits (never test digits):
    ``g = torch.Generator().manual_seed(MNIST_ROT_GEN_SEED)``; 12,000 digits
    ``torch.randperm(60000, generator=g)[:12000]``, angles ``torch.rand(12000, generator=g,
    dtype=float64) * 360`` degrees counter-clockwise (bilinear, zero fill), in MNIST's
    orientation (the frame every zoo weight takes). First 10,000 train, last 2,000 validate; normalised with the scalar
    mean / population std of the 12,000 (recorded as numbers). Test: ``mnist-rot-aux`` (the
    rotated MNIST test digits) normalised with these training statistics.
``cifar10``
    torchvision's ``cifar-10-batches-py``: ``data_batch_1..5`` (50,000), the first 45,000 train,
    the last 5,000 validate; test: ``test_batch``. ImageNet mean/std after ToTensor scaling.
``cifar10-jpeg``
    the offline JPEG copy of the 50,000 CIFAR-10 training images (``cifar10/train_jpeg``,
    decoded once into a cached uint8 array, :mod:`agcnn_zoo.data.cifar10_jpeg`): in every
    class, the first 90% of the files (name order; 4,500 of 5,000) train and the last 10%
    validate, 45,000 / 5,000 in all. Test: ``cifar10-jpeg``, the JPEG copy of the test set
    (``cifar10/test_jpeg``), read only when the selected weight is evaluated. Each split is
    ordered class after class (every class's first file, then every class's second...), so
    that a limited run sees every class. Lossy: a weight trained here has seen
    JPEG-compressed images (its record says so).
``pcam``
    PatchCamelyon's own train (262,144) / valid (32,768) / test (32,768) h5 files, read from disk
    batch by batch; the authors' rounded mean/std after ToTensor scaling.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .. import data as zdata
from ..data._common import scalar_mean_std
from ..data.cifar10 import read_cifar_batch, read_cifar10_train
from ..data.cifar10_jpeg import decoded_cifar10_jpeg
from ..data.mnist import MNIST_ROT_GEN_SEED, generate_mnist_rot
from ..data.pcam import _require_h5py, pcam_split

__all__ = ["Source", "H5Source", "TrainingData", "load_training_data", "TRAINING_SETS",
           "MNIST_ROT_GEN_SEED", "augment_batch", "without_validation"]

PathLike = Union[str, Path]

#: mnist-rot-gen's 12,000 digits: the first 10,000 train, the last 2,000 validate
MNIST_ROT_GEN_SIZES = (10000, 2000)


def _per_channel(values: Sequence[float], channels: int) -> torch.Tensor:
    return torch.tensor(list(values), dtype=torch.float32).view(1, -1, 1, 1).expand(1, channels, 1, 1)


class Source:
    """One split: raw pixels (uint8, or float in [0, 1]) [N, C, H, W] and int64 labels;
    :meth:`batch` returns normalised float32 images, augmented first when asked.
    ``ids`` names the underlying images (to check that splits are disjoint)."""

    def __init__(self, raw: torch.Tensor, labels: torch.Tensor, mean: Sequence[float],
                 std: Sequence[float], ids: Optional[Sequence[str]] = None):
        if raw.dim() != 4 or len(raw) != len(labels):
            raise ValueError(f"images {tuple(raw.shape)} and labels {tuple(labels.shape)} do not fit")
        self.raw, self.labels = raw, labels.to(torch.int64)
        self.mean, self.std = _per_channel(mean, raw.shape[1]), _per_channel(std, raw.shape[1])
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

    def to(self, device: Union[str, torch.device]) -> "Source":
        """A copy whose pixels, labels and normalisation live on ``device`` (data resident on
        a GPU: batches, augmentation included, never cross the bus)."""
        out = copy.copy(self)
        out.raw, out.labels = self.raw.to(device), self.labels.to(device)
        out.mean, out.std = self.mean.to(device), self.std.to(device)
        return out

    def limited(self, n: Optional[int]) -> "Source":
        """The first ``n`` images (all when None)."""
        if n is None or n >= len(self):
            return self
        if n < 1:
            raise ValueError(f"a limit must be >= 1, got {n}")
        out = copy.copy(self)
        out.labels = self.labels[:n]
        if self.raw is not None:
            out.raw = self.raw[:n]
        out.ids = self.ids[:n] if self.ids is not None else None
        return out


class H5Source(Source):
    """A split read from an h5 file batch by batch (PCam: uint8 [N, 96, 96, 3])."""

    def __init__(self, x_path: Path, labels: torch.Tensor, mean, std, key: str = "x"):
        self.path, self.key, self._h5 = Path(x_path), key, None
        self.raw, self.ids = None, None
        self.labels = labels.to(torch.int64)
        self.mean, self.std = _per_channel(mean, len(mean)), _per_channel(std, len(std))

    def _raw(self, idx: torch.Tensor) -> torch.Tensor:
        if self._h5 is None:
            self._h5 = _require_h5py().File(self.path, "r")
        order = torch.argsort(idx)
        sorted_idx = idx[order].numpy()  # h5py wants increasing indices
        unique, inverse = np.unique(sorted_idx, return_inverse=True)
        block = torch.from_numpy(np.asarray(self._h5[self.key][unique]))[torch.from_numpy(inverse)]
        out = torch.empty_like(block)
        out[order] = block
        return out.permute(0, 3, 1, 2)


def augment_batch(x: torch.Tensor, augment: Sequence[str], generator: Optional[torch.Generator]
                  ) -> torch.Tensor:
    """The authors' torchvision augmentations, per sample, on [0, 1] images [B, C, H, W]:
    ``hflip`` (RandomHorizontalFlip, p 0.5) then ``crop32_pad4`` (RandomCrop(32, padding=4),
    zero padding). Random numbers come from ``generator`` (seeded per epoch by the engine), a
    CPU generator: they are drawn on the CPU and moved to ``x``'s device, so a batch is
    augmented the same way on a CPU and on a GPU."""
    b, dev = x.shape[0], x.device
    for a in augment:
        if a == "hflip":
            flip = (torch.rand(b, generator=generator) < 0.5).to(dev)
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        elif a == "crop32_pad4":
            h, w = x.shape[-2:]
            if (h, w) != (32, 32):
                raise ValueError(f"crop32_pad4 needs 32x32 images, got {h}x{w}")
            padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
            oy = torch.randint(0, 9, (b,), generator=generator).to(dev)
            ox = torch.randint(0, 9, (b,), generator=generator).to(dev)
            span = torch.arange(32, device=dev)
            rows = (oy[:, None] + span)[:, None, :, None]
            cols = (ox[:, None] + span)[:, None, None, :]
            bi = torch.arange(b, device=dev)[:, None, None, None]
            ci = torch.arange(x.shape[1], device=dev)[None, :, None, None]
            x = padded[bi, ci, rows, cols]
        else:
            raise ValueError(f"unknown augmentation {a!r}")
    return x


@dataclass
class TrainingData:
    """What a run trains on. ``test`` is built on demand (``load_test()``), once."""
    dataset: str
    train: Source
    val: Optional[Source]            # None: the fixed-schedule protocol (no model selection)
    test_name: str
    load_test: Callable[[], Source]
    info: Dict[str, object] = field(default_factory=dict)


# ----------------------------------------------------------------------------- readers

def _mnist_rot_gen(data_dir: Path, download: bool, progress: bool) -> TrainingData:
    x, y, chosen, info = generate_mnist_rot(data_dir, download, progress, MNIST_ROT_GEN_SEED)
    mean, std = scalar_mean_std(x)
    n_train = MNIST_ROT_GEN_SIZES[0]
    ids = [f"mnist-train:{int(i)}" for i in chosen]
    train = Source(x[:n_train], y[:n_train], [mean], [std], ids[:n_train])
    val = Source(x[n_train:], y[n_train:], [mean], [std], ids[n_train:])

    def load_test() -> Source:
        aux = zdata.MNISTRotAux(data_dir, download=download, progress=progress)
        return Source(aux.pixels, aux.labels, [mean], [std],
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


def _cifar10(data_dir: Path, download: bool, progress: bool) -> TrainingData:
    x, y, folder = read_cifar10_train(data_dir, download, progress)
    n_val = len(x) // 10  # 5,000 of the canonical 50,000
    n_train = len(x) - n_val
    ids = [f"cifar10-train:{i}" for i in range(len(x))]
    m, s = zdata.IMAGENET_MEAN, zdata.IMAGENET_STD
    train = Source(x[:n_train], y[:n_train], m, s, ids[:n_train])
    val = Source(x[n_train:], y[n_train:], m, s, ids[n_train:])

    def load_test() -> Source:
        tx, ty = read_cifar_batch(folder / "test_batch")
        return Source(tx, ty, m, s, [f"cifar10-test:{i}" for i in range(len(tx))])

    info = {"source": str(folder), "train": n_train, "val": n_val,
            "split": "the first 45,000 of data_batch_1..5 train, the last 5,000 validate",
            "normalize": {"mean": list(m), "std": list(s)}}
    return TrainingData("cifar10", train, val, "cifar10", load_test, info)


#: cifar10-jpeg: the share of each class's files (the last ones, name order) that validates
CIFAR10_JPEG_VAL_SHARE = 10


def _round_robin(labels: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``idx`` (class by class, name order within a class) reordered class after class: the
    first file of every class, then the second... so that a limited run sees every class."""
    sub = labels[idx]
    rank = torch.zeros_like(idx)
    for c in sub.unique():
        members = (sub == c).nonzero().flatten()
        rank[members] = torch.arange(len(members))
    return idx[torch.argsort(rank * 10 + sub, stable=True)]


def _cifar10_jpeg(data_dir: Path, download: bool, progress: bool) -> TrainingData:
    d = decoded_cifar10_jpeg(data_dir, "train", progress)
    is_val = torch.zeros(len(d.labels), dtype=torch.bool)
    for c in range(10):
        members = (d.labels == c).nonzero().flatten()  # in name order
        is_val[members[len(members) - len(members) // CIFAR10_JPEG_VAL_SHARE:]] = True
    ti = _round_robin(d.labels, (~is_val).nonzero().flatten())
    vi = _round_robin(d.labels, is_val.nonzero().flatten())
    ids = [f"cifar10-train-jpeg:{n}" for n in d.names]
    m, s = zdata.IMAGENET_MEAN, zdata.IMAGENET_STD
    train = Source(d.images[ti], d.labels[ti], m, s, [ids[i] for i in ti.tolist()])
    val = Source(d.images[vi], d.labels[vi], m, s, [ids[i] for i in vi.tolist()])

    def load_test() -> Source:
        t = decoded_cifar10_jpeg(data_dir, "test", progress)
        order = _round_robin(t.labels, torch.arange(len(t.labels)))
        return Source(t.images[order], t.labels[order], m, s,
                      [f"cifar10-test-jpeg:{t.names[i]}" for i in order.tolist()])

    info = {"source": str(d.root), "train": len(ti), "val": len(vi),
            "split": f"in each class the first 90% of the training JPEGs (file name order) "
                     f"train, the last 10% validate ({len(ti):,} / {len(vi):,})",
            "jpeg_sha256": d.jpeg_sha256,
            "images": "JPEG-compressed copy of the CIFAR-10 training set (lossy: 4.5-8 levels "
                      "per pixel from the canonical images), decoded with Pillow",
            "normalize": {"mean": list(m), "std": list(s)}}
    return TrainingData("cifar10-jpeg", train, val, "cifar10-jpeg", load_test, info)


def _pcam(data_dir: Path, download: bool, progress: bool) -> TrainingData:
    m, s = zdata.PCAM_MEAN, zdata.PCAM_STD
    (tp, ty), (vp, vy) = (pcam_split(data_dir, k, download, progress) for k in ("train", "valid"))
    tx, vx = tp["x"], vp["x"]

    def load_test() -> Source:
        paths, y = pcam_split(data_dir, "test", download, progress)
        return H5Source(paths["x"], y, m, s)

    info = {"source": str(tx.parent), "train": len(ty), "val": len(vy),
            "split": "PatchCamelyon's own train / valid / test files",
            "normalize": {"mean": list(m), "std": list(s)}}
    return TrainingData("pcam", H5Source(tx, ty, m, s), H5Source(vx, vy, m, s), "pcam", load_test, info)


def without_validation(data: TrainingData) -> TrainingData:
    """The fixed-schedule protocol's splits: the validation images join the training images
    (after them, in their order) and there is no validation split. The test split is unchanged."""
    t, v = data.train, data.val
    if t.raw is None or v.raw is None:
        raise ValueError(f"{data.dataset}: its validation split is a file of its own; this dataset "
                         f"trains with its validation split only")
    merged = copy.copy(t)
    merged.raw = torch.cat([t.raw, v.raw])
    merged.labels = torch.cat([t.labels, v.labels])
    merged.ids = t.ids + v.ids if t.ids is not None and v.ids is not None else None
    info = dict(data.info, train=len(merged), val=0,
                split=f"all {len(merged):,} training images train, no validation split")
    return dataclasses.replace(data, train=merged, val=None, info=info)


#: training dataset -> (reader, the model dataset it serves)
TRAINING_SETS: Dict[str, Tuple[Callable[..., TrainingData], str]] = {
    "rotmnist": (_rotmnist, "rotmnist"),
    "mnist-rot-gen": (_mnist_rot_gen, "rotmnist"),
    "cifar10": (_cifar10, "cifar10"),
    "cifar10-jpeg": (_cifar10_jpeg, "cifar10"),
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
