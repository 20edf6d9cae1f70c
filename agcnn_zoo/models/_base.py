"""What every model of the zoo shares: input validation and a little metadata."""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn


class ZooModel(nn.Module):
    """Base class: ``in_chans``, ``input_size`` (H, W), ``num_classes``, ``group`` (or None)."""

    in_chans: int = 3
    input_size: Tuple[int, int] = (32, 32)
    num_classes: int = 10
    group_name: str | None = None

    def check_input(self, x) -> None:
        """Refuse, with a ValueError that says what to do, an input that is not a floating-point
        tensor of shape [B, C, H, W] in the model's own parameter dtype.

        Documented choice: inputs are never cast silently. A float32 model (the default, and
        every published weight) takes float32 input; float64, float16 and bfloat16 inputs get
        the same clear ValueError as uint8 ("convert with x.float()", or convert the model
        with ``model.to(dtype)`` to run it in that dtype). Under ``torch.autocast`` the input
        stays float32 and is accepted."""
        c, (h, w) = self.in_chans, self.input_size
        expected = f"[B, {c}, {h}, {w}]"
        name = type(self).__name__
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{name} expects a float tensor of shape {expected}, got {type(x).__name__}")
        if x.dim() != 4 or tuple(x.shape[1:]) != (c, h, w):
            raise ValueError(f"{name} expects input of shape {expected}, got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"{name} expects a floating-point tensor of shape {expected}, "
                             f"got dtype {x.dtype} (convert and normalise the images first)")
        param = next(self.parameters(), None)
        if param is not None and x.dtype != param.dtype:
            raise ValueError(f"{name} expects a floating-point tensor of shape {expected} in the "
                             f"model's dtype {param.dtype}, got dtype {x.dtype} (convert it with "
                             f"x.to({param.dtype}), or the model with model.to({x.dtype}))")


def reset_group_conv_parameters(model: nn.Module, wscale: float) -> None:
    """The original's init for every conv-type group layer (spatial-attention filters too):
    U(-s, s), s = wscale / sqrt(C_in k^2)."""
    from ..nn import GroupConv, LiftingConv
    for m in model.modules():
        if isinstance(m, (LiftingConv, GroupConv)):
            m.reset_parameters(wscale)
