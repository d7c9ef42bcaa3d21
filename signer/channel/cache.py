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

Stored compactly, so that a re-run over 300,000 records costs little beyond a hash and a
stat per record: an entry is one packed byte string compared as bytes, and names a *row*
(feedstock, delegation fingerprint) that a run checks once, not once per record.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import struct
from pathlib import Path
from typing import NamedTuple

import msgspec

from signer.channel.attestations import TOKEN
from signer.client.session import BinKey
from signer.trust.feedstocks import FeedstockBin, FeedstockDelegation, VerifiedBin
from signer.trust.keys import PublicKey
from signer.trust.signing import MessageSigner
from signer.trust.state import write_atomic
from signer.trust.threshold import ThresholdResult

MAGIC = b"cf-sign channel-cache 2\n"
_MAC_DOMAIN = b"cf-sign channel-cache MAC key v1\x00"
MAX_CACHE = 2 * 1024 * 1024 * 1024

# One entry as bytes, compared without unpacking on the hot path: record sha256 (32),
# sidecar sha256 (32), token flag (1), token (5 x int64), the count of conda-profile
# signatures, whether a mamba one follows, the signature length, the signatures, and last
# the entry's feedstock row (uint32).
_HEAD = struct.Struct("<32s32sB" + TOKEN.format.lstrip("<") + "BBB")
RECORD = slice(0, 32)
ATTESTATION = slice(32, 64)
TOKEN_AT = slice(64, 105)  # flag and token: b"\x01" + TOKEN.pack(...) for a local sidecar
ROW_AT = slice(-4, None)
SIGS_AT = _HEAD.size


class Entry(NamedTuple):
    record: bytes  # sha256 of the record's bytes as served
    token: tuple[int, ...] | None  # local sidecar's change token
    attestation: bytes  # sha256 of the sidecar's bytes
    feedstock: str
    fingerprint: bytes  # of the delegation the sidecar verified under
    signatures: tuple[bytes, ...]  # one per conda-profile key, in key order
    mamba: bytes | None  # mamba-profile signature


class Row(NamedTuple):
    """A feedstock and the fingerprint of the delegation entries were verified under."""

    feedstock: str
    fingerprint: bytes


class _Body(msgspec.Struct, array_like=True):
    scope: bytes
    rows: list[tuple[str, bytes]]
    entries: dict[str, bytes]


class Cache:
    """A cache file's contents: rows (feedstock, fingerprint) and packed entries by file."""

    def __init__(self, rows: list[Row] | None = None, entries: dict[str, bytes] | None = None):
        self.rows: list[Row] = rows or []
        self.entries: dict[str, bytes] = entries or {}
        self._row_of = {row: i for i, row in enumerate(self.rows)}

    def row(self, feedstock: str, fingerprint: bytes) -> int:
        found = self._row_of.get(Row(feedstock, fingerprint))
        if found is None:
            found = self._row_of[Row(feedstock, fingerprint)] = len(self.rows)
            self.rows.append(Row(feedstock, fingerprint))
        return found

    def pack(self, entry: Entry) -> bytes:
        row = self.row(entry.feedstock, entry.fingerprint)
        return pack_partial(entry) + row.to_bytes(4, "little")

    def unpack(self, blob: bytes) -> Entry:
        record, att, has_token, *token = _HEAD.unpack_from(blob)[:8]
        sigs, mamba = signatures_of(blob)
        feedstock, fingerprint = self.rows[row_of(blob)]
        return Entry(record, tuple(token) if has_token else None, att, feedstock, fingerprint,
                     sigs, mamba)  # fmt: skip


def pack_partial(entry: Entry) -> bytes:
    """An entry packed without its row (4 bytes the cache appends)."""
    sigs = (*entry.signatures, entry.mamba) if entry.mamba is not None else entry.signatures
    size = len(sigs[0]) if sigs else 0
    if any(len(s) != size for s in sigs) or size > 255:
        raise ValueError("the signatures of an entry have one length")
    head = _HEAD.pack(
        entry.record, entry.attestation, entry.token is not None, *(entry.token or (0,) * 5),
        len(entry.signatures), entry.mamba is not None, size,
    )  # fmt: skip
    return head + b"".join(sigs)


def _little(raw: bytes) -> int:
    return int.from_bytes(raw, "little")


def row_of(blob: bytes) -> int:
    return _little(blob[ROW_AT])


