"""PatchCamelyon (PCam): the test split (the canonical test set of the PCam weight) and, for
training, the train and valid splits of the same layout (:func:`pcam_split`).

``camelyonpatch_level_2_split_test_x.h5`` key ``x`` uint8 [32768, 96, 96, 3] and ``..._y.h5``
key ``y`` [32768, 1, 1, 1] (integer labels 0/1; fractional labels are refused); ToTensor
scaling then the authors' rounded mean/std. Needs h5py. Downloads are gzip-checked, gunzipped
atomically and checked to be HDF5 before they are kept.
"""
from __future__ import annotations

import gzip
import hashlib
import warnings
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch

from ..io.files import atomic_writer, safe_remove
from ._common import (ChecksumError, DataFormatError, DataNotFoundError, PathLike, Remote,
                      _NormalisedUint8, default_data_dir, fetch_remote, integer_labels)

__all__ = ["PCamTest", "PCAM_REMOTES", "PCAM_MEAN", "PCAM_STD", "pcam_remotes", "pcam_split"]

PCAM_MEAN = (0.701, 0.538, 0.692)
PCAM_STD = (0.235, 0.277, 0.213)


_ZENODO = "https://zenodo.org/record/2546921/files/"
PCAM_REMOTES = {
    # md5 of the gunzipped .h5, as recorded by one public loader (kaiko-ai/eva); not checked here
    "x": Remote(_ZENODO + "camelyonpatch_level_2_split_test_x.h5.gz",
                "camelyonpatch_level_2_split_test_x.h5.gz", "2614b2e6717d6356be141d9d6dbfcb7e",
                verified=False, md5_of="gunzipped", source="kaiko-ai/eva PatchCamelyon loader",
                max_size=4 << 30),
    "y": Remote(_ZENODO + "camelyonpatch_level_2_split_test_y.h5.gz",
                "camelyonpatch_level_2_split_test_y.h5.gz", "11ed647efe9fe457a4eb45df1dba19ba",
                verified=False, md5_of="gunzipped", source="kaiko-ai/eva PatchCamelyon loader",
                max_size=64 << 20),
}


PCAM_SIZES = {"train": 262144, "valid": 32768, "test": 32768}


def pcam_remotes(split: str) -> Dict[str, Remote]:
    """The two published files of a split (md5 recorded for the test split only)."""
    if split == "test":
        return PCAM_REMOTES
    if split not in PCAM_SIZES:
        raise ValueError(f"PCam split must be one of {', '.join(PCAM_SIZES)}, got {split!r}")
    return {k: Remote(_ZENODO + f"camelyonpatch_level_2_split_{split}_{k}.h5.gz",
                      f"camelyonpatch_level_2_split_{split}_{k}.h5.gz",
                      max_size=(8 << 30) if k == "x" else (64 << 20)) for k in ("x", "y")}


def _locate_split(data_dir: Path, split: str, download: bool, progress: bool) -> Dict[str, Path]:
    remotes = pcam_remotes(split)
    names = {k: r.filename[:-3] for k, r in remotes.items()}
    looked = [data_dir / "pcam", data_dir]
    for folder in looked:
        if all((folder / n).is_file() for n in names.values()):
            return {k: folder / n for k, n in names.items()}
    urls = [r.url for r in remotes.values()]
    needed = list(names.values())
    if not download:
        raise DataNotFoundError("pcam", needed, data_dir, looked, urls)
    out = looked[0]
    found = {}
    for k, remote in remotes.items():
        target = out / names[k]
        if not target.is_file():
            gz = fetch_remote(remote, out, dataset="pcam", needed=needed, data_dir=data_dir,
                              looked_in=looked, urls=urls, progress=progress, check=_check_gzip)
            try:
                gunzip_checked(gz, target, remote)
            finally:
                safe_remove(gz, out)
        found[k] = target
    return found


def pcam_split(data_dir: Optional[PathLike] = None, split: str = "test", download: bool = False,
               progress: bool = True):
    """``(paths {"x", "y"}, labels int64 tensor)`` of a PCam split, its layout checked (x uint8
    [N, 96, 96, 3], integer labels 0/1); images stay on disk."""
    h5py = _require_h5py()
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    paths = _locate_split(data_dir, split, download, progress)
    with h5py.File(paths["y"], "r") as f:
        if "y" not in f:
            raise ValueError(f"{paths['y']}: no dataset 'y' (keys: {list(f.keys())})")
        y = np.asarray(f["y"][()])
    with h5py.File(paths["x"], "r") as f:
        if "x" not in f:
            raise ValueError(f"{paths['x']}: no dataset 'x' (keys: {list(f.keys())})")
        shape, dtype = f["x"].shape, f["x"].dtype
    if len(shape) != 4 or tuple(shape[1:]) != (96, 96, 3) or dtype != np.uint8:
        raise ValueError(f"{paths['x']}: x is {dtype} {shape}, expected uint8 [N, 96, 96, 3]")
    if y.shape[0] != shape[0] or y.size != shape[0]:
        raise ValueError(f"{paths['y']}: y {y.shape} does not fit {shape[0]} images")
    y = integer_labels(y.reshape(-1), str(paths["y"]))
    if y.min() < 0 or y.max() > 1:
        raise ValueError(f"{paths['y']}: labels outside 0-1")
    return paths, torch.from_numpy(y)


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _check_gzip(path: Path) -> None:
    with open(path, "rb") as f:
        if f.read(2) != b"\x1f\x8b":
            raise ValueError("not a gzip file")


def gunzip_checked(src: Path, dest: Path, remote: Remote) -> Path:
    """Decompress ``src`` to ``dest`` atomically; the content must be an HDF5 file (and match
    the recorded md5: a verified one strictly, an unverified one with a warning)."""
    with atomic_writer(dest, "gunzip", what="data folder") as out:
        h = hashlib.md5()
        try:
            with gzip.open(src, "rb") as fin:
                while block := fin.read(1 << 20):
                    h.update(block)
                    out.write(block)
        except (OSError, EOFError) as e:
            raise DataFormatError(src, "a complete gzip file", str(e), what="structure") from None
        out.flush()
        with open(out.name, "rb") as f:
            head = f.read(8)
        if head != _HDF5_SIGNATURE:
            raise DataFormatError(dest, "an HDF5 file", f"a file starting with {head!r}",
                                  what="structure")
        got = h.hexdigest()
        if remote.md5 and got != remote.md5:
            if remote.verified:
                raise ChecksumError(dest, remote.md5, got, what="md5")
            warnings.warn(f"{dest}: md5 {got}, expected {remote.md5} (the expected value was "
                          f"never verified here)", stacklevel=3)
    return dest


def _require_h5py():
    try:
        import h5py
    except ImportError as e:
        raise ImportError("reading PCam needs h5py (part of the default install): "
                          "pip install h5py, or reinstall with pip install -e .") from e
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
        self.data_dir = Path(data_dir) if data_dir else default_data_dir()
        self.paths, self.labels = pcam_split(self.data_dir, "test", download, progress)
        self._h5 = None  # opened lazily, per process (h5py handles do not survive fork)

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
