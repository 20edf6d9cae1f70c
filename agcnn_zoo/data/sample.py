"""``mnist-rot-sample``: a few hundred ``mnist-rot-aux`` digits shipped inside the package, so the
main job can check the rot-MNIST weights on a machine with no network and no data (a smoke check:
too few digits to compare with any published accuracy).

The files in ``agcnn_zoo/samples/`` are the first :data:`SAMPLE_SIZE` digits of ``mnist-rot-aux``
(MNIST test digits 0..N-1, rotated by that set's seeded angles, in MNIST's orientation, see
:mod:`.mnist`), pixels rounded to uint8, stored as gzipped IDX files. :func:`write_sample`
rebuilds them byte for byte from the MNIST test files::

    python -c "from agcnn_zoo.data.sample import write_sample; write_sample('DIR_WITH_MNIST')"
"""
from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..io.files import atomic_write_bytes
from ._common import DataFormatError, DataNotFoundError, EvalSet, PathLike, scalar_mean_std
from .mnist import MNISTRotAux, read_idx

__all__ = ["MNISTRotSample", "SAMPLE_DIR", "SAMPLE_SIZE", "SAMPLE_FILES", "write_sample"]

#: the package folder holding the sample (package data, carried by wheels)
SAMPLE_DIR = Path(__file__).resolve().parents[1] / "samples"
#: enough digits for a weight that loads wrongly to show (about 10% accuracy), few enough to
#: run every shipped rot-MNIST weight in a minute or so on 2 CPU cores
SAMPLE_SIZE = 300
SAMPLE_FILES = {"images": "mnist-rot-aux-sample-images-idx3-ubyte.gz",
                "labels": "mnist-rot-aux-sample-labels-idx1-ubyte.gz"}


def idx_bytes(array: np.ndarray) -> bytes:
    """An unsigned-byte IDX file (MNIST's format) of ``array``, gzipped reproducibly (no mtime)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.tobytes(), compresslevel=9, mtime=0)


def write_sample(mnist_dir: PathLike, out: Optional[PathLike] = None,
                 size: int = SAMPLE_SIZE) -> Path:
    """Write the sample's two files into ``out`` (default: the package's ``samples/``) from the
    MNIST test files in ``mnist_dir`` (checked by their canonical md5)."""
    aux = MNISTRotAux(mnist_dir, download=False, progress=False)
    pixels = aux.pixels[:size, 0].mul(255.0).round().clamp(0, 255).to(torch.uint8).numpy()
    labels = aux.labels[:size].numpy().astype(np.uint8)
    out = Path(out) if out is not None else SAMPLE_DIR
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / SAMPLE_FILES["images"], idx_bytes(pixels), what="sample")
    atomic_write_bytes(out / SAMPLE_FILES["labels"], idx_bytes(labels), what="sample")
    return out


class MNISTRotSample(EvalSet):
    """The embedded sample (see the module docstring); ``data_dir`` and ``download`` are accepted
    for the common reader interface and ignored: the files ship with the package."""
    name = "mnist-rot-sample"
    serves = "rotmnist"
    canonical = False
    expected_size = SAMPLE_SIZE
    input_size = (1, 28, 28)
    smoke = True  # a smoke check, never a measurement of a published accuracy

    def __init__(self, data_dir: Optional[PathLike] = None, download: bool = False,
                 progress: bool = True, folder: Optional[PathLike] = None):
        folder = Path(folder) if folder is not None else SAMPLE_DIR
        self.paths = {k: folder / f for k, f in SAMPLE_FILES.items()}
        if not all(p.is_file() for p in self.paths.values()):
            raise DataNotFoundError(self.name, list(SAMPLE_FILES.values()), folder, [folder], [],
                                    reason="not in this installation: reinstall agcnn-zoo, "
                                           "whose wheel carries agcnn_zoo/samples/")
        digits = torch.from_numpy(read_idx(self.paths["images"]).copy())
        labels = torch.from_numpy(read_idx(self.paths["labels"]).astype(np.int64))
        if digits.dim() != 3 or digits.shape[1:] != (28, 28) or len(digits) != len(labels):
            raise DataFormatError(self.paths["images"], "[N, 28, 28] digits with N labels",
                                  f"{tuple(digits.shape)} / {tuple(labels.shape)}", what="shape")
        self.pixels = digits.to(torch.float32).div(255.0).unsqueeze(1)
        # normalised by their own statistics, as mnist-rot-aux is
        self.mean, self.std = scalar_mean_std(self.pixels)
        self.labels = labels

    def _images(self, start: int, stop: int) -> torch.Tensor:
        x = self.pixels[start:stop].to(torch.float64)
        return ((x - self.mean) / self.std).to(torch.float32)

    def describe(self) -> dict:
        return {**super().describe(), "source": {k: str(p) for k, p in self.paths.items()},
                "normalize": {"mean": self.mean, "std": self.std,
                              "of": "the sample's digits themselves"},
                "note": f"smoke check: the first {len(self)} mnist-rot-aux digits shipped in the "
                        f"package (uint8); not a published test set"}
