"""Errors of the weight hub: the shared I/O hierarchy (:mod:`agcnn_zoo.io.errors`) plus the
hub's own. ``ZooIOError`` is the root of both (every failure of the hub is one; ``WeightsError`` is
the same class under its historic name, kept for code that catches it)."""
from __future__ import annotations

from typing import List, NamedTuple

from ..io.errors import (CacheError, CacheNotWritableError, CachePathError, ConfigError,  # noqa: F401
                         DeadlineError, DiskFullError, DownloadError, IntegrityError, MirrorError,
                         OfflineError, TooLargeError, TruncatedDownloadError,
                         UnexpectedContentError, UnsafeFileError, WeightsError, ZooIOError)
from .records import RecordError  # noqa: F401


class HostFailure(NamedTuple):
    host: str      # a one-line description of the host
    error: Exception


class NoPretrainedWeightsError(ZooIOError, ValueError):
    """A model name or weight id with no published weight (no record in the manifest)."""
    default_hint = "list the published weights with `python -m agcnn_zoo list --pretrained`"


#: the same error under the hub's former name
NoRecordError = NoPretrainedWeightsError


class WeightsUnavailableError(ZooIOError):
    """No host delivered verified weights; ``failures`` holds each host's own error."""

    def __init__(self, name: str, failures: List[HostFailure], hint: str = ""):
        self.name, self.failures = name, list(failures)
        lines = [f"could not get verified weights for {name!r}; tried:"]
        lines += [f"  - {f.host}: {type(f.error).__name__}: {_without_url(f.error, f.host)}"
                  for f in self.failures]
        if hint:
            lines.append(hint)
        super().__init__("\n".join(lines), hint="")
        self.hint = hint  # already part of the message

    @property
    def not_hosted_here(self) -> bool:
        """True when every host failed only because the network is off (offline, or a mirror
        without this file): the weight lives elsewhere, nothing is broken."""
        return bool(self.failures) and all(isinstance(f.error, (OfflineError, MirrorError))
                                           for f in self.failures)

    def short_reason(self) -> str:
        """One line: why the configured hosts could not deliver."""
        return "; ".join(f"{f.host}: {type(f.error).__name__}" for f in self.failures)


def _without_url(error: Exception, host: str) -> str:
    """The error's message without the URL the host line already shows."""
    msg = str(error)
    for prefix in (getattr(error, "url", None), getattr(error, "file", None)):
        if prefix and prefix in host and msg.startswith(prefix + ": "):
            return msg[len(prefix) + 2:]
    return msg


class UnpinnedWeightsWarning(UserWarning):
    """A weight whose safetensors sha256 the manifest does not pin yet (checked via its source)."""
