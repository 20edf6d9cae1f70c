"""Convert the authors' checkpoints into our state dicts and deterministic safetensors files.

* The legacy pickles are opened only with ``torch.load(..., weights_only=True)``: never a full
  unpickle of a downloaded file.
* ``module.`` (nn.DataParallel) and ``state_dict.`` (golden files) prefixes are stripped, the
  family's key map applied, and every key and shape checked against the target model; missing or
  unexpected keys are refused by name.
* safetensors are written by our own small serialiser so that the same tensors and metadata give
  the same bytes, hence the same sha256, on every machine and run (tensors ordered by dtype size,
  then name; JSON header with a fixed key order), written atomically with mode 0644.
* Weights trained on files stored transposed (rot-MNIST) are moved into the natural frame
  (:func:`natural_frame`, exact), so they take digits as people hold them; the file's metadata
  and the manifest record say so.
* Refused (:class:`CheckpointError`): a non-floating tensor (integer, bool, complex) where the
  model has a floating one, NaN or infinite values, and a destination that is the source itself
  (also through another path: a link, ``..``, a hard link).
"""
from __future__ import annotations

import json
import os
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Dict, Mapping, Optional, Union

import torch
from torch import nn

from ..io.files import atomic_write_bytes, sha256_bytes, sha256_file
from ..models.registration import STORED_TRANSPOSED
from ..nn.orientation import transposed_state_dict
from ..registry import get_entry
from .weight_id import WeightId

__all__ = ["CheckpointError", "load_original_checkpoint", "convert_state_dict",
           "safetensors_bytes", "save_safetensors", "load_safetensors", "convert_checkpoint",
           "convert_checkpoint_bytes", "sha256_file", "atomic_write_bytes", "weights_metadata",
           "trained_transposed"]

_PREFIXES = ("module.", "state_dict.")
_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16",
           torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
           torch.uint8: "U8", torch.bool: "BOOL"}


class CheckpointError(ValueError):
    """A checkpoint that cannot be converted: unreadable, or keys/shapes that do not fit."""


def load_original_checkpoint(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """The authors' ``model.pth`` (a pickled state dict) as a flat dict of tensors."""
    try:
        with warnings.catch_warnings():
            # torch's weights_only unpickler notes any protocol newer than 2 "might" hold
            # instructions it lacks; it then refuses such a file itself (a CheckpointError here)
            warnings.filterwarnings("ignore", message=r"Detected pickle protocol \d+ in the "
                                    r"checkpoint", category=UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError, RuntimeError (not a zip/pickle), EOFError...
        raise CheckpointError(f"{path}: not a readable state-dict checkpoint "
                              f"(loaded with weights_only=True): {e}") from e
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict (name -> tensor), got {type(obj).__name__}")
    return dict(obj)


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in _PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


def convert_state_dict(state_dict: Mapping[str, torch.Tensor], model: nn.Module,
                       key_map: Optional[Mapping[str, str]] = None) -> "OrderedDict[str, torch.Tensor]":
    """Map an original state dict onto ``model``'s keys; refuse anything that does not fit."""
    key_map = dict(key_map or getattr(model, "KEY_MAP", None) or {})
    mapped: Dict[str, torch.Tensor] = {}
    for k, v in state_dict.items():
        if not isinstance(v, torch.Tensor):
            continue  # metadata entries some checkpoints carry
        ours = key_map.get(_strip(k), _strip(k))
        if ours in mapped:
            raise CheckpointError(f"two checkpoint keys map to {ours!r}")
        mapped[ours] = v
    expected = model.state_dict()
    missing = [k for k in expected if k not in mapped]
    unexpected = [k for k in mapped if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {', '.join(unexpected)}")
        raise CheckpointError(f"checkpoint does not fit {type(model).__name__}: " + "; ".join(parts))
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for k, ref in expected.items():
        v = mapped[k]
        if tuple(v.shape) != tuple(ref.shape):
            raise CheckpointError(f"{k}: checkpoint shape {tuple(v.shape)} != model shape "
                                  f"{tuple(ref.shape)} ({type(model).__name__})")
        if ref.is_floating_point():
            if not v.is_floating_point():
                raise CheckpointError(f"{k}: checkpoint dtype {v.dtype} where the model has "
                                      f"{ref.dtype} ({type(model).__name__}); refusing to cast "
                                      f"integers, booleans or complex numbers into weights")
            if not bool(torch.isfinite(v).all()):
                raise CheckpointError(f"{k}: NaN or infinite values in the checkpoint")
        elif v.is_floating_point() or v.is_complex():
            raise CheckpointError(f"{k}: checkpoint dtype {v.dtype} where the model has {ref.dtype}")
        out[k] = v.detach().to(dtype=ref.dtype).contiguous().clone()
    return out


def safetensors_bytes(tensors: Mapping[str, torch.Tensor],
                      metadata: Optional[Mapping[str, str]] = None) -> bytes:
    """Deterministic safetensors serialisation (loadable by ``safetensors.torch.load_file``)."""
    items = sorted(tensors.items(), key=lambda kv: (-kv[1].element_size(), kv[0]))
    header: Dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(metadata[k]) for k in sorted(metadata)}
    blobs, offset = [], 0
    for name, t in items:
        if t.dtype not in _DTYPES:
            raise CheckpointError(f"{name}: dtype {t.dtype} cannot be stored in safetensors")
        data = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    head += b" " * (-len(head) % 8)  # keep the data 8-byte aligned
    return len(head).to_bytes(8, "little") + head + b"".join(blobs)


def save_safetensors(tensors: Mapping[str, torch.Tensor], path: Union[str, Path],
                     metadata: Optional[Mapping[str, str]] = None) -> str:
    """Write atomically; return the file's sha256."""
    data = safetensors_bytes(tensors, metadata)
    atomic_write_bytes(path, data)
    return sha256_bytes(data)


def load_safetensors(path: Union[str, Path]):
    """(tensors, metadata) of a safetensors file."""
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})


