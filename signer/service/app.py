"""`create_app(settings)`: the FastAPI application.

Start-up applies the migrations (under the publication lock, so replicas starting together
are safe), rewrites any published file that lags the database, and starts the periodic
refresh. Every error is a JSON body `{"error", "detail"}`: 4xx for anything a client sent,
500 only for a bug (logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import timedelta
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from signer import __version__
from signer.service.config import Settings, load_settings
from signer.service.db.migrate import upgrade
from signer.service.db.session import Database
from signer.service.deps import ServiceState
from signer.service.documents import TrustFiles
from signer.service.errors import RateLimited, ServiceError
from signer.service.intake import Intake
from signer.service.limits import BodyLimit
from signer.service.metrics import Metrics
from signer.service.online_keys import OnlineKeys
from signer.service.overlays import OverlaySigner
from signer.service.publisher import Publisher
from signer.service.ratelimit import TokenBuckets
from signer.service.routers import (
    admin,
    attestations,
    channels,
    health,
    rollout,
    signing_events,
    trust,
)
from signer.service.routers.trust import TrustFastPath
from signer.trust import layout
from signer.trust.errors import FormatError, VerificationError
from signer.trust.timefmt import system_clock

# Every router of the API, in the order of the OpenAPI document. A new area adds its module
# under routers/ and one entry here.
ROUTERS = (
    trust.router,
    health.router,
    attestations.router,
    admin.router,
    signing_events.router,
    rollout.router,
    channels.router,
)

log = logging.getLogger("cf_sign.service")

DESCRIPTION = """\
The cf-sign trust service. Public: the trust repository under `/trust/` (roots, key_mgr,
pkg_mgr, feedstock delegations, attestations), `/healthz`, `/metrics`. Feedstock CI:
`POST /v1/attestations` (the signature is the credential). Admins: `/v1/admin/...` with a
bearer token from `cf-sign service token create --scope admin|registrar`. Signed overlay
channels: `/trust/channels/<name>/<subdir>/repodata.json`, defined under `/v1/admin/channels`.
"""


def error_response(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body: dict[str, Any] = {"error": code, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(_request: Request, exc: ServiceError) -> JSONResponse:
        headers: dict[str, str] = {}
        if exc.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        if isinstance(exc, RateLimited):
            headers["Retry-After"] = str(max(1, round(exc.retry_after)))
        return error_response(exc.status, exc.code, exc.detail, headers)

    @app.exception_handler(FormatError)
    async def format_error(_request: Request, exc: FormatError) -> JSONResponse:
        return error_response(400, "invalid_input", str(exc))

    @app.exception_handler(VerificationError)
    async def verification_error(_request: Request, exc: VerificationError) -> JSONResponse:
        return error_response(409, "verification_failed", str(exc))

    @app.exception_handler(DataError)
    async def data_error(_request: Request, exc: DataError) -> JSONResponse:
        # The database refused a value a client sent (a NUL, an out-of-range number) that
        # validation let through: still the client's input, so a 400, logged in one line.
        log.warning("database refused a request value: %s", str(exc.orig).splitlines()[0])
        return error_response(400, "invalid_input", "a value in the request is not acceptable")

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors: list[dict[str, Any]] = []
        lines: list[str] = []
        for e in exc.errors()[:20]:
            loc = [str(p) for p in e.get("loc", ())]
            msg = str(e.get("msg", "invalid"))
            errors.append({"loc": loc, "msg": msg})
            lines.append(f"{'.'.join(loc)}: {msg}" if loc else msg)
        detail = lines[0] if lines else "invalid request"
        return error_response(422, "invalid_request", detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}
        return error_response(
            exc.status_code,
            codes.get(exc.status_code, "http_error"),
            str(exc.detail),
            dict(exc.headers or {}),
        )

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error")
        return error_response(500, "internal_error", "internal error (logged by the service)")


def build_state(settings: Settings) -> ServiceState:
    db = Database(settings.db_url)
    publisher = Publisher(db, settings.publish_dir, OnlineKeys(), settings.publish_to)
    limiter = TokenBuckets(settings.rate_per_second, settings.rate_burst)
    intake = Intake(db, publisher, limiter, max_artifacts=settings.max_artifacts)
    files = TrustFiles(db, settings.trust_cache_seconds)
    publisher.listeners.append(files.invalidate)
    state = ServiceState(settings, db, publisher, intake, Metrics(db), files,
                         OverlaySigner(db, publisher))  # fmt: skip

    def attestations_changed(paths: Iterable[str]) -> None:
        if any(p.startswith(ATTESTATIONS_PREFIX) for p in paths):
            state.overlay_soon()  # new attestations: the overlays can sign more records

    publisher.listeners.append(attestations_changed)
    return state


async def _guarded(what: str, job: Callable[[], None]) -> None:
    """One run of a periodic job in the thread pool; a failure is logged, retried next time."""
    try:
        await run_in_threadpool(job)
    except ServiceError:
        pass  # not initialized yet
    except Exception:
        log.exception("%s failed; retrying at the next interval", what)


def _refresh_once(state: ServiceState) -> None:
    change = state.publisher.refresh(None, actor="refresh")
    if change.published:
        log.info("refresh published %s", sorted(change.published))
    written = state.publisher.sync_files()
    if written:
        log.warning("publish directory lagged the database; rewrote %s", written[:20])


async def _refresh_forever(state: ServiceState) -> None:
    while True:
        await asyncio.sleep(state.settings.refresh_interval)
        await _guarded("periodic refresh", lambda: _refresh_once(state))


# A burst of intakes (or of channel edits) makes one overlay pass, not one each; passes
# woken by intakes start at most every OVERLAY_MIN_GAP seconds (conda-forge uploads all day).
OVERLAY_DEBOUNCE = 2.0
OVERLAY_MIN_GAP = 10.0
ATTESTATIONS_PREFIX = layout.ATTESTATIONS_DIR + "/"


async def _overlays_forever(state: ServiceState, wake: asyncio.Event) -> None:
    """Refresh the signed overlay channels every `channel_interval`, and soon after `wake`."""
    interval = state.settings.channel_interval
    loop = asyncio.get_running_loop()
    last = -OVERLAY_MIN_GAP
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), interval if interval > 0 else None)
        await asyncio.sleep(max(OVERLAY_DEBOUNCE, last + OVERLAY_MIN_GAP - loop.time()))
        wake.clear()
        last = loop.time()
        await _guarded("overlay refresh", lambda: _overlays_once(state))


def _overlays_once(state: ServiceState) -> None:
    results = state.overlays.refresh()
    changed = [f"{r.channel}/{r.subdir}/{r.document}" for r in results if r.published]
    if changed:
        log.info("overlay channels published %s", changed[:20])


# Attestations committed by another replica within this window before the last check are
# looked at again: transactions commit out of order, and clocks of replicas differ a little.
SYNC_OVERLAP = timedelta(minutes=5)


async def _sync_forever(state: ServiceState) -> None:
    """Bring this replica's publish directory to the database (another replica published)."""
    since, audit_after = system_clock() - SYNC_OVERLAP, 0
    while True:
        await asyncio.sleep(state.settings.sync_interval)
        started = system_clock()
        try:
            written = await run_in_threadpool(
                lambda: state.publisher.sync_files(attestations=False, trust_cache=True)
            )
            recent, audit_after = await run_in_threadpool(
                state.publisher.sync_recent_attestations, since, audit_after
            )
            written += recent
            if written:
                log.info("publish directory caught up with the database: %s", written[:20])
            since = started - SYNC_OVERLAP
        except Exception:
            log.exception("publish directory sync failed; retrying at the next interval")


