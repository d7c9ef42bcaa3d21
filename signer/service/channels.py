"""Signed overlay channels: their definitions in the registry (DESIGN.md section 10).

An admin adds a channel (a name, and per subdir upstream's repodata URL, optionally its
`current_repodata.json`); `overlays.py` signs and publishes it. Adding and removing are
audit-logged changes; the figures of the last refresh live beside the definition, so every
replica's `/metrics` and `channel list` report the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from signer.channel.overlay import check_channel_name, check_subdir
from signer.service.db.models import Channel, ChannelSubdir
from signer.service.errors import BadRequest, Conflict, NotFound
from signer.service.publisher import Change
from signer.service.schemas import ChannelSubdirView, ChannelView
from signer.trust.errors import FormatError
from signer.trust.timefmt import format_time

MAX_URL = 2048
_DOCUMENT_SUFFIXES = (".json", ".json.zst")


@dataclass(frozen=True)
class SubdirSpec:
    subdir: str
    upstream: str
    current_upstream: str | None = None


def check_upstream(url: str, field: str) -> str:
    """An http(s) URL of a repodata document (`.json` or `.json.zst`), or BadRequest."""
    if len(url) > MAX_URL or any(ord(c) < 0x21 or c == "\x7f" for c in url):
        raise BadRequest(f"{field}: not a URL (too long, or spaces/control characters)")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest(f"{field}: {url!r} is not an http(s) URL")
    if parts.query or parts.fragment or not parts.path.endswith(_DOCUMENT_SUFFIXES):
        raise BadRequest(f"{field}: {url!r} does not name a .json or .json.zst document")
    return url


def pair_specs(
    subdirs: Sequence[str], upstreams: Sequence[str], currents: Sequence[str] = ()
) -> list[SubdirSpec]:
    """Subdirs and their URLs given side by side: one URL per subdir (in order), or one
    channel URL for all (`<url>/<subdir>/repodata.json`, `.../current_repodata.json`)."""

    def urls(given: Sequence[str], field: str, document: str) -> list[str | None]:
        if not given:
            return [None] * len(subdirs)
        if len(given) == 1 and not given[0].endswith(_DOCUMENT_SUFFIXES):
            return [f"{given[0].rstrip('/')}/{s}/{document}" for s in subdirs]
        if len(given) == len(subdirs):
            return list(given)
        raise FormatError(
            "channel", field,
            f"{len(given)} URLs for {len(subdirs)} subdirs: give one per subdir, in order, "
            "or one channel URL",
        )  # fmt: skip

    if not subdirs:
        raise FormatError("channel", "subdir", "at least one subdir")
    if not upstreams:
        raise FormatError("channel", "upstream", "each subdir needs its upstream URL")
    ups = urls(upstreams, "upstream", "repodata.json")
    curs = urls(currents, "current upstream", "current_repodata.json")
    return [SubdirSpec(s, u or "", c) for s, u, c in zip(subdirs, ups, curs, strict=True)]


def _checked(name: str, specs: Sequence[SubdirSpec]) -> list[SubdirSpec]:
    try:
        check_channel_name(name, "channel")
        for spec in specs:
            check_subdir(spec.subdir, f"channel {name}")
    except FormatError as exc:
        raise BadRequest(f"{exc.field}: {exc.reason}", code="invalid_name") from None
    if not specs:
        raise BadRequest("subdirs: at least one subdir with its upstream URL")
    seen: set[str] = set()
    for i, spec in enumerate(specs):
        if spec.subdir in seen:
            raise BadRequest(f"subdirs[{i}]: subdir {spec.subdir} given twice")
        seen.add(spec.subdir)
        check_upstream(spec.upstream, f"subdirs[{i}].upstream")
        if spec.current_upstream is not None:
            check_upstream(spec.current_upstream, f"subdirs[{i}].current_upstream")
    return list(specs)


def get_channel(session: Session, name: str) -> Channel:
    channel = session.scalars(select(Channel).where(Channel.name == name)).first()
    if channel is None:
        raise NotFound(f"channel {name!r} is not defined", code="unknown_channel")
    return channel


def list_channels(session: Session) -> list[Channel]:
    return list(session.scalars(select(Channel).order_by(Channel.name)).all())


def add_channel(change: Change, name: str, specs: Sequence[SubdirSpec]) -> Channel:
    specs = _checked(name, specs)
    session = change.session
    if session.scalars(select(Channel.id).where(Channel.name == name)).first() is not None:
        raise Conflict(f"channel {name!r} is already defined (remove it first)")
    channel = Channel(name=name, created_at=change.now, created_by=change.actor)
    channel.subdirs = [
        ChannelSubdir(subdir=s.subdir, upstream=s.upstream, current_upstream=s.current_upstream)
        for s in specs
    ]
    session.add(channel)
    session.flush()
    change.audit(
        "channel.add",
        {
            "channel": name,
            "subdirs": {
                s.subdir: {"upstream": s.upstream, "current_upstream": s.current_upstream}
                for s in specs
            },
        },
    )
    return channel


def remove_channel(change: Change, name: str) -> None:
    """The definition goes; each replica's next overlay pass removes the published files."""
    channel = get_channel(change.session, name)
    change.session.delete(channel)
    change.audit("channel.remove", {"channel": name})


def _utc(moment: datetime | None) -> str | None:
    return None if moment is None else format_time(moment)


def coverage(row: ChannelSubdir) -> float:
    return row.attested / row.records if row.records else 1.0


def view(channel: Channel) -> ChannelView:
    return ChannelView(
        name=channel.name,
        created_at=_utc(channel.created_at) or "",
        created_by=channel.created_by,
        subdirs=[
            ChannelSubdirView(
                subdir=row.subdir,
                upstream=row.upstream,
                current_upstream=row.current_upstream,
                refreshed_at=_utc(row.refreshed_at),
                published_at=_utc(row.published_at),
                records=row.records,
                attested=row.attested,
                observed=row.observed,
                unattested=row.unattested,
                refused=row.refused,
                coverage=round(coverage(row), 6),
                lag_seconds=round(row.lag_seconds, 3),
                error=row.error,
            )
            for row in channel.subdirs
        ],
    )
