"""MNIST digits (IDX files), the auxiliary offline test set ``mnist-rot-aux`` made from the test
digits, and the offline training stand-in ``mnist-rot-gen`` made from the training digits.

``mnist-rot-aux``: digit ``i`` rotated counter-clockwise by ``a_i`` degrees about the image
centre, bilinear, zero fill (torchvision ``rotate`` semantics), where ``a = torch.rand(10000,
generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 360``, in MNIST's own
orientation (the natural frame every zoo weight takes), normalised with the scalar mean/std of
the rotated digits. NOT the paper's rot-MNIST. Downloaded IDX files are checked (readable IDX, canonical md5 of the
gunzipped content) before they are kept.

``mnist-rot-gen`` (:func:`generate_mnist_rot`): ``g = torch.Generator().manual_seed(0)``;
digits ``torch.randperm(60000, generator=g)[:12000]`` of the MNIST TRAINING set, angles
``torch.rand(12000, generator=g, dtype=float64) * 360`` degrees, rotated exactly as
``mnist-rot-aux``. Its splits and statistics are made by :mod:`agcnn_zoo.train.splits`.
"""
from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ._common import (DataFileError, DataNotFoundError, EvalSet, PathLike, Remote, check_md5,
                      default_data_dir, fetch_remote, reading, scalar_mean_std)

__all__ = ["MNISTRotAux", "MNIST_REMOTES", "MNIST_TRAIN_REMOTES", "MNIST_ROT_AUX_SEED",
           "MNIST_ROT_GEN_SEED", "MNIST_ROT_GEN_SIZE", "read_idx", "rotate_digits",
           "locate_mnist", "generate_mnist_rot", "rotated_pixels"]

#: the seed of the auxiliary set's rotation angles (part of that dataset's definition)
MNIST_ROT_AUX_SEED = 0


_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"


def _idx_remote(filename: str, gunzipped_md5: str) -> Remote:
    # md5 of the gunzipped content: robust to gzip headers (timestamps) differing between
    # copies; checked here against the canonical copies in shared/data/mnist
    return Remote(_MNIST_URL + filename, filename, gunzipped_md5, verified=True,
                  md5_of="gunzipped", max_size=64 << 20)


#: the MNIST test set (10,000 digits)
MNIST_REMOTES = {"images": _idx_remote("t10k-images-idx3-ubyte.gz", "2646ac647ad5339dbf082846283269ea"),
                 "labels": _idx_remote("t10k-labels-idx1-ubyte.gz", "27ae3e4e09519cfbb04c329615203637")}
#: the MNIST training set (60,000 digits)
MNIST_TRAIN_REMOTES = {
    "images": _idx_remote("train-images-idx3-ubyte.gz", "6bbc9ace898e44ae57da46a324031adb"),
    "labels": _idx_remote("train-labels-idx1-ubyte.gz", "a25bea736e30d166cdddb491f175f624")}
#: part of the definition of mnist-rot-gen (which digits, which angles)
MNIST_ROT_GEN_SEED = 0
MNIST_ROT_GEN_SIZE = 12000


def read_idx(path: PathLike, gz: Optional[bool] = None) -> np.ndarray:
    """An IDX file of unsigned bytes (MNIST), gzipped or not (``gz``: by default, by suffix)."""
    path = Path(path)
    opener = gzip.open if (path.suffix == ".gz" if gz is None else gz) else open
    with reading(path, "IDX file"), opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4:
        raise DataFileError(path, "not an IDX file (shorter than its header)")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DataFileError(path, "not an unsigned-byte IDX file")
    if len(data) < 4 + 4 * ndim:
        raise DataFileError(path, "ends inside its IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DataFileError(path, f"{body.size} bytes of data for the IDX shape {shape} "
                                  f"(truncated or damaged)")
    return body.reshape(shape)


def _idx_check(remote: Remote):
    """The check of a downloaded IDX.gz: a readable IDX file with the canonical content."""
    def check(path: Path) -> None:
        read_idx(path, gz=True)
        check_md5(path, remote.md5, remote.verified, gunzipped=True)
    return check


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


def rotated_pixels(digits: torch.Tensor, angles_deg: torch.Tensor) -> torch.Tensor:
    """uint8 MNIST digits [N, 28, 28] -> float32 [N, 1, 28, 28] in [0, 1], each rotated by its
    angle (:func:`rotate_digits`), in MNIST's orientation."""
    return rotate_digits(digits.to(torch.float32).div(255.0).unsqueeze(1), angles_deg).contiguous()


def _candidates(data_dir: Path) -> List[Path]:
    return [data_dir, data_dir / "mnist", data_dir / "MNIST" / "raw"]


