"""Adding a trained weight to a manifest (``train --update-manifest``).

Where it goes:
* by default the user's own manifest (``<cache root>/user/manifest.json``, see
  :func:`agcnn_zoo.hub.manifest.user_manifest_path`), the weight file beside it under a host of
  kind ``local``: ``create_model`` finds it at once, and the installed package is not touched;
* ``manifest=PATH``: that user manifest instead (created when missing);
* ``package=True``: what ships with agcnn-zoo, for maintainers: the package's own manifest,
  and the weight in ``agcnn_zoo/weights/`` (at most 512 KB, host ``package``) or, when larger,
  in the repository's ``hf/agcnn-zoo/`` (at most 12 MiB, host ``checkout``, its model cards
  rewritten there).

Everything that would make the installation fail is checked by :func:`check_installable`
before a run starts (a limited run, a missing tag, a weight too large for the package).

A kill at any point leaves the old state or, once the next installation into the same folder
has run, the new one: the intent is written first (a journal beside the manifest naming the
weight and its sha256), then the weight, then the manifest, then the journal is removed. The
next installation finds a journal left behind and completes it if the weight file was already
in place (roll forward) or drops it otherwise; temp files of interrupted writes are removed
under the same lock (a lock on the folder itself, which creates no file).
"""
from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from ..hub.convert import trained_transposed
from ..hub.hf_folder import write_cards
from ..hub.hosts import checkout as checkout_host
from ..hub.hosts import local as local_host
from ..hub.hosts import package as package_host
from ..hub.manifest import (load_manifest, manifest_path, save_manifest,
                            user_manifest_path)
from ..hub.weight_id import WeightId
from ..io.errors import ZooIOError
from ..io.files import atomic_write_bytes, read_checked, remove_stale_parts, sha256_bytes
from ..io.locks import folder_lock
from ..io.strict_json import load_strict

__all__ = ["InstallError", "Target", "target_for", "check_installable", "install"]

PathLike = Union[str, Path]


class InstallError(ZooIOError, ValueError):
    """A weight that cannot be added to the manifest asked for."""
    default_hint = "see the message; nothing was changed"


@dataclass(frozen=True)
class Target:
    """A manifest to add weights to and the folder its weight files live in."""
    manifest: Path
    folder: Path
    host_kind: str      # "package", "checkout" or "local"
    max_bytes: int

    @property
    def user(self) -> bool:
        return self.host_kind == "local"

    @property
    def journal(self) -> Path:
        return self.manifest.with_name(f".{self.manifest.name}.install.json")


def target_for(package: bool = False, manifest: Optional[PathLike] = None,
               size: Optional[int] = None) -> Target:
    """Where a weight of ``size`` bytes is installed (see the module docstring)."""
    if package:
        m = Path(manifest) if manifest else manifest_path()
        # folders read now: tests and the CIFAR campaign point them elsewhere
        if size is not None and size > package_host.MAX_BYTES:
            return Target(m, checkout_host.folder(), "checkout", checkout_host.MAX_BYTES)
        return Target(m, Path(package_host.WEIGHTS_DIR), "package", package_host.MAX_BYTES)
    m = Path(manifest).expanduser() if manifest else user_manifest_path()
    return Target(m, m.parent, "local", local_host.MAX_BYTES)


def _read_target(target: Target) -> dict:
    if target.user and not target.manifest.exists():
        return {"schema": 1, "weights": {}}
    return load_manifest(target.manifest)


def _visible(target: Target, own: dict) -> dict:
    """The records a user sees beside ``own`` (the package's, for a user manifest)."""
    if not target.user:
        return own["weights"]
    return {**load_manifest(manifest_path())["weights"], **own["weights"]}


def check_installable(weight_id: str, target: Target, *, limited: bool = False,
                      size: Optional[int] = None, default: bool = False) -> None:
    """Raise :class:`InstallError` (saying what to do) when a weight with these properties could
    not be added to ``target``; called before training and again when installing."""
    if limited:
        raise InstallError(f"{weight_id}: a limited run (--limit-*) is a smoke test, never a "
                           f"weight of a manifest", hint="train without --limit-* to add it")
    if size is not None and size > target.max_bytes:
        raise InstallError(f"{weight_id}: about {size:,} bytes, over the {target.max_bytes:,}-byte "
                           f"limit of {target.host_kind} weights",
                           hint="install it into your user manifest (leave out --into-package), "
                                "or publish it to the Hugging Face host")
    own = _read_target(target)
    visible = _visible(target, own)
    model = WeightId.model_of(weight_id)
    old = visible.get(weight_id)
    if old is not None and old.get("origin", {}).get("kind") != "trained":
        raise InstallError(f"{weight_id} is the authors' weight; yours would replace it",
                           hint="train with --tag NAME to add yours beside it")
    if old is not None and target.user and weight_id not in own["weights"]:
        raise InstallError(f"{weight_id} is a weight shipped with agcnn-zoo; yours would hide it",
                           hint="train with another --tag")
    if default and model in visible and model != weight_id:
        raise InstallError(f"{model} already has a default weight (the untagged record); "
                           f"{weight_id} cannot become its default",
                           hint="leave out --default; select yours as "
                                f"create_model('{weight_id}')")


