"""What earlier runs of `channel sign` verified and signed, kept so a re-run can skip it.

One file per (subdir, keys, attestation store). Each entry says: this record (sha256 of
its bytes) was attested by this sidecar (sha256 of its bytes, and the change token of the
local file) under this feedstock delegation (its fingerprint), and these are the record's
signatures. The file is authenticated as a whole with HMAC-SHA256 under a key derived from
the first signing key (its ed25519 signature over a fixed string that is not a record, so
never published): only someone who can sign records can write a cache that is accepted,
and they could sign anything anyway. A cache that fails its MAC, was made with other keys
or for another subdir or store, or does not parse, is ignored: its loss costs only time.

Even an accepted entry is reused only when everything it vouches for still holds: the
record's bytes are the same, the attestation is still there unchanged (same token, or the
same bytes when fetched), and the feedstock's delegation verifies today with the same
fingerprint (a revoked key or a changed scope changes it). A poisoned cache can therefore
never make a record signed whose attestation does not verify now.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
from pathlib import Path
from typing import NamedTuple

import msgspec

from signer.trust.signing import MessageSigner
from signer.trust.state import write_atomic

MAGIC = b"cf-sign channel-cache 1\n"
_MAC_DOMAIN = b"cf-sign channel-cache MAC key v1\x00"
MAX_CACHE = 2 * 1024 * 1024 * 1024


class Entry(NamedTuple):
    record: bytes  # sha256 of the record's bytes as served
    token: tuple[int, ...] | None  # local sidecar's change token
    attestation: bytes  # sha256 of the sidecar's bytes
    feedstock: str
    fingerprint: bytes  # of the delegation the sidecar verified under
    signatures: tuple[bytes, ...]  # one per conda-profile key, in key order
    mamba: bytes | None  # mamba-profile signature


class _Body(msgspec.Struct, array_like=True):
    scope: bytes
    entries: dict[str, tuple[bytes, list[int] | None, bytes, str, bytes, list[bytes], bytes | None]]


def mac_key(signer: MessageSigner) -> bytes:
    return hashlib.sha256(_MAC_DOMAIN + signer.sign_message(_MAC_DOMAIN)).digest()


def scope_of(subdir: str, store: str, keys: list[str], mamba: str | None) -> bytes:
    """What a cache file is for; another scope's file is ignored."""
    text = "\x00".join([subdir, store, *keys, "mamba", mamba or ""])
    return hashlib.sha256(text.encode("utf-8")).digest()


def default_cache_path(base: Path, scope: bytes) -> Path:
    return base / "channel-sign" / f"{scope.hex()[:32]}.cache"


def load(path: Path, key: bytes, scope: bytes) -> tuple[dict[str, Entry], str | None]:
    """(entries, why ignored or None). Never raises for a bad or missing file."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CACHE + 1)
    except FileNotFoundError:
        return {}, "no cache yet"
    except OSError as exc:
        return {}, f"cannot read: {exc.strerror}"
    if len(data) > MAX_CACHE or not data.startswith(MAGIC) or len(data) < len(MAGIC) + 32:
        return {}, "not a cache file of this version"
    body, tag = data[len(MAGIC) : -32], data[-32:]
    if not hmac.compare_digest(hmac.new(key, body, hashlib.sha256).digest(), tag):
        return {}, "MAC does not verify (other keys, or modified)"
    try:
        decoded = msgspec.msgpack.decode(body, type=_Body)
    except msgspec.DecodeError:
        return {}, "does not parse"
    if not hmac.compare_digest(decoded.scope, scope):
        return {}, "made for another subdir, store or keys"
    entries = {
        name: Entry(r, tuple(t) if t is not None else None, a, f, fp, tuple(s), m)
        for name, (r, t, a, f, fp, s, m) in decoded.entries.items()
    }
    return entries, None


def save(path: Path, key: bytes, scope: bytes, entries: dict[str, Entry]) -> None:
    body = msgspec.msgpack.encode(
        _Body(scope, {
            name: (e.record, list(e.token) if e.token is not None else None, e.attestation,
                   e.feedstock, e.fingerprint, list(e.signatures), e.mamba)
            for name, e in entries.items()
        })
    )  # fmt: skip
    tag = hmac.new(key, body, hashlib.sha256).digest()
    write_atomic(path, [MAGIC, body, tag], mode=0o600)


def remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
