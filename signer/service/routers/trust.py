"""`GET /trust/<path>`: the trust repository, byte for byte as published.

Documents come from the database (the source of truth shared by every replica), never
from the publish directory. Each answer carries a strong ETag (the sha256 of the bytes)
and honours If-None-Match. Roots are immutable once published; everything else may change
and is cacheable for a minute only, so a revocation reaches clients (and CDNs) quickly.

Hot path: these are the service's most requested URLs, so `TrustFastPath` answers them
as plain ASGI in front of FastAPI, from a small per-process cache. An entry lives
`trust_cache_seconds` (default 1 s) and is dropped at once when this process publishes
over it; another replica's publication is therefore served here within that second. The
FastAPI route below documents the endpoint in the OpenAPI schema and answers identically
(it is what runs when the fast path is off).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from signer.service.deps import State
from signer.service.documents import Found, TrustFiles
from signer.service.schemas import ErrorBody

router = APIRouter(tags=["trust repository (public)"])

PREFIX = "/trust/"


def answer(
    path: str, found: Found | None, method: str, if_none_match: str | None
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) for a request of `path`: shared by both code paths."""
    if found is None:
        body = (
            b'{"error":"not_found","detail":'
            + _json_string(f"{path}: not in the trust repository")
            + b"}"
        )
        return 404, {"content-type": "application/json"}, body
    headers = {"etag": found.etag, "cache-control": found.cache_control}
    if if_none_match is not None and found.etag in {m.strip() for m in if_none_match.split(",")}:
        return 304, headers, b""
    headers["content-type"] = "application/json"
    if method == "HEAD":
        headers["content-length"] = str(len(found.data))
        return 200, headers, b""
    return 200, headers, found.data


def _json_string(text: str) -> bytes:
    import json

    return json.dumps(text).encode()


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class TrustFastPath:
    """ASGI middleware answering GET/HEAD /trust/... without FastAPI's routing."""

    def __init__(self, app: Any, files: TrustFiles) -> None:
        self.app = app
        self.files = files

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        method = scope.get("method")
        if scope["type"] != "http" or not path.startswith(PREFIX) or method not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        rel = path[len(PREFIX) :]
        found = self.files.cached(rel)
        if found is None:
            found = await run_in_threadpool(self.files.load, rel)
        if_none_match = None
        for name, value in scope.get("headers", ()):
            if name == b"if-none-match":
                if_none_match = value.decode("latin-1")
        status, headers, body = answer(rel, found, method, if_none_match)
        raw = [(k.encode(), v.encode()) for k, v in headers.items()]
        if "content-length" not in headers:
            raw.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The exact published bytes",
        "content": {"application/json": {}},
        "headers": {
            "ETag": {"description": "sha256 of the bytes", "schema": {"type": "string"}},
            "Cache-Control": {"schema": {"type": "string"}},
        },
    },
    304: {"description": "Not modified (If-None-Match matched the ETag)"},
    404: {"model": ErrorBody, "description": "No such document"},
}


# GET and HEAD as two routes, so each has its own operation id in the OpenAPI document.
@router.head(
    "/trust/{path:path}",
    summary="A file of the trust repository (headers only)",
    response_class=Response,
    responses=_RESPONSES,
    operation_id="head_trust_file",
)
@router.get(
    "/trust/{path:path}",
    summary="A file of the trust repository",
    response_class=Response,
    responses=_RESPONSES,
    operation_id="get_trust_file",
)
def trust_file(path: str, request: Request, state: State) -> Response:
    found = state.trust_files.get(path)
    status, headers, body = answer(
        path, found, request.method, request.headers.get("if-none-match")
    )
    response = Response(body, status_code=status, headers=headers)
    return response
