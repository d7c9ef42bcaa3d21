"""A loopback HTTP/1.1 server for mirror tests (no tests here): keep-alive, Range requests,
and the faults an upstream can have (tampered bytes, a dropped connection, a lying
Content-Length, slowness)."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class Faults:
    tamper: dict[str, bytes] = field(default_factory=dict)  # path -> bytes served instead
    drop_after: dict[str, int] = field(default_factory=dict)  # path -> bytes, then close
    drop_times: dict[str, int] = field(default_factory=dict)  # how often to drop (default 1e9)
    lie_length: set[str] = field(default_factory=set)  # announce one byte more than sent
    slow: dict[str, float] = field(default_factory=dict)  # path -> seconds per 16 KiB
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range)
    conditional: list[str] = field(default_factory=list)  # paths asked with If-None-Match


class RangeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    root: Path
    faults: Faults

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path.split("?")[0].lstrip("/")
        self.faults.requests.append((path, self.headers.get("Range")))
        if self.headers.get("If-None-Match"):
            self.faults.conditional.append(path)
        target = self.root / path
        if path in self.faults.tamper:
            data = self.faults.tamper[path]
        elif ".." in path.split("/") or not target.is_file():
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        else:
            data = target.read_bytes()
        etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
        if self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            return
        start = 0
        status = 200
        spec = self.headers.get("Range")
        if spec and spec.startswith("bytes=") and spec.endswith("-"):
            start = int(spec[6:-1])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:]
        self.send_response(status)
        length = len(body) + (1 if path in self.faults.lie_length else 0)
        self.send_header("Content-Length", str(length))
        self.send_header("ETag", etag)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        cut = None
        if path in self.faults.drop_after and self.faults.drop_times.get(path, 10**9) > 0:
            self.faults.drop_times[path] = self.faults.drop_times.get(path, 10**9) - 1
            cut = self.faults.drop_after[path]
        delay = self.faults.slow.get(path)
        sent = 0
        step = 16 * 1024
        while sent < len(body):
            if cut is not None and sent >= cut:
                self.close_connection = True
                return
            piece = body[sent : sent + step if cut is None else min(sent + step, cut)]
            self.wfile.write(piece)
            sent += len(piece)
            if delay:
                self.wfile.flush()
                time.sleep(delay)
        if path in self.faults.lie_length:
            self.close_connection = True


@contextmanager
def serve(root: Path, faults: Faults | None = None) -> Iterator[tuple[str, Faults]]:
    faults = faults or Faults()
    handler = type("H", (RangeHandler,), {"root": root, "faults": faults})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", faults
    finally:
        server.shutdown()
        server.server_close()
