"""Roll-out endpoints: feedstock stages (read publicly, set by admins) and coverage."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from signer.service import stages
from signer.service.deps import Admin, Registrar, State
from signer.service.registry import get_feedstock
from signer.service.schemas import error_responses

router = APIRouter(tags=["rollout"])

_ERRORS = error_responses(
    {400: "Invalid stage", 404: "Unknown feedstock", 409: "enforce without an active key"}
)

Stage = Literal["off", "observe", "enforce"]


class StageSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stage: Stage


class StageView(BaseModel):
    name: str
    stage: Stage
    since: str | None = Field(
        default=None, description="when the stage was last set (UTC); null: never set"
    )
    previous: Stage | None = None


class StageList(BaseModel):
    stages: list[StageView]
    next_after: str | None


class Coverage(BaseModel):
    feedstocks: int
    provisioned: int = Field(description="with at least one active key")
    signing: int = Field(description="attested a build in the last `signing_days` days")
    signing_days: int
    off: int
    observe: int
    enforced: int
    attestations: int


@router.put("/v1/admin/feedstocks/{name}/stage", response_model=StageView, responses=_ERRORS)
def set_stage(
    name: str,
    body: StageSet,
    state: State,
    actor: Admin,
) -> dict[str, Any]:
    with state.publisher.change(actor.name) as change:
        previous, _ = stages.set_stage(change, name, body.stage)
    with state.db.read() as session:
        return {**stages.view(get_feedstock(session, name)), "previous": previous}


@router.get("/v1/stages/{name}", response_model=StageView, responses={404: _ERRORS[404]})
def get_stage(name: str, state: State) -> dict[str, Any]:
    with state.db.read() as session:
        return stages.view(get_feedstock(session, name))


@router.get("/v1/stages", response_model=StageList)
def list_stages(
    state: State,
    after: str = Query("", max_length=256, description="list names after this one"),
    limit: int = Query(1000, ge=1, le=10000),
) -> dict[str, Any]:
    with state.db.read() as session:
        rows = stages.stages(session, after, limit)
    return {"stages": rows, "next_after": rows[-1]["name"] if len(rows) == limit else None}


@router.get("/v1/admin/rollout/coverage", response_model=Coverage, responses=_ERRORS)
def coverage(
    state: State,
    _actor: Registrar,
    days: int = Query(30, ge=1, le=3650),
) -> dict[str, Any]:
    from signer.trust.timefmt import system_clock

    with state.db.read() as session:
        return stages.coverage(session, system_clock(), days)
