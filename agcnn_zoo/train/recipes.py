"""Training recipes as data: one per (family, dataset), read from the authors' run scripts
(``experiments/<exp>/run_experiment.py``, ``trainer.py``, ``parser.py`` of dwromero/att_gconvs
at commit 872259c). The first recipe whose pattern matches a model name applies; every field can
be overridden, and a run records the recipe as it ran.

What is ours, not theirs: model selection on a validation split carved from the training data
(the authors' "validation" loader was the test set for rot-MNIST and CIFAR-10).
"""
from __future__ import annotations

import dataclasses
import fnmatch
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from ..registry import get_entry

__all__ = ["Recipe", "RECIPES", "recipe_for", "OPTIMIZERS", "SCHEDULES", "AUGMENTATIONS"]

_UPSTREAM = "dwromero/att_gconvs@872259c"
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "multistep", "plateau")
AUGMENTATIONS = ("hflip", "crop32_pad4")


@dataclass(frozen=True)
class Recipe:
    """How a model family is trained (the fields a user may override are the scalar ones)."""
    pattern: str                      # fnmatch pattern over model names
    dataset: str                      # default training data (see agcnn_zoo.train.splits)
    optimizer: str                    # "adam" or "sgd"
    lr: float
    weight_decay: float
    batch_size: int
    epochs: int
    momentum: float = 0.0             # sgd only
    schedule: str = "constant"        # "constant", "multistep", "plateau"
    milestones: Tuple[int, ...] = ()  # multistep: epochs at which lr *= gamma
    gamma: float = 0.1
    plateau_factor: float = 0.5       # plateau: on the validation accuracy, mode max
    plateau_patience: int = 20
    augment: Tuple[str, ...] = ()
    source: str = ""                  # where the authors' values come from
    notes: Tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        for a in self.augment:
            if a not in AUGMENTATIONS:
                raise ValueError(f"unknown augmentation {a!r}; known: {', '.join(AUGMENTATIONS)}")
        for name in ("lr", "weight_decay", "momentum", "gamma", "plateau_factor"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 or v != v:
                raise ValueError(f"{name} must be a non-negative number, got {v!r}")
        for name in ("batch_size", "epochs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")

    def overridden(self, **changes) -> "Recipe":
        """A copy with ``changes`` applied; unknown fields and wrong types raise with the fix."""
        known = {f.name: f for f in dataclasses.fields(self)}
        fixed = {}
        for key, value in changes.items():
            if value is None:
                continue
            if key not in known or key == "pattern":
                raise TypeError(f"unknown recipe field {key!r}; fields: "
                                f"{', '.join(k for k in known if k != 'pattern')}")
            current = getattr(self, key)
            if isinstance(current, tuple):
                value = tuple(value)
            elif isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            elif type(value) is not type(current):
                raise TypeError(f"recipe field {key!r} takes a {type(current).__name__}, got "
                                f"{value!r} ({type(value).__name__})")
            fixed[key] = value
        return dataclasses.replace(self, **fixed)

    def as_dict(self) -> Dict[str, object]:
        d = dataclasses.asdict(self)
        d.pop("pattern")
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d


_ROT = "experiments/rot_mnist/run_experiment.py"
_CIFAR = "experiments/cifar10/run_experiment.py"
_PCAM = "experiments/pcam/run_experiment.py"

#: first match wins
RECIPES: List[Recipe] = [
    Recipe("z2cnn_rotmnist", "rotmnist", "adam", 1e-3, 1e-4, 128, 300,
           source=f"{_UPSTREAM} {_ROT}: Adam lr 1e-3, wd 1e-4, batch 128, 300 epochs for Z2CNN"),
    Recipe("*_rotmnist", "rotmnist", "adam", 1e-3, 1e-4, 128, 100,
           source=f"{_UPSTREAM} {_ROT}: Adam lr 1e-3, wd 1e-4, batch 128, 100 epochs, no "
                  f"scheduler, no augmentation"),
    Recipe("*allcnnc_cifar", "cifar10", "sgd", 0.05, 1e-3, 128, 350, momentum=0.9,
           schedule="multistep", milestones=(200, 250, 300), gamma=0.1,
           augment=("hflip", "crop32_pad4"),
           source=f"{_UPSTREAM} {_CIFAR}: SGD momentum 0.9, wd 1e-3, batch 128, 350 epochs, "
                  f"MultiStepLR [200, 250, 300] x0.1, lr in {{0.01, 0.05, 0.1, 0.25}} (0.05 for "
                  f"the published checkpoint), --augment: flip + crop 32 pad 4",
           notes=("the authors' full-alpha All-CNN-C variants were never trained (CUDA memory)",)),
    Recipe("*resnet44_cifar", "cifar10", "sgd", 0.05, 0.0, 128, 300, momentum=0.9,
           schedule="multistep", milestones=(50, 100, 150), gamma=0.1,
           augment=("hflip", "crop32_pad4"),
           source=f"{_UPSTREAM} {_CIFAR}: SGD momentum 0.9, lr 0.05, wd 0, batch 128, 300 epochs, "
                  f"MultiStepLR [50, 100, 150] x0.1, --augment: flip + crop 32 pad 4"),
    Recipe("*densenet_pcam", "pcam", "adam", 1e-3, 1e-4, 64, 100,
           schedule="plateau", plateau_factor=0.5, plateau_patience=20,
           source=f"{_UPSTREAM} {_PCAM}: Adam lr 1e-3, wd 1e-4, batch 64, 100 epochs, "
                  f"ReduceLROnPlateau(max, factor 0.5, patience 20) on validation accuracy",
           notes=("the authors' --augment for PCam copies CIFAR's RandomCrop(32) and crops 96x96 "
                  "patches to 32x32; whether their checkpoint used it is not recorded, so it is "
                  "off here",)),
]


def recipe_for(name: str) -> Recipe:
    """The recipe of a registered model name (the registry is checked first)."""
    get_entry(name)  # unknown names raise UnknownModelError with suggestions
    for r in RECIPES:
        if fnmatch.fnmatchcase(name, r.pattern):
            return r
    raise LookupError(f"no training recipe matches {name!r}")  # a registered family without one


def describe(name: str) -> Optional[dict]:
    """The recipe of ``name`` as a dict (for ``model_info``), or None."""
    try:
        return recipe_for(name).as_dict()
    except LookupError:
        return None
