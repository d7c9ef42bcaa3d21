"""Adding signatures to envelopes; the private half lives behind a signer protocol.

One envelope signer (`sign_envelope`) for everything that signs channel-layer or
delegation documents: the service, `delegations publish`, `metadata sign`, ceremonies and
the development repository. What kind of signature it makes is the signer's business:
`RawSigner` (key_mgr, pkg_mgr, delegations, repodata) or `OpenPGPStyleSigner` (roots,
which conda reads only in that form); GnuPG and tokens bring their own.
"""

from __future__ import annotations

import time
from typing import Protocol

from signer.trust.ed25519 import sign_openpgp
from signer.trust.metadata import Signable, Signature


class MessageSigner(Protocol):
    """An ed25519 private key that makes raw signatures, wherever it is kept."""

    @property
    def public_key_hex(self) -> str: ...

    def sign_message(self, message: bytes) -> bytes:
        """Raw 64-byte ed25519 signature of `message`."""
        ...


class EnvelopeSigner(Protocol):
    """Makes the signature object of a signable envelope (raw or OpenPGP-style)."""

    @property
    def public_key_hex(self) -> str: ...

    def signature(self, message: bytes) -> Signature: ...


class RawSigner:
    """Raw ed25519 signatures (`{"signature": hex}`) by a MessageSigner."""

    def __init__(self, key: MessageSigner) -> None:
        self.key = key

    @property
    def public_key_hex(self) -> str:
        return self.key.public_key_hex

    @property
    def keyref(self) -> str:
        """How the key was named (its KEYREF), for messages."""
        return str(getattr(self.key, "keyref", self.public_key_hex))

    def sign_message(self, message: bytes) -> bytes:
        return self.key.sign_message(message)

    def signature(self, message: bytes) -> Signature:
        return Signature(self.key.sign_message(message).hex())


class OpenPGPStyleSigner:
    """OpenPGP-style signatures by a raw ed25519 key, with a synthesised header (section 3)."""

    def __init__(self, key: MessageSigner) -> None:
        self.key = key

    @property
    def public_key_hex(self) -> str:
        return self.key.public_key_hex

    def signature(self, message: bytes) -> Signature:
        headers, sig, fingerprint = sign_openpgp(
            self.key.sign_message, bytes.fromhex(self.key.public_key_hex), message, int(time.time())
        )
        return Signature(sig, headers, fingerprint)


def envelope_signer(key: MessageSigner, *, openpgp: bool) -> EnvelopeSigner:
    """`key` making OpenPGP-style signatures (roots) or raw ones (everything else)."""
    return OpenPGPStyleSigner(key) if openpgp else RawSigner(key)


def sign_envelope(envelope: Signable, signer: EnvelopeSigner) -> Signature:
    """Sign `envelope.signed` in place (replacing an earlier signature by the same key).

    `signer` decides the form: signer.keys' `channel_signer` (raw, as conda requires for
    key_mgr, pkg_mgr and the delegations) or `root_signer` (OpenPGP-style, for roots).
    """
    signature = signer.signature(envelope.canonical)
    envelope.signatures[signer.public_key_hex] = signature
    return signature


def make_signature(signer: MessageSigner, message: bytes, *, openpgp: bool) -> Signature:
    """The older form of choosing a signature kind; prefer an EnvelopeSigner."""
    if not openpgp:
        return RawSigner(signer).signature(message)
    native = getattr(signer, "sign_openpgp", None)  # GnuPG makes its own
    if native is not None:
        made: Signature = native(message)
        return made
    return OpenPGPStyleSigner(signer).signature(message)
