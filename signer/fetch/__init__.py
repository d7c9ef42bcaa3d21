"""Reading a trust repository from a local directory or over HTTP(S).

Used by every verifier (repodata, artifacts, mirrors); stdlib only, so the verifier path
imports no web framework. `fetch(path, max_bytes)` returns bytes, None when the document
is absent (404 / no such file), and raises `VerificationError` when it cannot tell.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from signer.trust.errors import VerificationError

DEFAULT_TIMEOUT = 20.0


class TrustSource:
    location: str

    def fetch(self, path: str, max_bytes: int) -> bytes | None:
        raise NotImplementedError

    def describe(self, path: str) -> str:
        return f"{self.location.rstrip('/')}/{path}"


def _safe_relative(path: str) -> str:
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise VerificationError(path, "fetch", "refusing a path outside the trust repository")
    return path


class LocalSource(TrustSource):
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.location = str(directory)

    def fetch(self, path: str, max_bytes: int) -> bytes | None:
        target = self.directory / _safe_relative(path)
        try:
            # O_NONBLOCK: opening a FIFO planted in the directory must not wait for a writer.
            fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
            with open(fd, "rb") as handle:
                mode = os.fstat(handle.fileno()).st_mode
                if stat.S_ISDIR(mode):
                    raise IsADirectoryError
                if not stat.S_ISREG(mode):
                    raise VerificationError(
                        self.describe(path), "fetch", "not a regular file (FIFO or device?)"
                    )
                size = os.fstat(handle.fileno()).st_size
                if size > max_bytes:
                    raise VerificationError(
                        self.describe(path),
                        "size",
                        f"{size} bytes exceeds the {max_bytes}-byte cap",
                    )
                return handle.read(max_bytes + 1)
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            raise VerificationError(self.describe(path), "fetch", "is a directory") from None
        except OSError as exc:
            raise VerificationError(
                self.describe(path), "fetch", exc.strerror or str(exc)
            ) from None


class _Deadline:
    """One total deadline for a document (rule 12): at the deadline every socket opened for
    it is shut down, which ends a read blocked on a server dripping a byte at a time."""

    def __init__(self, seconds: float) -> None:
        import threading

        self.seconds = seconds
        self.expired = False
        self._sockets: list[Any] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def watch(self, sock: Any) -> None:
        with self._lock:
            self._sockets.append(sock)
            expired = self.expired
        if expired:
            _shutdown(sock)

    def _fire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shutdown(sock)


def _shutdown(sock: Any) -> None:
    import contextlib
    import socket

    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


def _opener(deadline: _Deadline, redirects: Any) -> Any:
    """A urllib opener (proxies as usual) whose connections report their sockets."""
    import http.client
    import urllib.request

    class Connection(http.client.HTTPConnection):
        def connect(self) -> None:
            super().connect()
            deadline.watch(self.sock)

    class TlsConnection(http.client.HTTPSConnection):
        def connect(self) -> None:
            super().connect()
            deadline.watch(self.sock)

    class Http(urllib.request.HTTPHandler):
        def http_open(self, req: Any) -> Any:
            return self.do_open(Connection, req)

    class Https(urllib.request.HTTPSHandler):
        def https_open(self, req: Any) -> Any:
            return self.do_open(TlsConnection, req, context=getattr(self, "_context", None))

    return urllib.request.build_opener(Http(), Https(), redirects)


class HttpSource(TrustSource):
    """HTTP(S) with size caps, one total deadline per document (`timeout` seconds, not per
    read), and redirects only within the same origin."""

    def __init__(self, base_url: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.location = base_url.rstrip("/")
        self.base = self.location + "/"
        self.timeout = timeout
        split = urlsplit(self.base)
        self._origin = (split.scheme, split.netloc)

    def fetch(self, path: str, max_bytes: int) -> bytes | None:
        import http.client
        import urllib.error
        import urllib.request

        origin = self._origin
        subject = self.describe(path)

        class SameOriginRedirects(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
                target = urlsplit(urljoin(req.full_url, newurl))
                if (target.scheme, target.netloc) != origin:
                    raise VerificationError(subject, "fetch", f"redirect to another host: {newurl}")
                return super().redirect_request(req, fp, code, msg, headers, newurl)

        url = urljoin(self.base, _safe_relative(path))
        request = urllib.request.Request(url, headers={"User-Agent": "cf-sign"})
        deadline = _Deadline(self.timeout)
        try:
            with (
                deadline,
                _opener(deadline, SameOriginRedirects()).open(
                    request, timeout=self.timeout
                ) as response,
            ):
                length = response.headers.get("Content-Length")
                if length is not None and length.isdigit() and int(length) > max_bytes:
                    raise VerificationError(
                        subject, "size", f"{length} bytes exceeds the {max_bytes}-byte cap"
                    )
                data: bytes = response.read(max_bytes + 1)
            if deadline.expired:
                raise OSError("deadline")
        except urllib.error.HTTPError as exc:
            if deadline.expired:
                raise self._late(subject) from None
            if exc.code in (404, 410):
                return None
            raise VerificationError(subject, "fetch", f"HTTP {exc.code}") from None
        except VerificationError:
            raise
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            # A socket timeout is the deadline too (each operation's timeout is the whole
            # budget): whichever fires first, the answer is the same.
            if deadline.expired or isinstance(getattr(exc, "reason", exc), TimeoutError):
                raise self._late(subject) from None
            reason = getattr(exc, "reason", None) or exc
            raise VerificationError(subject, "fetch", f"network error: {reason}") from None
        if len(data) > max_bytes:
            raise VerificationError(subject, "size", f"exceeds the {max_bytes}-byte cap")
        return data

    def _late(self, subject: str) -> VerificationError:
        return VerificationError(
            subject, "fetch", f"no complete answer within the {self.timeout:g} s deadline"
        )


def is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def open_source(location: str, timeout: float = DEFAULT_TIMEOUT) -> TrustSource:
    if is_url(location):
        return HttpSource(location, timeout)
    return LocalSource(Path(location))


def default_state_dir(location: str) -> Path:
    """`$XDG_CACHE_HOME/cf-sign/<first 16 hex of sha256(location)>`."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    if not is_url(location):
        location = str(Path(location).resolve())
    digest = hashlib.sha256(location.encode("utf-8")).hexdigest()[:16]
    return Path(cache) / "cf-sign" / digest
