"""The evaluation sets by name, and which one is canonical for each training dataset."""
from __future__ import annotations

from typing import Optional

from ._common import EvalSet, PathLike
from .cifar10 import CIFAR10JPEG, CIFAR10Test
from .mnist import MNISTRotAux
from .pcam import PCamTest
from .rotmnist import RotMNIST
from .sample import MNISTRotSample

__all__ = ["EVAL_SETS", "CANONICAL_SET", "load_eval_set"]

#: evaluation set name -> reader
EVAL_SETS = {"rotmnist": RotMNIST, "cifar10": CIFAR10Test, "pcam": PCamTest,
             "mnist-rot-aux": MNISTRotAux, "cifar10-jpeg": CIFAR10JPEG,
             "mnist-rot-sample": MNISTRotSample}
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
