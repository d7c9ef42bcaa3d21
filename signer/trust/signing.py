"""Adding signatures to envelopes; the private half lives behind a `MessageSigner`."""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

from signer.trust.ed25519 import sign_openpgp
from signer.trust.metadata import Signable, Signature


class MessageSigner(Protocol):
    """An ed25519 private key, wherever it is kept."""

    @property
    def public_key_hex(self) -> str: ...

    def sign_message(self, message: bytes) -> bytes:
        """Raw 64-byte ed25519 signature of `message`."""
        ...


@runtime_checkable
class OpenPGPSigner(Protocol):
    """A signer that makes OpenPGP signatures natively (GnuPG)."""

    def sign_openpgp(self, message: bytes) -> Signature: ...


def make_signature(signer: MessageSigner, message: bytes, *, openpgp: bool) -> Signature:
    if not openpgp:
        return Signature(signer.sign_message(message).hex())
    if isinstance(signer, OpenPGPSigner):
        return signer.sign_openpgp(message)
    headers, sig, fingerprint = sign_openpgp(
        signer.sign_message, bytes.fromhex(signer.public_key_hex), message, int(time.time())
    )
    return Signature(sig, headers, fingerprint)


def sign_envelope(envelope: Signable, signer: MessageSigner, *, openpgp: bool) -> Signature:
    """Sign `envelope.signed` in place (replacing an earlier signature by the same key)."""
    signature = make_signature(signer, envelope.canonical, openpgp=openpgp)
    envelope.signatures[signer.public_key_hex] = signature
    return signature
