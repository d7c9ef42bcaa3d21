"""`gpg:FINGERPRINT`: GnuPG keys (root keys of admins), through securesystemslib's GPGSigner.

GnuPG makes OpenPGP signatures natively, so these keys sign roots only: conda reads nothing
else from a root, and raw signatures (key_mgr, repodata) need the bare ed25519 key.
The keyring is GnuPG's own (`$GNUPGHOME` or ~/.gnupg).
"""

from __future__ import annotations

import re

from securesystemslib.signer import GPGSigner

from signer.keys.handle import SigningKey
from signer.keys.registry import KeyRequest
from signer.trust.errors import FormatError
from signer.trust.keys import PublicKey
from signer.trust.metadata import Signature
from signer.trust.signing import EnvelopeSigner

_FPR = re.compile(r"\A[0-9a-fA-F]{40}\Z")


class GpgKey(SigningKey):
    """A GnuPG ed25519 key: makes OpenPGP-style signatures, never raw ones."""

    KIND = "a GnuPG key (OpenPGP-style signatures, roots only)"

    def __init__(self, keyref: str, signer: GPGSigner, public: PublicKey, fingerprint: str) -> None:
        super().__init__(keyref, public)
        self.signer = signer
        self.fingerprint = fingerprint

    def root_signer(self) -> EnvelopeSigner:
        return self

    def signature(self, message: bytes) -> Signature:
        return self.sign_openpgp(message)

    def sign_message(self, message: bytes) -> bytes:
        raise FormatError(self.keyref, "", "GnuPG keys make OpenPGP-style signatures (roots) only")

    def sign_openpgp(self, message: bytes) -> Signature:
        try:
            made = self.signer.sign(message)
        except Exception as exc:  # gpg's failures surface as assorted exception types
            raise FormatError(self.keyref, "", f"GnuPG could not sign: {exc}") from None
        headers = made.unrecognized_fields.get("other_headers")
        if not isinstance(headers, str):
            raise FormatError(self.keyref, "", "GnuPG signature lacks its hashed headers")
        return Signature(made.signature, headers, self.fingerprint)


def load_gpg_key(keyref: str) -> GpgKey:
    fingerprint = keyref.partition(":")[2]
    if not _FPR.match(fingerprint):
        raise FormatError(keyref, "", "expected gpg:<40-hex fingerprint>")
    fingerprint = fingerprint.lower()
    try:
        uri, key = GPGSigner.import_(fingerprint)
    except Exception as exc:  # no gpg binary, key not in keyring, ...
        raise FormatError(keyref, "", f"cannot load the GnuPG key: {exc}") from None
    public = key.keyval.get("public", {})
    q = public.get("q") if isinstance(public, dict) else None
    if key.scheme != "pgp+eddsa-ed25519" or not isinstance(q, str) or len(q) != 64:
        raise FormatError(keyref, "", "not an ed25519 GnuPG key (conda verifies ed25519 only)")
    signer = GPGSigner.from_priv_key_uri(uri, key)
    return GpgKey(keyref, signer, PublicKey.ed25519(q), fingerprint)


def load(request: KeyRequest) -> GpgKey:
    return load_gpg_key(request.keyref)
