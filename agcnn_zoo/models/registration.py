"""The model table the families register into (imported by the families; ``registry.py``
adds the lookups and imports the families, so the two never import each other).

Names follow ``{attention}{group}_{architecture}_{dataset}``; attention prefixes use the paper's
alpha notation: none (plain), ``a_`` (full alpha), ``ach_`` (alpha_Ch), ``asp_`` (alpha_Sp),
``af_`` (alpha_F), ``coa_`` (co-attentive comparison).

A family registers a class with the decorator ``register_class(name, original_class=...)``
(the name written once, beside the class; dataset, model class, group and input size come
from the class) or a function with ``register_model(...)`` (timm's form: the name is the
function's). ``original_classes(module)`` derives a family's ``ORIGINAL_CLASSES`` table.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

__all__ = ["ModelEntry", "DATASETS", "STORED_TRANSPOSED", "register_model",
           "register_class", "original_classes", "REGISTRY"]

#: what each dataset's models expect (the original pipelines' preprocessing)
DATASETS: Dict[str, dict] = {
    "rotmnist": {
        "input_size": [1, 28, 28], "num_classes": 10, "channel_order": "gray",
        "scaling": "pixels in [0, 1]",
        "normalize": "scalar mean/std of the 12,000 mnist_rotation_new training images",
        # an estimate of those numbers, for records without their own (models without weights):
        # the statistics of mnist-rot-gen's 12,000 rotated MNIST training digits (see the
        # manifest's normalize_estimate); only rot-MNIST records can receive it
        "mean": [0.130693], "std": [0.289791],
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


#: datasets whose published files store every image transposed (mnist_rotation_new's .amat
#: rows and the authors' npz conversion): their readers transpose the images back, and weights
#: trained on those files get the transposition folded in when converted
#: (``agcnn_zoo.nn.orientation``), so every weight takes images as people hold them
STORED_TRANSPOSED = frozenset({"rotmnist"})


@dataclass(frozen=True)
class ModelEntry:
    name: str
    fn: Callable
    dataset: str
    model_class: str            # our class's name, e.g. "P4CNN" (timm's "architecture" is a
                                # registry name: ours is ``name``)
    original_class: Optional[str]  # class name in the original code (None: new in the zoo)
    description: str = ""
    group: Optional[str] = None
    notes: List[str] = field(default_factory=list)

    @property
    def architecture(self) -> str:
        """Deprecated alias of ``model_class`` (read-only), kept while callers move over."""
        return self.model_class

    @property
    def preprocessing(self) -> dict:
        return dict(DATASETS[self.dataset])

    @property
    def input_size(self) -> tuple:
        """(C, H, W), the one meaning of input_size in the zoo (timm's)."""
        return tuple(DATASETS[self.dataset]["input_size"])


#: name -> entry, filled by the families when they are imported
REGISTRY: Dict[str, ModelEntry] = {}


def register_model(fn: Optional[Callable] = None, *, name: Optional[str] = None, dataset: str,
                   model_class: str, original_class: Optional[str], group: Optional[str] = None,
                   notes: Optional[List[str]] = None):
    """Decorator for a function ``fn(**kwargs) -> nn.Module`` registered under its own name
    (or ``name``); its docstring is the description."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; add it to DATASETS in "
                         f"agcnn_zoo/models/registration.py (known: {', '.join(DATASETS)})")

    def deco(fn):
        key = name or fn.__name__
        if key in REGISTRY:
            raise ValueError(f"model {key!r} registered twice")
        REGISTRY[key] = ModelEntry(key, fn, dataset, model_class, original_class,
                                   (fn.__doc__ or "").strip(), group, list(notes or []))
        return fn
    return deco if fn is None else deco(fn)


def register_class(name: str, *, original_class: Optional[str], notes: Optional[List[str]] = None):
    """Class decorator: register ``cls(**kwargs)`` under ``name``. Dataset, model class,
    group and description come from the class (``dataset``, its name, ``group_name``, its
    docstring); its input size must be the dataset's."""
    def deco(cls):
        dataset = getattr(cls, "dataset", None)
        if dataset not in DATASETS:
            raise ValueError(f"{cls.__name__}: set the class attribute dataset to one of "
                             f"{', '.join(DATASETS)} (got {dataset!r})")
        expected = tuple(DATASETS[dataset]["input_size"])
        if (cls.in_chans, *cls.image_size) != expected:
            raise ValueError(f"{cls.__name__}: in_chans {cls.in_chans} and image_size "
                             f"{cls.image_size} disagree with {dataset}'s input_size {expected}")

        def fn(**kwargs):
            return cls(**kwargs)
        fn.__name__ = fn.__qualname__ = name
        fn.__doc__ = cls.__doc__
        fn.model_class = cls
        register_model(fn, dataset=dataset, model_class=cls.__name__,
                       original_class=original_class, group=getattr(cls, "group_name", None),
                       notes=notes)
        return cls
    return deco


def original_classes(module: str) -> Dict[str, type]:
    """The original's class name -> our class, for the classes ``module`` registered."""
    return {e.original_class: e.fn.model_class for e in REGISTRY.values()
            if e.original_class and getattr(e.fn, "model_class", None) is not None
            and e.fn.model_class.__module__ == module}
