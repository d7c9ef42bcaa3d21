"""The admin API (`/v1/admin/...`), bearer tokens with scopes `admin` or `registrar`.

Registrars (provisioning bots) may register a new feedstock, give it names nobody owns and
its first key, and import the outputs mapping's unowned entries; taking an owned name,
adding a further key, removing or revoking anything, withdrawing an attestation, the audit
log and the online keys need `admin` (registry.py decides, given the actor's scope). Every
change publishes what it changed before it answers, and the answer lists the documents
published with their new versions.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Query

from signer.service import audit, bootstrap, intake, registry
from signer.service.deps import Admin, Registrar, State
from signer.service.errors import NotFound
from signer.service.publisher import Change
from signer.service.schemas import (
    AttestationWithdraw,
    AuditEntryView,
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
    WithdrawnView,
    error_responses,
)

router = APIRouter(prefix="/v1/admin", tags=["admin"])

_AUTH = error_responses({})
_FEEDSTOCK = error_responses(
    {
        400: "Invalid name, key or threshold",
        404: "Unknown feedstock or key",
        409: "Conflicts with the registry",
        413: "Request too large",
    }
)


def _published(change: Change) -> dict[str, Any]:
    return {"published": dict(sorted(change.published.items())), "notes": change.notes}


def _changed(state: State, change: Change, name: str | None) -> FeedstockChange:
    feedstock = None
    if name is not None:
        with state.db.read() as session:
            feedstock = registry.find_view(session, name)
    return FeedstockChange(**_published(change), feedstock=feedstock)


@router.get("/feedstocks", response_model=FeedstockList, responses=_AUTH)
def list_feedstocks(
    state: State,
    _actor: Registrar,
    after: str = Query("", max_length=256, description="list names after this one"),
    limit: int = Query(100, ge=1, le=1000),
) -> FeedstockList:
    with state.db.read() as session:
        views = registry.list_views(session, after if registry.printable(after) else "", limit)
    return FeedstockList(
        feedstocks=views, next_after=views[-1].name if len(views) == limit else None
    )


@router.get("/feedstocks/{name}", response_model=FeedstockView, responses=_FEEDSTOCK)
def get_feedstock(name: str, state: State, _actor: Registrar) -> FeedstockView:
    with state.db.read() as session:
        return registry.view(registry.get_feedstock(session, name))


@router.post("/feedstocks", status_code=201, response_model=FeedstockChange, responses=_FEEDSTOCK)
def create_feedstock(body: FeedstockCreate, state: State, actor: Registrar) -> FeedstockChange:
    with state.publisher.change(actor.name) as change:
        registry.create_feedstock(
            change,
            body.name,
            outputs=body.outputs,
            output_globs=body.output_globs,
            keys=[k.model_dump() for k in body.keys],
            threshold=body.threshold,
            admin=actor.is_admin,
        )
    return _changed(state, change, body.name)


@router.patch("/feedstocks/{name}", response_model=FeedstockChange, responses=_FEEDSTOCK)
def update_feedstock(
    name: str, body: FeedstockUpdate, state: State, actor: Registrar
) -> FeedstockChange:
    if body.remove_outputs or body.remove_globs or body.threshold is not None:
        actor.require("admin")
    with state.publisher.change(actor.name) as change:
        registry.update_feedstock(
            change,
            name,
            add_outputs=body.add_outputs,
            remove_outputs=body.remove_outputs,
            add_globs=body.add_globs,
            remove_globs=body.remove_globs,
            threshold=body.threshold,
            admin=actor.is_admin,
        )
    return _changed(state, change, name)


@router.delete("/feedstocks/{name}", response_model=FeedstockChange, responses=_FEEDSTOCK)
def delete_feedstock(name: str, state: State, actor: Admin) -> FeedstockChange:
    with state.publisher.change(actor.name) as change:
        registry.delete_feedstock(change, name)
    return _changed(state, change, None)


@router.post(
    "/feedstocks/{name}/keys",
    status_code=201,
    response_model=FeedstockChange,
    responses=_FEEDSTOCK,
)
def add_key(name: str, body: KeyAdd, state: State, actor: Registrar) -> FeedstockChange:
    with state.publisher.change(actor.name) as change:
        registry.add_key(change, name, body.key.model_dump(), admin=actor.is_admin)
    return _changed(state, change, name)


@router.delete(
    "/feedstocks/{name}/keys/{keyid}", response_model=FeedstockChange, responses=_FEEDSTOCK
)
def revoke_key(name: str, keyid: str, state: State, actor: Admin) -> FeedstockChange:
    with state.publisher.change(actor.name) as change:
        registry.revoke_key(change, name, keyid)
    return _changed(state, change, name)


@router.post("/outputs/import", response_model=ImportResult, responses=_FEEDSTOCK)
def import_outputs(body: OutputsImport, state: State, actor: Registrar) -> ImportResult:
    if body.replace:
        actor.require("admin")
    with state.publisher.change(actor.name) as change:
        summary = registry.import_outputs(
            change, body.outputs, body.output_globs, replace=body.replace, admin=actor.is_admin
        )
    return ImportResult(**_published(change), **summary)


@router.post(
    "/attestations/{subdir}/{filename}/withdraw",
    response_model=WithdrawnView,
    responses={**_AUTH, 404: {"model": ErrorBody, "description": "No such attestation"}},
    summary="Withdraw an attestation (e.g. one filed to squat a name); audited",
)
def withdraw_attestation(
    subdir: str, filename: str, body: AttestationWithdraw, state: State, actor: Admin
) -> WithdrawnView:
    with state.publisher.change(actor.name) as change:
        row = intake.withdraw(change, subdir, filename, body.reason)
    if row is None:
        raise NotFound(f"{subdir[:64]}/{filename[:512]}: no such attestation", code="not_found")
    state.publisher.remove_attestation(subdir, filename)
    return WithdrawnView(
        artifact=f"{subdir}/{filename}", feedstock=row.feedstock, sha256=row.sha256
    )


@router.get("/audit", response_model=AuditPage, responses=_AUTH)
def read_audit(
    state: State,
    _actor: Admin,
    after: int = Query(0, ge=0, le=2**53, description="entries after this sequence number"),
    limit: int = Query(100, ge=1, le=1000),
) -> AuditPage:
    with state.db.read() as session:
        entries = [AuditEntryView(**e) for e in audit.page(session, after, limit)]
    return AuditPage(entries=entries, next_after=entries[-1].seq if len(entries) == limit else None)


@router.post(
    "/refresh",
    response_model=Published,
    responses={**_AUTH, 400: {"model": ErrorBody, "description": "Body is not JSON"}},
)
def refresh(state: State, actor: Admin, body: RefreshRequest | None = None) -> Published:
    within = timedelta(days=body.within_days) if body and body.within_days else None
    change = state.publisher.refresh(within, actor=actor.name)
    return Published(**_published(change))


@router.post(
    "/roots",
    response_model=Published,
    responses={**_AUTH, 400: {"model": ErrorBody}, 409: {"model": ErrorBody}},
)
def publish_root(body: RootPublish, state: State, actor: Admin) -> Published:
    change = bootstrap.publish_root(
        state.publisher, body.root.encode("utf-8"), body.key_mgr_keyrefs, actor=actor.name
    )
    return Published(**_published(change))


@router.put(
    "/pkg-mgr-keys", response_model=Published, responses={**_AUTH, 400: {"model": ErrorBody}}
)
def set_pkg_mgr_keys(body: PkgMgrKeys, state: State, actor: Admin) -> Published:
    change = bootstrap.set_pkg_mgr_keys(
        state.publisher, body.keyrefs, body.threshold, actor=actor.name
    )
    return Published(**_published(change))
