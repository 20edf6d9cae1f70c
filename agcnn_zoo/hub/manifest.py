"""``weights_manifest.json``: the single source of truth about every published weight.

Per model name, a record with: ``file``, ``sha256`` and ``size`` of our safetensors file,
``hosts`` (in order of preference: a Hugging Face repo pinned to a 40-hex revision, the authors'
original checkpoint at a pinned URL with its own sha256), ``num_params``, ``preprocessing``,
``license``, ``origin`` and three accuracies kept apart: ``paper`` (as the paper reports, with its
source and whether it was confirmed), ``checkpoint`` (the authors' log for that very file) and
``measured`` (what ``eval/reproduce.py`` measured, with data, device and date).

Weight ids (the keys of ``weights``) are ``<model>`` or ``<model>.<tag>``; a record may carry
extra fields (``training``, ``default``, ...) that are kept verbatim; ``origin.kind`` is
``"authors_checkpoint"`` or ``"trained"`` (a trained record's ``accuracy.checkpoint`` may be
``{"top1": null, "source": ...}``). Records are parsed into typed
:class:`~agcnn_zoo.hub.records.WeightRecord` objects by :func:`get_record` /
:func:`load_records`, which refuse what could make the hub touch files or hosts it must not
(see :mod:`agcnn_zoo.hub.records`).

The canonical file sits at the repository root; an installed package carries a copy in the
package folder (setup.py puts it there). ``AGCNN_ZOO_MANIFEST`` points at another file.

A user's own weights (``train --update-manifest``) go to a *user manifest* of the same schema,
``<cache root>/user/manifest.json`` (``AGCNN_ZOO_USER_MANIFEST`` moves it), whose records use
hosts of kind ``local`` (files beside it). :func:`load_manifest` without a path is the catalogue
a user sees: the package manifest with the user's records added (an id in both is refused, by
name); with a path it is that one file, as tools that edit a manifest need it.

Manifests are read strictly: a key given twice in one object (a weight id twice, a field twice
in a record) is refused by name instead of the last copy silently winning.
"""
from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Union

from ..io import env
from ..io.files import atomic_write_bytes
from ..io.strict_json import load_strict
from .weight_id import WeightId
from .records import (HOST_TYPES, WEIGHT_ID, RecordError, WeightRecord,  # noqa: F401
                      parse_record, record_problems)

__all__ = ["manifest_path", "user_manifest_path", "load_manifest", "save_manifest",
           "weight_record", "get_record",
           "load_records", "validate_manifest", "HOST_TYPES", "ORIGIN_KINDS"]

ORIGIN_KINDS = ("authors_checkpoint", "trained")


def manifest_path() -> Path:
    """The package manifest (or ``AGCNN_ZOO_MANIFEST``, which must name an existing file)."""
    override = env.manifest_override()
    if override is not None:
        return override
    package = Path(__file__).resolve().parent.parent
    installed = package / "weights_manifest.json"
    return installed if installed.exists() else package.parent / "weights_manifest.json"


def user_manifest_path() -> Path:
    """Where a user's own installed weights are listed (it need not exist)."""
    return env.user_manifest()


@lru_cache(maxsize=8)
def _load(path: str, mtime: float, size: int) -> dict:
    data = load_strict(path)
    if not isinstance(data, dict) or not isinstance(data.get("weights", {}), dict):
        raise RecordError(f"{path}: not a weights manifest (an object with 'weights')")
    return data


def _read(p: Path) -> dict:
    if not p.exists():
        raise FileNotFoundError(f"weights manifest not found at {p}")
    st = p.stat()
    return _load(str(p), st.st_mtime, st.st_size)


def _with_user_records(base: dict, user_path: Path) -> dict:
    """``base`` with the records of the user manifest added; their local hosts learn the folder
    they lie in. Package records that were a name's default yield to a user default."""
    user = _read(user_path)
    merged = copy.deepcopy(base)
    weights = merged.setdefault("weights", {})
    folder = str(user_path.resolve().parent)
    for wid, rec in user.get("weights", {}).items():
        if wid in weights:
            raise RecordError(f"{user_path}: weight id {wid!r} is also in the package manifest; "
                              f"refused (only one of them could be meant)",
                              hint=f"rename it in {user_path} (train again with another --tag)")
        rec = copy.deepcopy(rec)
        for h in rec.get("hosts", []) if isinstance(rec, dict) else []:
            if isinstance(h, dict) and h.get("type") == "local":
                h["folder"] = folder
        if isinstance(rec, dict) and rec.get("default"):
            model = WeightId.model_of(wid)
            for k, r in weights.items():
                if WeightId.model_of(k) == model and isinstance(r, dict):
                    r["default"] = False
        weights[wid] = rec
    return merged


