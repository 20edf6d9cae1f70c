"""``weights_manifest.json``: the single source of truth about every published weight.

Per model name, a record with: ``file``, ``sha256`` and ``size`` of our safetensors file,
``hosts`` (in order of preference: a Hugging Face repo pinned to a 40-hex revision, the authors'
original checkpoint at a pinned URL with its own sha256), ``num_params``, ``preprocessing``,
``license``, ``origin`` and three accuracies kept apart: ``paper`` (as the paper reports, with its
source and whether it was confirmed), ``checkpoint`` (the authors' log for that very file) and
``measured`` (what ``eval/reproduce.py`` measured, with data, device and date).

The canonical file sits at the repository root; an installed package carries a copy next to this
module (setup.py puts it there). ``AGCNN_ZOO_MANIFEST`` points at another file.
"""
from __future__ import annotations

import copy
import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import List, Optional, Union

from .convert import atomic_write_bytes

__all__ = ["manifest_path", "load_manifest", "save_manifest", "weight_record",
           "validate_manifest", "HOST_TYPES"]

HOST_TYPES = ("huggingface", "original")
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def manifest_path() -> Path:
    env = os.environ.get("AGCNN_ZOO_MANIFEST")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    installed = here / "weights_manifest.json"
    return installed if installed.exists() else here.parent / "weights_manifest.json"


@lru_cache(maxsize=8)
def _load(path: str, mtime: float) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_manifest(path: Optional[Union[str, Path]] = None) -> dict:
    """The manifest as a dict (a private copy: edit it freely, then ``save_manifest``)."""
    p = Path(path) if path else manifest_path()
    if not p.exists():
        raise FileNotFoundError(f"weights manifest not found at {p}")
    return copy.deepcopy(_load(str(p), p.stat().st_mtime))


def save_manifest(data: dict, path: Optional[Union[str, Path]] = None) -> Path:
    problems = validate_manifest(data)
    if problems:
        raise ValueError("refusing to write an invalid manifest:\n  " + "\n  ".join(problems))
    p = Path(path) if path else manifest_path()
    atomic_write_bytes(p, (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    return p


def weight_record(name: str, manifest: Optional[dict] = None) -> Optional[dict]:
    """The manifest record of ``name``'s published weight, or None if it has none."""
    data = manifest if manifest is not None else load_manifest()
    rec = data.get("weights", {}).get(name)
    return copy.deepcopy(rec) if rec is not None else None


def validate_manifest(data: dict) -> List[str]:
    """Structural problems of a manifest (an empty list when it is valid)."""
    problems: List[str] = []
    if data.get("schema") != 1:
        problems.append("schema must be 1")
    weights = data.get("weights")
    if not isinstance(weights, dict) or not weights:
        return problems + ["'weights' must be a non-empty object"]
    for name, rec in weights.items():
        where = f"weights[{name!r}]"
        for field in ("architecture", "file", "hosts", "num_params", "preprocessing", "license",
                      "origin", "accuracy", "tolerance"):
            if field not in rec:
                problems.append(f"{where}: missing {field!r}")
        sha = rec.get("sha256")
        if sha is None:
            if not rec.get("git_blob_sha1"):
                problems.append(f"{where}: sha256 is null and no git_blob_sha1 identifies the source")
        elif not _HEX64.match(str(sha)):
            problems.append(f"{where}: sha256 must be 64 lowercase hex digits")
        if sha is not None and not isinstance(rec.get("size"), int):
            problems.append(f"{where}: size (bytes) must be an int")
        hosts = rec.get("hosts") or []
        if not hosts:
            problems.append(f"{where}: no hosts")
        for i, h in enumerate(hosts):
            t = h.get("type")
            if t not in HOST_TYPES:
                problems.append(f"{where}.hosts[{i}]: unknown type {t!r}")
            elif t == "huggingface":
                if not h.get("repo_id") or not _HEX40.match(str(h.get("revision", ""))):
                    problems.append(f"{where}.hosts[{i}]: huggingface needs repo_id and a 40-hex revision")
            elif t == "original":
                if not str(h.get("url", "")).startswith("https://"):
                    problems.append(f"{where}.hosts[{i}]: original needs an https url")
                if not (h.get("sha256") and _HEX64.match(h["sha256"])) and not h.get("git_blob_sha1"):
                    problems.append(f"{where}.hosts[{i}]: original needs its sha256 or git_blob_sha1")
        acc = rec.get("accuracy", {})
        for kind in ("paper", "checkpoint"):
            a = acc.get(kind)
            if not isinstance(a, dict) or "top1" not in a or "source" not in a:
                problems.append(f"{where}.accuracy.{kind}: needs top1 (number or null) and source")
        if "paper" in acc and "confirmed" not in acc.get("paper", {}):
            problems.append(f"{where}.accuracy.paper: needs 'confirmed'")
        if not isinstance(acc.get("measured"), list):
            problems.append(f"{where}.accuracy.measured: must be a list")
        for i, m in enumerate(acc.get("measured") or []):
            for f in ("dataset", "top1", "images", "device", "date"):
                if f not in m:
                    problems.append(f"{where}.accuracy.measured[{i}]: missing {f!r}")
    return problems
