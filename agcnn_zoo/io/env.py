"""Environment switches of agcnn-zoo's I/O, read at call time (never at import).

``AGCNN_ZOO_OFFLINE=1``
    the one offline switch: no network for weights or data (caches, the mirror and files shipped
    in the package only). ``HF_HUB_OFFLINE=1`` is honoured too, for the Hugging Face host.
``AGCNN_ZOO_MIRROR``
    a folder laid out as ``<dir>/<host>/<path>`` standing in for ``https://<host>/<path>``; while
    it is set the network is never used.
``AGCNN_ZOO_TIMEOUT``
    seconds a silent connection is waited for (per read; default 30).
``AGCNN_ZOO_DEADLINE``
    seconds a whole transfer may take (default 3600): a server trickling bytes is cut off.
``AGCNN_ZOO_CACHE``
    the one cache folder (:func:`cache_root`): weights in ``<root>/weights``, downloaded test data
    in ``<root>/data`` (``AGCNN_ZOO_DATA`` moves the data elsewhere). Default
    ``$XDG_CACHE_HOME/agcnn_zoo``, else ``~/.cache/agcnn_zoo``.
``AGCNN_ZOO_DATA``, ``AGCNN_ZOO_MANIFEST``, ``AGCNN_ZOO_USER_MANIFEST``
    where test data, the weights manifest and the user's own manifest are.
``AGCNN_ZOO_CHUNK_ELEMENTS``
    the full-alpha chunk budget (response entries).
``AGCNN_ZOO_HF_CLONE``
    a clone of the zoo's Hugging Face repository, for weights of the ``checkout`` host.
``HF_HUB_CACHE``, ``HF_HOME``, ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``
    as in huggingface_hub (read here, when used, so that a change after import counts).
``WORLD_SIZE``, ``LOCAL_RANK``
    set by ``torchrun`` for data-parallel training.

This module is the only one of the package that reads the environment. Every value is read when
it is used, never at import, and a bad value raises :class:`ConfigError` naming the variable
where it is used.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

from .errors import ConfigError

DEFAULT_TIMEOUT = 30.0
DEFAULT_DEADLINE = 3600.0
OFFLINE_ENV = "AGCNN_ZOO_OFFLINE"
CACHE_ENV = "AGCNN_ZOO_CACHE"
DATA_ENV = "AGCNN_ZOO_DATA"
MANIFEST_ENV = "AGCNN_ZOO_MANIFEST"
USER_MANIFEST_ENV = "AGCNN_ZOO_USER_MANIFEST"
CHUNK_ENV = "AGCNN_ZOO_CHUNK_ELEMENTS"


def env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def offline(huggingface: bool = False) -> bool:
    """Whether the network is off (``huggingface=True``: for the Hugging Face host, where
    ``HF_HUB_OFFLINE=1`` counts too)."""
    return env_true(OFFLINE_ENV) or (huggingface and env_true("HF_HUB_OFFLINE"))


def seconds(name: str, default: float) -> float:
    """A positive, finite number of seconds from the environment variable ``name``."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}",
                          hint=f"set {name} to a positive number such as 30, or unset it") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive, finite number of seconds, got {raw!r}",
                          hint=f"set {name} to a positive number such as 30, or unset it")
    return value


def timeout() -> float:
    """Per-read timeout (``AGCNN_ZOO_TIMEOUT``)."""
    return seconds("AGCNN_ZOO_TIMEOUT", DEFAULT_TIMEOUT)


def deadline() -> float:
    """Overall time allowed for one transfer (``AGCNN_ZOO_DEADLINE``)."""
    return seconds("AGCNN_ZOO_DEADLINE", DEFAULT_DEADLINE)


def _path(name: str) -> Optional[Path]:
    raw = os.environ.get(name)
    return Path(raw).expanduser() if raw else None


def mirror() -> Optional[Path]:
    """``AGCNN_ZOO_MIRROR``: a folder standing in for the network, or None."""
    return _path("AGCNN_ZOO_MIRROR")


def data_dir() -> Optional[Path]:
    """``AGCNN_ZOO_DATA``: where test data lives, or None (the cache root's ``data``)."""
    return _path(DATA_ENV)


def manifest_override() -> Optional[Path]:
    """``AGCNN_ZOO_MANIFEST``: another weights manifest, which must exist (or None)."""
    p = _path(MANIFEST_ENV)
    if p is not None and not p.is_file():
        raise ConfigError(f"{MANIFEST_ENV}={os.environ[MANIFEST_ENV]}: no such manifest file",
                          hint=f"point {MANIFEST_ENV} at a weights manifest, or unset it to use "
                               f"the package's")
    return p


def user_manifest() -> Path:
    """``AGCNN_ZOO_USER_MANIFEST``, else ``<cache root>/user/manifest.json`` (need not exist)."""
    return _path(USER_MANIFEST_ENV) or cache_root() / "user" / "manifest.json"


def positive_int(name: str) -> Optional[int]:
    """A positive integer from the environment variable ``name`` (None when unset)."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{name}={raw!r}: give a positive integer, e.g. 1048576",
                          hint=f"set {name} to a positive integer, or unset it")
    return value


def chunk_elements() -> Optional[int]:
    """``AGCNN_ZOO_CHUNK_ELEMENTS``: the full-alpha chunk budget, or None (detected)."""
    return positive_int(CHUNK_ENV)


def hf_cache_dir() -> Optional[str]:
    """The Hugging Face cache huggingface_hub would use, as set in the environment (None: its
    own default): ``<AGCNN_ZOO_CACHE>/huggingface`` when that is set, else ``HF_HUB_CACHE``,
    else ``HF_HOME/hub``."""
    if os.environ.get(CACHE_ENV):
        return str(cache_root() / "huggingface")
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    return None


def hf_clone() -> Optional[Path]:
    """``AGCNN_ZOO_HF_CLONE``: a clone of the zoo's Hugging Face repository (or a folder laid
    out like it) standing in for the checkout's ``hf/agcnn-zoo``, or None."""
    return _path("AGCNN_ZOO_HF_CLONE")


def hf_endpoint() -> Optional[str]:
    """``HF_ENDPOINT`` without a trailing slash, or None."""
    raw = os.environ.get("HF_ENDPOINT")
    return raw.rstrip("/") or None if raw else None


def distributed() -> "tuple[int, Optional[int]]":
    """``(WORLD_SIZE, LOCAL_RANK)`` as torchrun sets them (1 and None outside torchrun)."""
    world = positive_int("WORLD_SIZE") or 1
    raw = os.environ.get("LOCAL_RANK")
    try:
        local = int(raw) if raw not in (None, "") else None
    except ValueError:
        raise ConfigError(f"LOCAL_RANK={raw!r}: not an integer",
                          hint="start data-parallel runs with torchrun") from None
    return world, local


def cache_root() -> Path:
    """The one folder agcnn-zoo caches into: ``$AGCNN_ZOO_CACHE``, else
    ``$XDG_CACHE_HOME/agcnn_zoo``, else ``~/.cache/agcnn_zoo`` (the XDG base directory rule:
    a relative ``XDG_CACHE_HOME`` is ignored)."""
    raw = os.environ.get(CACHE_ENV)
    if raw:
        return Path(raw).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg).expanduser() if xdg and Path(xdg).expanduser().is_absolute() \
        else Path.home() / ".cache"
    return base / "agcnn_zoo"


def show_progress(progress: bool) -> bool:
    """Whether to draw a progress bar: asked for, and stderr is a terminal (in a log file or a
    CI transcript every redraw would stay behind as a stale line)."""
    import sys
    if not progress:
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False
