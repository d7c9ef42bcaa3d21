"""Root chain: self-signed trust anchors and the N -> N+1 update rule."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import NamedTuple, Protocol

from signer.trust.errors import ExpiredError, VerificationError
from signer.trust.metadata import Root, SignedMetadata
from signer.trust.threshold import ThresholdResult, verify_threshold
from signer.trust.timefmt import DEFAULT_CLOCK_SKEW, format_time, parse_time


class RootUpdate(NamedTuple):
    """A verified step of the chain: what each threshold counted."""

    version: int
    by_old_keys: ThresholdResult
    by_new_keys: ThresholdResult


def _root(doc: SignedMetadata) -> Root:
    if not isinstance(doc.meta, Root):
        raise VerificationError(doc.source, "type", f"expected a root, got {doc.role}")
    return doc.meta


def verify_root_self(doc: SignedMetadata) -> ThresholdResult:
    """A trust anchor must meet the threshold of its own root keys."""
    root = _root(doc)
    return verify_threshold(
        doc.envelope.canonical, doc.envelope.signatures, root.root_keys, "root"
    ).require(doc.source)


def verify_root_update(trusted: SignedMetadata, candidate: SignedMetadata) -> RootUpdate:
    """`candidate` (N+1) must meet the thresholds of the OLD and of its OWN root keys."""
    old, new = _root(trusted), _root(candidate)
    if new.version != old.version + 1:
        raise VerificationError(
            candidate.source,
            "version",
            f"root update must be version {old.version + 1}, got {new.version}",
        )
    message = candidate.envelope.canonical
    sigs = candidate.envelope.signatures
    by_old = verify_threshold(message, sigs, old.root_keys, f"v{old.version} root")
    by_old.require(candidate.source)
    by_new = verify_threshold(message, sigs, new.root_keys, f"v{new.version} root")
    by_new.require(candidate.source)
    return RootUpdate(new.version, by_old, by_new)


class Expiring(Protocol):
    """Any signed document: channel layer or feedstock layer."""

    @property
    def expiration(self) -> str: ...


def check_not_expired(
    meta: Expiring,
    subject: str,
    now: datetime,
    skew: timedelta = DEFAULT_CLOCK_SKEW,
) -> None:
    """Freeze-attack guard (rule 2): fail once `now` is past expiration by more than `skew`."""
    if now - skew > parse_time(meta.expiration, subject, "expiration"):
        raise ExpiredError(subject, f"expired at {meta.expiration} (now {format_time(now)})")
