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


def mirror() -> Optional[Path]:
    raw = os.environ.get("AGCNN_ZOO_MIRROR")
    return Path(raw).expanduser() if raw else None


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
