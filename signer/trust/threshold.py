"""Threshold verification that reports what it counted, not just a bool."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from signer.trust.ed25519 import verify_openpgp, verify_raw
from signer.trust.errors import ThresholdError
from signer.trust.metadata import Delegation, Signature


class ThresholdResult(NamedTuple):
    """Outcome of checking one signature set against one delegation.

    signed:  delegated keys whose signature verified (each key counted once)
    invalid: delegated keys whose signature did not verify, with the reason
    missing: delegated keys with no signature
    unknown: signatures by keys outside the delegation (ignored)
    """

    role: str
    threshold: int
    signed: tuple[str, ...]
    invalid: Mapping[str, str]
    missing: tuple[str, ...]
    unknown: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return len(self.signed) >= self.threshold

    def describe(self) -> str:
        parts = [f"{len(self.signed)} valid, {self.threshold} required, from {self.role} keys"]
        if self.invalid:
            parts.append(
                "invalid: "
                + ", ".join(f"{k[:8]}… ({why})" for k, why in sorted(self.invalid.items()))
            )
        if self.unknown:
            parts.append("not delegated: " + ", ".join(k[:8] + "…" for k in self.unknown))
        if self.missing and not self.ok:
            parts.append("missing: " + ", ".join(k[:8] + "…" for k in self.missing))
        return "; ".join(parts)

    def require(self, subject: str) -> ThresholdResult:
        if not self.ok:
            raise ThresholdError(subject, self.describe())
        return self


def check_signature(
    public_hex: str,
    sig: Signature,
    message: bytes,
    *,
    allow_raw: bool = True,
    allow_openpgp: bool = True,
) -> str | None:
    """None when `sig` is a valid signature of `message`; otherwise why not."""
    if sig.is_openpgp and not allow_openpgp:
        return "OpenPGP-style signature not accepted for this role"
    if not sig.is_openpgp and not allow_raw:
        return "raw signature not accepted for this role"
    public = bytes.fromhex(public_hex)
    signature = bytes.fromhex(sig.signature)
    if sig.other_headers is not None:
        good = verify_openpgp(public, signature, message, bytes.fromhex(sig.other_headers))
    else:
        good = verify_raw(public, signature, message)
    return None if good else "bad signature"


def verify_threshold(
    message: bytes,
    signatures: Mapping[str, Signature],
    delegation: Delegation,
    role: str,
    *,
    allow_raw: bool = True,
    allow_openpgp: bool = True,
) -> ThresholdResult:
    """Count the valid signatures over `message` by the keys of `delegation`."""
    signed: list[str] = []
    invalid: dict[str, str] = {}
    missing: list[str] = []
    for key in delegation.pubkeys:  # unique by construction: each key counts once
        sig = signatures.get(key)
        if sig is None:
            missing.append(key)
            continue
        reason = check_signature(
            key, sig, message, allow_raw=allow_raw, allow_openpgp=allow_openpgp
        )
        if reason is None:
            signed.append(key)
        else:
            invalid[key] = reason
    authorised = set(delegation.pubkeys)
    unknown = tuple(sorted(k for k in signatures if k not in authorised))
    return ThresholdResult(
        role, delegation.threshold, tuple(signed), invalid, tuple(missing), unknown
    )
