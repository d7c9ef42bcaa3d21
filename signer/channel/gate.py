"""The one place channel signing and mirroring ask the trust repository anything.

A thin adapter over the verifier session (`signer.client.TrustSession`): the delegation of
a feedstock, and an attestation check that also returns the fingerprint of the delegation
it was checked against (what the signing cache keys on), with sidecar parse errors turned
into failed checks (a sidecar that was looked up is a document, not the user's input).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from pathlib import Path
from typing import NamedTuple

from signer.client import SessionConfig, TrustSession
from signer.trust.attestation import AttestationResult
from signer.trust.canonical import canonical_bytes_fast
from signer.trust.errors import FormatError, VerificationError
from signer.trust.feedstocks import ResolvedDelegation
from signer.trust.metadata import Delegation
from signer.trust.timefmt import DEFAULT_CLOCK_SKEW


class GateConfig(NamedTuple):
    clock_skew: timedelta = DEFAULT_CLOCK_SKEW
    timeout: float = 20.0
    at: datetime | None = None


class Attested(NamedTuple):
    """A verified attestation, and the fingerprint of the delegation it was checked against."""

    feedstock: str
    fingerprint: bytes  # sha256 over the feedstock name and its delegation's canonical bytes
    result: AttestationResult


def delegation_fingerprint(resolved: ResolvedDelegation) -> bytes:
    # The same bytes as canonical_bytes (orjson's path, taken when it gives exactly those).
    body = canonical_bytes_fast({"feedstock": resolved.feedstock, **resolved.delegation.to_dict()})
    return hashlib.sha256(body).digest()


class Gate:
    """Verified root, key_mgr and feedstock delegations of one trust repository."""

    def __init__(self, session: TrustSession) -> None:
        self.session = session
        self._fingerprints: dict[str, tuple[ResolvedDelegation, bytes]] = {}

    @classmethod
    def open(
        cls,
        location: str,
        *,
        root: Path | None = None,
        state_dir: Path | None = None,
        config: GateConfig | None = None,
    ) -> Gate:
        config = config or GateConfig()
        session = TrustSession.open(
            location, root, state_dir, SessionConfig(config.clock_skew, config.timeout, config.at)
        )
        return cls(session)

    @property
    def location(self) -> str:
        return self.session.location

    def refresh(self) -> None:
        """Root chain, key_mgr, pkg_mgr, once; VerificationError when they do not verify."""
        self.session.refresh()

    @property
    def pkg_mgr(self) -> Delegation:
        return self.session.key_mgr.meta.pkg_mgr_keys

    def delegation(self, feedstock: str) -> ResolvedDelegation:
        return self.session.delegation(feedstock)

    def fingerprint(self, feedstock: str) -> bytes:
        resolved = self.session.delegation(feedstock)  # cached by the session
        known = self._fingerprints.get(feedstock)
        if known is None or known[0] is not resolved:
            known = (resolved, delegation_fingerprint(resolved))
            self._fingerprints[feedstock] = known
        return known[1]

    def verify_attestation(
        self, sidecar: bytes, *, filename: str, sha256: str, subdir: str, package: str, where: str
    ) -> Attested:
        """Rule 4 minus the archive: delegation, threshold, scope, digest, subject, subdir."""
        try:
            result = self.session.verify_attestation(
                sidecar, filename=filename, sha256=sha256, subdir=subdir, package=package,
                where=where,
            )  # fmt: skip
        except FormatError as exc:
            detail = f"{exc.field}: {exc.reason}" if exc.field else exc.reason
            raise VerificationError(filename, "format", detail) from None
        _check_subdir(result, filename, subdir)
        return Attested(result.feedstock, self.fingerprint(result.feedstock), result)


def _check_subdir(result: AttestationResult, filename: str, subdir: str) -> None:
    # The session checks the statement's subdir once the core binds it (section 3, the
    # hardening issue); until then the binding is the lookup path attestations/<subdir>/.
    bound = getattr(result, "subdir", None)
    if isinstance(bound, str) and bound != subdir:
        raise VerificationError(
            filename, "subdir", f"attested for subdir {bound!r}, the record is in {subdir!r}"
        )
