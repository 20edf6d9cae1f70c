"""Feature extraction: ``create_model(name, features_only=True, out_indices=...)``.

``FeatureExtractor`` wraps a zoo model (its classifier removed) and returns the feature map of
every backbone stage in ``out_indices`` (``model.forward_intermediates``), ``[B, C |G|, X, Y]``
with the group axis folded into the channels (timm's NCHW; ``output_fmt="NCGHW"`` keeps the
group axis). ``feature_info`` describes them the way timm's feature models do: ``channels()``,
``reduction()``, ``module_name()``. The weights sit under ``model.`` in its state dict.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torch import nn

from .models._base import ZooModel, resolve_indices

__all__ = ["FeatureInfo", "FeatureExtractor"]


class FeatureInfo:
    """The stages a feature model returns: a list of dicts with ``num_chs``, ``reduction``,
    ``module`` (timm's keys), ``index`` (the stage) and ``group_order``."""

    def __init__(self, stages: Sequence[dict], out_indices: Sequence[int]):
        self.out_indices = tuple(out_indices)
        self.info = [dict(stages[i], index=i) for i in self.out_indices]

    def get(self, key: str, idx: Optional[int] = None):
        """``key`` of every returned stage, or of the ``idx``-th one."""
        if idx is None:
            return [d[key] for d in self.info]
        return self.info[idx][key]

    def channels(self, idx: Optional[int] = None):
        return self.get("num_chs", idx)

    def reduction(self, idx: Optional[int] = None):
        return self.get("reduction", idx)

    def module_name(self, idx: Optional[int] = None):
        return self.get("module", idx)

    def get_dicts(self) -> List[dict]:
        return [dict(d) for d in self.info]

    def __len__(self) -> int:
        return len(self.info)

    def __getitem__(self, idx: int) -> dict:
        return self.info[idx]

    def __iter__(self):
        return iter(self.info)

    def __repr__(self) -> str:
        return f"FeatureInfo({self.info})"


class FeatureExtractor(nn.Module):
    """``model`` without its classifier, returning ``[stage map for each of out_indices]``."""

    def __init__(self, model: ZooModel, out_indices: Optional[Sequence[int]] = None,
                 output_fmt: str = "NCHW"):
        super().__init__()
        if not isinstance(model, ZooModel):
            raise ValueError(f"FeatureExtractor wraps a zoo model, got {type(model).__name__}")
        if output_fmt not in ("NCHW", "NCGHW"):
            raise ValueError(f"output_fmt must be 'NCHW' (group axis folded into the channels) "
                             f"or 'NCGHW' (group axis kept), got {output_fmt!r}")
        stages = model.feature_info
        self.out_indices = tuple(resolve_indices(out_indices, len(stages)))
        model.reset_classifier(0)           # features only: no head to keep or train
        self.model = model
        self.output_fmt = output_fmt
        self.feature_info = FeatureInfo(stages, self.out_indices)
        self.train(model.training)          # a pretrained model comes in eval mode

    @property
    def pretrained_cfg(self) -> dict:
        return self.model.pretrained_cfg

    default_cfg = pretrained_cfg

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        return self.model.forward_intermediates(x, self.out_indices, output_fmt=self.output_fmt,
                                                intermediates_only=True)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.model.set_grad_checkpointing(enable)
