"""A small JSON-over-HTTP client for the roll-out: keep-alive, a rate limit, backoff.

GitHub answers a rate-limited request with 403 or 429 and `Retry-After` (secondary limits)
or `x-ratelimit-reset`; Azure DevOps with 429 and `Retry-After`. Both are waited out, as
are 5xx and network errors, with exponential backoff; any other 4xx is the caller's.
Standard library only: http.client keeps one connection per client.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

MAX_BODY = 16 * 1024 * 1024
MAX_WAIT = 300.0
NETWORK_RETRIES = 4


class ApiError(Exception):
    """A request the API refused (4xx other than rate limits) or never answered."""

    def __init__(self, where: str, status: int, reason: str) -> None:
        super().__init__(f"{where}: HTTP {status}: {reason}" if status else f"{where}: {reason}")
        self.where = where
        self.status = status
        self.reason = reason


@dataclass
class Response:
    status: int
    body: Any
    headers: Mapping[str, str]


class RateLimiter:
    """At most `rate` requests a second, shared by the threads using one API."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()
        self._clock = clock

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            time.sleep(slot - now)

    def pause(self, seconds: float) -> None:
        """Everyone waits: the API said so (Retry-After)."""
        with self._lock:
            self._next = max(self._next, self._clock() + seconds)


def _retry_after(headers: Mapping[str, str], attempt: int) -> float:
    value = headers.get("retry-after", "")
    if value.strip().isdigit():
        return min(float(value), MAX_WAIT)
    reset = headers.get("x-ratelimit-reset", "")
    if headers.get("x-ratelimit-remaining") == "0" and reset.isdigit():
        return min(max(float(reset) - time.time(), 1.0), MAX_WAIT)
    return float(min(2**attempt, 60))


class JsonClient:
    """Requests to one origin; not shared between threads (one connection each)."""

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        limiter: RateLimiter,
        *,
        name: str,
        retries: int = 8,
        timeout: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        parts = urllib.parse.urlsplit(base_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{base_url}: expected an http(s) URL")
        self.scheme, self.netloc, self.prefix = parts.scheme, parts.netloc, parts.path
        self.headers = {"Accept": "application/json", "User-Agent": "cf-sign rollout", **headers}
        self.limiter = limiter
        self.name = name
        self.retries = retries
        self.timeout = timeout
        self.sleep = sleep
        self.requests = 0
        self.waits = 0
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = (
                http.client.HTTPSConnection
                if self.scheme == "https"
                else http.client.HTTPConnection
            )
            self._conn = cls(self.netloc, timeout=self.timeout)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _once(self, method: str, path: str, data: bytes | None) -> Response:
        headers = dict(self.headers)
        if data is not None:
            headers["Content-Type"] = "application/json"
        conn = self._connection()
        try:
            if conn.sock is None:
                conn.connect()
                sock: socket.socket = conn.sock  # type: ignore[assignment]  # set by connect()
                # Small requests, many of them: no Nagle wait behind an unacknowledged write.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.request(method, self.prefix + path, body=data, headers=headers)
            raw = conn.getresponse()
            payload = raw.read(MAX_BODY + 1)
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        if raw.getheader("connection", "").lower() == "close":
            self.close()
        if len(payload) > MAX_BODY:
            raise ApiError(f"{self.name} {method} {path}", raw.status, "response too large")
        try:
            body = json.loads(payload) if payload else None
        except ValueError:
            body = None
        return Response(raw.status, body, {k.lower(): v for k, v in raw.getheaders()})

    def request(
        self, method: str, path: str, body: Any = None, *, ok: tuple[int, ...] = (200,)
    ) -> Response:
        data = None if body is None else json.dumps(body).encode("utf-8")
        where = f"{self.name} {method} {path}"
        last = "no answer"
        failures = 0
        attempts = 0
        for attempt in range(self.retries):
            attempts += 1
            self.limiter.wait()
            self.requests += 1
            try:
                response = self._once(method, path, data)
            except (OSError, http.client.HTTPException) as exc:
                last = f"network error: {exc}"
                failures += 1
                if failures >= NETWORK_RETRIES:
                    break  # unreachable: say so soon rather than after minutes
                self.sleep(float(min(2**attempt, 30)))
                continue
            if response.status in ok:
                return response
            limited = response.status == 429 or (
                response.status == 403
                and ("retry-after" in response.headers
                     or response.headers.get("x-ratelimit-remaining") == "0")
            )  # fmt: skip
            if limited or response.status >= 500:
                wait = _retry_after(response.headers, attempt)
                self.waits += 1
                self.limiter.pause(wait)
                last = f"HTTP {response.status}"
                continue
            raise ApiError(where, response.status, _message(response.body))
        raise ApiError(where, 0, f"gave up after {attempts} attempts ({last})")


def _message(body: Any) -> str:
    if isinstance(body, dict):
        for key in ("message", "detail", "error"):
            if isinstance(body.get(key), str):
                return str(body[key])[:300]
    return "refused"
