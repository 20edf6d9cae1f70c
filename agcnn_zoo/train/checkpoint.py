"""A run's checkpoint as a file that can be shared and resumed without running anything from it.

``checkpoint.safetensors`` holds every tensor of the run state (model, optimizer, best weight,
RNG states); its metadata holds the rest as JSON (settings, epoch, metrics, scheduler, the
structure that puts the tensors back in place) and the sha256 of the tensor payload, recorded
when the file was written and checked when it is read. Nothing is unpickled: only tensors,
numbers, strings, lists, dicts, tuples and counters come back, so a crafted file can at most be
refused. Checkpoints of older versions (``checkpoint.pt``, a pickle) are refused unread.

The tree encoding: a tensor becomes ``{"$t": key}``, a numpy array ``{"$nd": key, "dtype":
...}``, a tuple ``{"$tuple": [...]}``, a ``collections.Counter`` ``{"$counter": [[k, v], ...]}``,
a dict whose keys are not all plain strings ``{"$dict": [[k, v], ...]}``.
"""
from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any, Dict, Mapping, Tuple

import numpy as np
import torch

from ..io.errors import ZooIOError
from ..io.files import atomic_write_bytes, sha256_hasher
from ..io.strict_json import JSONFileError, loads_strict

__all__ = ["CHECKPOINT", "LEGACY_CHECKPOINT", "CheckpointError", "ResumeError", "STATE_KEYS",
           "save_checkpoint", "load_checkpoint", "state_digest", "capture", "verify_best",
           "open_state"]

CHECKPOINT = "checkpoint.safetensors"
#: the pickle checkpoints of earlier agcnn-zoo versions: never read (unpickling can run code)
LEGACY_CHECKPOINT = "checkpoint.pt"
FORMAT = "agcnn-zoo-run-checkpoint"
VERSION = 1


class CheckpointError(ZooIOError, ValueError):
    """A checkpoint that cannot be resumed from: unreadable, crafted, corrupted or of another run."""
    default_hint = ("the run cannot continue from it: start a fresh run in another --out (or "
                    "restore the file from a backup)")


