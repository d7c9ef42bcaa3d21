"""Staged enforcement: each feedstock's roll-out stage, and the roll-out's coverage.

- `off`: nothing changes for the feedstock's users (the default);
- `observe`: attestations are accepted and reported; channel signing still signs the
  feedstock's unattested records (and reports them);
- `enforce`: channel signing signs only records whose artifact's attestation verifies.

Changing a stage is audit-logged (`feedstock.stage`). Reading it needs no token: channel
signing and mirror operators read it as they read the trust repository.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import distinct, func, select
from sqlalchemy.orm import Session

from signer.service.db.models import Attestation, Feedstock, FeedstockKey
from signer.service.errors import BadRequest, Conflict
from signer.service.publisher import Change
from signer.service.registry import active_keys, get_feedstock
from signer.trust.timefmt import format_time

STAGES = ("off", "observe", "enforce")


def set_stage(change: Change, name: str, stage: str) -> tuple[str, str]:
    """Set `name`'s stage; returns (previous, new)."""
    if stage not in STAGES:
        raise BadRequest(f"stage {stage!r}: expected one of {', '.join(STAGES)}")
    feedstock = get_feedstock(change.session, name)
    previous = feedstock.stage
    if stage == "enforce" and not active_keys(feedstock):
        # Enforcing a feedstock that cannot sign would refuse every record it publishes.
        raise Conflict(f"feedstock {name} has no active key: provision it before enforcing")
    if previous != stage:
        feedstock.stage = stage
        feedstock.stage_since = change.now
        change.audit("feedstock.stage", {"feedstock": name, "from": previous, "to": stage})
    return previous, stage


def since_text(feedstock: Feedstock) -> str | None:
    moment = feedstock.stage_since
    return None if moment is None else format_time(moment)


def view(feedstock: Feedstock) -> dict[str, str | None]:
    return {"name": feedstock.name, "stage": feedstock.stage, "since": since_text(feedstock)}


def stages(session: Session, after: str, limit: int) -> list[dict[str, str | None]]:
    rows = session.scalars(
        select(Feedstock).where(Feedstock.name > after).order_by(Feedstock.name).limit(limit)
    ).all()
    return [view(f) for f in rows]


def coverage(session: Session, now: datetime, days: int) -> dict[str, Any]:
    total = session.scalar(select(func.count()).select_from(Feedstock)) or 0
    provisioned = (
        session.scalar(
            select(func.count(distinct(FeedstockKey.feedstock_id))).where(
                FeedstockKey.revoked_at.is_(None)
            )
        )
        or 0
    )
    since = now - timedelta(days=days)
    signing = (
        session.scalar(
            select(func.count(distinct(Attestation.feedstock))).where(
                Attestation.submitted_at >= since
            )
        )
        or 0
    )
    by_stage = dict(
        session.execute(select(Feedstock.stage, func.count()).group_by(Feedstock.stage)).all()
    )
    return {
        "feedstocks": int(total),
        "provisioned": int(provisioned),
        "signing": int(signing),
        "signing_days": days,
        "off": int(by_stage.get("off", 0)),
        "observe": int(by_stage.get("observe", 0)),
        "enforced": int(by_stage.get("enforce", 0)),
        "attestations": int(session.scalar(select(func.count()).select_from(Attestation)) or 0),
    }
