"""Private key material: PKCS#8 PEM (optionally encrypted) or a 64-hex ed25519 seed."""

from __future__ import annotations

import os
import re

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from signer.trust.errors import FormatError
from signer.trust.keys import PublicKey

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey

_SEED_RE = re.compile(r"\A[0-9a-fA-F]{64}\Z")
MAX_KEY_FILE = 64 * 1024
KEY_TYPES = ("ed25519", "ecdsa-p256")
LOCAL_SCHEMES = ("file", "env")


# A seed in hex (alone or after a scheme), PEM armour, or a PIN inside a PKCS#11 URI
# (RFC 7512 allows `pin-value`): a KEYREF that is secret material pasted on a command line.
_SEED = re.compile(r"\A\s*([a-z0-9+.-]+:)?\s*[0-9a-fA-F]{64}\s*\Z", re.IGNORECASE)
_SECRET = re.compile(r"-----BEGIN|PRIVATE KEY|pin-value|pin-source=", re.IGNORECASE)
NOT_SHOWN = "KEYREF (not shown)"


def check_keyref_not_secret(keyref: str) -> None:
    """Refuse, without echoing it, a KEYREF that is (or holds) the secret itself."""
    if _SEED.match(keyref) or _SECRET.search(keyref):
        raise FormatError(
            NOT_SHOWN,
            "",
            "looks like secret key material (a seed, a PEM key or a PIN), not a reference "
            "to one: put it in an environment variable and pass env:VAR; it was not printed",
        )


def split_keyref(keyref: str) -> tuple[str, str]:
    """(scheme, location) of a KEYREF; the one parser of `file:PATH` and `env:VAR`.

    Checked first for secret material, so no error after this echoes a secret.
    """
    check_keyref_not_secret(keyref)
    scheme, sep, location = keyref.partition(":")
    if not sep or not scheme:
        # Not echoed: a value without a scheme may be the secret itself, pasted by mistake.
        raise FormatError("KEYREF (not shown)", "", "a KEYREF looks like file:PATH or env:VAR")
    if scheme in LOCAL_SCHEMES and not location:
        raise FormatError(keyref, "", f"expected {scheme}:LOCATION")
    return scheme, location


def new_private_key(keytype: str) -> PrivateKey:
    """A fresh key of `keytype` (ed25519 or ecdsa-p256): the one key generator."""
    if keytype == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if keytype == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    raise FormatError(keytype, "key type", f"expected one of {', '.join(KEY_TYPES)}")


def secret_text(key: PrivateKey) -> str:
    """The private key on one line, for a CI secret variable: the 64-hex ed25519 seed, or
    PKCS#8 PEM with its line breaks written as `\\n` (which `env:` turns back)."""
    seed = ed25519_seed(key)
    if seed is not None:
        return seed.hex()
    return private_pem(key, None).decode("ascii").strip().replace("\n", "\\n")


def read_key_source(scheme: str, location: str) -> tuple[bytes, str]:
    """(key bytes, how to name the source in messages) for `file:` and `env:` KEYREFs."""
    if scheme == "env":
        value = os.environ.get(location)
        if not value:
            raise FormatError(f"env:{location}", "", "environment variable is not set or empty")
        # CI systems often store multi-line secrets with literal "\n".
        return value.replace("\\n", "\n").encode("utf-8"), f"env:{location}"
    try:
        with open(location, "rb") as handle:
            data = handle.read(MAX_KEY_FILE + 1)
    except FileNotFoundError:
        raise FormatError(location, "", "key file not found") from None
    except OSError as exc:
        raise FormatError(location, "", f"cannot read key file: {exc.strerror}") from None
    if len(data) > MAX_KEY_FILE:
        raise FormatError(location, "", "key file too large")
    return data, location


def parse_private_key(data: bytes, source: str, passphrase: bytes | None) -> PrivateKey:
    """Load PEM or a hex seed; `source` names where it came from (never the value)."""
    text = data.strip()
    if _SEED_RE.match(text.decode("ascii", "replace")):
        return ed25519.Ed25519PrivateKey.from_private_bytes(bytes.fromhex(text.decode()))
    if b"-----BEGIN" not in text:
        raise FormatError(source, "", "not a PEM private key or a 64-hex ed25519 seed")
    encrypted = b"ENCRYPTED" in text
    if encrypted and passphrase is None:
        raise FormatError(source, "", "key is encrypted and no passphrase was given")
    try:
        key = serialization.load_pem_private_key(text, passphrase if encrypted else None)
    except ValueError:
        why = "wrong passphrase or corrupt key" if encrypted else "cannot parse the PEM key"
        raise FormatError(source, "", why) from None
    except TypeError as exc:
        raise FormatError(source, "", str(exc)) from None
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1":
        return key
    raise FormatError(source, "", "unsupported key type (ed25519 or ECDSA P-256 only)")


def public_key_of(key: PrivateKey) -> PublicKey:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return PublicKey.ed25519(raw.hex())
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return PublicKey("ecdsa", "ecdsa-sha2-nistp256", pem.decode("ascii"))


def ed25519_seed(key: PrivateKey) -> bytes | None:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
    return None


def private_pem(key: PrivateKey, passphrase: bytes | None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
