"""JSON read strictly where it carries trust (the manifest, a run's record.json, a checkpoint's
metadata): an object with a key twice is refused by name, where Python's json module would
silently keep the last copy (a record with a wrong sha256 could hide behind a good one)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, Tuple, Union

from .errors import ZooIOError


class JSONFileError(ZooIOError, ValueError):
    """A JSON document that cannot be trusted: unreadable, not JSON, or a key given twice."""
    default_hint = "restore the file from its source (it was edited or corrupted), or fix it by hand"


class _DuplicateKey(ValueError):
    def __init__(self, key: str, context: str):
        self.key, self.context = key, context
        super().__init__(key)


def _unique_object(pairs: List[Tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            # name the key and, when the object has one, a neighbour that tells where it is
            raise _DuplicateKey(key, ", ".join(list(out)[:3]))
        out[key] = value
    return out


def loads_strict(text: Union[str, bytes], where: str) -> Any:
    """``json.loads`` that refuses a key given twice in one object; errors name ``where``."""
    try:
        return json.loads(text, object_pairs_hook=_unique_object)
    except _DuplicateKey as e:
        raise JSONFileError(f"{where}: the key {e.key!r} appears twice in one object (beside "
                            f"{e.context}); refused, since only one copy can be meant") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise JSONFileError(f"{where}: not valid JSON ({e})") from None


def load_strict(path: Union[str, Path]) -> Any:
    """The JSON document in ``path``, read strictly (see :func:`loads_strict`)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise JSONFileError(f"{path}: no such file", hint="check the path") from None
    except OSError as e:
        raise JSONFileError(f"{path}: cannot be read ({e.strerror})",
                            hint="check the path and its permissions") from None
    return loads_strict(data, str(path))
