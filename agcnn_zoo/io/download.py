"""Bounded, streamed downloads (also from the mirror), with HTML detection.

:func:`download` streams one URL into an open file:

* the mirror (``AGCNN_ZOO_MIRROR``) replaces the network entirely; a URL whose host is not a
  plain host name or whose path climbs out (``..``) is refused (:func:`mirror_path`);
* ``AGCNN_ZOO_OFFLINE=1`` refuses any network use (:class:`OfflineError`);
* a ``Content-Length`` above ``max_size`` is refused before a byte of the body is read, and the
  stream stops as soon as more than ``max_size`` bytes arrived (:class:`TooLargeError`);
* each read waits at most ``AGCNN_ZOO_TIMEOUT`` seconds, and the whole transfer at most
  ``AGCNN_ZOO_DEADLINE`` (or the ``deadline`` argument): a server trickling one byte per
  second is cut off (:class:`DeadlineError`);
* an HTML page (by Content-Type or by its first bytes) is refused (:class:`UnexpectedContentError`),
  a body shorter than announced too (:class:`TruncatedDownloadError`).

Every failure is a :class:`DownloadError` subclass with a hint; OS errors of the output file
become :class:`CacheError` subclasses.
"""
from __future__ import annotations

import http.client
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import BinaryIO, Callable, Optional

from .._version import __version__
from . import env
from .errors import (DeadlineError, DownloadError, IntegrityError, MirrorError, OfflineError,
                     TooLargeError, TruncatedDownloadError, UnexpectedContentError)
from .files import as_cache_error

_CHUNK = 1 << 16
# a host name or IPv4 address, with an optional port: no user info, no odd characters
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*(:[0-9]{1,5})?$")


def looks_like_html(head: bytes) -> bool:
    """Whether the first bytes of a body are an HTML (or XML) page rather than binary data."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:64]
    # '<' then text: a binary header may start with 0x3c but has control bytes right after
    return text[:1] == b"<" and all(b >= 32 or b in b"\t\r\n" for b in text)


def mirror_path(mirror: Path, url: str) -> Path:
    """Where ``url`` lies in the mirror (``<mirror>/<host>/<path>``); refuses a host that is
    not a plain host name and a path that leaves the mirror (``..``, absolute parts)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc
    if not _HOST.match(host) or host in (".", ".."):
        raise MirrorError(url, f"refusing the host {host!r}: not a plain host name",
                          hint="fix the URL in the manifest or the code that built it")
    rel = urllib.parse.unquote(parts.path)
    segments = [s for s in rel.split("/") if s]
    if any(s in (".", "..") for s in segments) or "\\" in rel or "\0" in rel:
        raise MirrorError(url, f"refusing a path outside the mirror {mirror}",
                          hint="fix the URL: '..' and '.' segments are not allowed")
    root = mirror.resolve()
    candidate = (root / host / "/".join(segments)).resolve()
    if root not in candidate.parents:
        raise MirrorError(url, f"refusing a path outside the mirror {mirror}",
                          hint="a symlink in the mirror points out of it: replace it by the file")
    return candidate


def _bar(total: Optional[int], desc: str, progress: bool):
    from tqdm.auto import tqdm
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                disable=not env.show_progress(progress), leave=False)


class _Sink:
    """Writes chunks to ``out``; checks HTML on the first chunk and the size cap on each."""

    def __init__(self, url: str, out: BinaryIO, max_size: Optional[int], allow_html: bool,
                 on_chunk: Optional[Callable[[bytes], None]], bar, source: str):
        self.url, self.out, self.max_size, self.allow_html = url, out, max_size, allow_html
        self.on_chunk, self.bar, self.source = on_chunk, bar, source
        self.received = 0

    def write(self, chunk: bytes) -> None:
        if self.received == 0 and not self.allow_html and looks_like_html(chunk):
            raise UnexpectedContentError(self.url, f"{self.source} an HTML page instead of the file")
        self.received += len(chunk)
        if self.max_size is not None and self.received > self.max_size:
            raise TooLargeError(self.url, self.max_size, self.received, announced=False)
        try:
            self.out.write(chunk)
        except OSError as e:
            raise as_cache_error(e, getattr(self.out, "name", "?"), "download target") from e
        if self.on_chunk is not None:
            self.on_chunk(chunk)
        self.bar.update(len(chunk))


def _set_socket_timeout(response, seconds: float) -> None:
    """Shrink the socket's per-read timeout so that no read outlives the overall deadline."""
    try:
        sock = response.fp.raw._sock  # http.client's SocketIO
        sock.settimeout(max(seconds, 0.001))
    except AttributeError:  # pragma: no cover - another implementation
        pass


