"""Real HTTP servers on 127.0.0.1 for the hub and publish tests (threads, stdlib only).

* :class:`StaticHost` serves a folder (for instance the reference mirror laid out as
  ``<dir>/<host>/<path>``, so that ``https://<host>/<path>`` becomes
  ``http://127.0.0.1:PORT/<host>/<path>`` through :meth:`StaticHost.url_for`), counts requests
  and can be told to misbehave per path: ``tamper``, ``truncate`` (announces the full length,
  sends half, hangs up), ``short`` (a consistently shorter file), ``html`` (a 200 HTML page),
  ``html_as_binary`` (the same page labelled application/octet-stream), ``404``, ``500`` and
  ``stall`` (says nothing for ``stall_seconds``, then answers), ``endless`` (no Content-Length,
  a body that never ends), ``trickle`` (the right length announced, then one byte per second)
  and ``huge`` (announces 10 GiB, sends nothing until the client hangs up; ``body_bytes_sent``
  counts what such faults wrote); ``delay`` slows every body down so that concurrent clients overlap.
* :class:`FakeHFHub` answers what huggingface_hub's ``hf_hub_download`` and
  ``HfApi.create_repo`` / ``create_commit`` call (HEAD/GET ``/{repo}/resolve/{rev}/{file}``,
  ``POST /api/repos/create``, ``/api/validate-yaml``, ``/api/models/{repo}/preupload/{rev}``,
  ``/api/models/{repo}/commit/{rev}``), storing commits in memory; ``set_fault`` makes one
  file misbehave as :class:`StaticHost`'s faults of the same names do.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, List, Optional, Tuple

FAULTS = ("tamper", "truncate", "short", "html", "html_as_binary", "404", "500", "stall",
          "endless", "trickle", "huge")
HTML_PAGE = b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>captive portal</body></html>\n"


def dead_url(path: str = "/file") -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


def isolate_env(tmp_path: Path, monkeypatch) -> Path:
    """Every cache in ``tmp_path``, no mirror / endpoint / offline flag from the caller's
    environment, and no telemetry request of huggingface_hub to the real Hub (it fetches an
    agent registry from its import-time endpoint once per process unless told not to).
    Returns our weights cache folder (``weights`` in the cache root)."""
    for var in ("AGCNN_ZOO_MIRROR", "HF_ENDPOINT", "HF_HUB_OFFLINE", "HF_HUB_CACHE",
                "AGCNN_ZOO_TIMEOUT", "AGCNN_ZOO_DEADLINE", "AGCNN_ZOO_OFFLINE", "HF_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    trust_localhost(monkeypatch)
    cache = tmp_path / "cache"
    monkeypatch.setenv("AGCNN_ZOO_CACHE", str(cache))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")  # for spawned children
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    return cache / "weights"


def trust_localhost(monkeypatch) -> None:
    """Let manifest records point at 127.0.0.1 over plain http (only in this test)."""
    from agcnn_zoo.hub import records
    monkeypatch.setattr(records, "TRUSTED_HOSTS", records.TRUSTED_HOSTS | {"127.0.0.1"})
    monkeypatch.setattr(records, "HTTP_HOSTS", records.HTTP_HOSTS | {"127.0.0.1"})


def files_under(folder: Path) -> List[str]:
    """Every file below ``folder`` (relative, sorted) but bookkeeping: lock files and
    huggingface_hub's CACHEDIR.TAG, refs and empty ``.no_exist`` markers (its negative cache)."""
    folder = Path(folder)
    if not folder.exists():
        return []
    skip = {".locks", ".no_exist", "refs"}
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if (p.is_file() or p.is_symlink()) and not skip.intersection(p.parts)
                  and p.name != "CACHEDIR.TAG")


def tampered(data: bytes) -> bytes:
    """Same length, one byte flipped in the middle."""
    i = len(data) // 2
    return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server._HTTPServer"

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _dispatch(self, method: str):
        owner = self.server.owner
        owner._record(method, self.path)
        try:
            owner.handle(self, method)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    # helpers used by the owners
    def body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def send(self, status: int, body: bytes = b"", headers: Optional[Dict[str, str]] = None,
             ctype: str = "application/octet-stream", head_only: bool = False,
             announce: Optional[int] = None, delay: float = 0.0, hang_up: bool = False):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body) if announce is None else announce))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if hang_up:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if head_only:
            return
        if delay:
            pieces = [body[i:i + 16384] for i in range(0, len(body), 16384)] or [b""]
            for piece in pieces:
                self.wfile.write(piece)
                self.wfile.flush()
                time.sleep(delay / len(pieces))
        else:
            self.wfile.write(body)
        self.wfile.flush()

    def send_json(self, status: int, obj, headers: Optional[Dict[str, str]] = None):
        self.send(status, json.dumps(obj).encode(), headers, ctype="application/json")


