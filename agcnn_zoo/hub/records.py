"""Typed weight records, parsed (and validated) once from the manifest's JSON.

A record is ``weights[<weight id>]`` of ``weights_manifest.json``. Weight ids are ``<model>``
or ``<model>.<tag>`` (timm style: the model name is the part before the first '.', a tag
matches ``[a-z0-9_-]+``). :func:`parse_record` turns the JSON object into a
:class:`WeightRecord` holding one host object per entry of ``hosts``
(:class:`HuggingFaceHost`, :class:`OriginalHost`, :class:`PackageHost`,
:class:`CheckoutHost`); every field the
dataclasses do not model (``architecture``, ``accuracy``, ``training``, ``default``, ...) is
kept verbatim in ``extra`` and written back in its place by :meth:`WeightRecord.to_dict`, so a
load/save round trip loses nothing.

What is refused when a record is parsed (:class:`RecordError`), because it could make the hub
touch files or hosts it must not: a sha256 / git blob id that is not lowercase hex, a file
name with a folder part, an original URL that is not ``https://`` on an allowed host
(:data:`TRUSTED_HOSTS`; ``file://``, ``data:`` and any other scheme are refused), a package
or checkout file name with a folder part. A Hugging Face host with a malformed repo id or revision is
kept with its ``problem`` set: that host fails when tried, the other hosts still work.

Tests may serve files from 127.0.0.1 after :func:`trust_host` ``("127.0.0.1", http=True)``.
"""
from __future__ import annotations

import copy
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional, Tuple, Union

from ..io.errors import ZooIOError
from .weight_id import WEIGHT_ID, WeightId

__all__ = ["WeightRecord", "Host", "HuggingFaceHost", "OriginalHost", "PackageHost", "LocalHost",
           "CheckoutHost", "RecordError", "parse_record", "parse_host", "record_problems", "trust_host",
           "TRUSTED_HOSTS", "HTTP_HOSTS", "WEIGHT_ID", "HOST_TYPES"]

HEX40 = re.compile(r"^[0-9a-f]{40}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")
FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")

#: hosts an ``original`` URL may point at (https only)
TRUSTED_HOSTS = {"raw.githubusercontent.com", "github.com", "media.githubusercontent.com",
                 "huggingface.co", "zenodo.org"}
#: hosts that may also be reached over plain http (none by default; tests add 127.0.0.1)
HTTP_HOSTS: set = set()

HOST_TYPES = ("huggingface", "original", "package", "checkout", "local")


class RecordError(ZooIOError, ValueError):
    """A manifest record that is refused when loaded."""
    default_hint = "fix the record in the manifest (AGCNN_ZOO_MANIFEST says which file is read)"


def trust_host(hostname: str, http: bool = False) -> None:
    """Allow ``hostname`` in original URLs (and over plain http with ``http=True``)."""
    TRUSTED_HOSTS.add(hostname)
    if http:
        HTTP_HOSTS.add(hostname)


def url_problem(url: object) -> Optional[str]:
    """Why ``url`` may not be fetched, or None."""
    if not isinstance(url, str) or not url:
        return "needs a url"
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "https":
        ok = host in TRUSTED_HOSTS
    elif parts.scheme == "http":
        ok = host in HTTP_HOSTS
    else:
        return f"url scheme {parts.scheme or 'none'!r} refused (needs an https url)"
    if not ok:
        if parts.scheme == "http" and host in TRUSTED_HOSTS:
            return "needs an https url"
        return f"host {host!r} is not on the allow-list (needs an https url on one of " \
               f"{', '.join(sorted(TRUSTED_HOSTS))})"
    if parts.username or parts.password:
        return "url with credentials refused"
    if any(seg in (".", "..") for seg in urllib.parse.unquote(parts.path).split("/")):
        return "url path with '.' or '..' segments refused"
    return None


# ----------------------------------------------------------------------------- hosts

@dataclass
class Host:
    type: str
    extra: Dict[str, Any] = field(default_factory=dict)
    problem: Optional[str] = None  # set: this host fails when tried
    present: Tuple[str, ...] = ()   # typed keys the JSON had (kept even when null)

    _KEYS: ClassVar[Tuple[str, ...]] = ()

    def to_dict(self) -> dict:
        out = {"type": self.type}
        for k in self._KEYS:
            v = getattr(self, k)
            if v is not None or k in self.present:
                out[k] = v
        out.update(copy.deepcopy(self.extra))
        return out

    def describe(self) -> str:
        return f"{self.type} host"


@dataclass
class HuggingFaceHost(Host):
    repo_id: str = ""
    revision: str = ""
    filename: Optional[str] = None
    _KEYS = ("repo_id", "revision", "filename")

    def describe(self) -> str:
        return f"huggingface {self.repo_id}@{str(self.revision)[:12]} ({self.filename or '?'})"