def load_manifest(path: Optional[Union[str, Path]] = None) -> dict:
    """The manifest as a dict (a private copy: edit it freely, then ``save_manifest``).
    Without ``path``: the package manifest with the user's records added (see the module
    docstring); with ``path``: that file alone."""
    if path:
        return copy.deepcopy(_read(Path(path)))
    base = _read(manifest_path())
    user = user_manifest_path()
    if user.is_file():
        return _with_user_records(base, user)
    return copy.deepcopy(base)


def save_manifest(data: dict, path: Optional[Union[str, Path]] = None, user: bool = False) -> Path:
    """Validate and write the manifest atomically (0644). ``weights`` values may be dicts or
    :class:`WeightRecord` objects (written back with every extra field); ``user``: validated
    as a user manifest."""
    data = dict(data)
    if isinstance(data.get("weights"), dict):
        data["weights"] = {k: (v.to_dict() if isinstance(v, WeightRecord) else v)
                           for k, v in data["weights"].items()}
    problems = validate_manifest(data, user=user)
    if problems:
        raise ValueError("refusing to write an invalid manifest:\n  " + "\n  ".join(problems))
    p = Path(path) if path else manifest_path()
    atomic_write_bytes(p, (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8"),
                       what="manifest")
    return p


def weight_record(name: str, manifest: Optional[dict] = None) -> Optional[dict]:
    """The manifest record of ``name``'s published weight as a dict, or None if it has none."""
    data = manifest if manifest is not None else load_manifest()
    rec = data.get("weights", {}).get(name)
    return copy.deepcopy(rec) if rec is not None else None


def get_record(weight_id: str, manifest: Optional[dict] = None) -> Optional[WeightRecord]:
    """The typed, validated record of ``weight_id`` (None if the manifest has none); a record
    that must not be used raises :class:`RecordError`."""
    raw = weight_record(weight_id, manifest)
    return None if raw is None else parse_record(weight_id, raw)


def load_records(path: Optional[Union[str, Path]] = None) -> Dict[str, WeightRecord]:
    """Every record of the manifest, typed and validated (the first bad one raises)."""
    return {k: parse_record(k, v) for k, v in load_manifest(path).get("weights", {}).items()}


def validate_manifest(data: dict, user: bool = False) -> List[str]:
    """Structural problems of a manifest (an empty list when it is valid). Only a ``user``
    manifest may be empty and hold ``local`` hosts."""
    problems: List[str] = []
    if data.get("schema") != 1:
        problems.append("schema must be 1")
    weights = data.get("weights")
    if not isinstance(weights, dict) or (not weights and not user):
        return problems + ["'weights' must be a non-empty object"]
    for name, rec in weights.items():
        where = f"weights[{name!r}]"
        if not isinstance(rec, dict):
            problems.append(f"{where}: a record must be an object")
            continue
        for field in ("architecture", "file", "hosts", "num_params", "preprocessing", "license",
                      "origin", "accuracy", "tolerance"):
            if field not in rec:
                problems.append(f"{where}: missing {field!r}")
        if not WEIGHT_ID.match(str(name)):
            problems.append(f"{where}: a weight id is <model> or <model>.<tag> (tag: [a-z0-9_-]+)")
        problems += record_problems(name, rec)
        locals_ = [h for h in rec.get("hosts") or [] if isinstance(h, dict) and h.get("type") == "local"]
        if locals_ and not user:
            problems.append(f"{where}: a host of kind 'local' belongs in a user manifest only")
        if any("folder" in h for h in locals_):
            problems.append(f"{where}: a local host's folder is not written (it is where the "
                            f"manifest lies)")
        kind = (rec.get("origin") or {}).get("kind")
        if kind is not None and kind not in ORIGIN_KINDS:
            problems.append(f"{where}.origin.kind: {kind!r} is not one of {', '.join(ORIGIN_KINDS)}")
        if "default" in rec and not isinstance(rec["default"], bool):
            problems.append(f"{where}.default: must be true or false")
        if "training" in rec and not isinstance(rec["training"], dict):
            problems.append(f"{where}.training: must be an object")
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
