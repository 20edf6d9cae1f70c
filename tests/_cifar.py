"""Test helper: a data folder holding a subset of the real CIFAR-10 JPEGs of ../shared (symlinks
to the real files, laid out as ``<dir>/cifar10/<split>_jpeg/<class>/NNNN.jpg``), so that a test
decodes a few hundred real images instead of 50,000."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from agcnn_zoo.data.cifar10 import CIFAR10_CLASSES

from conftest import DATA, shared


def jpeg_subset(root: Path, per_class: int, splits: Sequence[str] = ("train", "test")) -> Path:
    """``root`` holding the first ``per_class`` files of every class of each split."""
    for split in splits:
        src = shared(DATA / "cifar10" / f"{split}_jpeg")
        for cls in CIFAR10_CLASSES:
            folder = root / "cifar10" / f"{split}_jpeg" / cls
            folder.mkdir(parents=True)
            for f in sorted((src / cls).iterdir())[:per_class]:
                (folder / f.name).symlink_to(f)
    return root
