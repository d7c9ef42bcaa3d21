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

Signed overlay channels (`/trust/channels/<name>/<subdir>/<document>`) are the exception:
large, made by each replica from upstream (overlays.py), they are served from this
replica's publish directory, streamed, with an ETag of the file's identity (a new document
is always a new file, renamed into place).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from signer.channel.overlay import DOCUMENTS, check_channel_name, check_subdir
from signer.service.deps import State
from signer.service.documents import MUTABLE, Found, TrustFiles
from signer.service.schemas import ErrorBody
from signer.trust.errors import FormatError

router = APIRouter(tags=["trust repository (public)"])

PREFIX = "/trust/"
CHANNELS_PREFIX = "/trust/channels/"
CHANNEL_FILES = frozenset(DOCUMENTS) | {d + ".zst" for d in DOCUMENTS}


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
        if (
            scope["type"] != "http"
            or not path.startswith(PREFIX)
            or path.startswith(CHANNELS_PREFIX)  # files on disk: the route below streams them
            or method not in ("GET", "HEAD")
        ):
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


_CHANNEL_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The signed overlay document (repodata v2, artifacts upstream)"},
    304: {"description": "Not modified (If-None-Match matched the ETag)"},
    404: {"model": ErrorBody, "description": "No such channel, subdir or document"},
}


@router.head(
    "/trust/channels/{channel}/{subdir}/{filename}",
    summary="A signed overlay channel's repodata (headers only)",
    response_class=Response,
    responses=_CHANNEL_RESPONSES,
    operation_id="head_channel_file",
)
@router.get(
    "/trust/channels/{channel}/{subdir}/{filename}",
    summary="A signed overlay channel's repodata",
    response_class=Response,
    responses=_CHANNEL_RESPONSES,
    operation_id="get_channel_file",
)
def channel_file(
    channel: str, subdir: str, filename: str, request: Request, state: State
) -> Response:
    rel = f"channels/{channel}/{subdir}/{filename}"
    try:
        check_channel_name(channel)
        check_subdir(subdir)
        if filename not in CHANNEL_FILES:
            raise FormatError(rel, "filename", "not an overlay document")
        # Opened first, then described: a document renamed over it meanwhile is not mixed in.
        fd = os.open(state.publisher.files.channels / channel / subdir / filename, os.O_RDONLY)
    except (FormatError, OSError):
        status, headers, body = answer(rel, None, "GET", None)
        return Response(body, status_code=status, headers=headers)
    handle = os.fdopen(fd, "rb")
    st = os.fstat(fd)
    identity = f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}".encode()
    etag = f'"{hashlib.sha256(identity).hexdigest()[:32]}"'
    headers = {"etag": etag, "cache-control": MUTABLE, "content-length": str(st.st_size)}
    media = "application/json" if filename.endswith(".json") else "application/zstd"
    wanted = request.headers.get("if-none-match")
    if wanted is not None and etag in {m.strip() for m in wanted.split(",")}:
        handle.close()
        del headers["content-length"]
        return Response(status_code=304, headers=headers)
    if request.method == "HEAD":
        handle.close()
        return Response(status_code=200, headers=headers, media_type=media)

    def chunks() -> Iterator[bytes]:
        with handle:
            while block := handle.read(1024 * 1024):
                yield block

    return StreamingResponse(chunks(), headers=headers, media_type=media)


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
