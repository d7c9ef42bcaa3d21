"""Reading a trust repository from a local directory or over HTTP(S).

Used by every verifier (repodata, artifacts, mirrors); stdlib only, so the verifier path
imports no web framework. `fetch(path, max_bytes)` returns bytes, None when the document
is absent (404 / no such file), and raises `VerificationError` when it cannot tell.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
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
            with open(target, "rb") as handle:
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


class HttpSource(TrustSource):
    """HTTP(S) with size caps, timeouts, and redirects only within the same origin."""

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

        opener = urllib.request.build_opener(SameOriginRedirects())
        url = urljoin(self.base, _safe_relative(path))
        request = urllib.request.Request(url, headers={"User-Agent": "cf-sign"})
        try:
            with opener.open(request, timeout=self.timeout) as response:
                length = response.headers.get("Content-Length")
                if length is not None and length.isdigit() and int(length) > max_bytes:
                    raise VerificationError(
                        subject, "size", f"{length} bytes exceeds the {max_bytes}-byte cap"
                    )
                data: bytes = response.read(max_bytes + 1)
        except urllib.error.HTTPError as exc:
            if exc.code in (404, 410):
                return None
            raise VerificationError(subject, "fetch", f"HTTP {exc.code}") from None
        except VerificationError:
            raise
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise VerificationError(subject, "fetch", f"network error: {reason}") from None
        if len(data) > max_bytes:
            raise VerificationError(subject, "size", f"exceeds the {max_bytes}-byte cap")
        return data


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
