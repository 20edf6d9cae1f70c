"""Model registry: name -> constructor and metadata (the timm ``_registry`` idea, kept small).

The table and the decorators the families use live in ``models/registration.py``; this module
imports the families (which fills the table) and answers lookups. The families never import
this module, so there is no import circle.
"""
from __future__ import annotations

import difflib
import fnmatch
from typing import List

from . import models  # noqa: F401  (importing the families registers them)
from .models.registration import (DATASETS, REGISTRY, ModelEntry,
                                  original_classes, register_class, register_model)

__all__ = ["ModelEntry", "register_model", "register_class", "original_classes", "get_entry",
           "list_registered", "DATASETS", "UnknownModelError"]


class UnknownModelError(KeyError, ValueError):
    """An unregistered model name (a KeyError and a ValueError, so either except works)."""

    def __str__(self):  # KeyError would repr() the message
        return str(self.args[0])


def get_entry(name: str) -> ModelEntry:
    try:
        return REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(REGISTRY), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownModelError(f"unknown model {name!r}{hint} (agcnn_zoo.list_models() lists "
                                f"all {len(REGISTRY)})") from None


def list_registered(pattern: str = "*") -> List[str]:
    return sorted(n for n in REGISTRY if fnmatch.fnmatchcase(n, pattern))
