"""`/v1/admin/signing-events`: online root signing events (admin scope, audited)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, Field

from signer.service import signing_events
from signer.service.deps import Admin, State
from signer.service.schemas import Published, Strict, error_responses

# A database integer: a bigger one is a 422, not an overflow inside the driver (a 500).
EventId = Annotated[int, Path(ge=1, le=2**63 - 1)]

router = APIRouter(prefix="/v1/admin/signing-events", tags=["admin"])

_ERRORS = error_responses(
    {
        400: "Invalid document, key or signature",
        404: "Unknown signing event",
        409: "Not a key of either root, already signed, thresholds not met, or the event is closed",
    }
)


class ProposeBody(Strict):
    proposed: str = Field(max_length=512 * 1024, description="the unsigned N+1.root.json text")
    holders: dict[str, str] = Field(
        default_factory=dict, max_length=64, description="64-hex key -> the person holding it"
    )


class SignatureBody(Strict):
    key: str = Field(max_length=64, description="64-hex ed25519 public key")
    signature: dict[str, str] = Field(
        max_length=3, description="{signature, other_headers[, see_also]} (OpenPGP-style)"
    )


class PublishBody(Strict):
    key_mgr_keyrefs: list[str] | None = Field(
        default=None, max_length=8, description="KEYREFs of new key_mgr keys, if they changed"
    )


class Count(BaseModel):
    valid: int
    threshold: int


class Missing(BaseModel):
    key: str
    holder: str | None


class EventStatus(BaseModel):
    id: int
    role: str
    version: int
    state: str = Field(description="open or published")
    signed_sha256: str = Field(description="sha256 of the canonical bytes every signer signs")
    old: Count = Field(description="signatures by the current root's keys")
    new: Count = Field(description="signatures by the proposal's own keys")
    missing: list[Missing]
    signatures: list[str]
    complete: bool


class PublishAnswer(Published):
    event: EventStatus


@router.post("", status_code=201, response_model=EventStatus, responses=_ERRORS)
def propose(
    body: ProposeBody,
    state: State,
    response: Response,
    actor: Admin,
) -> dict[str, Any]:
    status, created = signing_events.propose(
        state.publisher, body.proposed.encode("utf-8"), body.holders,
        actor=actor.name,
    )  # fmt: skip
    if not created:
        response.status_code = 200  # the same proposal is already open
    return status


@router.get("/{event_id}", response_model=EventStatus, responses=_ERRORS)
def status(
    event_id: EventId,
    state: State,
    actor: Admin,
) -> dict[str, Any]:
    with state.db.read() as session:
        event = signing_events._get(session, event_id)
        return signing_events.status_of(session, event)


@router.post("/{event_id}/signatures", response_model=EventStatus, responses=_ERRORS)
def add_signature(
    event_id: EventId,
    body: SignatureBody,
    state: State,
    actor: Admin,
) -> dict[str, Any]:
    return signing_events.add_signature(
        state.publisher, event_id, body.key, body.signature, actor=actor.name
    )


@router.post("/{event_id}/publish", response_model=PublishAnswer, responses=_ERRORS)
def publish(
    event_id: EventId,
    state: State,
    actor: Admin,
    body: PublishBody | None = None,
) -> dict[str, Any]:
    change, final = signing_events.publish(
        state.publisher, event_id, body.key_mgr_keyrefs if body else None,
        actor=actor.name,
    )  # fmt: skip
    published = dict(sorted(change.published.items())) if change else {}
    return {"published": published, "notes": change.notes if change else [], "event": final}