def state_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of ``tensors`` (in name order)."""
    h = sha256_hasher()
    for k in sorted(tensors):
        v = tensors[k].detach().cpu().contiguous()
        h.update(f"{k}\0{v.dtype}\0{tuple(v.shape)}\0".encode())
        h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- tree codec

def _encode(obj: Any, tensors: Dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"$t": key}
    if isinstance(obj, np.ndarray):
        key = f"t{len(tensors)}"
        wide = obj.astype(np.int64) if obj.dtype == np.uint32 else obj  # torch lacks full uint32
        tensors[key] = torch.from_numpy(np.ascontiguousarray(wide)).clone()
        return {"$nd": key, "dtype": str(obj.dtype)}
    if isinstance(obj, collections.Counter):
        return {"$counter": [[_encode(k, tensors), _encode(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in obj):
            return {k: _encode(v, tensors) for k, v in obj.items()}
        return {"$dict": [[_encode(k, tensors), _encode(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"$tuple": [_encode(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    raise TypeError(f"a checkpoint holds tensors and plain containers only, not {type(obj).__name__}")


def _decode(node: Any, tensors: Mapping[str, torch.Tensor], where: str) -> Any:
    if isinstance(node, list):
        return [_decode(v, tensors, where) for v in node]
    if not isinstance(node, dict):
        return node
    if "$t" in node or "$nd" in node:
        key = node.get("$t", node.get("$nd"))
        if key not in tensors:
            raise CheckpointError(f"{where}: refers to a tensor {key!r} the file does not hold")
        t = tensors[key]
        if "$t" in node:
            return t
        try:
            dtype = np.dtype(str(node.get("dtype")))
        except TypeError:
            dtype = None
        if dtype is None or dtype.kind not in "biuf":
            raise CheckpointError(f"{where}: an array of dtype {node.get('dtype')!r} (numbers only)")
        return t.numpy().astype(dtype)
    if "$tuple" in node:
        return tuple(_decode(v, tensors, where) for v in node["$tuple"])
    if "$counter" in node or "$dict" in node:
        pairs = node.get("$counter", node.get("$dict"))
        out = collections.Counter() if "$counter" in node else {}
        for pair in pairs:
            if not isinstance(pair, list) or len(pair) != 2:
                raise CheckpointError(f"{where}: a malformed mapping entry")
            k = _decode(pair[0], tensors, where)
            if isinstance(k, (list, dict, torch.Tensor)):
                raise CheckpointError(f"{where}: a mapping key must be a plain value")
            out[k] = _decode(pair[1], tensors, where)
        return out
    return {k: _decode(v, tensors, where) for k, v in node.items()}


# ----------------------------------------------------------------------------- files

def save_checkpoint(path: Path, state: Mapping[str, Any]) -> None:
    """Write ``state`` (tensors and plain containers) to ``path`` atomically."""
    from safetensors.torch import save
    tensors: Dict[str, torch.Tensor] = {}
    tree = _encode(dict(state), tensors)
    meta = {"format": FORMAT, "version": str(VERSION), "payload_sha256": state_digest(tensors),
            "state": json.dumps(tree, allow_nan=True)}
    atomic_write_bytes(path, save(tensors, metadata=meta), what="checkpoint")


def _read(path: Path) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except Exception as e:  # safetensors raises its own error types for every malformed file
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({reason})") from None
    return tensors, meta


def load_checkpoint(path: Path, required: Tuple[str, ...] = ()) -> Dict[str, Any]:
    """The run state in ``path`` after checking its format, its payload sha256 and that it has
    the keys ``required``; every problem is a :class:`CheckpointError` naming the file."""
    path = Path(path)
    tensors, meta = _read(path)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an agcnn-zoo run checkpoint (format "
                              f"{meta.get('format')!r})")
    if meta.get("version") != str(VERSION):
        raise CheckpointError(f"{path}: checkpoint version {meta.get('version')!r}; this agcnn-zoo "
                              f"reads version {VERSION}", hint="resume with the agcnn-zoo version "
                                                               "that wrote it, or start a fresh run")
    actual = state_digest(tensors)
    if actual != meta.get("payload_sha256"):
        raise CheckpointError(f"{path}: its tensors do not match the sha256 recorded when it was "
                              f"written (expected {meta.get('payload_sha256')}, got {actual}): "
                              f"the file was corrupted or modified")
    try:
        tree = loads_strict(meta.get("state", ""), f"{path} (metadata)")
    except JSONFileError as e:
        raise CheckpointError(e.message) from None
    state = _decode(tree, tensors, str(path))
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: its state is not an object")
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(f"{path}: lacks {', '.join(missing)} (not a checkpoint of an "
                              f"agcnn-zoo training run, or a damaged one)")
    return state


# ----------------------------------------------------------------------------- a run's state

#: what a run's checkpoint holds (``step`` / ``partial``: where inside an epoch it was written)
STATE_KEYS = ("ident", "model", "optimizer", "scheduler", "rng", "epoch", "best", "metrics",
              "wall_s", "outputs")


class ResumeError(ZooIOError, ValueError):
    """--resume against a checkpoint of a different run, or a fresh run over an existing one."""
    default_hint = "resume with the run's own settings, or choose another --out"


def capture(model: torch.nn.Module, top1, epoch: int) -> dict:
    """A best-so-far entry: a copy of the weights and their digest, taken now."""
    tensors = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {"top1": top1, "epoch": epoch, "state": tensors, "sha256": state_digest(tensors)}


def verify_best(best: dict, where: Path) -> None:
    """Refuse a stored best weight whose digest is not the one recorded when it was taken."""
    if best.get("state") is not None and state_digest(best["state"]) != best.get("sha256"):
        raise CheckpointError(f"{where}: the stored best weight (epoch {best.get('epoch')}) does "
                              f"not match the sha256 recorded when it was taken")


def open_state(out: Path, ident: dict, epochs: int, resume: bool, announce: bool) -> "dict | None":
    """The state a run in ``out`` continues from (None: a fresh run), after every check:
    no pickle is read, the file verifies, it is this run's (``ident``) and ``epochs`` can
    finish it. ``announce``: say so when --resume finds nothing to continue."""
    import os
    legacy = out / LEGACY_CHECKPOINT
    if os.path.lexists(legacy):
        raise CheckpointError(f"{legacy}: a pickle checkpoint of an earlier agcnn-zoo; it is not "
                              f"read (unpickling a file can run code in it)",
                              hint="start a fresh run in another --out")
    path = out / CHECKPOINT
    if not os.path.lexists(path):
        if resume and announce:
            print(f"no {CHECKPOINT} in {out}: starting a fresh run", flush=True)
        return None
    if not resume:
        raise ResumeError(f"{out} already holds a run ({CHECKPOINT}); pass --resume to continue "
                          f"it, or choose another --out")
    state = load_checkpoint(path, STATE_KEYS)
    if state["ident"] != ident:
        old = state["ident"] if isinstance(state["ident"], dict) else {}
        diff = [k for k in ident if old.get(k) != ident[k]]
        raise ResumeError(f"{path} is a different run ({', '.join(diff)} differ: checkpoint "
                          f"{[old.get(k) for k in diff]}, now {[ident[k] for k in diff]}); resume "
                          f"with the same settings, or choose another --out")
    if epochs < state["epoch"]:
        raise ResumeError(f"{path} has {state['epoch']} epochs already; --epochs must be at "
                          f"least that (equal: end the run there and write its outputs)")
    if state.get("step", 0) and epochs <= state["epoch"]:
        raise ResumeError(f"{path} stopped inside epoch {state['epoch'] + 1}; --epochs must be at "
                          f"least {state['epoch'] + 1} to finish it")
    verify_best(state["best"], path)
    return state
