"""timm-style pretrained configurations: one flat dict per weight (or per model without weights).

``create_model`` attaches ``pretrained_cfg(weight id)`` to every model it builds, and
``timm_compat`` registers the same configurations into timm, so that timm's data pipeline
(``timm.data.resolve_model_data_config(model)``, ``timm.data.create_transform(**cfg)``),
``timm.list_pretrained`` and ``timm.is_model_pretrained`` see the zoo's input sizes,
normalisation and weights. Keys: timm's (``input_size`` as (C, H, W), ``mean``, ``std``,
``num_classes``, ``pool_size`` (the (H, W) of ``forward_features``' map), ``interpolation``,
``crop_pct``, ``crop_mode``, ``first_conv``,
``classifier``, ``license``, ``origin_url``, ``paper_ids``, ``url`` / ``file`` / ``hf_hub_id``
where the weight has such a host) and the zoo's (``weight_id``, ``dataset``, ``model_class``,
``sha256``, ``weights``). The input size, mean, std, interpolation and crop come from the one
preprocessing definition, :class:`agcnn_zoo.preprocess.Preprocessing`.
"""
from __future__ import annotations

import copy
from typing import Optional

from .hub.catalogue import catalogue
from .hub.weight_id import WeightId
from .preprocess import Preprocessing
from .registry import get_entry

__all__ = ["PAPER_IDS", "PAPER_NAME", "pretrained_cfg", "build_pretrained_cfg", "TIMM_KEYS"]

PAPER_IDS = "arXiv:2002.03830"
PAPER_NAME = "Attentive Group Equivariant Convolutional Networks"
#: the keys of timm's PretrainedCfg that the zoo fills in
TIMM_KEYS = ("url", "file", "hf_hub_id", "hf_hub_filename", "architecture", "tag", "input_size",
             "fixed_input_size", "pool_size", "interpolation", "crop_pct", "crop_mode", "mean", "std",
             "num_classes", "first_conv", "classifier", "license", "description", "origin_url",
             "paper_name", "paper_ids", "notes")


def _license(record: Optional[dict]) -> str:
    lic = (record or {}).get("license") or {}
    return str(lic.get("weights", "mit") if isinstance(lic, dict) else lic).lower()


def build_pretrained_cfg(name: str, record: Optional[dict] = None,
                         weight_id: Optional[str] = None) -> dict:
    """The flat configuration of model ``name`` with the weight ``record`` (None: no weight)."""
    entry = get_entry(name)
    cls = getattr(entry.fn, "model_class", None)
    prep = copy.deepcopy(record["preprocessing"]) if record else entry.preprocessing
    tag = WeightId.parse(weight_id).tag if record is not None and weight_id else None
    classifier = tuple(getattr(cls, "classifier_names", ()) or ())
    cfg = {
        "architecture": name, "tag": tag,
        **Preprocessing.from_record(prep, entry.dataset).timm_fields(),
        "pool_size": tuple(getattr(cls, "feature_map_size", (1, 1))),
        "first_conv": getattr(cls, "first_conv_name", "c1"),
        "classifier": classifier[0] if len(classifier) == 1 else classifier,
        "license": _license(record), "description": entry.description.split("\n")[0],
        "paper_name": PAPER_NAME, "paper_ids": PAPER_IDS,
        "origin_url": "https://github.com/dwromero/att_gconvs",
        # the zoo's own keys
        "weight_id": weight_id if record is not None else None,
        "dataset": entry.dataset, "model_class": entry.model_class,
        "original_class": entry.original_class, "group": entry.group,
        "preprocessing": prep,
        "weights": None,
    }
    if record is not None:
        origin = record.get("origin") or {}
        cfg["origin_url"] = origin.get("url") or cfg["origin_url"]
        cfg["sha256"] = record.get("sha256")
        cfg["notes"] = tuple(record.get("notes") or ())
        for host in record.get("hosts") or []:
            kind = host.get("type")
            if kind == "huggingface" and host.get("repo_id") and "hf_hub_id" not in cfg:
                cfg["hf_hub_id"] = host["repo_id"]
                if host.get("filename"):
                    cfg["hf_hub_filename"] = host["filename"]
            elif kind == "original" and host.get("url") and "url" not in cfg:
                cfg["url"] = host["url"]
            elif kind == "package" and host.get("path") and "file" not in cfg:
                cfg["file"] = f"agcnn_zoo/weights/{host['path']}"
        if not any(k in cfg for k in ("url", "file", "hf_hub_id")):
            # a weight recorded without a host yet (e.g. pinned by its git blob id): still a weight
            cfg["file"] = record.get("file")
        cfg["weights"] = {"weight_id": weight_id, "file": record.get("file"),
                          "sha256": record.get("sha256")}
    return cfg


def pretrained_cfg(weight_id: str, manifest=None) -> dict:
    """The configuration ``create_model(weight_id, pretrained=True)`` attaches (for a model name
    without weights: its dataset's preprocessing, no weight)."""
    wid, record = catalogue(manifest).resolve_named(weight_id)
    return build_pretrained_cfg(WeightId.model_of(wid), record, wid if record else None)
