"""Published weights on images of another channel count (timm's ``in_chans`` with
``pretrained=True``).

Only the first convolution's filters depend on the input channels, so only they change:
RGB -> grey sums them over the channels (the response to a grey image equals the published
network's response to the same values in all three channels), grey -> k channels repeats them,
scaled by 1/k (k equal channels give exactly the published response). A first layer with
attention (every attentive rot-MNIST variant, the alpha_F CIFAR models) has no such adaptation:
its attention looks at each input channel's responses, so it is refused. The normalisation changes with
it: k channels repeat the grey mean / std; grey from RGB takes the mean of the three, so a grey
image is only approximately what the RGB network saw (timm makes the same approximation).
"""
from __future__ import annotations

import math
from typing import Dict, Tuple

import torch

__all__ = ["check_adaptable", "adapt_input_channels", "adapted_numbers"]


def check_adaptable(target: Dict[str, torch.Tensor], first_conv: str, trained: int,
                    weight_id: str) -> None:
    """Refuse (before any weight is fetched) a model whose first layer has attention: it looks
    at each input channel's responses, so scaled filters change what it sees (measured: logits
    off by about 5 for asp_p4cnn_rotmnist)."""
    key = f"{first_conv}.weight"
    attention = sorted(k for k in target if k.startswith(f"{first_conv}.")
                       and k not in (key, f"{first_conv}.bias"))
    if attention:
        wanted = target[key].shape[1]
        raise ValueError(f"{weight_id!r}: in_chans={wanted} has no exact adaptation: its first "
                         f"layer's attention ({', '.join(attention)}) looks at the {trained} input "
                         f"channel(s) it was trained on; use in_chans={trained}, or "
                         f"pretrained=False")


def adapt_input_channels(state: Dict[str, torch.Tensor], target: Dict[str, torch.Tensor],
                         first_conv: str, weight_id: str) -> Dict[str, torch.Tensor]:
    """``state`` with the first convolution's filters adapted to the channel count of the
    model whose state dict is ``target`` (see the module docstring)."""
    key = f"{first_conv}.weight"
    trained, wanted = state[key].shape[1], target[key].shape[1]
    if trained == wanted:
        return state
    check_adaptable(target, first_conv, trained, weight_id)
    w = state[key]
    if wanted == 1:
        adapted = w.sum(dim=1, keepdim=True)
    else:
        reps = math.ceil(wanted / trained)
        adapted = w.repeat(1, reps, *([1] * (w.dim() - 2)))[:, :wanted] * (trained / wanted)
    return {**state, key: adapted.contiguous()}


def adapted_numbers(mean: Tuple[float, ...], std: Tuple[float, ...],
                    wanted: int) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """The mean / std for ``wanted`` channels from the published per-channel numbers."""
    if len(mean) == wanted:
        return mean, std
    if wanted == 1:
        return (sum(mean) / len(mean),), (sum(std) / len(std),)
    return (mean * wanted)[:wanted], (std * wanted)[:wanted]
