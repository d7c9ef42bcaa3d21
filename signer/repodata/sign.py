"""Signing every record of a repodata with keys of either profile, co-signing kept.

Each key signs the bytes of its profile (conda: the whole record; mamba: libmamba's
signable). A signature already on a record by a key not signing in this run is kept when
it still verifies over the record's conda or mamba bytes (the record did not change since
that key signed it), so several pkg_mgr holders can sign one after another and meet a
threshold above 1; one that no longer verifies (or cannot be read) is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import orjson

from signer.repodata.document import RawRecord, SplitRepodata, parse_record_checked
from signer.repodata.parallel import map_ranges
from signer.repodata.profiles import Profile, UnsignableRecord, conda_message, mamba_message
from signer.trust.ed25519 import verify_openpgp, verify_raw
from signer.trust.errors import FormatError
from signer.trust.metadata import Signature, is_public_key_hex
from signer.trust.signing import MessageSigner


class ProfileKey(NamedTuple):
    signer: MessageSigner
    profile: Profile


class SignResult(NamedTuple):
    signatures: dict[str, Any]  # the document's new `signatures` member
    records: int
    made: int  # signatures made in this run
    kept: int  # other keys' signatures kept: they still verify over the record
    dropped: int  # other keys' signatures dropped: stale (record changed) or unreadable


def _still_valid(keyid: str, entry: object, messages: _Messages) -> bool:
    if not is_public_key_hex(keyid):
        return False
    try:
        sig = Signature.from_dict(entry, "", "")
    except FormatError:
        return False
    public, raw = bytes.fromhex(keyid), bytes.fromhex(sig.signature)
    for message in (messages.conda(), messages.mamba()):
        if sig.other_headers is not None:
            if verify_openpgp(public, raw, message, bytes.fromhex(sig.other_headers)):
                return True
        elif verify_raw(public, raw, message):
            return True
    return False


class _Messages:
    """A record's bytes per profile, each made at most once."""

    __slots__ = ("_conda", "_float_free", "_item", "_mamba", "_record", "_source", "_subdir")

    def __init__(self, record: dict[str, Any], float_free: bool, subdir: str,
                 source: str, item: RawRecord) -> None:  # fmt: skip
        self._record, self._float_free, self._subdir = record, float_free, subdir
        self._source, self._item = source, item
        self._conda: bytes | None = None
        self._mamba: bytes | None = None

    def conda(self) -> bytes:
        if self._conda is None:
            self._conda = conda_message(self._record, float_free=self._float_free)
        return self._conda

    def mamba(self) -> bytes:
        if self._mamba is None:
            try:
                self._mamba = mamba_message(self._record, self._subdir)
            except UnsignableRecord as exc:
                field = f"{self._item.section}.{self._item.filename}"
                raise FormatError(self._source, field, str(exc)) from None
        return self._mamba


# Per record from a worker: our signatures' hex (in key order), the other keys' entries
# kept (None when there were none) and how many were dropped.
_Signed = tuple[list[str], dict[str, Any] | None, int]


def sign_repodata(
    split: SplitRepodata,
    keys: Sequence[ProfileKey],
    *,
    jobs: int = 1,
    keep_others: bool = True,
) -> SignResult:
    """Fresh signatures by `keys` on every record; other keys' valid signatures kept."""
    if not keys:
        raise ValueError("no signing key given")
    hexkeys = [k.signer.public_key_hex for k in keys]
    if len(set(hexkeys)) != len(hexkeys):
        twice = next(h for h in hexkeys if hexkeys.count(h) > 1)
        raise ValueError(f"key {twice[:16]}… is given twice: a key signs one profile")
    records: list[RawRecord] = split.records
    existing = split.signatures if keep_others else {}
    ours = set(hexkeys)
    signers = [(k.signer.sign_message, k.profile == "conda") for k in keys]
    subdir = split.info_subdir

    def sign_range(start: int, end: int) -> list[_Signed]:
        out: list[_Signed] = []
        for item in records[start:end]:
            record, float_free = parse_record_checked(item, split.source)
            messages = _Messages(record, float_free, subdir, split.source, item)
            made = [sign(messages.conda() if conda else messages.mamba()).hex()
                    for sign, conda in signers]  # fmt: skip
            kept: dict[str, Any] | None = None
            dropped = 0
            raw = existing.get(item.filename)
            if raw is not None:
                entries = orjson.loads(bytes(raw))
                if isinstance(entries, dict):
                    for keyid, entry in entries.items():
                        if keyid in ours:
                            continue
                        if _still_valid(keyid, entry, messages):
                            kept = kept or {}
                            kept[keyid] = entry
                        else:
                            dropped += 1
                else:
                    dropped += 1
            out.append((made, kept, dropped))
        return out

    chunks = map_ranges(sign_range, len(records), jobs)
    signatures: dict[str, Any] = {}
    kept_total = dropped_total = 0
    results = (result for chunk in chunks for result in chunk)
    for item, (made, kept, dropped) in zip(records, results, strict=True):
        entry: dict[str, Any] = dict(kept) if kept else {}
        kept_total += len(entry)
        dropped_total += dropped
        for hexkey, signature in zip(hexkeys, made, strict=True):
            entry[hexkey] = {"signature": signature}
        signatures[item.filename] = entry
    return SignResult(signatures, len(records), len(records) * len(keys), kept_total,
                      dropped_total)  # fmt: skip
