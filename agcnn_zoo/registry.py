"""Model registry: name -> constructor and metadata (the timm ``_registry`` idea, kept small).

Names follow ``{attention}{group}_{architecture}_{dataset}``; attention prefixes use the paper's
alpha notation: none (plain), ``a_`` (full alpha), ``ach_`` (alpha_Ch), ``asp_`` (alpha_Sp),
``af_`` (alpha_F), ``coa_`` (co-attentive comparison).
"""
from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

__all__ = ["ModelEntry", "register_model", "register_model_class", "get_entry", "list_registered", "DATASETS",
           "UnknownModelError", "ROTMNIST_MEAN_STD_ESTIMATE"]

#: what each dataset's models expect (the original pipelines' preprocessing)
DATASETS: Dict[str, dict] = {
    "rotmnist": {
        "input_size": [1, 28, 28], "num_classes": 10, "channel_order": "gray",
        "scaling": "pixels in [0, 1]",
        "normalize": "scalar mean/std of the 12,000 mnist_rotation_new training images",
        "orientation": "transposed w.r.t. MNIST (the authors' rot-MNIST files store digits "
                       "transposed; MNIST-oriented digits score about 50%)",
        "test_set": "mnist_rotation_new test split, 50,000 images (Larochelle et al. 2007)",
    },
    "cifar10": {
        "input_size": [3, 32, 32], "num_classes": 10, "channel_order": "RGB",
        "scaling": "ToTensor, pixels in [0, 1]",
        "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
        "test_set": "CIFAR-10 test split, 10,000 images",
    },
    "pcam": {
        "input_size": [3, 96, 96], "num_classes": 2, "channel_order": "RGB",
        "scaling": "ToTensor, pixels in [0, 1]",
        "mean": [0.701, 0.538, 0.692], "std": [0.235, 0.277, 0.213],
        "test_set": "PatchCamelyon test split, 32,768 images",
    },
}


#: rot-MNIST mean / std used where no weight record gives numbers (models without weights):
#: the statistics of the 12,000 rotated MNIST training digits of mnist-rot-gen, an estimate
#: of the mnist_rotation_new training statistics (see the manifest's ``normalize_estimate``)
ROTMNIST_MEAN_STD_ESTIMATE = ([0.130693], [0.289791])


class UnknownModelError(KeyError, ValueError):
    """An unregistered model name (a KeyError and a ValueError, so either except works)."""

    def __str__(self):  # KeyError would repr() the message
        return str(self.args[0])


@dataclass(frozen=True)
class ModelEntry:
    name: str
    fn: Callable
    dataset: str
    architecture: str           # e.g. "P4CNN"
    original_class: Optional[str]  # class name in the original code (None: new in the zoo)
    description: str = ""
    group: Optional[str] = None
    notes: List[str] = field(default_factory=list)

    @property
    def preprocessing(self) -> dict:
        return dict(DATASETS[self.dataset])


_REGISTRY: Dict[str, ModelEntry] = {}


def register_model(name: str, *, dataset: str, architecture: str,
                   original_class: Optional[str], group: Optional[str] = None,
                   notes: Optional[List[str]] = None):
    """Decorator for a function ``fn(**kwargs) -> nn.Module``; its docstring is the description."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}")

    def deco(fn):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelEntry(name, fn, dataset, architecture, original_class,
                                     (fn.__doc__ or "").strip(), group, list(notes or []))
        return fn
    return deco


def register_model_class(name: str, cls, *, dataset: str, original_class: Optional[str]):
    """Register ``cls(**kwargs)`` under ``name``; architecture, group and description come from
    the class. Returns the constructor function (module-level names mirror timm's)."""
    def fn(**kwargs):
        return cls(**kwargs)
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = cls.__doc__
    fn.model_class = cls
    return register_model(name, dataset=dataset, architecture=cls.__name__,
                          original_class=original_class,
                          group=getattr(cls, "group_name", None))(fn)


def _ensure_loaded():
    from . import models  # noqa: F401  (importing the families registers them)


def get_entry(name: str) -> ModelEntry:
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownModelError(f"unknown model {name!r}{hint} (agcnn_zoo.list_models() lists "
                                f"all {len(_REGISTRY)})") from None


def list_registered(pattern: str = "*") -> List[str]:
    _ensure_loaded()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))
