"""Signed overlay channels (`/v1/admin/channels`): define, list, remove, refresh now.

Defining and removing need `admin` (audit-logged); reading needs `registrar`. The signed
documents themselves are public, under `/trust/channels/<name>/<subdir>/`.
"""

from __future__ import annotations

from fastapi import APIRouter

from signer.service import channels
from signer.service.channels import SubdirSpec
from signer.service.deps import Admin, Registrar, State
from signer.service.schemas import (
    ChannelCreate,
    ChannelList,
    ChannelRefreshResult,
    ChannelView,
    error_responses,
)

router = APIRouter(prefix="/v1/admin/channels", tags=["channels"])

_ERRORS = error_responses(
    {
        400: "Invalid name, subdir or upstream URL",
        404: "Unknown channel",
        409: "The channel is already defined",
    }
)


def _view(state: State, name: str) -> ChannelView:
    with state.db.read() as session:
        return channels.view(channels.get_channel(session, name))


@router.get("", response_model=ChannelList, responses=_ERRORS)
def list_channels(state: State, _actor: Registrar) -> ChannelList:
    with state.db.read() as session:
        return ChannelList(channels=[channels.view(c) for c in channels.list_channels(session)])


@router.post("", status_code=201, response_model=ChannelView, responses=_ERRORS)
def add_channel(body: ChannelCreate, state: State, actor: Admin) -> ChannelView:
    specs = [SubdirSpec(s.subdir, s.upstream, s.current_upstream) for s in body.subdirs]
    with state.publisher.change(actor.name) as change:
        channels.add_channel(change, body.name, specs)
    state.overlay_soon()
    return _view(state, body.name)


@router.get("/{name}", response_model=ChannelView, responses=_ERRORS)
def get_channel(name: str, state: State, _actor: Registrar) -> ChannelView:
    return _view(state, name)


@router.delete("/{name}", status_code=204, responses=_ERRORS)
def remove_channel(name: str, state: State, actor: Admin) -> None:
    with state.publisher.change(actor.name) as change:
        channels.remove_channel(change, name)
    state.overlay_soon()


@router.post("/{name}/refresh", response_model=ChannelRefreshResult, responses=_ERRORS)
def refresh_channel(name: str, state: State, _actor: Admin) -> ChannelRefreshResult:
    """Fetch upstream, sign and publish this channel now; each document's outcome."""
    _view(state, name)  # 404 for an unknown channel
    return ChannelRefreshResult(results=state.overlays.refresh(name))
