"""Public keys in securesystemslib's dict form, their keyids, and signature checks.

Channel-layer keys are ed25519 only (conda and mamba verify nothing else); the feedstock
layer also admits ecdsa-sha2-nistp256 keys, e.g. from Azure Key Vault. Kept free of
securesystemslib itself: importing it costs more than a whole `cf-sign verify` may take.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Any, NamedTuple

from signer.trust.ed25519 import verify_raw
from signer.trust.errors import FormatError
from signer.trust.metadata import is_public_key_hex, require_exact_keys

ED25519 = ("ed25519", "ed25519")
ECDSA_P256 = ("ecdsa", "ecdsa-sha2-nistp256")
SUPPORTED = {ED25519, ECDSA_P256}


def olpc_canonical(value: Any) -> str:
    """securesystemslib's canonical JSON (used for keyids): compact, sorted, minimal escaping."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(olpc_canonical(v) for v in value) + "]"
    if isinstance(value, dict):
        items = sorted(value.items())
        return "{" + ",".join(f"{olpc_canonical(k)}:{olpc_canonical(v)}" for k, v in items) + "}"
    raise TypeError(f"cannot canonicalise {type(value).__name__}")


class PublicKey(NamedTuple):
    """A public key; ECDSA keys are known by their material (rule 9), not their spelling.

    `to_dict` and `keyid` use the normal PEM form (what `cryptography` writes for the
    SubjectPublicKeyInfo), so the same key with CRLF line ends or without the final
    newline is one key, with one keyid, everywhere.
    """

    keytype: str
    scheme: str
    public: str  # 64 hex for ed25519, PEM SubjectPublicKeyInfo for ECDSA

    @property
    def normal_public(self) -> str:
        if self.is_ed25519:
            return self.public
        return normal_ecdsa_pem(self.public)

    def to_dict(self) -> dict[str, Any]:
        public = self.normal_public
        return {"keytype": self.keytype, "scheme": self.scheme, "keyval": {"public": public}}

    @property
    def keyid(self) -> str:
        return hashlib.sha256(olpc_canonical(self.to_dict()).encode("utf-8")).hexdigest()

    @property
    def is_ed25519(self) -> bool:
        return (self.keytype, self.scheme) == ED25519

    @classmethod
    def ed25519(cls, public_hex: str) -> PublicKey:
        return cls("ed25519", "ed25519", public_hex)

    @classmethod
    def from_dict(cls, obj: object, source: str, where: str) -> PublicKey:
        data = require_exact_keys(obj, {"keytype", "scheme", "keyval"}, source, where)
        keyval = require_exact_keys(data["keyval"], {"public"}, source, f"{where}.keyval")
        keytype, scheme, public = data["keytype"], data["scheme"], keyval["public"]
        if not isinstance(keytype, str) or not isinstance(scheme, str):
            raise FormatError(source, where, "keytype and scheme must be strings")
        if (keytype, scheme) not in SUPPORTED:
            raise FormatError(source, where, f"unsupported key type/scheme {keytype!r}/{scheme!r}")
        if not isinstance(public, str):
            raise FormatError(source, f"{where}.keyval.public", "expected a string")
        if (keytype, scheme) == ED25519 and not is_public_key_hex(public):
            raise FormatError(source, f"{where}.keyval.public", "expected 64 lowercase hex digits")
        if (keytype, scheme) == ECDSA_P256:
            if not public.lstrip().startswith("-----BEGIN PUBLIC KEY-----"):
                raise FormatError(source, f"{where}.keyval.public", "expected a PEM public key")
            try:
                public = normal_ecdsa_pem(public)
            except ValueError as exc:
                raise FormatError(source, f"{where}.keyval.public", str(exc)) from None
        return cls(keytype, scheme, public)

    def verify(self, signature: bytes, message: bytes) -> bool:
        """True when `signature` (raw ed25519, or DER ECDSA over SHA-256) verifies."""
        if self.is_ed25519:
            return verify_raw(bytes.fromhex(self.public), signature, message)
        return _verify_ecdsa_p256(self.public, signature, message)


_PEM_BEGIN = "-----BEGIN PUBLIC KEY-----"
_PEM_END = "-----END PUBLIC KEY-----"
MAX_PEM = 4096


@lru_cache(maxsize=4096)
def normal_ecdsa_pem(pem: str) -> str:
    """The one PEM spelling of a P-256 SubjectPublicKeyInfo; ValueError if it is not one.

    Exactly one PEM block and nothing around it but whitespace: a key hidden after the
    first block would otherwise be a second spelling of something else.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if len(pem) > MAX_PEM or not pem.isascii():
        raise ValueError("not a PEM public key (too long or not ASCII)")
    text = pem.strip()
    if not (text.startswith(_PEM_BEGIN) and text.endswith(_PEM_END)) or text.count("-----") != 4:
        raise ValueError("expected exactly one PEM PUBLIC KEY block")
    try:
        key = serialization.load_pem_public_key(text.encode("ascii"))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a valid PEM public key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("not an ECDSA P-256 public key")
    spki = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return spki.decode("ascii")


def _verify_ecdsa_p256(pem: str, signature: bytes, message: bytes) -> bool:
    # Imported here: only ECDSA feedstock keys need OpenSSL's EC code.
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_public_key(pem.encode("ascii"))
    except ValueError:
        return False
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        return False
    try:
        key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True