@dataclass
class OriginalHost(Host):
    url: str = ""
    sha256: Optional[str] = None
    git_blob_sha1: Optional[str] = None
    size: Optional[int] = None
    _KEYS = ("url", "sha256", "git_blob_sha1", "size")

    def describe(self) -> str:
        return f"original {self.url}"


@dataclass
class PackageHost(Host):
    path: str = ""
    _KEYS = ("path",)

    def describe(self) -> str:
        return f"package agcnn_zoo/weights/{self.path}"


@dataclass
class LocalHost(Host):
    path: str = ""
    folder: Optional[str] = None  # attached when a user manifest is merged; never written
    _KEYS = ("path",)

    def describe(self) -> str:
        return f"local {Path(self.folder or '?') / self.path}"


@dataclass
class CheckoutHost(Host):
    path: str = ""
    _KEYS = ("path",)

    def describe(self) -> str:
        return f"checkout hf/agcnn-zoo/{self.path}"


def _take(d: dict, key: str, present: list):
    if key in d:
        present.append(key)
    return d.pop(key, None)


def parse_host(raw: Any, where: str = "host") -> Host:
    """One entry of ``hosts``; raises :class:`RecordError` for what may never be fetched."""
    if not isinstance(raw, dict):
        raise RecordError(f"{where}: a host must be an object, got {type(raw).__name__}")
    d = copy.deepcopy(raw)
    t = d.pop("type", None)
    present: list = []
    if t == "huggingface":
        h = HuggingFaceHost("huggingface", repo_id=_take(d, "repo_id", present) or "",
                            revision=str(_take(d, "revision", present) or ""),
                            filename=_take(d, "filename", present))
        if not REPO_ID.match(str(h.repo_id)) or ".." in str(h.repo_id):
            h.problem = f"bad repo_id {h.repo_id!r} (needs ORG/NAME)"
        elif not HEX40.match(h.revision):
            h.problem = f"huggingface needs repo_id and a 40-hex revision, got {h.revision!r}"
        if h.filename is not None and not FILE_NAME.match(str(h.filename)):
            raise RecordError(f"{where}: huggingface filename {h.filename!r} must be a plain file name")
    elif t == "original":
        h = OriginalHost("original", url=_take(d, "url", present) or "",
                         sha256=_take(d, "sha256", present),
                         git_blob_sha1=_take(d, "git_blob_sha1", present),
                         size=_take(d, "size", present))
        problem = url_problem(h.url)
        if problem:
            raise RecordError(f"{where}: original {problem}: {h.url!r}")
        if h.sha256 is not None and not HEX64.match(str(h.sha256)):
            raise RecordError(f"{where}: original sha256 must be 64 lowercase hex digits")
        if h.git_blob_sha1 is not None and not HEX40.match(str(h.git_blob_sha1)):
            raise RecordError(f"{where}: original git_blob_sha1 must be 40 lowercase hex digits")
        if not h.sha256 and not h.git_blob_sha1:
            raise RecordError(f"{where}: original needs its sha256 or git_blob_sha1")
        if h.size is not None and (not isinstance(h.size, int) or isinstance(h.size, bool)
                                   or h.size <= 0):
            raise RecordError(f"{where}: original size must be a positive int")
    elif t == "package":
        h = PackageHost("package", path=_take(d, "path", present) or "")
        if not FILE_NAME.match(str(h.path)):
            raise RecordError(f"{where}: package path {h.path!r} must be a plain file name "
                              f"inside agcnn_zoo/weights/")
    elif t == "local":
        h = LocalHost("local", path=_take(d, "path", present) or "", folder=d.pop("folder", None))
        if not FILE_NAME.match(str(h.path)):
            raise RecordError(f"{where}: local path {h.path!r} must be a plain file name in the "
                              f"user manifest's folder")
        if h.folder is not None and not (isinstance(h.folder, str) and Path(h.folder).is_absolute()):
            raise RecordError(f"{where}: local folder must be an absolute path")
    elif t == "checkout":
        h = CheckoutHost("checkout", path=_take(d, "path", present) or "")
        if not FILE_NAME.match(str(h.path)):
            raise RecordError(f"{where}: checkout path {h.path!r} must be a plain file name "
                              f"inside hf/agcnn-zoo/")
    else:
        raise RecordError(f"{where}: unknown host type {t!r} (known: {', '.join(HOST_TYPES)})")
    h.present = tuple(present)
    h.extra = d
    return h


# ----------------------------------------------------------------------------- records

_RECORD_KEYS = ("file", "sha256", "size", "git_blob_sha1", "hosts")


