"""The admin API (`/v1/admin/...`), bearer tokens with scopes `admin` or `registrar`.

Registrars (provisioning bots) may register feedstocks, add names and keys, and import
the outputs mapping; removing or revoking anything, replacing names, the audit log and the
online keys need `admin`. Every change publishes what it changed before it answers, and
the answer lists the documents published with their new versions.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import select

from signer.service import audit, bootstrap, registry
from signer.service.db.models import AuditEntry, Feedstock
from signer.service.deps import Actor, get_state, require_scope
from signer.service.publisher import Change
from signer.service.schemas import (
    AuditPage,
    ErrorBody,
    FeedstockChange,
    FeedstockCreate,
    FeedstockList,
    FeedstockUpdate,
    FeedstockView,
    ImportResult,
    KeyAdd,
    OutputsImport,
    PkgMgrKeys,
    Published,
    RefreshRequest,
    RootPublish,
)

router = APIRouter(prefix="/v1/admin", tags=["admin"])

_AUTH: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing, invalid or revoked token"},
    403: {"model": ErrorBody, "description": "The token lacks the scope"},
    422: {"model": ErrorBody, "description": "Malformed request"},
}
_FEEDSTOCK = {
    **_AUTH,
    400: {"model": ErrorBody, "description": "Invalid name, key or threshold"},
    404: {"model": ErrorBody, "description": "Unknown feedstock or key"},
    409: {"model": ErrorBody, "description": "Conflicts with the registry"},
    413: {"model": ErrorBody, "description": "Request too large"},
}

registrar = require_scope("registrar")
admin = require_scope("admin")


def _published(change: Change) -> dict[str, Any]:
    return {"published": dict(sorted(change.published.items())), "notes": change.notes}


def _view(request: Request, name: str) -> dict[str, Any] | None:
    with get_state(request).db.read() as session:
        feedstock = session.scalars(select(Feedstock).where(Feedstock.name == name)).first()
        return registry.view(feedstock) if feedstock is not None else None


@router.get("/feedstocks", response_model=FeedstockList, responses=_AUTH)
def list_feedstocks(
    request: Request,
    after: str = Query("", max_length=256, description="list names after this one"),
    limit: int = Query(100, ge=1, le=1000),
    _actor: Actor = Depends(registrar),  # noqa: B008
) -> dict[str, Any]:
    with get_state(request).db.read() as session:
        rows = session.scalars(
            select(Feedstock).where(Feedstock.name > after).order_by(Feedstock.name).limit(limit)
        ).all()
        views = [registry.view(f) for f in rows]
    return {"feedstocks": views, "next_after": views[-1]["name"] if len(views) == limit else None}


@router.get("/feedstocks/{name}", response_model=FeedstockView, responses=_FEEDSTOCK)
def get_feedstock(
    name: str,
    request: Request,
    _actor: Actor = Depends(registrar),  # noqa: B008
) -> dict[str, Any]:
    with get_state(request).db.read() as session:
        return registry.view(registry.get_feedstock(session, name))


@router.post("/feedstocks", status_code=201, response_model=FeedstockChange, responses=_FEEDSTOCK)
def create_feedstock(
    body: FeedstockCreate,
    request: Request,
    actor: Actor = Depends(registrar),  # noqa: B008
) -> dict[str, Any]:
    with get_state(request).publisher.change(actor.name) as change:
        registry.create_feedstock(
            change,
            body.name,
            outputs=body.outputs,
            output_globs=body.output_globs,
            keys=[k.model_dump() for k in body.keys],
            threshold=body.threshold,
        )
    return {**_published(change), "feedstock": _view(request, body.name)}


@router.patch("/feedstocks/{name}", response_model=FeedstockChange, responses=_FEEDSTOCK)
def update_feedstock(
    name: str,
    body: FeedstockUpdate,
    request: Request,
    actor: Actor = Depends(registrar),  # noqa: B008
) -> dict[str, Any]:
    if body.remove_outputs or body.remove_globs or body.threshold is not None:
        actor.require("admin")
    with get_state(request).publisher.change(actor.name) as change:
        registry.update_feedstock(
            change,
            name,
            add_outputs=body.add_outputs,
            remove_outputs=body.remove_outputs,
            add_globs=body.add_globs,
            remove_globs=body.remove_globs,
            threshold=body.threshold,
        )
    return {**_published(change), "feedstock": _view(request, name)}


@router.delete("/feedstocks/{name}", response_model=FeedstockChange, responses=_FEEDSTOCK)
def delete_feedstock(
    name: str,
    request: Request,
    actor: Actor = Depends(admin),  # noqa: B008
) -> dict[str, Any]:
    with get_state(request).publisher.change(actor.name) as change:
        registry.delete_feedstock(change, name)
    return {**_published(change), "feedstock": None}


@router.post(
    "/feedstocks/{name}/keys",
    status_code=201,
    response_model=FeedstockChange,
    responses=_FEEDSTOCK,
)
def add_key(
    name: str,
    body: KeyAdd,
    request: Request,
    actor: Actor = Depends(registrar),  # noqa: B008
) -> dict[str, Any]:
    with get_state(request).publisher.change(actor.name) as change:
        registry.add_key(change, name, body.key.model_dump())
    return {**_published(change), "feedstock": _view(request, name)}


@router.delete(
    "/feedstocks/{name}/keys/{keyid}", response_model=FeedstockChange, responses=_FEEDSTOCK
)
def revoke_key(
    name: str,
    keyid: str,
    request: Request,
    actor: Actor = Depends(admin),  # noqa: B008
) -> dict[str, Any]:
    with get_state(request).publisher.change(actor.name) as change:
        registry.revoke_key(change, name, keyid)
    return {**_published(change), "feedstock": _view(request, name)}


@router.post("/outputs/import", response_model=ImportResult, responses=_FEEDSTOCK)
def import_outputs(
    body: OutputsImport,
    request: Request,
    actor: Actor = Depends(registrar),  # noqa: B008
) -> dict[str, Any]:
    if body.replace:
        actor.require("admin")
    with get_state(request).publisher.change(actor.name) as change:
        summary = registry.import_outputs(
            change, body.outputs, body.output_globs, replace=body.replace
        )
    return {**_published(change), **summary}


@router.get("/audit", response_model=AuditPage, responses=_AUTH)
def read_audit(
    request: Request,
    after: int = Query(0, ge=0, le=2**53, description="entries after this sequence number"),
    limit: int = Query(100, ge=1, le=1000),
    _actor: Actor = Depends(admin),  # noqa: B008
) -> dict[str, Any]:
    with get_state(request).db.read() as session:
        rows = session.scalars(
            select(AuditEntry).where(AuditEntry.seq > after).order_by(AuditEntry.seq).limit(limit)
        ).all()
        entries = [audit.entry_dict(e) for e in rows]
    return {"entries": entries, "next_after": entries[-1]["seq"] if len(entries) == limit else None}


@router.post(
    "/refresh",
    response_model=Published,
    responses={**_AUTH, 400: {"model": ErrorBody, "description": "Body is not JSON"}},
)
def refresh(
    request: Request,
    body: RefreshRequest | None = None,
    actor: Actor = Depends(admin),  # noqa: B008
) -> dict[str, Any]:
    within = timedelta(days=body.within_days) if body and body.within_days else None
    change = get_state(request).publisher.refresh(within, actor=actor.name)
    return _published(change)


@router.post(
    "/roots",
    response_model=Published,
    responses={**_AUTH, 400: {"model": ErrorBody}, 409: {"model": ErrorBody}},
)
def publish_root(
    body: RootPublish,
    request: Request,
    actor: Actor = Depends(admin),  # noqa: B008
) -> dict[str, Any]:
    change = bootstrap.publish_root(
        get_state(request).publisher,
        body.root.encode("utf-8"),
        body.key_mgr_keyrefs,
        actor=actor.name,
    )
    return _published(change)


@router.put(
    "/pkg-mgr-keys", response_model=Published, responses={**_AUTH, 400: {"model": ErrorBody}}
)
def set_pkg_mgr_keys(
    body: PkgMgrKeys,
    request: Request,
    actor: Actor = Depends(admin),  # noqa: B008
) -> dict[str, Any]:
    change = bootstrap.set_pkg_mgr_keys(
        get_state(request).publisher, body.keyrefs, body.threshold, actor=actor.name
    )
    return _published(change)