def signatures_of(blob: bytes) -> tuple[tuple[bytes, ...], bytes | None]:
    """(conda-profile signatures, mamba signature) of a packed entry."""
    count, has_mamba, size = blob[SIGS_AT - 3], blob[SIGS_AT - 2], blob[SIGS_AT - 1]
    sigs = tuple(blob[SIGS_AT + i * size : SIGS_AT + (i + 1) * size] for i in range(count))
    mamba = blob[SIGS_AT + count * size : SIGS_AT + (count + 1) * size] if has_mamba else None
    return sigs, mamba


def packed_length(keys: int, mamba: bool, size: int = 64) -> int:
    return SIGS_AT + size * (keys + mamba) + 4


def mac_key(signer: MessageSigner) -> bytes:
    return hashlib.sha256(_MAC_DOMAIN + signer.sign_message(_MAC_DOMAIN)).digest()


def scope_of(subdir: str, store: str, keys: list[str], mamba: str | None) -> bytes:
    """What a cache file is for; another scope's file is ignored."""
    text = "\x00".join([subdir, store, *keys, "mamba", mamba or ""])
    return hashlib.sha256(text.encode("utf-8")).digest()


def default_cache_path(base: Path, scope: bytes) -> Path:
    return base / "channel-sign" / f"{scope.hex()[:32]}.cache"