class _Server:
    class _HTTPServer(ThreadingHTTPServer):
        daemon_threads = True
        owner: "_Server"

    def __init__(self):
        self._httpd = self._HTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._lock = threading.Lock()
        self.requests: List[Tuple[str, str]] = []
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def _record(self, method: str, path: str):
        with self._lock:
            self.requests.append((method, path))

    def count(self, method: Optional[str] = None, contains: str = "") -> int:
        with self._lock:
            return sum(1 for m, p in self.requests
                       if (method is None or m == method) and contains in urllib.parse.unquote(p))

    #: body bytes that the endless / trickle / huge faults wrote
    body_bytes_sent = 0

    def _misbehave(self, h: _Handler, fault: str, data: bytes, head: bool,
                   headers: Optional[Dict[str, str]] = None):
        h.send_response(200)
        h.send_header("Content-Type", "application/octet-stream")
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        if fault == "trickle":
            h.send_header("Content-Length", str(len(data)))
        elif fault == "huge":
            h.send_header("Content-Length", str(10 << 30))
        h.send_header("Connection", "close")
        h.close_connection = True
        h.end_headers()
        h.wfile.flush()
        if head:
            return
        deadline = time.monotonic() + 60  # never run past a minute, whatever the client does
        try:
            if fault == "huge":  # the client must refuse before reading: wait for it to hang up
                while time.monotonic() < deadline and h.rfile.read1(1) != b"":
                    pass
                return
            step = 0
            while time.monotonic() < deadline:
                if fault == "endless":
                    h.wfile.write(b"\x00" * 65536)
                    self.body_bytes_sent += 65536
                else:
                    if step >= len(data):
                        return
                    h.wfile.write(data[step:step + 1])
                    self.body_bytes_sent += 1
                    step += 1
                    time.sleep(1.0)
                h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            return

    def handle(self, h: _Handler, method: str):  # pragma: no cover - overridden
        raise NotImplementedError

    def close(self):
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class StaticHost(_Server):
    """Serves ``root``: GET /a/b -> root/a/b. Use ``url_for`` with a root laid out by host."""

    def __init__(self, root: Path, delay: float = 0.0, stall_seconds: float = 3.0):
        self.root = Path(root).resolve()
        self.delay = delay
        self.stall_seconds = stall_seconds
        self.faults: Dict[str, str] = {}
        super().__init__()

    def url_for(self, https_url: str) -> str:
        parts = urllib.parse.urlsplit(https_url)
        return f"{self.url}/{parts.netloc}{parts.path}"

    def set_fault(self, url_or_path: str, kind: Optional[str]):
        """Misbehave on that path (a full URL of this server, or a path starting with /)."""
        if kind is not None and kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; choose from {FAULTS}")
        path = urllib.parse.urlsplit(url_or_path).path
        if kind is None:
            self.faults.pop(path, None)
        else:
            self.faults[path] = kind

    def handle(self, h: _Handler, method: str):
        if method not in ("GET", "HEAD"):
            return h.send(405, b"method not allowed", ctype="text/plain")
        path = urllib.parse.urlsplit(h.path).path
        fault = self.faults.get(path)
        head = method == "HEAD"
        if fault == "stall":
            time.sleep(self.stall_seconds)
        if fault == "404":
            return h.send(404, b"404: Not Found", ctype="text/plain", head_only=head)
        if fault == "500":
            return h.send(500, b"500: Internal Server Error", ctype="text/plain", head_only=head)
        if fault == "html":
            return h.send(200, HTML_PAGE, ctype="text/html; charset=utf-8", head_only=head)
        if fault == "html_as_binary":
            return h.send(200, HTML_PAGE, head_only=head)
        file = (self.root / urllib.parse.unquote(path).lstrip("/")).resolve()
        if not str(file).startswith(str(self.root)) or not file.is_file():
            return h.send(404, b"404: Not Found", ctype="text/plain", head_only=head)
        data = file.read_bytes()
        if fault in ("endless", "trickle", "huge"):
            return self._misbehave(h, fault, data, head)
        if fault == "tamper":
            data = tampered(data)
        elif fault == "short":
            data = data[: len(data) // 2]
        elif fault == "truncate":
            return h.send(200, data[: len(data) // 2], announce=len(data), head_only=head,
                          hang_up=True)
        return h.send(200, data, head_only=head, delay=self.delay)


_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_PREUPLOAD = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/preupload/(?P<rev>[^/]+)$")
_COMMIT = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/commit/(?P<rev>[^/]+)$")


class FakeHFHub(_Server):
    """A Hugging Face endpoint holding model repos in memory (no auth, no LFS: every file is
    uploaded inline, as the Hub does for "regular" files)."""

    def __init__(self):
        self.repos: Dict[str, Dict[str, object]] = {}   # repo -> {"commits": {oid: files}, "main": oid}
        self.faults: Dict[str, str] = {}                # filename -> one of set_fault's kinds
        self.commit_payloads: List[List[dict]] = []
        self._counter = 0
        super().__init__()

    @property
    def endpoint(self) -> str:
        return self.url

    # -- direct manipulation, for tests that do not go through the upload API
    def create_repo(self, repo_id: str):
        self.repos.setdefault(repo_id, {"commits": {}, "main": None})

    def commit(self, repo_id: str, files: Dict[str, bytes]) -> str:
        self.create_repo(repo_id)
        repo = self.repos[repo_id]
        parent = repo["main"]
        tree = dict(repo["commits"].get(parent, {})) if parent else {}
        tree.update(files)
        self._counter += 1
        h = hashlib.sha1(f"{parent}:{self._counter}".encode())
        for k in sorted(tree):
            h.update(k.encode() + hashlib.sha256(tree[k]).digest())
        oid = h.hexdigest()
        repo["commits"][oid] = tree
        repo["main"] = oid
        return oid

    def files(self, repo_id: str, revision: str = "main") -> Dict[str, bytes]:
        repo = self.repos[repo_id]
        return dict(repo["commits"][repo["main"] if revision == "main" else revision])

    def set_fault(self, filename: str, kind: Optional[str]):
        if kind is None:
            self.faults.pop(filename, None)
        else:
            if kind not in ("tamper", "404", "html", "endless", "trickle", "huge"):
                raise ValueError(kind)
            self.faults[filename] = kind

    # -- HTTP
    def handle(self, h: _Handler, method: str):
        path = urllib.parse.urlsplit(h.path).path
        if method in ("GET", "HEAD"):
            m = _RESOLVE.match(path)
            if m:
                return self._resolve(h, method, m["repo"], urllib.parse.unquote(m["rev"]),
                                     urllib.parse.unquote(m["file"]))
            return h.send_json(404, {"error": "not found"}, {"X-Error-Code": "RepoNotFound"})
        body = h.body()
        if path == "/api/repos/create":
            payload = json.loads(body)
            repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") \
                else payload["name"]
            if repo_id in self.repos:
                # the Hub's 409 carries the url too: create_repo(exist_ok=True) reads it
                return h.send_json(409, {"error": "You already created this model repo",
                                         "url": f"{self.url}/{repo_id}"})
            self.create_repo(repo_id)
            return h.send_json(200, {"url": f"{self.url}/{repo_id}", "name": repo_id,
                                     "id": repo_id})
        if path == "/api/validate-yaml":
            return h.send_json(200, {"errors": [], "warnings": []})
        m = _PREUPLOAD.match(path)
        if m:
            if m["repo"] not in self.repos:
                return h.send_json(404, {"error": "Repository not found"},
                                   {"X-Error-Code": "RepoNotFound"})
            files = json.loads(body)["files"]
            return h.send_json(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                "shouldIgnore": False, "oid": None}
                                               for f in files]})
        m = _COMMIT.match(path)
        if m:
            if m["repo"] not in self.repos:
                return h.send_json(404, {"error": "Repository not found"},
                                   {"X-Error-Code": "RepoNotFound"})
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
            self.commit_payloads.append(lines)
            added = {}
            for item in lines:
                if item["key"] == "file":
                    value = item["value"]
                    if value.get("encoding") != "base64":
                        return h.send_json(400, {"error": "expected base64 content"})
                    added[value["path"]] = base64.b64decode(value["content"])
                elif item["key"] != "header":
                    return h.send_json(400, {"error": f"unsupported operation {item['key']}"})
            oid = self.commit(m["repo"], added)
            return h.send_json(200, {"commitUrl": f"{self.url}/{m['repo']}/commit/{oid}",
                                     "commitOid": oid, "pullRequestUrl": None})
        return h.send_json(404, {"error": "not found"})

    def _resolve(self, h: _Handler, method: str, repo_id: str, rev: str, filename: str):
        head = method == "HEAD"
        repo = self.repos.get(repo_id)
        if repo is None:
            return h.send_json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        oid = repo["main"] if rev == "main" else rev
        if oid not in repo["commits"]:
            return h.send_json(404, {"error": "Invalid rev id"}, {"X-Error-Code": "RevisionNotFound"})
        tree = repo["commits"][oid]
        fault = self.faults.get(filename)
        if filename not in tree or fault == "404":
            return h.send(404, b'{"error": "Entry not found"}', ctype="application/json",
                          head_only=head, headers={"X-Error-Code": "EntryNotFound",
                                                   "X-Repo-Commit": oid})
        data = tree[filename]
        if fault == "html":
            return h.send(200, HTML_PAGE, ctype="text/html", head_only=head)
        etag = hashlib.sha256(data).hexdigest()  # the Hub's etag of an LFS file: its sha256
        headers = {"X-Repo-Commit": oid, "ETag": f'"{etag}"'}
        if fault in ("endless", "trickle", "huge"):  # with the Hub's headers: huggingface_hub
            return self._misbehave(h, fault, data, head, headers)  # would take the answer
        if fault == "tamper":
            data = tampered(data)
        return h.send(200, data, head_only=head, headers=headers)
