"""UTC timestamps in the one format of the contract, and the verifier's clock."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from signer.trust.errors import FormatError

Clock = Callable[[], datetime]

# [0-9], not \d: \d also matches fullwidth and other non-ASCII digits (rule 8).
_TIME_RE = re.compile(r"\A([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})Z\Z")
DEFAULT_CLOCK_SKEW = timedelta(seconds=60)


def system_clock() -> datetime:
    return datetime.now(UTC)


def fixed_clock(when: datetime | str) -> Clock:
    """A clock stuck at `when` (tests, and verifying archived metadata)."""
    moment = parse_time(when, "clock", "time") if isinstance(when, str) else when
    return lambda: moment


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: object, source: str, field: str) -> datetime:
    match = _TIME_RE.match(text) if isinstance(text, str) else None
    if match is None:
        raise FormatError(source, field, f"expected UTC time YYYY-MM-DDTHH:MM:SSZ, got {text!r}")
    try:
        # Not strptime: it drags in locale and calendar machinery at start-up.
        year, month, day, hour, minute, second = map(int, match.groups())
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError as exc:
        raise FormatError(source, field, f"invalid time {text!r}: {exc}") from None


def expiry_after(days: float, now: datetime | None = None) -> str:
    """The expiration string `days` from now (whole seconds)."""
    if days < 0:
        raise ValueError("expiry takes a non-negative number of days")
    start = (now or system_clock()).replace(microsecond=0)
    return format_time(start + timedelta(days=days))


def timedelta_seconds(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)
