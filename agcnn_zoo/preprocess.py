"""The preprocessing of every weight as a torchvision transform.

``transforms(name)`` turns a PIL image or a uint8 tensor (``[H, W]``, ``[C, H, W]`` or a batch
``[B, C, H, W]``) into the model's input: float pixels in [0, 1], the model's channels (RGB
from grey and back), its input size (bilinear, only when the image has another size) and the
weight's mean / std. Every weight takes images as people hold them (rot-MNIST digits in MNIST's
orientation: the transposition of the authors' data files is folded into the weights).
"""
from __future__ import annotations

from typing import Tuple

import torch
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from .input_checks import check_image_values

__all__ = ["transforms", "ToFloatImage", "ResizeTo", "TransposeDigits"]


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
            return TF.to_tensor(img)
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
            return TF.rgb_to_grayscale(x, 1)
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
        return TF.resize(x, list(self.size), InterpolationMode.BILINEAR, antialias=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"


class TransposeDigits:
    """Swap rows and columns (digits as the authors' rot-MNIST files store them -> MNIST's
    orientation, and back)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(-2, -1).contiguous()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def transforms(name: str, transpose: bool = False) -> T.Compose:
    """The transform from an image to the input of model / weight ``name`` (``NAME`` or
    ``NAME.TAG``; a model without weights gets its dataset's preprocessing).

    ``transpose=True``: the images are held as the authors' rot-MNIST files store them
    (transposed w.r.t. MNIST, e.g. read from their npz conversion without agcnn-zoo's reader);
    the transform turns them back first.
    """
    from .pretrained_cfg import pretrained_cfg
    cfg = pretrained_cfg(name)
    c, h, w = cfg["input_size"]
    steps = [ToFloatImage(c), ResizeTo((h, w))]
    if transpose:
        steps.append(TransposeDigits())
    steps.append(T.Normalize(list(cfg["mean"]), list(cfg["std"])))
    return T.Compose(steps)
