"""What every model of the zoo shares: input validation, a little metadata and timm's model
interface (``forward_features`` / ``forward_head`` / ``get_classifier`` / ``reset_classifier``).

Each family splits its forward pass in two, without changing a single operation:
``forward(x) == forward_head(forward_features(x))``. The classifier (``classifier_names``) is
the last learned layer that depends on the number of classes; ``reset_classifier(n)`` rebuilds
exactly those modules with the family's own constructor and initialisation.

The family vocabulary: a family's base class builds its network from the hooks ``stem(cin,
cout)`` (the first convolution), ``conv(cin, cout, k, ...)`` (every inner convolution),
``head_conv(cin, cout)`` (the classifier convolution), ``norm(c)`` and ``pool(h)``; each variant
overrides them with a constructor of ``factory.py`` and its own numbers, built with the
class's ``group_name``. See docs/ARCHITECTURE.md.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn


class ZooModel(nn.Module):
    """Base class: ``dataset``, ``in_chans``, ``image_size`` (H, W), ``input_size`` (C, H, W),
    ``num_classes``, ``group_name`` (or None).

    ``input_size`` means (C, H, W) everywhere in the zoo (timm's meaning: models, registry,
    ``pretrained_cfg``, datasets); ``image_size`` is its (H, W) part, a family constant.
    """

    #: the registry's dataset key (registry.DATASETS): preprocessing and input size
    dataset: str | None = None
    in_chans: int = 3
    image_size: Tuple[int, int] = (32, 32)
    num_classes: int = 10
    #: the symmetry group of the family's variant ("p4", "p4m"; None: plain CNN); every
    #: equivariant layer of the model is built with it
    group_name: str | None = None
    #: module names of the classifier (state-dict prefixes that depend on num_classes)
    classifier_names: Tuple[str, ...] = ()
    #: module name of the first convolution (timm's ``first_conv``)
    first_conv_name: str = "c1"

    @property
    def input_size(self) -> Tuple[int, int, int]:
        """(C, H, W) of one input image (``in_chans`` may differ from the dataset's)."""
        return (self.in_chans, *self.image_size)

    def _set_in_chans(self, in_chans) -> None:
        if in_chans is None:
            return
        if not isinstance(in_chans, int) or isinstance(in_chans, bool) or in_chans < 1:
            raise ValueError(f"in_chans must be a positive int, got {in_chans!r}")
        self.in_chans = in_chans

    @staticmethod
    def _check_num_classes(num_classes) -> int:
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 0:
            raise ValueError(f"num_classes must be an int >= 0 (0: no classifier, forward returns "
                             f"the pooled features), got {num_classes!r}")
        return num_classes

    def check_input(self, x) -> None:
        """Refuse, with a ValueError that says what to do, an input that is not a floating-point
        tensor of shape [B, C, H, W] in the model's own parameter dtype.

        Documented choice: inputs are never cast silently. A float32 model (the default, and
        every published weight) takes float32 input; float64, float16 and bfloat16 inputs get
        the same clear ValueError as uint8 ("convert with x.float()", or convert the model
        with ``model.to(dtype)`` to run it in that dtype). Under ``torch.autocast`` the input
        stays float32 and is accepted."""
        c, h, w = self.input_size
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

    # ------------------------------------------------------------------- timm's model interface
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's output: a plane map ``[B, C, X, Y]`` or a group map ``[B, C, n, X, Y]``."""
        raise NotImplementedError

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """Classifier and pooling of the family (``num_classes > 0``)."""
        raise NotImplementedError

    def pool_features(self, h: torch.Tensor) -> torch.Tensor:
        """The invariant embedding: ``forward_features`` averaged over space (and the group
        axis), ``[B, C]``; what ``forward_head(..., pre_logits=True)`` returns."""
        return h.mean(dim=tuple(range(2, h.dim())))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """``forward_features``' output -> logits ``[B, num_classes]``; ``pre_logits=True`` (or
        a model without classifier, ``num_classes == 0``) gives the pooled features ``[B, C]``."""
        if pre_logits or self.num_classes == 0:
            return self.pool_features(x)
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The classifier module (an ``nn.ModuleDict`` when it is several modules, an
        ``nn.Identity`` when ``num_classes == 0``)."""
        mods = {n: getattr(self, n) for n in self.classifier_names}
        if any(m is None for m in mods.values()):
            return nn.Identity()
        if len(mods) == 1:
            return next(iter(mods.values()))
        return nn.ModuleDict(mods)

    def build_classifier(self, num_classes: int) -> dict:
        """New classifier modules for ``num_classes`` outputs: ``{module name: module}``."""
        raise NotImplementedError

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a freshly initialised one with ``num_classes`` outputs, on
        the device and dtype of the model (``0``: no classifier; forward returns ``[B, C]``)."""
        num_classes = self._check_num_classes(num_classes)
        ref = next(iter(self.parameters()), None)
        if num_classes == 0:
            new = {n: None for n in self.classifier_names}
        else:
            new = self.build_classifier(num_classes)
        for name, mod in new.items():
            if mod is not None and ref is not None:
                mod = mod.to(device=ref.device, dtype=ref.dtype)
                mod.train(self.training)
            setattr(self, name, mod)
        self.num_classes = num_classes

    def classifier_keys(self, keys) -> list:
        """Those of the state-dict ``keys`` that belong to the classifier."""
        prefixes = tuple(f"{n}." for n in self.classifier_names)
        return [k for k in keys if k.startswith(prefixes)]


def reset_group_conv_parameters(model: nn.Module, wscale: float) -> None:
    """The original's init for every conv-type group layer (spatial-attention filters too):
    U(-s, s), s = wscale / sqrt(C_in k^2)."""
    from ..nn import GroupConv, LiftingConv
    for m in model.modules():
        if isinstance(m, (LiftingConv, GroupConv)):
            m.reset_parameters(wscale)
