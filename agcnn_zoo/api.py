"""The user-facing calls: list_models, list_pretrained, create_model, model_info (the timm
``_builder`` role).

A model may have several weights. Each has a weight id: ``NAME`` or ``NAME.TAG`` (timm's
convention), the keys of the manifest's ``weights``. ``NAME``'s default weight is the untagged
record, else the tagged one marked ``"default": true``; ``create_model("NAME.TAG",
pretrained=True)`` picks another. The authors' checkpoints are untagged; weights trained by
this project carry a tag (e.g. ``zoo_rotgen_s0``) and ``origin.kind == "trained"``.
"""
from __future__ import annotations

import copy
import fnmatch
import inspect
import logging
from typing import List, Optional, Tuple

from torch import nn

from .features import FeatureExtractor
from .hub.catalogue import Catalogue, catalogue
from .hub.errors import NoPretrainedWeightsError
from .hub.fetch import load_state_dict
from .hub.weight_id import WeightId
from .input_channels import adapt_input_channels, adapted_numbers, check_adaptable
from .pretrained_cfg import build_pretrained_cfg
from .registry import get_entry, list_registered

_logger = logging.getLogger("agcnn_zoo")

__all__ = ["NoPretrainedWeightsError", "list_models", "list_pretrained", "weight_ids", "create_model",
           "model_info", "split_weight_id", "resolve_weight"]


def split_weight_id(weight_id: str) -> Tuple[str, Optional[str]]:
    """``"NAME.TAG"`` -> ``("NAME", "TAG")``; ``"NAME"`` -> ``("NAME", None)``."""
    wid = WeightId.parse(weight_id)
    return wid.model, wid.tag


def weight_ids(name: str) -> List[str]:
    """The weight ids of model ``name`` (``NAME`` and every ``NAME.TAG``), sorted."""
    return list(catalogue().weights_of(name))


def resolve_weight(weight_id: str, manifest=None) -> Tuple[str, Optional[dict]]:
    """(weight id, record) that ``create_model(weight_id, pretrained=True)`` loads; the record is
    None when there is none (see :class:`agcnn_zoo.hub.catalogue.Catalogue`). The record is the
    caller's own copy."""
    weight_id, record = catalogue(manifest).resolve(weight_id)
    return weight_id, copy.deepcopy(record)


def list_models(filter: str = "*", pretrained: bool = False) -> List[str]:
    """Registered model names matching the fnmatch pattern ``filter``, sorted;
    ``pretrained=True`` keeps only names with at least one published weight."""
    names = list_registered(filter)
    if pretrained:
        with_weights = set(catalogue().models())
        names = [n for n in names if n in with_weights]
    return names


def list_pretrained(filter: str = "*") -> List[str]:
    """Weight ids (``NAME`` or ``NAME.TAG``) matching ``filter``, sorted."""
    return [k for k in catalogue().ids() if fnmatch.fnmatchcase(k, filter)]


def _weight_summary(weight_id: str, record: dict, default_id: Optional[str]) -> dict:
    origin = record.get("origin", {}).get("kind", "authors_checkpoint")
    measured = record.get("accuracy", {}).get("measured") or []
    return {"weight_id": weight_id, "default": weight_id == default_id,
            "origin": "trained by agcnn-zoo" if origin == "trained" else "the authors' checkpoint",
            "measured": [{k: m[k] for k in ("dataset", "top1", "images") if k in m} for m in measured]}


def model_info(name: str) -> dict:
    """Architecture, parameter count, dataset, input size, preprocessing, training recipe and
    weights (the default record, and a summary of every weight of the model)."""
    from .train.recipes import describe as describe_recipe   # the train package imports this one
    wid = WeightId.parse(name)
    entry = get_entry(wid.model)
    model = entry.fn()
    cat = catalogue()
    default_id = cat.default_of(wid.model)
    weight_id, record = cat.resolve(wid)
    if wid.tag is not None and record is None:
        raise NoPretrainedWeightsError(f"no weight {name!r}; {cat.missing_hint(wid)}")
    return {
        "name": wid.model,
        "architecture": entry.model_class,
        "original_class": entry.original_class,
        "group": entry.group,
        "dataset": entry.dataset,
        "num_params": sum(p.numel() for p in model.parameters()),
        "input_size": list(entry.preprocessing["input_size"]),
        "num_classes": entry.preprocessing["num_classes"],
        "preprocessing": copy.deepcopy(record["preprocessing"]) if record else entry.preprocessing,
        "description": entry.description,
        "training_recipe": describe_recipe(wid.model),
        "weight_id": weight_id if record else None,
        "weights": copy.deepcopy(record),
        "all_weights": [_weight_summary(k, r, default_id)
                        for k, r in cat.weights_of(wid.model).items()],
    }


