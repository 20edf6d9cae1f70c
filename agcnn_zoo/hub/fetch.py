"""Fetch, verify and cache the published weights.

``fetch_weights(weight_id)`` returns a local safetensors file; ``load_state_dict(weight_id)``
parses bytes that were read once and hashed once against the record's pin
(:mod:`agcnn_zoo.hub.pin`): a host whose file is on this machine (package, local) hands its
verified bytes on; any other file is read (type and size checked before reading) and checked
there. The record is parsed and validated first
(:mod:`agcnn_zoo.hub.records`); its hosts (one module each in :mod:`agcnn_zoo.hub.hosts`) are
tried in order:

* ``package``: a file shipped in ``agcnn_zoo/weights/`` (tried before any cache when it is
  listed first; never written or deleted by the cache);
* ``checkout``: a file in the repository's ``hf/agcnn-zoo/`` folder (a clone or a torch.hub
  checkout; the same rules as ``package``, files up to 12 MiB);
* ``huggingface``: the file at the pinned revision (downloaded into our cache; a copy in
  the Hugging Face cache is used first);
* ``original``: the authors' checkpoint at a pinned URL, checked and converted.

Caches are looked at before any network use: our converted file first, then the Hugging Face
cache (a filesystem lookup, no request). A cached file is checked on every load; a corrupted
one is deleted (only a regular file inside the cache, never through a symlink) and
:class:`IntegrityError` raised, so the next call downloads it again.

Environment (read at call time): ``AGCNN_ZOO_CACHE``, ``AGCNN_ZOO_MIRROR``,
``AGCNN_ZOO_OFFLINE``, ``AGCNN_ZOO_TIMEOUT``, ``AGCNN_ZOO_DEADLINE`` (see :mod:`agcnn_zoo.io.env`),
``HF_ENDPOINT``, ``HF_HUB_CACHE``, ``HF_HOME``, ``HF_HUB_OFFLINE`` (as in huggingface_hub,
honoured when set after import).

Every failure is a :class:`~agcnn_zoo.io.errors.ZooIOError` with a hint; when no host delivers,
:class:`WeightsUnavailableError` lists each host's own error and says what to do.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Union

from ..io import env
from ..io.errors import CacheError, ConfigError, IntegrityError, ZooIOError
from ..io.files import check_regular_file, ensure_dir, is_within, sha256_file
from . import cache as _cache
from .catalogue import catalogue
from .errors import HostFailure, NoPretrainedWeightsError, WeightsUnavailableError
from .hosts import module_for, on_this_machine, package
from .pin import MAX_WEIGHTS_BYTES, Pin
from .records import WeightRecord, parse_record

RecordLike = Union[dict, WeightRecord, None]


def resolve_record(name: str, record: RecordLike = None) -> WeightRecord:
    """The typed, validated record of ``name`` (``NAME`` or ``NAME.TAG``, resolved as
    ``create_model`` resolves it, when no record is given)."""
    if record is None:
        cat = catalogue()
        weight_id, raw = cat.resolve(name)
        if raw is None:
            raise NoPretrainedWeightsError(f"{name!r} has no published weights in {cat.source}; "
                                           f"{cat.missing_hint(name)}")
        return cat.typed(weight_id)
    return parse_record(name, record)


def cached_weights_path(name: str, record: RecordLike = None) -> Path:
    """Where the verified safetensors of ``name`` lives in our cache."""
    return _cache.cached_weights_path(resolve_record(name, record))


def verify_file(path: Union[str, Path], sha256: str, size: Optional[int] = None) -> None:
    """Raise :class:`IntegrityError` unless the file has this size and sha256 (type and size
    are checked before reading)."""
    check_regular_file(path, size=size)
    actual = sha256_file(path)
    if actual != sha256:
        raise IntegrityError(path, sha256, actual)


def _hint(record: WeightRecord, target: Path) -> str:
    mirror = env.mirror()
    if mirror is not None:  # the network is never used: checking it would not help
        first = f"Nothing was cached (cache: {target.parent}; mirror: {mirror}). To fix:"
    elif env.offline(huggingface=True):
        first = f"Nothing was cached (cache: {target.parent}; offline). To fix:"
    else:
        first = f"Nothing was cached (cache: {target.parent}). To fix: check the network, or"
    lines = [first]
    for host in record.hosts:
        line = getattr(module_for(host), "hint_line", lambda r, h: None)(record, host)
        if line:
            lines.append(line)
    if record.sha256:
        lines.append(f"  put the verified {record.file} (sha256 {record.sha256}) at {target}.")
    elif lines[-1].endswith(", or"):
        lines[-1] = lines[-1][:-len(", or")] + "."
    return "\n".join(lines)


def _try(record: WeightRecord, host, target: Path, progress: bool,
         failures: List[HostFailure]) -> Optional[Path]:
    try:
        return module_for(host).fetch(record, host, target, progress=progress)
    except (ConfigError, CacheError):  # a setting or our own cache: no other host helps
        raise
    except ZooIOError as e:
        failures.append(HostFailure(host.describe(), e))
        return None


def fetch_weights(name: str, record: RecordLike = None, *, progress: bool = True) -> Path:
    """A local safetensors file of ``name``'s published weights, verified when it was written.

    Local hosts (package, checkout) listed first, then caches (no request at all), then the
    record's hosts in order; a host that fails leaves nothing behind and the next one is tried.
    Raises :class:`WeightsUnavailableError` (with each host's error) when none delivers."""
    rec = resolve_record(name, record)
    env.timeout(), env.deadline()  # a bad setting is an error of its own, not a host failure
    target = _cache.cached_weights_path(rec)
    failures: List[HostFailure] = []
    hosts = list(rec.hosts)
    while hosts and on_this_machine(hosts[0]):
        found = _try(rec, hosts.pop(0), target, progress, failures)
        if found is not None:
            return found
    if _cache.require_regular_entry(target):
        return target
    for host in hosts:
        lookup = getattr(module_for(host), "cached", None)
        found = lookup(rec, host) if lookup else None
        if found is not None:
            return found
    ensure_dir(target.parent)
    for host in hosts:
        found = _try(rec, host, target, progress, failures)
        if found is not None:
            return found
    raise WeightsUnavailableError(name, failures, _hint(rec, target)) from (
        failures[-1].error if failures else None)


def _remove_if_cached(path: Path) -> None:
    if _cache.is_cache_path(path):
        _cache.discard(path)


def _local_bytes(rec: WeightRecord) -> Optional[bytes]:
    """The verified bytes of the first host on this machine that has them (hosts listed before
    any download host), or None."""
    for host in rec.hosts:
        if not on_this_machine(host):
            return None
        try:
            return module_for(host).read(rec, host)
        except (ConfigError, CacheError):
            raise
        except ZooIOError:
            continue  # fetch_weights tries it again and reports it with the others
    return None


def _verified_bytes(name: str, rec: WeightRecord, progress: bool) -> bytes:
    data = _local_bytes(rec) if rec.sha256 else None
    if data is not None:
        return data
    path = fetch_weights(name, rec, progress=progress)
    if not rec.sha256:  # re-derived from its source, verified by git blob id on this call
        from .hosts.original import derive
        return derive(rec, None, _cache.cached_weights_path(rec), progress=progress)[1]
    max_size = package.MAX_BYTES if is_within(path, package.WEIGHTS_DIR) else MAX_WEIGHTS_BYTES
    try:
        return Pin.of(rec).read(path, max_size, follow_symlinks=not _cache.is_within_ours(path))
    except IntegrityError:
        _remove_if_cached(path)
        raise


def load_state_dict(name: str, record: RecordLike = None, *,
                    progress: bool = True) -> Dict[str, "torch.Tensor"]:  # noqa: F821
    """``name``'s verified state dict: bytes read once, their size and sha256 checked, and only
    those bytes parsed. A cached file that fails is deleted (so a retry downloads it again) and
    :class:`IntegrityError` raised; a file shipped in the package is never deleted.

    A record without a pinned sha256 is re-derived from its source, verified by git blob id
    on this very call (:func:`agcnn_zoo.hub.hosts.original.derive`)."""
    rec = resolve_record(name, record)
    data = _verified_bytes(name, rec, progress)
    from safetensors.torch import load
    try:
        return load(data)
    except Exception as e:  # the manifest pins a file that is not safetensors
        raise ZooIOError(f"{rec.file}: verified bytes are not a readable safetensors file: {e}",
                           hint="the manifest pins a file that is not safetensors: fix the "
                                "record") from e