def read(path: Path, key: bytes, scope: bytes) -> tuple[Cache, str | None]:
    """(cache, why ignored or None). Never raises for a bad or missing file."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CACHE + 1)
    except FileNotFoundError:
        return Cache(), "no cache yet"
    except OSError as exc:
        return Cache(), f"cannot read: {exc.strerror}"
    if len(data) > MAX_CACHE or not data.startswith(MAGIC) or len(data) < len(MAGIC) + 32:
        return Cache(), "not a cache file of this version"
    body, tag = memoryview(data)[len(MAGIC) : -32], data[-32:]
    if not hmac.compare_digest(hmac.new(key, body, hashlib.sha256).digest(), tag):
        return Cache(), "MAC does not verify (other keys, or modified)"
    try:
        decoded = msgspec.msgpack.decode(body, type=_Body)
    except msgspec.DecodeError:
        return Cache(), "does not parse"
    if not hmac.compare_digest(decoded.scope, scope):
        return Cache(), "made for another subdir, store or keys"
    # Entries are checked where they are used (length, row number): a file only its
    # writer's keys can MAC holds what that writer packed.
    return Cache([Row(f, fp) for f, fp in decoded.rows], decoded.entries), None


def write(path: Path, key: bytes, scope: bytes, cache: Cache) -> None:
    """`cache` with only the rows its entries use."""
    used = sorted({b[ROW_AT] for b in cache.entries.values()}, key=_little)
    if len(used) != len(cache.rows):
        renumber = {old: new.to_bytes(4, "little") for new, old in enumerate(used)}
        entries = {n: b[:-4] + renumber[b[ROW_AT]] for n, b in cache.entries.items()}
        cache = Cache([cache.rows[_little(i)] for i in used], entries)
    rows = [(r.feedstock, r.fingerprint) for r in cache.rows]
    body = msgspec.msgpack.encode(_Body(scope, rows, cache.entries))
    tag = hmac.new(key, body, hashlib.sha256).digest()
    write_atomic(path, [MAGIC, body, tag], mode=0o600)


def load(path: Path, key: bytes, scope: bytes) -> tuple[dict[str, Entry], str | None]:
    """`read`, every entry unpacked."""
    cache, note = read(path, key, scope)
    return {name: cache.unpack(blob) for name, blob in cache.entries.items()}, note


def save(path: Path, key: bytes, scope: bytes, entries: dict[str, Entry]) -> None:
    cache = Cache()
    cache.entries = {name: cache.pack(e) for name, e in entries.items()}
    write(path, key, scope, cache)


# --------------------------------------------------------------------------- verified bins
#
# Beside the cache, `<name>.bins` keeps the feedstock bins the last run verified, with the
# key the session files them under (bin id, the index entry's version and sha256, root's
# key_mgr keys and threshold). A run hands them to its session (`adopt_bins`), which uses
# one only when the index it has just fetched and verified pins that very entry under the
# same keys, and checks expiry and rollback from the stored values on every use: the
# session's rule for its own verified bins, in its one place. The file is MAC'd like the
# cache (its magic included, so neither file passes for the other); one that fails is
# ignored, and every bin is fetched and verified again.

BINS_MAGIC = b"cf-sign channel-bins 1\n"


class _Delegation(msgspec.Struct, array_like=True):
    keys: list[tuple[str, str, str, str]]  # keyid, keytype, scheme, public
    threshold: int
    outputs: list[str]
    output_globs: list[str]


class _Bin(msgspec.Struct, array_like=True):
    key: tuple[str, int, str, list[str], int]
    timestamp: str
    expiration: str
    spec_version: str
    delegations: dict[str, _Delegation]
    signatures: tuple[str, int, list[str], dict[str, str], list[str], list[str]]


class _Bins(msgspec.Struct, array_like=True):
    scope: bytes
    bins: list[_Bin]


def bins_path(cache_path: Path) -> Path:
    return cache_path.with_suffix(".bins")


def _stored(key: BinKey, shard: VerifiedBin) -> _Bin:
    doc, sigs = shard.bin, shard.signatures
    delegations = {
        name: _Delegation(
            [(keyid, k.keytype, k.scheme, k.public) for keyid, k in d.keys.items()],
            d.threshold, list(d.outputs), list(d.output_globs),
        )
        for name, d in doc.delegations.items()
    }  # fmt: skip
    return _Bin(
        (key[0], key[1], key[2], list(key[3]), key[4]), doc.timestamp, doc.expiration,
        doc.metadata_spec_version, delegations,
        (sigs.role, sigs.threshold, list(sigs.signed), dict(sigs.invalid), list(sigs.missing),
         list(sigs.unknown)),
    )  # fmt: skip


def _verified(stored: _Bin) -> tuple[BinKey, VerifiedBin]:
    bin_name, version, sha256, pubkeys, threshold = stored.key
    delegations = {
        name: FeedstockDelegation(
            {keyid: PublicKey(kt, scheme, public) for keyid, kt, scheme, public in d.keys},
            d.threshold, tuple(d.outputs), tuple(d.output_globs),
        )
        for name, d in stored.delegations.items()
    }  # fmt: skip
    doc = FeedstockBin(bin_name, version, stored.timestamp, stored.expiration, delegations,
                       stored.spec_version)  # fmt: skip
    role, sig_threshold, signed, invalid, missing, unknown = stored.signatures
    sigs = ThresholdResult(role, sig_threshold, tuple(signed), invalid, tuple(missing),
                           tuple(unknown))  # fmt: skip
    return (bin_name, version, sha256, tuple(pubkeys), threshold), VerifiedBin(doc, sigs)


def read_bins(
    path: Path, key: bytes, scope: bytes
) -> tuple[list[tuple[BinKey, VerifiedBin]], str | None]:
    """(verified bins, why ignored or None). Never raises for a bad or missing file."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CACHE + 1)
    except FileNotFoundError:
        return [], "no verified bins yet"
    except OSError as exc:
        return [], f"cannot read: {exc.strerror}"
    if len(data) > MAX_CACHE or not data.startswith(BINS_MAGIC) or len(data) < len(BINS_MAGIC) + 32:
        return [], "not a bins file of this version"
    signed, tag = memoryview(data)[:-32], data[-32:]
    if not hmac.compare_digest(hmac.new(key, signed, hashlib.sha256).digest(), tag):
        return [], "MAC does not verify (other keys, or modified)"
    try:
        decoded = msgspec.msgpack.decode(signed[len(BINS_MAGIC) :], type=_Bins)
        if not hmac.compare_digest(decoded.scope, scope):
            return [], "made for another subdir, store or keys"
        return [_verified(b) for b in decoded.bins], None
    except (msgspec.DecodeError, ValueError):
        return [], "does not parse"


def _first(item: tuple[BinKey, VerifiedBin]) -> BinKey:
    return item[0]


def write_bins(
    path: Path, key: bytes, scope: bytes, bins: list[tuple[BinKey, VerifiedBin]]
) -> None:
    kept = [_stored(k, b) for k, b in sorted(bins, key=_first)]
    body = msgspec.msgpack.encode(_Bins(scope, kept))
    tag = hmac.new(key, BINS_MAGIC + body, hashlib.sha256).digest()
    write_atomic(path, [BINS_MAGIC, body, tag], mode=0o600)


def remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