def _constructor_kwargs(model_name: str, entry, kwargs: dict) -> dict:
    """timm's generic keyword arguments mapped onto the family's constructor; anything the
    constructor does not take is a ValueError naming the model (not a TypeError naming a class)."""
    cls = getattr(entry.fn, "model_class", None)
    if cls is None:
        return dict(kwargs)
    params = inspect.signature(cls.__init__).parameters
    accepted = [p for p in params if p != "self" and params[p].kind in
                (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    out = dict(kwargs)
    if "drop_rate" in out:
        rate = out.pop("drop_rate")
        target = getattr(cls, "drop_rate_arg", None)
        if target is not None:
            out[target] = rate
        elif rate not in (None, 0, 0.0):
            raise ValueError(f"{model_name} has no dropout (the original network has none); "
                             f"drop_rate must be 0, got {rate!r}")
    unknown = [k for k in out if k not in accepted]
    if unknown:
        generic = [a for a in ("num_classes", "in_chans", "drop_rate") if a in accepted
                   or (a == "drop_rate" and getattr(cls, "drop_rate_arg", None))]
        generic += ["global_pool", "features_only", "out_indices"]
        raise ValueError(f"{model_name} does not take {', '.join(map(repr, unknown))}; it takes "
                         f"{', '.join(a for a in accepted if a not in generic)} and timm's "
                         f"{', '.join(generic)}")
    return out


def _load_new_head(model: nn.Module, state: dict, weight_id: str, published_classes: int) -> None:
    """Load every published tensor whose shape does not depend on the class count (timm's
    behaviour for a new num_classes, refined: a classifier's attention on its input is kept);
    the class-dependent tensors stay freshly initialised. ``num_classes=0``: no classifier at
    all, its tensors are dropped."""
    if model.num_classes == 0:
        dropped = set(model.classifier_keys(state))
        fresh = set()
    else:
        dropped = set(model.class_dependent_keys(state))
        fresh = set(model.class_dependent_keys(model.state_dict()))
    kept = {k: v for k, v in state.items() if k not in dropped}
    prefix = f"the published weights of {weight_id!r} do not fit the model outside its classifier"
    try:
        missing, unexpected = model.load_state_dict(kept, strict=False)
    except RuntimeError as e:       # shape mismatches
        raise ValueError(f"{prefix}: {e}") from e
    if unexpected or set(missing) != fresh:
        raise ValueError(f"{prefix}: missing {sorted(set(missing) - fresh)}, unexpected "
                         f"{sorted(unexpected)}")
    if model.num_classes == 0:
        _logger.info("%s: loaded the published weights except the classifier (%s), removed "
                     "(num_classes=0: forward returns the pooled features)", weight_id,
                     ", ".join(model.classifier_names))
        return
    head_kept = sorted(set(model.classifier_keys(kept)))
    _logger.info("%s: new head with %d classes instead of %d: freshly initialised %s (their shapes "
                 "depend on the class count); every other published tensor loaded%s", weight_id,
                 model.num_classes, published_classes, ", ".join(sorted(fresh)),
                 f", the classifier's {', '.join(head_kept)} included" if head_kept else "")


#: timm's generic arguments the zoo maps itself (not passed to the family's constructor)
_FEATURE_ARGS = ("features_only", "out_indices", "feature_cls", "output_fmt")


def _pop_feature_args(name: str, kwargs: dict) -> dict:
    feats = {k: kwargs.pop(k) for k in _FEATURE_ARGS if k in kwargs}
    if not feats.get("features_only"):
        extra = [k for k in feats if k != "features_only"]
        if extra:
            raise ValueError(f"{name}: {', '.join(extra)} needs features_only=True")
        return {}
    if feats.get("feature_cls") not in (None, "getter"):
        raise ValueError(f"{name}: feature_cls={feats['feature_cls']!r} is not available; the zoo "
                         f"builds its own feature extractor from the model's stages (leave "
                         f"feature_cls out)")
    return {"out_indices": feats.get("out_indices"), "output_fmt": feats.get("output_fmt") or "NCHW"}


def create_model(name: str, pretrained: bool = False, *, manifest=None, **kwargs) -> nn.Module:
    """Build a registered model; ``pretrained=True`` loads its verified default weight (or the
    weight ``NAME.TAG`` names) and returns it in eval mode.

    ``manifest``: the weight records to use instead of the package's manifest, as a dict of the
    manifest's layout or the path of a manifest file (the evaluation harness passes the one it
    reads, so a run never changes the process environment).

    Keyword arguments go to the model's constructor, timm's generic ones included:
    ``num_classes`` (with ``pretrained=True`` and another number of classes every published
    tensor whose shape does not depend on the class count is loaded, the others are freshly
    initialised and named in an INFO log line; 0 gives a model without classifier whose
    forward returns the pooled features), ``global_pool`` (``"avg"``, or ``""`` with
    ``num_classes=0``: forward returns the unpooled ``forward_features`` map), ``drop_rate``
    (the network's dropout rate, for the families that have dropout), ``in_chans`` (with
    ``pretrained=True``: the first convolution's filters adapted, see
    ``agcnn_zoo.input_channels``; refused where the first layer's attention is shaped by the
    channels) and
    ``features_only=True`` (an ``agcnn_zoo.features.FeatureExtractor``: the maps of the stages
    in ``out_indices``, default all, described by its ``feature_info``).
    The model carries ``pretrained_cfg``, a flat timm-style configuration (see
    ``agcnn_zoo.pretrained_cfg``)."""
    cat = catalogue(manifest)
    wid = WeightId.parse(name)
    entry = get_entry(wid.model)
    weight_id, record = _chosen_weight(cat, wid, name, pretrained)
    features = _pop_feature_args(wid.model, kwargs)
    global_pool = kwargs.pop("global_pool", None)
    kwargs = _constructor_kwargs(wid.model, entry, kwargs)
    cfg = _configuration(cat, wid.model, weight_id, record)
    trained_channels = cfg["input_size"][0]
    if kwargs.get("in_chans") not in (None, trained_channels):
        _set_channels(cfg, int(kwargs["in_chans"]))
    model = entry.fn(**kwargs)
    if pretrained and cfg["input_size"][0] != trained_channels:
        check_adaptable(model.state_dict(), cfg["first_conv"], trained_channels, weight_id)
    model.set_global_pool(global_pool)
    model.pretrained_cfg = cfg
    if pretrained:
        _load_published(model, weight_id, record, int(cfg["num_classes"]), kwargs)
    return FeatureExtractor(model, **features) if features else model


def _chosen_weight(cat: Catalogue, wid: WeightId, name: str,
                   pretrained: bool) -> Tuple[Optional[str], Optional[dict]]:
    """(weight id, record) to load, (None, None) for a randomly initialised model."""
    if not pretrained:
        if wid.tag is not None:
            raise ValueError(f"{name!r} names a weight; pass pretrained=True, or the model name "
                             f"{wid.model!r} for a randomly initialised model")
        return None, None
    weight_id, record = cat.resolve(wid)
    if record is None:
        raise NoPretrainedWeightsError(
            f"{name!r} has no published weights; {cat.missing_hint(wid)}. Use pretrained=False "
            f"for a randomly initialised model.")
    return weight_id, record


def _configuration(cat: Catalogue, model_name: str, weight_id: Optional[str],
                   record: Optional[dict]) -> dict:
    """The model's ``pretrained_cfg``: its weight's, or (timm's convention for a randomly
    initialised model) its default weight's input size, mean and std with no weights loaded."""
    if record is not None:
        return build_pretrained_cfg(model_name, record, weight_id)
    default_id, default_rec = cat.resolve(model_name)
    cfg = build_pretrained_cfg(model_name, default_rec, default_id if default_rec else None)
    cfg["weights"] = None
    return cfg


def _set_channels(cfg: dict, channels: int) -> None:
    """The configuration of a model built for ``channels`` input channels."""
    mean, std = adapted_numbers(tuple(cfg["mean"]), tuple(cfg["std"]), channels)
    cfg.update(input_size=(channels, *cfg["input_size"][1:]), mean=mean, std=std)


def _load_published(model: nn.Module, weight_id: str, record: dict, published_classes: int,
                    kwargs: dict) -> None:
    """Load the verified weights into ``model`` (another channel count: see
    :mod:`agcnn_zoo.input_channels`; a new head: see :func:`_load_new_head`) and put it in eval
    mode."""
    state = adapt_input_channels(load_state_dict(weight_id, record), model.state_dict(),
                                 model.pretrained_cfg["first_conv"], weight_id)
    if getattr(model, "num_classes", published_classes) != published_classes:
        _load_new_head(model, state, weight_id, published_classes)
    else:
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ValueError(f"the published weights of {weight_id!r} do not fit the model "
                             f"built with {kwargs or 'default arguments'}: {e}") from e
    model.eval()