def locate_mnist(data_dir: Path, remotes: Dict[str, Remote], dataset: str, download: bool,
                 progress: bool) -> Dict[str, Path]:
    """The IDX files of ``remotes`` (gzipped or not) in ``data_dir``, ``data_dir/mnist`` or
    ``data_dir/MNIST/raw`` (torchvision's layout); downloaded (and checked) when asked."""
    looked = _candidates(Path(data_dir))

    def find(filename: str) -> Optional[Path]:
        for folder in looked:
            for name in (filename, filename[:-3]):  # gzipped or not
                if (folder / name).is_file():
                    return folder / name
        return None

    found = {k: find(r.filename) for k, r in remotes.items()}
    missing = [k for k, p in found.items() if p is None]
    if missing:
        needed = [r.filename for r in remotes.values()]
        urls = [r.url for r in remotes.values()]
        if not download:
            raise DataNotFoundError(dataset, needed, Path(data_dir), looked, urls)
        for k in missing:
            remote = remotes[k]
            found[k] = fetch_remote(remote, looked[0], dataset=dataset, needed=needed,
                                    data_dir=Path(data_dir), looked_in=looked, urls=urls,
                                    progress=progress, check=_idx_check(remote))
    return found


def generate_mnist_rot(data_dir: Optional[PathLike] = None, download: bool = False,
                       progress: bool = True, seed: int = MNIST_ROT_GEN_SEED):
    """mnist-rot-gen: ``(digits [12000, 1, 28, 28] in [0, 1], rot-MNIST orientation; labels;
    the MNIST training indices they came from; a description)``."""
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    paths = locate_mnist(data_dir, MNIST_TRAIN_REMOTES, "mnist-rot-gen", download, progress)
    for k, p in paths.items():
        check_md5(p, MNIST_TRAIN_REMOTES[k].md5, True, gunzipped=True)
    digits = torch.from_numpy(read_idx(paths["images"]).copy())
    labels = torch.from_numpy(read_idx(paths["labels"]).astype(np.int64))
    if tuple(digits.shape) != (60000, 28, 28) or len(labels) != 60000:
        raise DataFileError(paths["images"], f"expected the 60,000 MNIST training digits, got "
                                             f"{tuple(digits.shape)} / {len(labels)} labels")
    g = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(60000, generator=g)[:MNIST_ROT_GEN_SIZE]
    angles = torch.rand(MNIST_ROT_GEN_SIZE, generator=g, dtype=torch.float64) * 360.0
    x = rotated_pixels(digits[chosen], angles)
    info = {"source": {k: str(p) for k, p in paths.items()}, "generator_seed": seed,
            "mnist_train_indices": f"torch.randperm(60000, generator=g)[:{MNIST_ROT_GEN_SIZE}]",
            "rotation": "angle_i = U[0, 360) degrees (torch.rand float64, same generator), "
                        "bilinear, zero fill, counter-clockwise, MNIST's orientation"}
    return x, labels[chosen], chosen, info


class MNISTRotAux(EvalSet):
    """Auxiliary offline set: the MNIST test digits, each rotated by a seeded random angle, in
    MNIST's orientation (see the module docstring). Files
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
                check_md5(p, MNIST_REMOTES[key].md5, True, gunzipped=True)
        digits = torch.from_numpy(read_idx(paths["images"]).copy())
        labels = torch.from_numpy(read_idx(paths["labels"]).astype(np.int64))
        if digits.dim() != 3 or digits.shape[1:] != (28, 28) or len(digits) != len(labels):
            raise DataFileError(paths["images"], f"MNIST files of shapes {tuple(digits.shape)} / "
                                                 f"{tuple(labels.shape)} do not fit")
        self.paths = paths
        gen = torch.Generator().manual_seed(seed)
        self.angles = torch.rand(len(digits), generator=gen, dtype=torch.float64) * 360.0
        #: the rotated digits before normalisation (a model trained elsewhere normalises them
        #: with its own training statistics)
        self.pixels = rotated_pixels(digits, self.angles)
        self.mean, self.std = scalar_mean_std(self.pixels)
        self.labels = labels

    def _locate(self, download: bool, progress: bool) -> Dict[str, Path]:
        return locate_mnist(self.data_dir, MNIST_REMOTES, self.name, download, progress)

    def _images(self, start: int, stop: int) -> torch.Tensor:
        x = self.pixels[start:stop].to(torch.float64)
        return ((x - self.mean) / self.std).to(torch.float32)

    def describe(self) -> dict:
        return {**super().describe(), "source": {k: str(p) for k, p in self.paths.items()},
                "rotation": f"seed {self.seed}: angle_i = U[0, 360) degrees "
                            f"(torch.rand float64), bilinear, zero fill, MNIST's orientation",
                "normalize": {"mean": self.mean, "std": self.std,
                              "of": "the rotated digits themselves"},
                "note": "auxiliary set made from the MNIST test digits; not mnist_rotation_new"}
