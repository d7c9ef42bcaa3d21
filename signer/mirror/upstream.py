"""An upstream channel (directory or HTTP(S)): its repodata, and artifacts downloaded
resumably with their size and sha256 checked against the record.

Downloads go to a partial file that survives a crash (kill -9 included): the next run sends
`Range: bytes=<have>-` and appends, re-hashing what it already has. A server that sends
more than the record's size, fewer bytes than it promised, or other bytes, is retried and
then reported; the caller quarantines the file. Nothing here publishes anything.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urljoin, urlsplit

import zstandard

from signer.trust.errors import VerificationError

CHUNK = 1024 * 1024
DEFAULT_MAX_REPODATA = 2 * 1024 * 1024 * 1024 - 1  # below 2 GiB: an upstream cannot swamp us
USER_AGENT = "cf-sign-mirror"


class Download(NamedTuple):
    ok: bool
    path: Path  # the partial file (complete and checked when ok)
    size: int
    sha256: str
    attempts: int
    resumed: bool  # a Range request continued an earlier partial file
    reason: str = ""


class DownloadError(Exception):
    """One attempt failed; `retry` says whether another attempt may succeed."""

    def __init__(self, reason: str, *, retry: bool = True, restart: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry
        self.restart = restart  # the partial bytes are wrong: start from zero


def is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


class _Connections(threading.local):
    """One keep-alive connection per thread and origin."""

    def __init__(self) -> None:
        self.by_origin: dict[tuple[str, str], http.client.HTTPConnection] = {}


class Upstream:
    """Reads a channel root: `<root>/<subdir>/repodata.json[.zst]` and the artifacts."""

    def __init__(self, location: str, *, timeout: float = 60.0, retries: int = 3) -> None:
        self.location = location.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.remote = is_url(location)
        self._conns = _Connections()

    # ------------------------------------------------------------------ HTTP

    def _connection(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        key = (scheme, netloc)
        conn = self._conns.by_origin.get(key)
        if conn is None:
            cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
            conn = cls(netloc, timeout=self.timeout)
            self._conns.by_origin[key] = conn
        return conn

    def _drop(self, scheme: str, netloc: str) -> None:
        conn = self._conns.by_origin.pop((scheme, netloc), None)
        if conn is not None:
            conn.close()

    def _get(
        self, url: str, headers: dict[str, str], *, redirects: int = 5
    ) -> tuple[http.client.HTTPResponse, str, str]:
        """A response (status < 300, or 404/416) with its connection's scheme and netloc."""
        for _ in range(redirects + 1):
            split = urlsplit(url)
            if split.scheme not in ("http", "https"):
                raise DownloadError(f"not an http(s) URL: {url}", retry=False)
            path = split.path + (f"?{split.query}" if split.query else "")
            conn = self._connection(split.scheme, split.netloc)
            try:
                conn.request("GET", path or "/", headers={"User-Agent": USER_AGENT, **headers})
                response = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                self._drop(split.scheme, split.netloc)
                raise DownloadError(f"network error: {exc or type(exc).__name__}") from None
            if response.status in (301, 302, 303, 307, 308):
                location = response.getheader("Location") or ""
                response.read()
                url = urljoin(url, location)
                continue
            return response, split.scheme, split.netloc
        raise DownloadError("too many redirects", retry=False)

    def _read_url(self, url: str, max_bytes: int) -> bytes | None:
        response, scheme, netloc = self._get(url, {})
        try:
            if response.status in (404, 410):
                response.read()
                return None
            if response.status != 200:
                response.read()
                raise DownloadError(f"HTTP {response.status}")
            length = response.getheader("Content-Length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                raise DownloadError(f"{length} bytes exceeds the {max_bytes}-byte cap", retry=False)
            data = response.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise DownloadError(f"exceeds the {max_bytes}-byte cap", retry=False)
            if length is not None and length.isdigit() and len(data) != int(length):
                raise DownloadError(f"connection closed after {len(data)} of {length} bytes")
            return data
        except (OSError, http.client.HTTPException) as exc:
            raise DownloadError(f"network error: {exc or type(exc).__name__}") from None
        finally:
            if response.will_close or not response.isclosed():
                self._drop(scheme, netloc)

    # ------------------------------------------------------------------ repodata

    def repodata_url(self, subdir: str, name: str) -> str:
        return f"{self.location}/{subdir}/{name}"

    def _read(self, subdir: str, name: str, max_bytes: int) -> bytes | None:
        if self.remote:
            last = "no attempt"
            for attempt in range(self.retries):
                try:
                    return self._read_url(self.repodata_url(subdir, name), max_bytes)
                except DownloadError as exc:
                    last = exc.reason
                    if not exc.retry:
                        break
                    time.sleep(0.2 * (attempt + 1))
            raise VerificationError(self.repodata_url(subdir, name), "fetch", last)
        path = Path(self.location) / subdir / name
        try:
            with open(path, "rb") as handle:
                if os.fstat(handle.fileno()).st_size > max_bytes:
                    raise VerificationError(str(path), "size", f"exceeds the {max_bytes}-byte cap")
                return handle.read(max_bytes + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise VerificationError(str(path), "fetch", exc.strerror or str(exc)) from None

    def repodata(self, subdir: str, max_bytes: int = DEFAULT_MAX_REPODATA) -> tuple[bytes, str]:
        """(bytes of repodata.json, where): `.zst` preferred, decompressed under the cap."""
        packed = self._read(subdir, "repodata.json.zst", max_bytes)
        if packed is not None:
            where = self.repodata_url(subdir, "repodata.json.zst")
            out = bytearray()
            try:
                reader = zstandard.ZstdDecompressor().stream_reader(packed)
                while len(out) <= max_bytes and (block := reader.read(CHUNK * 16)):
                    out += block
            except zstandard.ZstdError as exc:
                raise VerificationError(where, "format", f"not zstd: {exc}") from None
            if len(out) > max_bytes:
                raise VerificationError(where, "size", f"inflates past the {max_bytes}-byte cap")
            return bytes(out), where
        data = self._read(subdir, "repodata.json", max_bytes)
        if data is None:
            raise VerificationError(
                self.repodata_url(subdir, "repodata.json"), "missing", "no repodata upstream"
            )
        return data, self.repodata_url(subdir, "repodata.json")

    def subdirs(self) -> list[str]:
        """Subdirs of a directory upstream (those with a repodata); none known over HTTP."""
        if self.remote:
            return []
        root = Path(self.location)
        return sorted(
            p.name
            for p in root.iterdir()
            if p.is_dir()
            and ((p / "repodata.json").is_file() or (p / "repodata.json.zst").is_file())
        )

    # ------------------------------------------------------------------ artifacts

    def artifact_url(self, subdir: str, filename: str, base_url: str | None) -> str:
        if base_url:
            return urljoin(base_url.rstrip("/") + "/", filename)
        return f"{self.location}/{subdir}/{filename}"

    def download(
        self,
        subdir: str,
        filename: str,
        size: int,
        sha256: str,
        partial: Path,
        *,
        base_url: str | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> Download:
        """Fetch into `partial` (resuming it) until it has `size` bytes hashing to `sha256`."""
        partial.parent.mkdir(parents=True, exist_ok=True)
        resumed = False
        reason = ""
        attempts = 0
        for attempts in range(1, self.retries + 1):
            try:
                got, digest, was_resumed = self._attempt(
                    subdir, filename, size, partial, base_url, on_bytes
                )
                resumed = resumed or was_resumed
            except DownloadError as exc:
                reason = exc.reason
                if exc.restart:
                    partial.unlink(missing_ok=True)
                if not exc.retry:
                    break
                time.sleep(min(0.05 * 2**attempts, 1.0))
                continue
            if got != size:
                reason = f"{got} bytes, the record says {size}"
                partial.unlink(missing_ok=True)
                continue
            if digest != sha256:
                reason = f"sha256 {digest[:16]}… differs from the record's {sha256[:16]}…"
                # Kept for the quarantine after the last attempt; a retry starts afresh.
                if attempts < self.retries:
                    partial.unlink(missing_ok=True)
                continue
            return Download(True, partial, got, digest, attempts, resumed)
        have = partial.stat().st_size if partial.exists() else 0
        return Download(False, partial, have, "", attempts, resumed, reason)

    def _attempt(
        self,
        subdir: str,
        filename: str,
        size: int,
        partial: Path,
        base_url: str | None,
        on_bytes: Callable[[int], None] | None,
    ) -> tuple[int, str, bool]:
        sha = hashlib.sha256()
        have = 0
        if partial.exists():
            have = partial.stat().st_size
            if have > size:
                partial.unlink()
                have = 0
            else:
                with open(partial, "rb") as handle:
                    while block := handle.read(CHUNK):
                        sha.update(block)
        if not self.remote:
            return self._copy(subdir, filename, size, partial, sha, have, on_bytes)
        url = self.artifact_url(subdir, filename, base_url)
        if have == size:
            return have, sha.hexdigest(), have > 0  # complete already (crash before the move)
        headers = {"Range": f"bytes={have}-"} if have else {}
        response, scheme, netloc = self._get(url, headers)
        resumed = False
        try:
            if response.status == 404:
                response.read()
                raise DownloadError("HTTP 404: not found upstream", retry=False)
            if response.status == 416:
                response.read()
                raise DownloadError("HTTP 416: range not satisfiable", restart=True)
            if response.status == 206 and have:
                span = response.getheader("Content-Range") or ""
                if not span.startswith(f"bytes {have}-"):
                    response.read()
                    raise DownloadError(f"range answered as {span!r}", restart=True)
                resumed = True
                expected = size - have
            elif response.status == 200:
                if have:  # the server ignored the range: start again
                    sha = hashlib.sha256()
                    have = 0
                expected = size
            else:
                response.read()
                raise DownloadError(f"HTTP {response.status}")
            length = response.getheader("Content-Length")
            if length is not None and length.isdigit() and int(length) > expected:
                raise DownloadError(
                    f"server announces {have + int(length)} bytes, the record says {size}",
                    retry=False, restart=True,
                )  # fmt: skip
            mode = "ab" if resumed else "wb"
            with open(partial, mode) as out:
                while have < size:
                    block = response.read1(min(CHUNK, size - have))
                    if not block:
                        break
                    out.write(block)
                    sha.update(block)
                    have += len(block)
                    if on_bytes is not None:
                        on_bytes(len(block))
                if have == size and response.read(1):
                    raise DownloadError(
                        f"server sends more than the record's {size} bytes", restart=True
                    )
                out.flush()  # no fsync: a resumed file is re-hashed, and a bad one refetched
        except (OSError, http.client.HTTPException) as exc:
            self._drop(scheme, netloc)
            raise DownloadError(
                f"connection lost after {have} of {size} bytes ({exc or type(exc).__name__})"
            ) from None
        finally:
            if response.will_close:
                self._drop(scheme, netloc)
        if have < size:
            self._drop(scheme, netloc)
            raise DownloadError(f"connection closed after {have} of {size} bytes")
        return have, sha.hexdigest(), resumed

    def _copy(
        self,
        subdir: str,
        filename: str,
        size: int,
        partial: Path,
        sha: hashlib._Hash,
        have: int,
        on_bytes: Callable[[int], None] | None,
    ) -> tuple[int, str, bool]:
        source = Path(self.location) / subdir / filename
        try:
            with open(source, "rb") as src, open(partial, "ab" if have else "wb") as out:
                src.seek(have)
                while have <= size:
                    block = src.read(min(CHUNK, size + 1 - have))
                    if not block:
                        break
                    out.write(block)
                    sha.update(block)
                    have += len(block)
                    if on_bytes is not None:
                        on_bytes(len(block))
        except FileNotFoundError:
            raise DownloadError("not found upstream", retry=False) from None
        except OSError as exc:
            raise DownloadError(f"cannot read: {exc.strerror}") from None
        return have, sha.hexdigest(), False


def move_into(path: Path, target: Path) -> None:
    """Rename (same filesystem), or copy across filesystems.

    Not flushed one by one (an fsync per small file costs more than its download): the
    caller flushes everything once before it writes the repodata naming these files.
    """
    try:
        os.replace(path, target)
    except OSError:
        shutil.copyfile(path, target)
        path.unlink()