def download(url: str, out: BinaryIO, *, max_size: Optional[int] = None,
             expected_size: Optional[int] = None, deadline: Optional[float] = None,
             progress: bool = False, desc: str = "", allow_html: bool = False,
             on_chunk: Optional[Callable[[bytes], None]] = None,
             huggingface: bool = False, timeout: Optional[float] = None) -> int:
    """Stream ``url`` into ``out``; return the number of bytes written (see the module docstring).

    ``expected_size`` (the pinned size) also serves as ``max_size`` when that is not given.
    ``on_chunk`` sees every chunk (to hash while streaming); ``timeout`` overrides
    ``AGCNN_ZOO_TIMEOUT``."""
    if max_size is None:
        max_size = expected_size
    mirror = env.mirror()
    if mirror is not None:
        return _from_mirror(mirror, url, out, max_size, progress, desc, allow_html, on_chunk)
    if env.offline(huggingface=huggingface):
        raise OfflineError(url, f"offline mode ({env.OFFLINE_ENV}=1"
                                f"{' or HF_HUB_OFFLINE=1' if huggingface else ''}): "
                                "the network is not used")
    per_read = env.timeout() if timeout is None else float(timeout)
    overall = deadline if deadline is not None else env.deadline()
    start = time.monotonic()
    with _open(url, min(per_read, overall)) as response:
        length = _announced_length(url, response, max_size, allow_html)
        with _bar(length, desc, progress) as bar:
            sink = _Sink(url, out, max_size, allow_html, on_chunk, bar, "served")
            _stream(url, response, sink, length, per_read, overall, start)
        if length is not None and sink.received != length:
            raise TruncatedDownloadError(url, length, sink.received)
        if expected_size is not None and sink.received != expected_size:
            raise IntegrityError(url, expected_size, sink.received, what="size")
    return sink.received


def _open(url: str, timeout: float):
    """The HTTP response of ``url``; refusals and network errors as :class:`DownloadError`."""
    request = urllib.request.Request(url, headers={"User-Agent": f"agcnn-zoo/{__version__}",
                                                   "Accept-Encoding": "identity"})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        raise DownloadError(url, f"HTTP {e.code} {e.reason}", status=e.code) from None
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            reason = f"timed out after {timeout:g} s ({reason})"
        raise DownloadError(url, f"network error: {reason}") from None
    except (OSError, http.client.HTTPException) as e:  # timeouts, resets, bad status lines
        raise DownloadError(url, f"network error: {e}") from None


def _announced_length(url: str, response, max_size: Optional[int], allow_html: bool) -> Optional[int]:
    """The announced size (None if not announced), after refusing an HTML page or a size over
    ``max_size`` before a byte of the body is read."""
    ctype = response.headers.get("Content-Type", "")
    if "text/html" in ctype.lower() and not allow_html:
        raise UnexpectedContentError(url, f"served an HTML page (Content-Type: {ctype}) "
                                          f"instead of the file", status=response.status)
    length = response.headers.get("Content-Length")
    length = int(length) if length and length.strip().isdigit() else None
    if length is not None and max_size is not None and length > max_size:
        raise TooLargeError(url, max_size, length, announced=True)
    return length


def _stream(url: str, response, sink, length: Optional[int], per_read: float, overall: float,
            start: float) -> None:
    """Read ``response`` into ``sink`` chunk by chunk, each read bounded by the per-read
    timeout and what is left of the overall deadline."""
    while True:
        left = overall - (time.monotonic() - start)
        if left <= 0:
            raise DeadlineError(url, f"the transfer took more than {overall:g} s "
                                     f"({sink.received} bytes received)")
        _set_socket_timeout(response, min(per_read, left))
        try:
            chunk = response.read1(_CHUNK)
        except http.client.IncompleteRead as e:
            raise TruncatedDownloadError(url, length or -1, sink.received + len(e.partial)) from None
        except (socket.timeout, TimeoutError):
            if time.monotonic() - start >= overall:
                raise DeadlineError(url, f"the transfer took more than {overall:g} s "
                                         f"({sink.received} bytes received)") from None
            raise DownloadError(url, f"timed out: no data for {per_read:g} s after "
                                     f"{sink.received} bytes") from None
        except (OSError, http.client.HTTPException) as e:
            raise DownloadError(url, f"connection lost after {sink.received} bytes: {e}") from None
        if not chunk:
            return
        sink.write(chunk)


def _from_mirror(mirror: Path, url: str, out: BinaryIO, max_size: Optional[int], progress: bool,
                 desc: str, allow_html: bool, on_chunk) -> int:
    src = mirror_path(mirror, url)
    if not src.is_file():
        raise MirrorError(url, f"not in the mirror (looked for {src}); the network is not "
                               f"used while AGCNN_ZOO_MIRROR is set")
    size = src.stat().st_size
    if max_size is not None and size > max_size:
        raise TooLargeError(url, max_size, size, announced=True)
    with open(src, "rb") as f, _bar(size, desc, progress) as bar:
        sink = _Sink(url, out, max_size, allow_html, on_chunk, bar, f"the mirror holds ({src})")
        while chunk := f.read(_CHUNK):
            sink.write(chunk)
    return sink.received
