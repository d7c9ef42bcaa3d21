"""Ed25519 signatures of the channel layer: raw and OpenPGP-style.

Raw: ed25519 over the canonical bytes. OpenPGP-style: ed25519 over
``SHA256(canon || H || 0x04 0xff || uint32_be(len(H)))`` where H is the hashed part of an
OpenPGP v4 signature packet; a verifier never parses H. Verification goes to libsodium
through PyNaCl (about 2x OpenSSL's speed on this kind of machine).
"""

from __future__ import annotations

import hashlib
import struct
import threading
from collections.abc import Callable

# PyNaCl's compiled module directly, a private name: `nacl.bindings` costs ~5 ms of
# start-up, and this is on the path of every `cf-sign verify`. pyproject.toml bounds PyNaCl
# above for this reason; libsodium has its own one-time initialisation.
from nacl._sodium import ffi as _ffi
from nacl._sodium import lib as _lib

_lib.sodium_init()


def verify_raw(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True when `signature` is a valid ed25519 signature of `message` by `public_key`."""
    if len(public_key) != 32 or len(signature) != 64:
        return False
    signed = signature + message
    out, out_len = _open_buffers(len(signed))
    return bool(_lib.crypto_sign_open(out, out_len, signed, len(signed), public_key) == 0)


_buffers = threading.local()  # libsodium writes the opened message somewhere: reuse it


def _open_buffers(size: int) -> tuple[object, object]:
    buffer = getattr(_buffers, "out", None)
    if buffer is None or len(buffer) < size:
        buffer = _buffers.out = _ffi.new("unsigned char[]", max(size, 1 << 16))
        _buffers.out_len = _ffi.new("unsigned long long *")
    return buffer, _buffers.out_len


def openpgp_digest(message: bytes, other_headers: bytes) -> bytes:
    """The 32-byte digest an OpenPGP v4 ed25519 signature signs."""
    trailer = b"\x04\xff" + struct.pack(">I", len(other_headers))
    return hashlib.sha256(message + other_headers + trailer).digest()


def verify_openpgp(
    public_key: bytes, signature: bytes, message: bytes, other_headers: bytes
) -> bool:
    return verify_raw(public_key, signature, openpgp_digest(message, other_headers))


# --- signing with a raw seed (dev keys, tests, repodata signing at speed) ---


def keypair_from_seed(seed: bytes) -> tuple[bytes, bytes]:
    """(public key, libsodium secret key) for a 32-byte seed."""
    from nacl import bindings

    public, secret = bindings.crypto_sign_seed_keypair(seed)
    return bytes(public), bytes(secret)


def sign_raw(secret_key: bytes, message: bytes) -> bytes:
    """Detached ed25519 signature with a libsodium 64-byte secret key."""
    if len(secret_key) != 64:
        raise ValueError("an ed25519 secret key is 64 bytes")
    # libsodium directly, into a reused buffer (as verify_raw): PyNaCl's wrapper costs
    # about as much as the signing. The signed message is signature || message.
    out, out_len = _open_buffers(len(message) + 64)
    if _lib.crypto_sign(out, out_len, message, len(message), secret_key) != 0:
        raise ValueError("libsodium could not sign")
    return bytes(_ffi.buffer(out, 64))


# --- synthesising the OpenPGP part for a raw ed25519 key ---

_ED25519_OID = bytes.fromhex("2b06010401da470f01")
_KEY_CREATION_TIME = 0  # fixed, so the fingerprint is a function of the key alone


def openpgp_fingerprint(public_key: bytes) -> bytes:
    """v4 fingerprint of the EdDSA public-key packet for `public_key` (created at time 0)."""
    point = b"\x40" + public_key  # native point encoding, 263 bits
    body = (
        b"\x04"
        + struct.pack(">I", _KEY_CREATION_TIME)
        + bytes([22, len(_ED25519_OID)])
        + _ED25519_OID
        + struct.pack(">H", 263)
        + point
    )
    return hashlib.sha1(
        b"\x99" + struct.pack(">H", len(body)) + body, usedforsecurity=False
    ).digest()


def openpgp_hashed_part(fingerprint: bytes, created: int) -> bytes:
    """Hashed part H of a v4 binary-document EdDSA/SHA-256 signature packet.

    Subpackets: issuer fingerprint (33) and signature creation time (2), as GnuPG writes them.
    """
    subpackets = bytes([22, 33, 4]) + fingerprint + bytes([5, 2]) + struct.pack(">I", created)
    return bytes([4, 0x00, 22, 8]) + struct.pack(">H", len(subpackets)) + subpackets


def sign_openpgp(
    sign_digest: Callable[[bytes], bytes], public_key: bytes, message: bytes, created: int
) -> tuple[str, str, str]:
    """(other_headers hex, signature hex, fingerprint hex) made with a raw ed25519 signer."""
    fingerprint = openpgp_fingerprint(public_key)
    headers = openpgp_hashed_part(fingerprint, created)
    signature = sign_digest(openpgp_digest(message, headers))
    return headers.hex(), signature.hex(), fingerprint.hex()
