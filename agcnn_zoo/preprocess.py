"""The preprocessing of every weight: its typed definition (:class:`Preprocessing`, read from
the weight's manifest record) and the one torchvision transform built from it.

``transforms(name)`` turns a PIL image or a uint8 tensor (``[H, W]``, ``[C, H, W]`` or a batch
``[B, C, H, W]``) into the model's input: float pixels in [0, 1], the model's channels (RGB
from grey and back), its input size (bilinear, only when the image has another size) and the
weight's mean / std. Every weight takes images as people hold them (rot-MNIST digits in MNIST's
orientation: the transposition of the authors' data files is folded into the weights).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Tuple

import torch

from .hub.catalogue import catalogue
from .hub.weight_id import WeightId
from .input_checks import check_image_values
from .registry import DATASETS, get_entry

__all__ = ["Preprocessing", "transforms", "ToFloatImage", "ResizeTo", "TransposeDigits"]


class ToFloatImage:
    """PIL image or uint8 tensor -> float32 tensor in [0, 1] with ``channels`` channels (a
    float tensor must hold pixels in [0, 1] already: ``input_checks.check_image_values``
    refuses 0-255 or normalised values; other float dtypes become float32)."""

    def __init__(self, channels: int):
        self.channels = channels

    def __call__(self, img) -> torch.Tensor:
        if not isinstance(img, torch.Tensor):
            mode = "L" if self.channels == 1 else "RGB"
            if getattr(img, "mode", mode) != mode:
                img = img.convert(mode)
            from torchvision.transforms.functional import to_tensor  # seconds to import: on use
            return to_tensor(img)
        x = img
        if x.dim() == 2:
            x = x.unsqueeze(0)
        if x.dim() not in (3, 4):
            raise ValueError(f"expected an image tensor [H, W], [C, H, W] or [B, C, H, W], got "
                             f"{tuple(img.shape)}")
        if x.dtype == torch.uint8:
            x = x.to(torch.float32).div(255.0)
        elif not x.is_floating_point():
            raise ValueError(f"expected a uint8 or float image tensor, got {x.dtype}")
        else:
            check_image_values(x)
            x = x.to(torch.float32)     # the models' dtype (float64 would be refused there)
        c = x.shape[-3]
        if c == self.channels:
            return x
        if c == 3 and self.channels == 1:
            from torchvision.transforms.functional import rgb_to_grayscale
            return rgb_to_grayscale(x, 1)
        if c == 1:
            return x.expand(*x.shape[:-3], self.channels, *x.shape[-2:]).contiguous()
        raise ValueError(f"cannot turn a {c}-channel image into {self.channels} channels")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(channels={self.channels})"


class ResizeTo:
    """Bilinear (antialiased) resize to ``size`` (H, W), a no-op on images of that size."""

    def __init__(self, size: Tuple[int, int]):
        self.size = tuple(size)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) == self.size:
            return x
        from torchvision.transforms import InterpolationMode, functional
        return functional.resize(x, list(self.size), InterpolationMode.BILINEAR, antialias=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"


class TransposeDigits:
    """Swap rows and columns (digits as the authors' rot-MNIST files store them -> MNIST's
    orientation, and back)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(-2, -1).contiguous()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@dataclass(frozen=True)
class Preprocessing:
    """What a weight takes, as numbers: the one definition the transforms, ``pretrained_cfg``
    (hence timm's ``resolve_data_config``) and the model card read.

    ``input_size`` (C, H, W); ``mean`` / ``std`` one number per channel; ``interpolation`` and
    ``crop_pct`` as timm names them (images of another size are resized, never cropped). Every
    weight takes images as people hold them: the only orientation fact, the transposition of
    the authors' rot-MNIST files, is their readers' business (``agcnn_zoo.data``) and was folded
    into the converted weights (``agcnn_zoo.hub.convert``)."""
    input_size: Tuple[int, int, int]
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    num_classes: int
    interpolation: str = "bilinear"
    crop_pct: float = 1.0

    def __post_init__(self):
        c = self.input_size[0]
        if len(self.mean) != c or len(self.std) != c:
            raise ValueError(f"mean {self.mean} / std {self.std}: one number per channel of "
                             f"input_size {self.input_size} expected")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std {self.std} must be positive")

    @classmethod
    def from_record(cls, record: Mapping, dataset: str) -> "Preprocessing":
        """From a manifest record's ``preprocessing`` (a scalar mean/std is repeated per channel;
        a record without numbers takes its dataset's, which only rot-MNIST has as an estimate)."""
        size = tuple(int(v) for v in record["input_size"])
        mean, std = record.get("mean"), record.get("std")
        if mean is None or std is None:
            defaults = DATASETS[dataset]
            if "mean" not in defaults:
                raise ValueError(f"a {dataset} preprocessing record without mean/std: {dict(record)}")
            mean, std = defaults["mean"], defaults["std"]
        mean, std = _per_channel(mean, size[0]), _per_channel(std, size[0])
        num_classes = int(record.get("num_classes", DATASETS[dataset]["num_classes"]))
        return cls(size, mean, std, num_classes)

    @classmethod
    def of(cls, weight_id: str, manifest=None) -> "Preprocessing":
        """The preprocessing of weight ``NAME`` / ``NAME.TAG`` (a model without weights: its
        dataset's)."""
        wid, record = catalogue(manifest).resolve_named(weight_id)
        entry = get_entry(WeightId.model_of(wid))
        return cls.from_record(record["preprocessing"] if record else entry.preprocessing,
                               entry.dataset)

    def transforms(self, transpose: bool = False) -> "torchvision.transforms.Compose":  # noqa: F821
        """The transform from a PIL image or an image tensor to the model's input (see the
        module docstring); ``transpose``: the images are held as the authors' rot-MNIST files
        store them, turn them back first."""
        c, h, w = self.input_size
        steps = [ToFloatImage(c), ResizeTo((h, w))]
        if transpose:
            steps.append(TransposeDigits())
        from torchvision import transforms as T   # seconds to import: only when a user asks
        steps.append(T.Normalize(list(self.mean), list(self.std)))
        return T.Compose(steps)

    def timm_fields(self) -> dict:
        """The fields of timm's ``PretrainedCfg`` this preprocessing fills."""
        return {"input_size": self.input_size, "fixed_input_size": True,
                "interpolation": self.interpolation, "crop_pct": self.crop_pct,
                "crop_mode": "center", "mean": self.mean, "std": self.std,
                "num_classes": self.num_classes}


def _per_channel(value, channels: int) -> Tuple[float, ...]:
    values = tuple(float(v) for v in (value if isinstance(value, (list, tuple)) else [value]))
    return values * channels if len(values) == 1 and channels > 1 else values


def transforms(name: str, transpose: bool = False) -> "torchvision.transforms.Compose":  # noqa: F821
    """The transform from an image to the input of model / weight ``name`` (``NAME`` or
    ``NAME.TAG``; a model without weights gets its dataset's preprocessing).

    ``transpose=True``: the images are held as the authors' rot-MNIST files store them
    (transposed w.r.t. MNIST, e.g. read from their npz conversion without agcnn-zoo's reader);
    the transform turns them back first.
    """
    return Preprocessing.of(name).transforms(transpose)
