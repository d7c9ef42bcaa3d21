"""`/healthz` (liveness and readiness in one: the database answers) and `/metrics`."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from signer.service.deps import State
from signer.service.documents import health_summary
from signer.service.schemas import Health

router = APIRouter(tags=["operations (public)"])


@router.get(
    "/healthz",
    summary="Health: the database answers and the service is initialized",
    response_model=Health,
    responses={503: {"model": Health, "description": "The database does not answer"}},
)
def healthz(state: State) -> JSONResponse:
    try:
        summary = health_summary(state.db)
    except Exception as exc:  # any database failure means: not ready
        body = Health(status="degraded", database=f"error: {type(exc).__name__}", initialized=False)
        return JSONResponse(body.model_dump(), status_code=503)
    body = Health(
        status="ok",
        database="ok",
        initialized=summary.initialized,
        root_version=summary.root_version,
        root_expires=summary.root_expires,
        index_version=summary.index_version,
    )
    return JSONResponse(body.model_dump())


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
def metrics(state: State) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
