"""Request size limits, enforced before the application reads a body.

The body is buffered up to the route's limit (counted as it arrives, whatever
Content-Length says); one byte more and the answer is 413 with a JSON body, without the
request reaching FastAPI's parser. The rest of an oversized body is read and dropped (up
to `DRAIN_FACTOR` times the limit) so that the client, still sending, gets the 413 rather
than a reset connection; past that, or when Content-Length announces more than that, the
answer is sent at once and the connection closed.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from signer.service.config import Settings

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DRAIN_FACTOR = 4


class BodyLimit:
    def __init__(self, app: Any, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    def limit_for(self, path: str) -> int:
        if path.startswith("/v1/attestations"):
            return self.settings.max_attestation_body
        if path.startswith("/v1/admin/"):
            return self.settings.max_admin_body
        return self.settings.max_other_body

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _reject(send, 400, "bad_request", "invalid Content-Length")
                    return
                if declared > limit * DRAIN_FACTOR:
                    await _too_large(send, limit)
                    return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            more = bool(message.get("more_body", False))
            if size > limit:
                chunks.clear()  # drop what was buffered; drain (bounded), then answer
                if more and size <= limit * DRAIN_FACTOR:
                    continue
                await _too_large(send, limit)
                return
            chunks.append(chunk)
            if not more:
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _too_large(send: Send, limit: int) -> None:
    await _reject(send, 413, "too_large", f"request body over the {limit}-byte limit")


async def _reject(send: Send, status: int, code: str, detail: str) -> None:
    body = json.dumps({"error": code, "detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
