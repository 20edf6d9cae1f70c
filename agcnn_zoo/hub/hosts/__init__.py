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
``OWNS_FILES``
    False when the host's files are never to be deleted by the cache logic.

A new host kind is one new module added to :data:`KINDS` (and to ``records.parse_host``).
"""
from __future__ import annotations

from types import ModuleType

from . import checkout, huggingface, original, package

KINDS = {"checkout": checkout, "huggingface": huggingface, "original": original,
         "package": package}
#: kinds that read a local file they never delete (tried before any cache or network)
LOCAL_KINDS = ("package", "checkout")
#: the largest file a local host may hand over
LOCAL_MAX_BYTES = max(package.MAX_BYTES, checkout.MAX_BYTES)


def module_for(host) -> ModuleType:
    return KINDS[host.type]
