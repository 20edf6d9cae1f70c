"""The CIFAR-10 JPEG copy (``train_jpeg`` / ``test_jpeg`` in ImageFolder layout) decoded once
into a cached uint8 array, so that training epochs never decode a JPEG again.

A folder holds one sub-folder per class, in CIFAR-10's label order (airplane = 0 ... truck =
9), files read in name order. It is decoded with Pillow, the decoder the evaluation set
(:class:`agcnn_zoo.data.CIFAR10JPEG`) uses, so training and test pixels come from the same
decoder. The result is kept in ``<cache root>/decoded/cifar10-<split>-jpeg-<key>.npz``:

* ``key`` is a digest of the folder's listing (class, file name, size, mtime): a changed or
  re-copied folder gets a new entry, an unchanged one is never decoded again;
* the entry records the sha256 of the JPEG bytes it was decoded from (a weight's record names
  the exact images it saw) and the sha256 of its own pixel and label arrays, checked on every
  load; an entry that fails the check is removed (only inside the cache) and decoded again;
* it is written atomically (temp file, fsync, rename): a killed decode leaves no entry.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch

from ..io.env import cache_root, show_progress
from ..io.files import atomic_writer, safe_remove
from ..io.locks import file_lock
from ._common import DataNotFoundError, PathLike, default_data_dir
from .cifar10 import CIFAR10_CLASSES

__all__ = ["DecodedJPEG", "decoded_cifar10_jpeg", "locate_jpeg_folder", "JPEG_SPLITS",
           "decoded_cache_dir"]

#: split -> folder name (beside each other in ``<data>/cifar10/``)
JPEG_SPLITS = {"train": "train_jpeg", "test": "test_jpeg"}
_FORMAT = 1
_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass
class DecodedJPEG:
    """Pixels uint8 [N, 3, 32, 32], int64 labels, ``names`` ("<class>/<file>") and provenance."""
    images: torch.Tensor
    labels: torch.Tensor
    names: List[str]
    root: Path
    jpeg_sha256: str       # of every file's bytes, in order (what a weight was trained on)
    cache_file: Path


def decoded_cache_dir() -> Path:
    return cache_root() / "decoded"


def locate_jpeg_folder(data_dir: Optional[PathLike], split: str) -> Path:
    """``<data_dir>/cifar10/<split>_jpeg`` or ``<data_dir>/<split>_jpeg``; a folder that lacks a
    class sub-folder raises :class:`DataNotFoundError` saying what to put where."""
    if split not in JPEG_SPLITS:
        raise ValueError(f"split must be one of {', '.join(JPEG_SPLITS)}, got {split!r}")
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    folder = JPEG_SPLITS[split]
    looked = [data_dir / "cifar10" / folder, data_dir / folder]
    for root in looked:
        if all((root / c).is_dir() for c in CIFAR10_CLASSES):
            return root
    raise DataNotFoundError(f"cifar10-jpeg ({split})",
                            [f"{folder}/{c}/NNNN.jpg" for c in CIFAR10_CLASSES[:2]]
                            + ["... (one folder per class)"], data_dir, looked, [])


def _listing(root: Path) -> Tuple[List[Path], List[int], str]:
    """(files, labels, key): the key digests class, name, size and mtime of every file."""
    files, labels = [], []
    h = hashlib.sha256(f"cifar10-jpeg format {_FORMAT}\n".encode())
    for label, cls in enumerate(CIFAR10_CLASSES):
        entries = sorted((e for e in os.scandir(root / cls)
                          if e.is_file() and e.name.lower().endswith(_SUFFIXES)),
                         key=lambda e: e.name)
        if not entries:
            raise DataNotFoundError(f"cifar10-jpeg ({root.name})", [f"{root.name}/{cls}/NNNN.jpg"],
                                    root.parent, [root / cls], [], reason=f"{cls}/ holds no image")
        for e in entries:
            st = e.stat()
            h.update(f"{cls}/{e.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            files.append(Path(e.path))
            labels.append(label)
    return files, labels, h.hexdigest()


def _arrays_sha256(images: np.ndarray, labels: np.ndarray) -> str:
    h = hashlib.sha256(np.ascontiguousarray(images).data)
    h.update(np.ascontiguousarray(labels).data)
    return h.hexdigest()


def _decode(files: List[Path], root: Path, progress: bool) -> Tuple[np.ndarray, str]:
    """uint8 [N, 3, 32, 32] and the sha256 of all JPEG bytes (files in order)."""
    from PIL import Image
    bar = None
    if show_progress(progress):
        from tqdm.auto import tqdm
        bar = tqdm(total=len(files), desc=f"decoding {root.name}", unit="img", leave=False)
    out = np.empty((len(files), 32, 32, 3), dtype=np.uint8)
    h = hashlib.sha256()
    for i, path in enumerate(files):
        data = path.read_bytes()
        h.update(data)
        with Image.open(io.BytesIO(data)) as im:
            px = np.asarray(im.convert("RGB"), dtype=np.uint8)
        if px.shape != (32, 32, 3):
            raise ValueError(f"{path}: a {px.shape[1]}x{px.shape[0]} image; CIFAR-10 images are "
                             f"32x32 (is {root} the CIFAR-10 JPEG copy?)")
        out[i] = px
        if bar is not None and i % 1000 == 999:
            bar.update(1000)
    if bar is not None:
        bar.close()
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2)), h.hexdigest()


def _load_entry(path: Path, key: str) -> Optional[dict]:
    """The verified entry at ``path``, or None when there is none or it fails its checks
    (then it is removed: the caller decodes again)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            images, labels = z["images"], z["labels"]
        ok = (meta.get("format") == _FORMAT and meta.get("key") == key
              and _arrays_sha256(images, labels) == meta.get("arrays_sha256"))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        ok, meta = False, {"error": str(e)}
    if ok:
        return {"images": images, "labels": labels, **meta}
    warnings.warn(f"{path}: a damaged decoded-image cache entry; removed, decoding again",
                  stacklevel=3)
    safe_remove(path, decoded_cache_dir())
    return None


def decoded_cifar10_jpeg(data_dir: Optional[PathLike] = None, split: str = "train",
                         progress: bool = True) -> DecodedJPEG:
    """The ``split`` ("train" or "test") JPEG folder as uint8 arrays, decoded once and cached
    (see the module docstring)."""
    root = locate_jpeg_folder(data_dir, split)
    files, labels, key = _listing(root)
    names = [f"{p.parent.name}/{p.name}" for p in files]
    cache = decoded_cache_dir() / f"cifar10-{split}-jpeg-{key[:16]}.npz"
    with file_lock(cache, what="decoded-image cache"):
        entry = _load_entry(cache, key)
        if entry is None:
            images, jpeg_sha = _decode(files, root, progress)
            y = np.asarray(labels, dtype=np.int64)
            meta = {"format": _FORMAT, "key": key, "jpeg_sha256": jpeg_sha,
                    "arrays_sha256": _arrays_sha256(images, y), "count": len(files),
                    "names": names}
            with atomic_writer(cache, "decoded", what="decoded-image cache") as f:
                np.savez(f, images=images, labels=y, meta=np.array(json.dumps(meta)))
            entry = {"images": images, "labels": y, **meta}
    if entry["names"] != names:  # the key covers names; this guards a hash collision
        raise ValueError(f"{cache}: its file list is not {root}'s; delete it and retry")
    return DecodedJPEG(torch.from_numpy(entry["images"]), torch.from_numpy(entry["labels"]),
                       names, root, entry["jpeg_sha256"], cache)