@dataclass
class WeightRecord:
    """One weight of the manifest, parsed once. ``extra`` keeps every other field verbatim."""
    weight_id: str
    file: str
    sha256: Optional[str]
    size: Optional[int]
    git_blob_sha1: Optional[str]
    hosts: List[Host]
    extra: Dict[str, Any] = field(default_factory=dict)
    order: Tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.weight_id

    @property
    def model_name(self) -> str:
        """The registry model this weight is for."""
        return WeightId.parse(self.weight_id).model

    @property
    def tag(self) -> Optional[str]:
        return WeightId.parse(self.weight_id).tag

    @property
    def has_sha256(self) -> bool:
        """Whether the manifest pins our safetensors file's sha256 (else: only its source's
        git blob id, see :mod:`agcnn_zoo.hub.hosts.original`)."""
        return bool(self.sha256)

    def get(self, key: str, default=None):
        """dict-style access to any field (typed or extra)."""
        if key in _RECORD_KEYS:
            value = getattr(self, key)
            return [h.to_dict() for h in value] if key == "hosts" else value
        return self.extra.get(key, default)

    def __getitem__(self, key: str):
        if key in _RECORD_KEYS:
            return self.get(key)
        return self.extra[key]

    def to_dict(self) -> dict:
        """The JSON object again, fields in their original order, nothing lost."""
        typed = {"file": self.file, "sha256": self.sha256, "size": self.size,
                 "git_blob_sha1": self.git_blob_sha1, "hosts": [h.to_dict() for h in self.hosts]}
        out: Dict[str, Any] = {}
        keys = list(self.order) + [k for k in list(typed) + list(self.extra)
                                   if k not in self.order]
        for k in keys:
            if k in typed:
                if typed[k] is None and k not in self.order and k != "sha256":
                    continue
                out[k] = typed[k]
            elif k in self.extra:
                out[k] = copy.deepcopy(self.extra[k])
        return out


def record_problems(weight_id: str, raw: Any) -> List[str]:
    """Why ``raw`` cannot be loaded as a weight record, or which of its hosts would fail
    (empty when neither)."""
    problems: List[str] = []
    try:
        rec = parse_record(weight_id, raw)
    except RecordError as e:
        problems.append(e.message)
        hosts = raw.get("hosts") if isinstance(raw, dict) else None
        rec = None
    if rec is not None:
        hosts = [h.to_dict() for h in rec.hosts]
    for i, h in enumerate(hosts if isinstance(hosts, list) else []):
        where = f"weights[{weight_id!r}].hosts[{i}]"
        try:
            host = parse_host(h, where)
        except RecordError as e:
            if e.message not in problems:
                problems.append(e.message)
            continue
        if host.problem:
            problems.append(f"{where}: {host.problem}")
    return problems


def parse_record(weight_id: str, raw: Union[dict, WeightRecord]) -> WeightRecord:
    """Parse and validate one record (see the module docstring for what is refused)."""
    if isinstance(raw, WeightRecord):
        return raw
    where = f"weights[{weight_id!r}]"
    if not isinstance(weight_id, str) or not WEIGHT_ID.match(weight_id):
        raise RecordError(f"{where}: a weight id is <model> or <model>.<tag> (tag: [a-z0-9_-]+)")
    if not isinstance(raw, dict):
        raise RecordError(f"{where}: a record must be an object")
    d = copy.deepcopy(raw)
    order = tuple(d)
    file = d.pop("file", None)
    sha256 = d.pop("sha256", None)
    size = d.pop("size", None)
    blob = d.pop("git_blob_sha1", None)
    hosts_raw = d.pop("hosts", None)
    if not isinstance(file, str) or not FILE_NAME.match(file):
        raise RecordError(f"{where}: 'file' must be a plain file name, got {file!r}")
    if sha256 is not None and not HEX64.match(str(sha256)):
        raise RecordError(f"{where}: sha256 must be 64 lowercase hex digits, got {sha256!r}")
    if blob is not None and not HEX40.match(str(blob)):
        raise RecordError(f"{where}: git_blob_sha1 must be 40 lowercase hex digits, got {blob!r}")
    if sha256 is None and blob is None:
        raise RecordError(f"{where}: sha256 is null and no git_blob_sha1 identifies the source")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size <= 0):
        raise RecordError(f"{where}: size (bytes) must be a positive int")
    if sha256 is not None and size is None:
        raise RecordError(f"{where}: size (bytes) must be an int")
    if not isinstance(hosts_raw, list) or not hosts_raw:
        raise RecordError(f"{where}: no hosts")
    hosts = [parse_host(h, f"{where}.hosts[{i}]") for i, h in enumerate(hosts_raw)]
    if sha256 is None and not any(isinstance(h, OriginalHost) for h in hosts):
        raise RecordError(f"{where}: a record without sha256 needs an original host to "
                          f"derive its file from")
    return WeightRecord(weight_id, file, sha256, size, blob, hosts, d, order)
