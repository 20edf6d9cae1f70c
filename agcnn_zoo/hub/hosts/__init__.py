"""One module per host kind, behind one small interface.

A host module defines

``fetch(record, host, target, *, progress) -> Path``
    a local safetensors file of ``record`` whose bytes were verified when it was produced
    (``target`` is where our cache keeps it; a host may return another path, e.g. its own
    cache or a file shipped in the package);
``cached(record, host) -> Optional[Path]`` (optional)
    a filesystem lookup (no network) for a file the host delivered before;
``hint_line(record, host) -> Optional[str]`` (optional)
    one line of advice for the "nothing worked" message;
``read(record, host) -> bytes`` (hosts whose files are on this machine: package, checkout, local)
    the file's bytes verified against the record's pin (``agcnn_zoo.hub.pin``); such hosts are
    tried before any cache, and a load parses these bytes (read and hashed once). Their files
    are never written or deleted by the cache logic.

A new host kind is one new module added to :data:`KINDS` (and to ``records.parse_host``).
"""
from __future__ import annotations

from types import ModuleType

from . import checkout, huggingface, local, original, package

KINDS = {"checkout": checkout, "huggingface": huggingface, "local": local, "original": original,
         "package": package}


#: the kinds whose files lie on this machine (their modules have ``read``)
LOCAL_KINDS = tuple(kind for kind, module in KINDS.items() if hasattr(module, "read"))


def module_for(host) -> ModuleType:
    return KINDS[host.type]


def on_this_machine(host) -> bool:
    """Whether the host's files lie on this machine (package, checkout, local)."""
    return host.type in LOCAL_KINDS
