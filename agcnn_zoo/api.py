"""The user-facing calls: list_models, create_model, model_info (the timm ``_builder`` role)."""
from __future__ import annotations

import fnmatch
from typing import List, Optional

from torch import nn

from .hub.manifest import load_manifest
from .registry import get_entry, list_registered


class NoPretrainedWeightsError(ValueError):
    """pretrained=True for a model that has no published weight."""


def _published(manifest: Optional[dict] = None) -> dict:
    return (manifest if manifest is not None else load_manifest()).get("weights", {})


def list_models(filter: str = "*", pretrained: bool = False) -> List[str]:
    """Registered model names matching the fnmatch pattern ``filter``, sorted;
    ``pretrained=True`` keeps only names with a published weight."""
    names = list_registered(filter)
    if pretrained:
        published = _published()
        names = [n for n in names if n in published]
    return names


def model_info(name: str) -> dict:
    """Architecture, parameter count, dataset, input size, preprocessing and weight record."""
    entry = get_entry(name)
    model = entry.fn()
    record = _published().get(name)
    return {
        "name": name,
        "architecture": entry.architecture,
        "original_class": entry.original_class,
        "group": entry.group,
        "dataset": entry.dataset,
        "num_params": sum(p.numel() for p in model.parameters()),
        "input_size": list(entry.preprocessing["input_size"]),
        "num_classes": entry.preprocessing["num_classes"],
        "preprocessing": record["preprocessing"] if record else entry.preprocessing,
        "description": entry.description,
        "weights": record,
    }


def create_model(name: str, pretrained: bool = False, **kwargs) -> nn.Module:
    """Build a registered model; ``pretrained=True`` loads its verified weights and returns it
    in eval mode. Extra keyword arguments go to the model's constructor."""
    entry = get_entry(name)
    record = None
    if pretrained:
        record = _published().get(name)
        if record is None:
            with_weights = ", ".join(list_models(pretrained=True))
            raise NoPretrainedWeightsError(
                f"{name!r} has no published weights; models with weights: {with_weights}. "
                f"Use pretrained=False for a randomly initialised model.")
    model = entry.fn(**kwargs)
    model.pretrained_cfg = {"name": name, "dataset": entry.dataset,
                            "preprocessing": record["preprocessing"] if record else entry.preprocessing,
                            "weights": None}
    if pretrained:
        from . import hub
        state = hub.load_state_dict(name, record)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ValueError(f"the published weights of {name!r} do not fit the model built with "
                             f"{kwargs or 'default arguments'}: {e}") from e
        model.pretrained_cfg["weights"] = {"file": record["file"], "sha256": record["sha256"]}
        model.eval()
    return model