def _startup(state: ServiceState) -> None:
    upgrade(state.db)
    written = state.publisher.sync_files()
    if written:
        log.warning("publish directory lagged the database; rewrote %s", written)


def create_app(settings: Settings) -> FastAPI:
    state = build_state(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(_startup, state)
        tasks = []
        loop, wake = asyncio.get_running_loop(), asyncio.Event()

        def overlay_soon() -> None:  # called from request threads
            loop.call_soon_threadsafe(wake.set)

        state.overlay_soon = overlay_soon
        wake.set()  # a first pass at start-up
        tasks.append(asyncio.create_task(_overlays_forever(state, wake)))
        if settings.refresh_interval > 0:
            tasks.append(asyncio.create_task(_refresh_forever(state)))
        if settings.sync_interval > 0:
            tasks.append(asyncio.create_task(_sync_forever(state)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            state.db.dispose()

    app = FastAPI(
        title="cf-sign trust service",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        responses={422: {"description": "Invalid request body or parameters"}},
    )
    app.state.service = state
    _install_error_handlers(app)

    for router in ROUTERS:
        app.include_router(router)

    # Each added middleware wraps the ones before: metrics see every answer (413s from the
    # body limit, and the /trust fast path, which answers before FastAPI's routing).
    if settings.trust_fast_path:
        app.add_middleware(TrustFastPath, files=state.trust_files)
    app.add_middleware(BodyLimit, settings=settings)
    app.add_middleware(_MetricsMiddleware, metrics=state.metrics)
    return app


class _MetricsMiddleware:
    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = metrics.middleware(app)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


def create_app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` and multi-worker runs: settings from `CF_SIGN_*`."""
    return create_app(load_settings())
