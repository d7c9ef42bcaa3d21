"""Threshold verification that reports what it counted, not just a bool."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple, TypeVar

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


S = TypeVar("S")


def tally(
    role: str,
    threshold: int,
    authorised: Sequence[str],
    signatures: Iterable[tuple[str, S]],
    check: Callable[[str, S], str | None],
) -> ThresholdResult:
    """The one threshold counter (channel-layer signatures and DSSE envelopes alike).

    `signatures` are (keyid, signature) pairs in the order they are tried; `check` says
    why one does not verify (None: it does). Each authorised key counts once however
    often it signed; signatures by other keys are listed as unknown and never checked.
    """
    allowed = set(authorised)
    valid: list[str] = []
    counted: set[str] = set()
    invalid: dict[str, str] = {}
    unknown: set[str] = set()
    for keyid, signature in signatures:
        if keyid not in allowed:
            unknown.add(keyid)
        elif keyid in counted:
            continue  # a repeated signature by the same key never counts twice
        else:
            reason = check(keyid, signature)
            if reason is None:
                valid.append(keyid)
                counted.add(keyid)
                invalid.pop(keyid, None)
            else:
                invalid[keyid] = reason
    missing = tuple(k for k in authorised if k not in counted and k not in invalid)
    return ThresholdResult(role, threshold, tuple(valid), invalid, missing, tuple(sorted(unknown)))


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

    def check(key: str, sig: Signature) -> str | None:
        return check_signature(key, sig, message, allow_raw=allow_raw, allow_openpgp=allow_openpgp)

    # Delegated keys first, in the delegation's order (unique by construction).
    ordered = [(k, signatures[k]) for k in delegation.pubkeys if k in signatures]
    ordered += [(k, s) for k, s in signatures.items() if k not in delegation.pubkeys]
    return tally(role, delegation.threshold, delegation.pubkeys, ordered, check)