def _weight_bytes(record_path: Path, rec: dict) -> bytes:
    weight = record_path.parent / rec["file"]
    try:
        data = read_checked(weight, size=rec.get("size"), max_size=local_host.MAX_BYTES)
    except FileNotFoundError:
        raise InstallError(f"{weight}: the run's weight is missing", hint="train again") from None
    if sha256_bytes(data) != rec.get("sha256"):
        raise InstallError(f"{weight} does not match the sha256 in {record_path} (modified after "
                           f"training?)", hint="train again, or restore the run folder")
    return data


def _apply(target: Target, weight_id: str, rec: dict, default: bool) -> dict:
    """The target manifest with ``rec`` added (and the name's other defaults cleared)."""
    manifest = _read_target(target)
    weights = manifest["weights"]
    old = weights.get(weight_id)
    if default:
        model = WeightId.model_of(weight_id)
        for key, r in weights.items():
            if WeightId.model_of(key) == model and key != weight_id:
                r["default"] = False
    rec = copy.deepcopy(rec)
    # a re-trained weight under the same id keeps the role its predecessor had for the name
    rec["default"] = bool(default) or bool(old is not None and old.get("default"))
    if old is not None and old.get("sha256") == rec.get("sha256"):
        # the same bytes installed again: what was measured on them still holds
        kept = (old.get("accuracy") or {}).get("measured") or []
        mine = rec.setdefault("accuracy", {}).setdefault("measured", [])
        rec["accuracy"]["measured"] = kept + [m for m in mine if m not in kept]
    rec["hosts"] = [{"type": target.host_kind, "path": rec["file"]}]
    weights[weight_id] = rec
    return manifest


def _recover(target: Target) -> None:
    """Complete or drop an installation that a kill interrupted (see the module docstring)."""
    j = target.journal
    if not j.exists():
        return
    intent = load_strict(j)
    try:
        weight = Path(intent.get("folder") or target.folder) / intent["record"]["file"]
        done = weight.is_file() and sha256_bytes(weight.read_bytes()) == intent["sha256"]
        if done:
            manifest = _apply(target, intent["weight_id"], intent["record"], intent["default"])
            save_manifest(manifest, target.manifest, user=target.user)
    except (KeyError, TypeError) as e:
        raise InstallError(f"{j}: not an installation journal of agcnn-zoo ({e})",
                           hint=f"remove {j} by hand after checking it") from None
    os.unlink(j)


def install(record_path: PathLike, manifest: Optional[PathLike] = None, default: bool = False,
            package: bool = False, allow_limited: bool = False) -> str:
    """Add the run whose ``record.json`` is ``record_path`` to a manifest (see the module
    docstring for which); returns the weight id. ``allow_limited``: a smoke test's limited run
    into its own scratch manifest."""
    record_path = Path(record_path)
    rec = load_strict(record_path)
    if not isinstance(rec, dict) or "file" not in rec or "training" not in rec:
        raise InstallError(f"{record_path}: not the record.json of a training run")
    weight_id = rec["file"][: -len(".safetensors")]
    if trained_transposed(rec):  # installed as it is, it would answer transposed
        raise InstallError(f"{record_path}: a run trained on transposed digits (its preprocessing "
                           f"says: {rec['preprocessing']['orientation']!r})",
                           hint="fold the transposition in first: eval/rotmnist_campaign.py "
                                "--install does, or agcnn_zoo.hub.convert.fold_transposition_file")
    limited = any(v is not None for v in rec["training"].get("limits", {}).values())
    limited = limited and not allow_limited
    data = _weight_bytes(record_path, rec)
    target = target_for(package, manifest, size=len(data))
    target.folder.mkdir(parents=True, exist_ok=True)
    with folder_lock(target.manifest.parent, "manifest folder"):
        _recover(target)
        for f in (target.manifest, target.journal, target.folder / rec["file"]):
            remove_stale_parts(f)
        check_installable(weight_id, target, limited=limited, size=len(data), default=default)
        new = _apply(target, weight_id, rec, default)
        intent = {"weight_id": weight_id, "sha256": rec["sha256"], "record": rec, "default": default,
                  "folder": str(target.folder)}
        atomic_write_bytes(target.journal, json.dumps(intent).encode(), what="manifest folder")
        dest = target.folder / rec["file"]
        if not dest.exists() or dest.resolve() != (record_path.parent / rec["file"]).resolve():
            atomic_write_bytes(dest, data, what="weights folder")
        save_manifest(new, target.manifest, user=target.user)
        os.unlink(target.journal)
        if target.host_kind == "checkout":  # the folder is a Hugging Face repo: its cards too
            write_cards(target.folder, new["weights"])
    return weight_id
