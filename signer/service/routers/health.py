"""`/healthz` (liveness and readiness in one: the database answers) and `/metrics`."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import select

from signer.service.db.models import Document, Setting
from signer.service.deps import get_state
from signer.service.online_keys import CONFIG_SETTING
from signer.service.schemas import Health
from signer.trust import layout

router = APIRouter(tags=["operations (public)"])


@router.get(
    "/healthz",
    summary="Health: the database answers and the service is initialized",
    response_model=Health,
    responses={503: {"model": Health, "description": "The database does not answer"}},
)
def healthz(request: Request) -> JSONResponse:
    db = get_state(request).db
    try:
        with db.connect() as conn:
            initialized = (
                conn.scalar(select(Setting.name).where(Setting.name == CONFIG_SETTING)) is not None
            )
            rows = conn.execute(
                select(Document.path, Document.version, Document.expiration).where(
                    Document.path.like(f"%{layout.ROOT_SUFFIX}") | (Document.path == layout.INDEX)
                )
            ).all()
    except Exception as exc:  # any database failure means: not ready
        body = Health(status="degraded", database=f"error: {type(exc).__name__}", initialized=False)
        return JSONResponse(body.model_dump(), status_code=503)
    roots = [(v, e) for p, v, e in rows if layout.is_root_path(p)]
    index = [v for p, v, _ in rows if p == layout.INDEX]
    newest = max(roots, default=None)
    body = Health(
        status="ok",
        database="ok",
        initialized=initialized,
        root_version=newest[0] if newest else None,
        root_expires=newest[1] if newest else None,
        index_version=index[0] if index else None,
    )
    return JSONResponse(body.model_dump())


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
def metrics(request: Request) -> Response:
    registry = get_state(request).metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
