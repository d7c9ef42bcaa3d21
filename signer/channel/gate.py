"""The one place channel signing and mirroring ask the trust repository anything.

A small adapter over the verifier session (`signer.client.TrustSession`, the architecture
issue's API): `delegation(feedstock)` and `verify_attestation(...)`. Until that session is
on this branch, the same checks are made here with the trust core's functions; callers see
only this class, so switching over touches nothing else.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from pathlib import Path
from typing import NamedTuple

from signer.fetch import TrustSource, default_state_dir, open_source
from signer.trust.attestation import AttestationResult, parse_sidecar, verify_sidecar
from signer.trust.canonical import canonical_bytes
from signer.trust.errors import FormatError, VerificationError
from signer.trust.feedstocks import ResolvedDelegation, resolve_feedstock
from signer.trust.jsonload import MAX_DELEGATING, read_file
from signer.trust.metadata import Delegation
from signer.trust.repository import TrustedKeyMgr, TrustedRoot, choose_anchor, load_key_mgr
from signer.trust.repository import update_root as _update_root
from signer.trust.state import TrustState
from signer.trust.timefmt import DEFAULT_CLOCK_SKEW, system_clock


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
    body = canonical_bytes({"feedstock": resolved.feedstock, **resolved.delegation.to_dict()})
    return hashlib.sha256(body).digest()


class Gate:
    """Verified root, key_mgr and feedstock delegations of one trust repository."""

    def __init__(
        self,
        source: TrustSource,
        anchor_bytes: bytes | None,
        anchor_name: str,
        state: TrustState | None,
        config: GateConfig | None = None,
    ) -> None:
        self.source = source
        self._anchor = anchor_bytes
        self._anchor_name = anchor_name
        self.state = state
        self.config = config or GateConfig()
        self._root: TrustedRoot | None = None
        self._key_mgr: TrustedKeyMgr | None = None
        self._delegations: dict[str, ResolvedDelegation | VerificationError] = {}

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
        source = open_source(location, timeout=config.timeout)
        if not source.location.startswith("http") and not Path(location).is_dir():
            raise FormatError(location, "trust", "not a directory or an http(s) URL")
        state = TrustState(state_dir or default_state_dir(source.location))
        anchor = read_file(str(root), MAX_DELEGATING) if root is not None else None
        return cls(source, anchor, str(root) if root else "root", state, config)

    @property
    def now(self) -> datetime:
        return self.config.at or system_clock()

    def refresh(self) -> None:
        """Root chain and key_mgr, once; VerificationError when they do not verify."""
        if self._key_mgr is not None:
            return
        anchor = choose_anchor(self._anchor, self._anchor_name, self.state)
        skew = self.config.clock_skew
        self._root = _update_root(self.source.fetch, anchor, self.now, skew, self.state)
        self._key_mgr = load_key_mgr(self.source.fetch, self._root, self.now, skew, self.state)

    @property
    def root(self) -> TrustedRoot:
        self.refresh()
        assert self._root is not None
        return self._root

    @property
    def key_mgr(self) -> TrustedKeyMgr:
        self.refresh()
        assert self._key_mgr is not None
        return self._key_mgr

    @property
    def pkg_mgr(self) -> Delegation:
        return self.key_mgr.meta.pkg_mgr_keys

    def delegation(self, feedstock: str) -> ResolvedDelegation:
        """The verified delegation of `feedstock`; failures are remembered as well."""
        known = self._delegations.get(feedstock)
        if known is None:
            try:
                known = resolve_feedstock(
                    self.source.fetch, self.root.meta, feedstock, self.now,
                    self.config.clock_skew, self.state,
                )  # fmt: skip
            except VerificationError as exc:
                known = exc
            self._delegations[feedstock] = known
        if isinstance(known, VerificationError):
            raise known
        return known

    def fingerprint(self, feedstock: str) -> bytes:
        return delegation_fingerprint(self.delegation(feedstock))

    def verify_attestation(
        self, sidecar: bytes, *, filename: str, sha256: str, subdir: str, package: str, where: str
    ) -> Attested:
        """Rule 4 minus the archive: delegation, threshold, scope, digest, subject, subdir.

        A sidecar that does not parse is a failed check here (it was looked up, not named
        by the user): VerificationError with check `format`.
        """
        try:
            hint = parse_sidecar(sidecar, where).feedstock
            resolved = self.delegation(hint)
            result = verify_sidecar(
                sidecar, filename, sha256, resolved.delegation, where, package_name=package
            )
        except FormatError as exc:
            detail = f"{exc.field}: {exc.reason}" if exc.field else exc.reason
            raise VerificationError(filename, "format", detail) from None
        _check_subdir(result, filename, subdir)
        return Attested(hint, delegation_fingerprint(resolved), result)


def _check_subdir(result: AttestationResult, filename: str, subdir: str) -> None:
    # The trust core binds the subdir inside the signed statement once the hardening issue
    # lands (section 3); until then the binding is the lookup path attestations/<subdir>/.
    bound = getattr(result, "subdir", None)
    if isinstance(bound, str) and bound != subdir:
        raise VerificationError(
            filename, "subdir", f"attested for subdir {bound!r}, the record is in {subdir!r}"
        )