#: how a weight trained on transposed files was moved into the natural frame (metadata and
#: manifest records say so)
FOLDED = ("natural: the transposition of the training files (stored transposed w.r.t. MNIST) "
          "is folded into the weights (agcnn_zoo.nn.orientation.transposed_state_dict)")


def trained_transposed(record: Mapping) -> bool:
    """Whether a training run's record comes from an agcnn-zoo that fed the rot-MNIST digits
    transposed (before the weights took them as MNIST holds them): its preprocessing still names
    an orientation, and its weight answers correctly only once the transposition is folded in
    (:func:`fold_transposition_file`)."""
    return "orientation" in record.get("preprocessing", {})


def weights_metadata(model_name: str, model_class: str, source_sha256: Optional[str] = None,
                     folded: bool = False) -> dict:
    meta = {"format": "pt", "agcnn_zoo.model": model_name, "agcnn_zoo.architecture": model_class}
    if source_sha256:
        meta["agcnn_zoo.source_sha256"] = source_sha256
    if folded:
        meta["agcnn_zoo.frame"] = FOLDED
    return meta


def natural_frame(state: Mapping[str, torch.Tensor], model: nn.Module, dataset: str
                  ) -> Mapping[str, torch.Tensor]:
    """``state`` as the weights of a model that takes images as people hold them: for a
    dataset stored transposed, the transposition folded in (exact); else unchanged."""
    return transposed_state_dict(model, state) if dataset in STORED_TRANSPOSED else state


def _same_file(a: Path, b: Path) -> bool:
    if os.path.abspath(a) == os.path.abspath(b) or a.resolve() == b.resolve():
        return True
    try:
        return b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def convert_checkpoint_bytes(src: Union[str, Path], model_name: str) -> bytes:
    """The safetensors bytes converting ``src`` gives (deterministic)."""
    entry = get_entry(WeightId.model_of(model_name))
    model = entry.fn()
    state = natural_frame(convert_state_dict(load_original_checkpoint(src), model), model,
                          entry.dataset)
    return safetensors_bytes(state, weights_metadata(
        WeightId.model_of(model_name), entry.model_class, sha256_file(src),
        folded=entry.dataset in STORED_TRANSPOSED))


def fold_transposition_file(src: Union[str, Path], dst: Union[str, Path], model_name: str) -> str:
    """A safetensors weight trained on transposed files (the authors' frame) -> the same weight
    in the natural frame (metadata says so); returns the new file's sha256."""
    entry = get_entry(WeightId.model_of(model_name))
    model = entry.fn()
    tensors, meta = load_safetensors(src)
    if meta.get("agcnn_zoo.frame"):
        raise CheckpointError(f"{src}: already in the natural frame ({meta['agcnn_zoo.frame']})")
    state = convert_state_dict(tensors, model)
    folded = natural_frame(state, model, entry.dataset)
    if folded is state:
        raise CheckpointError(f"{model_name}: its dataset {entry.dataset} is not stored transposed")
    return save_safetensors(folded, dst, {**meta, "agcnn_zoo.frame": FOLDED})


def convert_checkpoint(src: Union[str, Path], dst: Union[str, Path], model_name: str) -> str:
    """Authors' checkpoint -> our safetensors for registry model ``model_name``; returns sha256.
    ``dst`` may not be ``src`` (nor the same file through another path)."""
    src, dst = Path(src), Path(dst)
    if _same_file(src, dst):
        raise CheckpointError(f"{dst}: the destination is the source checkpoint itself; "
                              f"choose another output file")
    data = convert_checkpoint_bytes(src, model_name)
    atomic_write_bytes(dst, data)
    return sha256_bytes(data)
